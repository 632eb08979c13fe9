"""Run a console script (nnU-Net's or ours) by name in this interpreter, optionally capping torch's CPU threads.

    python -m nnunet_wmhloc.pipeline.launch nnUNetv2_train 601 2d 0 -tr nnUNetTrainerWMHLoc -device cpu

Why: `nnUNetv2_train -device cpu` sets torch to use every core (torch.set_num_threads(cpu_count())). With
nnU-Net's data-augmentation worker beside it, that oversubscribes a small CPU: on a shared 2-core machine a
forward pass took 0.50 s with 2 threads and 0.016 s with 1. With WMHLOC_TORCH_THREADS=N set, the command
sees N cores (multiprocessing.cpu_count) and torch uses N threads; nothing else of nnU-Net changes.
Without the variable this is exactly the console script.
"""
from __future__ import annotations

import os
import sys


def _entry_point(name: str):
    from importlib.metadata import entry_points

    eps = [e for e in entry_points(group="console_scripts") if e.name == name]
    if not eps:
        print(f"error: {name}: no such console script installed in {sys.prefix}", file=sys.stderr)
        sys.exit(127)
    return eps[0].load()


def _die_with(parent: int) -> None:
    """Die when process `parent` does (Linux): a Dask task's nnU-Net must not outlive its killed worker."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(1)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if os.environ.get("WMHLOC_PARENT_PID"):
        _die_with(int(os.environ.pop("WMHLOC_PARENT_PID")))
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    threads = os.environ.get("WMHLOC_TORCH_THREADS")
    if threads:
        import multiprocessing

        import torch

        n = max(1, int(threads))
        multiprocessing.cpu_count = lambda: n  # read by nnU-Net's -device cpu branch
        torch.set_num_threads(n)
    fn = _entry_point(argv[0])
    sys.argv = argv
    return fn() or 0


if __name__ == "__main__":
    sys.exit(main())
