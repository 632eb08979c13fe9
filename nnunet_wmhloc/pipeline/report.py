"""The offline HTML report of a wmhloc_run / wmhloc_predict output folder.

<output>/report/report.html, with every figure it shows in report/figures/ (PNG, linked relatively) and
every table in report/tables/ (CSV): the folder opens in a browser without network and can be zipped and
shared. Sections: settings and stage timings; per cohort the regional lesion loads, the clustering figures
and group table, and (when references exist) the evaluation tables and violin plots; per subject the FLAIR
with lesions coloured by region in three planes and a bar chart of its regional loads.
"""
from __future__ import annotations

import csv
import html
import json
import shutil
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_wmhloc.vocab import REGION_NAMES, REST_REGIONS, WM_REGIONS, region_column
from nnunet_wmhloc.io import WMHLocError, atomic_dir

N_LABELS = 37
MAX_TABLE_ROWS = 200


# ----------------------------------------------------------------------------------------- colours
def region_colors() -> np.ndarray:
    """RGBA per label 0..36: homologous left/right regions share a hue (the hemisphere is plain from the
    position), 35/36 grey, 0 transparent."""
    import matplotlib

    tab = matplotlib.colormaps["tab20"].colors
    extra = matplotlib.colormaps["tab20b"].colors
    base = [tab[i] for i in range(0, 20, 2)] + [tab[i] for i in range(1, 20, 2)] + list(extra)
    lut = np.zeros((N_LABELS, 4))
    for k in range(17):
        lut[1 + k, :3] = lut[18 + k, :3] = base[k][:3]
    for r in REST_REGIONS:
        lut[r, :3] = (0.55, 0.55, 0.55)
    lut[1:, 3] = 1.0
    return lut


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 8, "axes.spines.top": False, "axes.spines.right": False})
    return plt


# ----------------------------------------------------------------------------------------- figures
def _lps(img: sitk.Image) -> np.ndarray:
    """Array (z, y, x) with x -> patient's left, y -> posterior, z -> superior."""
    return sitk.GetArrayFromImage(sitk.DICOMOrient(img, "LPS"))


