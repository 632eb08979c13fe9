"""wmhloc_evaluate and wmhloc_compare end to end on folders laid out like nnU-Net output."""
import csv
import json
import math
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage, stats

from nnunet_wmhloc import io
from nnunet_wmhloc.vocab import region_column
from nnunet_wmhloc.evaluation import compare, evaluate
from nnunet_wmhloc.evaluation import metrics as M

SPACING = (0.9, 1.2, 3.0)
DIRECTION = (0, 0, 1, -1, 0, 0, 0, 1, 0)
SHAPE = (6, 20, 18)  # z, y, x
SUBJECTS = [f"wmh{i:03d}" for i in range(1, 7)]
SITE = {s: ("Utrecht" if i < 3 else "Singapore") for i, s in enumerate(SUBJECTS)}


def _cmd(name):
    exe = shutil.which(name)
    return [exe] if exe else [sys.executable, "-m", f"nnunet_wmhloc.evaluation.{name.split('_', 1)[1]}"]


def run(name, *args):
    return subprocess.run(_cmd(name) + [str(a) for a in args], capture_output=True, text=True, timeout=300)


def write(arr, path, spacing=SPACING):
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr).astype(np.uint8))
    img.SetSpacing(spacing)
    img.SetDirection(DIRECTION)
    img.SetOrigin((12.0, -30.0, 4.5))
    io.write_image(img, path, overwrite=True)


def lesion_ref(i):
    rng = np.random.default_rng(100 + i)
    ref = (ndimage.gaussian_filter(rng.normal(size=SHAPE), (0.6, 1.5, 1.5)) > 0.3).astype(np.uint8)
    if i % 2 == 0:
        ref[(ndimage.gaussian_filter(rng.normal(size=SHAPE), (0.6, 2, 2)) > 0.35) & (ref == 0)] = 2
    return ref


def degrade(ref, i, amount):
    """A prediction: the reference's lesions with `amount` of voxels dropped plus some false positives."""
    rng = np.random.default_rng(1000 * amount.__hash__() % 997 + i)
    pred = ((ref == 1) & (rng.random(SHAPE) > amount)).astype(np.uint8)
    pred[(rng.random(SHAPE) < amount / 20)] = 1
    return pred


def nnunet_folder(folder: Path):
    folder.mkdir(parents=True)
    for f in ("dataset.json", "plans.json", "predict_from_raw_data_args.json"):
        (folder / f).write_text("{}")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """labelsTs with <subject>_flair/_t1 refs (+ wmh007 without prediction), three prediction folders
    (FLAIR, T1 as nnU-Net case names; fused as subject names), subjects.csv."""
    root = tmp_path_factory.mktemp("cohort")
    refs = root / "labelsTs"
    refs.mkdir()
    arrays = {"ref": {}, "FLAIR": {}, "T1": {}, "fused": {}}
    for i, s in enumerate(SUBJECTS + ["wmh007"]):
        ref = lesion_ref(i)
        arrays["ref"][s] = ref
        for mod in ("flair", "t1"):
            write(ref, refs / f"{s}_{mod}.nii.gz")
    for name, mod, amount in (("FLAIR", "flair", 0.15), ("T1", "t1", 0.5), ("fused", None, 0.25)):
        folder = root / f"pred_{name}"
        nnunet_folder(folder)
        for i, s in enumerate(SUBJECTS):
            ref = arrays["ref"][s]
            pred = degrade(ref, i, amount)
            if name == "FLAIR" and i == 0:
                pred = (ref == 1).astype(np.uint8)   # perfect case: known answers
            if name == "T1" and i == 5:
                pred = np.zeros(SHAPE, np.uint8)     # empty prediction
            arrays[name][s] = pred
            write(pred, folder / (f"{s}_{mod}.nii.gz" if mod else f"{s}.nii.gz"))
    with open(root / "subjects.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subject", "site", "split", "lesion_mm3"])
        for s in SUBJECTS + ["wmh007"]:
            w.writerow([s, SITE.get(s, "Amsterdam"), "test", 1])
    return root, arrays


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def num(x):
    return float(x) if x != "" else math.nan


