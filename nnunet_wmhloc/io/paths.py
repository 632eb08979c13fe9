"""Paths given by the user: existence and kind checks, folder listings, names used as path parts.

Every user-facing problem is raised as `WMHLocError` with a one-line message that names the file;
`nnunet_wmhloc.cli.run` turns it into `error: ...` on stderr and a non-zero exit.
"""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Callable, Iterable, Sequence

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


# image formats ITK writes that the folder readers do not take (they read NIfTI only)
OTHER_IMAGE_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr", ".hdr", ".img", ".mnc", ".nii.bz2", ".nii.zst", ".dcm",
                        ".tif", ".tiff", ".vtk")


def list_inputs(folder: str | os.PathLike, suffixes: Sequence[str] = NIFTI_SUFFIXES, *,
                what: str = "input") -> list[Path]:
    """The entries of `folder` named `*<suffix>` (hidden ones skipped), sorted. An entry with such a name
    that is not a readable file (broken link, link loop, a folder) is an error naming it: a subject must
    never silently drop out of the results."""
    folder = check_path(folder, what=f"{what} folder", kind="dir")
    out, unread = [], []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if not p.name.endswith(tuple(suffixes)):
            if p.name.lower().endswith(OTHER_IMAGE_SUFFIXES):
                unread.append(p.name)
            continue
        out.append(check_path(p, what=f"entry of the {what} folder"))
    if unread:  # a subject given as .mha would silently drop out of the results
        raise WMHLocError(f"{folder}: {len(unread)} image(s) in a format not read here ({few(unread)}); only "
                          f"{'/'.join(suffixes)} are read: convert them (e.g. SimpleITK) or move them out")
    return out


def files_by_key(paths: Iterable[Path], key: Callable[[Path], str | None],
                 duplicate: Callable[[Path, str, Path], str]) -> dict[str, Path]:
    """{key(p): p} for the paths whose key is not None; a second path with a key already seen is a
    WMHLocError with the message duplicate(path, key, first path)."""
    out: dict[str, Path] = {}
    for p in paths:
        k = key(p)
        if k is None:
            continue
        if k in out:
            raise WMHLocError(duplicate(p, k, out[k]))
        out[k] = p
    return out


def safe_name(value: str, *, what: str, where: str = "") -> str:
    """A subject id or dataset name used as a file or folder name: letters, digits, '-', '_', '.' only,
    starting with a letter or digit (so never blank, '..', or a path)."""
    v = value.strip() if isinstance(value, str) else ""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v) or ".." in v:
        raise WMHLocError(f"{where + ': ' if where else ''}{what} {value!r}: must be letters, digits, '-', '_' "
                          "or '.' (it names files; no blanks, slashes or '..')")
    return v


def is_number(text: str) -> bool:
    """ASCII digits only: str.isdigit() is also True for '²' or '٣', which int() refuses."""
    return text.isascii() and text.isdigit()


def few(items, n: int = 5) -> str:
    """A short list for a one-line message: the first `n` items, then 'and N more'."""
    items = [str(i) for i in items]
    head = ", ".join(items[:n])
    return head + (f" and {len(items) - n} more" if len(items) > n else "")
