"""Checked image reading and atomic output, shared by every command.

Every user-facing problem is raised as `WMHLocError` with a one-line message that names the file;
`nnunet_wmhloc.cli.run` turns it into `error: ...` on stderr and a non-zero exit.
"""
from __future__ import annotations

import contextlib
import csv
import gzip
import json
import os
import shutil
import stat
import tempfile
import zlib
from io import StringIO
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import SimpleITK as sitk

NIFTI_SUFFIXES = (".nii.gz", ".nii")
# the marker a folder made by one of our commands holds: only such folders (or empty ones) are ever replaced
OWNER_MARKER = ".wmhloc_output"
# ITK prints multi-line warnings (e.g. "zero spacing, using 1") on stderr: every problem that matters is
# checked here and reported as one line instead
sitk.ProcessObject.SetGlobalWarningDisplay(False)


class WMHLocError(Exception):
    """A problem with the user's input or options: reported as one line, never as a traceback."""


def strip_nifti(name: str | os.PathLike) -> str:
    """File name without its .nii/.nii.gz ending."""
    name = Path(name).name
    for s in NIFTI_SUFFIXES:
        if name.endswith(s):
            return name[: -len(s)]
    return name


# ----------------------------------------------------------------------------------------- paths
def check_path(path: str | os.PathLike, *, what: str, kind: str = "file") -> Path:
    """`path` exists and is a `kind` ('file' or 'dir'); else WMHLocError saying which: not found, a broken
    symbolic link, a link loop, or the wrong kind of entry."""
    path = Path(path)
    try:
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        if path.is_symlink():
            raise WMHLocError(f"{path}: {what} is a broken symbolic link (its target does not exist)") from None
        raise WMHLocError(f"{path}: {what} not found") from None
    except OSError as e:  # symbolic link loop, permission denied, name too long
        raise WMHLocError(f"{path}: {what} cannot be opened ({e.strerror or e})") from None
    if kind == "file" and not stat.S_ISREG(st.st_mode):
        got = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise WMHLocError(f"{path}: {what} is {got}, expected a file")
    if kind == "dir" and not stat.S_ISDIR(st.st_mode):
        raise WMHLocError(f"{path}: {what} is a file, expected a folder")
    if not os.access(path, os.R_OK | (os.X_OK if kind == "dir" else 0)):
        raise WMHLocError(f"{path}: {what} is not readable (permission denied)")
    return path


def list_inputs(folder: str | os.PathLike, suffixes: Sequence[str] = NIFTI_SUFFIXES, *,
                what: str = "input") -> list[Path]:
    """The entries of `folder` named `*<suffix>` (hidden ones skipped), sorted. An entry with such a name
    that is not a readable file (broken link, link loop, a folder) is an error naming it: a subject must
    never silently drop out of the results."""
    folder = check_path(folder, what=f"{what} folder", kind="dir")
    out = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.name.endswith(tuple(suffixes)):
            continue
        out.append(check_path(p, what=f"entry of the {what} folder"))
    return out


def safe_name(value: str, *, what: str, where: str = "") -> str:
    """A subject id or dataset name used as a file or folder name: letters, digits, '-', '_', '.' only,
    starting with a letter or digit (so never blank, '..', or a path)."""
    import re

    v = value.strip() if isinstance(value, str) else ""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v) or ".." in v:
        raise WMHLocError(f"{where + ': ' if where else ''}{what} {value!r}: must be letters, digits, '-', '_' "
                          "or '.' (it names files; no blanks, slashes or '..')")
    return v


def is_number(text: str) -> bool:
    """ASCII digits only: str.isdigit() is also True for '²' or '٣', which int() refuses."""
    return text.isascii() and text.isdigit()


