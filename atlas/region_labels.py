"""wmhloc_region_labels: carry the refined 36-label atlas into subjects' native space.

One subject:
    wmhloc_region_labels --t1 T1.nii.gz [--flair FLAIR.nii.gz] [--wm-mask WM.nii.gz] \\
        --atlas-dir refined_atlas/ --output sub01_regions.nii.gz
writes sub01_regions.nii.gz (labels 0..36 on the grid of --flair if given, else of --t1, zero outside the
subject's WM), sub01_regions.tfm (ITK transform: subject point → atlas point), sub01_regions_qc.png
(the WM outline over the T1 beside the labels, three planes) and sub01_regions.json (WM, GM and brain
volumes, a warning when the WM/brain ratio is not an adult brain's, registration figures). The four are
built in a hidden temporary folder and moved into place together, the label map last: an interrupted
run leaves nothing that blocks the next (sidecars without their label map, with our JSON among them,
are an unfinished run's and are replaced). Same input, same output: every run gives the same bits.
A cohort:
    wmhloc_region_labels --input DIR|CSV --atlas-dir refined_atlas/ --output OUTDIR --workers 2
DIR holds per-subject folders (<id>/T1.nii.gz or the challenge's <id>/pre/T1.nii.gz, with FLAIR.nii.gz
beside it if present) or flat files <id>_t1[_0000].nii.gz (+ <id>_flair[_0000].nii.gz); a CSV has columns
subject,t1 and optionally flair,wm_mask. OUTDIR gets <id>.nii.gz (+ .tfm, _qc.png, .json) and
region_labels_summary.csv; a failed subject is listed there with its reason and the exit code is 1.

Failure is loud: an implausible transform, or atlas WM landing mostly outside the subject's WM, ends
with an error and no label map."""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_wmhloc import cli, io, parallel
from nnunet_wmhloc.atlas import _atlas, _register, _subject
from nnunet_wmhloc.io import WMHLocError

MIN_BRAIN_ML = 300.0  # an adult brain is 1000+ ml; the challenge's 3 mm FOVs hold all of it
MIN_WM_ML = 20.0      # an adult brain has ~400+ ml of WM; the 3 mm challenge FOVs never hold < 100 ml
MIN_WM_DICE = 0.45    # atlas WM vs subject WM after registration: ~0.6-0.8 when right, < 0.3 when lost
MIN_COVERAGE = 0.70   # share of the subject's WM that receives a label: > 0.95 when right
WM_BRAIN_RATIO = (0.25, 0.50)  # adult WM / (WM + GM + CSF inside the brain mask): outside it, check the QC
TOOL = "wmhloc_region_labels"  # marks our JSON record: sidecars beside it without a label map are ours
SUMMARY = "region_labels_summary.csv"
STRIPPED_CHOICES = {"auto": None, "yes": True, "no": False}


class RegistrationFailed(WMHLocError):
    pass


@dataclass
class Outcome:
    labels: sitk.Image            # final: carried labels × subject WM, on the output grid
    carried: sitk.Image           # carried labels before WM masking
    transform: sitk.Transform
    wm: sitk.Image
    brain: sitk.Image
    t1: sitk.Image
    quality: dict = field(default_factory=dict)


def sidecars(output: Path) -> dict[str, Path]:
    stem = io.strip_nifti(output)
    return {"tfm": output.with_name(stem + ".tfm"), "qc": output.with_name(stem + "_qc.png"),
            "json": output.with_name(stem + ".json")}


# ------------------------------------------------------------------------------------------- core
def _read_inputs(t1_path, flair_path=None, wm_path=None):
    t1 = io.read_image(t1_path, what="T1")
    flair = wm = None
    ref, ref_path = t1, t1_path
    if flair_path is not None:
        flair = io.read_image(flair_path, what="FLAIR")
        # the output lives on the FLAIR grid (as the authors' labels); the T1 must share it, as the
        # challenge's pre/T1.nii.gz does
        io.check_same_geometry(flair, flair_path, t1, t1_path)
        ref, ref_path = flair, flair_path
    if wm_path is not None:
        arr, wm_img = io.read_labels(wm_path, what="WM mask")
        io.check_same_geometry(ref, ref_path, wm_img, wm_path)
        if arr.min() < 0:
            raise WMHLocError(f"{wm_path}: WM mask has negative values")
        if not (arr > 0).any():
            raise WMHLocError(f"{wm_path}: WM mask is empty")
        wm = io.array_to_image((arr > 0).astype(np.uint8), wm_img)
    return t1, flair, wm


