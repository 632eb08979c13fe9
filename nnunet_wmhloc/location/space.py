"""Atlas space: a subject's lesion mask on the atlas grid, and the cohort's lesion-frequency map.

The registration's transform maps subject points to atlas points (ITK's fixed = subject). Resampling a
subject image onto the atlas grid needs the other direction: the affine's exact inverse, or, for the
affine + B-spline composite of --deformable, the affine's inverse followed by the B-spline's inverted
displacement field (ITK's fixed-point inversion on a 2 mm copy of the subject grid)."""
from __future__ import annotations

from typing import Iterable

import numpy as np
import SimpleITK as sitk

from nnunet_wmhloc import io

FIELD_MM = 2.0


def inverse(transform: sitk.Transform, subject_grid: sitk.Image) -> sitk.Transform:
    """Atlas → subject transform for an affine, or for the (affine, B-spline) composite of the registration."""
    if transform.GetName() == "CompositeTransform":
        comp = sitk.CompositeTransform(transform)
        parts = [comp.GetNthTransform(i) for i in range(comp.GetNumberOfTransforms())]
        out = None
        for t in parts:  # applied last-added first: invert in the opposite order
            inv = inverse(t, subject_grid)
            if out is None:
                out = sitk.CompositeTransform(inv)
            else:
                out.AddTransform(inv)
        return out
    try:
        return transform.GetInverse()
    except RuntimeError:  # no closed-form inverse (B-spline): invert its displacement field
        g = sitk.Image(subject_grid)
        f = [max(1, int(round(FIELD_MM / s))) for s in g.GetSpacing()]
        ref = sitk.BinShrink(sitk.Cast(g, sitk.sitkFloat32), f) if max(f) > 1 else g
        field = sitk.TransformToDisplacementField(transform, sitk.sitkVectorFloat64, ref.GetSize(),
                                                  ref.GetOrigin(), ref.GetSpacing(), ref.GetDirection())
        inv = sitk.InvertDisplacementField(field, maximumNumberOfIterations=20, maxErrorToleranceThreshold=0.01,
                                           meanErrorToleranceThreshold=0.0001, enforceBoundaryCondition=True)
        return sitk.DisplacementFieldTransform(inv)


def to_atlas(mask: sitk.Image, transform: sitk.Transform, atlas_grid: sitk.Image) -> sitk.Image:
    """A subject mask (non-zero = lesion) on the atlas grid (uint8 0/1): linearly interpolated, > 0.5,
    which keeps the volume on coarse slices (a 3 mm FLAIR grid) better than nearest neighbour."""
    m = sitk.Cast(mask > 0, sitk.sitkFloat32)
    r = sitk.Resample(m, atlas_grid, inverse(transform, mask), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.Cast(r > 0.5, sitk.sitkUInt8)


def atlas_point(transform: sitk.Transform, point) -> tuple[float, float, float]:
    """A subject point (mm) in atlas space (mm)."""
    return tuple(transform.TransformPoint(tuple(float(c) for c in point)))


def frequency_map(masks: Iterable[sitk.Image]) -> sitk.Image:
    """Share of subjects with a lesion at each atlas voxel (float32 in 0..1); all masks on one atlas grid."""
    total, n, ref = None, 0, None
    for m in masks:
        a = sitk.GetArrayViewFromImage(m) > 0
        if total is None:
            total, ref = np.zeros(a.shape, np.float32), m
        elif a.shape != total.shape:
            raise ValueError("lesion masks are not on one atlas grid")
        total += a
        n += 1
    if n == 0:
        raise ValueError("no lesion masks")
    return io.array_to_image(total / n, ref)


def frequency_maps(masks: dict[str, sitk.Image], groups: dict[str, str] | None = None) -> dict[str, sitk.Image]:
    """{'all': the cohort's map} plus one map per group (e.g. cluster) of subject ids in `groups`."""
    out = {"all": frequency_map(masks.values())}
    for g in sorted(set((groups or {}).values())):
        out[g] = frequency_map(m for s, m in masks.items() if groups.get(s) == g)
    return out
