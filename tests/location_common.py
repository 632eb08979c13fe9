"""Real brains for the location tests: nilearn's ICBM152 2009a (T1 with GM/WM probabilities), references
made independently of the method (ventricles: enclosed low-tissue voxels; brainstem/cerebellum: the Eve
labels warped onto the MNI152 brain by ANTs SyN), lesions planted at known places, other storage grids."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from nnunet_wmhloc.location.priors import DEEP_GM, INFRATENTORIAL
from nnunet_wmhloc.registration import moments_mattes

CONN6 = ndi.generate_binary_structure(3, 1)


def read_nib(img) -> sitk.Image:
    """A nibabel image as a SimpleITK one (through a temporary NIfTI: same geometry as any reader's)."""
    import tempfile

    import nibabel as nib
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.nii.gz"
        nib.save(img, p)
        return sitk.ReadImage(str(p), sitk.sitkFloat32)


def icbm152() -> dict:
    """{'t1', 'gm', 'wm'} (sitk float images on the 1 mm ICBM152 2009a grid), from nilearn's wheel."""
    from nilearn import datasets
    return {"t1": read_nib(datasets.load_mni152_template(resolution=1)),
            "gm": read_nib(datasets.load_mni152_gm_template(resolution=1)),
            "wm": read_nib(datasets.load_mni152_wm_template(resolution=1))}


def enclosed_ventricles(low: np.ndarray) -> np.ndarray:
    """Reference ventricles: the largest component of low-tissue voxels not connected (6-connectivity) to
    the volume's border, i.e. enclosed by brain tissue (the ventricles; sulci and cisterns reach outside)."""
    lab, _ = ndi.label(low, CONN6)
    border = np.unique(np.concatenate([lab[i].ravel() for i in (0, -1)] + [lab[:, i].ravel() for i in (0, -1)]
                                      + [lab[:, :, i].ravel() for i in (0, -1)]))
    enc = low & ~np.isin(lab, border)
    lab, n = ndi.label(enc, CONN6)
    assert n > 0
    return lab == 1 + int(np.argmax(np.bincount(lab.ravel())[1:]))


def syn_labels_on(grid: sitk.Image, shared: Path) -> np.ndarray:
    """The Eve type-II labels that ANTs SyN warped onto the MNI152 brain, on `grid` by world coordinates."""
    img = sitk.ReadImage(str(shared / "external_reference" / "JHU_MNI_SS_WMPM_Type-II_to_MNI_brain.nii.gz"))
    img = sitk.Cast(sitk.Round(img), sitk.sitkInt16)
    return sitk.GetArrayFromImage(sitk.Resample(img, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0))


def ball(shape, centre, radius_mm: float, sp) -> np.ndarray:
    idx = np.indices(shape, sparse=True)
    d2 = sum(((i - c) * s) ** 2 for i, c, s in zip(idx, centre, sp))
    return d2 <= radius_mm ** 2


def plant(ref: dict, rng: np.random.Generator, counts=None, radius_mm: float = 2.5, min_gap_mm: float = 16.0):
    """Lesions at known places on a 1 mm grid. ref: 'ventricles', 'wm' (probability), 'cortex' (bool),
    'infra' (bool, eroded brainstem/cerebellum WM). Returns (label map, {label: planted class})."""
    counts = counts or {"periventricular": 6, "near": 4, "deep": 6, "juxtacortical": 6, "infratentorial": 4}
    sp = (1.0, 1.0, 1.0)
    dv = ndi.distance_transform_edt(~ref["ventricles"])
    dc = ndi.distance_transform_edt(~ref["cortex"])
    wm = ref["wm"]
    where = {"periventricular": (wm > 0.5) & (dv >= 2) & (dv <= 3) & ~ref["infra_zone"],
             "near": (wm > 0.9) & (dv >= 9) & (dv <= 11) & (dc > 8) & ~ref["infra_zone"],
             "deep": (wm > 0.9) & (dv >= 15) & (dv <= 25) & (dc > 8) & ~ref["infra_zone"],
             "juxtacortical": (wm > 0.5) & (dc >= 1.5) & (dc <= 2.5) & (dv > 20) & ~ref["infra_zone"],
             "infratentorial": ref["infra"]}
    labels = np.zeros(wm.shape, np.int16)
    truth, centres = {}, []
    k = 0
    for cls, n in counts.items():
        cand = np.argwhere(where[cls])
        rng.shuffle(cand)
        got = 0
        for c in cand:
            if got == n:
                break
            if any(np.linalg.norm(c - o) < min_gap_mm for o in centres):
                continue
            k += 1
            labels[ball(wm.shape, c, radius_mm if cls != "periventricular" else 3.5, sp) & (labels == 0)] = k
            truth[k] = "deep" if cls == "near" else cls
            centres.append(c)
            got += 1
        assert got == n, f"only {got} places for {cls}"
    return labels, truth


def darken(t1: sitk.Image, labels: np.ndarray, gm_prob: np.ndarray) -> sitk.Image:
    """The T1 with the planted lesions at the GM intensity (WM lesions are T1-hypointense)."""
    a = sitk.GetArrayFromImage(t1)
    a[labels > 0] = float(np.median(a[gm_prob > 0.9]))
    out = sitk.GetImageFromArray(a)
    out.CopyInformation(t1)
    return out


def tilted_axial_grid(img: sitk.Image, spacing=(1.0, 1.0, 3.0), deg: float = 8.0) -> sitk.Image:
    """A FLAIR-like storage grid over `img`'s field of view: 1x1x3 mm axial slices, tilted by `deg` about x."""
    a = np.deg2rad(deg)
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    d = np.array(img.GetDirection()).reshape(3, 3) @ rot
    size = np.array(img.GetSize()) * np.array(img.GetSpacing())
    centre = np.array(img.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in img.GetSize()]))
    n = [int(np.ceil(s * 1.1 / sp)) for s, sp in zip(size, spacing)]
    origin = centre - d @ (np.array(spacing) * (np.array(n) - 1) / 2)
    g = sitk.Image(n, sitk.sitkFloat32)
    g.SetSpacing(spacing)
    g.SetDirection(tuple(d.ravel()))
    g.SetOrigin(tuple(origin))
    return g


