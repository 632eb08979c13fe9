"""The model-free location path for one subject: T1 → tissue classes → atlas registration → location.

`register_subject` does what `atlas.region_labels.label_subject` does up to the transform but keeps the
tissue classes the location context needs; `locate` takes any lesion mask on the output grid."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from nnunet_wmhloc import io
from nnunet_wmhloc.atlas import _atlas, _register, _subject
from nnunet_wmhloc.io import WMHLocError
from nnunet_wmhloc.location import classes, space
from nnunet_wmhloc.location.context import LocationContext, location_context
from nnunet_wmhloc.location.priors import AtlasPriors


@dataclass
class Registered:
    t1: sitk.Image
    brain: sitk.Image
    tissue: sitk.Image          # 0 bg, 1 CSF, 2 GM, 3 WM on the T1 grid
    transform: sitk.Transform   # subject → atlas points
    seconds: float = 0.0


@dataclass
class Located:
    context: LocationContext
    lesions: list[dict]         # one row per lesion (classes.classify_lesions)
    loads: dict                 # the subject's loads (classes.subject_loads)
    location_map: sitk.Image    # 1 periventricular, 2 juxtacortical, 3 deep, 4 infratentorial
    atlas_mask: sitk.Image | None = None   # the lesion mask on the atlas grid
    seconds: dict = field(default_factory=dict)


def register_subject(t1: sitk.Image, atlas: _atlas.Atlas, *, flair: sitk.Image | None = None,
                     skull_stripped: bool | None = None, deformable: bool = False, where: str = "T1") -> Registered:
    """Tissue classes of the T1 and the atlas → subject registration. Raises WMHLocError naming `where`."""
    t0 = time.time()
    try:
        brain, tissue = _subject.segment(t1, flair, skull_stripped=skull_stripped)
        res = _register.register(tissue, atlas.tissue)
    except (RuntimeError, ValueError, IndexError) as e:
        raise WMHLocError(f"{where}: registration failed ({str(e).strip().splitlines()[-1][:120]})") from None
    bad = _register.affine_sanity(res.transform)
    if bad:
        raise WMHLocError(f"{where}: registration diverged: {bad}")
    transform = res.transform
    if deformable:
        transform = _register.refine_bspline(tissue, atlas.tissue, res.transform).transform
    return Registered(t1=t1, brain=brain, tissue=tissue, transform=transform, seconds=time.time() - t0)


def locate(lesion: sitk.Image, reg: Registered, priors: AtlasPriors, *, atlas_grid: sitk.Image | None = None,
           regions: np.ndarray | None = None, pv_distance_mm: float = classes.PV_DISTANCE_MM) -> Located:
    """Location context, lesion classes and loads on the lesion mask's grid (non-zero = lesion); with
    `atlas_grid`, the mask carried onto it; `regions`: labels 0..36 on that grid, for lobar loads."""
    t0 = time.time()
    mask = sitk.GetArrayFromImage(lesion) > 0
    ctx = location_context(reg.tissue, reg.brain, reg.transform, priors, grid=lesion, lesion=mask)
    t1 = time.time()
    lab = classes.components(mask)
    rows = classes.classify_lesions(mask, ctx, labels=lab)
    loads = classes.subject_loads(mask, ctx, rows, regions=regions, pv_distance_mm=pv_distance_mm, labels=lab)
    out = Located(context=ctx, lesions=rows, loads=loads, location_map=classes.location_map(lab[0], rows, lesion))
    t2 = time.time()
    if atlas_grid is not None:
        out.atlas_mask = space.to_atlas(io.array_to_image(mask.astype(np.uint8), lesion), reg.transform, atlas_grid)
    out.seconds = {"context": t1 - t0, "classes": t2 - t1, "atlas_space": time.time() - t2}
    return out
