"""Checked NIfTI/ITK image reading (header, truncation, NaN, spacing) and atomic image writing."""
from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path
from typing import Iterable

import numpy as np
import SimpleITK as sitk

from nnunet_wmhloc.io.outputs import atomic_file
from nnunet_wmhloc.io.paths import NIFTI_SUFFIXES, WMHLocError, check_path

# ITK prints multi-line warnings (e.g. "zero spacing, using 1") on stderr: every problem that matters is
# checked here and reported as one line instead
sitk.ProcessObject.SetGlobalWarningDisplay(False)
DEFLATE_MAX_RATIO = 1032  # deflate's largest expansion (258-byte matches in ~2-bit codes)


def read_image(path: str | os.PathLike, *, what: str = "image", dim: int = 3,
               allow_nonfinite: bool = False) -> sitk.Image:
    """Read a scalar image and check it is `dim`-D and finite; raise WMHLocError naming the file."""
    path = check_path(path, what=what)
    nii_float = _check_nifti_file(path, what, allow_nonfinite) if path.name.endswith(NIFTI_SUFFIXES) else False
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        reason = next((ln.strip() for ln in first if "ERROR" in ln or "rror" in ln), "unreadable")
        raise WMHLocError(f"{path}: cannot read {what} (truncated or not a valid image: {reason[:160]})") from None
    if img.GetPixelID() in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):  # ITK cannot cast them
        raise WMHLocError(f"{path}: {what} holds complex values ({img.GetPixelIDTypeAsString()}); expected "
                          "real intensities or labels")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise WMHLocError(f"{path}: {what} has {img.GetNumberOfComponentsPerPixel()} components per voxel, expected 1")
    size = img.GetSize()
    real_dim = len(size)
    # a 4D image with a singleton 4th axis is a 3D volume in disguise; anything else is refused
    if real_dim == 4 and size[3] == 1 and dim == 3:
        img = img[:, :, :, 0]
        real_dim = 3
    if real_dim != dim:
        raise WMHLocError(f"{path}: {what} is {real_dim}D (size {size}), expected a {dim}D volume")
    if dim == 3 and size[2] == 1:
        raise WMHLocError(f"{path}: {what} is a single slice (size {size}), expected a 3D volume")
    spacing = img.GetSpacing()
    if not all(np.isfinite(v) and v > 0 for v in spacing):
        raise WMHLocError(f"{path}: {what} has spacing {_vec(spacing)}: voxel sizes must be positive")
    if not allow_nonfinite:
        n = _count_nonfinite(path, img, nii_float)
        if n:
            raise WMHLocError(f"{path}: {what} has {n} NaN/inf voxels")
    return img


