"""Odd and hostile files for benchmarks/hostile_pass.py: NIfTI images that lie or are broken, CSV tables and
archives. Each maker writes one file at `path` (tiny: the 6x12x12 grid of tests/hostile_common.py)."""
from __future__ import annotations

import gzip
import os
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

SHAPE = (6, 12, 12)  # z, y, x


def lesion_arr() -> np.ndarray:
    a = np.zeros(SHAPE, np.uint8)
    a[2:4, 3:7, 3:7] = 1
    return a


def region_arr() -> np.ndarray:
    a = np.zeros(SHAPE, np.uint8)
    a[:, :, :6] = 1
    a[:, :, 6:] = 18
    return a


def flair_arr(seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = (rng.random(SHAPE) * 100 + 50).astype(np.float32)
    a[2:4, 3:7, 3:7] += 300
    return a


def write_sitk(path: Path, arr: np.ndarray, spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0)) -> Path:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), True)
    return path


def _nib(path: Path, arr_xyz: np.ndarray, *, dtype=None, affine=None, edit=None) -> Path:
    """A NIfTI written by nibabel from an x,y,z array; `edit(header)` changes the header after the fact."""
    affine = np.diag([1.0, 1.0, 2.0, 1.0]) if affine is None else affine
    img = nib.Nifti1Image(arr_xyz if dtype is None else arr_xyz.astype(dtype), affine, dtype=dtype)
    if dtype is not None:
        img.set_data_dtype(dtype)
    if edit is not None:
        edit(img.header)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def xyz(arr_zyx: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(arr_zyx, (2, 1, 0)))


def _raw_header_edit(path: Path, offset: int, data: bytes) -> None:
    """Patch bytes of the (gzip'd) NIfTI header in place: for lies nibabel refuses to write."""
    raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    raw = raw[:offset] + data + raw[offset + len(data):]
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)


