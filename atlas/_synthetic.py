"""Challenge-like synthetic subjects with known region labels, made from the Eve atlas.

The Eve T1 (skull-stripped) gets a crude head around it (CSF rim, dark skull, bright scalp fat) so that
brain extraction is exercised, then is resampled through a random affine onto a grid like the WMH
challenge's (240×240×48 at 0.96×0.96×3 mm, far from Eve's origin so the two do not overlap), with a
smooth multiplicative bias field and Rician noise. The truth is the atlas labels carried by the same
transform (nearest neighbour). Used by the tests and benchmarks/bench_registration.py."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from nnunet_wmhloc.atlas._atlas import Atlas

CHALLENGE_SIZE = (240, 240, 48)
CHALLENGE_SPACING = (0.958, 0.958, 3.0)


@dataclass
class Synthetic:
    t1: sitk.Image
    labels: sitk.Image          # truth: atlas labels 0..36 in subject space
    wm: sitk.Image              # truth: atlas WM in subject space (uint8)
    transform: sitk.AffineTransform  # subject physical point → atlas physical point


def _head(atlas: Atlas, pad_mm: float = 24.0) -> sitk.Image:
    """Eve T1 scaled to WM ≈ 1 inside a synthetic head (CSF rim, skull, scalp fat), on a padded grid."""
    pad = [int(round(pad_mm / s)) for s in atlas.t1.GetSpacing()]
    t1 = sitk.ConstantPad(atlas.t1, pad, pad, 0.0)
    brain = sitk.ConstantPad(atlas.brain, pad, pad, 0)
    wm = sitk.GetArrayViewFromImage(atlas.tissue) == 3
    ref = float(np.median(sitk.GetArrayViewFromImage(atlas.t1)[wm]))
    a = sitk.GetArrayFromImage(t1) / ref
    d = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(brain, insideIsPositive=False,
                                                            squaredDistance=False, useImageSpacing=True))
    out = a.copy()
    out[(d > 0) & (d <= 2.5)] = 0.25   # CSF
    out[(d > 2.5) & (d <= 8.0)] = 0.06  # skull
    out[(d > 8.0) & (d <= 13.0)] = 1.2  # scalp fat: brighter than WM on T1
    img = sitk.GetImageFromArray(out.astype(np.float32))
    img.CopyInformation(t1)
    return img


def random_affine(rng: np.random.Generator, center_subject, center_atlas, *, max_rot_deg: float = 10.0,
                  max_scale: float = 0.08, max_shift_mm: float = 5.0) -> sitk.AffineTransform:
    ang = np.deg2rad(rng.uniform(-max_rot_deg, max_rot_deg, 3))
    cx, cy, cz = np.cos(ang)
    sx, sy, sz = np.sin(ang)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    m = rz @ ry @ rx @ np.diag(1.0 + rng.uniform(-max_scale, max_scale, 3))
    tr = sitk.AffineTransform(3)
    tr.SetCenter(tuple(float(c) for c in center_subject))
    tr.SetMatrix(tuple(m.ravel()))
    shift = np.asarray(center_atlas) - np.asarray(center_subject) + rng.uniform(-max_shift_mm, max_shift_mm, 3)
    tr.SetTranslation(tuple(float(s) for s in shift))
    return tr


def make_subject(atlas: Atlas, seed: int = 0, *, size=CHALLENGE_SIZE, spacing=CHALLENGE_SPACING,
                 center=(300.0, -250.0, 400.0), head: bool = True, noise: float = 0.03,
                 bias: float = 0.2, max_rot_deg: float = 10.0, max_scale: float = 0.08) -> Synthetic:
    """A synthetic subject; `noise` is the noise SD relative to WM, `bias` the field's half-range."""
    rng = np.random.default_rng(seed)
    direction = (-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0)  # how ITK reads a typical RAS-stored NIfTI
    grid = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    grid.SetSpacing([float(s) for s in spacing])
    grid.SetDirection(direction)
    half = (np.asarray(size) - 1) / 2.0 * np.asarray(spacing)
    d = np.asarray(direction).reshape(3, 3)
    grid.SetOrigin(tuple(np.asarray(center) - d @ half))
    brain = sitk.GetArrayViewFromImage(atlas.brain) > 0
    z, y, x = np.nonzero(brain)
    c_atlas = atlas.t1.TransformContinuousIndexToPhysicalPoint((x.mean(), y.mean(), z.mean()))
    tr = random_affine(rng, center, c_atlas, max_rot_deg=max_rot_deg, max_scale=max_scale)

    src = _head(atlas) if head else sitk.Cast(atlas.t1, sitk.sitkFloat32)
    src = sitk.SmoothingRecursiveGaussian(src, 0.6)  # some slice-profile blur before thick-slice sampling
    img = sitk.GetArrayFromImage(sitk.Resample(src, grid, tr, sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    if bias > 0:  # smooth multiplicative field: random low-order polynomial in normalised coordinates
        zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, n) for n in img.shape], indexing="ij")
        terms = [xx, yy, zz, xx * yy, yy * zz, xx * zz, xx ** 2 - 0.33, yy ** 2 - 0.33]
        f = sum(rng.normal() * t for t in terms)
        f = f / (np.abs(f).max() + 1e-9)
        img = img * (1.0 + bias * f)
    if noise > 0:
        n1, n2 = rng.normal(0, noise, img.shape), rng.normal(0, noise, img.shape)
        img = np.sqrt((img + n1) ** 2 + n2 ** 2)
    t1 = sitk.GetImageFromArray((img * 600.0).astype(np.float32))
    t1.CopyInformation(grid)
    labels = sitk.Resample(atlas.labels, grid, tr, sitk.sitkNearestNeighbor, 0, sitk.sitkInt16)
    wm = sitk.Resample(atlas.wm, grid, tr, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return Synthetic(t1=t1, labels=labels, wm=wm, transform=tr)
