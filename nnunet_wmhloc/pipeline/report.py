"""The offline HTML report of a wmhloc_run / wmhloc_predict output folder.

<output>/report/report.html, with every figure it shows in report/figures/ (PNG, linked relatively) and
every table in report/tables/ (CSV): the folder opens in a browser without network and can be zipped and
shared. Sections: settings and stage timings; per cohort the regional lesion loads, where the lesions are (location
classes and the atlas-space frequency map, when the location stage ran), the clustering figures
and group table, and (when references exist) the evaluation tables and violin plots; per subject the FLAIR
with lesions coloured by region in three planes and a bar chart of its regional loads.
The page is rendered from templates/report.html.j2 (Jinja2, autoescaped); this module gathers its content.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from nnunet_wmhloc.io import atomic_dir, read_csv, write_csv
from nnunet_wmhloc.layout import RunLayout
from nnunet_wmhloc.pipeline import location_outputs as LO
from nnunet_wmhloc.pipeline import review
from nnunet_wmhloc.pipeline.figtext import read_figure_info
from nnunet_wmhloc.pipeline.report_location import location_section, model_free_section
from nnunet_wmhloc.pipeline.report_figures import REPORT_REGIONS, cohort_figure, region_mm3, subject_figure
from nnunet_wmhloc.vocab import REGION_NAMES
from nnunet_wmhloc.postprocessing.cluster import SIDE_SHARE

MAX_TABLE_ROWS = 200
TEMPLATE = "report.html.j2"
CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1150px;color:#222;
line-height:1.4;padding:0 1em} h1{font-size:1.6em} h2{border-bottom:2px solid #1f4e79;padding-bottom:.2em;
margin-top:2em} h3{margin-top:1.4em} table{border-collapse:collapse;font-size:.82em;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right} th{background:#eef3f8}
td:first-child,th:first-child{text-align:left} img{max-width:100%;height:auto;border:1px solid #eee}
figure{margin:.6em 0} figcaption{color:#444;font-size:.85em;max-width:1100px}
.note{color:#666;font-size:.85em} .fig{display:inline-block;vertical-align:top;margin-right:1em;max-width:48%}
.warn{background:#fff4e0;border-left:4px solid #e67e22;padding:.3em .6em;margin:.4em 0}
nav a{margin-right:1em} code{background:#f4f4f4;padding:0 .2em}
"""


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


def table(rows: list[dict], columns: list[str] | None = None, csv: str | None = None) -> dict:
    """A table for the template: headers, the first MAX_TABLE_ROWS rows formatted, the row count and the
    CSV it links (in tables/)."""
    columns = columns or (list(rows[0]) if rows else [])
    return {"headers": columns, "rows": [[_fmt(r.get(c, "")) for c in columns] for r in rows[:MAX_TABLE_ROWS]],
            "total": len(rows), "csv": csv}


class _Folder:
    """The report folder being written: figures/ and tables/ beside report.html."""

    def __init__(self, folder: Path):
        self.folder = folder
        (folder / "figures").mkdir(parents=True, exist_ok=True)
        (folder / "tables").mkdir(parents=True, exist_ok=True)

    def figure(self, src: Path, name: str, caption: str, half: bool = False) -> dict | None:
        """Copy a PNG into figures/; None (nothing shown) when there is none. `caption`: what is plotted, in
        what unit, on which subjects. Shown at the width it was drawn for (figtext), so its text keeps its size."""
        if not src.is_file():
            return None
        dst = self.folder / "figures" / name
        if src.resolve() != dst.resolve():
            shutil.copyfile(src, dst)
        return {"name": name, "caption": caption, "half": half, "width": read_figure_info(dst).get("width_px")}

    def csv_table(self, src: Path, name: str, columns=None, rows=None) -> dict | None:
        """Copy a CSV into tables/ and show it (its rows, or the `rows` given); None when there is none."""
        if not src.is_file():
            return None
        shutil.copyfile(src, self.folder / "tables" / name)
        return table(read_csv(src) if rows is None else rows, columns, csv=name)


