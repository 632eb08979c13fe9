"""benchmarks/bench_location.py --versus-model --quick runs (one real brain on the challenge grid, region maps
by the atlas and by an untrained 2d region model) and prints its side-by-side figures; no timing is checked."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("nilearn")
BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_location.py"


def test_versus_model_quick_prints_both_figures(shared_data, tmp_path):
    r = subprocess.run([sys.executable, str(BENCH), "--versus-model", "--quick", "--shared", str(shared_data),
                        "--work", str(tmp_path / "work")], capture_output=True, text=True, timeout=3600)
    assert r.returncode == 0, r.stderr[-3000:]
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("region maps, s/subject"))
    atlas, model, ratio = map(float, re.findall(r"(\d+\.\d+)", line))
    assert atlas > 0 and model > 0 and abs(model / atlas - ratio) < 0.06
    assert "1 subjects of (240, 240, 48) voxels" in r.stdout
    for what in ("wall", "CPU"):
        assert any(ln.startswith(f"whole wmhloc_predict --lesions csv, s/subject {what}") for ln in r.stdout.splitlines())
    # both runs made region maps for the subject
    assert (tmp_path / "work" / "atlas" / "segmentations" / "region" / "s0.nii.gz").is_file()
    assert (tmp_path / "work" / "model" / "segmentations" / "region" / "s0.nii.gz").is_file()