def resample(img: sitk.Image, grid: sitk.Image, linear: bool = True) -> sitk.Image:
    return sitk.Resample(img, grid, sitk.Transform(), sitk.sitkLinear if linear else sitk.sitkNearestNeighbor, 0.0)


def as_image(a: np.ndarray, like: sitk.Image) -> sitk.Image:
    out = sitk.GetImageFromArray(a)
    out.CopyInformation(like)
    return out


def icbm_reference(icbm: dict, shared: Path) -> dict:
    """Independent references on the 1 mm ICBM grid: ventricles (GM+WM < 0.5, enclosed), cortex (GM > 0.5
    outside SyN deep GM and infratentorial labels, dilated), infratentorial zone and its eroded WM core."""
    gm, wm = (sitk.GetArrayFromImage(icbm[k]) for k in ("gm", "wm"))
    vent = enclosed_ventricles(gm + wm < 0.5)
    syn = syn_labels_on(icbm["t1"], shared)
    infra_zone = ndi.binary_dilation(np.isin(syn, INFRATENTORIAL), iterations=6)
    deep = ndi.binary_dilation(np.isin(syn, DEEP_GM), iterations=5)
    cortex = (gm > 0.5) & ~deep & ~infra_zone
    core = ndi.binary_erosion(np.isin(syn, INFRATENTORIAL), iterations=4) & (wm + gm > 0.9)
    return {"ventricles": vent, "wm": wm, "gm": gm, "cortex": cortex, "infra_zone": infra_zone, "infra": core}


def intensity_affine(subject_t1: sitk.Image, atlas_t1: sitk.Image) -> sitk.Transform:
    """An independent registration (subject → atlas points): affine on the raw T1 intensities, moments
    start, Mattes MI, 4 then 2 mm: no tissue classes, no WM map, unlike the method under test."""
    return moments_mattes(subject_t1, atlas_t1, sitk.AffineTransform(3), bins=48, sampling=(0.05, 7),
                          shrink=[4, 2], sigmas=[2.0, 1.0],
                          optimizer=lambda r: r.SetOptimizerAsRegularStepGradientDescent(
                              1.0, 1e-4, 200, relaxationFactor=0.7))



def stored_on(t1: sitk.Image, labels: np.ndarray, ref_vent: np.ndarray, grid: str) -> dict:
    """The planted subject stored on `grid` ("1mm" or "axial3", the tilted 1x1x3 mm axial grid): its T1,
    planted labels and reference ventricles there."""
    if grid == "1mm":
        return {"t1": t1, "planted": labels, "ref_vent": ref_vent}
    g = tilted_axial_grid(t1)
    planted = as_image(labels, t1)
    mask = sitk.GetArrayFromImage(resample(sitk.Cast(planted > 0, sitk.sitkFloat32), g)) > 0.5
    return {"t1": resample(t1, g), "planted": sitk.GetArrayFromImage(resample(planted, g, linear=False)) * mask,
            "ref_vent": sitk.GetArrayFromImage(resample(as_image(ref_vent.astype(np.float32), t1), g)) > 0.5}


def pv_deep_reference(s: dict, truth: dict, pv_mm: float = 10.0) -> tuple[float, float]:
    """Exact periventricular / deep mm³ of the planted supratentorial lesions by the distance rule, from the
    reference ventricles of a `stored_on` subject."""
    sp = tuple(reversed(s["t1"].GetSpacing()))
    dist = ndi.distance_transform_edt(~s["ref_vent"], sampling=sp)
    it = [k for k, c in truth.items() if c == "infratentorial"]
    supra = (s["planted"] > 0) & ~np.isin(s["planted"], it)
    v = float(np.prod(s["t1"].GetSpacing()))
    return float((supra & (dist <= pv_mm)).sum()) * v, float((supra & (dist > pv_mm)).sum()) * v