def _top_regions(row: dict, n: int = 3) -> str:
    vals = sorted(((region_mm3(row, lab), lab) for lab in REPORT_REGIONS), reverse=True)
    return "; ".join(f"{REGION_NAMES[lab]} {v:.0f}" for v, lab in vals[:n] if v > 0)


def _find_image(images: Path, subject: str) -> Path | None:
    for mod in ("flair", "t1"):
        p = images / f"{subject}_{mod}_0000.nii.gz"
        if p.is_file():
            return p
    return None


def render(context: dict) -> str:
    """report.html from the template shipped with the package."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("nnunet_wmhloc.pipeline", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.get_template(TEMPLATE).render(css=CSS, **context)


# ----------------------------------------------------------------------------------------- the report
def build_report(output: Path, tables, *, title: str, images: Path, settings: dict, stages: dict | None = None,
                 command: str = "", progress=None) -> Path:
    """Write <output>/report/ from the localize stage's `tables` (.loads, .lesions rows) and the other
    stages' outputs; returns the path of report.html."""
    run = RunLayout(output)
    stages = stages or {}
    if (run.location / LO.LOADS).is_file():  # the tables shown and linked carry the location columns
        tables = LO.merged(run, tables)
    checks = review.cohort_review(run, tables.loads)
    with atomic_dir(run.report, overwrite=True) as tmp:
        rep = _Folder(tmp)
        ctx = {"title": title, "written": time.strftime("%Y-%m-%d %H:%M"), "n_subjects": len(tables.loads),
               "command": command, **_settings(settings, stages), "cohort": _cohort(rep, run, tables),
               **_clustering(rep, run, stages, checks["subjects"]), "evaluation": _evaluation(rep, run),
               "location": location_section(rep, run, tables.loads), "model_free": model_free_section(rep, run),
               "subjects": _subjects(rep, run, tables.loads, images, progress, checks["subjects"]),
               "warnings": checks["text"], "synthetic": str(settings.get("input", "")).startswith("demo"),
               "tta": settings.get("test-time mirroring"), "side_share": SIDE_SHARE,
               "outside_share": review.OUTSIDE_SHARE, "load_ratio": review.LOAD_RATIO}
        (tmp / "report.html").write_text(render(ctx), encoding="utf-8")
    return run.report_html


def _settings(settings: dict, stages: dict) -> dict:
    rows = [{"stage": k, "seconds": v.get("seconds", ""), "finished": v.get("finished", ""),
             "note": (v.get("summary") or {}).get("skipped", "") if isinstance(v.get("summary"), dict) else ""}
            for k, v in stages.items()]
    return {"settings": table([{"setting": k, "value": v if not isinstance(v, (list, tuple)) else
                                " ".join(map(str, v))} for k, v in settings.items()]),
            "stages": table(rows) if stages else None}


def _reference(run: RunLayout) -> dict:
    return {r["subject"]: r for r in read_csv(run.reference_loads)} if run.reference_loads.is_file() else {}


def _cohort(rep: _Folder, run: RunLayout, tables) -> dict:
    from nnunet_wmhloc.postprocessing.localize import LESION_COLUMNS, LOAD_COLUMNS

    loads, ref = tables.loads, _reference(run)
    rows = []
    for r in loads:
        row = {"subject": r["subject"], "lesions": r["n_lesions"], "total_mm3": r["total_mm3"], "wm_mm3": r["wm_mm3"],
               "left_wm_mm3": r["left_wm_mm3"], "right_wm_mm3": r["right_wm_mm3"], "outside_mm3": r["outside_mm3"],
               "main regions (mm³)": _top_regions(r)}
        if ref:
            row["reference_total_mm3"] = ref.get(r["subject"], {}).get("total_mm3", "")
        rows.append(row)
    # the tables as the localize stage made them, in its columns
    write_csv(loads, rep.folder / "tables" / "regional_loads.csv", columns=LOAD_COLUMNS)
    write_csv(tables.lesions, rep.folder / "tables" / "lesions.csv", columns=LESION_COLUMNS)
    if ref:
        shutil.copyfile(run.reference_loads, rep.folder / "tables" / "reference_regional_loads.csv")
    figures = []
    if loads:
        cohort_figure(loads, rep.folder / "figures" / "cohort_loads.png")
        figures.append(rep.figure(rep.folder / "figures" / "cohort_loads.png", "cohort_loads.png",
                                  f"Predicted lesion volume (mm³; colour on a log10(1 + mm³) scale) in each region "
                                  f"(columns: 1-17 left, 18-34 right, 35/36 rest of hemisphere) of each of the "
                                  f"{len(loads)} subjects (rows)."))
    return {"table": table(rows, csv="regional_loads.csv"), "lesions": True, "reference": bool(ref),
            "figures": figures}


