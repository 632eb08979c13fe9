"""wmhloc_evaluate: score predictions against references, exactly as the WMH challenge does.

Lesion task: the challenge's five metrics (+ log volume difference), see ``metrics.py`` for every
definition and edge case. Region task: Dice per region 1-34 and 35/36, mean over 1-34 per case, and the
share of voxels put in the wrong hemisphere (among those both maps assign to a region).

Matching predictions to references (in this order, per prediction file):
  1. exact name: ``<x>.nii.gz`` in --pred ↔ ``<x>.nii.gz`` (or .nii) in --ref;
  2. subject: the subject id is the name without a trailing ``_flair`` / ``_t1``; a prediction
     ``wmh003.nii.gz`` (fused) or ``wmh003_flair.nii.gz`` matches a reference ``wmh003.nii.gz`` or
     ``wmh003_flair.nii.gz`` / ``wmh003_t1.nii.gz`` (nnU-Net labelsTs). When several references share the
     subject (the converter writes one label map per case, identical for _flair and _t1), the one with the
     prediction's own modality suffix wins, else the first by name; the file used is in the CSV.
A prediction without a reference is an error; subjects with references but no prediction are listed
(stderr and summary.json, ``missing_predictions``). Other files in the folders (nnU-Net's json, npz,
pkl) are ignored.

Outputs in --output (written atomically): ``cases.csv`` (one row per prediction), ``summary.csv`` and
``summary.json`` (n, mean, SD, median, min, max per metric, for all cases and per site when --sites
is given; ``--site-column scanner`` groups by another column of that CSV).
"""
from __future__ import annotations

import fnmatch
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from nnunet_wmhloc import cli, io
from nnunet_wmhloc.vocab import (LEFT_REGIONS, REST_LEFT, REST_REGIONS, REST_RIGHT, RIGHT_REGIONS,
                                         WM_REGIONS, region_column)
from nnunet_wmhloc.evaluation import metrics as M
from nnunet_wmhloc.io import WMHLocError
from nnunet_wmhloc.vocab import split_case

LESION_LABELS = (0, 1, 2)
REGION_LABELS = tuple(range(0, 37))
REGION_COLUMNS = {l: region_column(l) for l in tuple(WM_REGIONS) + tuple(REST_REGIONS)}

LESION_COLUMNS = ["dice", "hd95_mm", "avd_pct", "lesion_recall", "lesion_f1", "log_vd", "lesion_precision",
                  "vol_ref_ml", "vol_pred_ml", "n_ref_lesions", "n_pred_lesions", "n_ref_lesions_detected",
                  "n_pred_lesions_true", "n_pred_voxels_masked"]
LESION_SUMMARY = ["dice", "hd95_mm", "avd_pct", "lesion_recall", "lesion_f1", "log_vd", "lesion_precision",
                  "vol_ref_ml", "vol_pred_ml"]
REGION_MAIN = ["mean_dice_wm", "mean_dice_rest", "wrong_hemisphere"]
REGION_COLUMNS_ORDER = REGION_MAIN + ["n_regions_scored"] + list(REGION_COLUMNS.values())
REGION_SUMMARY = REGION_MAIN + list(REGION_COLUMNS.values())
ID_COLUMNS = ["case", "subject", "site", "pred_file", "ref_file"]

DEFINITIONS = {
    "masking": "reference lesion = label 1; prediction lesion = label 1 outside reference label 2 "
               "(integer comparison, not the challenge script's pixel-type threshold)",
    "dice": "2|P∩R|/(|P|+|R|) over all voxels; NaN when both empty",
    "hd95_mm": "max of the two directed 95th percentiles of nearest-neighbour distances (mm, world "
               "coordinates) between boundaries from in-plane 3x3 erosion; NaN when prediction or reference empty",
    "avd_pct": "|V_pred - V_ref| / V_ref * 100; NaN when reference empty",
    "lesion_recall": "26-connected reference lesions overlapping the prediction / reference lesions; 1 when none",
    "lesion_f1": "2PR/(P+R), precision = 26-connected predicted lesions overlapping the reference / predicted "
                 "lesions (1 when none); 0 when P+R = 0",
    "log_vd": "|ln V_pred - ln V_ref|; NaN when either empty",
    "region_dice": "Dice per label; NaN when absent from both; mean_dice_wm = mean over regions 1-34 that "
                   "are not NaN; mean_dice_rest = the same over 35/36",
    "wrong_hemisphere": "among voxels labelled with a region (1-36) in both prediction and reference, the share "
                        "whose labels lie in different hemispheres (left 1-17 and 35, right 18-34 and 36); NaN "
                        "when no voxel is labelled in both",
}


# ----------------------------------------------------------------------------------------- matching
def subject_of(stem: str) -> str:
    """Subject id of a case name: the name without a trailing _flair/_t1 (case-insensitive)."""
    return split_case(stem)[0]


def _modality_of(stem: str) -> str:
    return split_case(stem)[1] or ""


