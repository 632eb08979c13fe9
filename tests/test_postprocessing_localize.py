"""wmhloc_localize: volumes against hand-computed values, 26-connectivity, world centroids, real region maps."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_wmhloc.postprocessing import localize
from nnunet_wmhloc.postprocessing.loads import mm3_column

SPACING = (0.7, 1.3, 3.0)          # anisotropic: voxel = 2.73 mm³
VV = 0.7 * 1.3 * 3.0   # NIfTI stores spacing as float32: compare to ~1e-7 relative
# an oblique direction (rotation about z then x), so index->world must really use it
_c, _s = np.cos(0.3), np.sin(0.3)
_ROT = np.array([[_c, -_s, 0], [_s, _c, 0], [0, 0, 1]]) @ np.array([[1, 0, 0], [0, np.cos(0.2), -np.sin(0.2)],
                                                                     [0, np.sin(0.2), np.cos(0.2)]])
DIRECTION = tuple(_ROT.ravel())
ORIGIN = (-40.0, 12.5, -7.0)


def _write(arr, path: Path, spacing=SPACING, direction=DIRECTION, origin=ORIGIN, dtype=np.uint8):
    img = sitk.GetImageFromArray(arr.astype(dtype))
    img.SetSpacing(spacing)
    img.SetDirection(direction)
    img.SetOrigin(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))
    return img


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _synthetic(root: Path):
    """Region map (z, y, x) = (6, 16, 20): x<10 -> 3 (left), x>=10 -> 20 (right), y>=14 -> 35, z=0 -> 0."""
    reg = np.zeros((6, 16, 20), np.int16)
    reg[:, :, :10] = 3
    reg[:, :, 10:] = 20
    reg[:, 14:, :] = 35
    reg[0] = 0
    les = np.zeros_like(reg, dtype=np.uint8)
    les[2:4, 2:4, 8:12] = 1          # lesion A: 16 voxels, 8 in region 3, 8 in region 20
    les[0, 10, 2] = 1                # lesion B: 1 voxel outside all regions (z = 0)
    les[4, 8, 15] = 1                # lesion C: two voxels touching only by a corner (26- not 6-connected)
    les[5, 9, 16] = 1
    les[3, 12, 4] = 2                # 'other pathology': never counted
    _write(reg, root / "regions" / "s01.nii.gz", dtype=np.int16)
    _write(les, root / "lesions" / "s01_flair.nii.gz")
    return reg, les


def test_volumes_and_census_hand_computed(tmp_path):
    reg, les = _synthetic(tmp_path)
    out = tmp_path / "out"
    assert localize.main(["--lesions", str(tmp_path / "lesions"), "--regions", str(tmp_path / "regions"),
                          "-o", str(out)]) == 0
    (row,) = _read_csv(out / "regional_loads.csv")
    assert row["subject"] == "s01"
    assert int(row["n_lesions"]) == 3
    assert int(row["total_voxels"]) == 19
    assert float(row["total_mm3"]) == pytest.approx(19 * VV, rel=1e-6)
    assert float(row[mm3_column(3)]) == pytest.approx(8 * VV, rel=1e-6)
    assert float(row[mm3_column(20)]) == pytest.approx(10 * VV, rel=1e-6)
    others = [r for r in range(1, 37) if r not in (3, 20)]
    assert all(float(row[mm3_column(r)]) == 0 for r in others)
    assert float(row["left_wm_mm3"]) == pytest.approx(8 * VV, rel=1e-6)
    assert float(row["right_wm_mm3"]) == pytest.approx(10 * VV, rel=1e-6)
    assert float(row["wm_mm3"]) == pytest.approx(18 * VV, rel=1e-6)
    assert int(row["outside_voxels"]) == 1 and float(row["outside_mm3"]) == pytest.approx(VV)

    lesions = _read_csv(out / "lesions.csv")
    assert len(lesions) == 3
    by_vox = {int(r["voxels"]): r for r in lesions}
    a, b, c = by_vox[16], by_vox[1], by_vox[2]
    assert a["regions"] == "r03:0.500;r20:0.500" and int(a["n_regions"]) == 2
    assert float(a["volume_mm3"]) == pytest.approx(16 * VV, rel=1e-6)
    assert int(b["main_region"]) == 0 and float(b["outside_share"]) == 1.0 and b["regions"] == ""
    assert int(c["main_region"]) == 20 and c["regions"] == "r20:1.000"
    # centroid of C: mean continuous index (x, y, z) = (15.5, 8.5, 4.5) mapped by SimpleITK itself
    img = sitk.ReadImage(str(tmp_path / "regions" / "s01.nii.gz"))
    expect = img.TransformContinuousIndexToPhysicalPoint((15.5, 8.5, 4.5))
    got = [float(c[f"centroid_lps_{k}_mm"]) for k in "xyz"]
    np.testing.assert_allclose(got, expect, atol=1e-3)
    # regional map: lesion voxel -> region label, 0 elsewhere; geometry of the inputs
    m_img = sitk.ReadImage(str(out / "regional_maps" / "s01.nii.gz"))
    m = sitk.GetArrayFromImage(m_img)
    np.testing.assert_array_equal(m, np.where(les == 1, reg, 0))
    assert m_img.GetSize() == img.GetSize()
    np.testing.assert_allclose(m_img.GetDirection(), img.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(m_img.GetOrigin(), img.GetOrigin(), atol=1e-4)


def test_empty_lesion_mask_gives_zero_row(tmp_path):
    reg = np.full((4, 5, 6), 7, np.int16)
    _write(reg, tmp_path / "r" / "s02.nii.gz", dtype=np.int16)
    _write(np.zeros_like(reg), tmp_path / "l" / "s02.nii.gz")
    assert localize.main(["--lesions", str(tmp_path / "l"), "--regions", str(tmp_path / "r"),
                          "-o", str(tmp_path / "o")]) == 0
    (row,) = _read_csv(tmp_path / "o" / "regional_loads.csv")
    assert row["n_lesions"] == "0" and float(row["total_mm3"]) == 0.0
    assert _read_csv(tmp_path / "o" / "lesions.csv") == []


REAL = ["WMH_1", "WMH_111", "WMH_150", "WMH_160"]   # 240x240x48 oblique, 132x256x83, 128x256x103, 321x240x83


def test_real_region_maps(shared_data, tmp_path):
    reg_dir = shared_data / "wmhlocalization" / "WMH_refined_labels" / "Test"
    rng = np.random.default_rng(5)
    expected, balls = {}, {}
    shapes = set()
    for name in REAL:
        img = sitk.ReadImage(str(reg_dir / f"{name}.nii.gz"))
        reg = sitk.GetArrayFromImage(img)
        shapes.add(reg.shape)
        les = np.zeros(reg.shape, np.uint8)
        # scattered voxels in several regions + one ball (radius 2 voxels in-plane, 1 slice) around a
        # WM voxel: its centroid is the ball's centre exactly
        cand = np.flatnonzero(np.isin(reg, [4, 12, 21, 29, 35]))
        les.ravel()[rng.choice(cand, 300, replace=False)] = 1
        z, y, x = np.unravel_index(rng.choice(np.flatnonzero(reg == 13)), reg.shape)
        zz, yy, xx = np.ogrid[:reg.shape[0], :reg.shape[1], :reg.shape[2]]
        ball = ((zz - z) ** 2 * 9 + (yy - y) ** 2 + (xx - x) ** 2 <= 5) & (abs(zz - z) <= 1)
        les[ball] = 1
        # isolate the ball so it is one lesion of its own
        ring = ((zz - z) ** 2 * 9 + (yy - y) ** 2 + (xx - x) ** 2 <= 30) & ~ball
        les[ring] = 0
        balls[name] = (img.TransformIndexToPhysicalPoint((int(x), int(y), int(z))), int(ball.sum()))
        out = sitk.GetImageFromArray(les)
        out.CopyInformation(img)
        (tmp_path / "les").mkdir(exist_ok=True)
        sitk.WriteImage(out, str(tmp_path / "les" / f"{name}.nii.gz"))
        vv = float(np.prod(img.GetSpacing()))
        expected[name] = {r: np.count_nonzero((les == 1) & (reg == r)) * vv for r in range(37)}
    assert len(shapes) == 4
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "nnunet_wmhloc.postprocessing.localize", "--lesions",
                        str(tmp_path / "les"), "--regions", str(reg_dir), "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "region map(s) without lesion file" in r.stderr
    rows = {row["subject"]: row for row in _read_csv(out / "regional_loads.csv")}
    assert sorted(rows) == sorted(REAL)
    lesions = _read_csv(out / "lesions.csv")
    for name in REAL:
        e = expected[name]
        for reg_label in range(1, 37):
            assert float(rows[name][mm3_column(reg_label)]) == pytest.approx(e[reg_label], rel=1e-9)
        assert float(rows[name]["outside_mm3"]) == pytest.approx(e[0], rel=1e-9)
        assert float(rows[name]["total_mm3"]) == pytest.approx(sum(e.values()), rel=1e-6)
        centre, nvox = balls[name]
        mine = [row for row in lesions if row["subject"] == name
                and np.allclose([float(row[f"centroid_lps_{k}_mm"]) for k in "xyz"], centre, atol=2e-3)]
        assert len(mine) == 1 and int(mine[0]["voxels"]) == nvox


def test_reference_lesions(tmp_path):
    reg, les = _synthetic(tmp_path)
    ref = np.zeros_like(les)
    ref[1:3, 5:7, 1:3] = 1  # 8 voxels in region 3
    _write(ref, tmp_path / "ref" / "s01.nii.gz")
    out = tmp_path / "out"
    assert localize.main(["--lesions", str(tmp_path / "lesions"), "--regions", str(tmp_path / "regions"),
                          "-o", str(out), "--reference-lesions", str(tmp_path / "ref"), "--no-maps"]) == 0
    (row,) = _read_csv(out / "reference" / "regional_loads.csv")
    assert float(row[mm3_column(3)]) == pytest.approx(8 * VV, rel=1e-6)
    assert float(row["total_mm3"]) == pytest.approx(8 * VV, rel=1e-6)
    assert len(_read_csv(out / "reference" / "lesions.csv")) == 1
    assert not (out / "regional_maps").exists()


def _snapshot(folder: Path) -> set:
    return {p.relative_to(folder) for p in folder.rglob("*")}


@pytest.mark.parametrize("case", ["geometry", "partner", "lesion_label", "region_label", "empty", "duplicate"])
def test_bad_inputs(tmp_path, capsys, case):
    reg, les = _synthetic(tmp_path)
    if case == "geometry":
        _write(les, tmp_path / "lesions" / "s01_flair.nii.gz", spacing=(0.7, 1.3, 2.0))
        expect = "spacing"
    elif case == "partner":
        _write(les, tmp_path / "lesions" / "s02.nii.gz")
        expect = "no region map for subject 's02'"
    elif case == "lesion_label":
        les[1, 1, 1] = 3
        _write(les, tmp_path / "lesions" / "s01_flair.nii.gz")
        expect = "unexpected label values [3]"
    elif case == "region_label":
        reg[1, 1, 1] = 40
        _write(reg, tmp_path / "regions" / "s01.nii.gz", dtype=np.int16)
        expect = "unexpected label values [40]"
    elif case == "empty":
        for p in (tmp_path / "lesions").iterdir():
            p.unlink()
        expect = "no .nii.gz/.nii files"
    else:
        _write(les, tmp_path / "lesions" / "s01_FLAIR.nii.gz")
        expect = "same subject 's01'"
    before = _snapshot(tmp_path)
    rc = localize.main(["--lesions", str(tmp_path / "lesions"), "--regions", str(tmp_path / "regions"),
                        "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("error: ") and expect in err and len(err.strip().splitlines()) == 1
    assert _snapshot(tmp_path) == before


def test_core_26_connectivity_and_bbox():
    les = np.zeros((5, 6, 7), bool)
    les[1, 1, 1] = les[2, 2, 2] = les[3, 3, 3] = True      # a diagonal chain: one 26-connected lesion
    les[1, 5, 6] = True                                    # separate
    reg = np.full(les.shape, 5, np.uint8)
    img = sitk.Image(7, 6, 5, sitk.sitkUInt8)
    res = localize.localize_arrays(les, reg, img)
    assert res["lesion_region_voxels"].sum(1).tolist() == [3, 1]
    np.testing.assert_allclose(res["centroids"][0], [2, 2, 2])


def test_one_layout_and_the_function_result(tmp_path):
    """The function returns the rows exactly as regional_loads.csv / lesions.csv read back; the table is the
    one layout (LOAD_COLUMNS): per region its mm³ and its share of the subject's total lesion volume."""
    from nnunet_wmhloc.io import read_csv
    from nnunet_wmhloc.postprocessing.loads import LOAD_COLUMNS, read_localize, share_column

    _synthetic(tmp_path)
    ref = np.zeros((6, 16, 20), np.uint8)
    ref[1:3, 5:7, 1:3] = 1
    _write(ref, tmp_path / "ref" / "s01.nii.gz")
    notes = []
    res = localize.localize(tmp_path / "lesions", tmp_path / "regions", tmp_path / "out",
                            reference_lesions=tmp_path / "ref", say=notes.append, progress=False)
    out = tmp_path / "out"
    assert (out / "regional_loads.csv").read_text().splitlines()[0] == ",".join(LOAD_COLUMNS)
    assert res.loads == localize.read_loads(out / "regional_loads.csv") == read_csv(out / "regional_loads.csv")
    assert res.lesions == read_csv(out / "lesions.csv") and len(res.lesions) == 3
    (row,) = res.loads
    assert float(row[share_column(3)]) == pytest.approx(8 / 19, rel=1e-5)
    assert float(row[share_column(20)]) == pytest.approx(10 / 19, rel=1e-5)
    assert sum(float(row[share_column(r)]) for r in range(1, 37)) == pytest.approx(18 / 19, rel=1e-5)  # 1 outside
    assert res.reference.loads == read_csv(out / "reference" / "regional_loads.csv")
    assert float(res.reference.loads[0][share_column(3)]) == 1.0
    back = read_localize(out)  # what a resumed pipeline gets
    assert (back.loads, back.lesions, back.log) == (res.loads, res.lesions, res.log)
    assert (back.reference.loads, back.reference.lesions) == (res.reference.loads, res.reference.lesions)
    assert notes == []  # nothing passed over: nothing said


def test_zero_total_has_zero_shares(tmp_path):
    from nnunet_wmhloc.postprocessing.loads import share_column

    reg = np.full((4, 5, 6), 7, np.int16)
    _write(reg, tmp_path / "r" / "s02.nii.gz", dtype=np.int16)
    _write(np.zeros_like(reg), tmp_path / "l" / "s02.nii.gz")
    res = localize.localize(tmp_path / "l", tmp_path / "r", tmp_path / "o", write_maps=False, progress=False)
    assert all(res.loads[0][share_column(r)] == "0" for r in range(1, 37))
