"""The plain SimpleITK registration recipe: image-moments start, Mattes mutual information, linear
interpolation, a smoothed multi-resolution pyramid. Used for T1 -> FLAIR (wmhloc_convert_cohort) and as the
independent baseline the atlas registration is measured against (benchmarks, tests)."""
from __future__ import annotations

from typing import Callable, Sequence

import SimpleITK as sitk


def moments_mattes(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform, *, bins: int,
                   optimizer: Callable[[sitk.ImageRegistrationMethod], None], shrink: Sequence[int],
                   sigmas: Sequence[float], sampling: tuple[float, int] | None = None) -> sitk.Transform:
    """`transform` (e.g. Euler3DTransform, AffineTransform(3)) fitted from `moving` to `fixed` (both as float32),
    started by matching image moments; `optimizer(r)` sets the optimiser; `sampling` = (fraction, seed) samples
    the metric randomly (None: every voxel); `sigmas` are in mm."""
    f = sitk.Cast(fixed, sitk.sitkFloat32)
    m = sitk.Cast(moving, sitk.sitkFloat32)
    init = sitk.CenteredTransformInitializer(f, m, transform, sitk.CenteredTransformInitializerFilter.MOMENTS)
    r = sitk.ImageRegistrationMethod()
    r.SetMetricAsMattesMutualInformation(bins)
    if sampling is not None:
        r.SetMetricSamplingStrategy(r.RANDOM)
        r.SetMetricSamplingPercentage(*sampling)
    r.SetInterpolator(sitk.sitkLinear)
    optimizer(r)
    r.SetOptimizerScalesFromPhysicalShift()
    r.SetShrinkFactorsPerLevel(list(shrink))
    r.SetSmoothingSigmasPerLevel(list(sigmas))
    r.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()  # SimpleITK's default too; said for the reader
    r.SetInitialTransform(init, inPlace=False)
    return r.Execute(f, m)
