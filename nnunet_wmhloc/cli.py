"""Thin-CLI conventions: argparse with --help, one-line errors, non-zero exit, progress bars."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Iterable, Sequence

from nnunet_wmhloc.io import WMHLocError


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=description,
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Call `main(argv)`; a WMHLocError becomes `error: <message>` on stderr and exit code 1."""
    try:
        code = main(argv)
    except WMHLocError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


def progress(iterable: Iterable, *, desc: str, total: int | None = None, disable: bool | None = None):
    """tqdm on stderr; quiet when stderr is not a terminal unless the job is long enough to matter."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, disable=disable, file=sys.stderr, dynamic_ncols=True,
                mininterval=1.0)