# name -> maker(path, base_arr_zyx); a base array is a valid map of the slot's kind
def variants() -> dict:
    def four_d(p, a):
        return _nib(p, np.stack([xyz(a)] * 2, -1))

    def two_d(p, a):
        return _nib(p, xyz(a)[:, :, 0])

    def empty_file(p, a):
        p.write_bytes(b"")

    def truncated(p, a):
        write_sitk(p, a)
        b = p.read_bytes()
        p.write_bytes(b[: len(b) // 2])

    def gz_garbage(p, a):
        p.write_bytes(gzip.compress(os.urandom(2000)))

    def text_file(p, a):
        p.write_text("subject,flair\n1,2\n")

    def nan_affine(p, a):
        aff = np.diag([1.0, 1.0, 2.0, 1.0])
        aff[0, 3] = np.nan
        return _nib(p, xyz(a), affine=aff)

    def inf_affine(p, a):  # nibabel refuses to write these: patch srow_y (offset 296) of the header
        _nib(p, xyz(a))
        _raw_header_edit(p, 296, np.array([0.0, np.inf, 0.0, 0.0], "<f4").tobytes())

    def singular_affine(p, a):  # srow_z = srow_x
        _nib(p, xyz(a))
        _raw_header_edit(p, 312, np.array([1.0, 0.0, 0.0, 0.0], "<f4").tobytes())

    def sform_qform_mismatch(p, a):
        def edit(h):
            h.set_qform(np.diag([1.0, 1.0, 2.0, 1.0]), code=1)
            s = np.diag([1.0, 1.0, 2.0, 1.0])
            s[:3, 3] = [50.0, -40.0, 30.0]
            h.set_sform(s, code=1)
        return _nib(p, xyz(a), edit=edit)

    def int64(p, a):
        return _nib(p, xyz(a), dtype=np.int64)

    def int64_wraps(p, a):  # a label 2**32 + 1: wraps to 1 in int32
        b = xyz(a).astype(np.int64)
        b[b == 1] = 2 ** 32 + 1
        return _nib(p, b, dtype=np.int64)

    def int8_negative(p, a):
        b = xyz(a).astype(np.int8)
        b[0, 0, 0] = -1
        return _nib(p, b, dtype=np.int8)

    def rgb(p, a):
        b = xyz(a)
        rgb_arr = np.zeros(b.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
        rgb_arr["R"] = b
        img = nib.Nifti1Image(rgb_arr, np.diag([1.0, 1.0, 2.0, 1.0]))
        nib.save(img, str(p))

    def float_fraction(p, a):
        b = xyz(a).astype(np.float32)
        b[b > 0] = 0.6
        return _nib(p, b, dtype=np.float32)

    def float_nan(p, a):
        b = xyz(a).astype(np.float32)
        b[0, 0, 0] = np.nan
        return _nib(p, b, dtype=np.float32)

    def huge_claim(p, a):
        _nib(p, xyz(a))
        # dim[1..3] at offset 42: 3000 x 3000 x 3000 voxels
        _raw_header_edit(p, 42, np.array([3000, 3000, 3000], "<i2").tobytes())

    def negative_dim(p, a):
        _nib(p, xyz(a))
        _raw_header_edit(p, 42, np.array([-6], "<i2").tobytes())

    def zero_dim(p, a):
        _nib(p, xyz(a))
        _raw_header_edit(p, 42, np.array([0], "<i2").tobytes())

    def slope_two(p, a):  # integer labels with scl_slope 2: a reader applying it doubles every label
        return _nib(p, xyz(a), dtype=np.uint8, edit=lambda h: h.set_slope_inter(2.0, 0.0))

    def slope_half(p, a):
        return _nib(p, xyz(a), dtype=np.uint8, edit=lambda h: h.set_slope_inter(0.5, 0.0))

    def inter_offset(p, a):
        return _nib(p, xyz(a), dtype=np.uint8, edit=lambda h: h.set_slope_inter(1.0, 5.0))

    def nan_pixdim(p, a):
        _nib(p, xyz(a))
        _raw_header_edit(p, 80, np.array([np.nan], "<f4").tobytes())  # pixdim[1]

    def big_endian(p, a):
        img = nib.Nifti1Image(xyz(a).astype(">i2"), np.diag([1.0, 1.0, 2.0, 1.0]))
        img.header.set_data_dtype(">i2")
        nib.save(img, str(p))

    def bitpix_lie(p, a):
        _nib(p, xyz(a), dtype=np.uint8)
        _raw_header_edit(p, 70, np.array([16, 64], "<i2").tobytes())  # datatype int32? bitpix 64

    def huge_vox_offset(p, a):
        _nib(p, xyz(a))
        _raw_header_edit(p, 108, np.array([1e12], "<f4").tobytes())

    def uncompressed_named_gz(p, a):
        q = p.with_name("tmp_plain.nii")
        write_sitk(q, a)
        os.replace(q, p)

    def directory(p, a):
        p.mkdir(parents=True)

    def dangling_link(p, a):
        p.symlink_to(p.parent / "does_not_exist.nii.gz")

    def link_loop(p, a):
        p.symlink_to(p)

    def fifo(p, a):
        os.mkfifo(p)

    def complex64(p, a):
        return _nib(p, xyz(a).astype(np.complex64), dtype=np.complex64)

    def bad_magic(p, a):
        _nib(p, xyz(a))
        _raw_header_edit(p, 344, b"xx1\0")

    def sizeof_hdr_lie(p, a):
        _nib(p, xyz(a))
        _raw_header_edit(p, 0, np.array([12345], "<i4").tobytes())

    def dim0_seven(p, a):
        _nib(p, xyz(a))
        _raw_header_edit(p, 40, np.array([7, 12, 12, 6, 1, 1, 1, 1], "<i2").tobytes())

    def trailing_junk(p, a):
        write_sitk(p, a)
        with open(p, "ab") as f:
            f.write(os.urandom(100))

    return {k: v for k, v in locals().items() if callable(v) and not k.startswith("_")}


def zip_with(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for k, v in members.items():
            z.writestr(k, v)
        for k, target in (links or {}).items():
            info = zipfile.ZipInfo(k)
            info.external_attr = (0o120777 << 16)
            z.writestr(info, target)
    return path
