"""One subject's region labels: brain and WM of the subject, the atlas registered onto them, the atlas labels
carried into the subject's space and kept inside its WM (`label_subject`). Nothing is written here:
atlas/label_outputs.py writes a result, atlas/cohort_labels.py runs a cohort."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from nnunet_wmhloc import io
from nnunet_wmhloc.atlas import _atlas, _register, _subject
from nnunet_wmhloc.io import WMHLocError

MIN_BRAIN_ML = 300.0  # an adult brain is 1000+ ml; the challenge's 3 mm FOVs hold all of it
MIN_WM_ML = 20.0      # an adult brain has ~400+ ml of WM; the 3 mm challenge FOVs never hold < 100 ml
MIN_WM_DICE = 0.45    # atlas WM vs subject WM after registration: ~0.6-0.8 when right, < 0.3 when lost
MIN_COVERAGE = 0.70   # share of the subject's WM that receives a label: > 0.95 when right
WM_BRAIN_RATIO = (0.25, 0.50)  # adult WM / (WM + GM + CSF inside the brain mask): outside it, check the QC
TOOL = "wmhloc_region_labels"  # marks our JSON record: sidecars beside it without a label map are ours


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
