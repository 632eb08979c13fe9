"""wmhloc_evaluate: score predictions against references, exactly as the WMH challenge does.

Lesion task: the challenge's five metrics (+ log volume difference), see ``metrics.py`` for every
definition and edge case. Region task: Dice per region 1-34 and 35/36, mean over 1-34 per case, and the
share of voxels put in the wrong hemisphere (among those both maps assign to a region).

Predictions are paired with references by name, else by subject id (``matching.py``; the authors'
``WMH_<id>`` names included); the reference file used is in the CSV. A prediction without a reference is
an error; subjects with references but no prediction are listed (stderr and summary.json,
``missing_predictions``). Other files in the folders (nnU-Net's json, npz, pkl) are ignored.

Outputs in the output folder (written atomically): ``cases.csv`` (one row per prediction), ``summary.csv``
and ``summary.json`` (n, mean, SD, median, min, max per metric, for all cases and per site when a sites CSV
is given; ``site_column`` groups by another column of that CSV).

`evaluate()` does the work and returns an `EvaluationResult`; `main` only parses and prints.
"""
from __future__ import annotations

import fnmatch
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from nnunet_wmhloc import cli, io
from nnunet_wmhloc.evaluation import metrics as M
from nnunet_wmhloc.evaluation.matching import Pair, match_cases, nifti_files, read_sites, site_of, subject_of
from nnunet_wmhloc.io import WMHLocError
from nnunet_wmhloc.vocab import (ALL_LABELS, LEFT_REGIONS, LESION_ALLOWED, REST_LEFT, REST_REGIONS, REST_RIGHT,
                                 RIGHT_REGIONS, WM_REGIONS, region_column)

LESION_LABELS = LESION_ALLOWED
REGION_LABELS = ALL_LABELS
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



def _finite(o):
    """NaN/inf → None so summary.json is strict JSON."""
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, float) and not np.isfinite(o):
        return None
    return o


# ----------------------------------------------------------------------------------------- the stage
SUMMARY_COLUMNS = ["group", "metric", "n", "n_nan", "mean", "sd", "median", "min", "max"]
SHOW = {"lesion": ["dice", "hd95_mm", "avd_pct", "lesion_recall", "lesion_f1", "log_vd"], "region": REGION_MAIN}


@dataclass
class EvaluationResult:
    task: str
    output: Path
    rows: list[dict]                      # cases.csv: one row per prediction
    summary: dict[str, dict[str, dict]]   # {group: {metric: describe()}}
    summary_rows: list[dict]              # summary.csv
    pairs: list[Pair]
    missing: list[str]                    # subjects with a reference but no prediction
    notes: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)

    def lines(self) -> list[str]:
        """What wmhloc_evaluate prints: the case count, then mean ± SD of the main metrics per group."""
        out = [f"{len(self.rows)} case(s), task {self.task} → {self.output}"]
        for g, md in self.summary.items():
            out.append(f"  {g:>12}: " + "  ".join(f"{m} {fmt_mean_sd(md[m])}" for m in SHOW[self.task]))
        return out


def select(preds: dict[str, Path], include: str | None, folder: Path) -> dict[str, Path]:
    """The predictions whose name (without .nii.gz) matches the glob `include` (all when None)."""
    if not include:
        return preds
    preds = {k: v for k, v in preds.items() if fnmatch.fnmatchcase(k, include)}
    if not preds:
        raise WMHLocError(f"{folder}: no prediction matches --include {include!r}")
    return preds


def score_pairs(task: str, pairs: list[Pair], sites: dict[str, str], *,
                progress: bool = True) -> tuple[list[dict], list[str]]:
    """cases.csv rows, and the subjects without a site when `sites` is given."""
    rows, no_site = [], []
    for p in cli.progress(pairs, desc=f"evaluate {task}", disable=None if progress else True):
        subject, site = subject_of(p.case), site_of(sites, p.case)
        if sites and not site:
            no_site.append(subject)
        row = {"case": p.case, "subject": subject, "site": site, "pred_file": p.pred.name, "ref_file": p.ref.name}
        row.update(score_case(task, p.pred, p.ref))
        rows.append(row)
    return rows, no_site


def _notes(missing: list[str], no_site: list[str], pairs: list[Pair], sites_csv: Path | None) -> list[str]:
    notes = []
    if missing:
        notes.append(f"{len(missing)} subject(s) with a reference but no prediction: "
                     + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
    if no_site:
        notes.append(f"{len(no_site)} case(s) without a site in {sites_csv}: " + ", ".join(sorted(set(no_site))[:10]))
    n_subject = sum(1 for p in pairs if p.how == "subject")
    if n_subject:
        notes.append(f"{n_subject} prediction(s) matched to a reference by subject id")
    return notes


def evaluate(pred: Path, ref: Path, task: str, output: Path, *, sites: Path | None = None,
             site_column: str = "site", include: str | None = None, overwrite: bool = False,
             progress: bool = True) -> EvaluationResult:
    """Score the predictions in `pred` against the references in `ref` (task 'lesion' or 'region') and write
    cases.csv, summary.csv and summary.json into `output` (atomically; an existing folder needs `overwrite`).
    `progress` False: no progress bar (a pipeline stage keeps the terminal for its own lines)."""
    pred, ref, output = Path(pred), Path(ref), Path(output)
    if task not in SHOW:
        raise WMHLocError(f"task {task!r}: must be lesion or region")
    if pred.is_dir() and ref.is_dir() and pred.resolve() == ref.resolve():
        raise WMHLocError(f"{pred}: --pred and --ref are the same folder (every score would be perfect)")
    io.check_output(output, overwrite=overwrite, inputs=[pred, ref, sites])
    preds = select(nifti_files(pred, "prediction"), include, pred)
    pairs, missing = match_cases(preds, nifti_files(ref, "reference"))
    site_map = read_sites(sites, site_column) if sites else {}
    rows, no_site = score_pairs(task, pairs, site_map, progress=progress)

    summary = summarize(rows, LESION_SUMMARY if task == "lesion" else REGION_SUMMARY)
    notes = _notes(missing, no_site, pairs, sites)
    sum_rows = [{"group": g, "metric": m, **d} for g, md in summary.items() for m, d in md.items()]
    doc = {"task": task, "n_cases": len(rows), "pred_dir": str(pred.resolve()), "ref_dir": str(ref.resolve()),
           "sites_csv": str(sites) if sites else None, "missing_predictions": missing, "notes": notes,
           "definitions": DEFINITIONS if task == "lesion" else
           {k: DEFINITIONS[k] for k in ("region_dice", "wrong_hemisphere")},
           "summary": summary}
    names = ("cases.csv", "summary.csv", "summary.json")
    with io.atomic_dir(output, overwrite=overwrite) as tmp:
        io.write_csv(rows, tmp / names[0], columns=ID_COLUMNS + (LESION_COLUMNS if task == "lesion"
                                                                 else REGION_COLUMNS_ORDER))
        io.write_csv(sum_rows, tmp / names[1], columns=SUMMARY_COLUMNS)
        io.write_json(_finite(doc), tmp / names[2])
    return EvaluationResult(task, output, rows, summary, sum_rows, pairs, missing, notes,
                            [output / n for n in names])


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
    a = build_parser().parse_args(argv)
    res = evaluate(a.pred, a.ref, a.task, a.output, sites=a.sites, site_column=a.site_column, include=a.include,
                   overwrite=a.overwrite)
    cli.print_result(res.lines(), res.notes)
    return 0


main = cli.entry(_main)


if __name__ == "__main__":
    sys.exit(main())
