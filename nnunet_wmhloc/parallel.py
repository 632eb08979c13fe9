"""Per-subject work over local processes or a Dask cluster (`--scheduler ADDRESS`): nnunet_wmhloc.parallel.

    with session(args.scheduler) as client:          # None without --scheduler
        records = map_tasks(fn, jobs, desc="region labels", client=client, workers=2)

`fn(job)` is a module-level function taking a small dict of file paths and returning a small dict (a record);
it writes its own outputs atomically, so a retry after a lost worker is safe. `map_tasks` returns one record
per job, in job order; a job whose task raised, or whose worker died more often than Dask allows
(`distributed.scheduler.allowed-failures`, 3 by default), comes back as {"status": "failed", "reason": ...}.
Dask re-runs the tasks of a worker that dies (killed, out of memory) on the others by itself.

Dask is optional (`pip install "nnunet_wmhloc[dask]"`): nothing here imports it unless --scheduler is given.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

from nnunet_wmhloc import cli
from nnunet_wmhloc.io import WMHLocError

INSTALL_HINT = 'pip install "nnunet_wmhloc[dask]"'
STAGING_PREFIX = ".wmhloc-part-"  # a task's private folder beside its outputs; gone when the task ends


def add_argument(parser) -> None:
    parser.add_argument("--scheduler", metavar="ADDRESS", default=None,
                        help="run the per-subject work on a Dask cluster: the address of a running `dask "
                             "scheduler` (tcp://host:port) or its --scheduler-file; needs " + INSTALL_HINT)


def require():
    try:
        import distributed
    except ImportError:
        raise WMHLocError(f"--scheduler needs Dask, which is not installed: {INSTALL_HINT}") from None
    return distributed


def connect(address: str, timeout: float | None = None):
    """A Client of the scheduler at `address` (tcp://host:port, host:port, or a scheduler file); waits up to
    `timeout` s, by default Dask's distributed.comm.timeouts.connect (30 s)."""
    from nnunet_wmhloc.scheduler_file import is_scheduler_file, read_scheduler_file

    distributed = require()
    kw = {} if timeout is None else {"timeout": timeout}
    if is_scheduler_file(address):  # read by us: Dask's reader gives tracebacks on a hostile file
        address = read_scheduler_file(address)
    try:
        client = distributed.Client(address, **kw)
    except (OSError, TimeoutError, ValueError) as e:
        why = str(e).strip().splitlines()[0][:120] if str(e).strip() else ""
        raise WMHLocError(f"--scheduler {address}: no Dask scheduler reachable ({type(e).__name__}: {why})") from None
    return client


@contextlib.contextmanager
def session(address: str | None) -> Iterator:
    """A connected Client for the block (None without an address); always closed."""
    if not address:
        yield None
        return
    client = connect(address)
    try:
        n = len(client.scheduler_info().get("workers", {}))
        link = getattr(client, "dashboard_link", None)
        print(f"Dask scheduler {client.scheduler.address}: {n} worker(s)"
              + (f", dashboard {link}" if link else ""), file=sys.stderr)
        yield client
    finally:
        client.close()


def worker_name() -> str:
    """The Dask worker running this code (its address), else `local:<host>:<pid>`: recorded per subject."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"local:{socket.gethostname()}:{os.getpid()}"


def record_stamp() -> dict:
    """What every per-subject JSON record carries: software version, time, and who made it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("nnunet_wmhloc")
    except PackageNotFoundError:
        v = "unknown"
    return {"software": f"nnunet_wmhloc {v}", "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "worker": worker_name()}


@contextlib.contextmanager
def staging(folder: Path, name: str) -> Iterator[Path]:
    """A private temporary folder inside `folder` for one task's outputs; removed when the block ends
    (the task moves its finished files out of it). What a killed task leaves is removed by `sweep`."""
    from nnunet_wmhloc.io.temps import NAME_MAX, fit_name, new_temp_dir, tag

    Path(folder).mkdir(parents=True, exist_ok=True)
    # tagged with pid and host: a later task on this machine sweeps what a killed one left (io.temps)
    room = NAME_MAX - len(STAGING_PREFIX) - len(tag()) - 9
    d = new_temp_dir(f"{STAGING_PREFIX}{fit_name(name, room)}-", dir=folder)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def sweep(folder: Path) -> int:
    """Remove staging folders left in `folder` by tasks whose worker died; call when no task runs there."""
    n = 0
    for d in Path(folder).glob(STAGING_PREFIX + "*"):
        shutil.rmtree(d, ignore_errors=True)
        n += 1
    return n


def publish(files: list[Path], folder: Path) -> None:
    """Move finished files from a staging folder into `folder` (rename: atomic per file); the caller lists the
    file whose presence means success last."""
    for f in files:
        os.replace(f, Path(folder) / f.name)


def _failed(job: dict, key: str, reason: str) -> dict:
    return {key: job.get(key), "status": "failed", "reason": reason}


def _reason(e: BaseException, job: dict, key: str) -> str:
    name = type(e).__name__
    if name == "KilledWorker":
        return f"{job.get(key)}: its worker died on every attempt (KilledWorker; out of memory or killed?)"
    msg = str(e).strip().splitlines()[-1][:200] if str(e).strip() else ""
    return f"{job.get(key)}: {name}: {msg}"


def _on_worker(fn: Callable[[dict], dict], job: dict, initializer, initargs) -> dict:
    if initializer is not None:
        initializer(*initargs)
    rec = fn(job)
    rec.setdefault("worker", worker_name())
    return rec


def check_resources(client, resources: dict | None) -> None:
    """Fail now, not hang, when no worker offers a resource the tasks need (e.g. GPU)."""
    if not resources:
        return
    workers = client.scheduler_info().get("workers", {})
    have = [w.get("resources", {}) for w in workers.values()]
    for r, amount in resources.items():
        if not any(h.get(r, 0) >= amount for h in have):
            raise WMHLocError(f"--scheduler: no Dask worker offers resource {r}={amount} (start them with "
                              f"`dask worker ADDRESS --resources {r}={amount}`)")


def map_tasks(fn: Callable[[dict], dict], jobs: list[dict], *, desc: str, client=None, workers: int = 1,
              initializer: Callable | None = None, initargs: tuple = (), resources: dict | None = None,
              retries: int = 1, key: str = "subject") -> list[dict]:
    """fn(job) for every job, on the Dask cluster of `client`, else in `workers` local processes (1: in this
    process). One record per job, in job order; exceptions and lost workers become failed records."""
    if not jobs:
        return []
    out: dict[int, dict] = {}
    if client is not None:
        distributed = require()
        check_resources(client, resources)
        token = uuid.uuid4().hex[:8]
        futs = {}
        for i, j in enumerate(jobs):
            f = client.submit(_on_worker, fn, j, initializer, initargs, key=f"{desc}-{j.get(key)}-{token}-{i}",
                              pure=False, retries=retries, resources=resources)
            futs[f] = i
        for f in cli.progress(distributed.as_completed(futs), desc=desc, total=len(futs)):
            i = futs[f]
            try:
                out[i] = f.result()
            except Exception as e:  # noqa: BLE001 — reported per subject below, never lost
                out[i] = _failed(jobs[i], key, _reason(e, jobs[i], key))
            f.release()
    elif workers <= 1:
        for i, j in enumerate(cli.progress(jobs, desc=desc)):
            try:
                out[i] = _on_worker(fn, j, initializer, initargs)
            except Exception as e:  # noqa: BLE001
                out[i] = _failed(j, key, _reason(e, j, key))
    else:
        import concurrent.futures as cf
        import multiprocessing as mp

        with cf.ProcessPoolExecutor(min(workers, len(jobs)), mp_context=mp.get_context("spawn"),
                                    initializer=initializer, initargs=initargs) as ex:
            futs = {ex.submit(_on_worker, fn, j, None, ()): i for i, j in enumerate(jobs)}
            for f in cli.progress(cf.as_completed(futs), desc=desc, total=len(futs)):
                i = futs[f]
                try:
                    out[i] = f.result()
                except Exception as e:  # noqa: BLE001 — e.g. a process killed: BrokenProcessPool
                    out[i] = _failed(jobs[i], key, _reason(e, jobs[i], key))
    return [out[i] for i in range(len(jobs))]