# ----------------------------------------------------------------------------------------- reading
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
    every voxel (ITK reads a truncated .nii.gz without complaint). Returns whether the data are float: those
    are read whole by nibabel for the NaN count (ITK turns NaN into 0), which proves completeness too."""
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
    bad = [v for v in pixdim if not (np.isfinite(v) and v > 0)]
    if bad:
        raise WMHLocError(f"{path}: {what} has voxel size {_vec(pixdim)} in its header (zero or negative "
                          "spacing; fix the header, e.g. with nibabel or fslmodhd)")
    if dtype.kind == "f" and not allow_nonfinite:
        return True
    need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    have = _nifti_bytes(path, need)
    if have < need:
        raise WMHLocError(f"{path}: {what} is truncated ({have} of {need} bytes of image data; "
                          "copy it again)")
    return dtype.kind == "f"


def _nifti_bytes(path: Path, need: int) -> int:
    """Bytes of the (decompressed) file, as far as they matter for `need`: the size for .nii; for .nii.gz
    the gzip trailer's size field (O(1)) when it says exactly `need` (a cut-off file has lost its trailer:
    its last 4 bytes are compressed data, equal by chance with odds 2**-32), else a streamed decompression
    (no array is built; a corrupt or cut-off stream counts as short)."""
    if not path.name.endswith(".gz"):
        return path.stat().st_size
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() >= 18:  # smallest gzip member: 10-byte header + 8-byte trailer
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


# ----------------------------------------------------------------------------------------- writing
def _umask() -> int:
    m = os.umask(0o022)
    os.umask(m)
    return m


def _follow_umask(path: Path, *, folder: bool) -> None:
    """mkstemp/mkdtemp create 0600/0700 whatever the umask: give the result the mode open()/mkdir() would,
    so colleagues on a shared server can read the results when the umask lets them."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


def is_owned(path: Path) -> bool:
    """A folder one of our commands made (it holds OWNER_MARKER), or an empty one."""
    try:
        return (path / OWNER_MARKER).is_file() or not any(path.iterdir())
    except OSError:
        return False


def mark_owned(folder: Path) -> None:
    (folder / OWNER_MARKER).write_text("made by nnunet_wmhloc; a re-run may replace this folder\n",
                                       encoding="utf-8")


def _not_owned(path: Path) -> WMHLocError:
    return WMHLocError(f"{path}: exists and was not made by nnunet_wmhloc (no {OWNER_MARKER} inside); "
                       "refusing to replace it: move it away or choose another output")


def remove_owned(path: str | os.PathLike) -> None:
    """Delete a folder only when one of our commands made it (or it is empty)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir() or not is_owned(path):
        raise _not_owned(path)
    shutil.rmtree(path)


def make_owned_dir(path: str | os.PathLike) -> Path:
    """An empty folder that is ours: what a previous attempt left in it is removed (only if it was ours)."""
    path = Path(path)
    remove_owned(path)
    path.mkdir(parents=True)
    mark_owned(path)
    return path


def check_not_input(path: str | os.PathLike, inputs: Iterable, *, flag: str = "--output") -> Path:
    """Refuse an output equal to, containing or inside one of `inputs` (None entries skipped); returns
    the output's resolved path."""
    p = Path(os.path.abspath(path)).resolve()
    for inp in inputs:
        if inp is None or str(inp) == "":
            continue
        q = Path(os.path.abspath(inp)).resolve()
        if p == q:
            raise WMHLocError(f"{path}: {flag} is also an input ({inp}); choose another output")
        if p in q.parents:
            raise WMHLocError(f"{path}: {flag} contains the input {inp}; choose another output")
        if q in p.parents:
            raise WMHLocError(f"{path}: {flag} lies inside the input {inp}; choose another output")
    return p


def check_output(path: str | os.PathLike, *, overwrite: bool, inputs: Iterable = (), kind: str = "dir",
                 flag: str = "--output", resume: bool = False) -> Path:
    """Fail early, with one line, for an output that cannot or must not be written:
    - it equals, contains or lies inside one of `inputs` (replacing it would destroy the input);
    - it is (or contains) the current folder;
    - it exists: without `overwrite`, as the wrong kind, or (a folder) not made by us;
    - a file sits where a parent folder should be, or the nearest existing parent is not writable.
    `resume`: a pipeline folder that re-runs continue (ours, or holding `stages/` of an earlier run)."""
    path = Path(path)
    p = check_not_input(path, inputs, flag=flag)
    exists = path.exists() or path.is_symlink()
    if exists and resume:
        if not path.is_dir():
            raise WMHLocError(f"{path}: exists and is not a folder ({flag} must be a folder)")
        if not (is_owned(path) or (path / "stages").is_dir()):
            raise _not_owned(path)
    elif exists:
        cwd = Path.cwd().resolve()
        if p == cwd or p in cwd.parents:
            raise WMHLocError(f"{path}: {flag} is the current folder or contains it; choose a new folder")
        if not overwrite:
            raise WMHLocError(f"{path}: already exists (use --overwrite to replace it)")
        if kind == "dir":
            if path.is_symlink() or not path.is_dir():
                raise WMHLocError(f"{path}: exists and is not a folder ({flag} must be a folder)")
            if not is_owned(path):
                raise _not_owned(path)
        elif path.is_dir():
            raise WMHLocError(f"{path}: is a folder ({flag} must be a file)")
    parent = p.parent
    while not parent.exists():
        if parent.is_symlink():
            raise WMHLocError(f"{parent}: broken symbolic link in the path of {path}")
        parent = parent.parent
    if not parent.is_dir():
        raise WMHLocError(f"{parent}: is a file, so {path} cannot be created ({flag})")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise WMHLocError(f"{parent}: not writable, so {path} cannot be created ({flag})")
    return path


