"""Outputs: checks before anything is written, folders we own (only those are ever replaced), atomic
files and folders (a temporary sibling renamed into place), text and JSON."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from nnunet_wmhloc.io.paths import WMHLocError
from nnunet_wmhloc.io.temps import claim, hidden_prefix, sweep_stale

# the marker a folder made by one of our commands holds: only such folders (or empty ones) are ever replaced
OWNER_MARKER = ".wmhloc_output"


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


def not_owned_error(path: Path) -> WMHLocError:
    return WMHLocError(f"{path}: exists and was not made by nnunet_wmhloc (no {OWNER_MARKER} inside); "
                       "refusing to replace it: move it away or choose another output")


def remove_owned(path: str | os.PathLike) -> None:
    """Delete a folder only when one of our commands made it (or it is empty)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir() or not is_owned(path):
        raise not_owned_error(path)
    shutil.rmtree(path)


def make_owned_dir(path: str | os.PathLike) -> Path:
    """An empty folder that is ours: what a previous attempt left in it is removed (only if it was ours)."""
    path = Path(path)
    remove_owned(path)
    path.mkdir(parents=True)
    mark_owned(path)
    return path


def _resolved(path, what: str) -> Path:
    try:
        return Path(os.path.abspath(path)).resolve()
    except (RuntimeError, OSError) as e:  # a symbolic link loop (RuntimeError before Python 3.13)
        raise WMHLocError(f"{path}: {what} cannot be resolved ({e.__class__.__name__}: "
                          f"{getattr(e, 'strerror', None) or 'symbolic link loop'})") from None


def check_not_input(path: str | os.PathLike, inputs: Iterable, *, flag: str = "--output") -> Path:
    """Refuse an output equal to, containing or inside one of `inputs` (None entries skipped); returns
    the output's resolved path."""
    p = _resolved(path, flag)
    for inp in inputs:
        if inp is None or str(inp) == "":
            continue
        q = _resolved(inp, "input")
        if p == q:
            raise WMHLocError(f"{path}: {flag} is also an input ({inp}); choose another output")
        if p in q.parents:
            raise WMHLocError(f"{path}: {flag} contains the input {inp}; choose another output")
        if q in p.parents:
            raise WMHLocError(f"{path}: {flag} lies inside the input {inp}; choose another output")
    return p


def check_output(path: str | os.PathLike, *, overwrite: bool, inputs: Iterable = (), kind: str = "dir",
                 flag: str = "--output", reuse: bool = False) -> Path:
    """Fail early, with one line, for an output that cannot or must not be written:
    - it equals, contains or lies inside one of `inputs` (replacing it would destroy the input);
    - it is (or contains) the current folder;
    - it exists: without `overwrite`, as the wrong kind, or (a folder) not made by us;
    - a file sits where a parent folder should be, or the nearest existing parent is not writable.
    `reuse`: an existing folder of ours is kept as it is (a command that continues an earlier run in it)."""
    path = Path(path)
    p = check_not_input(path, inputs, flag=flag)
    exists = path.exists() or path.is_symlink()
    if exists and reuse:
        if not path.is_dir():
            raise WMHLocError(f"{path}: exists and is not a folder ({flag} must be a folder)")
        if not is_owned(path):
            raise not_owned_error(path)
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
                raise not_owned_error(path)
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


def check_overwrite(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise WMHLocError(f"{path}: already exists (use --overwrite to replace it)")


def _tmp_sibling(path: Path, suffix: str = "") -> Path:
    """A hidden temporary beside `path`, named with our process tag within the file-name limit, after
    sweeping the temporaries dead runs left in that folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=hidden_prefix(path, ".tmp" + suffix), suffix=".tmp" + suffix,
                               dir=path.parent)
    os.close(fd)
    _follow_umask(Path(tmp), folder=False)
    return Path(tmp)


def _made_meanwhile(path: Path) -> WMHLocError:
    return WMHLocError(f"{path}: was created by another command meanwhile; not replaced (use --overwrite to "
                       "replace it)")


def _place_file(tmp: Path, path: Path, overwrite: bool) -> None:
    """Rename `tmp` onto `path`; without `overwrite` never onto a file that appeared meanwhile (a hard link
    fails if the name exists; where links are not supported, a last look instead)."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise _made_meanwhile(path) from None
    except OSError:
        if path.exists():
            raise _made_meanwhile(path) from None
        os.replace(tmp, path)


@contextlib.contextmanager
def _parents(path: Path) -> Iterator[None]:
    """Create `path`'s missing parent folders; remove them again (those still empty) when the block fails,
    so a refused input leaves no empty output root behind."""
    made, p = [], path.parent
    while not p.exists() and p != p.parent:
        made.append(p)
        p = p.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for d in made:  # innermost first
            with contextlib.suppress(OSError):
                d.rmdir()
        raise


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, *, overwrite: bool = False, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`, on error removed.
    `path` is claimed for the block: a second writer of it meanwhile stops in one line.

    `suffix` keeps the ending writers infer the format from (e.g. '.nii.gz', '.png')."""
    path = Path(path)
    check_output(path, overwrite=overwrite, kind="file")
    with _parents(path), claim(path):
        tmp = _tmp_sibling(path, suffix)
        try:
            yield tmp
            _place_file(tmp, path, overwrite)
        finally:
            if tmp.exists():
                tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder in a temporary sibling and move it into place only when the block succeeds.

    An existing `path` is refused unless `overwrite`, and replaced only when one of our commands made it
    (OWNER_MARKER) or it is empty, and only after the new one is built."""
    path = Path(path)
    check_output(path, overwrite=overwrite, kind="dir")
    with _parents(path), claim(path):
        sweep_stale(path.parent)
        tmp = Path(tempfile.mkdtemp(prefix=hidden_prefix(path, ".tmp"), suffix=".tmp", dir=path.parent))
        try:
            _follow_umask(tmp, folder=True)
            mark_owned(tmp)
            yield tmp
            _place_dir(tmp, path, overwrite)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def _place_dir(tmp: Path, path: Path, overwrite: bool) -> None:
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise _made_meanwhile(path)
        if not is_owned(path):  # made meanwhile by someone else
            raise not_owned_error(path)
        old = Path(tempfile.mkdtemp(prefix=hidden_prefix(path, ".old"), suffix=".old", dir=path.parent))
        os.replace(path, old / "x")
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        os.rename(tmp, path)  # onto a folder made this instant: fails unless it is empty
    except OSError as e:
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise _made_meanwhile(path) from None
        raise


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
