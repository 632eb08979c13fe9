"""wmhloc_localize --t1 DIR --atlas-dir ATLAS: the location columns (nnunet_wmhloc.location; README "Where the
lesions are") for every subject whose T1 is in DIR (matched by subject like the other folders), from the
atlas registration of that T1 and the region map given; written next to the tables:
location/<subject>_{ventricles,lesion_location,space-atlas_lesion_mask}.nii.gz and
location/lesion_frequency_atlas.nii.gz. A subject without a T1, or whose registration fails, keeps empty
location cells and the reason in location_note."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_wmhloc import io
from nnunet_wmhloc.io import WMHLocError
from nnunet_wmhloc.postprocessing._match import index_folder
from nnunet_wmhloc.postprocessing.loads import LESION_LOCATION_COLUMNS, LOCATION_COLUMNS

NO_T1 = "no T1 in --t1 for this subject: location classes need the atlas registration of a T1"
FREQUENCY = "lesion_frequency_atlas.nii.gz"


def check(t1_dir, atlas_dir, pv_distance: float, priority) -> dict[str, Path]:
    """Before anything is written: the T1 files by subject ({} without --t1), the atlas loaded."""
    from nnunet_wmhloc.location.rows import check_pv_distance, load_atlas

    if (t1_dir is None) != (atlas_dir is None):
        raise WMHLocError("--t1 and --atlas-dir go together: location classes register each subject's T1 "
                          "to the atlas")
    if t1_dir is None:
        return {}
    check_pv_distance(pv_distance)
    load_atlas(Path(atlas_dir))
    t1s, _ = index_folder(t1_dir, ["t1", *[m for m in priority if m != "t1"]], what="T1")
    return t1s


def add_location(pairs, rows: list[dict], lesions: list[dict], t1s: dict[str, Path], atlas_dir, *,
                 lesion_label: int, pv_distance: float, out: Path, progress: bool) -> int:
    """Fill the location cells of `rows` / `lesions` (in place) and write out/location/; returns the number
    of subjects located."""
    from nnunet_wmhloc import cli
    from nnunet_wmhloc.location import frequency_map
    from nnunet_wmhloc.location.rows import load_atlas, locate_files

    atlas, priors = load_atlas(Path(atlas_dir))
    by_subject = {r["subject"]: r for r in rows}
    where = out / "location"
    where.mkdir()
    masks = []
    for subject, les_path, reg_path in cli.progress(pairs, desc="location", total=len(pairs),
                                                    disable=None if progress else True):
        row = by_subject[subject]
        if subject not in t1s:
            row["location_note"] = NO_T1
            continue
        lesion = io.read_image(les_path, what="lesion segmentation")
        mask = sitk.GetArrayFromImage(lesion) == lesion_label
        regions = sitk.GetArrayFromImage(io.read_image(reg_path, what="region segmentation")).astype(np.int16)
        try:
            cells, les_cells, atlas_mask = locate_files(subject, lesion, mask, t1s[subject], atlas, priors,
                                                        regions=lambda reg: regions, pv_distance=pv_distance,
                                                        out=where)
        except WMHLocError as e:
            row["location_note"] = str(e)
            continue
        row.update({c: cells.get(c, "") for c in LOCATION_COLUMNS})
        found = {r["lesion_id"]: r for r in les_cells}
        for r in lesions:
            if r["subject"] == subject and r["lesion_id"] in found:
                r.update({c: found[r["lesion_id"]][c] for c in LESION_LOCATION_COLUMNS})
        masks.append(atlas_mask)
    if masks:
        io.write_image(frequency_map(masks), where / FREQUENCY)
    return len(masks)
