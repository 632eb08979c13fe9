"""Issue #21, io side: image headers checked against the file before allocation (float too), CSV cells a
spreadsheet would run neutralised, exclusive output claims, temporaries within the file-name limit, stale
temporaries of dead runs swept (only ours), and the --scheduler file read with one-line errors."""
from __future__ import annotations

import csv
import gzip
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from hostile_common import seg_folders
from nnunet_wmhloc.io import (WMHLocError, atomic_dir, atomic_file, read_csv, read_image, write_csv, write_json)
from nnunet_wmhloc.io import temps

PY = sys.executable


def _one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# ------------------------------------------------------------------- item 3: float header vs file size
def _tiny_nifti(path: Path, shape, *, forge_isize: bool = False) -> Path:
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(np.float32)
    hdr.set_zooms((1.0, 1.0, 1.0))
    hdr["vox_offset"] = 352
    raw = hdr.binaryblock + b"\0" * 4 + np.zeros(10, np.float32).tobytes()
    data = bytearray(gzip.compress(raw))
    if forge_isize:  # the gzip trailer's size field claims the full image
        need = 352 + int(np.prod(shape)) * 4
        data[-4:] = (need % 2**32).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("forge", [False, True])
def test_tiny_float_nifti_declaring_huge_image_is_refused_before_allocation(tmp_path, forge):
    p = _tiny_nifti(tmp_path / "huge.nii.gz", (1200, 1200, 600), forge_isize=forge)
    assert p.stat().st_size < 300
    t = time.monotonic()
    with pytest.raises(WMHLocError) as e:
        read_image(p, what="FLAIR")
    msg = _one_line(e)
    assert str(p) in msg and "truncated" in msg and f"of {352 + 1200 * 1200 * 600 * 4} bytes" in msg
    assert time.monotonic() - t < 10  # no 6.9 GB allocation, no full decompression


# --------------------------------------------------------------------------- item 4: CSV formulas
def test_csv_cells_a_spreadsheet_would_run_are_neutralised(tmp_path):
    cells = {"site": "=cmd|' /C calc'!A0", "id": '=HYPERLINK("http://x","y")', "a": "+1+1", "b": "-1+1",
             "c": "@SUM(1)", "d": "\tx", "e": "\rx", "neg_text": "-3.5", "neg": -3.5, "plus": "+2", "exp": "1e-3",
             "plain": "wmh012", "quote": "'kept"}
    path = write_csv([cells], tmp_path / "t.csv")
    with open(path, newline="", encoding="utf-8") as f:
        raw = next(csv.DictReader(f))
    for k in ("site", "id", "a", "b", "c", "d", "e"):
        assert raw[k] == "'" + cells[k], k
    assert raw["neg_text"] == "-3.5" and raw["neg"] == "-3.5" and raw["plus"] == "+2" and raw["exp"] == "1e-3"
    assert raw["plain"] == "wmh012" and raw["quote"] == "'kept"
    back = read_csv(path)[0]  # our own tables read back as written
    assert back == {k: str(v) if k != "neg" else "-3.5" for k, v in cells.items()}


# ------------------------------------------------------------------- item 7: exclusive output claims
HOLD = textwrap.dedent("""
    import sys, time
    from nnunet_wmhloc.io import atomic_dir
    with atomic_dir(sys.argv[1]) as tmp:
        (tmp / "holder.txt").write_text("first")
        print("holding", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def _holder(out: Path, seconds: float) -> subprocess.Popen:
    p = subprocess.Popen([PY, "-c", HOLD, str(out), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "holding"
    return p


def test_second_writer_of_the_same_output_stops_in_one_line(tmp_path, capsys):
    from nnunet_wmhloc.postprocessing import localize

    lesions, regions = seg_folders(tmp_path / "in")
    out = tmp_path / "loads"
    holder = _holder(out, 60)
    try:
        assert localize.main(["--lesions", str(lesions), "--regions", str(regions), "-o", str(out)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"being written by process {holder.pid}" in err[-1]
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder died (kill -9): its claim and temporary are stale, the next run takes over and sweeps them
    assert localize.main(["--lesions", str(lesions), "--regions", str(regions), "-o", str(out)]) == 0
    assert (out / "regional_loads.csv").is_file() and not (out / "holder.txt").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_output_made_meanwhile_is_not_replaced(tmp_path):
    out = tmp_path / "o"
    with pytest.raises(WMHLocError) as e:
        with atomic_dir(out) as tmp:
            (tmp / "mine").write_text("x")
            out.mkdir()
            (out / "theirs").write_text("y")
    assert "created by another command meanwhile" in _one_line(e)
    assert sorted(p.name for p in out.iterdir()) == ["theirs"]
    f = tmp_path / "f.json"
    with pytest.raises(WMHLocError) as e:
        with atomic_file(f) as tmp:
            tmp.write_text("mine")
            f.write_text("theirs")
    assert "meanwhile" in _one_line(e) and f.read_text() == "theirs"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    with atomic_file(f, overwrite=True) as tmp:  # asked for: replaced
        tmp.write_text("mine")
    assert f.read_text() == "mine"


# ------------------------------------------------------------------- item 14: the file-name limit
@pytest.mark.parametrize("name", ["a" * 250 + ".json", "b" * 255, "é" * 120 + ".json"])
def test_long_legal_names_are_written(tmp_path, name):
    assert len(name.encode()) <= 255
    write_json({"x": 1}, tmp_path / name)
    assert (tmp_path / name).read_text().strip().startswith("{")
    with atomic_dir(tmp_path / ("d" + name[1:])) as tmp:
        (tmp / "x").write_text("1")
    with atomic_dir(tmp_path / ("d" + name[1:]), overwrite=True) as tmp:  # replacing goes through .old too
        (tmp / "x").write_text("2")
    assert (tmp_path / ("d" + name[1:]) / "x").read_text() == "2"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# --------------------------------------------------------------- item 15: stale temporaries swept
KILLED = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from nnunet_wmhloc.io import atomic_dir, atomic_file
    out = Path(sys.argv[1])
    with atomic_file(out / "table.csv") as f, atomic_dir(out / "maps") as d:
        f.write_text("partial")
        (d / "x").write_text("partial")
        os.kill(os.getpid(), 9)
""")


