"""wmhloc_env: print the shell lines that let nnU-Net's own commands find our trainers.

    eval "$(wmhloc_env)"                       # nnUNet_extTrainer only
    eval "$(wmhloc_env --root ~/nnunet_data)"  # also nnUNet_raw / _preprocessed / _results under ROOT
"""
from __future__ import annotations

import os
import shlex
from pathlib import Path

from nnunet_wmhloc import cli
from nnunet_wmhloc.nnunet_ext import EXT_TRAINER_DIR

NNUNET_DIRS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


def ext_trainer_path(existing: str | None = None) -> str:
    """nnUNet_extTrainer value with our folder first, keeping any folders the user already set."""
    parts = [p for p in (existing or "").split(os.pathsep) if p and Path(p).resolve() != Path(EXT_TRAINER_DIR)]
    return os.pathsep.join([EXT_TRAINER_DIR] + parts)


def nnunet_environ(root: str | os.PathLike | None = None, base: dict | None = None) -> dict:
    """A copy of `base` (default os.environ) with nnUNet_extTrainer set, and the nnU-Net folders under
    `root` when given."""
    env = dict(os.environ if base is None else base)
    env["nnUNet_extTrainer"] = ext_trainer_path(env.get("nnUNet_extTrainer"))
    if root is not None:
        root = Path(root).resolve()
        for name in NNUNET_DIRS:
            env[name] = str(root / name)
    return env


def _main(argv=None) -> int:
    p = cli.parser("wmhloc_env", __doc__.split("\n\n")[0])
    p.add_argument("--root", help="also set nnUNet_raw, nnUNet_preprocessed and nnUNet_results under this folder")
    a = p.parse_args(argv)
    env = nnunet_environ(a.root)
    names = ["nnUNet_extTrainer"] + (list(NNUNET_DIRS) if a.root else [])
    for n in names:
        print(f"export {n}={shlex.quote(env[n])}")
    return 0


main = cli.entry(_main)
