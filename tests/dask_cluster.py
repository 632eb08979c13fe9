"""A real Dask cluster on 127.0.0.1 for the tests: one `dask scheduler` and N `dask worker` processes (no
nanny, so a test can kill a worker for good), each in its own process group and always killed at the end."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

# one ITK/OpenMP thread everywhere: region labels are then the same whichever process makes them
THREADS_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1"}


@dataclass
class Cluster:
    address: str
    scheduler_file: Path
    workers: list = field(default_factory=list)   # Popen of each `dask worker`
    addresses: list = field(default_factory=list)  # their tcp:// addresses, same order

    def kill_worker(self, i: int) -> None:
        _kill(self.workers[i])


def _kill(p: subprocess.Popen) -> None:
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)  # the worker and anything it started (its own group)
    p.wait(timeout=30)


def _dask() -> str:
    p = Path(sys.executable).parent / "dask"
    return str(p) if p.exists() else "dask"


@contextlib.contextmanager
def dask_cluster(folder: Path, n_workers: int = 2, timeout: float = 90.0):
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **THREADS_ENV}
    procs: list[subprocess.Popen] = []

    def start(args, log):
        with open(folder / log, "w") as f:
            p = subprocess.Popen([_dask(), *map(str, args)], stdout=f, stderr=subprocess.STDOUT, env=env,
                                 cwd=folder, start_new_session=True)
        procs.append(p)
        return p

    sf = folder / "scheduler.json"
    try:
        start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", sf],
              "scheduler.log")
        t0 = time.time()
        while not (sf.is_file() and sf.stat().st_size > 0):
            if time.time() - t0 > timeout or procs[0].poll() is not None:
                raise RuntimeError(f"dask scheduler did not start: {(folder / 'scheduler.log').read_text()[-2000:]}")
            time.sleep(0.2)
        address = json.loads(sf.read_text())["address"]
        workers = [start(["worker", address, "--host", "127.0.0.1", "--nthreads", 1, "--no-nanny", "--no-dashboard",
                          "--name", f"w{i}", "--local-directory", folder / f"w{i}"], f"worker{i}.log")
                   for i in range(n_workers)]
        from distributed import Client

        with Client(address, timeout=timeout) as c:
            c.wait_for_workers(n_workers, timeout=timeout)
            by_name = {w["name"]: a for a, w in c.scheduler_info()["workers"].items()}
        yield Cluster(address, sf, workers, [by_name[f"w{i}"] for i in range(n_workers)])
    finally:
        for p in reversed(procs):
            _kill(p)
