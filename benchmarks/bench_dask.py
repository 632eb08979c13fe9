"""Region-labelling throughput (subjects per minute) of `wmhloc_region_labels --input` on this machine: local
(one process, today's default) and through `--scheduler` on a Dask LocalCluster of 1 and 2 worker processes
(one task slot and one ITK thread each). Prints figures; no pass/fail.

    python benchmarks/bench_dask.py [--subjects 6] [--atlas-dir ../shared/data/eve_atlas]

Subjects are challenge-like synthetic T1s made from Eve by random affines (atlas/_synthetic.py). Needs
`pip install "nnunet_wmhloc[dask]"`. On a shared machine the figures move with its load: run it on a quiet one.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=6)
    ap.add_argument("--atlas-dir", type=Path, default=REPO.parent / "shared" / "data" / "eve_atlas")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Dask worker counts to time")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of (local, each worker count), interleaved so "
                    "that a change in the machine's load hits every setting alike")
    a = ap.parse_args()
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"  # one thread per task slot (inherited by workers)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import SimpleITK as sitk
    from distributed import Client, LocalCluster

    from nnunet_wmhloc.atlas import _atlas, _synthetic
    from nnunet_wmhloc.atlas.cohort_labels import region_labels_cohort

    tmp = Path(tempfile.mkdtemp(prefix="bench_dask_"))
    atlas = _atlas.load_atlas(a.atlas_dir)
    for k in range(a.subjects):
        (tmp / "in" / f"s{k}").mkdir(parents=True)
        sitk.WriteImage(_synthetic.make_subject(atlas, seed=100 + k).t1, str(tmp / "in" / f"s{k}" / "T1.nii.gz"))
    print(f"{a.subjects} subjects, {os.cpu_count()} CPU cores, 1 ITK thread per task")

    def timed(name: str, scheduler: str | None, r: int) -> None:
        load = os.getloadavg()[0]
        t = time.time()
        code = 1 if region_labels_cohort(tmp / "in", a.atlas_dir, tmp / f"{name}_{r}", scheduler=scheduler).failed else 0
        dt = time.time() - t
        print(f"{name:>16}: {a.subjects / dt * 60:6.2f} subjects/min ({dt:.1f} s; load average "
              f"{load:.1f} -> {os.getloadavg()[0]:.1f}){'' if code == 0 else ' FAILED'}", flush=True)

    for r in range(a.repeat):
        timed("local", None, r)
        for n in a.workers:
            with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                              dashboard_address=None) as cluster, Client(cluster) as client:
                client.wait_for_workers(n)
                timed(f"dask_{n}_worker{'s' if n > 1 else ''}", cluster.scheduler_address, r)


if __name__ == "__main__":
    main()
