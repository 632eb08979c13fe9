"""Cohorts on a real Dask cluster (issue 14): a `dask scheduler` and two `dask worker` processes on 127.0.0.1
run `wmhloc_region_labels --input ... --scheduler`; the label maps equal a local run's, both workers work, a
worker killed mid-cohort loses nothing, and without Dask installed `--scheduler` says what to install.
(wmhloc_predict --scheduler is tested in test_pipeline_demo.py, beside the demo's trained models.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from dask_cluster import THREADS_ENV, dask_cluster

from nnunet_wmhloc.atlas import _atlas, _synthetic
from nnunet_wmhloc.io import OWNER_MARKER

N_SUBJECTS = 3
# a sitecustomize that makes `import dask` / `import distributed` fail, as in an install without [dask]
NO_DASK = '''import sys
class _NoDask:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("dask", "distributed"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _NoDask())
'''
HINT = 'error: --scheduler needs Dask, which is not installed: pip install "nnunet_wmhloc[dask]"'


def _script(name: str) -> str:
    p = Path(sys.executable).parent / name
    return str(p) if p.exists() else name


def run(name, *args, env=None, popen=False):
    cmd = [_script(name), *map(str, args)]
    env = {**os.environ, **THREADS_ENV, **(env or {})}
    if popen:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def no_dask_env(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("no_dask")
    (d / "sitecustomize.py").write_text(NO_DASK)
    return {"PYTHONPATH": str(d)}


@pytest.fixture(scope="module")
def cohort(shared_data, tmp_path_factory) -> dict:
    """Three challenge-like subjects made from Eve by random affines (<id>/T1.nii.gz), and the Eve folder as
    the atlas."""
    atlas_dir = shared_data / "eve_atlas"
    atlas = _atlas.load_atlas(atlas_dir)
    d = tmp_path_factory.mktemp("cohort")
    ids = [f"s{k}" for k in range(N_SUBJECTS)]
    for k, s in enumerate(ids):
        (d / s).mkdir()
        sitk.WriteImage(_synthetic.make_subject(atlas, seed=11 + k).t1, str(d / s / "T1.nii.gz"))
    return {"input": d, "atlas": atlas_dir, "ids": ids}


@pytest.fixture(scope="module")
def local_labels(cohort, no_dask_env, tmp_path_factory) -> Path:
    """Today's local run, with Dask made unimportable: the command does not need it."""
    out = tmp_path_factory.mktemp("local") / "labels"
    r = run("wmhloc_region_labels", "--input", cohort["input"], "--atlas-dir", cohort["atlas"], "-o", out,
            env=no_dask_env)
    assert r.returncode == 0, r.stderr
    return out


def _labels(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _no_partial_files(folder: Path) -> list[str]:
    """Anything but finished outputs: hidden temporaries (io.atomic_file) or task staging folders."""
    return [str(p) for p in folder.rglob("*") if p.name.startswith(".") and p.name != OWNER_MARKER]


def test_region_labels_on_dask_equal_local_and_use_both_workers(cohort, local_labels, tmp_path):
    """The cohort as a CSV with one more subject whose T1 does not exist: it is named with its reason, the
    exit code is 1, and every other subject is done."""
    csv_path = tmp_path / "cohort.csv"
    csv_path.write_text("subject,t1\n" + "".join(f"{s},{cohort['input'] / s / 'T1.nii.gz'}\n" for s in cohort["ids"])
                        + f"ghost,{tmp_path / 'nope.nii.gz'}\n")
    out = tmp_path / "labels"
    with dask_cluster(tmp_path / "dask") as cl:
        # the scheduler given by its file, as `dask scheduler --scheduler-file` writes it
        r = run("wmhloc_region_labels", "--input", csv_path, "--atlas-dir", cohort["atlas"], "-o", out,
                "--scheduler", cl.scheduler_file)
        addresses = cl.addresses
    assert r.returncode == 1, r.stderr
    assert f"{N_SUBJECTS}/{N_SUBJECTS + 1} subjects labelled" in r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'nope.nii.gz'}: T1 not found"
    assert not any(out.glob("ghost*"))
    workers = set()
    for s in cohort["ids"]:
        a, b = _labels(out / f"{s}.nii.gz"), _labels(local_labels / f"{s}.nii.gz")
        assert (a > 0).sum() > 10_000 and np.array_equal(a, b), s
        rec = json.loads((out / f"{s}.json").read_text())
        assert rec["worker"] in addresses and rec["software"].startswith("nnunet_wmhloc ") and rec["time"]
        workers.add(rec["worker"])
        local = json.loads((local_labels / f"{s}.json").read_text())["worker"]
        assert local.startswith("local:")
    assert workers == set(addresses)  # both workers did work
    summary = (out / "region_labels_summary.csv").read_text()
    assert all(a in summary for a in addresses)
    assert _no_partial_files(out) == []


