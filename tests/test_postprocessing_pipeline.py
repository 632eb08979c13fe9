"""End to end: nnU-Net prediction folders (lesion and region models, FLAIR + T1) -> wmhloc_fuse ->
wmhloc_localize -> wmhloc_cluster, each CLI run as a subprocess like a user would."""
from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_wmhloc.postprocessing.loads import mm3_column

pytest.importorskip("torch")
from test_postprocessing_fuse import _image, nnunet_predict_like  # noqa: E402


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", f"nnunet_wmhloc.postprocessing.{module}", *args],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r


def test_fuse_localize_cluster(tmp_path):
    rng = np.random.default_rng(3)
    subjects = [f"wmh{i:03d}" for i in range(5)]
    for s in subjects:
        img = tmp_path / f"{s}_0000.nii.gz"
        _image(img, rng)
        for mod in ("flair", "t1"):
            nnunet_predict_like(img, tmp_path / "lesion_pred", f"{s}_{mod}", 2, rng)
            nnunet_predict_like(img, tmp_path / "region_pred", f"{s}_{mod}", 37, rng)
    _cli("fuse", str(tmp_path / "lesion_pred"), "-o", str(tmp_path / "lesions"))
    _cli("fuse", str(tmp_path / "region_pred"), "-o", str(tmp_path / "regions"))
    _cli("localize", "--lesions", str(tmp_path / "lesions"), "--regions", str(tmp_path / "regions"),
         "-o", str(tmp_path / "loc"))
    with open(tmp_path / "loc" / "regional_loads.csv", newline="") as f:
        rows = {r["subject"]: r for r in csv.DictReader(f)}
    assert sorted(rows) == subjects
    for s in subjects:  # loads agree with the fused maps read back independently
        les_img = sitk.ReadImage(str(tmp_path / "lesions" / f"{s}.nii.gz"))
        les = sitk.GetArrayFromImage(les_img) == 1
        reg = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "regions" / f"{s}.nii.gz")))
        vv = np.prod(les_img.GetSpacing())
        assert les.any()
        for r in (1, 12, 29, 36):
            assert float(rows[s][mm3_column(r)]) == pytest.approx(np.count_nonzero(les & (reg == r)) * vv,
                                                                    rel=1e-9, abs=1e-9)
    r = _cli("cluster", str(tmp_path / "loc" / "regional_loads.csv"), "-o", str(tmp_path / "cl"), "--k-range", "2", "3")
    with open(tmp_path / "cl" / "assignments.csv", newline="") as f:
        groups = {a["subject"]: int(a["group"]) for a in csv.DictReader(f)}
    assert sorted(groups) == subjects and set(groups.values()) <= {1, 2, 3}
