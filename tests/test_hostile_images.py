"""Issue #16, image classes: truncated integer NIfTI files, zero/negative spacing (and ITK's warnings),
unreadable entries in input folders, "not found" versus "wrong kind"."""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from hostile_common import call, seg_folders, snapshot, write_map


def truncate(path: Path, keep: float = 0.6) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    return path


def set_pixdim(path: Path, axis: int, value: float) -> Path:
    """Patch pixdim[axis] in the raw header (nibabel would 'fix' it on saving)."""
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[76 + 4 * axis: 80 + 4 * axis] = struct.pack("<f", value)
    path.write_bytes(gzip.compress(bytes(raw)))
    return path


class TestTruncatedIntegerNifti:
    """A cut-off integer .nii.gz was read as if whole: 3 lesions instead of 7, Dice 0.18 instead of 1."""

    def big_noisy_map(self, path: Path) -> Path:
        # incompressible enough that 60% of the file still holds a header and most voxels for ITK
        arr = np.random.default_rng(0).integers(0, 2, (24, 64, 64)).astype(np.uint8)
        return write_map(path, arr)

    def test_localize_and_evaluate_refuse(self, tmp_path, capfd):
        les = self.big_noisy_map(tmp_path / "les" / "s01.nii.gz")
        reg = write_map(tmp_path / "reg" / "s01.nii.gz", np.ones((24, 64, 64)))
        ref = self.big_noisy_map(tmp_path / "ref" / "s01.nii.gz")
        truncate(les)
        sitk.ReadImage(str(les))  # the trap: ITK reads it without complaint
        code, err = call("wmhloc_localize", ["--lesions", les.parent, "--regions", reg.parent, "-o", tmp_path / "o"],
                         capfd)
        assert code == 1 and f"{les}: lesion segmentation is truncated" in err
        code, err = call("wmhloc_evaluate", ["--pred", les.parent, "--ref", ref.parent, "--task", "lesion",
                                             "-o", tmp_path / "e"], capfd)
        assert code == 1 and "truncated" in err and str(les) in err
        assert not (tmp_path / "o").exists() and not (tmp_path / "e").exists()

    def test_whole_files_still_read(self, tmp_path, capfd):
        les, reg = seg_folders(tmp_path)
        assert call("wmhloc_localize", ["--lesions", les, "--regions", reg, "-o", tmp_path / "o"], capfd)[0] == 0


class TestSpacing:
    """Zero spacing was read as 1 mm (volumes 46x too small), negative spacing moved centroids, and the error
    (when any) came among lines of ITK warnings."""

    def test_zero_and_negative_spacing_refused_in_one_line(self, tmp_path, capfd):
        les, reg = seg_folders(tmp_path)
        for value in (0.0, -0.9):
            set_pixdim(les / "s01.nii.gz", 1, value)
            code, err = call("wmhloc_localize", ["--lesions", les, "--regions", reg, "-o", tmp_path / "o"], capfd)
            assert code == 1 and f"{les / 's01.nii.gz'}: lesion segmentation has voxel size" in err, err
            assert "pixdim" not in err and "zero or negative" in err  # call() also checked: one line only
            assert not (tmp_path / "o").exists()

    def test_evaluate_names_the_spacing(self, tmp_path, capfd):
        write_map(tmp_path / "p" / "s01.nii.gz")
        set_pixdim(write_map(tmp_path / "r" / "s01.nii.gz"), 3, 0.0)
        code, err = call("wmhloc_evaluate", ["--pred", tmp_path / "p", "--ref", tmp_path / "r", "--task", "lesion",
                                             "-o", tmp_path / "e"], capfd)
        assert code == 1 and "voxel size (1, 1, 0)" in err and "differs" not in err


class TestUnreadableEntries:
    """A dangling symlink, a symlink loop or a folder named x.nii.gz made that subject vanish, exit 0."""

    def test_each_kind_is_named(self, tmp_path, capfd):
        les, reg = seg_folders(tmp_path)
        before = snapshot(tmp_path)
        bad = {
            "dangling": lambda p: os.symlink(tmp_path / "gone.nii.gz", p),
            "loop": lambda p: os.symlink(p, p),
            "folder": lambda p: p.mkdir(),
        }
        for kind, make in bad.items():
            entry = les / f"s03_{kind}.nii.gz"
            make(entry)
            code, err = call("wmhloc_localize", ["--lesions", les, "--regions", reg, "-o", tmp_path / "o"], capfd)
            assert code == 1 and f"{entry}:" in err, (kind, err)
            code, err = call("wmhloc_evaluate", ["--pred", les, "--ref", reg, "--task", "lesion",
                                                 "-o", tmp_path / "e"], capfd)
            assert code == 1 and f"{entry}:" in err, (kind, err)
            entry.rmdir() if kind == "folder" else entry.unlink()
        assert "broken symbolic link" in _err_of(tmp_path, les, reg, capfd, bad["dangling"])
        assert snapshot(tmp_path) == before and not (tmp_path / "o").exists()


def _err_of(tmp_path, les, reg, capfd, make) -> str:
    entry = les / "s09.nii.gz"
    make(entry)
    try:
        return call("wmhloc_localize", ["--lesions", les, "--regions", reg, "-o", tmp_path / "o"], capfd)[1]
    finally:
        entry.unlink()


class TestNotFoundOrWrongKind:
    """'not found' was printed for paths that exist but are of the wrong kind."""

    def test_messages_say_which(self, tmp_path, capfd):
        les, reg = seg_folders(tmp_path)
        afile = les / "s01.nii.gz"
        code, err = call("wmhloc_localize", ["--lesions", afile, "--regions", reg, "-o", tmp_path / "o"], capfd)
        assert code == 1 and "is a file, expected a folder" in err and "not found" not in err
        code, err = call("wmhloc_cluster", [les, "-o", tmp_path / "c"], capfd)
        assert code == 1 and "is a folder, expected a file" in err
        code, err = call("wmhloc_cluster", [tmp_path / "nothing.csv", "-o", tmp_path / "c"], capfd)
        assert code == 1 and "not found" in err
        code, err = call("wmhloc_evaluate", ["--pred", les, "--ref", afile, "--task", "lesion",
                                             "-o", tmp_path / "e"], capfd)
        assert code == 1 and "is a file, expected a folder" in err
        code, err = call("wmhloc_cluster", [tmp_path / "x.csv", "-o", tmp_path / "c", "--atlas", les], capfd)
        assert code == 1 and "atlas is a folder, expected a file" in err
