"""Issue #21 part B, items 8 and 9: a cast that would make values inf is refused (one line) before nnU-Net's
float32 input is written; images in a format the folder readers do not take are reported, not dropped."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from hostile_common import call, region_map, seg_folders, write_map
from nnunet_wmhloc.dataset_conversion.cohort import convert_cohort
from nnunet_wmhloc.io import WMHLocError, write_csv
from postprocessing.localize import localize


def _huge_flair(release: Path, dst: Path) -> Path:
    """The synthetic FLAIR as float64 scaled to ~1e300: finite, but beyond float32's range."""
    img = sitk.ReadImage(str(release / "training/Utrecht/0/pre/FLAIR.nii.gz"))
    arr = sitk.GetArrayFromImage(img).astype(np.float64)
    big = sitk.GetImageFromArray(arr / max(float(arr.max()), 1.0) * 1e300 + 1.0)
    big.CopyInformation(img)
    sitk.WriteImage(big, str(dst), True)
    return dst


def _cohort(release: Path, tmp: Path) -> Path:
    flair = _huge_flair(release, tmp / "flair64.nii.gz")
    return write_csv([{"subject": "s0", "flair": flair, "t1": release / "training/Utrecht/0/pre/T1.nii.gz"}],
                     tmp / "cohort.csv")


def test_float64_beyond_float32_refused(synth_release, tmp_path):
    csv = _cohort(synth_release, tmp_path)
    with pytest.raises(WMHLocError, match=r"flair64\.nii\.gz: FLAIR image has \d+ voxels beyond float32's range"):
        convert_cohort(csv, mode="predict", output=tmp_path / "images")
    assert not (tmp_path / "images").exists()  # nothing half-written


def test_cli_float64_beyond_float32_one_line(synth_release, tmp_path):
    csv = _cohort(synth_release, tmp_path)
    p = subprocess.run([str(Path(sys.executable).parent / "wmhloc_convert_cohort"), str(csv), "--mode", "predict", "-o",
                        str(tmp_path / "images")], capture_output=True, text=True)
    err = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 1 and len(err) == 1 and "beyond float32's range" in err[0], p.stderr
    assert not (tmp_path / "images").exists()


def _mha_pair(root: Path) -> None:
    write_map(root / "lesions" / "s03.mha")
    write_map(root / "regions" / "s03.mha", region_map())


def test_mha_pair_reported_not_dropped(tmp_path):
    lesions, regions = seg_folders(tmp_path)
    _mha_pair(tmp_path)
    with pytest.raises(WMHLocError, match=r"format not read here \(s03\.mha\)"):
        localize(lesions, regions, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_cli_localize_mha_one_line(tmp_path, capfd):
    lesions, regions = seg_folders(tmp_path)
    _mha_pair(tmp_path)
    code, err = call("wmhloc_localize", ["--lesions", lesions, "--regions", regions, "-o", tmp_path / "out"], capfd)
    assert code == 1 and "s03.mha" in err and "only .nii.gz/.nii are read" in err, err
    assert not (tmp_path / "out").exists()


def test_complex_flair_one_line(synth_release, tmp_path, capfd):
    # found by the second hostile pass: ITK's cast of a complex image failed with a traceback
    import nibabel as nib

    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(synth_release / "training/Utrecht/0/pre/FLAIR.nii.gz")))
    nib.save(nib.Nifti1Image(arr.T.astype(np.complex64), np.eye(4)), str(tmp_path / "c.nii.gz"))
    csv = write_csv([{"subject": "s0", "flair": tmp_path / "c.nii.gz", "t1": ""}], tmp_path / "cohort.csv")
    code, err = call("wmhloc_convert_cohort", [csv, "--mode", "predict", "-o", tmp_path / "images"], capfd)
    assert code == 1 and "c.nii.gz: FLAIR image holds complex values" in err, err
    assert not (tmp_path / "images").exists()