def _clustering(rep: _Folder, run: RunLayout, stages: dict, warnings: dict) -> dict:
    cluster = run.cluster
    if not (cluster / "assignments.csv").is_file():
        why = (stages.get("cluster", {}).get("summary") or {}).get("skipped") if stages else None
        return {"cluster": None,
                "cluster_note": why or "no clustering (fewer than 3 subjects with white-matter lesions)"}
    log = json.loads((cluster / "cluster_log.json").read_text()) if (cluster / "cluster_log.json").is_file() else {}
    n = log.get("clustered", "?")
    figures = [rep.figure(cluster / "silhouette.png", "cluster_silhouette.png",
                          f"Mean silhouette (-1 to 1, higher = better separated) of k-means on the regional lesion "
                          f"loads of the {n} clustered subjects, per number of groups K; the circled K is kept.",
                          half=True),
               rep.figure(cluster / "heatmap.png", "cluster_heatmap.png",
                          "Mean share (%) of the WM lesion volume that lies in each WM region (1-34), over the "
                          "subjects of each group.", half=True),
               rep.figure(cluster / "atlas_maps.png", "cluster_atlas_maps.png",
                          "Each group's mean share (%) of WM lesion volume per region, painted on the atlas "
                          "(axial and coronal slices; radiological view).")]
    groups = read_csv(cluster / "groups.csv") if (cluster / "groups.csv").is_file() else []
    flagged = review.group_warnings(read_csv(cluster / "assignments.csv"), warnings)
    groups = [g | {"warnings": flagged.get(g.get("group", ""), "")} for g in groups]
    return {"cluster": {"normalise": str(log.get("normalise", "")), "k": log.get("k_chosen", "?"),
                        "n": n, "figures": [f for f in figures if f],
                        "groups": rep.csv_table(cluster / "groups.csv", "groups.csv", rows=groups),
                        "assignments": rep.csv_table(cluster / "assignments.csv", "assignments.csv")},
            "cluster_note": ""}


def _compare(rep: _Folder, comp: Path, task: str) -> dict:
    tab = [r for r in read_csv(comp / "table.csv") if r["group"] == "all"]
    metrics = list(dict.fromkeys(r["metric"] for r in tab))
    wide = {}
    for r in tab:
        sd = f" ± {float(r['sd']):.3f}" if r["sd"] not in ("", None) else ""
        mean = f"{float(r['mean']):.3f}{sd}" if r["mean"] not in ("", None) else "n/a"
        wide.setdefault(r["setting"], {"setting": r["setting"], "n": r["n"]})[r["metric"]] = mean
    out = {"table": rep.csv_table(comp / "table.csv", f"{task}_table.csv", rows=list(wide.values()),
                                  columns=["setting", "n"] + metrics), "wilcoxon": None, "published": None}
    if (comp / "wilcoxon.csv").is_file():
        w = [r for r in read_csv(comp / "wilcoxon.csv") if r["metric"] in metrics]
        out["wilcoxon"] = rep.csv_table(comp / "wilcoxon.csv", f"{task}_wilcoxon.csv", rows=w,
                                        columns=["metric", "setting_a", "setting_b", "n_pairs", "median_diff", "p",
                                                 "p_holm"])
    if (comp / "published_comparison.csv").is_file():
        pub = read_csv(comp / "published_comparison.csv")
        # each citation once, in the caption; URLs stay in the CSV (the page itself links nothing online)
        out["published"] = rep.csv_table(comp / "published_comparison.csv", f"{task}_published_comparison.csv",
                                         rows=pub, columns=[c for c in (pub[0] if pub else {})
                                                            if c not in ("url", "citation")])
        out["citations"] = sorted({f"{r['source']}: {r['citation']}" for r in pub if r.get("citation")})
    n = max((int(r["n"]) for r in tab if str(r.get("n", "")).isdigit()), default=0)
    out["figures"] = [rep.figure(png, f"{task}_{png.name}", _violin_caption(png.stem, task, n),
                                 half=png.name.startswith("violin_sites")) for png in sorted(comp.glob("violin_*.png"))]
    return out