def label_subject(t1_path, atlas: _atlas.Atlas, *, flair_path=None, wm_path=None,
                  deformable: bool = False, skull_stripped: bool | None = None) -> Outcome:
    """Brain/WM of the subject, atlas → subject registration, labels × WM. Raises WMHLocError."""
    t0 = time.time()
    t1, flair, wm_given = _read_inputs(t1_path, flair_path, wm_path)
    grid = flair if flair is not None else t1
    a = sitk.GetArrayViewFromImage(t1)
    lo, hi = np.percentile(a[:: 4], [1, 99])
    if not hi > lo:
        raise WMHLocError(f"{t1_path}: T1 has no contrast (1st and 99th percentiles both {hi:g})")
    info = {}
    try:
        brain, tissue = _subject.segment(t1, flair, skull_stripped=skull_stripped, info=info)
    except (RuntimeError, ValueError, IndexError) as e:
        raise WMHLocError(f"{t1_path}: brain/WM estimation failed ({type(e).__name__}: "
                          f"{str(e).strip().splitlines()[-1][:100]}); pass --wm-mask") from None
    if wm_given is not None:  # the user's WM replaces ours; our brain mask still shapes the fit
        brain = sitk.Cast((brain + wm_given) > 0, sitk.sitkUInt8)
        arr = sitk.GetArrayFromImage(tissue)
        arr[arr == 3] = 2
        arr[(sitk.GetArrayViewFromImage(wm_given) > 0)] = 3
        arr[(arr == 0) & (sitk.GetArrayViewFromImage(brain) > 0)] = 2
        tissue = io.array_to_image(arr, tissue)
    src = wm_path or t1_path
    wm_arr = sitk.GetArrayViewFromImage(tissue) == 3
    vox_ml = io.voxel_volume_mm3(grid) / 1000.0
    wm_ml = float(wm_arr.sum()) * vox_ml
    gm_ml = float((sitk.GetArrayViewFromImage(tissue) == 2).sum()) * vox_ml
    brain_ml = float((sitk.GetArrayViewFromImage(brain) > 0).sum()) * vox_ml
    ratio = wm_ml / max(brain_ml, 1e-9)
    warnings = []
    if not WM_BRAIN_RATIO[0] <= ratio <= WM_BRAIN_RATIO[1]:
        warnings.append(f"WM/brain volume ratio {ratio:.2f} is outside {WM_BRAIN_RATIO[0]}-{WM_BRAIN_RATIO[1]} "
                        f"(adult brains): the WM estimate may be wrong; check the QC image or pass --wm-mask")
    if brain_ml < MIN_BRAIN_ML:  # else the mixture finds "WM" in whatever bright blob it is given
        raise WMHLocError(f"{src}: subject brain is {brain_ml:.1f} ml (< {MIN_BRAIN_ML:g} ml): not a brain T1, or "
                          f"the brain estimate failed (pass --wm-mask)")
    if wm_ml < MIN_WM_ML:
        raise WMHLocError(f"{src}: subject WM is {wm_ml:.1f} ml (< {MIN_WM_ML:g} ml): not a brain T1, or the "
                          f"brain/WM estimate failed (pass --wm-mask)")
    try:
        res = _register.register(tissue, atlas.tissue)
    except RuntimeError as e:
        raise RegistrationFailed(f"{t1_path}: registration failed ({str(e).strip().splitlines()[-1][:120]})") from None
    bad = _register.affine_sanity(res.transform)
    if bad:
        raise RegistrationFailed(f"{t1_path}: registration diverged: {bad}")
    transform, log = res.transform, list(res.log)
    if deformable:
        try:
            ref = _register.refine_bspline(tissue, atlas.tissue, res.transform)
            transform, log = ref.transform, log + ref.log
        except RuntimeError as e:
            raise RegistrationFailed(f"{t1_path}: deformable refinement failed "
                                     f"({str(e).strip().splitlines()[-1][:120]})") from None
    carried = sitk.Resample(atlas.labels, grid, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkInt16)
    atlas_wm = sitk.Resample(atlas.wm, grid, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    c = sitk.GetArrayViewFromImage(carried)
    a = sitk.GetArrayViewFromImage(atlas_wm) > 0
    wm_dice = 2.0 * float((a & wm_arr).sum()) / max(1.0, float(a.sum() + wm_arr.sum()))
    coverage = float(((c > 0) & wm_arr).sum()) / max(1.0, float(wm_arr.sum()))
    in_wm = float((a & wm_arr).sum()) / max(1.0, float(a.sum()))
    quality = {"tool": TOOL, "t1": str(t1_path), "flair": str(flair_path) if flair_path else None,
               "wm_mask": str(wm_path) if wm_path else None, "skull_stripped": info["skull_stripped"],
               "skull_stripped_detected": skull_stripped is None, "wm_ml": round(wm_ml, 1),
               "gm_ml": round(gm_ml, 1), "brain_ml": round(brain_ml, 1), "wm_brain_ratio": round(ratio, 4),
               "warnings": warnings,
               "wm_dice_atlas_vs_subject": round(wm_dice, 4), "atlas_wm_inside_subject_wm": round(in_wm, 4),
               "subject_wm_labelled": round(coverage, 4), "deformable": deformable,
               "registration_log": [list(x) for x in log],
               "affine_matrix": list(res.transform.GetMatrix()), "seconds": None}
    if wm_dice < MIN_WM_DICE or coverage < MIN_COVERAGE:
        raise RegistrationFailed(
            f"{t1_path}: registration failed: atlas WM vs subject WM Dice {wm_dice:.2f} (need ≥ {MIN_WM_DICE}), "
            f"{100 * coverage:.0f}% of the subject's WM labelled (need ≥ {100 * MIN_COVERAGE:.0f}%)")
    out = np.where(wm_arr, c, 0).astype(np.int16)
    labels = io.array_to_image(out, grid)
    quality["labelled_ml"] = round(float((out > 0).sum()) * vox_ml, 1)
    quality["seconds"] = round(time.time() - t0, 2)
    return Outcome(labels=labels, carried=carried, transform=transform, wm=sitk.Cast(tissue == 3, sitk.sitkUInt8),
                   brain=brain, t1=t1, quality=quality)


# --------------------------------------------------------------------------------------------- QC
def qc_png(t1: sitk.Image, labels: sitk.Image, path: Path, title: str = "", wm: sitk.Image | None = None) -> None:
    """Three planes through the labelled centre: the subject's WM outlined over the T1 (top row, when
    `wm` is given) beside the labels over the T1 (bottom row)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    t1o = sitk.DICOMOrient(sitk.Resample(t1, labels), "LPS")  # radiological: patient right on the left
    lo = sitk.DICOMOrient(labels, "LPS")
    a = sitk.GetArrayFromImage(t1o).astype(np.float32)
    lab = sitk.GetArrayFromImage(lo)
    w = None if wm is None else sitk.GetArrayFromImage(sitk.DICOMOrient(wm, "LPS")) > 0
    sx, sy, sz = lo.GetSpacing()
    idx = np.argwhere(lab > 0)
    cz, cy, cx = (idx.mean(0).round().astype(int) if idx.size else np.array(lab.shape) // 2)
    lo_v, hi_v = np.percentile(a[a > 0], [1, 99.5]) if (a > 0).any() else (0, 1)
    rng = np.random.default_rng(7)
    colors = np.vstack([[0, 0, 0, 0], np.c_[rng.uniform(0.15, 1, (36, 3)), np.full(36, 0.55)]])
    cmap = ListedColormap(colors)
    cuts = [("axial", np.s_[cz], sy / sx, "upper"), ("coronal", np.s_[:, cy, :], sz / sx, "lower"),
            ("sagittal", np.s_[:, :, cx], sz / sy, "lower")]
    rows = 1 if w is None else 2
    fig, axes = plt.subplots(rows, 3, figsize=(13, 4.6 * rows), squeeze=False)
    for j, (name, cut, aspect, origin) in enumerate(cuts):
        for i in range(rows):
            ax = axes[i, j]
            ax.imshow(a[cut], cmap="gray", vmin=lo_v, vmax=hi_v, aspect=aspect, origin=origin,
                      interpolation="nearest")
            if i == 0 and w is not None:
                ax.contour(w[cut].astype(np.float32), levels=[0.5], colors="red", linewidths=0.6, origin=origin)
                ax.set_title(f"{name}: subject WM (outline)")
            else:
                ax.imshow(np.ma.masked_equal(lab[cut], 0), cmap=cmap, vmin=0, vmax=36, aspect=aspect,
                          origin=origin, interpolation="nearest")
                ax.set_title(f"{name}: region labels")
            ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _ours(json_path: Path) -> bool:
    """Whether json_path is a record this command wrote (so the sidecars beside it are ours)."""
    try:
        return json.loads(json_path.read_text(encoding="utf-8")).get("tool") == TOOL
    except (OSError, ValueError, AttributeError):
        return False


def check_outputs(output: Path, overwrite: bool, extra: tuple[Path, ...] = (), inputs=()) -> bool:
    """io.check_output for the label map and its sidecars: existing ones are refused without --overwrite,
    except the sidecars an interrupted run left (no label map, our JSON record beside them). Returns
    whether existing files may be replaced."""
    sc = sidecars(output)
    replace = overwrite or (not output.exists() and _ours(sc["json"]))
    for q in [output, *sc.values(), *extra]:
        io.check_output(q, overwrite=replace, inputs=inputs, kind="file")
    return replace


def write_outcome(o: Outcome, output: Path, overwrite: bool, extra: dict[str, sitk.Image] | None = None) -> None:
    """Write the label map and its sidecars (and `extra` images, by file name) as one unit: all are built
    in a hidden temporary folder beside the output, then moved into place, JSON first (it marks the set
    as ours) and the label map last (its presence means success)."""
    extra = extra or {}
    replace = check_outputs(output, overwrite, tuple(output.with_name(n) for n in extra))
    sc = sidecars(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    # named as a task's staging folder, so a cohort run sweeps what a killed worker left
    tmp = Path(tempfile.mkdtemp(prefix=f"{parallel.STAGING_PREFIX}{output.name}-", dir=output.parent))
    try:
        io.write_json(o.quality, tmp / sc["json"].name)
        sitk.WriteTransform(o.transform, str(tmp / sc["tfm"].name))
        q = o.quality
        qc_png(o.t1, o.labels, tmp / sc["qc"].name, wm=o.wm,
               title=f"{output.name}: WM {q['wm_ml']:.0f} ml ({100 * q['wm_brain_ratio']:.0f}% of the brain), "
               f"WM Dice atlas/subject {q['wm_dice_atlas_vs_subject']:.2f}, "
               f"WM labelled {100 * q['subject_wm_labelled']:.0f}%" + ("  WARNING: WM/brain ratio" if q["warnings"] else ""))
        for name, img in extra.items():
            io.write_image(img, tmp / name)
        io.write_image(o.labels, tmp / output.name)
        for name in [sc["json"].name, sc["tfm"].name, sc["qc"].name, *extra, output.name]:
            dst = output.with_name(name)
            if not replace:
                io.check_overwrite(dst, False)  # appeared meanwhile (another run): do not clobber it
            os.replace(tmp / name, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------------- cohort
def discover(input_path: Path) -> list[dict]:
    """Subjects of a cohort folder or CSV: [{subject, t1, flair, wm_mask}]."""
    if input_path.is_file():
        rows = io.read_csv(input_path, required=("subject", "t1"))
        if not rows:
            raise WMHLocError(f"{input_path}: CSV has no rows")
        base = input_path.parent
        out = []
        for i, r in enumerate(rows, start=2):
            def res(v):
                return None if not v else (Path(v) if Path(v).is_absolute() else base / v)
            out.append({"subject": io.safe_name(r["subject"], what="subject id", where=f"{input_path}: line {i}"),
                        "t1": res(r["t1"]), "flair": res(r.get("flair")),
                        "wm_mask": res(r.get("wm_mask"))})
    elif input_path.is_dir():
        out = []
        for t1 in sorted(input_path.rglob("T1.nii.gz")):
            folder = t1.parent
            sid = folder.parent.name if folder.name == "pre" else folder.name
            fl = folder / "FLAIR.nii.gz"
            out.append({"subject": sid, "t1": t1, "flair": fl if fl.is_file() else None, "wm_mask": None})
        if not out:
            for t1 in sorted(input_path.glob("*.nii.gz")):
                name = io.strip_nifti(t1)
                low = name.lower()
                for suffix in ("_t1_0000", "_t1"):
                    if low.endswith(suffix):
                        sid = name[: -len(suffix)]
                        fl = next((p for p in (input_path / f"{sid}_flair{s}.nii.gz" for s in ("_0000", ""))
                                   if p.is_file()), None)
                        out.append({"subject": sid, "t1": t1, "flair": fl, "wm_mask": None})
                        break
        if not out:
            raise WMHLocError(f"{input_path}: no subjects found (expected <id>/T1.nii.gz, <id>/pre/T1.nii.gz "
                              f"or <id>_t1.nii.gz)")
    else:
        raise WMHLocError(f"{input_path}: input folder or CSV not found")
    for r in out:
        io.safe_name(r["subject"], what="subject id", where=str(r["t1"]))
    ids = [r["subject"] for r in out]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise WMHLocError(f"{input_path}: duplicate subject ids {dup[:5]}")
    return out


_ATLAS_CACHE: dict = {}


def _worker(job: dict) -> dict:
    """One subject of a cohort (a local process or a Dask worker): its outputs are made in a private staging
    folder and moved into place together, label map last, so a task killed midway leaves nothing behind
    (its staging folder is swept when the cohort ends) and a retry starts clean."""
    atlas = _ATLAS_CACHE.get(job["atlas_dir"])
    if atlas is None:
        atlas = _ATLAS_CACHE[job["atlas_dir"]] = _atlas.load_atlas(job["atlas_dir"])
    row = {"subject": job["subject"], "status": "failed", "reason": "", "output": "", "t1": str(job["t1"]),
           "worker": parallel.worker_name()}
    try:
        o = label_subject(job["t1"], atlas, flair_path=job["flair"], wm_path=job["wm_mask"],
                          deformable=job["deformable"], skull_stripped=job["skull_stripped"])
        o.quality.update(parallel.record_stamp())
        write_outcome(o, Path(job["output"]), job["overwrite"])  # one unit; a killed task's staging is swept
        row.update(status="ok", output=job["output"], wm_ml=o.quality["wm_ml"],
                   wm_dice=o.quality["wm_dice_atlas_vs_subject"], wm_labelled=o.quality["subject_wm_labelled"],
                   seconds=o.quality["seconds"], wm_brain_ratio=o.quality["wm_brain_ratio"],
                   warning="; ".join(o.quality["warnings"]))
    except WMHLocError as e:
        row["reason"] = str(e)
    except Exception as e:  # noqa: BLE001 — one broken subject must not sink a cohort; reported below
        row["reason"] = f"{job['t1']}: unexpected {type(e).__name__}: {str(e).strip().splitlines()[-1][:160]}"
    return row


def _init_worker(threads: int | None) -> None:
    """ITK threads per task: `threads`, or on a Dask worker the machine's cores shared by the worker's task
    slots. ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS, when set, wins (ITK reads it at start-up)."""
    if os.environ.get("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        return
    if threads is None:
        from distributed import get_worker

        threads = max(1, (os.cpu_count() or 1) // max(1, get_worker().state.nthreads))
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def run_cohort(args) -> int:
    subjects = discover(Path(args.input))
    with parallel.session(args.scheduler) as client:  # connected (or refused) before anything is written
        return _run_cohort(args, subjects, client)


def _run_cohort(args, subjects: list[dict], client) -> int:
    out_dir = Path(args.output)
    # the folder is filled subject by subject: it may sit in the cohort folder, never hold its images
    io.check_not_input(out_dir, [args.input if Path(args.input).is_file() else None]
                       + [s[k] for s in subjects for k in ("t1", "flair", "wm_mask")])
    if out_dir.exists() and not out_dir.is_dir():
        raise WMHLocError(f"{out_dir}: exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    _atlas.load_atlas(args.atlas_dir)  # fail fast on a bad atlas, before any work
    jobs = [{"subject": s["subject"], "t1": s["t1"], "flair": s["flair"], "wm_mask": s["wm_mask"],
             "atlas_dir": str(args.atlas_dir), "output": str(out_dir / f"{s['subject']}.nii.gz"),
             "overwrite": args.overwrite, "deformable": args.deformable,
             "skull_stripped": STRIPPED_CHOICES[args.skull_stripped]} for s in subjects]
    for j in jobs:
        check_outputs(Path(j["output"]), args.overwrite)
    workers = max(1, min(args.workers, len(jobs)))
    if client is not None:
        rows = parallel.map_tasks(_worker, jobs, desc="region labels", client=client, initializer=_init_worker,
                                  initargs=(None,))
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        rows = parallel.map_tasks(_worker, jobs, desc="region labels", workers=workers,
                                  initializer=_init_worker if workers > 1 else None, initargs=(threads,))
    parallel.sweep(out_dir)
    cols = ["subject", "status", "reason", "t1", "output", "wm_ml", "wm_brain_ratio", "wm_dice", "wm_labelled",
            "seconds", "warning", "worker"]
    io.write_csv(rows, out_dir / SUMMARY, columns=cols, overwrite=True)
    failed = [r for r in rows if r["status"] != "ok"]
    print(f"{out_dir}: {len(rows) - len(failed)}/{len(rows)} subjects labelled; summary in {SUMMARY}",
          file=sys.stderr)
    for r in failed:
        print(f"error: {r['reason']}", file=sys.stderr)
    return 1 if failed else 0


# -------------------------------------------------------------------------------------------- CLI
def _main(argv=None) -> int:
    p = cli.parser("wmhloc_region_labels", __doc__.splitlines()[0])
    g = p.add_argument_group("one subject")
    g.add_argument("--t1", help="T1-weighted image (skull-stripped or not)")
    g.add_argument("--flair", help="FLAIR on the same grid as the T1; the output then uses its grid, and "
                   "FLAIR-bright lesions are counted as WM")
    g.add_argument("--wm-mask", help="the subject's WM mask (non-zero = WM), on the output grid: replaces "
                   "the built-in WM estimate")
    c = p.add_argument_group("a cohort")
    c.add_argument("--input", help="cohort folder or CSV (columns subject,t1[,flair,wm_mask])")
    c.add_argument("--workers", type=cli.positive_int, default=1,
                   help="subjects processed in parallel (local processes)")
    parallel.add_argument(c)
    p.add_argument("--atlas-dir", required=True, help="folder written by wmhloc_build_atlas (or the raw Eve folder)")
    p.add_argument("-o", "--output", required=True, help="label map .nii.gz (one subject) or output folder (cohort)")
    p.add_argument("--deformable", action="store_true", help="add a coarse B-spline refinement after the affine")
    p.add_argument("--skull-stripped", nargs="?", const="yes", default="auto", choices=list(STRIPPED_CHOICES),
                   help="whether the T1 is skull-stripped (brain on a constant background): auto (default) "
                   "detects it; a bare --skull-stripped means yes; 'no' for a raw head whose air was zeroed")
    p.add_argument("--save-masks", action="store_true", help="also write <output>_brainmask / _wm .nii.gz (one subject)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    a = p.parse_args(argv)
    if (a.t1 is None) == (a.input is None):
        raise WMHLocError("give either --t1 (one subject) or --input (a cohort)")
    if a.scheduler and a.input is None:
        raise WMHLocError("--scheduler is for a cohort (--input)")
    if a.scheduler:
        parallel.require()  # before anything is written
    if a.input is not None:
        if a.flair or a.wm_mask:
            raise WMHLocError("--flair/--wm-mask are for one subject; give them as CSV columns for a cohort")
        if a.workers < 1:
            raise WMHLocError(f"--workers {a.workers}: must be ≥ 1")
        return run_cohort(a)
    output = Path(a.output)
    if not output.name.endswith((".nii.gz", ".nii")):
        raise WMHLocError(f"{output}: output must be a .nii.gz or .nii file")
    stem = io.strip_nifti(output)
    masks = (stem + "_brainmask.nii.gz", stem + "_wm.nii.gz") if a.save_masks else ()
    check_outputs(output, a.overwrite, tuple(output.with_name(n) for n in masks),
                  inputs=[a.t1, a.flair, a.wm_mask])
    atlas = _atlas.load_atlas(a.atlas_dir)
    o = label_subject(a.t1, atlas, flair_path=a.flair, wm_path=a.wm_mask, deformable=a.deformable,
                      skull_stripped=STRIPPED_CHOICES[a.skull_stripped])
    write_outcome(o, output, a.overwrite, dict(zip(masks, (o.brain, o.wm))))
    q = o.quality
    for w in q["warnings"]:
        print(f"warning: {output}: {w}", file=sys.stderr)
    print(f"{output}: {q['labelled_ml']:.0f} ml of WM labelled ({100 * q['subject_wm_labelled']:.0f}% of the "
          f"subject's WM), atlas/subject WM Dice {q['wm_dice_atlas_vs_subject']:.2f}, {q['seconds']:.1f} s",
          file=sys.stderr)
    return 0


def main(argv=None) -> int:
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
