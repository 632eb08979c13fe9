"""The one regional-loads table: what wmhloc_localize writes, wmhloc_cluster reads and wmhloc_predict hands
to the user (results/regional_loads.csv), and the one checked reader of it.

Columns (LOAD_COLUMNS): subject, n_lesions, total_voxels, total_mm3; for each region 1-36
`<region_column>_mm3` (lesion volume in the region) and `<region_column>_share` (its share of the subject's
total lesion volume, 6 significant digits, "0" when the total is 0); wm_mm3 (regions 1-34), left_wm_mm3 /
right_wm_mm3 (1-17 / 18-34), left_mm3 / right_mm3 (with 35 / 36), outside_voxels / outside_mm3 (lesion
voxels in region 0), voxel_volume_mm3, lesion_file, region_file; then LOCATION_COLUMNS (nnunet_wmhloc.location:
periventricular/deep by the distance and continuity rules, juxtacortical, infratentorial, lobar loads, ICV),
empty with the reason in location_note when the atlas registration did not run (wmhloc_localize alone).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from nnunet_wmhloc.io import WMHLocError, few, read_csv, read_json
from nnunet_wmhloc.layout import LESIONS, REGIONAL_LOADS  # the file names, one place for them
from nnunet_wmhloc.vocab import WM_REGIONS, region_column

REGION_LABELS = tuple(range(1, 37))
MAX_MM3 = 1e9  # a cubic metre: anything larger is a unit or export error


def mm3_column(label: int) -> str:
    """Lesion volume of region `label` in mm³, e.g. r01_L_parietal_mm3."""
    return f"{region_column(label)}_mm3"


def share_column(label: int) -> str:
    """Share of the subject's total lesion volume in region `label`, e.g. r01_L_parietal_share."""
    return f"{region_column(label)}_share"


LOBE_MM3_COLUMNS = [f"{lobe}_mm3" for lobe in ("frontal", "parietal", "temporal", "occipital", "limbic_insular",
                                                "deep_central")]  # nnunet_wmhloc.location.LOBES
LOCATION_COLUMNS = (["periventricular_mm3", "deep_mm3", "pv_distance_mm", "periventricular_cc_mm3", "deep_cc_mm3",
                     "juxtacortical_mm3", "infratentorial_mm3"] + LOBE_MM3_COLUMNS
                    + ["icv_mm3", "lesion_icv_fraction", "location_note"])
NO_LOCATION = ("no atlas registration here (wmhloc_localize --t1 --atlas-dir, or wmhloc_predict / wmhloc_run "
               "--atlas-dir, give the location columns)")
REGION_LOAD_COLUMNS = (["subject", "n_lesions", "total_voxels", "total_mm3"]
                + [c for r in REGION_LABELS for c in (mm3_column(r), share_column(r))]
                + ["wm_mm3", "left_wm_mm3", "right_wm_mm3", "left_mm3", "right_mm3", "outside_voxels",
                   "outside_mm3", "voxel_volume_mm3", "lesion_file", "region_file"])
LOAD_COLUMNS = REGION_LOAD_COLUMNS + LOCATION_COLUMNS
WM_MM3_COLUMNS = [mm3_column(r) for r in WM_REGIONS]
TEXT_COLUMNS = ("subject", "lesion_file", "region_file", "location_note")
NUMBER_COLUMNS = tuple(c for c in LOAD_COLUMNS if c not in TEXT_COLUMNS)
LESION_BASE_COLUMNS = ["subject", "lesion_id", "voxels", "volume_mm3", "centroid_lps_x_mm", "centroid_lps_y_mm",
                       "centroid_lps_z_mm", "main_region", "main_region_name", "main_share", "outside_share",
                       "n_regions", "regions"]
LESION_LOCATION_COLUMNS = ["location", "ventricle_distance_mm", "atlas_lps_x_mm", "atlas_lps_y_mm",
                           "atlas_lps_z_mm"]
LESION_COLUMNS = LESION_BASE_COLUMNS + LESION_LOCATION_COLUMNS


@dataclass
class LocalizeResult:
    """What wmhloc_localize made: rows of regional_loads.csv and lesions.csv (as strings, exactly as the CSV
    reads back), the output folder, the same for the reference lesions when given, and localize_log.json."""
    loads: list[dict]
    lesions: list[dict]
    output: Path
    reference: "LocalizeResult | None" = None
    log: dict = field(default_factory=dict)


def read_loads(path, *, required: Sequence[str] = REGION_LOAD_COLUMNS) -> list[dict]:
    """The rows of a regional-loads table, every number checked (finite, >= 0, plausible) and subjects unique.

    A table in another layout is one short line naming a few of the `required` columns it lacks; tables
    written before the location columns existed read as before, and empty location cells are allowed."""
    path = Path(path)
    rows = read_csv(path)
    if not rows:
        raise WMHLocError(f"{path}: no subject rows")
    missing = [c for c in required if c not in rows[0]]
    if missing:
        raise WMHLocError(f"{path}: missing column(s) {few(missing, 3)} (not the regional_loads.csv layout of "
                          "wmhloc_localize)")
    numbers = [c for c in NUMBER_COLUMNS if c in rows[0]]
    seen = set()
    for i, row in enumerate(rows, start=2):  # line 1 is the header
        s = (row.get("subject") or "").strip()
        if not s:
            raise WMHLocError(f"{path}: line {i}: empty subject")
        if s in seen:
            raise WMHLocError(f"{path}: line {i}: subject {s} appears twice")
        seen.add(s)
        for c in numbers:
            if not (c in LOCATION_COLUMNS and (row[c] or "").strip() == ""):
                _check_number(path, i, c, row[c])
    return rows


def _check_number(path: Path, line: int, column: str, text) -> float:
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise WMHLocError(f"{path}: line {line}: {column} = {text!r} is not a number") from None
    if not math.isfinite(v) or v < 0:
        raise WMHLocError(f"{path}: line {line}: {column} = {text} (volumes must be finite and >= 0)")
    if v > MAX_MM3:  # sums of such values overflow to inf and every profile to NaN
        raise WMHLocError(f"{path}: line {line}: {column} = {text} mm³ is not a plausible lesion volume "
                          f"(at most {MAX_MM3:.0e} mm³)")
    return v


def read_localize(folder) -> LocalizeResult:
    """A LocalizeResult from wmhloc_localize's output folder (a pipeline resumed after the localize stage)."""
    folder = Path(folder)
    log = read_json(folder / "localize_log.json") if (folder / "localize_log.json").is_file() else {}
    res = _read_set(folder, log)
    if (folder / "reference" / REGIONAL_LOADS).is_file():
        res.reference = _read_set(folder / "reference", log.get("reference", {}))
    return res


def _read_set(folder: Path, log: dict) -> LocalizeResult:
    return LocalizeResult(loads=read_loads(folder / REGIONAL_LOADS),
                          lesions=read_csv(folder / LESIONS, required=LESION_BASE_COLUMNS), output=folder, log=log)