def run_inprocess(module, *args):
    """A command's main in this process (no interpreter start-up), its exit code and output like run()'s."""
    out, err = StringIO(), StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = module.main([str(a) for a in args])
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


@pytest.fixture(scope="module")
def evaluated(cohort):
    root, arrays = cohort
    outs = {}
    for name in ("FLAIR", "T1", "fused"):
        out = root / f"eval_{name}"
        r = run_inprocess(evaluate, "--pred", root / f"pred_{name}", "--ref", root / "labelsTs", "--task", "lesion",
                          "--output", out, "--sites", root / "subjects.csv")
        assert r.returncode == 0, r.stderr
        outs[name] = (out, r)
    return outs


# ----------------------------------------------------------------------------------------- evaluate
def test_evaluate_lesion_matches_metrics_and_reports_missing(cohort, evaluated):
    root, arrays = cohort
    out, r = evaluated["FLAIR"]
    rows = read_rows(out / "cases.csv")
    assert [x["case"] for x in rows] == [f"{s}_flair" for s in SUBJECTS]
    assert {x["site"] for x in rows} == {"Utrecht", "Singapore"}
    for x in rows:
        s = x["subject"]
        want = M.lesion_metrics(arrays["FLAIR"][s], arrays["ref"][s], SPACING, (12.0, -30.0, 4.5), DIRECTION)
        for k in ("dice", "hd95_mm", "avd_pct", "lesion_recall", "lesion_f1", "log_vd", "vol_ref_ml"):
            assert num(x[k]) == pytest.approx(want[k], rel=1e-5), (s, k)
        assert x["ref_file"] == f"{s}_flair.nii.gz"
    perfect = rows[0]
    assert (num(perfect["dice"]), num(perfect["hd95_mm"]), num(perfect["avd_pct"]),
            num(perfect["lesion_recall"]), num(perfect["lesion_f1"])) == (1.0, 0.0, 0.0, 1.0, 1.0)
    summ = json.loads((out / "summary.json").read_text())
    assert summ["task"] == "lesion" and summ["n_cases"] == 6
    assert summ["missing_predictions"] == ["wmh007"]
    assert "wmh007" in r.stderr
    assert set(summ["summary"]) == {"all", "Utrecht", "Singapore"}
    d = [num(x["dice"]) for x in rows]
    assert summ["summary"]["all"]["dice"]["mean"] == pytest.approx(np.mean(d), rel=1e-5)
    assert summ["summary"]["all"]["dice"]["sd"] == pytest.approx(np.std(d, ddof=1), rel=1e-4)
    assert summ["summary"]["Utrecht"]["dice"]["median"] == pytest.approx(np.median(d[:3]), rel=1e-5)
    srows = read_rows(out / "summary.csv")
    assert {(x["group"], x["metric"]) for x in srows} >= {("all", "hd95_mm"), ("Singapore", "lesion_f1")}


def test_evaluate_empty_prediction_case_and_subject_matching(cohort, evaluated):
    root, arrays = cohort
    rows = read_rows(evaluated["T1"][0] / "cases.csv")
    empty = [x for x in rows if x["subject"] == "wmh006"][0]
    assert empty["hd95_mm"] == "" and empty["log_vd"] == ""      # NaN: written as empty cells
    assert num(empty["dice"]) == 0.0 and num(empty["avd_pct"]) == 100.0 and num(empty["lesion_f1"]) == 0.0
    summ = json.loads((evaluated["T1"][0] / "summary.json").read_text())
    assert summ["summary"]["all"]["hd95_mm"]["n"] == 5 and summ["summary"]["all"]["hd95_mm"]["n_nan"] == 1
    # fused predictions are named by subject; they match the case-named references by subject id
    fused = read_rows(evaluated["fused"][0] / "cases.csv")
    assert [x["case"] for x in fused] == SUBJECTS
    assert all(x["ref_file"] == f"{x['subject']}_flair.nii.gz" for x in fused)


