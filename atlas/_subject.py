"""Brain mask and white matter of a subject's T1 (skull-stripped or not), optionally helped by FLAIR.

Method (on a >= 2 mm block-averaged working grid; masks are brought back to the T1's grid):
1. Skull-stripped or raw head: a stripped T1 puts the brain on a constant background (a share of the
   voxels hold exactly the minimum, the volume's border is that value, and what is left is brain-sized).
   Then the brain is that foreground (largest component, holes filled) and steps 2-3 are skipped.
2. Head: Otsu threshold of the lightly smoothed T1, largest component, closed, holes filled.
3. Brain (raw head): inside the head, a 3-class Otsu splits dark (air, skull, CSF) | mid (GM, muscle) |
   bright (WM, fat); voxels above the first cut are eroded by 3 mm so the brain detaches from scalp, eyes
   and neck muscles through the dark skull; the largest component (or a close second nearer the head's
   centre) is regrown inside the bright voxels but at most 8 mm from the eroded core (the scalp lies
   beyond CSF + skull), then closed by 3 mm and hole-filled (ventricles, sulcal CSF).
4. Bias: N4 (SimpleITK) on a ~6 mm copy inside the head (or stripped brain), applied at full resolution.
5. Tissues: a 3-class Gaussian mixture (CSF < GM < WM on T1) with one shared variance, fitted to the
   N4-corrected intensities inside the brain, then two rounds of MRF-like regularisation (each class's
   posterior is reweighted by its Gaussian-smoothed neighbourhood). Why a tied-variance GMM and not
   k-means or a free-variance GMM: once the brain mask holds little CSF, 3-means splits GM in two and
   calls the brighter half WM (ICBM152: 1350 ml of "WM" against 632 ml, Dice 0.64); a free-variance GMM
   gives the narrow WM peak a cut close to its mean and loses a third of the WM (Eve: Dice 0.81); a shared
   variance puts the GM/WM cut between the two means, weighted by the class shares, which is where the
   partial-volume voxels of a real T1 divide. WM = brightest class, specks < 200 mm3 removed. Deep grey
   matter (thalamus, pallidum), darker than WM on T1, then mostly stays GM. With FLAIR (same grid),
   FLAIR-bright voxels (median + 3 MAD of the WM) inside the closed WM are added: lesions are dark on
   T1, so the mixture calls them GM/CSF.
Limits: assumes T1 contrast (WM brightest tissue of the brain) and, on raw heads, a dark skull layer
separating brain from scalp over most of the surface; heavy atrophy or very large lesions shift the
mixture. A raw head whose air was zeroed and that fits in 2.5 l is taken for stripped: pass
--skull-stripped no. When the estimate is wrong, pass --wm-mask."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from nnunet_wmhloc.io import array_to_image


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


STRIPPED_MAX_ML = 2500.0  # a stripped brain (with its CSF) is 1.1-2.0 l, even in MNI space; a head is larger


def stripped_foreground(t1: sitk.Image) -> np.ndarray | None:
    """The brain of a skull-stripped T1 (bool array, z-y-x), or None when the T1 does not look stripped:
    >= 20% of its voxels hold exactly the minimum, >= 90% of the volume's border does, and the largest
    connected rest (holes filled) is brain-sized (< STRIPPED_MAX_ML)."""
    a = sitk.GetArrayViewFromImage(t1)
    bg = a == a.min()
    if bg.mean() < 0.2:
        return None
    faces = [bg[0], bg[-1], bg[:, 0], bg[:, -1], bg[:, :, 0], bg[:, :, -1]]
    if sum(f.sum() for f in faces) < 0.9 * sum(f.size for f in faces):
        return None
    fg = foreground_mask(t1)
    return fg if fg.sum() * float(np.prod(t1.GetSpacing())) / 1000.0 < STRIPPED_MAX_ML else None


def foreground_mask(t1: sitk.Image) -> np.ndarray:
    """Largest connected component of the non-background voxels, holes filled (bool, z-y-x)."""
    a = sitk.GetArrayViewFromImage(t1)
    lab, n = ndi.label(a != a.min())
    if n == 0:
        return np.zeros(a.shape, bool)
    big = np.argmax(np.bincount(lab.ravel())[1:]) + 1
    return sitk.GetArrayFromImage(_fill_holes(array_to_image((lab == big).astype(np.uint8), t1))) > 0


def segment(t1: sitk.Image, flair: sitk.Image | None = None, skull_stripped: bool | None = None,
            info: dict | None = None) -> tuple[sitk.Image, sitk.Image]:
    """(brain mask, tissue classes 0..3) of a T1 on its own grid; FLAIR (same grid) helps the WM.

    skull_stripped: None detects it (see stripped_foreground). Head, bias field and brain mask are
    computed on a >= 2 mm working grid (morphology with 8 mm balls at 1 mm costs seconds), then brought
    back to the T1's grid; the tissue mixture runs at full resolution. `info` gets "skull_stripped"."""
    t1f = sitk.Cast(t1, sitk.sitkFloat32)
    fg = None
    if skull_stripped is None:
        fg = stripped_foreground(t1f)
    elif skull_stripped:
        fg = foreground_mask(t1f)
    if info is not None:
        info["skull_stripped"] = fg is not None
    t1f = sitk.Maximum(t1f, 1e-3)
    work = working_grid(t1f)
    if fg is not None:
        brain = array_to_image(fg.astype(np.uint8), t1f)
        head = sitk.Cast(working_grid(sitk.Cast(brain, sitk.sitkFloat32)) > 0.5, sitk.sitkUInt8)
        log_field = n4_field(work, head)
    else:
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
    f.SetNumberOfThreads(1)  # its B-spline fit sums per thread: more threads, different bits
    f.SetMaximumNumberOfIterations([20, 20])
    f.Execute(small, small_mask)
    return f.GetLogBiasFieldAsImage(img)