def subject_figure(flair: Path, regional_map: Path, lesion: Path | None, row: dict, out_png: Path,
                   subject: str) -> None:
    """FLAIR in three planes through the slices with most lesion voxels, lesions coloured by region (white:
    lesion outside every region), and a bar chart of the subject's regional loads."""
    plt = _plt()
    fimg = sitk.ReadImage(str(flair))
    rimg = sitk.ReadImage(str(regional_map))
    f = _lps(fimg).astype(np.float32)
    r = _lps(rimg).astype(np.int64)
    les = (_lps(sitk.ReadImage(str(lesion))) == 1) if lesion is not None else r > 0
    if f.shape != r.shape:
        raise WMHLocError(f"{regional_map}: grid {r.shape} differs from the image {flair} {f.shape}")
    sx, sy, sz = sitk.DICOMOrient(fimg, "LPS").GetSpacing()
    lo, hi = np.percentile(f, [1, 99.5])
    lut = region_colors()
    overlay = lut[np.clip(r, 0, N_LABELS - 1)]
    overlay[les & (r == 0)] = (1, 1, 1, 1)

    def best(axis):
        counts = les.sum(axis=tuple(a for a in range(3) if a != axis))
        return int(np.argmax(counts)) if counts.any() else les.shape[axis] // 2

    z, y, x = best(0), best(1), best(2)
    planes = [("axial", f[z], overlay[z], sy / sx, "upper"),
              ("coronal", f[:, y, :], overlay[:, y, :], sz / sx, "lower"),
              ("sagittal", f[:, :, x], overlay[:, :, x], sz / sy, "lower")]
    fig = plt.figure(figsize=(10.5, 6.2))
    gs = fig.add_gridspec(2, 3, height_ratios=[1.15, 1.0], hspace=0.35, wspace=0.05)
    for i, (name, img, ov, asp, org) in enumerate(planes):
        ax = fig.add_subplot(gs[0, i])
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, aspect=asp, origin=org, interpolation="nearest")
        ov = ov.copy()
        ov[..., 3] *= 0.85
        ax.imshow(ov, aspect=asp, origin=org, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        for s in ax.spines.values():
            s.set_visible(False)
    fig.text(0.5, 0.955, f"{subject}: FLAIR with lesions coloured by region (radiological view: patient's left "
             "on the right; white = outside all regions)", ha="center", fontsize=9)
    ax = fig.add_subplot(gs[1, :])
    labels = [lab for lab in list(WM_REGIONS) + list(REST_REGIONS) if float(row.get(region_column(lab)) or 0) > 0]
    if labels:
        vals = [float(row[region_column(lab)]) for lab in labels]
        ax.bar(range(len(labels)), vals, color=[lut[lab][:3] for lab in labels], edgecolor="black", linewidth=0.4)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels([f"{lab} {REGION_NAMES[lab]}" for lab in labels], rotation=40, ha="right", fontsize=6.5)
        ax.set_ylabel("lesion volume (mm³)")
    else:
        ax.text(0.5, 0.5, "no lesion voxels in any region", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_title(f"regional lesion load: total {float(row.get('total_mm3') or 0):.0f} mm³, WM (1-34) "
                 f"{float(row.get('wm_mm3') or 0):.0f} mm³, {row.get('n_lesions', '?')} lesions", fontsize=9)
    fig.savefig(out_png, dpi=110, bbox_inches="tight")
    plt.close(fig)


def cohort_figure(rows: list[dict], out_png: Path) -> None:
    """Subjects x regions heatmap of lesion volume (log scale)."""
    plt = _plt()
    labels = list(WM_REGIONS) + list(REST_REGIONS)
    m = np.array([[float(r.get(region_column(lab)) or 0) for lab in labels] for r in rows])
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.22 * len(rows)))
    im = ax.imshow(np.log10(1 + m), aspect="auto", cmap="magma_r")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r["subject"] for r in rows], fontsize=7)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels([str(lab) for lab in labels], fontsize=6)
    ax.set_xlabel("region (1-17 left, 18-34 right, 35/36 rest of hemisphere)")
    cb = fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01)
    cb.set_label("log10(1 + mm³)")
    ax.set_title("regional lesion loads per subject", fontsize=9)
    fig.savefig(out_png, dpi=110, bbox_inches="tight")
    plt.close(fig)


# ----------------------------------------------------------------------------------------- html helpers
def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _fmt(v) -> str:
    if v is None:
        return ""
    s = str(v)
    try:
        x = float(s)
    except ValueError:
        return s
    if s.strip().isdigit():
        return s
    if not np.isfinite(x):
        return "n/a"
    return f"{x:.4g}" if abs(x) < 1e4 else f"{x:.0f}"


def _table(rows: list[dict], columns: list[str] | None = None, headers: list[str] | None = None) -> str:
    if not rows:
        return "<p class='note'>(empty)</p>"
    columns = columns or list(rows[0])
    headers = headers or columns
    out = ["<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr></thead><tbody>"]
    for r in rows[:MAX_TABLE_ROWS]:
        out.append("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c, '')))}</td>" for c in columns) + "</tr>")
    out.append("</tbody></table>")
    if len(rows) > MAX_TABLE_ROWS:
        out.append(f"<p class='note'>first {MAX_TABLE_ROWS} of {len(rows)} rows; all in the CSV</p>")
    return "".join(out)


CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1150px;color:#222;
line-height:1.4;padding:0 1em} h1{font-size:1.6em} h2{border-bottom:2px solid #1f4e79;padding-bottom:.2em;
margin-top:2em} h3{margin-top:1.4em} table{border-collapse:collapse;font-size:.82em;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right} th{background:#eef3f8}
td:first-child,th:first-child{text-align:left} img{max-width:100%;border:1px solid #eee;margin:.3em 0}
.note{color:#666;font-size:.85em} .fig{display:inline-block;vertical-align:top;margin-right:1em;max-width:48%}
nav a{margin-right:1em} code{background:#f4f4f4;padding:0 .2em}
"""


class _Report:
    def __init__(self, folder: Path):
        self.folder = folder
        (folder / "figures").mkdir(parents=True, exist_ok=True)
        (folder / "tables").mkdir(parents=True, exist_ok=True)
        self.parts: list[str] = []

    def h(self, level: int, text: str, anchor: str | None = None) -> None:
        a = f" id='{anchor}'" if anchor else ""
        self.parts.append(f"<h{level}{a}>{html.escape(text)}</h{level}>")

    def p(self, text: str, cls: str | None = None) -> None:
        c = f" class='{cls}'" if cls else ""
        self.parts.append(f"<p{c}>{text}</p>")

    def raw(self, text: str) -> None:
        self.parts.append(text)

    def figure(self, src: Path, name: str, caption: str = "", half: bool = False) -> None:
        """Copy a PNG into figures/ and show it (relative link)."""
        if not src.is_file():
            return
        dst = self.folder / "figures" / name
        if src.resolve() != dst.resolve():
            shutil.copyfile(src, dst)
        cls = " class='fig'" if half else ""
        cap = f"<br><span class='note'>{html.escape(caption)}</span>" if caption else ""
        self.parts.append(f"<div{cls}><img src='figures/{html.escape(name)}' alt='{html.escape(caption or name)}'>"
                          f"{cap}</div>")

    def table_csv(self, src: Path, name: str, columns=None, headers=None, rows=None) -> None:
        """Copy a CSV into tables/, show it, and link the file."""
        if not src.is_file():
            return
        shutil.copyfile(src, self.folder / "tables" / name)
        rows = _read_csv(src) if rows is None else rows
        self.raw(_table(rows, columns, headers))
        self.p(f"<a href='tables/{html.escape(name)}'>{html.escape(name)}</a>", "note")

    def html(self, title: str) -> str:
        return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
                f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
                + "\n".join(self.parts) + "\n</body></html>\n")


def _top_regions(row: dict, n: int = 3) -> str:
    vals = sorted(((float(row.get(region_column(lab)) or 0), lab) for lab in list(WM_REGIONS) + list(REST_REGIONS)),
                  reverse=True)
    return "; ".join(f"{REGION_NAMES[lab]} {v:.0f}" for v, lab in vals[:n] if v > 0)


def _find_image(images: Path, subject: str) -> Path | None:
    for mod in ("flair", "t1"):
        p = images / f"{subject}_{mod}_0000.nii.gz"
        if p.is_file():
            return p
    return None


# ----------------------------------------------------------------------------------------- the report
def build_report(output: Path, *, title: str, images: Path, settings: dict, stages: dict | None = None,
                 command: str = "", progress=None) -> Path:
    """Write <output>/report/ from the pipeline's outputs; returns the path of report.html."""
    output = Path(output)
    loads_csv = output / "localize" / "regional_loads.csv"
    if not loads_csv.is_file():
        raise WMHLocError(f"{loads_csv}: not found (the localize stage writes it)")
    with atomic_dir(output / "report", overwrite=True) as tmp:
        rep = _Report(tmp)
        _write(rep, output, title=title, images=images, settings=settings, stages=stages or {}, command=command,
               progress=progress)
        (tmp / "report.html").write_text(rep.html(title), encoding="utf-8")
    return output / "report" / "report.html"


def _write(rep: _Report, output: Path, *, title, images, settings, stages, command, progress) -> None:
    loads = _read_csv(output / "localize" / "regional_loads.csv")
    ref_csv = output / "localize" / "reference" / "regional_loads.csv"
    ref = {r["subject"]: r for r in _read_csv(ref_csv)} if ref_csv.is_file() else {}
    cluster = output / "cluster"
    evaluation = output / "evaluation"
    rep.h(1, title)
    rep.p(f"written {html.escape(time.strftime('%Y-%m-%d %H:%M'))} by nnunet_wmhloc; {len(loads)} subjects. "
          "Opens offline: every figure and table is in this folder.", "note")
    rep.raw("<nav><a href='#settings'>settings</a><a href='#cohort'>cohort</a><a href='#clustering'>clustering</a>"
            "<a href='#evaluation'>evaluation</a><a href='#subjects'>subjects</a></nav>")

    rep.h(2, "Settings", "settings")
    if command:
        rep.p(f"command: <code>{html.escape(command)}</code>")
    rep.raw(_table([{"setting": k, "value": v if not isinstance(v, (list, tuple)) else " ".join(map(str, v))}
                    for k, v in settings.items()]))
    if stages:
        rows = [{"stage": k, "seconds": v.get("seconds", ""), "finished": v.get("finished", ""),
                 "note": (v.get("summary") or {}).get("skipped", "") if isinstance(v.get("summary"), dict) else ""}
                for k, v in stages.items()]
        rep.h(3, "Stages")
        rep.raw(_table(rows))
        rep.p("logs of every command: ../logs/&lt;stage&gt;.log", "note")

    # ---------------------------------------------------------------- cohort
    rep.h(2, "Cohort: regional lesion loads", "cohort")
    rows = []
    for r in loads:
        row = {"subject": r["subject"], "lesions": r["n_lesions"], "total_mm3": r["total_mm3"], "wm_mm3": r["wm_mm3"],
               "left_wm_mm3": r["left_wm_mm3"], "right_wm_mm3": r["right_wm_mm3"], "outside_mm3": r["outside_mm3"],
               "main regions (mm³)": _top_regions(r)}
        if ref:
            row["reference_total_mm3"] = ref.get(r["subject"], {}).get("total_mm3", "")
        rows.append(row)
    rep.table_csv(output / "localize" / "regional_loads.csv", "regional_loads.csv", rows=rows,
                  columns=list(rows[0]) if rows else None)
    if (output / "localize" / "lesions.csv").is_file():
        shutil.copyfile(output / "localize" / "lesions.csv", rep.folder / "tables" / "lesions.csv")
        rep.p("one row per connected lesion (volume, centroid, regions): <a href='tables/lesions.csv'>lesions.csv</a>",
              "note")
    if ref:
        shutil.copyfile(ref_csv, rep.folder / "tables" / "reference_regional_loads.csv")
        rep.p("loads of the reference lesions in the predicted regions: "
              "<a href='tables/reference_regional_loads.csv'>reference_regional_loads.csv</a>", "note")
    if loads:
        cohort_figure(loads, rep.folder / "figures" / "cohort_loads.png")
        rep.figure(rep.folder / "figures" / "cohort_loads.png", "cohort_loads.png",
                   "lesion volume per region and subject")

    # ---------------------------------------------------------------- clustering
    rep.h(2, "Clustering", "clustering")
    if (cluster / "assignments.csv").is_file():
        log = json.loads((cluster / "cluster_log.json").read_text()) if (cluster / "cluster_log.json").is_file() else {}
        rep.p(f"k-means on regional lesion loads ({html.escape(str(log.get('normalise', '')))}), K chosen by "
              f"silhouette: <b>K = {log.get('k_chosen', '?')}</b> for {log.get('clustered', '?')} subjects.")
        rep.figure(cluster / "silhouette.png", "cluster_silhouette.png", "mean silhouette per K", half=True)
        rep.figure(cluster / "heatmap.png", "cluster_heatmap.png", "regional lesion share per group", half=True)
        rep.figure(cluster / "atlas_maps.png", "cluster_atlas_maps.png", "group profiles on the atlas")
        rep.h(3, "Groups")
        rep.table_csv(cluster / "groups.csv", "groups.csv")
        rep.h(3, "Assignments")
        rep.table_csv(cluster / "assignments.csv", "assignments.csv")
    else:
        why = (stages.get("cluster", {}).get("summary") or {}).get("skipped") if stages else None
        rep.p(html.escape(why or "no clustering (fewer than 3 subjects with white-matter lesions)"), "note")

    # ---------------------------------------------------------------- evaluation
    rep.h(2, "Evaluation against the references", "evaluation")
    any_eval = False
    for task in ("lesion", "region"):
        comp = evaluation / f"compare_{task}"
        singles = sorted(evaluation.glob(f"{task}_*/summary.csv")) if evaluation.is_dir() else []
        if not comp.is_dir() and not singles:
            continue
        any_eval = True
        rep.h(3, f"{task} segmentation: FLAIR, T1 and fused")
        if (comp / "table.csv").is_file():
            tab = [r for r in _read_csv(comp / "table.csv") if r["group"] == "all"]
            metrics = list(dict.fromkeys(r["metric"] for r in tab))
            wide = {}
            for r in tab:
                sd = f" ± {float(r['sd']):.3f}" if r["sd"] not in ("", None) else ""
                mean = f"{float(r['mean']):.3f}{sd}" if r["mean"] not in ("", None) else "n/a"
                wide.setdefault(r["setting"], {"setting": r["setting"], "n": r["n"]})[r["metric"]] = mean
            rep.table_csv(comp / "table.csv", f"{task}_table.csv", rows=list(wide.values()),
                          columns=["setting", "n"] + metrics)
            rep.p("mean ± SD over the test subjects scored in every setting", "note")
            if task == "region":
                rep.p("wrong_hemisphere: share of the voxels that prediction and reference both assign to a region "
                      "where the two lie in different hemispheres (0 is right; a model blind to left and right "
                      "scores about 0.5)", "note")
            if (comp / "wilcoxon.csv").is_file():
                w = [r for r in _read_csv(comp / "wilcoxon.csv") if r["metric"] in metrics]
                rep.p("paired Wilcoxon signed-rank tests (Holm-corrected per metric):")
                rep.table_csv(comp / "wilcoxon.csv", f"{task}_wilcoxon.csv", rows=w,
                              columns=["metric", "setting_a", "setting_b", "n_pairs", "median_diff", "p", "p_holm"])
            if (comp / "published_comparison.csv").is_file():
                rep.p("beside published results:")
                pub = _read_csv(comp / "published_comparison.csv")
                # citations as text; their URLs stay in the CSV (the page itself links nothing online)
                rep.table_csv(comp / "published_comparison.csv", f"{task}_published_comparison.csv", rows=pub,
                              columns=[c for c in (pub[0] if pub else {}) if c != "url"])
            for png in sorted(comp.glob("violin_*.png")):
                rep.figure(png, f"{task}_{png.name}", png.stem.replace("_", " "),
                           half=png.name.startswith("violin_sites"))
        else:
            for s in singles:
                rep.p(f"{html.escape(s.parent.name)}:")
                rep.table_csv(s, f"{s.parent.name}_summary.csv",
                              rows=[r for r in _read_csv(s) if r["group"] == "all"],
                              columns=["metric", "n", "mean", "sd", "median", "min", "max"])
        for s in sorted(evaluation.glob(f"{task}_*/cases.csv")):
            shutil.copyfile(s, rep.folder / "tables" / f"{s.parent.name}_cases.csv")
        rep.p("per-case scores: " + ", ".join(
            f"<a href='tables/{s.parent.name}_cases.csv'>{s.parent.name}_cases.csv</a>"
            for s in sorted(evaluation.glob(f"{task}_*/cases.csv"))), "note")
    if not any_eval:
        rep.p("no reference segmentations: nothing evaluated", "note")

    # ---------------------------------------------------------------- subjects
    rep.h(2, "Subjects", "subjects")
    maps = output / "localize" / "regional_maps"
    for r in (progress(loads, desc="report figures") if progress else loads):
        s = r["subject"]
        rep.h(3, s, f"subject-{s}")
        img = _find_image(images, s)
        rmap = maps / f"{s}.nii.gz"
        lesion = output / "segmentations" / "lesion" / f"{s}.nii.gz"
        if img is None or not rmap.is_file():
            rep.p(f"no image or regional map for {html.escape(s)}", "note")
            continue
        png = rep.folder / "figures" / f"subject_{s}.png"
        subject_figure(img, rmap, lesion if lesion.is_file() else None, r, png, s)
        rep.figure(png, png.name)
        extra = f"; reference total {float(ref[s]['total_mm3']):.0f} mm³" if s in ref else ""
        rep.p(f"{r['n_lesions']} lesions, total {float(r['total_mm3']):.0f} mm³, WM {float(r['wm_mm3']):.0f} mm³"
              f"{extra}; main regions: {html.escape(_top_regions(r) or 'none')}", "note")

