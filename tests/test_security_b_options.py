"""Issue #21 part B, items 10 and 12: wmhloc_synth's ids stay unique (bounded counts), huge counts and
worker numbers are refused by argparse before anything is allocated."""
from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from hostile_common import call
from nnunet_wmhloc import cli
from nnunet_wmhloc.io import WMHLocError
from nnunet_wmhloc.synth import MAX_PER_SITE, MAX_TEST_PER_SITE, make_cohort


def test_synth_largest_counts_give_unique_ids(tmp_path):
    subs = make_cohort(tmp_path / "rel", per_site=MAX_PER_SITE, test_per_site=MAX_TEST_PER_SITE,
                       show_progress=False)
    ids = Counter(s["id"] for s in subs)
    assert len(subs) == 3 * MAX_PER_SITE + 5 * MAX_TEST_PER_SITE and max(ids.values()) == 1
    maps = list((tmp_path / "rel" / "region_labels").glob("*/WMH_*.nii.gz"))
    assert len(maps) == len(subs) - 1  # one per subject (the last test subject has none): none overwritten


def test_synth_26_refused(tmp_path):
    with pytest.raises(WMHLocError, match="per_site=26: must be in 1..25"):
        make_cohort(tmp_path / "rel", per_site=26, show_progress=False)
    assert not (tmp_path / "rel").exists()


@pytest.mark.parametrize("argv, expect", [
    (["--per-site", "26"], "argument --per-site: 26 is out of range (must be in 1..25)"),
    (["--per-site", "1000000000"], "argument --per-site: 1000000000 is out of range"),
    (["--test-per-site", "11"], "argument --test-per-site: 11 is out of range (must be in 1..10)"),
])
def test_cli_synth_counts_bounded(tmp_path, argv, expect):
    p = subprocess.run([str(Path(sys.executable).parent / "wmhloc_synth"), "-o", str(tmp_path / "rel"), *argv],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and expect in p.stderr, p.stderr
    assert not (tmp_path / "rel").exists()


def test_workers_int_bounds():
    hi = cli.max_workers()
    assert cli.workers_int(str(hi)) == hi and cli.workers_int("1") == 1
    for bad in ("0", str(hi + 1), "100000", "2.5"):
        with pytest.raises(Exception):
            cli.workers_int(bad)


@pytest.mark.parametrize("command, flag", [("wmhloc_predict", "--processes"), ("wmhloc_predict", "--threads"),
                                           ("wmhloc_run", "--processes"), ("wmhloc_run", "--threads")])
def test_cli_workers_bounded(tmp_path, capfd, command, flag):
    argv = ["-o", tmp_path / "out", flag, "100000"] + (["x.csv"] if command == "wmhloc_predict" else ["--demo"])
    with pytest.raises(SystemExit) as e:
        call(command, argv, capfd)
    assert e.value.code == 2
    err = capfd.readouterr().err
    assert f"argument {flag}: 100000 is out of range (must be in 1..{cli.max_workers()})" in err, err
    assert not (tmp_path / "out").exists()
