"""Issue #21 part B: part A's helpers used where they were not yet: scheduler files read by us before Dask,
task staging and the T1 registration folder tagged (swept after kill -9), formula-safe BIDS TSV."""
from __future__ import annotations

import csv
import tempfile

import pytest

from nnunet_wmhloc import parallel
from nnunet_wmhloc.dataset_conversion.cohort import convert_cohort
from nnunet_wmhloc.io import WMHLocError, write_csv
from nnunet_wmhloc.io.temps import HOST, tag
from nnunet_wmhloc.pipeline.results import _write_tsv

DEAD = f"w999999999h{HOST}-abcdefgh"  # a pid no process has


@pytest.mark.parametrize("content", [b"\x00\xff\x13garbage", b'{"address": 12345}', b"[1, 2]"])
def test_connect_reads_hostile_scheduler_file_in_one_line(tmp_path, content):
    pytest.importorskip("distributed")
    f = tmp_path / "scheduler.json"
    f.write_bytes(content)
    with pytest.raises(WMHLocError, match=r"scheduler\.json: --scheduler file"):
        parallel.connect(str(f), timeout=2)


def test_staging_is_tagged_and_sweeps_dead_tasks(tmp_path):
    dead = tmp_path / f"{parallel.STAGING_PREFIX}s01-{DEAD}"
    dead.mkdir()
    (dead / "half.nii.gz").write_bytes(b"x")
    with parallel.staging(tmp_path, "s01") as d:
        assert d.name.startswith(f"{parallel.STAGING_PREFIX}s01-{tag()}")
        assert not dead.exists()  # a killed task's folder, swept by the next task on this machine
    assert not d.exists()


def test_t1reg_folder_swept(synth_release, tmp_path, monkeypatch):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    stale = tmp / f"wmhloc_t1reg_{DEAD}"
    stale.mkdir()
    (stale / "s0_T1_in_FLAIR.nii.gz").write_bytes(b"x")
    u = synth_release / "training/Utrecht/0/pre"
    csv_path = write_csv([{"subject": "s0", "flair": u / "FLAIR.nii.gz", "t1": u / "T1.nii.gz"}], tmp_path / "c.csv")
    convert_cohort(csv_path, mode="predict", output=tmp_path / "images", register_t1=True)
    assert not stale.exists() and list(tmp.iterdir()) == []


def test_bids_tsv_neutralises_formulas(tmp_path):
    rows = [{"participant_id": "sub-01", "site": "=cmd|' /C calc'!A0", "note": "@SUM(1)", "load": -3.5,
             "text": "-3.5"}]
    _write_tsv(rows, tmp_path / "t.tsv")
    got = list(csv.DictReader(open(tmp_path / "t.tsv", encoding="utf-8"), delimiter="\t"))[0]
    assert got == {"participant_id": "sub-01", "site": "'=cmd|' /C calc'!A0", "note": "'@SUM(1)", "load": "-3.5",
                   "text": "-3.5"}
