"""Atlas-space priors for lesion location, read from the Eve type-II labels and its FSL tissue classes.

The 36-label map merges brainstem, cerebellum and deep grey matter into 35/36, so the location machinery
reads the type-II labels themselves:
- ventricles: Eve has no ventricle label; its ventricles are the FSL CSF voxels that carry no type-II
  label (label 0) within VENTRICLE_NEAR_MM of the structures lining them (corpus callosum, fornix,
  caudate, thalamus, tapetum, stria terminalis) and enclosed by brain tissue (the cisterns behind the
  third ventricle are unlabelled CSF too, but open to the outside): the lateral ventricles and the third;
- infratentorial: brainstem (midbrain, pons, medulla and their tracts and nuclei) and cerebellum;
- deep grey matter (caudate, putamen, pallidum, thalamus, amygdala, hippocampus): GM that is not cortex.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from nnunet_wmhloc import io
from nnunet_wmhloc.atlas import _atlas
from nnunet_wmhloc.io import WMHLocError

RIGHT_OFFSET = 65  # right type-II label = left label + 65


def _both(*left: int) -> tuple[int, ...]:
    return tuple(left) + tuple(x + RIGHT_OFFSET for x in left)


# type-II labels (left; the right twins are added)
VENTRICLE_WALL = _both(42, 51, 52, 53, 54, 58, 59, 61)  # stria terminalis, fornix, corpus callosum, tapetum,
#                                                           caudate, thalamus
INFRATENTORIAL = _both(28, 29, 30, 31, 32, 33, 49, 50, 56, 57, 63, 64, 65)  # cerebellum; brainstem tracts
#                    (CST, ICP, ML, SCP, cerebral peduncle, pontine crossing, MCP), red nucleus, substantia nigra,
#                    midbrain, pons, medulla
DEEP_GM = _both(26, 27, 59, 60, 61, 62)  # amygdala, hippocampus, caudate, putamen, thalamus, pallidum
VENTRICLE_NEAR_MM = 4.0  # CSF this close to the lining structures
RIM_MM = 2.0  # what the opening took from the ventricles' outline
CSF_CLASS = 1


@dataclass
class AtlasPriors:
    """Masks on the atlas grid (uint8 images, 0/1)."""
    ventricles: sitk.Image
    infratentorial: sitk.Image
    deep_gm: sitk.Image
    source: str


def _type2_path(atlas_dir: Path) -> Path:
    """The type-II label map of an Eve folder, or of the Eve folder a built atlas was made from."""
    if (atlas_dir / _atlas.EVE_TYPE2).is_file():
        return atlas_dir / _atlas.EVE_TYPE2
    manifest = atlas_dir / _atlas.MANIFEST
    if manifest.is_file():
        eve = Path(json.loads(manifest.read_text(encoding="utf-8")).get("eve_dir", ""))
        if (eve / _atlas.EVE_TYPE2).is_file():
            return eve / _atlas.EVE_TYPE2
    raise WMHLocError(f"{atlas_dir}: lesion location needs the Eve type-II labels ({_atlas.EVE_TYPE2}), found "
                      f"neither there nor in the Eve folder its {_atlas.MANIFEST} names")


def ventricle_prior(type2: np.ndarray, tissue: np.ndarray, spacing_zyx) -> np.ndarray:
    """Eve's ventricles (bool, z-y-x): unlabelled CSF next to the structures lining the ventricles."""
    wall = np.isin(type2, VENTRICLE_WALL)
    if not wall.any():
        raise WMHLocError("atlas: no ventricle-lining labels")
    nz = np.argwhere(wall)
    m = [int(np.ceil(VENTRICLE_NEAR_MM / s)) + 1 for s in spacing_zyx]
    box = tuple(slice(max(0, lo - k), hi + k + 1) for lo, hi, k in zip(nz.min(0), nz.max(0), m))
    cand = np.zeros(wall.shape, bool)
    near = ndi.distance_transform_edt(~wall[box], sampling=spacing_zyx) <= VENTRICLE_NEAR_MM
    cand[box] = (tissue[box] == CSF_CLASS) & (type2[box] == 0) & near
    # the cisterns behind the third ventricle are unlabelled CSF too, but open to the brain's outside: keep
    # what an opening by one voxel leaves enclosed, with the rim the opening took
    low = ndi.binary_opening((tissue == 0) | cand, ndi.generate_binary_structure(3, 1))
    lab, n = ndi.label(low, ndi.generate_binary_structure(3, 1))
    outside = np.unique(np.concatenate([lab[i].ravel() for i in (0, -1)] + [lab[:, i].ravel() for i in (0, -1)]
                                       + [lab[:, :, i].ravel() for i in (0, -1)]))
    core = cand & low & ~np.isin(lab, outside)
    lab, n = ndi.label(core, np.ones((3, 3, 3)))
    if n == 0:
        raise WMHLocError("atlas: no enclosed CSF next to the ventricle walls")
    core = lab == 1 + int(np.argmax(np.bincount(lab.ravel())[1:]))
    out = np.zeros(wall.shape, bool)
    out[box] = cand[box] & (ndi.distance_transform_edt(~core[box], sampling=spacing_zyx) <= RIM_MM)
    return out


@lru_cache(maxsize=4)
def _load(atlas_dir: str, t2_path: Path) -> AtlasPriors:
    atlas = _atlas.load_atlas(atlas_dir)
    type2, t2_img = io.read_labels(t2_path, allowed=range(0, 131), what="type-II label map")
    io.check_same_geometry(atlas.tissue, atlas_dir, t2_img, t2_path)
    tissue = sitk.GetArrayViewFromImage(atlas.tissue)
    sp = tuple(reversed(atlas.tissue.GetSpacing()))
    vent = ventricle_prior(type2, tissue, sp)

    def img(a):
        return io.array_to_image(a.astype(np.uint8), atlas.tissue)
    return AtlasPriors(ventricles=img(vent), infratentorial=img(np.isin(type2, INFRATENTORIAL)),
                       deep_gm=img(np.isin(type2, DEEP_GM)), source=str(t2_path))


def atlas_priors(atlas_dir: str | Path) -> AtlasPriors:
    """The location priors of an atlas folder (built atlas or raw Eve folder); cached per folder."""
    atlas_dir = Path(atlas_dir).resolve()
    return _load(str(atlas_dir), _type2_path(atlas_dir))