def _violin_caption(stem: str, task: str, n: int) -> str:
    from nnunet_wmhloc.evaluation.metrics import METRIC_LABELS

    who = f"the {n} test subjects with a reference {task} map" if n else "the test subjects"
    if stem == "violin_regions":
        return (f"Dice (0-1) of each region (left hemisphere above, right below; 35/36 apart) over {who}, one "
                "violin per setting (FLAIR, T1, fused); the bar is the median.")
    metric = stem[len("violin_sites_"):]
    return (f"{METRIC_LABELS.get(metric, metric)} of the {task} segmentation over {who}, all together and per "
            "site (n per group under it), one violin per setting; the bar is the median.")


def _evaluation(rep: _Folder, run: RunLayout) -> list[dict]:
    evaluation, out = run.evaluation, []
    for task in ("lesion", "region"):
        comp = run.compare(task)
        singles = sorted(evaluation.glob(f"{task}_*/summary.csv")) if evaluation.is_dir() else []
        if not comp.is_dir() and not singles:
            continue
        ev = {"task": task, "compare": _compare(rep, comp, task) if (comp / "table.csv").is_file() else None,
              "singles": [{"name": s.parent.name, "table": rep.csv_table(
                  s, f"{s.parent.name}_summary.csv", rows=[r for r in read_csv(s) if r["group"] == "all"],
                  columns=["metric", "n", "mean", "sd", "median", "min", "max"])} for s in singles], "cases": []}
        for s in sorted(evaluation.glob(f"{task}_*/cases.csv")):
            shutil.copyfile(s, rep.folder / "tables" / f"{s.parent.name}_cases.csv")
            ev["cases"].append(f"{s.parent.name}_cases.csv")
        out.append(ev)
    return out


def _subjects(rep: _Folder, run: RunLayout, loads: list[dict], images: Path, progress, warnings: dict) -> list[dict]:
    ref, out = _reference(run), []
    for r in (progress(loads, desc="report figures") if progress else loads):
        s = r["subject"]
        img, rmap = _find_image(images, s), run.regional_maps / f"{s}.nii.gz"
        lesion = run.segmentations("lesion") / f"{s}.nii.gz"
        if img is None or not rmap.is_file():
            out.append({"name": s, "figure": None, "warnings": warnings.get(s, [])})
            continue
        png = rep.folder / "figures" / f"subject_{s}.png"
        subject_figure(img, rmap, lesion if lesion.is_file() else None, r, png, s)
        extra = f"; reference total {float(ref[s]['total_mm3']):.0f} mm³" if s in ref else ""
        caption = (f"{s}: FLAIR in three planes through the slices with the most lesion voxels, predicted lesions "
                   "coloured by region; below, its predicted lesion volume per region (mm³).")
        out.append({"name": s, "figure": rep.figure(png, png.name, caption), "warnings": warnings.get(s, []),
                    "text": f"{r['n_lesions']} lesions, total {float(r['total_mm3']):.0f} mm³, WM "
                            f"{float(r['wm_mm3']):.0f} mm³{extra}; main regions: {_top_regions(r) or 'none'}"})
    return out