def _dead_pid() -> int:
    p = subprocess.Popen([PY, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temporaries_of_dead_runs_are_swept_only_ours(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    p = subprocess.run([PY, "-c", KILLED, str(out)])
    assert p.returncode == -signal.SIGKILL
    left = sorted(e.name for e in out.iterdir())
    assert len(left) == 4 and sum(".tmp" in n for n in left) == 2 and sum(n.endswith(".wmhloc-lock") for n in left) == 2
    foreign = out / ".notes.txt.abcdefgh.tmp"  # not tagged: maybe not ours, never touched
    foreign.write_text("x")
    live = subprocess.Popen([PY, "-c", "import time; time.sleep(60)"])
    try:
        other_live = out / f".x.w{live.pid}h{temps.HOST}-abcdefgh.tmp"
        other_host = out / f".x.w{_dead_pid()}h{'0000' if temps.HOST != '0000' else '1111'}-abcdefgh.tmp"
        for q in (other_live, other_host):
            q.write_text("x")
        write_csv([{"a": 1}], out / "other.csv")  # a later run writing anything here sweeps the stale ones
        names = sorted(e.name for e in out.iterdir())
        assert names == sorted([foreign.name, other_live.name, other_host.name, "other.csv"])
    finally:
        live.kill()
        live.wait()
    # private folders in $TMPDIR (e.g. the T1 registrations' wmhloc_t1reg_*)
    stale = tmp_path / f"wmhloc_t1reg_w{_dead_pid()}h{temps.HOST}-abcdefgh"
    stale.mkdir()
    (stale / "t1.nii.gz").write_text("x")
    with temps.temp_dir("wmhloc_t1reg_", dir=tmp_path) as d:
        assert d.name.startswith(f"wmhloc_t1reg_w{os.getpid()}h{temps.HOST}-") and not stale.exists()
    assert not d.exists()


# ------------------------------------------------------------------- item 11: --scheduler FILE
@pytest.mark.parametrize("content, says", [
    (bytes(range(256)), "is not JSON"),
    (b'{"address": 12345}', "\"address\" is 12345"),
    (b'["tcp://127.0.0.1:8786"]', "holds a JSON list"),
    (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
    (b'{"address": "tcp://h:1; rm -rf /"}', "not a scheduler address"),
])
def test_hostile_scheduler_files_are_one_line_errors(tmp_path, content, says):
    from nnunet_wmhloc.scheduler_file import read_scheduler_file

    f = tmp_path / "scheduler.json"
    f.write_bytes(content)
    with pytest.raises(WMHLocError) as e:
        read_scheduler_file(f)
    msg = _one_line(e)
    assert str(f) in msg and says in msg


def test_deeply_nested_json_input_is_one_line_error(tmp_path):
    from nnunet_wmhloc.io import read_json

    f = tmp_path / "dataset.json"
    f.write_bytes(b"[" * 100000 + b"]" * 100000)
    with pytest.raises(WMHLocError) as e:
        read_json(f, what="model dataset.json")
    assert "nested too deeply" in _one_line(e)


def test_scheduler_file_as_dask_writes_it(tmp_path):
    from nnunet_wmhloc.scheduler_file import read_scheduler_file

    f = tmp_path / "scheduler.json"
    f.write_text('{"type": "Scheduler", "id": "Scheduler-1", "address": "tcp://10.0.0.5:8786", "services": {}}')
    assert read_scheduler_file(f) == "tcp://10.0.0.5:8786"