def test_killed_worker_mid_cohort_loses_no_subject(cohort, tmp_path):
    from distributed import Client

    out = tmp_path / "labels"
    with dask_cluster(tmp_path / "dask") as cl, Client(cl.address, timeout=30) as client:
        p = run("wmhloc_region_labels", "--input", cohort["input"], "--atlas-dir", cohort["atlas"], "-o", out,
                "--scheduler", cl.address, popen=True)
        victim, busy_since, killed = cl.addresses[0], None, []
        t0 = time.time()
        while p.poll() is None and time.time() - t0 < 300:
            running = client.processing().get(victim, ())
            if running and busy_since is None:
                busy_since = time.time()
            if running and time.time() - busy_since > 2.0:  # well into its subject's registration
                killed = list(running)
                cl.kill_worker(0)
                break
            time.sleep(0.1)
        stdout, stderr = p.communicate(timeout=600)
        survivor = cl.addresses[1]
    assert killed, "the worker never ran a task"
    assert p.returncode == 0, stderr
    assert f"{N_SUBJECTS}/{N_SUBJECTS} subjects labelled" in stderr
    for s in cohort["ids"]:
        for suffix in (".nii.gz", ".tfm", "_qc.png", ".json"):
            assert (out / f"{s}{suffix}").is_file(), (s, suffix)
        assert (_labels(out / f"{s}.nii.gz") > 0).sum() > 10_000
    # the subject the dead worker held was made again by the other one
    victims = [s for s in cohort["ids"] if any(f"-{s}-" in k for k in killed)]
    assert victims, killed
    for s in victims:
        assert json.loads((out / f"{s}.json").read_text())["worker"] == survivor
    assert _no_partial_files(out) == []


def test_without_dask_scheduler_says_what_to_install(cohort, no_dask_env, tmp_path):
    out = tmp_path / "labels"
    r = run("wmhloc_region_labels", "--input", cohort["input"], "--atlas-dir", cohort["atlas"], "-o", out,
            "--scheduler", "tcp://127.0.0.1:8786", env=no_dask_env)
    assert r.returncode == 1 and r.stderr.strip() == HINT
    assert not out.exists()
    for name, args in (("wmhloc_predict", [tmp_path / "c.csv", "-o", tmp_path / "p", "--lesion-model", "601",
                                           "--region-model", "602"]),
                       ("wmhloc_run", ["--demo", "-o", tmp_path / "r"])):
        r = run(name, *args, "--scheduler", "tcp://127.0.0.1:8786", env=no_dask_env)
        assert r.returncode == 1 and r.stderr.strip() == HINT, (name, r.stderr)
        assert not (tmp_path / args[args.index("-o") + 1]).exists()
    # an address where no scheduler listens: one line, nothing written
    r = run("wmhloc_region_labels", "--input", cohort["input"], "--atlas-dir", cohort["atlas"], "-o", out,
            "--scheduler", "tcp://127.0.0.1:9", env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"})
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "tcp://127.0.0.1:9: no Dask scheduler reachable" in r.stderr
