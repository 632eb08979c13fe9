"""The merge table and wmhloc_build_atlas against the authors' released refined atlas."""
import csv
import subprocess

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_wmhloc.atlas import build, merge_table as mt
from nnunet_wmhloc.vocab import REGION_FULL_NAMES

LEFT_REST = [26, 27, 28, 29, 30, 31, 32, 49, 50, 56, 57, 59, 60, 61, 62, 63, 64, 65]
RIGHT_REST = [91, 92, 93, 94, 95, 96, 97, 114, 115, 121, 122, 124, 125, 126, 127, 128, 129, 130]


def test_merge_table_maps_every_type2_label_once():
    rows = list(csv.DictReader(open(mt.TABLE_PATH, encoding="utf-8"), delimiter="\t"))
    labels = [int(r["type2_label"]) for r in rows]
    assert sorted(labels) == list(range(1, 131)) and len(labels) == len(set(labels))
    table = mt.merge_table()
    assert set(table.values()) == set(range(1, 37))  # every region receives at least one label
    assert mt.type2_labels_of(35) == LEFT_REST and mt.type2_labels_of(36) == RIGHT_REST
    for left in range(1, 66):  # right hemisphere mirrors the left
        a, b = table[left], table[left + 65]
        assert (a <= 17 and b == a + 17) or (a, b) == (35, 36), left
    lut = mt.lookup()
    assert lut[0] == 0 and lut.shape == (131,)


def test_merge_table_follows_the_authors_region_names(shared_data):
    """Each type-II name appears in its region's name in the authors' refined_atlas_labels.txt; the one
    exception, left INSULAR in region 15, is what the authors' voxels say (see merge_table.py)."""
    import re
    authors = {}
    for line in open(shared_data / "wmhlocalization" / "refined_atlas_labels.txt", encoding="utf-8"):
        if line.strip() and not line.startswith("#"):
            k, v = line.split(maxsplit=1)
            authors[int(k)] = v.strip().lower()
    missing = []
    for lab, name in mt.type2_names().items():
        reg = mt.merge_table()[lab]
        if reg <= 34 and re.sub(r"_(left|right)$", "", name).lower() not in authors[reg]:
            missing.append(lab)
    assert missing == [25]
    # our full names (regions.py) name the same structures, hemisphere aside
    assert "superior_longitudinal_fasciculus" in REGION_FULL_NAMES[29].lower()


def test_merge_rejects_unknown_labels():
    with pytest.raises(mt.WMHLocError, match="not type-II labels"):
        mt.merge_type2(np.array([0, 5, 131]), source="x.nii.gz")


def test_build_equals_authors_atlas_voxel_for_voxel(shared_data, tmp_path):
    out = tmp_path / "atlas"
    assert build.main(["--eve-dir", str(shared_data / "eve_atlas"), "--output", str(out)]) == 0
    ours = sitk.ReadImage(str(out / "36_labels_merged.nii.gz"))
    theirs = sitk.ReadImage(str(shared_data / "wmhlocalization" / "36_labels_merged.nii.gz"))
    assert ours.GetSize() == theirs.GetSize()
    assert ours.GetSpacing() == theirs.GetSpacing() and ours.GetOrigin() == theirs.GetOrigin()
    assert ours.GetDirection() == theirs.GetDirection()
    assert ours.GetPixelID() == theirs.GetPixelID()
    a, b = sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(theirs)
    assert np.array_equal(a, b)

    # WM-only version: ours is the atlas restricted to FSL class 3
    wm_ours = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "36_labels_merged_only_WM.nii.gz")))
    fsl = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data / "eve_atlas" /
                                                    "JHU_MNI_SS_T1_FSL_Tissue_Classes_seg.nii.gz")))
    assert np.array_equal(wm_ours, np.where(fsl == 3, a, 0))
    # the authors' was masked by their FAST-AID WM (not released): same labels where they keep any,
    # a different but largely overlapping WM (Dice 0.84 with FSL's)
    wm_theirs = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data / "wmhlocalization" /
                                                          "36_labels_merged_only_WM.nii.gz")))
    kept = wm_theirs > 0
    assert np.array_equal(wm_theirs[kept], a[kept])
    dice = 2 * (kept & (wm_ours > 0)).sum() / (kept.sum() + (wm_ours > 0).sum())
    assert 0.8 < dice < 0.9

    for name in ("atlas_T1_brain.nii.gz", "atlas_brain_mask.nii.gz", "atlas_tissue.nii.gz",
                 "refined_atlas_labels.tsv", "atlas.json"):
        assert (out / name).is_file()
    names = (out / "refined_atlas_labels.tsv").read_text().splitlines()
    assert len(names) == 38 and names[16].startswith("15\t") and names[16].endswith("\t25,45,47,48")


def test_build_cli_errors_are_one_line(shared_data, tmp_path):
    out = tmp_path / "atlas"
    out.mkdir()
    r = subprocess.run(["wmhloc_build_atlas", "--eve-dir", str(shared_data / "eve_atlas"), "--output", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "already exists" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run(["wmhloc_build_atlas", "--eve-dir", str(tmp_path / "nope"), "--output",
                        str(tmp_path / "a2")], capture_output=True, text=True)
    assert r.returncode == 1 and "Eve atlas folder not found" in r.stderr
    assert not (tmp_path / "a2").exists()
    empty = tmp_path / "eve_partial"
    empty.mkdir()
    r = subprocess.run(["wmhloc_build_atlas", "--eve-dir", str(empty), "--output", str(tmp_path / "a3")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "JHU_MNI_SS_T1_brain.nii.gz: Eve T1 not found" in r.stderr
    assert not (tmp_path / "a3").exists()
