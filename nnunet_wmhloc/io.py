"""Checked image reading and atomic output, shared by every command.

Every user-facing problem is raised as `WMHLocError` with a one-line message that names the file;
`nnunet_wmhloc.cli.run` turns it into `error: ...` on stderr and a non-zero exit.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import SimpleITK as sitk

NIFTI_SUFFIXES = (".nii.gz", ".nii")


class WMHLocError(Exception):
    """A problem with the user's input or options: reported as one line, never as a traceback."""


def strip_nifti(name: str | os.PathLike) -> str:
    """File name without its .nii/.nii.gz ending."""
    name = Path(name).name
    for s in NIFTI_SUFFIXES:
        if name.endswith(s):
            return name[: -len(s)]
    return name


# ----------------------------------------------------------------------------------------- reading
def read_image(path: str | os.PathLike, *, what: str = "image", dim: int = 3,
               allow_nonfinite: bool = False) -> sitk.Image:
    """Read a scalar image and check it is `dim`-D and finite; raise WMHLocError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise WMHLocError(f"{path}: {what} not found")
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        reason = next((ln.strip() for ln in first if "ERROR" in ln or "rror" in ln), "unreadable")
        raise WMHLocError(f"{path}: cannot read {what} (truncated or not a valid image: {reason[:160]})") from None
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
    if not allow_nonfinite:
        n = _count_nonfinite(path, img)
        if n:
            raise WMHLocError(f"{path}: {what} has {n} NaN/inf voxels")
    return img


def _count_nonfinite(path: Path, img: sitk.Image) -> int:
    """NaN/inf voxels. ITK's NIfTI reader silently turns NaN into 0, so float NIfTI files are checked on
    disk with nibabel (integer files cannot hold NaN)."""
    if path.name.endswith(NIFTI_SUFFIXES):
        import nibabel as nib

        try:
            nii = nib.load(str(path))
            if nii.header.get_data_dtype().kind != "f":
                return 0
            arr = np.asanyarray(nii.dataobj)
        except Exception as e:  # ITK read a truncated .gz without complaint; nibabel does not
            raise WMHLocError(f"{path}: cannot read image (truncated or not a valid image: "
                              f"{type(e).__name__}: {str(e)[:120]})") from None
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


# ----------------------------------------------------------------------------------------- writing
def _check_overwrite(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise WMHLocError(f"{path}: already exists (use --overwrite to replace it)")


def _tmp_sibling(path: Path, suffix: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, *, overwrite: bool = False, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`, on error removed.

    `suffix` keeps the ending writers infer the format from (e.g. '.nii.gz', '.png')."""
    path = Path(path)
    _check_overwrite(path, overwrite)
    tmp = _tmp_sibling(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


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


def write_text(text: str, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    with atomic_file(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(obj, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    return write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n", path,
                      overwrite=overwrite)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def write_csv(rows: Sequence[Mapping], path: str | os.PathLike, *, columns: Sequence[str] | None = None,
              overwrite: bool = False) -> Path:
    """Write dict rows as CSV (columns = first row's keys unless given); floats with 6 significant digits."""
    if columns is None:
        columns = list(rows[0].keys()) if rows else []
    with atomic_file(path, overwrite=overwrite) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="raise")
            w.writeheader()
            for r in rows:
                w.writerow({k: _csv_value(r.get(k, "")) for k in columns})
    return Path(path)


def _csv_value(v):
    if isinstance(v, (float, np.floating)):
        return "" if not np.isfinite(v) else f"{float(v):.6g}"
    if isinstance(v, np.integer):
        return int(v)
    return v


def read_csv(path: str | os.PathLike, *, required: Sequence[str] = ()) -> list[dict]:
    """Read a CSV as dict rows; missing file or missing columns raise WMHLocError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise WMHLocError(f"{path}: CSV file not found")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        missing = [c for c in required if c not in cols]
        if missing:
            raise WMHLocError(f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(cols) or 'none'})")
        return [dict(r) for r in reader]


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder in a temporary sibling and move it into place only when the block succeeds.

    An existing `path` is refused unless `overwrite`; then it is replaced only after the new one is built."""
    path = Path(path)
    _check_overwrite(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def find_files(folder: str | os.PathLike, pattern: str = "*.nii.gz", *, what: str = "input folder") -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise WMHLocError(f"{folder}: {what} not found")
    files = sorted(p for p in folder.glob(pattern) if not p.name.startswith("."))
    if not files:
        raise WMHLocError(f"{folder}: no {pattern} files in {what}")
    return files