def nifti_files(folder: Path, what: str) -> dict[str, Path]:
    """stem → path of the .nii.gz/.nii files in `folder` (hidden files skipped)."""
    folder = Path(folder)
    out: dict[str, Path] = {}
    for p in io.list_inputs(folder, io.NIFTI_SUFFIXES, what=what):
        stem = io.strip_nifti(p.name)
        if stem in out:
            raise WMHLocError(f"{p}: duplicate case name (also {out[stem].name}) in {what} folder")
        out[stem] = p
    if not out:
        raise WMHLocError(f"{folder}: no .nii.gz/.nii files in {what} folder")
    return out


def match_cases(preds: dict[str, Path], refs: dict[str, Path]) -> tuple[list[tuple[str, Path, Path, str]], list[str]]:
    """[(case, pred, ref, how)] and the subjects that have references but no prediction.

    Raises WMHLocError listing predictions without a reference."""
    by_subject: dict[str, list[str]] = {}
    for stem in sorted(refs):
        by_subject.setdefault(subject_of(stem), []).append(stem)
    pairs, unmatched = [], []
    for stem in sorted(preds):
        if stem in refs:
            pairs.append((stem, preds[stem], refs[stem], "exact"))
            continue
        cands = by_subject.get(subject_of(stem), [])
        if not cands:
            unmatched.append(stem)
            continue
        mod = _modality_of(stem)
        same_mod = [c for c in cands if _modality_of(c) == mod]
        pick = (same_mod or cands)[0]
        pairs.append((stem, preds[stem], refs[pick], "subject"))
    if unmatched:
        first = next(iter(preds.values())).parent
        shown = ", ".join(unmatched[:5]) + (f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else "")
        raise WMHLocError(f"{first}: {len(unmatched)} prediction(s) without a reference (by name or subject id): "
                          f"{shown}")
    done = {subject_of(c) for c, *_ in pairs}
    missing = sorted(s for s in by_subject if s not in done)
    return pairs, missing


def read_sites(path: Path, column: str = "site") -> dict[str, str]:
    """subject → site (or scanner, any `column`) from a CSV with a subject column."""
    rows = io.read_csv(path, required=("subject", column))
    sites: dict[str, str] = {}
    for i, r in enumerate(rows, start=2):
        s, site = (r["subject"] or "").strip(), (r[column] or "").strip()
        if not s:
            raise WMHLocError(f"{path}: empty subject on line {i}")
        if s in sites and sites[s] != site:
            raise WMHLocError(f"{path}: subject {s} listed with two sites ({sites[s]}, {site})")
        sites[s] = site
    return sites


# ----------------------------------------------------------------------------------------- scoring
def score_case(task: str, pred_path: Path, ref_path: Path) -> dict:
    labels = LESION_LABELS if task == "lesion" else REGION_LABELS
    ref, ref_img = io.read_labels(ref_path, allowed=labels, what=f"{task} reference")
    pred, pred_img = io.read_labels(pred_path, allowed=labels, what=f"{task} prediction")
    io.check_same_geometry(ref_img, ref_path, pred_img, pred_path)
    if task == "lesion":
        return M.lesion_metrics(pred, ref, ref_img.GetSpacing(), ref_img.GetOrigin(), ref_img.GetDirection())
    d = M.region_dice(pred, ref, list(REGION_COLUMNS))
    out = {"mean_dice_wm": M.nanmean_or_nan(d[l] for l in WM_REGIONS),
           "mean_dice_rest": M.nanmean_or_nan(d[l] for l in REST_REGIONS),
           "wrong_hemisphere": M.wrong_hemisphere(pred, ref, LEFT_REGIONS + (REST_LEFT,),
                                                  RIGHT_REGIONS + (REST_RIGHT,)),
           "n_regions_scored": int(sum(np.isfinite(d[l]) for l in WM_REGIONS))}
    out.update({REGION_COLUMNS[l]: d[l] for l in REGION_COLUMNS})
    return out


def describe(values) -> dict:
    """n (finite values), n_nan, mean, SD (ddof 1), median, min, max; NaNs left out."""
    v = np.asarray([np.nan if x is None or x == "" else float(x) for x in values], dtype=float)
    ok = v[np.isfinite(v)]
    if ok.size == 0:
        return {"n": 0, "n_nan": int(v.size), "mean": np.nan, "sd": np.nan, "median": np.nan,
                "min": np.nan, "max": np.nan}
    return {"n": int(ok.size), "n_nan": int(v.size - ok.size), "mean": float(ok.mean()),
            "sd": float(ok.std(ddof=1)) if ok.size > 1 else np.nan, "median": float(np.median(ok)),
            "min": float(ok.min()), "max": float(ok.max())}


def summarize(rows: list[dict], metrics: Sequence[str]) -> dict[str, dict[str, dict]]:
    """{group: {metric: describe()}}; groups = 'all' + each known site (sorted)."""
    groups = {"all": rows}
    sites = sorted({r["site"] for r in rows if r.get("site")})
    for s in sites:
        groups[s] = [r for r in rows if r.get("site") == s]
    return {g: {m: describe(r.get(m) for r in rs) for m in metrics} for g, rs in groups.items()}


