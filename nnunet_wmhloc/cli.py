"""Thin-CLI conventions: argparse with --help, one-line errors, non-zero exit, progress bars."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Callable, Iterable, Sequence

from nnunet_wmhloc.io import WMHLocError


def commands() -> dict[str, str]:
    """{console script: module} of this package, read from its installed entry points (setup.py's
    CONSOLE_SCRIPTS is the one list)."""
    from importlib.metadata import distribution

    eps = distribution("nnunet_wmhloc").entry_points.select(group="console_scripts")
    return {ep.name: ep.module for ep in sorted(eps, key=lambda e: e.name)}


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=description,
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, SLURM, docker stop) raised like Ctrl-C, so every `finally` removes its temporary files."""


def _on_sigterm(signum, frame):
    raise Terminated()


_depth = 0  # commands run in-process by the pipeline's stages are nested in the outer command's run()


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Call `main(argv)`; a WMHLocError becomes `error: <message>` on stderr and exit code 1; an OSError
    (full disk, permission denied) one line naming the file; Ctrl-C and SIGTERM clean up and exit 130/143."""
    global _depth
    handler = None
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        handler = signal.signal(signal.SIGTERM, _on_sigterm)
    _depth += 1
    try:
        code = main(argv)
    except WMHLocError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        if _depth > 1:  # the outer command reports it (and cleans up its own outputs)
            raise
        term = isinstance(e, Terminated)
        print(f"error: interrupted ({'SIGTERM' if term else 'Ctrl-C'}); partial outputs removed", file=sys.stderr)
        return 143 if term else 130
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    finally:
        _depth -= 1
        if handler is not None:
            signal.signal(signal.SIGTERM, handler)
    return int(code or 0)


def entry(main: Callable[[Sequence[str] | None], int | None]) -> Callable[[Sequence[str] | None], int]:
    """A console script's `main(argv=None)`: `main` called through run()."""
    def command(argv: Sequence[str] | None = None) -> int:
        return run(main, argv)
    return command


def print_result(lines: Iterable[str], notes: Iterable[str] = ()) -> None:
    """A stage's notes as `note: ...` lines on stderr, then its summary lines on stdout."""
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    print("\n".join(lines))


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _int_in(text, 1, None)


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_in(text, 0, None)


def dataset_id(text: str) -> int:
    """argparse type: an nnU-Net dataset id (1 .. 999)."""
    return _int_in(text, 1, 999)


def seed_int(text: str) -> int:
    """argparse type: a random seed numpy and scikit-learn accept (0 .. 2**32 - 1)."""
    return _int_in(text, 0, 2**32 - 1)


def int_range(lo: int, hi: int) -> Callable[[str], int]:
    """argparse type: an integer in lo..hi, refused by argparse before anything is allocated."""
    def check(text: str) -> int:
        return _int_in(text, lo, hi)
    check.__name__ = f"integer in {lo}..{hi}"
    return check


def max_workers() -> int:
    """Upper bound of --processes/--threads/--workers: twice this machine's cores, at least 4 (more only
    oversubscribes the CPUs and multiplies memory)."""
    from nnunet_wmhloc.pipeline.stages import cpu_count

    return max(4, 2 * cpu_count())


def workers_int(text: str) -> int:
    """argparse type: a number of worker processes or threads, 1 .. max_workers()."""
    return _int_in(text, 1, max_workers())


def _int_in(text: str, lo: int | None, hi: int | None) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise argparse.ArgumentTypeError(f"{v} is out of range (must be {rng})")
    return v


def default_device() -> str:
    """cuda when torch sees a GPU, else mps (Apple), else cpu."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


def check_device(device: str | None) -> str:
    """The device to use: the given one if this machine has it (else a one-line error), or default_device()."""
    if device is None:
        return default_device()
    if device == "cpu":
        return device
    import torch

    ok = torch.cuda.is_available() if device == "cuda" else \
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if not ok:
        raise WMHLocError(f"--device {device}: not available on this machine (torch finds no {device} device); "
                          "use --device cpu or leave --device out")
    return device


def progress(iterable: Iterable, *, desc: str, total: int | None = None, disable: bool | None = None):
    """tqdm on stderr; quiet when stderr is not a terminal unless the job is long enough to matter."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, disable=disable, file=sys.stderr, dynamic_ncols=True,
                mininterval=1.0)