def _check_nifti_file(path: Path, what: str, allow_nonfinite: bool) -> bool:
    """Header checks ITK does not make: positive voxel sizes (ITK reads 0 as 1 mm), and that the file holds
    every voxel (ITK reads a truncated .nii.gz without complaint; and allocates whatever a header declares,
    so a tiny file claiming a huge image is refused here first). Returns whether the data are float and to be
    read whole by nibabel for the NaN count (ITK turns NaN into 0)."""
    import nibabel as nib

    try:
        # the raw header: nib.load "fixes" zero/negative pixdims to 1/abs silently, as ITK does
        with (gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")) as f:
            head = f.read(4)
            f.seek(0)
            nifti2 = 540 in (int.from_bytes(head, "little"), int.from_bytes(head, "big"))
            hdr = (nib.Nifti2Header if nifti2 else nib.Nifti1Header).from_fileobj(f, check=False)
        ndim = int(hdr["dim"][0])
        shape = [int(x) for x in hdr["dim"][1:1 + ndim]]
        pixdim = [float(x) for x in hdr["pixdim"][1:1 + min(ndim, 3)]]
        dtype = hdr.get_data_dtype()
        # some writers (ITK) store vox_offset 0: the data of a single-file NIfTI follow the header and its
        # 4-byte extension flag at the least
        offset = max(int(hdr["vox_offset"]), int(hdr.sizeof_hdr) + 4)
    except Exception as e:  # nibabel refuses what is not a NIfTI file: let ITK give its own reason
        if isinstance(e, (OSError, EOFError, zlib.error)):
            raise WMHLocError(f"{path}: cannot read {what} (truncated or not a valid image: "
                              f"{type(e).__name__}: {str(e)[:120]})") from None
        return False
    _check_header_layout(path, what, hdr, ndim, shape)
    bad = [v for v in pixdim if not (np.isfinite(v) and v > 0)]
    if bad:
        raise WMHLocError(f"{path}: {what} has voxel size {_vec(pixdim)} in its header (zero or negative "
                          "spacing; fix the header, e.g. with nibabel or fslmodhd)")
    # float images too: before ITK or nibabel allocate what the header declares, the file must hold it
    need = offset + math.prod(max(d, 0) for d in shape) * dtype.itemsize  # Python ints: no overflow
    have = _nifti_bytes(path, need)
    if have < need:
        raise WMHLocError(f"{path}: {what} is truncated ({have} of {need} bytes of image data; "
                          "copy it again)")
    return dtype.kind == "f" and not allow_nonfinite


def _check_header_layout(path: Path, what: str, hdr, ndim: int, shape: list[int]) -> None:
    """What ITK's NIfTI reader reads anyway or answers with multi-line C-library chatter on stderr: a wrong
    magic (read as Analyze, orientation lost), dimensions out of range, a non-finite or singular sform, a
    non-finite qform."""
    magic = bytes(hdr["magic"])[:3]
    if magic not in (b"n+1", b"ni1", b"n+2", b"ni2"):
        raise WMHLocError(f"{path}: {what} is not a NIfTI file (header magic {magic[:8]!r}, expected 'n+1')")
    if not 1 <= ndim <= 7 or any(d < 1 for d in shape):
        raise WMHLocError(f"{path}: {what} declares {ndim} dimensions of sizes {shape} in its header "
                          "(each size must be at least 1)")
    if int(hdr["sform_code"]) > 0:
        m = np.array([hdr["srow_x"], hdr["srow_y"], hdr["srow_z"]], float)
        if not np.isfinite(m).all() or abs(np.linalg.det(m[:, :3])) < 1e-12:
            raise WMHLocError(f"{path}: {what} has a non-finite or singular orientation matrix (sform) "
                              "in its header")
    if int(hdr["qform_code"]) > 0:
        q = [float(hdr[k]) for k in ("quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z")]
        if not np.isfinite(q).all():
            raise WMHLocError(f"{path}: {what} has a non-finite orientation (qform) in its header")


def _nifti_bytes(path: Path, need: int) -> int:
    """Bytes of the (decompressed) file, as far as they matter for `need`: the size for .nii; for .nii.gz
    the gzip trailer's size field (O(1)) when it says exactly `need` (a cut-off file has lost its trailer:
    its last 4 bytes are compressed data, equal by chance with odds 2**-32), else a streamed decompression
    (no array is built; a corrupt or cut-off stream counts as short)."""
    if not path.name.endswith(".gz"):
        return path.stat().st_size
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        # the size field is only believed when deflate could expand the file that far (at most ~1032:1):
        # a forged trailer on a tiny file is streamed, and found short
        if 18 <= f.tell() and need <= f.tell() * DEFLATE_MAX_RATIO:  # 18: gzip header + trailer
            f.seek(-4, os.SEEK_END)
            if int.from_bytes(f.read(4), "little") == need % 2**32:
                return need
    n = 0
    try:
        with gzip.open(path, "rb") as f:
            while True:
                chunk = f.read(1 << 16)
                if not chunk:
                    return n
                n += len(chunk)
    except (EOFError, OSError, zlib.error):  # n: what decompressed before the stream broke off
        return min(n, need - 1)


def _count_nonfinite(path: Path, img: sitk.Image, nii_float: bool) -> int:
    """NaN/inf voxels. ITK's NIfTI reader silently turns NaN into 0, so float NIfTI files are checked on
    disk with nibabel (integer files cannot hold NaN)."""
    if nii_float:
        import nibabel as nib

        try:
            arr = np.asanyarray(nib.load(str(path)).dataobj)
        except Exception as e:  # ITK read a truncated .gz without complaint; nibabel does not
            raise WMHLocError(f"{path}: cannot read image (truncated or not a valid image: "
                              f"{type(e).__name__}: {str(e)[:120]})") from None
    elif path.name.endswith(NIFTI_SUFFIXES):
        return 0
    elif img.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        arr = sitk.GetArrayViewFromImage(img)
    else:
        return 0
    return int(arr.size - np.isfinite(arr).sum())


def read_array(path: str | os.PathLike, **kw) -> tuple[np.ndarray, sitk.Image]:
    """read_image + its voxel array (z, y, x order, as SimpleITK gives it)."""
    img = read_image(path, **kw)
    return sitk.GetArrayFromImage(img), img


def read_labels(path: str | os.PathLike, *, allowed: Iterable[int] | None = None,
                what: str = "label map") -> tuple[np.ndarray, sitk.Image]:
    """Read an integer label map; values must be whole numbers (stored as int or float) in `allowed`."""
    arr, img = read_array(path, what=what)
    if arr.dtype.kind == "f":
        rounded = np.rint(arr)
        if np.abs(arr - rounded).max(initial=0) > 1e-3:
            raise WMHLocError(f"{path}: {what} holds non-integer values")
        arr = rounded
    arr = arr.astype(np.int16 if arr.max(initial=0) < 32767 and arr.min(initial=0) > -32768 else np.int32)
    if allowed is not None:
        allowed = np.asarray(sorted(set(int(a) for a in allowed)))
        present = np.unique(arr)
        bad = present[~np.isin(present, allowed)]
        if bad.size:
            raise WMHLocError(f"{path}: {what} has unexpected label values {bad.tolist()[:10]} "
                              f"(allowed: {_fmt_range(allowed)})")
    return arr, img


def _fmt_range(values: np.ndarray) -> str:
    v = values.tolist()
    if len(v) > 2 and v == list(range(v[0], v[-1] + 1)):
        return f"{v[0]}..{v[-1]}"
    return ", ".join(map(str, v))


def geometry(img: sitk.Image) -> dict:
    return {"size": list(img.GetSize()), "spacing": list(img.GetSpacing()),
            "origin": list(img.GetOrigin()), "direction": list(img.GetDirection())}


def check_same_geometry(ref: sitk.Image, ref_path, other: sitk.Image, other_path, *,
                        spacing_tol: float = 1e-3, origin_tol: float = 1e-2, direction_tol: float = 1e-3) -> None:
    """Raise WMHLocError naming `other_path` when its grid differs from `ref`'s (size, spacing, origin, direction)."""
    if ref.GetSize() != other.GetSize():
        raise WMHLocError(f"{other_path}: size {other.GetSize()} differs from {ref_path} {ref.GetSize()}")
    sp_a, sp_b = np.array(ref.GetSpacing()), np.array(other.GetSpacing())
    if np.abs(sp_a - sp_b).max() > spacing_tol * max(1.0, sp_a.max()):
        raise WMHLocError(f"{other_path}: spacing {_vec(sp_b)} differs from {ref_path} "
                          f"{_vec(sp_a)}")
    o_a, o_b = np.array(ref.GetOrigin()), np.array(other.GetOrigin())
    if np.abs(o_a - o_b).max() > origin_tol * max(1.0, sp_a.max()):
        raise WMHLocError(f"{other_path}: origin {_vec(o_b)} differs from {ref_path} "
                          f"{_vec(o_a)}")
    d_a, d_b = np.array(ref.GetDirection()), np.array(other.GetDirection())
    if np.abs(d_a - d_b).max() > direction_tol:
        raise WMHLocError(f"{other_path}: direction differs from {ref_path}")


def _vec(v) -> str:
    return "(" + ", ".join(f"{float(x):.4g}" for x in v) + ")"


def voxel_volume_mm3(img: sitk.Image) -> float:
    return float(np.prod(img.GetSpacing()))


def write_image(img: sitk.Image, path: str | os.PathLike, *, overwrite: bool = False,
                compress: bool = True) -> Path:
    path = Path(path)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    with atomic_file(path, overwrite=overwrite, suffix=suffix) as tmp:
        sitk.WriteImage(img, str(tmp), compress)
    return path


def array_to_image(arr: np.ndarray, like: sitk.Image) -> sitk.Image:
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(like)
    return out


def to_float32(img: sitk.Image, path, what: str = "image") -> sitk.Image:
    """`img` as float32 (nnU-Net's input type), checked after the cast: finite float64 values beyond float32's
    range (about 3.4e38) become inf, which ITK would read back as 0."""
    if img.GetPixelID() == sitk.sitkFloat32:
        return img
    out = sitk.Cast(img, sitk.sitkFloat32)
    arr = sitk.GetArrayViewFromImage(out)
    n = int(arr.size - np.isfinite(arr).sum())
    if n:
        raise WMHLocError(f"{path}: {what} has {n} voxels beyond float32's range (|value| > 3.4e38); "
                          "rescale the image")
    return out