def n4(t1: sitk.Image, mask: sitk.Image) -> sitk.Image:
    """Bias-corrected T1 (float32)."""
    img = sitk.Maximum(sitk.Cast(t1, sitk.sitkFloat32), 1e-3)
    return sitk.Cast(img / sitk.Exp(n4_field(img, mask)), sitk.sitkFloat32)


def _posteriors(x: np.ndarray, mu: np.ndarray, var: np.ndarray, pi: np.ndarray) -> np.ndarray:
    """(k, n) class posteriors of 1-D data under a Gaussian mixture (means, variances, weights)."""
    var = np.broadcast_to(np.asarray(var, np.float64), mu.shape)
    ll = (np.log(pi) - 0.5 * np.log(var))[:, None] - (np.asarray(x, np.float64)[None, :] - mu[:, None]) ** 2 \
        / (2 * var[:, None])
    ll -= ll.max(0, keepdims=True)
    r = np.exp(ll)
    return (r / r.sum(0, keepdims=True)).astype(np.float32)


def _mixture(x: np.ndarray, k: int = 3, tie=None, bins: int = 1024, iters: int = 500
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(means, variances, weights; sorted by mean) of a k-class 1-D Gaussian mixture whose classes in
    each group of `tie` (default: all) share one variance, fitted by EM on the histogram of the data
    (bins of 0.1% of its range: exact enough, fast and deterministic; scikit-learn's GaussianMixture
    costs seconds to import and fit and cannot tie some classes only). Started as scikit-learn starts
    from given means: hard assignment to the nearest of k quantiles."""
    tie = [tuple(range(k))] if tie is None else tie
    counts, edges = np.histogram(x, bins=bins)
    v = (edges[:-1] + edges[1:]) / 2
    w = counts / counts.sum()
    mu = np.quantile(x[:: max(1, x.size // 200_000)], np.linspace(0.1, 0.9, k))
    r = np.zeros((k, v.size))
    r[np.argmin(np.abs(v[None, :] - mu[:, None]), axis=0), np.arange(v.size)] = 1.0
    tol = 1e-6 * float(np.ptp(v))
    var = np.ones(k)
    for _ in range(iters):
        rw = r * w[None, :]
        nk = rw.sum(1) + 1e-12
        new_mu = (rw @ v) / nk
        ss = np.sum(rw * (v[None, :] - new_mu[:, None]) ** 2, axis=1)
        for g in tie:
            var[list(g)] = max(ss[list(g)].sum() / nk[list(g)].sum(), tol ** 2)
        pi = nk / nk.sum()
        done = np.abs(new_mu - mu).max() < tol
        mu = new_mu
        r = _posteriors(v, mu, var, pi).astype(np.float64)
        if done:
            break
    order = np.argsort(mu)
    return mu[order], var[order], pi[order]


def tissue_classes(t1: sitk.Image, brain: sitk.Image, flair: sitk.Image | None = None,
                   correct_bias: bool = True, mrf_rounds: int = 2) -> sitk.Image:
    """0 outside brain, 1 CSF, 2 GM, 3 WM (uint8), on the T1's grid (see the module doc)."""
    corr = n4(t1, brain) if correct_bias else t1
    full = sitk.GetArrayFromImage(corr)
    mfull = sitk.GetArrayViewFromImage(brain) > 0
    # work inside the brain's bounding box (+ a margin for the smoothing): a third of a 1 mm volume
    nz = np.argwhere(mfull)
    if nz.size == 0:
        raise ValueError("empty brain mask")
    box = tuple(slice(max(0, lo - 4), hi + 5) for lo, hi in zip(nz.min(0), nz.max(0)))
    a, m = full[box], mfull[box]
    x = a[m]
    # fitted without the background value (zeros that a skull-stripping tool left inside the brain) and
    # without the extreme 0.5% (vessels, residual scalp) that would widen the shared variance
    # the fit also leaves out the brain's outer 2 mm, whose voxels mix brain with what lies outside
    # (a stripped T1's zero background): at 2 mm they make a CSF tail that widens the shared variance
    # until GM and WM merge into one class
    inner = ndi.binary_erosion(m, iterations=1, structure=ndi.generate_binary_structure(3, 1))
    if any(s < 2.0 for s in t1.GetSpacing()):
        inner = ndi.binary_erosion(inner, iterations=1, structure=ndi.generate_binary_structure(3, 1))
    fit = a[inner] if inner.sum() > 0.3 * m.sum() else x
    fit = fit[fit > 0.01 * np.median(fit)]
    lo, hi = np.percentile(fit, [0.5, 99.5])
    # one variance for all three: tying only GM and WM fitted ICBM152 better (Dice 0.97) but lost a
    # third of the WM of Eve with a skull, whose brain mask holds more non-brain
    mu, var, pi = _mixture(np.clip(fit, lo, hi), 3)
    post = _posteriors(np.clip(x, lo, hi), mu, var, pi)
    p = np.zeros((3,) + a.shape, np.float32)
    p[:, m] = post
    sigma = [1.0 / s for s in reversed(t1.GetSpacing())]  # 1 mm neighbourhood, z-y-x
    for _ in range(mrf_rounds):  # MRF-like: a voxel leans to the classes of its neighbours
        q = p * np.stack([ndi.gaussian_filter(pi, sigma) for pi in p])
        q /= q.sum(0, keepdims=True) + 1e-12
        p = np.where(m, q, 0.0).astype(np.float32)
    cls = np.zeros(full.shape, np.uint8)
    cls[box][m] = 1 + np.argmax(p[:, m], axis=0).astype(np.uint8)
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