def test_evaluate_region_task(tmp_path):
    ref = np.zeros(SHAPE, np.uint8)
    ref[:, :10, :9] = 1
    ref[:, :10, 9:] = 18
    ref[:, 10:, :] = 35
    pred = ref.copy()
    pred[:, :10, 7:9] = 18          # region 1 loses 2 of 9 columns to region 18
    pred[0, 0, 0] = 5               # a region absent from the reference
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    write(pred, tmp_path / "pred" / "wmh001_t1.nii.gz")
    write(ref, tmp_path / "ref" / "wmh001_t1.nii.gz")
    r = run("wmhloc_evaluate", "--pred", tmp_path / "pred", "--ref", tmp_path / "ref", "--task", "region",
            "--output", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    row = read_rows(tmp_path / "out" / "cases.csv")[0]
    n1 = 6 * 10 * 9
    d1 = 2 * (6 * 10 * 7 - 1) / ((6 * 10 * 7 - 1) + n1)
    d18 = 2 * (6 * 10 * 9) / (6 * 10 * 11 + 6 * 10 * 9)
    assert num(row[region_column(1)]) == pytest.approx(d1, rel=1e-5)
    assert num(row[region_column(18)]) == pytest.approx(d18, rel=1e-5)
    assert num(row[region_column(5)]) == 0.0
    assert row[region_column(2)] == ""                 # absent from both: NaN, not in the mean
    assert num(row["mean_dice_wm"]) == pytest.approx((d1 + d18 + 0.0) / 3, rel=1e-5)
    assert num(row["mean_dice_rest"]) == 1.0 and row["n_regions_scored"] == "3"
    # every voxel is a region in both maps; the 2 columns of region 1 taken by 18 changed hemisphere (5 on 1: not)
    assert num(row["wrong_hemisphere"]) == pytest.approx(6 * 10 * 2 / np.prod(SHAPE), rel=1e-6)
    summ = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summ["summary"]["all"]["wrong_hemisphere"]["mean"] == pytest.approx(num(row["wrong_hemisphere"]))


# ----------------------------------------------------------------------------------------- bad input
def _setup_pair(tmp_path, pred_spacing=SPACING, pred_values=None):
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    ref = lesion_ref(0)
    write(ref, tmp_path / "ref" / "wmh001_flair.nii.gz")
    pred = (ref == 1).astype(np.uint8) if pred_values is None else pred_values
    write(pred, tmp_path / "pred" / "wmh001_flair.nii.gz", spacing=pred_spacing)
    return ["--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "--task", "lesion",
            "--output", str(tmp_path / "out")]


def _err(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_geometry_mismatch_is_one_line_error_naming_the_file(tmp_path):
    args = _setup_pair(tmp_path, pred_spacing=(1.0, 1.2, 3.0))
    r = run("wmhloc_evaluate", *args)
    assert r.returncode == 1
    err = r.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert "pred/wmh001_flair.nii.gz" in err and "spacing" in err
    assert not (tmp_path / "out").exists()


def test_unmatched_prediction_and_bad_labels(tmp_path, capsys):
    args = _setup_pair(tmp_path)
    write(lesion_ref(1), tmp_path / "pred" / "other042_flair.nii.gz")
    assert evaluate.main(args) == 1
    assert "other042_flair" in _err(capsys)
    (tmp_path / "pred" / "other042_flair.nii.gz").unlink()
    bad = (lesion_ref(0) == 1).astype(np.uint8) * 5
    write(bad, tmp_path / "pred" / "wmh001_flair.nii.gz")
    assert evaluate.main(args) == 1
    err = _err(capsys)
    assert "wmh001_flair.nii.gz" in err and "[5]" in err
    assert not (tmp_path / "out").exists()


def test_overwrite_sites_and_empty_folder(tmp_path, capsys):
    args = _setup_pair(tmp_path)
    assert evaluate.main(args) == 0
    capsys.readouterr()
    assert evaluate.main(args) == 1
    assert "--overwrite" in _err(capsys)
    assert evaluate.main(args + ["--overwrite"]) == 0
    capsys.readouterr()
    (tmp_path / "s.csv").write_text("subject,scanner\nwmh001,GE\n")
    assert evaluate.main(args + ["--overwrite", "--sites", str(tmp_path / "s.csv")]) == 1
    assert "s.csv" in (e := _err(capsys)) and "site" in e
    assert evaluate.main(args + ["--overwrite", "--sites", str(tmp_path / "s.csv"), "--site-column", "scanner"]) == 0
    capsys.readouterr()
    assert read_rows(tmp_path / "out" / "cases.csv")[0]["site"] == "GE"
    assert "GE" in json.loads((tmp_path / "out" / "summary.json").read_text())["summary"]
    empty = tmp_path / "empty_pred"
    nnunet_folder(empty)
    args[1] = str(empty)
    assert evaluate.main(args + ["--overwrite"]) == 1
    assert "empty_pred" in _err(capsys)


# ----------------------------------------------------------------------------------------- compare
def test_compare_table_wilcoxon_plots_and_published(cohort, evaluated):
    root, _ = cohort
    out = root / "compare"
    res = [f"{n}={evaluated[n][0]}" for n in ("FLAIR", "T1", "fused")]
    r = run("wmhloc_compare", "--results", *res, "--output", out, "--published")
    assert r.returncode == 0, r.stderr
    cases = {n: read_rows(evaluated[n][0] / "cases.csv") for n in ("FLAIR", "T1", "fused")}
    table = read_rows(out / "table.csv")
    row = [x for x in table if x["setting"] == "T1" and x["group"] == "all" and x["metric"] == "dice"][0]
    assert num(row["mean"]) == pytest.approx(np.mean([num(x["dice"]) for x in cases["T1"]]), rel=1e-5)
    assert {x["group"] for x in table} == {"all", "Utrecht", "Singapore"}
    w = read_rows(out / "wilcoxon.csv")
    pair = [x for x in w if x["metric"] == "dice" and x["setting_a"] == "FLAIR" and x["setting_b"] == "T1"][0]
    a = [num(x["dice"]) for x in cases["FLAIR"]]
    b = [num(x["dice"]) for x in cases["T1"]]
    assert num(pair["p"]) == pytest.approx(stats.wilcoxon(a, b).pvalue, rel=1e-4)
    assert int(pair["n_pairs"]) == 6
    hd = [x for x in w if x["metric"] == "hd95_mm" and x["setting_b"] == "T1"][0]
    assert int(hd["n_pairs"]) == 5                     # the empty T1 prediction has no HD95
    assert len(w) == 6 * 3
    for m in ("dice", "hd95_mm", "lesion_f1"):
        png, svg = out / f"violin_sites_{m}.png", out / f"violin_sites_{m}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert "<svg" in svg.read_text()[:2000] and "Utrecht" in svg.read_text()
    md = (out / "table.md").read_text()
    assert "| FLAIR | 6 |" in md and "±" in md
    # published results printed beside ours, with the citation
    assert "sysu_media" in r.stdout and "0.77" in r.stdout and "21.88" in r.stdout
    assert "Kuijf" in r.stdout and "Machnio" in r.stdout
    pub = read_rows(out / "published_comparison.csv")
    assert {x["kind"] for x in pub} == {"ours", "published"}
    assert json.loads((out / "compare.json").read_text())["n_subjects"] == 6


def test_compare_regions_violin(tmp_path):
    ref = np.zeros(SHAPE, np.uint8)
    ref[:, :10, :9], ref[:, :10, 9:], ref[:, 10:, :9], ref[:, 10:, 9:] = 1, 18, 35, 36
    (tmp_path / "ref").mkdir()
    outs = []
    for name, shift in (("T1", 1), ("FLAIR", 3)):
        (tmp_path / name).mkdir()
        for i, s in enumerate(SUBJECTS[:4]):
            write(ref, tmp_path / "ref" / f"{s}_t1.nii.gz") if name == "T1" else None
            pred = np.roll(ref, shift + i % 2, axis=2)
            write(pred, tmp_path / name / f"{s}_{name.lower()}.nii.gz")
        o = tmp_path / f"eval_{name}"
        assert evaluate.main(["--pred", str(tmp_path / name), "--ref", str(tmp_path / "ref"), "--task", "region",
                              "--output", str(o)]) == 0
        outs.append(f"{name}={o}")
    assert compare.main(["--results", *outs, "--output", str(tmp_path / "cmp")]) == 0
    png = tmp_path / "cmp" / "violin_regions.png"
    assert png.read_bytes()[:4] == b"\x89PNG" and (tmp_path / "cmp" / "violin_regions.svg").is_file()
    reg = read_rows(tmp_path / "cmp" / "regions.csv")
    r1 = [x for x in reg if x["setting"] == "T1" and x["label"] == "1"][0]
    assert int(r1["n"]) == 4 and num(r1["mean"]) > [num(x["mean"]) for x in reg
                                                    if x["setting"] == "FLAIR" and x["label"] == "1"][0]
    assert [x for x in reg if x["label"] == "2"][0]["n"] == "0"   # region absent everywhere


def test_compare_bad_inputs(cohort, evaluated, tmp_path, capsys):
    root, _ = cohort
    fl = f"FLAIR={evaluated['FLAIR'][0]}"
    assert compare.main(["--results", fl, "--output", str(tmp_path / "o")]) == 1
    assert "two or more" in _err(capsys)
    assert compare.main(["--results", fl, f"T1={tmp_path / 'nowhere'}", "--output", str(tmp_path / "o")]) == 1
    assert "nowhere" in _err(capsys)
    assert compare.main(["--results", fl, "T1", "--output", str(tmp_path / "o")]) == 1
    assert "NAME=DIR" in _err(capsys)
    # a region evaluation cannot be compared with a lesion one
    reg = tmp_path / "reg"
    (tmp_path / "rp").mkdir()
    (tmp_path / "rr").mkdir()
    write(np.ones(SHAPE, np.uint8), tmp_path / "rp" / "wmh001_t1.nii.gz")
    write(np.ones(SHAPE, np.uint8), tmp_path / "rr" / "wmh001_t1.nii.gz")
    assert evaluate.main(["--pred", str(tmp_path / "rp"), "--ref", str(tmp_path / "rr"), "--task", "region",
                          "--output", str(reg)]) == 0
    capsys.readouterr()
    assert compare.main(["--results", fl, f"R={reg}", "--output", str(tmp_path / "o")]) == 1
    assert "task region differs" in _err(capsys)
    # a folder that is not an evaluation output
    assert compare.main(["--results", fl, f"X={tmp_path / 'rp'}", "--output", str(tmp_path / "o")]) == 1
    assert "summary.json" in _err(capsys)
    # one folder holding both modalities of a subject cannot be paired by subject
    dup = tmp_path / "dup"
    shutil.copytree(evaluated["T1"][0], dup)
    rows = read_rows(dup / "cases.csv")
    rows.append(dict(rows[0], case=rows[0]["subject"] + "_flair"))
    io.write_csv(rows, dup / "cases.csv", overwrite=True)
    assert compare.main(["--results", fl, f"D={dup}", "--output", str(tmp_path / "o")]) == 1
    assert "--include" in _err(capsys)
    assert not (tmp_path / "o").exists()


def test_region_evaluate_against_the_authors_maps(shared_data, tmp_path):
    # --ref is the authors' folder itself (WMH_<id>.nii.gz); predictions WMH_<id>_t1 match by subject
    train = shared_data / "wmhlocalization" / "WMH_refined_labels" / "Train"
    (tmp_path / "pred").mkdir()
    for sid, shift in (("WMH_0", 0), ("WMH_2", 1)):
        labels, img = io.read_labels(train / f"{sid}.nii.gz")
        out = sitk.GetImageFromArray(np.roll(labels, shift, axis=2).astype(np.uint8))
        out.CopyInformation(img)
        io.write_image(out, tmp_path / "pred" / f"{sid}_t1.nii.gz")
    r = run("wmhloc_evaluate", "--pred", tmp_path / "pred", "--ref", train, "--task", "region",
            "--output", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    rows = {x["subject"]: x for x in read_rows(tmp_path / "out" / "cases.csv")}
    assert num(rows["WMH_0"]["mean_dice_wm"]) == 1.0 and rows["WMH_0"]["n_regions_scored"] == "34"
    assert 0.5 < num(rows["WMH_2"]["mean_dice_wm"]) < 1.0
    summ = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert len(summ["missing_predictions"]) == len(list(train.glob("*.nii.gz"))) - 2


def test_include_selects_one_modality(tmp_path, capsys):
    args = _setup_pair(tmp_path)                       # wmh001_flair in pred and ref
    ref = lesion_ref(0)
    write(ref, tmp_path / "ref" / "wmh001_t1.nii.gz")
    write(np.zeros(SHAPE, np.uint8), tmp_path / "pred" / "wmh001_t1.nii.gz")
    assert evaluate.main(args + ["--include", "*_t1"]) == 0
    capsys.readouterr()
    rows = read_rows(tmp_path / "out" / "cases.csv")
    assert [x["case"] for x in rows] == ["wmh001_t1"] and num(rows[0]["dice"]) == 0.0
    assert evaluate.main(args + ["--include", "*_pd", "--overwrite"]) == 1
    assert "--include" in _err(capsys)


# ----------------------------------------------------------------------------------------- subject ids
def test_authors_references_pair_with_subject_named_predictions(shared_data, tmp_path):
    # the authors' release names region maps WMH_<id>; the converter's subjects are wmh<id:03d>
    test = shared_data / "wmhlocalization" / "WMH_refined_labels" / "Test"
    pred = tmp_path / "pred"
    pred.mkdir()
    names = {"WMH_12": "wmh012.nii.gz", "WMH_1": "wmh001_flair.nii.gz", "WMH_10": "wmh010_t1.nii.gz"}
    for sid, name in names.items():
        shutil.copyfile(test / f"{sid}.nii.gz", pred / name)
    res = evaluate.evaluate(pred, test, "region", tmp_path / "out")
    assert [(p.case, p.ref.name, p.how) for p in res.pairs] == [
        ("wmh001_flair", "WMH_1.nii.gz", "subject"), ("wmh010_t1", "WMH_10.nii.gz", "subject"),
        ("wmh012", "WMH_12.nii.gz", "subject")]
    assert all(r["mean_dice_wm"] == 1.0 and r["wrong_hemisphere"] == 0.0 for r in res.rows)
    assert [r["subject"] for r in res.rows] == ["wmh001", "wmh010", "wmh012"]
    n_refs = len(list(test.glob("*.nii.gz")))
    assert len(res.missing) == n_refs - 3 and "WMH_111" in res.missing and "WMH_12" not in res.missing
    assert res.paths == [tmp_path / "out" / n for n in ("cases.csv", "summary.csv", "summary.json")]
    on_disk = read_rows(tmp_path / "out" / "cases.csv")
    assert [(x["case"], x["ref_file"], num(x["mean_dice_wm"])) for x in on_disk] == \
        [(r["case"], r["ref_file"], r["mean_dice_wm"]) for r in res.rows]
    assert res.summary["all"]["mean_dice_wm"]["mean"] == 1.0


def test_unmatched_predictions_error_is_one_short_line(tmp_path, capsys):
    args = _setup_pair(tmp_path)
    for i in range(12):
        write(np.zeros(SHAPE, np.uint8), tmp_path / "pred" / f"other{i:03d}_flair.nii.gz")
    with pytest.raises(io.WMHLocError, match=r"12 prediction\(s\) without a reference .*other004_flair and 7 more$"):
        evaluate.evaluate(tmp_path / "pred", tmp_path / "ref", "lesion", tmp_path / "out")
    assert evaluate.main(args) == 1
    err = _err(capsys)
    assert len(err) < 250 and "other000_flair" in err and "other005_flair" not in err
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------- pipeline stage
def test_evaluate_stage_scores_settings_and_keeps_what_it_made(cohort, evaluated, shared_data, tmp_path):
    from nnunet_wmhloc.layout import RunLayout
    from nnunet_wmhloc.pipeline.common import evaluate_stage
    from nnunet_wmhloc.pipeline.stages import StageContext

    root, _ = cohort
    lay = RunLayout(tmp_path / "run")
    for name, dst in (("FLAIR", lay.predictions("lesion")), ("T1", lay.predictions("lesion")),
                      ("fused", lay.segmentations("lesion"))):
        dst.mkdir(parents=True, exist_ok=True)
        for f in (root / f"pred_{name}").glob("*.nii.gz"):
            shutil.copyfile(f, dst / f.name)
    shutil.copyfile(root / "pred_fused" / "wmh001.nii.gz", lay.segmentations("lesion") / "s99.nii.gz")  # no ref
    # region references as the authors name them, predictions as the converter names subjects
    test = shared_data / "wmhlocalization" / "WMH_refined_labels" / "Test"
    regref = tmp_path / "regref"
    regref.mkdir()
    for sid, subject in (("WMH_1", "wmh001"), ("WMH_12", "wmh012")):
        shutil.copyfile(test / f"{sid}.nii.gz", regref / f"{sid}.nii.gz")
        lay.predictions("region").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(test / f"{sid}.nii.gz", lay.predictions("region") / f"{subject}_t1.nii.gz")
    lay.logs.mkdir(parents=True)
    ctx = StageContext("evaluate", lay.log("evaluate"), {}, lay.root, quiet=True)
    summary = evaluate_stage(ctx, {"lesion": root / "labelsTs", "region": regref}, root / "subjects.csv")
    assert summary == {"lesion": {"settings": ["FLAIR", "T1", "fused"], "unscored_subjects": ["s99"]},
                       "region": {"settings": ["T1"], "unscored_subjects": []}}
    made = ctx.made["evaluate"]
    for name in ("FLAIR", "T1", "fused"):
        res = made["lesion"]["settings"][name]
        assert res.output == lay.evaluation_setting("lesion", name)
        direct = evaluated[name][0]  # the same predictions through wmhloc_evaluate
        assert (res.output / "cases.csv").read_bytes() == (direct / "cases.csv").read_bytes()
        assert (res.output / "summary.csv").read_bytes() == (direct / "summary.csv").read_bytes()
    cmp = made["lesion"]["compare"]
    assert cmp.output == lay.compare("lesion") and cmp.subjects == SUBJECTS
    assert len(read_rows(cmp.output / "wilcoxon.csv")) == len(cmp.tests) == 6 * 3
    assert all(f.is_file() for f in cmp.figures) and (cmp.output / "published_comparison.csv").is_file()
    assert made["region"]["compare"] is None and not lay.compare("region").exists()
    reg = made["region"]["settings"]["T1"]
    assert [(r["case"], r["ref_file"], r["mean_dice_wm"]) for r in reg.rows] == [
        ("wmh001_t1", "WMH_1.nii.gz", 1.0), ("wmh012_t1", "WMH_12.nii.gz", 1.0)]
    log = lay.log("evaluate").read_text()
    assert "6 case(s), task lesion" in log and "Published results beside ours" in log
