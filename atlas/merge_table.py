"""Type-II label (1..130 of the JHU "Eve" WMPM type-II atlas) → refined region (1..36).

The table lives in `merge_table.tsv` beside this file (columns type2_label, type2_name, region). It follows
the paper's Tables A.1/A.2 and the authors' refined_atlas_labels.txt, and was checked against the authors'
released `36_labels_merged.nii.gz` voxel for voxel (tests/test_atlas_build.py). Two facts the published
names do not say, settled by that file:
- INSULAR (25, left) belongs to region 15 like INSULAR_right (90) to 32, although the authors' name of
  region 15 omits it;
- labels 29-32, 49 and 50 (brainstem and cerebellar tracts, and their right twins 94-97, 114, 115) go to
  35/36, not only the grey-matter labels listed in the authors' MATLAB script.
The right hemisphere mirrors the left: right label = left label + 65, right region = left region + 17
(35 → 36)."""
from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

import numpy as np

from nnunet_wmhloc.vocab import ALL_LABELS
from nnunet_wmhloc.io import WMHLocError

TABLE_PATH = Path(__file__).with_name("merge_table.tsv")
N_TYPE2 = 130


@lru_cache(maxsize=1)
def merge_table() -> dict[int, int]:
    """{type-II label: region} for labels 1..130 (background 0 → 0 is implicit)."""
    rows = list(csv.DictReader(open(TABLE_PATH, encoding="utf-8"), delimiter="\t"))
    table = {int(r["type2_label"]): int(r["region"]) for r in rows}
    if sorted(table) != list(range(1, N_TYPE2 + 1)) or len(rows) != N_TYPE2:
        raise WMHLocError(f"{TABLE_PATH}: expected each type-II label 1..{N_TYPE2} exactly once")
    if not set(table.values()) <= set(ALL_LABELS[1:]):
        raise WMHLocError(f"{TABLE_PATH}: regions outside 1..36")
    return table


@lru_cache(maxsize=1)
def type2_names() -> dict[int, str]:
    rows = csv.DictReader(open(TABLE_PATH, encoding="utf-8"), delimiter="\t")
    return {int(r["type2_label"]): r["type2_name"] for r in rows}


def lookup() -> np.ndarray:
    """Array lut with lut[type2_label] = region (lut[0] = 0)."""
    lut = np.zeros(N_TYPE2 + 1, dtype=np.int16)
    for k, v in merge_table().items():
        lut[k] = v
    return lut


def merge_type2(arr: np.ndarray, *, source: str = "type-II label map") -> np.ndarray:
    """Map a type-II label array (0..130) to the 36 refined labels; unknown values raise WMHLocError."""
    arr = np.asarray(arr)
    if arr.dtype.kind == "f":
        arr = np.rint(arr)
    arr = arr.astype(np.int32)
    bad = np.unique(arr[(arr < 0) | (arr > N_TYPE2)])
    if bad.size:
        raise WMHLocError(f"{source}: values {bad.tolist()[:10]} are not type-II labels 0..{N_TYPE2}")
    return lookup()[arr]


def type2_labels_of(region: int) -> list[int]:
    return sorted(k for k, v in merge_table().items() if v == region)
