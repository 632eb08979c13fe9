"""Issue #16, partial output and interruption: the converters check everything first and move both datasets
into place together (a late failure left half a conversion that blocked the re-run), and SIGTERM is cleaned
up like Ctrl-C (it left hidden temporary folders behind); a re-run after either works."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hostile_common import call, leftovers, snapshot, write_map
from test_hostile_tables import tiny_cohort


def datasets(raw: Path) -> list[str]:
    return sorted(p.name for p in raw.iterdir()) if raw.is_dir() else []


class TestConverterAllOrNothing:
    """Bad region map, id clash, out-of-range id, corrupt existing splits: nothing written, re-run works."""

    def test_cohort(self, tmp_path, capfd):
        csv = tiny_cohort(tmp_path / "c", n=3, regions=True)
        raw, pre = tmp_path / "raw", tmp_path / "pre"
        bad = write_map(tmp_path / "c" / "s03_regions.nii.gz", np.full((6, 12, 12), 99))
        argv = [csv, "-o", raw, "--preprocessed", pre]
        code, err = call("wmhloc_convert_cohort", argv, capfd)
        assert code == 1 and f"{bad}: region map has unexpected label values [99]" in err
        for extra, msg in ((["--region-id", 1000], "dataset id 1000"),
                           (["--region-id", 611], "dataset id 611: given to both")):
            code, err = call("wmhloc_convert_cohort", argv + extra, capfd)
            assert code == 1 and msg in err, err
        assert datasets(raw) == [] and not pre.exists() and not leftovers(tmp_path)
        write_map(bad)  # fixed: the re-run is not blocked by anything the failures left
        assert call("wmhloc_convert_cohort", argv, capfd)[0] == 0
        assert datasets(raw) == ["Dataset611_CohortLesion", "Dataset612_CohortRegion"]
        assert (pre / "Dataset612_CohortRegion" / "splits_final.json").is_file()

    def test_wmh2017_late_failures(self, synth_release, tmp_path, capfd):
        maps = tmp_path / "maps"
        shutil.copytree(synth_release / "region_labels", maps)
        raw, pre = tmp_path / "raw", tmp_path / "pre"
        argv = [synth_release, "--region-labels", maps, "-o", raw, "--preprocessed", pre]
        last = sorted(maps.rglob("WMH_*.nii.gz"))[-1]
        good = last.read_bytes()
        last.write_bytes(good[: len(good) // 3])
        code, err = call("wmhloc_convert_wmh2017", argv, capfd)
        assert code == 1 and str(last) in err
        assert datasets(raw) == [] and not pre.exists() and not leftovers(tmp_path)
        last.write_bytes(good)
        region_splits = pre / "Dataset602_WMHRegion" / "splits_final.json"
        region_splits.parent.mkdir(parents=True)
        region_splits.write_text("{corrupt")
        code, err = call("wmhloc_convert_wmh2017", argv, capfd)
        assert code == 1 and str(region_splits) in err
        assert datasets(raw) == [] and not (pre / "Dataset601_WMHLesion").exists()
        assert call("wmhloc_convert_wmh2017", argv + ["--overwrite"], capfd)[0] == 0
        assert datasets(raw) == ["Dataset601_WMHLesion", "Dataset602_WMHRegion"] and not leftovers(tmp_path)


@pytest.fixture(scope="module")
def big_release(tmp_path_factory) -> Path:
    """A synthetic release large enough (22 subjects) that a conversion is still running when signalled."""
    from nnunet_wmhloc.synth import make_cohort

    out = tmp_path_factory.mktemp("big") / "release"
    make_cohort(out, seed=1, per_site=4, test_per_site=2, show_progress=False)
    return out


def _interrupt(args: list, watch: Path, sig: int) -> subprocess.CompletedProcess:
    """Start a command, send `sig` once its hidden temporary folder exists in `watch`, wait for it."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # a terminal's Ctrl-C reaches a process whose SIGINT is not ignored; the test worker's disposition (which a
    # library run earlier in the same worker may have set to ignore) must not leak into the command
    p = subprocess.Popen([str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while p.poll() is None and time.time() < deadline:
        if watch.is_dir() and any(e.name.endswith(".tmp") for e in watch.iterdir()):
            time.sleep(0.02)  # let it start writing into the temporary folder (longer: under load it may finish first)
            p.send_signal(sig)
            break
        time.sleep(0.005)
    out, err = p.communicate(timeout=120)
    assert p.returncode is not None
    return subprocess.CompletedProcess(args, p.returncode, out, err)


class TestSignals:
    """SIGTERM (kill, SLURM, docker stop) left hidden temporary folders; only Ctrl-C was cleaned up."""

    @pytest.mark.parametrize("sig,code,name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")])
    def test_conversion_interrupted_then_rerun(self, big_release, tmp_path, sig, code, name):
        raw = tmp_path / "raw"
        cmd = [Path(sys.executable).parent / "wmhloc_convert_wmh2017", big_release, "--region-labels",
               big_release / "region_labels", "-o", raw, "--preprocessed", tmp_path / "pre"]
        before = snapshot(big_release)
        p = _interrupt(cmd, raw, sig)
        assert p.returncode == code, p.stderr
        assert p.stderr.strip().splitlines()[-1] == f"error: interrupted ({name}); partial outputs removed"
        assert "Traceback" not in p.stderr
        assert datasets(raw) == [] and not (tmp_path / "pre").exists() and not leftovers(tmp_path)
        rerun = subprocess.run([str(a) for a in cmd], capture_output=True, text=True)
        assert rerun.returncode == 0, rerun.stderr
        assert datasets(raw) == ["Dataset601_WMHLesion", "Dataset602_WMHRegion"]
        assert snapshot(big_release) == before

    def test_nested_commands_clean_up_on_sigterm(self, tmp_path, capfd):
        """A pipeline stage runs our commands in-process: a SIGTERM inside the inner one must unwind both,
        removing both temporary folders, and end the outer command with 143 (not a stage failure)."""
        from nnunet_wmhloc import cli, io

        def inner(argv):
            with io.atomic_dir(tmp_path / "inner"):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(30)  # interrupted by the handler

        def outer(argv):
            with io.atomic_dir(tmp_path / "outer"):
                cli.run(inner, [])
            return 0

        assert cli.run(outer, []) == 143
        assert capfd.readouterr().err.strip() == "error: interrupted (SIGTERM); partial outputs removed"
        assert list(tmp_path.iterdir()) == [] and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
