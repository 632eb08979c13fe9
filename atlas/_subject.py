"""Brain mask and white matter of a subject's T1 (skull-stripped or not), optionally helped by FLAIR.

Method (on a >= 2 mm block-averaged working grid; masks are brought back to the T1's grid):
1. Head: Otsu threshold of the lightly smoothed T1, largest component, closed, holes filled.
2. Bias: N4 (SimpleITK) on a ~6 mm copy inside the head; the field is applied at full resolution.
3. Brain: inside the head, a 3-class Otsu splits dark (air, skull, CSF) | mid (GM, muscle) | bright
   (WM, fat); voxels above the first cut are eroded by 3 mm so the brain detaches from scalp, eyes and
   neck muscles through the dark skull; the largest component (or a close second nearer the head's
   centre) is regrown inside the bright voxels but at most 8 mm from the eroded core (the scalp lies
   beyond CSF + skull), then closed by 3 mm and hole-filled (ventricles, sulcal CSF).
4. WM: 3-class k-means on log intensities inside the brain (CSF < GM < WM on T1); WM = brightest class,
   specks < 200 mm3 removed. With FLAIR (same grid), FLAIR-bright voxels (median + 3 MAD of the WM)
   inside the closed WM are added: lesions are dark on T1, so k-means calls them GM/CSF.
Limits: assumes T1 contrast (WM brightest tissue of the brain) and a dark skull layer separating brain
from scalp over most of the surface; deep grey matter that is bright on T1 (thalamus, pallidum) may be
called WM (it then gets labels 35/36, reported apart); heavy atrophy or very large lesions shift the
k-means cuts. A skull-stripped input (zero background) goes through the same steps. When the estimate is
wrong, pass --wm-mask."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi


def _ball(img: sitk.Image, radius_mm: float) -> list[int]:
    return [max(1, int(round(radius_mm / s))) if radius_mm / s >= 0.5 else 0 for s in img.GetSpacing()]


def _largest(mask: sitk.Image) -> sitk.Image:
    cc = sitk.ConnectedComponent(mask)
    rel = sitk.RelabelComponent(cc, sortByObjectSize=True)
    return sitk.Cast(rel == 1, sitk.sitkUInt8)


def _fill_holes(mask: sitk.Image) -> sitk.Image:
    """3D hole filling, then slice-wise (axial index planes) for holes open to the FOV's top/bottom."""
    m = sitk.BinaryFillhole(sitk.Cast(mask, sitk.sitkUInt8))
    a = sitk.GetArrayFromImage(m).astype(bool)
    for k in range(a.shape[0]):
        a[k] = ndi.binary_fill_holes(a[k])
    out = sitk.GetImageFromArray(a.astype(np.uint8))
    out.CopyInformation(mask)
    return out


def _otsu(values: np.ndarray) -> float:
    from skimage.filters import threshold_otsu
    return float(threshold_otsu(values))


def head_mask(t1: sitk.Image) -> sitk.Image:
    sm = sitk.SmoothingRecursiveGaussian(sitk.Cast(t1, sitk.sitkFloat32), 1.0)
    a = sitk.GetArrayViewFromImage(sm)
    hi = np.percentile(a, 99.5)
    thr = _otsu(np.clip(a[::2, ::2, ::2].ravel(), a.min(), hi))
    m = sitk.Cast(sm > thr, sitk.sitkUInt8)
    m = sitk.BinaryMorphologicalClosing(m, _ball(t1, 3.0))
    return _fill_holes(_largest(m))


