"""What the hostile-input tests (test_hostile_*.py, issue #16) share: tiny label maps, an in-process command
call that checks the one-line-error promise, and snapshots that prove the user's files untouched."""
from __future__ import annotations

import hashlib
import importlib
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_wmhloc.cli import commands
from nnunet_wmhloc.io import OWNER_MARKER

SHAPE = (6, 12, 12)  # z, y, x: tiny, still 3D


MODULES = commands()  # command -> module, from this distribution's console_scripts entry points


def write_map(path: Path, arr: np.ndarray | None = None, *, spacing=(1.0, 1.0, 2.0), dtype=np.uint8) -> Path:
    """A label map on the tiny grid (default: a lesion blob labelled 1)."""
    if arr is None:
        arr = np.zeros(SHAPE, dtype)
        arr[2:4, 3:7, 3:7] = 1
    img = sitk.GetImageFromArray(np.asarray(arr).astype(dtype))
    img.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), True)
    return path


def region_map() -> np.ndarray:
    """Left half region 1, right half region 18 (all WM)."""
    arr = np.zeros(SHAPE, np.uint8)
    arr[:, :, :6] = 1
    arr[:, :, 6:] = 18
    return arr


def seg_folders(root: Path, subjects=("s01", "s02")) -> tuple[Path, Path]:
    """lesions/ and regions/ folders for wmhloc_localize."""
    for s in subjects:
        write_map(root / "lesions" / f"{s}.nii.gz")
        write_map(root / "regions" / f"{s}.nii.gz", region_map())
    return root / "lesions", root / "regions"


def call(command: str, argv, capfd) -> tuple[int, str]:
    """Run a command's main(argv) in-process; returns (exit code, stderr) and checks that a failure is
    one `error:` line (no traceback, no ITK/niftilib chatter on the file descriptor either)."""
    mod = importlib.import_module(MODULES[command])
    capfd.readouterr()
    code = mod.main([str(a) for a in argv])
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    if code not in (0, None):
        lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("note:")]
        assert len(lines) == 1 and lines[0].startswith("error: "), err
    return code, err


def snapshot(folder: Path) -> dict:
    """relative path -> content hash (or 'dir'/'link') of everything below `folder`."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(folder))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha1(p.read_bytes()).hexdigest()
    return out


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary entries our atomic writers use (.<name>.<random>.tmp/.old) below `folder`."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*")
                  if p.name != OWNER_MARKER and (p.name.endswith(".tmp") or ".tmp" in p.name or p.name.endswith(".old")))