def fmt_mean_sd(d: dict, digits: int = 3) -> str:
    if d["n"] == 0:
        return "n/a"
    sd = "" if not np.isfinite(d["sd"]) else f" ± {d['sd']:.{digits}f}"
    return f"{d['mean']:.{digits}f}{sd}"


# ----------------------------------------------------------------------------------------- CLI
def build_parser():
    p = cli.parser("wmhloc_evaluate", "Score lesion or region predictions against references with the WMH "
                   "challenge's metric definitions (lesion: Dice, HD95, AVD, lesion recall, lesion F1, log "
                   "volume difference; region: Dice per region 1-34 and 35/36, wrong-hemisphere share).")
    p.add_argument("--pred", required=True, type=Path, help="folder of predicted label maps (.nii.gz), e.g. "
                   "nnUNetv2_predict output or wmhloc_fuse output; other files are ignored")
    p.add_argument("--ref", required=True, type=Path, help="folder of reference label maps, e.g. labelsTs")
    p.add_argument("--task", required=True, choices=("lesion", "region"),
                   help="lesion: the challenge's lesion metrics; region: Dice per region")
    p.add_argument("-o", "--output", required=True, type=Path, help="output folder (cases.csv, summary.csv, "
                   "summary.json)")
    p.add_argument("--sites", type=Path, default=None, help="CSV with columns subject,site (e.g. the "
                   "converter's subjects.csv) for a per-site breakdown")
    p.add_argument("--site-column", default="site", help="column of --sites to group by, e.g. scanner")
    p.add_argument("--include", default=None, metavar="GLOB", help="only predictions whose name (without "
                   ".nii.gz) matches this pattern, e.g. '*_t1' when one folder holds both modalities")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    return p


def _main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.pred.is_dir() and args.ref.is_dir() and args.pred.resolve() == args.ref.resolve():
        raise WMHLocError(f"{args.pred}: --pred and --ref are the same folder (every score would be perfect)")
    io.check_output(args.output, overwrite=args.overwrite, inputs=[args.pred, args.ref, args.sites])
    preds = nifti_files(args.pred, "prediction")
    if args.include:
        preds = {k: v for k, v in preds.items() if fnmatch.fnmatchcase(k, args.include)}
        if not preds:
            raise WMHLocError(f"{args.pred}: no prediction matches --include {args.include!r}")
    refs = nifti_files(args.ref, "reference")
    pairs, missing = match_cases(preds, refs)
    sites = read_sites(args.sites, args.site_column) if args.sites else {}

    rows, no_site = [], []
    for case, pp, rp, _how in cli.progress(pairs, desc=f"evaluate {args.task}"):
        subject = subject_of(case)
        site = sites.get(subject, sites.get(case, ""))
        if sites and not site:
            no_site.append(subject)
        row = {"case": case, "subject": subject, "site": site, "pred_file": pp.name, "ref_file": rp.name}
        row.update(score_case(args.task, pp, rp))
        rows.append(row)

    main_cols = LESION_COLUMNS if args.task == "lesion" else REGION_COLUMNS_ORDER
    sum_cols = LESION_SUMMARY if args.task == "lesion" else REGION_SUMMARY
    summary = summarize(rows, sum_cols)
    notes = []
    if missing:
        notes.append(f"{len(missing)} subject(s) with a reference but no prediction: "
                     + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
    if no_site:
        notes.append(f"{len(no_site)} case(s) without a site in {args.sites}: " + ", ".join(sorted(set(no_site))[:10]))
    n_subject = sum(1 for *_, how in pairs if how == "subject")
    if n_subject:
        notes.append(f"{n_subject} prediction(s) matched to a reference by subject id")

    sum_rows = [{"group": g, "metric": m, **d} for g, md in summary.items() for m, d in md.items()]
    doc = {"task": args.task, "n_cases": len(rows), "pred_dir": str(args.pred.resolve()),
           "ref_dir": str(args.ref.resolve()), "sites_csv": str(args.sites) if args.sites else None,
           "missing_predictions": missing, "notes": notes,
           "definitions": DEFINITIONS if args.task == "lesion" else
           {k: DEFINITIONS[k] for k in ("region_dice", "wrong_hemisphere")},
           "summary": summary}
    with io.atomic_dir(args.output, overwrite=args.overwrite) as tmp:
        io.write_csv(rows, tmp / "cases.csv", columns=ID_COLUMNS + main_cols)
        io.write_csv(sum_rows, tmp / "summary.csv",
                     columns=["group", "metric", "n", "n_nan", "mean", "sd", "median", "min", "max"])
        io.write_json(_finite(doc), tmp / "summary.json")

    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    show = ["dice", "hd95_mm", "avd_pct", "lesion_recall", "lesion_f1", "log_vd"] if args.task == "lesion" \
        else REGION_MAIN
    print(f"{len(rows)} case(s), task {args.task} → {args.output}")
    for g, md in summary.items():
        print(f"  {g:>12}: " + "  ".join(f"{m} {fmt_mean_sd(md[m])}" for m in show))
    return 0


def _finite(o):
    """NaN/inf → None so summary.json is strict JSON."""
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, float) and not np.isfinite(o):
        return None
    return o


def main(argv=None) -> int:
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
