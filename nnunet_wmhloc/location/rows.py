"""One subject's location outputs as files and table rows, shared by wmhloc_predict / wmhloc_run (their
location stage, pipeline/location_outputs.py) and wmhloc_localize (--t1 with --atlas-dir): the atlas
registration of its T1, the location images in a folder, its regional_loads location cells and the
location cells of its lesions.csv rows."""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk

from nnunet_wmhloc import io
from nnunet_wmhloc.io import WMHLocError
from nnunet_wmhloc.postprocessing.loads import LOCATION_COLUMNS

IMAGES = ("ventricles", "lesion_location", "space-atlas_lesion_mask")


PV_DISTANCE_MM = 10.0  # BIANCA's DM10


def add_pv_distance_option(group) -> None:
    """--pv-distance, as wmhloc_predict, wmhloc_run and wmhloc_localize take it."""
    group.add_argument("--pv-distance", type=float, default=PV_DISTANCE_MM,
                       help="distance rule: supratentorial lesion voxels within this many mm of the lateral "
                            "ventricles are periventricular (default 10, BIANCA's DM10; 3 and 13 are also used)")


def check_pv_distance(mm: float) -> None:
    if not (math.isfinite(mm) and mm > 0):
        raise WMHLocError(f"--pv-distance {mm:g}: must be > 0 mm")


@lru_cache(maxsize=2)
def load_atlas(atlas_dir: Path):
    """(atlas, location priors) of `atlas_dir` (cached: a command's check and its stage share them);
    WMHLocError naming it when it is not an atlas folder."""
    from nnunet_wmhloc.atlas import _atlas
    from nnunet_wmhloc.location import atlas_priors

    if not Path(atlas_dir).is_dir():
        raise WMHLocError(f"{atlas_dir}: --atlas-dir not found")
    try:
        return _atlas.load_atlas(atlas_dir), atlas_priors(atlas_dir)
    except (OSError, RuntimeError, ValueError) as e:
        raise WMHLocError(f"{atlas_dir}: not an atlas folder ({str(e).strip().splitlines()[-1][:120]})") from None


def locate_files(subject: str, lesion: sitk.Image, mask: np.ndarray, t1: Path, atlas, priors, *,
                 regions: Callable, pv_distance: float, out: Path) -> tuple[dict, list[dict], sitk.Image]:
    """Register `t1`, classify the lesions of `mask` (on `lesion`'s grid) over `regions(reg)` (the region
    labels on that grid), write <subject>_{IMAGES}.nii.gz into `out`; returns (location cells of its
    regional_loads row, location cells of its lesions.csv rows keyed by lesion_id, its atlas-space mask).
    WMHLocError when the registration fails."""
    from nnunet_wmhloc.location import locate, register_subject

    binary = io.array_to_image(mask.astype(np.uint8), lesion)
    reg = register_subject(io.read_image(t1, what="T1"), atlas, where=str(t1))
    loc = locate(binary, reg, priors, atlas_grid=atlas.t1, regions=regions(reg), pv_distance_mm=pv_distance)
    for name, img in zip(IMAGES, (loc.context.ventricles_image(), loc.location_map, loc.atlas_mask)):
        io.write_image(img, out / f"{subject}_{name}.nii.gz")
    row = {"subject": subject, "location_note": ""} | {k: loc.loads[k] for k in LOCATION_COLUMNS if k in loc.loads}
    lesions = [{"subject": subject, "lesion_id": str(r["lesion"]), "location": r["location"],
                "ventricle_distance_mm": r["ventricle_distance_mm"], "atlas_lps_x_mm": r["atlas_x"],
                "atlas_lps_y_mm": r["atlas_y"], "atlas_lps_z_mm": r["atlas_z"]} for r in loc.lesions]
    return row, lesions, loc.atlas_mask
