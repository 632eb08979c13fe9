"""`--scheduler FILE`: the scheduler file `dask scheduler --scheduler-file` writes, read with one-line errors.

Dask's own reader (Client(scheduler_file=...)) fails with a traceback on a file of random bytes, on
{"address": 12345} or on a JSON list. This reads the file as Dask writes it (a JSON object whose "address"
is `tcp://host:port`, or another Dask protocol) and returns the address to connect to.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from nnunet_wmhloc.io import WMHLocError, check_path

MAX_BYTES = 1 << 20  # Dask writes a few hundred bytes
_ADDRESS = re.compile(r"(tcp|tls|inproc|ucx|ws|wss)://[^\s/]+(:\d+)?/?|[A-Za-z0-9.\-\[\]:]+:\d+")


def read_scheduler_file(path: str | os.PathLike) -> str:
    """The scheduler address in a Dask scheduler file; WMHLocError naming the file otherwise."""
    path = check_path(path, what="--scheduler file")
    what = f"{path}: --scheduler file"
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise WMHLocError(f"{what} is {size >> 10} KiB; a Dask scheduler file is a small JSON object")
    try:
        obj = json.loads(path.read_bytes().decode("utf-8"))
    except RecursionError:
        raise WMHLocError(f"{what} is JSON nested too deeply, not a Dask scheduler file") from None
    except (UnicodeDecodeError, ValueError):
        raise WMHLocError(f"{what} is not JSON (Dask writes it with `dask scheduler --scheduler-file FILE`)") from None
    if not isinstance(obj, dict):
        raise WMHLocError(f"{what} holds a JSON {type(obj).__name__}, expected an object with an \"address\"")
    address = obj.get("address")
    if not isinstance(address, str) or not _ADDRESS.fullmatch(address.strip()):
        raise WMHLocError(f"{what}: \"address\" is {address!r}, not a scheduler address such as tcp://host:8786")
    return address.strip()


def is_scheduler_file(address: str) -> bool:
    """--scheduler names a file (rather than an address) when such a file exists."""
    return Path(address).is_file()
