"""wmhloc_cluster: recovers known groups, handles zero loads, refuses impossible K, writes the paper's outputs."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnunet_wmhloc.postprocessing import cluster
from nnunet_wmhloc.postprocessing.loads import mm3_column

# three location patterns (region labels 1..34): left parietal/cingulate, bilateral corona radiata,
# right temporal/occipital
PATTERNS = {1: {1: 0.5, 2: 0.3, 3: 0.2}, 2: {12: 0.4, 29: 0.4, 13: 0.1, 30: 0.1}, 3: {27: 0.6, 26: 0.4}}


def _loads_csv(path: Path, n_per_group=(9, 7, 6), n_zero=2, seed=0, drop=None) -> dict:
    rng = np.random.default_rng(seed)
    truth, rows = {}, []
    i = 0
    for g, n in zip(PATTERNS, n_per_group):
        for _ in range(n):
            prof = np.zeros(35)
            for r, w in PATTERNS[g].items():
                prof[r] = w
            prof[1:] += rng.uniform(0, 0.03, 34)           # a little everywhere
            scale = rng.uniform(500, 40000)                 # load varies 80-fold within a group
            rows.append(("s%03d" % i, prof[1:] / prof[1:].sum() * scale))
            truth["s%03d" % i] = g
            i += 1
    for _ in range(n_zero):
        rows.append(("s%03d" % i, np.zeros(34)))
        truth["s%03d" % i] = 0
        i += 1
    cols = ["subject", "total_mm3"] + [mm3_column(r) for r in range(1, 35)]
    cols = [c for c in cols if c != drop]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for s, v in rows:
            vals = {"subject": s, "total_mm3": v.sum() + 10.0}  # +10: lesions outside WM regions
            vals.update({mm3_column(r): v[r - 1] for r in range(1, 35)})
            w.writerow([vals[c] for c in cols])
    return truth


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_recovers_known_groups(tmp_path):
    from sklearn.metrics import adjusted_rand_score

    truth = _loads_csv(tmp_path / "loads.csv")
    out = tmp_path / "out"
    assert cluster.main([str(tmp_path / "loads.csv"), "-o", str(out), "--k-range", "2", "6"]) == 0
    sil = _read(out / "silhouette.csv")
    assert [int(r["k"]) for r in sil] == [2, 3, 4, 5, 6]
    assert [r["k"] for r in sil if r["chosen"] == "yes"] == ["3"]
    ass = {r["subject"]: r for r in _read(out / "assignments.csv")}
    assert set(ass) == set(truth)
    subj = sorted(truth)
    assert adjusted_rand_score([truth[s] for s in subj], [int(ass[s]["group"]) for s in subj]) == 1.0
    # zero-load subjects: their own group 0, no silhouette, never NaN loads
    assert all(ass[s]["group"] == "0" and ass[s]["group_name"] == "no WM lesions" for s in subj if truth[s] == 0)
    # group table (Table D.1) against numpy on the known groups; group 1 = largest = pattern 1
    table = {int(r["group"]): r for r in _read(out / "groups.csv")}
    assert [table[g]["n_subjects"] for g in (1, 2, 3, 0)] == ["9", "7", "6", "2"]
    with open(tmp_path / "loads.csv", newline="") as f:
        tot = {r["subject"]: float(r["total_mm3"]) for r in csv.DictReader(f)}
    g1 = [tot[s] for s in subj if truth[s] == 1]
    assert float(table[1]["mean_total_mm3"]) == pytest.approx(np.mean(g1), rel=1e-5)
    assert float(table[1]["min_total_mm3"]) == pytest.approx(min(g1), rel=1e-5)
    assert float(table[1]["max_total_mm3"]) == pytest.approx(max(g1), rel=1e-5)
    assert table[1]["main_regions"].startswith("L parietal")
    assert table[1]["n_mostly_left"] == "9" and table[1]["n_mostly_right"] == "0"
    assert table[3]["n_mostly_right"] == "6"
    prof = _read(out / "group_profiles.csv")
    assert len(prof) == 34 and abs(sum(float(r["group_1"]) for r in prof) - 1) < 1e-4
    for f in ("silhouette.png", "silhouette.svg", "heatmap.png", "heatmap.svg"):
        assert (out / f).stat().st_size > 1000
    log = json.loads((out / "cluster_log.json").read_text())
    assert log["k_chosen"] == 3 and len(log["zero_load"]["subjects"]) == 2


def test_fraction_ignores_load_but_raw_does_not(tmp_path):
    """Same location, loads differing 80-fold: 'fraction' keeps them together, 'raw' splits by size."""
    from sklearn.metrics import adjusted_rand_score

    truth = _loads_csv(tmp_path / "loads.csv", n_zero=0)
    res = {}
    for norm in ("fraction", "raw"):
        out = tmp_path / norm
        assert cluster.main([str(tmp_path / "loads.csv"), "-o", str(out), "--k", "3", "--normalise", norm]) == 0
        ass = {r["subject"]: int(r["group"]) for r in _read(out / "assignments.csv")}
        res[norm] = adjusted_rand_score([truth[s] for s in sorted(truth)], [ass[s] for s in sorted(truth)])
    assert res["fraction"] == 1.0 and res["raw"] < 0.9


def test_zero_load_exclude_and_cli(tmp_path):
    truth = _loads_csv(tmp_path / "loads.csv")
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "nnunet_wmhloc.postprocessing.cluster", str(tmp_path / "loads.csv"),
                        "-o", str(out), "--k", "3", "--zero-load", "exclude"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "2 subject(s) without WM lesion volume: excluded" in r.stderr
    ass = _read(out / "assignments.csv")
    assert len(ass) == len(truth) - 2 and all(a["group"] != "0" for a in ass)
    assert {int(t["group"]) for t in _read(out / "groups.csv")} == {1, 2, 3}


def test_atlas_maps(shared_data, tmp_path):
    import matplotlib.image as mpimg

    _loads_csv(tmp_path / "loads.csv")
    out = tmp_path / "out"
    atlas = shared_data / "wmhlocalization" / "36_labels_merged.nii.gz"
    assert cluster.main([str(tmp_path / "loads.csv"), "-o", str(out), "--k", "3", "--atlas", str(atlas)]) == 0
    png = mpimg.imread(out / "atlas_maps.png")
    assert png.shape[0] > 500 and png[..., :3].std() > 0.05  # a real picture, not a blank canvas
    assert (out / "atlas_maps.svg").is_file()


def _snapshot(folder: Path) -> set:
    return {p.relative_to(folder) for p in folder.rglob("*")}


@pytest.mark.parametrize("argv_extra,expect,kw", [
    (["--k", "5"], "fewer than K+1=6", {"n_per_group": (2, 2, 1)}),
    (["--k-range", "7", "8"], "fewer than K+1", {"n_per_group": (2, 2, 2)}),  # no feasible K in the range
    (["--k", "3"], "missing column(s) r12", {"drop": mm3_column(12)}),
    (["--k", "3"], "with WM lesions, fewer than", {"n_per_group": (0, 0, 0), "n_zero": 4}),
    (["--k", "1"], "K must be at least 2", {}),
])
def test_bad_inputs(tmp_path, capsys, argv_extra, expect, kw):
    _loads_csv(tmp_path / "loads.csv", **kw)
    before = _snapshot(tmp_path)
    rc = cluster.main([str(tmp_path / "loads.csv"), "-o", str(tmp_path / "out"), *argv_extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and err[-1].startswith("error: ") and expect in err[-1]
    assert _snapshot(tmp_path) == before


def test_bad_values(tmp_path, capsys):
    _loads_csv(tmp_path / "loads.csv")
    text = (tmp_path / "loads.csv").read_text().splitlines()
    text[3] = text[3].replace(text[3].split(",")[5], "-4", 1)
    (tmp_path / "bad.csv").write_text("\n".join(text) + "\n")
    assert cluster.main([str(tmp_path / "bad.csv"), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "bad.csv: line 4" in err and ">= 0" in err
    assert not (tmp_path / "out").exists()


def test_k_range_skips_ks_the_data_cannot_support(tmp_path):
    """Every subject of a group has the same profile here: 3 distinct profiles. A K range keeps the feasible
    Ks (and says which it skipped); a fixed K=4 is refused."""
    cols = ["subject", "total_mm3"] + [mm3_column(r) for r in range(1, 35)]
    with open(tmp_path / "loads.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for i in range(7):
            v = np.zeros(34)
            for r, share in PATTERNS[1 + i % 3].items():
                v[r - 1] = share * 1000.0
            w.writerow([f"s{i}", v.sum()] + list(v))
    p = subprocess.run([sys.executable, "-m", "nnunet_wmhloc.postprocessing.cluster", str(tmp_path / "loads.csv"),
                        "-o", str(tmp_path / "out"), "--k-range", "2", "5"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "K=4, 5 skipped" in p.stderr
    assert [int(r["k"]) for r in _read(tmp_path / "out" / "silhouette.csv")] == [2, 3]
    groups = {r["subject"]: r["group"] for r in _read(tmp_path / "out" / "assignments.csv")}
    assert len(set(groups.values())) == 3  # the three profiles, K=3 chosen
    p = subprocess.run([sys.executable, "-m", "nnunet_wmhloc.postprocessing.cluster", str(tmp_path / "loads.csv"),
                        "-o", str(tmp_path / "out2"), "--k", "4"], capture_output=True, text=True)
    assert p.returncode == 1 and "only 3 distinct load profiles" in p.stderr
    assert not (tmp_path / "out2").exists()


def test_another_layout_is_one_short_line(tmp_path, capsys):
    """The columns of another layout (here the old `r01_L_parietal` without `_mm3`) are refused in one short
    line naming a few of the missing columns, not every column of the table."""
    from nnunet_wmhloc.vocab import region_column

    _loads_csv(tmp_path / "loads.csv")
    text = (tmp_path / "loads.csv").read_text().splitlines()
    text[0] = ",".join(c[:-len("_mm3")] if c.startswith("r") else c for c in text[0].split(","))
    (tmp_path / "old.csv").write_text("\n".join(text) + "\n")
    assert cluster.main([str(tmp_path / "old.csv"), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and len(err[0]) < 300, err
    assert f"missing column(s) {mm3_column(1)}, {mm3_column(2)}, {mm3_column(3)} and 31 more" in err[0]
    assert region_column(4) not in err[0]  # the table's own columns are not listed
    assert not (tmp_path / "out").exists()


def test_function_and_cli_agree(tmp_path):
    """cluster() in-process and the command give the same files; the result holds the rows as they read back."""
    from nnunet_wmhloc.io import read_csv

    _loads_csv(tmp_path / "loads.csv")
    notes = []
    res = cluster.cluster(tmp_path / "loads.csv", tmp_path / "fn", k_range=(2, 5), n_init=5, say=notes.append)
    assert cluster.main([str(tmp_path / "loads.csv"), "-o", str(tmp_path / "cli"), "--k-range", "2", "5",
                         "--n-init", "5"]) == 0
    for name in ("assignments.csv", "groups.csv", "group_profiles.csv", "silhouette.csv", "cluster_log.json"):
        assert (tmp_path / "fn" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes(), name
    assert res.assignments == read_csv(tmp_path / "fn" / "assignments.csv")
    assert res.groups == read_csv(tmp_path / "fn" / "groups.csv")
    assert res.profiles == read_csv(tmp_path / "fn" / "group_profiles.csv")
    assert res.silhouette == read_csv(tmp_path / "fn" / "silhouette.csv")
    assert res.k == 3 and res.log["k_chosen"] == 3 and sorted(res.figures)[0] == "heatmap.png"
    assert notes == ["note: 2 subject(s) without WM lesion volume: group 0 'no WM lesions' (s022, s023)"]
    # the same from the rows and from a plan made once (what the pipeline does)
    rows = read_csv(tmp_path / "loads.csv")
    plan = cluster.plan_clustering(rows, k_range=(2, 5), source=str(tmp_path / "loads.csv"))
    assert plan.ks == [2, 3, 4, 5] and plan.feasible and plan.clustered == 22
    again = cluster.cluster(plan, tmp_path / "plan", n_init=5, say=notes.append)
    assert again.assignments == res.assignments and again.log == res.log


def test_plan_cuts_the_range_once(tmp_path):
    """Two distinct profiles among four subjects: the plan keeps K=2 only and says which Ks it skipped."""
    rows = [{"subject": f"s{i}", **{mm3_column(r): "0" for r in range(1, 35)}} for i in range(4)]
    for i, row in enumerate(rows):
        row[mm3_column(1 if i % 2 else 20)] = str(10.0 * (i + 1))
    plan = cluster.plan_clustering(rows, k_range=(2, 8))
    assert plan.ks == [2] and plan.feasible and plan.n_distinct == 2
    assert plan.notes == ["note: K=3, 4, 5, 6, 7, 8 skipped: 4 subjects with WM lesions, 2 distinct load profiles"]
    assert not cluster.plan_clustering(rows[:2], k_range=(2, 8)).feasible
