"""End to end: `wmhloc_run --cohort` (a CSV cohort with a train/test split) and `wmhloc_run --release` (the
challenge layout with --split paper), through the real nnU-Net commands. Both train the smoke trainer (2 epochs
x 3 iterations): what is under test is the pipeline's plumbing on these inputs, not the models (the demo test
checks that a real, if tiny, training learns)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from conftest import SHARED, SMOKE, run_cmd
from nnunet_wmhloc.io import write_csv
from test_pipeline_demo import DEMO_ONLY, STAGES, _csv, _in_process, check_report_offline


def _done(out: Path, stage: str) -> dict:
    return json.loads((out / "stages" / f"{stage}.done").read_text())


def test_run_cohort_csv(cohort_csv, cohort_run):
    rows = _csv(cohort_csv)
    test = [r for r in rows if r["split"] == "test"]
    out, p = cohort_run["out"], cohort_run["process"]
    for s in STAGES:
        assert (out / "stages" / f"{s}.done").is_file() != (s in DEMO_ONLY), f"{s}\n{p.stdout[-2000:]}"
    conv = _done(out, "convert")["summary"]
    # training cases: FLAIR + T1 of each training subject; the test split went to imagesTs
    assert conv["lesion"]["training_cases"] == 2 * sum(r["split"] == "train" for r in rows)
    assert conv["lesion"]["test_cases"] == 2 * len(test) - 1  # one test subject is FLAIR only
    ds = out / "nnunet" / "nnUNet_raw" / conv["lesion"]["dataset"]
    splits = json.loads((out / "nnunet" / "nnUNet_preprocessed" / ds.name / "splits_final.json").read_text())
    for fold in splits:  # T1 and FLAIR of a subject never straddle a fold
        assert not {c.rsplit("_", 1)[0] for c in fold["val"]} & {c.rsplit("_", 1)[0] for c in fold["train"]}
    # both models trained through nnU-Net with the smoke trainer
    for task, d in (("lesion", "Dataset601"), ("region", "Dataset602")):
        ck = list((out / "nnunet" / "nnUNet_results").glob(f"{d}_*/nnUNetTrainerWMHLoc_smoke__nnUNetPlans__2d/"
                                                            "fold_0/checkpoint_final.pth"))
        assert len(ck) == 1, task
    # every test subject gets fused lesion and region maps on its own FLAIR grid, and a row of loads
    subjects = sorted(r["subject"] for r in test)
    for task in ("lesion", "region"):
        assert sorted(f.name[:-7] for f in (out / "segmentations" / task).glob("*.nii.gz")) == subjects
    flair = {r["subject"]: sitk.ReadImage(r["flair"]) for r in test}
    for s in subjects:
        seg = sitk.ReadImage(str(out / "segmentations" / "lesion" / f"{s}.nii.gz"))
        assert seg.GetSize() == flair[s].GetSize()
        np.testing.assert_allclose(seg.GetSpacing(), flair[s].GetSpacing(), rtol=1e-5)
        np.testing.assert_allclose(seg.GetDirection(), flair[s].GetDirection(), atol=1e-5)
    loads = _csv(out / "localize" / "regional_loads.csv")
    assert sorted(r["subject"] for r in loads) == subjects
    # evaluation only where the CSV gave references: 3 lesion masks, 2 region maps
    ev = _done(out, "evaluate")["summary"]
    lesion = json.loads((out / "evaluation" / "lesion_fused" / "summary.json").read_text())
    region = json.loads((out / "evaluation" / "region_fused" / "summary.json").read_text())
    assert lesion["n_cases"] == 3 and region["n_cases"] == 2, ev
    check_report_offline(out / "report" / "report.html")
    html = (out / "report" / "report.html").read_text()
    assert all(s in html for s in subjects) and str(cohort_csv) in html


def test_run_cohort_bad_csv_stops_at_convert(cohort_csv, tmp_path, capfd):
    """A CSV naming a missing image stops at convert, names the file and writes no dataset."""
    rows = _csv(cohort_csv)
    rows[1]["flair"] = str(tmp_path / "missing_FLAIR.nii.gz")
    bad = write_csv(rows, tmp_path / "bad.csv")
    p = _in_process("wmhloc_run", ["--cohort", bad, "-o", tmp_path / "run", *SMOKE], capfd)
    assert p.returncode == 1
    err = p.stderr.strip().splitlines()[-1]
    assert err.startswith("error: stage 'convert' failed:") and "missing_FLAIR.nii.gz" in err
    assert not list((tmp_path / "run" / "nnunet" / "nnUNet_raw").glob("Dataset*"))


def test_run_release_paper_split_3d(synth_release, tmp_path):
    """--release with --split paper trains on the challenge's test subjects and tests on its training ones, in
    3d_fullres (the GPU default); --atlas (the authors' refined atlas, when the shared data is here) adds the
    cluster's atlas maps."""
    out = tmp_path / "run"
    atlas = SHARED / "wmhlocalization" / "36_labels_merged.nii.gz"
    extra = ["--atlas", atlas] if atlas.is_file() else []
    run_cmd(["wmhloc_run", "--release", synth_release, "--region-labels", synth_release / "region_labels",
             "--split", "paper", "-o", out, *SMOKE, "-c", "3d_fullres", *extra], timeout=1800)
    assert list((out / "nnunet" / "nnUNet_results").glob("Dataset602_*/*__3d_fullres/fold_0/checkpoint_final.pth"))
    for s in STAGES:
        assert (out / "stages" / f"{s}.done").is_file() != (s in DEMO_ONLY), s
    training = {int(p.parent.name) for p in synth_release.glob("training/*/*/wmh.nii.gz")}
    subjects = _csv(out / "nnunet" / "nnUNet_raw" / "Dataset601_WMHLesion" / "subjects.csv")
    tested = sorted(r["subject"] for r in subjects if r["split"] == "test")
    assert {int(r["challenge_id"]) for r in subjects if r["split"] == "test"} == training
    got = sorted(f.name[:-7] for f in (out / "segmentations" / "lesion").glob("*.nii.gz"))
    assert got == tested
    assert sorted(r["subject"] for r in _csv(out / "localize" / "regional_loads.csv")) == tested
    cl = _done(out, "cluster")["summary"]
    if extra and "skipped" not in cl:
        assert list((out / "cluster").glob("*atlas*.png")), "no atlas maps although --atlas was given"
    check_report_offline(out / "report" / "report.html")
