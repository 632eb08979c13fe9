"""Per-subject location context: ventricles, cortex and the infratentorial compartment on the output grid.

From the atlas registration (the priors of `priors.py`, carried with the subject → atlas transform) and the
subject's own tissue classes (`atlas._subject.segment`: 1 CSF, 2 GM, 3 WM):
- ventricles: the subject's CSF grown from the carried ventricle prior, no further than GROW_MM from it
  (elderly ventricles are larger than Eve's; beyond a few mm the growth would leak into sulcal CSF),
  keeping the components that meet the prior. When the subject's CSF covers less than MIN_CSF_SHARE of the
  prior (no usable CSF class), the carried prior itself is the mask.
- cortex: the subject's GM outside the carried deep grey matter (dilated by DEEP_GM_MARGIN_MM), farther
  than CORTEX_INFRA_MM from the infratentorial compartment (cerebellar cortex the carried labels miss by a
  few mm is not juxtacortical territory), farther than CORTEX_VENTRICLE_MM from the ventricles (the partial-volume
  rim of the ventricle wall looks like GM on T1) and in components of at least CORTEX_MIN_MM3 (the cortical
  ribbon is one large component; specks and lesion rims are not cortex).
- infratentorial: the carried brainstem and cerebellum labels inside the brain.
Lesion voxels count as WM here: lesions are dark on T1, so the tissue mixture calls them GM or CSF."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from nnunet_wmhloc import io
from nnunet_wmhloc.location.priors import AtlasPriors

GROW_MM = 6.0
MIN_CSF_SHARE = 0.25
DEEP_GM_MARGIN_MM = 3.0
CORTEX_VENTRICLE_MM = 4.0
CORTEX_INFRA_MM = 3.0
CORTEX_MIN_MM3 = 1000.0
CONTEXT_CODES = {"ventricles": 1, "cortex": 2, "infratentorial": 3}


def spacing_zyx(img: sitk.Image) -> tuple[float, float, float]:
    return tuple(float(s) for s in reversed(img.GetSpacing()))


@dataclass
class LocationContext:
    """Masks (bool, z-y-x) on `grid`, the output grid (the lesion map's)."""
    grid: sitk.Image
    ventricles: np.ndarray
    cortex: np.ndarray
    infratentorial: np.ndarray
    brain: np.ndarray
    transform: sitk.Transform | None = None
    _dist: np.ndarray | None = field(default=None, repr=False)

    @property
    def voxel_mm3(self) -> float:
        return io.voxel_volume_mm3(self.grid)

    @property
    def icv_mm3(self) -> float:
        """Intracranial volume: the brain mask with its CSF (ventricles and sulci, holes filled)."""
        return float(self.brain.sum()) * self.voxel_mm3

    def ventricle_distance(self) -> np.ndarray:
        """Distance in mm (voxel centres, the grid's spacing per axis) to the nearest ventricle voxel."""
        if self._dist is None:
            if not self.ventricles.any():
                self._dist = np.full(self.ventricles.shape, np.inf, np.float32)
            else:
                self._dist = _ball_dist(self.ventricles, spacing_zyx(self.grid))
        return self._dist

    def label_map(self) -> sitk.Image:
        """The context as one map: 1 ventricles, 2 cortex, 3 infratentorial (uint8)."""
        out = np.zeros(self.ventricles.shape, np.uint8)
        out[self.infratentorial] = CONTEXT_CODES["infratentorial"]
        out[self.cortex] = CONTEXT_CODES["cortex"]
        out[self.ventricles] = CONTEXT_CODES["ventricles"]
        return io.array_to_image(out, self.grid)

    def ventricles_image(self) -> sitk.Image:
        return io.array_to_image(self.ventricles.astype(np.uint8), self.grid)


def carry(atlas_img: sitk.Image, grid: sitk.Image, transform: sitk.Transform, *, soft: bool = True) -> np.ndarray:
    """An atlas-grid mask on `grid` (bool): linear interpolation > 0.5 (soft) or nearest neighbour."""
    if soft:
        r = sitk.Resample(sitk.Cast(atlas_img, sitk.sitkFloat32), grid, transform, sitk.sitkLinear, 0.0)
        return sitk.GetArrayFromImage(r) > 0.5
    r = sitk.Resample(atlas_img, grid, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(r) > 0


def on_grid(img: sitk.Image, grid: sitk.Image) -> np.ndarray:
    """A subject image (T1 grid) on the output grid, by world coordinates (nearest neighbour)."""
    if img.GetSize() == grid.GetSize() and np.allclose(img.GetOrigin(), grid.GetOrigin(), atol=1e-3) \
            and np.allclose(img.GetSpacing(), grid.GetSpacing(), atol=1e-4) \
            and np.allclose(img.GetDirection(), grid.GetDirection(), atol=1e-4):
        return sitk.GetArrayFromImage(img)
    return sitk.GetArrayFromImage(sitk.Resample(img, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0))


def _ball_dist(mask: np.ndarray, sp) -> np.ndarray:
    """Distance in mm to the nearest voxel of `mask` (inf when empty): ITK's Maurer distance map, several
    times faster than scipy's EDT on a brain-sized box."""
    if not mask.any():
        return np.full(mask.shape, np.inf, np.float32)
    img = sitk.GetImageFromArray(mask.astype(np.uint8))
    img.SetSpacing(tuple(reversed(sp)))
    d = sitk.SignedMaurerDistanceMap(img, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    return np.maximum(sitk.GetArrayFromImage(d), 0.0).astype(np.float32)


def _within(mask: np.ndarray, sp, mm: float) -> np.ndarray:
    """Voxels at most `mm` from `mask`, computed in the mask's bounding box plus `mm` only."""
    out = np.zeros(mask.shape, bool)
    if mask.any():
        box = _box(mask, sp, mm)
        out[box] = _ball_dist(mask[box], sp) <= mm
    return out


def ventricle_mask(tissue: np.ndarray, prior: np.ndarray, sp, *, lesion: np.ndarray | None = None,
                   grow_mm: float = GROW_MM) -> np.ndarray:
    """Subject ventricles (bool): its CSF class grown from the carried prior (see the module doc)."""
    csf = tissue == 1
    if lesion is not None:
        csf &= ~lesion
    if not prior.any():
        return np.zeros_like(prior)
    if (csf & prior).sum() < MIN_CSF_SHARE * prior.sum():
        return prior & ~lesion if lesion is not None else prior.copy()
    cand = csf & _within(prior, sp, grow_mm)
    lab, n = ndi.label(cand, np.ones((3, 3, 3)))
    hit = np.unique(lab[prior & cand])
    return np.isin(lab, hit[hit > 0])


def _box(mask: np.ndarray, sp, margin_mm: float) -> tuple[slice, ...]:
    nz = np.argwhere(mask)
    if nz.size == 0:
        return tuple(slice(0, n) for n in mask.shape)
    m = [int(np.ceil(margin_mm / s)) + 1 for s in sp]
    return tuple(slice(max(0, lo - k), hi + k + 1) for lo, hi, k in zip(nz.min(0), nz.max(0), m))


def location_context(tissue: sitk.Image, brain: sitk.Image, transform: sitk.Transform, priors: AtlasPriors, *,
                     grid: sitk.Image | None = None, lesion: np.ndarray | None = None,
                     grow_mm: float = GROW_MM) -> LocationContext:
    """The subject's location context on `grid` (default: the tissue map's grid).

    tissue, brain: `_subject.segment`'s outputs (T1 grid); transform: subject → atlas points (the
    registration's); lesion: the lesion mask on `grid` (bool z-y-x), counted as WM. The work is done
    inside the bounding box of the brain and the lesions (distances beyond it are not needed)."""
    grid = tissue if grid is None else grid
    sp = spacing_zyx(grid)
    b_full = on_grid(brain, grid) > 0
    if lesion is not None:
        lesion = np.asarray(lesion, bool)
    box = _box(b_full if lesion is None else b_full | lesion, sp, max(grow_mm, DEEP_GM_MARGIN_MM, 2.0))
    t = on_grid(tissue, grid)[box].astype(np.uint8)
    b = b_full[box]
    les = None if lesion is None else lesion[box]
    if les is not None:
        t = np.where(les & b, np.uint8(3), t)
    crop = _crop_grid(grid, box)
    infra = carry(priors.infratentorial, crop, transform, soft=False) & b
    vent = ventricle_mask(t, carry(priors.ventricles, crop, transform), sp, lesion=les, grow_mm=grow_mm) & b
    deep = carry(priors.deep_gm, crop, transform, soft=False)
    gm = (t == 2) & b & ~infra & ~vent
    gm &= ~_within(deep, sp, DEEP_GM_MARGIN_MM)
    gm &= ~_within(infra, sp, CORTEX_INFRA_MM)
    vdist = _ball_dist(vent, sp)
    gm &= vdist > CORTEX_VENTRICLE_MM
    lab, n = ndi.label(gm, np.ones((3, 3, 3)))
    if n:
        sizes = np.bincount(lab.ravel()) * io.voxel_volume_mm3(grid)
        keep = sizes >= CORTEX_MIN_MM3
        keep[0] = False
        gm = keep[lab]

    def full(a, fill=False):
        out = np.full(b_full.shape, fill, a.dtype)
        out[box] = a
        return out
    return LocationContext(grid=grid, ventricles=full(vent), cortex=full(gm), infratentorial=full(infra), brain=b_full,
                           transform=transform, _dist=full(vdist, np.inf))


def _crop_grid(grid: sitk.Image, box: tuple[slice, ...]) -> sitk.Image:
    """A reference image covering the z-y-x index box of `grid` (for resampling onto the crop only)."""
    start = [int(box[2].start), int(box[1].start), int(box[0].start)]
    size = [box[2].stop - box[2].start, box[1].stop - box[1].start, box[0].stop - box[0].start]
    size = [int(min(sz, n - st)) for sz, n, st in zip(size, grid.GetSize(), start)]
    ref = sitk.Image(size, sitk.sitkUInt8)
    ref.SetSpacing(grid.GetSpacing())
    ref.SetDirection(grid.GetDirection())
    ref.SetOrigin(grid.TransformIndexToPhysicalPoint(start))
    return ref