def brain_mask(t1: sitk.Image, head: sitk.Image | None = None) -> sitk.Image:
    """Brain mask (uint8) of a (bias-corrected) T1, skull-stripped or not (see module doc)."""
    t1f = sitk.Cast(t1, sitk.sitkFloat32)
    head = head_mask(t1f) if head is None else head
    sm = sitk.SmoothingRecursiveGaussian(t1f, 0.8)
    a = sitk.GetArrayViewFromImage(sm)
    h = sitk.GetArrayViewFromImage(head) > 0
    vals = a[h]
    hi = np.percentile(vals, 99.0)
    from skimage.filters import threshold_multiotsu
    # 3 classes inside the head: dark (air, bone, CSF) | mid (GM, muscle) | bright (WM, fat): cut the first
    sample = np.clip(vals[:: max(1, vals.size // 400_000)], None, hi)
    thr = float(threshold_multiotsu(sample, classes=3)[0])
    bright = sitk.Cast((sm > thr) * head, sitk.sitkUInt8)
    eroded = sitk.BinaryErode(bright, _ball(t1, 3.0))
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(eroded), sortByObjectSize=True)
    if sitk.GetArrayViewFromImage(cc).max() == 0:
        return sitk.Cast(head, sitk.sitkUInt8)
    # the brain: the largest component, unless a close second is nearer the head's centre
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(cc)
    hs = sitk.LabelShapeStatisticsImageFilter()
    hs.Execute(head)
    hc = np.array(hs.GetCentroid(1))
    labels = stats.GetLabels()
    big = [lab for lab in labels if stats.GetPhysicalSize(lab) >= 0.3 * stats.GetPhysicalSize(labels[0])]
    best = min(big, key=lambda lab: np.linalg.norm(np.array(stats.GetCentroid(lab)) - hc))
    core = sitk.Cast(cc == best, sitk.sitkUInt8)
    # regrow within the bright voxels, but no further than 8 mm from the core: the brain surface is
    # ~3 mm away (the erosion), the scalp beyond CSF + skull (≥ 6 mm more)
    limit = sitk.Cast(sitk.BinaryDilate(core, _ball(t1, 8.0)) * bright, sitk.sitkUInt8)
    grown = sitk.BinaryReconstructionByDilation(core, limit)
    grown = _largest(sitk.Cast(grown, sitk.sitkUInt8))
    closed = sitk.BinaryMorphologicalClosing(grown, _ball(t1, 3.0))
    return sitk.Cast(_fill_holes(closed) * head, sitk.sitkUInt8)


def working_grid(img: sitk.Image, min_mm: float = 2.0) -> sitk.Image:
    """`img` block-averaged (BinShrink: cheap, anti-aliased) to spacing ≈ max(spacing, min_mm) per axis."""
    f = [max(1, int(round(min_mm / s))) for s in img.GetSpacing()]
    return img if max(f) == 1 else sitk.BinShrink(img, f)


def segment(t1: sitk.Image, flair: sitk.Image | None = None) -> tuple[sitk.Image, sitk.Image]:
    """(brain mask, tissue classes 0..3) of a T1 on its own grid; FLAIR (same grid) helps the WM.

    Head, bias field and brain mask are computed on a ≥ 2 mm working grid (morphology with 8 mm balls
    at 1 mm costs seconds), then brought back to the T1's grid; k-means runs at full resolution."""
    t1f = sitk.Maximum(sitk.Cast(t1, sitk.sitkFloat32), 1e-3)
    work = working_grid(t1f)
    head = head_mask(work)
    log_field = n4_field(work, head)
    corr_w = sitk.Cast(work / sitk.Exp(log_field), sitk.sitkFloat32)
    brain_w = brain_mask(corr_w, head)
    brain = sitk.Resample(sitk.Cast(brain_w, sitk.sitkFloat32), t1f, sitk.Transform(), sitk.sitkLinear, 0.0)
    brain = sitk.Cast(brain > 0.5, sitk.sitkUInt8)
    field = sitk.Resample(log_field, t1f, sitk.Transform(), sitk.sitkLinear, 0.0)
    corr = sitk.Cast(t1f / sitk.Exp(field), sitk.sitkFloat32)
    return brain, tissue_classes(corr, brain, flair, correct_bias=False)


def n4_field(img: sitk.Image, mask: sitk.Image, work_mm: float = 6.0) -> sitk.Image:
    """Log bias field (N4 on a ~6 mm copy: a bias field is smooth; 0.2 s instead of 5 s) on img's grid."""
    img = sitk.Maximum(sitk.Cast(img, sitk.sitkFloat32), 1e-3)
    sh = [max(1, int(round(work_mm / s))) for s in img.GetSpacing()]
    small = sitk.Shrink(img, sh)
    small_mask = sitk.Shrink(mask, sh)
    if not sitk.GetArrayViewFromImage(small_mask).any():
        return img * 0.0
    f = sitk.N4BiasFieldCorrectionImageFilter()
    f.SetMaximumNumberOfIterations([20, 20])
    f.Execute(small, small_mask)
    return f.GetLogBiasFieldAsImage(img)


def n4(t1: sitk.Image, mask: sitk.Image) -> sitk.Image:
    """Bias-corrected T1 (float32)."""
    img = sitk.Maximum(sitk.Cast(t1, sitk.sitkFloat32), 1e-3)
    return sitk.Cast(img / sitk.Exp(n4_field(img, mask)), sitk.sitkFloat32)


def _kmeans_1d(x: np.ndarray, k: int = 3, iters: int = 50) -> np.ndarray:
    """Sorted cluster centres of 1-D data (deterministic: starts at quantiles)."""
    c = np.quantile(x, np.linspace(0.15, 0.85, k))
    for _ in range(iters):
        lab = np.argmin(np.abs(x[:, None] - c[None, :]), axis=1)
        new = np.array([x[lab == j].mean() if (lab == j).any() else c[j] for j in range(k)])
        if np.allclose(new, c, rtol=0, atol=1e-6):
            break
        c = new
    return np.sort(c)


def tissue_classes(t1: sitk.Image, brain: sitk.Image, flair: sitk.Image | None = None,
                   correct_bias: bool = True) -> sitk.Image:
    """0 outside brain, 1 CSF, 2 GM, 3 WM (uint8), on the T1's grid."""
    corr = n4(t1, brain) if correct_bias else t1
    a = sitk.GetArrayFromImage(corr)
    m = sitk.GetArrayViewFromImage(brain) > 0
    x = np.log(np.maximum(a[m], 1e-3))
    rng = np.random.default_rng(0)
    sample = x if x.size <= 100_000 else rng.choice(x, 100_000, replace=False)
    c = _kmeans_1d(sample, 3)
    cuts = (c[:-1] + c[1:]) / 2
    cls = np.zeros(a.shape, np.uint8)
    cls[m] = 1 + np.searchsorted(cuts, x).astype(np.uint8)
    wm = cls == 3
    lab, n = ndi.label(wm)
    if n > 1:  # specks (vessels, partial-volume rims) are not WM
        sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
        vox_mm3 = float(np.prod(t1.GetSpacing()))
        keep = np.zeros(n + 1, bool)
        keep[1:] = sizes * vox_mm3 >= max(200.0, 0.002 * sizes.max() * vox_mm3)
        wm = keep[lab]
    if flair is not None:
        wm = wm | _flair_lesions(flair, brain, wm, t1)
    cls[(cls == 3) & ~wm] = 2
    cls[wm] = 3
    out = sitk.GetImageFromArray(cls)
    out.CopyInformation(t1)
    return out


def _flair_lesions(flair: sitk.Image, brain: sitk.Image, wm: np.ndarray, ref: sitk.Image) -> np.ndarray:
    """FLAIR-bright voxels inside the closed WM: lesions that T1 k-means put in GM/CSF."""
    f = sitk.GetArrayFromImage(n4(flair, brain))
    m = sitk.GetArrayViewFromImage(brain) > 0
    if not wm.any():
        return np.zeros_like(wm)
    med = np.median(f[wm])
    mad = np.median(np.abs(f[wm] - med)) * 1.4826 + 1e-6
    bright = (f > med + 3.0 * mad) & m
    wm_img = sitk.GetImageFromArray(wm.astype(np.uint8))
    wm_img.CopyInformation(ref)
    hull = sitk.GetArrayViewFromImage(_fill_holes(sitk.BinaryMorphologicalClosing(wm_img, _ball(ref, 6.0)))) > 0
    return bright & hull