def _check_overwrite(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise WMHLocError(f"{path}: already exists (use --overwrite to replace it)")


def _tmp_sibling(path: Path, suffix: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    _follow_umask(Path(tmp), folder=False)
    return Path(tmp)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, *, overwrite: bool = False, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`, on error removed.

    `suffix` keeps the ending writers infer the format from (e.g. '.nii.gz', '.png')."""
    path = Path(path)
    check_output(path, overwrite=overwrite, kind="file")
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
    """Read a CSV as dict rows; missing file or missing columns raise WMHLocError naming the file.

    Excel's exports are read too: UTF-8 with or without BOM, UTF-16 (with BOM), else Windows-1252/Latin-1."""
    path = check_path(path, what="CSV file")
    text = _decode_table(path)
    reader = csv.DictReader(StringIO(text, newline=""))  # newline="": quoted line breaks stay in their field
    try:
        cols = reader.fieldnames or []
        missing = [c for c in required if c not in cols]
        if missing:
            raise WMHLocError(f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(cols) or 'none'})")
        return [dict(r) for r in reader]
    except csv.Error as e:
        raise WMHLocError(f"{path}: line {reader.line_num}: not a valid CSV ({e})") from None


def _decode_table(path: Path) -> str:
    data = path.read_bytes()
    if data[:4] == b"PK\x03\x04":
        raise WMHLocError(f"{path}: is a zip/Excel file, not a CSV (save it as CSV)")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as e:
            raise WMHLocError(f"{path}: not valid UTF-16 text ({e.reason} at byte {e.start})") from None
    if b"\x00" in data:
        raise WMHLocError(f"{path}: holds NUL bytes: a binary file or UTF-16 without byte-order mark, not a "
                          "CSV (save it as CSV UTF-8)")
    for enc in ("utf-8-sig", "cp1252", "latin-1"):
        try:
            return data.decode(enc)
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes any bytes")


def read_json(path: str | os.PathLike, *, what: str = "JSON file", expect: type | None = dict):
    """Parsed JSON; a missing, unreadable or malformed file (or one holding the wrong kind of value) is a
    one-line WMHLocError naming it."""
    path = check_path(path, what=what)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise WMHLocError(f"{path}: {what} is not valid JSON ({str(e)[:120]})") from None
    if expect is not None and not isinstance(obj, expect):
        raise WMHLocError(f"{path}: {what} holds a JSON {type(obj).__name__}, expected a {expect.__name__}")
    return obj


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder in a temporary sibling and move it into place only when the block succeeds.

    An existing `path` is refused unless `overwrite`, and replaced only when one of our commands made it
    (OWNER_MARKER) or it is empty, and only after the new one is built."""
    path = Path(path)
    check_output(path, overwrite=overwrite, kind="dir")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        _follow_umask(tmp, folder=True)
        mark_owned(tmp)
        yield tmp
        if path.exists():
            if not is_owned(path):  # made meanwhile by someone else
                raise _not_owned(path)
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
    folder = check_path(folder, what=what, kind="dir")
    suffix = pattern[1:] if pattern.startswith("*") and "*" not in pattern[1:] else None
    if suffix is not None:
        files = list_inputs(folder, (suffix,), what=what.removesuffix(" folder"))
    else:
        files = sorted(p for p in folder.glob(pattern) if not p.name.startswith("."))
    if not files:
        raise WMHLocError(f"{folder}: no {pattern} files in {what}")
    return files
