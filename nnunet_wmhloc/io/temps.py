"""Temporaries that say whose they are, fit the file-name limit, and are swept once their run is dead;
exclusive claims on an output while a command writes it.

A temporary's name carries `w<pid>h<host>-`: the process that made it and a tag of the machine's name. A later
run removes the ones of its own machine whose process is gone (`kill -9`, power loss); a temporary of a live
process, of another machine, or not made by us (no tag) is never touched. A claim is a lock file beside
the output, made with O_EXCL: a second command writing the same output at the same time stops in one line;
the lock of a dead process is taken over.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Iterator

from nnunet_wmhloc.io.paths import WMHLocError

LOCK_TAIL = ".wmhloc-lock"
NAME_MAX = 255  # bytes in one file name on Linux, macOS and Windows file systems
HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:4]
_TAGGED = re.compile(r"w(?P<pid>\d+)h(?P<host>[0-9a-f]{4})-[a-z0-9_]{8}")
_swept: set[tuple[str, str]] = set()  # (folder, prefix) swept by this process: once is enough


def tag() -> str:
    return f"w{os.getpid()}h{HOST}-"


def fit_name(name: str, room: int) -> str:
    """`name`, or a shortened form ending in a hash of it, of at most `room` UTF-8 bytes."""
    raw = name.encode("utf-8")
    if len(raw) <= room:
        return name
    h = "~" + hashlib.sha1(raw).hexdigest()[:8]
    cut = raw[: max(room - len(h), 1)].decode("utf-8", "ignore")  # never half a character
    return cut + h


def hidden_prefix(path: Path, tail: str) -> str:
    """The prefix of a hidden sibling `.<name>.<tag><8 random><tail>` that stays within NAME_MAX."""
    fixed = len(f"..{tag()}".encode()) + 8 + len(tail.encode())
    return f".{fit_name(path.name, NAME_MAX - fixed)}.{tag()}"


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OSError:
        return True
    return True


def _stale(name: str, pattern: re.Pattern) -> bool:
    m = pattern.fullmatch(name)
    return bool(m) and m["host"] == HOST and not pid_alive(int(m["pid"]))


def _remove(p: Path) -> bool:
    try:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
        return True
    except OSError:
        return False


def sweep_stale(folder: str | os.PathLike, prefix: str = ".", *, once: bool = True) -> list[Path]:
    """Remove the temporaries in `folder` named `<prefix>...w<pid>h<host>-XXXXXXXX...` (and, for hidden
    siblings, the claims) made on this machine by processes that are gone; returns what was removed. With
    `once`, a folder is swept once per process."""
    folder = Path(folder)
    key = (str(folder.resolve()) if folder.exists() else str(folder), prefix)
    if once and key in _swept:
        return []
    _swept.add(key)
    pattern = re.compile(re.escape(prefix) + r".*?" + _TAGGED.pattern + r"(\.(tmp|old)[^/]*)?")
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for e in entries:
        if not e.name.startswith(prefix):
            continue
        if e.name.endswith(LOCK_TAIL) and prefix == ".":
            held = _holder(Path(e.path))
            stale = held is not None and held[1] == HOST and not pid_alive(held[0])
        else:
            stale = _stale(e.name, pattern)
        if stale and _remove(Path(e.path)):
            removed.append(Path(e.path))
    return removed


def new_temp_dir(prefix: str, dir: str | os.PathLike | None = None) -> Path:
    """mkdtemp named `<prefix><tag>XXXXXXXX` (in `dir`, default $TMPDIR), after sweeping the stale folders of
    the same prefix there. The caller removes it."""
    where = Path(dir) if dir is not None else Path(tempfile.gettempdir())
    sweep_stale(where, prefix)
    return Path(tempfile.mkdtemp(prefix=prefix + tag(), dir=where))


@contextlib.contextmanager
def temp_dir(prefix: str, dir: str | os.PathLike | None = None) -> Iterator[Path]:
    """A private temporary folder (like tempfile.TemporaryDirectory) named with our tag, after sweeping the
    stale ones of the same prefix (in `dir`, default $TMPDIR); removed when the block ends."""
    tmp = new_temp_dir(prefix, dir)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _lock_path(path: Path) -> Path:
    return path.parent / f".{fit_name(path.name, NAME_MAX - 1 - len(LOCK_TAIL))}{LOCK_TAIL}"


def _holder(lock: Path) -> tuple[int, str] | None:
    try:
        pid, host = lock.read_text(encoding="utf-8").split()[:2]
        return int(pid), host
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def claim(path: str | os.PathLike) -> Iterator[None]:
    """Hold `path` for the block: a second command that claims it meanwhile stops in one line."""
    path = Path(path)
    lock = _lock_path(path)
    me = f"{os.getpid()} {HOST}\n"
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            held = _holder(lock)
            if held is None:  # being written this instant (young), or garbage (old)
                try:
                    young = time.time() - lock.stat().st_mtime < 10
                except FileNotFoundError:
                    continue
                held = (os.getpid() if young else 0, HOST)
            pid, host = held
            if pid == 0 or (host == HOST and not pid_alive(pid)):
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()  # its process is gone
                continue
            who = "this process" if pid == os.getpid() and host == HOST else f"process {pid}"
            where = "" if host == HOST else " on another machine"
            raise WMHLocError(f"{path}: being written by {who}{where} right now (lock {lock.name}); wait for it "
                              "to finish, or remove the lock if that run is gone") from None
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EROFS, errno.ENOENT, errno.ENOTDIR):
                raise WMHLocError(f"{path}: cannot be created ({e.strerror})") from None
            raise
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(me)
        break
    else:
        raise WMHLocError(f"{path}: could not take its lock {lock.name} (contended); try again")
    try:
        yield
    finally:
        if _holder(lock) == (os.getpid(), HOST):
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
