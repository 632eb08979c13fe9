"""wmhloc_predict with no trained model (issue 20): `--lesions csv` takes each subject's lesion map from the
cohort's `lesion` column, `--regions atlas` makes its region map by the atlas registration of its T1 (what
wmhloc_region_labels does), on the lesion map's grid. The same registration gives the location outputs
(pipeline/location_outputs.py), so one registration per subject serves both.

The stage "maps" runs after "fuse" and writes segmentations/<task>/<subject>.nii.gz for the model-free
tasks, then the location outputs, so "localize" and everything after it are unchanged."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_wmhloc import io
from nnunet_wmhloc.io import WMHLocError, few
from nnunet_wmhloc.location.rows import add_pv_distance_option, check_pv_distance, load_atlas

TASKS = ("lesion", "region")


def add_arguments(p) -> None:
    g = p.add_argument_group("model-free path and location classes (no trained model needed)")
    g.add_argument("--lesions", choices=("model", "csv"), default="model",
                   help="lesion maps: the lesion model's (default), or csv = the cohort's `lesion` column (a mask "
                        "with label 1 = lesion, or a probability map thresholded by --lesion-threshold)")
    g.add_argument("--regions", choices=("model", "atlas"), default="model",
                   help="region maps: the region model's (default), or atlas = the atlas registration of each "
                        "subject's T1 (wmhloc_region_labels), on the lesion map's grid; needs --atlas-dir")
    g.add_argument("--atlas-dir", type=Path, default=None,
                   help="atlas folder (wmhloc_build_atlas output or the Eve folder): needed by --regions atlas; "
                        "with it, every subject with a T1 gets location classes (periventricular/deep, ...)")
    g.add_argument("--lesion-threshold", type=float, default=0.5,
                   help="probability at or above which a voxel of a --lesions csv probability map is lesion")
    add_pv_distance_option(g)


def model_tasks(a) -> tuple[str, ...]:
    """The tasks a trained model must predict."""
    free = {"lesion": a.lesions == "csv", "region": a.regions == "atlas"}
    return tuple(t for t in TASKS if not free[t])


def check(a, cohort) -> None:
    """Before anything is written: one line naming what is missing. The cohort's subjects are loaded only
    when a model-free task needs them (else a cohort that does not load fails at the convert stage)."""
    if not 0.0 < a.lesion_threshold <= 1.0:
        raise WMHLocError(f"--lesion-threshold {a.lesion_threshold:g}: must lie in (0, 1]")
    check_pv_distance(a.pv_distance)
    if a.lesions == "csv":
        no = [s.subject for s in cohort.subjects if s.lesion is None]
        if no:
            raise WMHLocError(f"{a.cohort}: --lesions csv needs a lesion map per subject (the cohort's `lesion` "
                              f"column); none for {few(no, 3)}")
    if a.regions == "atlas":
        if a.atlas_dir is None:
            raise WMHLocError("--regions atlas needs --atlas-dir (the atlas the subjects are registered to)")
        no = [s.subject for s in cohort.subjects if not s.images.get("t1")]
        if no:
            raise WMHLocError(f"{a.cohort}: --regions atlas registers each subject's T1; no T1 for {few(no, 3)}")
    if a.atlas_dir is not None:
        load_atlas(a.atlas_dir)  # a wrong folder fails now, not after the models ran


def convert_subjects(subjects: list, a) -> list:
    """The subjects as the convert stage sees them: with --lesions csv the lesion column is the input (read
    by the maps stage, probability maps allowed), not a reference mask to check and link."""
    return [replace(s, lesion=None) for s in subjects] if a.lesions == "csv" else subjects


def read_lesion(path: Path, threshold: float) -> tuple[sitk.Image, sitk.Image | None]:
    """(mask 0/1, probability map or None) of a cohort lesion file: integer labels 0/1 (2, the WMH
    challenge's "other pathology", is not lesion) or probabilities in [0, 1] thresholded at `threshold`."""
    img = io.read_image(path, what="lesion map")
    a = sitk.GetArrayFromImage(img).astype(np.float32)
    lo, hi = float(a.min()), float(a.max())
    if np.all(a == np.round(a)):
        if lo < 0 or hi > 2:
            raise WMHLocError(f"{path}: lesion map has labels {lo:g}..{hi:g}; expected a mask (0 background, "
                              "1 lesion, 2 other pathology) or a probability map in [0, 1]")
        return io.array_to_image((a == 1).astype(np.uint8), img), None
    if lo < 0 or hi > 1:
        raise WMHLocError(f"{path}: lesion probability map has values {lo:g}..{hi:g}, outside [0, 1]")
    return io.array_to_image((a >= threshold).astype(np.uint8), img), io.array_to_image(a, img)


def atlas_regions(reg, atlas, grid: sitk.Image, lesion: np.ndarray) -> sitk.Image:
    """Region labels 0..36 on `grid`: the atlas labels carried by the registration, kept inside the
    subject's WM as wmhloc_region_labels keeps them; lesion voxels count as WM (lesions are dark on T1,
    so the tissue classes call them GM)."""
    carried = sitk.GetArrayFromImage(sitk.Resample(atlas.labels, grid, reg.transform, sitk.sitkNearestNeighbor,
                                                   0, sitk.sitkInt16))
    wm = sitk.Resample(sitk.Cast(reg.tissue == 3, sitk.sitkUInt8), grid, sitk.Transform(),
                       sitk.sitkNearestNeighbor, 0)
    keep = (sitk.GetArrayFromImage(wm) > 0) | lesion
    return io.array_to_image(np.where(keep, carried, 0).astype(np.int16), grid)


def write_lesion_maps(ctx, subjects: list, threshold: float) -> int:
    """segmentations/lesion/ from the cohort's lesion column (and probabilities/ for probability maps)."""
    from nnunet_wmhloc.io import atomic_dir

    dst = ctx.layout.segmentations("lesion")
    with atomic_dir(dst, overwrite=True) as tmp:
        for s in subjects:
            mask, prob = read_lesion(Path(s.lesion), threshold)
            io.write_image(mask, tmp / f"{s.subject}.nii.gz")
            if prob is not None:
                (tmp / "probabilities").mkdir(exist_ok=True)
                io.write_image(prob, tmp / "probabilities" / f"{s.subject}.nii.gz")
    ctx.say(f"{dst}: lesion maps of {len(subjects)} subjects from the cohort's lesion column (threshold {threshold:g})")
    return len(subjects)


def maps_stage(ctx, subjects: list, a) -> dict:
    """The model-free maps, then the location outputs of every subject with a T1 (when --atlas-dir)."""
    from nnunet_wmhloc.pipeline import location_outputs

    out = {"lesion_maps": write_lesion_maps(ctx, subjects, a.lesion_threshold) if a.lesions == "csv" else 0}
    out.update(location_outputs.locate_cohort(ctx, subjects, a, atlas_regions_too=a.regions == "atlas"))
    return out


def demo_subjects(release: Path) -> dict:
    """subject -> its SimpleNamespace(subject, lesion: the reference mask wmh.nii.gz, images: {"t1": the
    skull-stripped T1, synth.T1_BRAIN}) in the demo's release: what the demo registers to its atlas."""
    from types import SimpleNamespace

    from nnunet_wmhloc.dataset_conversion.wmh2017 import find_subjects
    from nnunet_wmhloc.synth import T1_BRAIN

    return {s.subject: SimpleNamespace(subject=s.subject, lesion=s.lesion,
                                       images={"t1": Path(s.images["t1"]).parent / T1_BRAIN})
            for s in find_subjects(release)}


def demo_run(ctx, layout, release: Path, atlas_dir: Path, pv_distance: float) -> dict:
    """The demo's second run, with no model: wmhloc_predict's maps and localize stages (its functions, as
    `wmhloc_predict cohort.csv --lesions csv --regions atlas --atlas-dir ATLAS` calls them) on the test
    subjects' (those the models predicted) reference lesion masks and skull-stripped T1s, into
    layout.model_free (a run layout of its own); layout.model_free_summary records how long it took."""
    import time
    from types import SimpleNamespace

    from nnunet_wmhloc.io import write_json
    from nnunet_wmhloc.pipeline import common
    from nnunet_wmhloc.pipeline.stages import StageContext, clear_dir

    demo = demo_subjects(release)
    subjects = [demo[n] for n in common.nifti_stems(layout.segmentations("lesion")) if n in demo]
    if not subjects:
        raise WMHLocError(f"{layout.segmentations('lesion')}: no predicted test subject of {release}")
    root = clear_dir(layout.model_free)
    sub = StageContext(ctx.name, ctx.log_path, ctx.env, root, ctx.quiet)
    a = SimpleNamespace(lesions="csv", regions="atlas", atlas_dir=atlas_dir, lesion_threshold=0.5,
                        pv_distance=pv_distance)
    ctx.say(f"model-free: {len(subjects)} reference lesion masks, regions by registration to {atlas_dir}")
    t = time.time()
    out = maps_stage(sub, subjects, a)
    out["localize"] = common.localize_stage(sub, None)
    seconds = round(time.time() - t, 1)
    out["seconds"] = seconds
    write_json({"subjects": [s.subject for s in subjects], "lesions": "reference (wmh.nii.gz)",
                "regions": "atlas registration", "atlas_dir": str(atlas_dir), "seconds": seconds},
               layout.model_free_summary)
    ctx.say(f"model-free run: {len(subjects)} subjects in {seconds:.1f} s -> {root}")
    return out
