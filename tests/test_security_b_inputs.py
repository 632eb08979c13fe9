"""Issue #21 part B, items 5 and 13: a stage records what its inputs are, so an edited cohort re-runs it
(never "done, skipped" with a subject missing); an inner command's argparse exit reaches the user as one line."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nnunet_wmhloc.dataset_conversion.cohort import convert_cohort
from nnunet_wmhloc.dataset_conversion import cohort as cohort_cmd
from nnunet_wmhloc.io import WMHLocError, read_csv, write_csv
from nnunet_wmhloc.pipeline.common import Cohort
from nnunet_wmhloc.pipeline.stages import Runner, Stage


def _rows(release: Path, ids) -> list[dict]:
    site = {0: "Utrecht", 2: "Utrecht", 50: "Singapore"}  # wmhloc_synth's default training subjects
    return [{"subject": f"s{i}", "flair": release / f"training/{site[i]}/{i}/pre/FLAIR.nii.gz",
             "t1": release / f"training/{site[i]}/{i}/pre/T1.nii.gz"} for i in ids]


def _stages(csv: Path, out: Path) -> list[Stage]:
    cohort = Cohort(csv)

    def convert(ctx):
        done = ctx.call(["wmhloc_convert_cohort", csv, "--mode", "predict"], convert_cohort, csv,
                        subjects=cohort.subjects, mode="predict", output=out / "images", overwrite=True)
        return {"cases": done.cases}

    def listing(ctx):  # a later, cheap stage that reads what convert made
        return {"subjects": sorted(r["subject"] for r in read_csv(out / "images" / "subjects.csv"))}

    return [Stage("convert", convert, {"cohort": str(csv)}, inputs=cohort.fingerprint()),
            Stage("listing", listing)]


def test_added_subject_reruns_the_stages(synth_release, tmp_path):
    csv = write_csv(_rows(synth_release, [0, 2]), tmp_path / "cohort.csv")
    out = tmp_path / "run"
    first = Runner(out, _stages(csv, out), {}, quiet=True).run()
    assert first["listing"]["summary"]["subjects"] == ["s0", "s2"]
    again = Runner(out, _stages(csv, out), {}, quiet=True).run()  # unchanged: skipped
    assert again["convert"]["finished"] == first["convert"]["finished"]
    write_csv(_rows(synth_release, [0, 2, 50]), csv, overwrite=True)
    third = Runner(out, _stages(csv, out), {}, quiet=True).run()
    assert third["listing"]["summary"]["subjects"] == ["s0", "s2", "s50"]
    assert (out / "images" / "s50_flair_0000.nii.gz").is_file()
    marker = json.loads((out / "stages" / "convert.done").read_text())
    assert marker["inputs"]["table"]["sha256"] == Cohort(csv).fingerprint()["table"]["sha256"]


def test_replaced_image_reruns_the_stage(synth_release, tmp_path, capsys):
    import shutil

    rows = _rows(synth_release, [0, 2])
    local = tmp_path / "flair.nii.gz"
    shutil.copy(rows[0]["flair"], local)
    rows[0]["flair"] = local
    csv = write_csv(rows, tmp_path / "cohort.csv")
    out = tmp_path / "run"
    Runner(out, _stages(csv, out), {}).run()
    shutil.copy(synth_release / "training/Utrecht/2/pre/FLAIR.nii.gz", local)  # same CSV, other image
    capsys.readouterr()
    Runner(out, _stages(csv, out), {}).run()
    shown = capsys.readouterr().out
    assert "convert: inputs changed since the last run (1 file(s) changed)" in shown, shown


def _fake_model(root: Path, task: str) -> Path:
    """A folder wmhloc_predict accepts on the command line (labels, plans, a fold) whose checkpoint the
    predict stage refuses: the run stops after convert, which is all this test needs."""
    d = root / task
    labels = {"background": 0, "WMH": 1} if task == "lesion" else {f"r{i}": i for i in range(37)}
    (d / "fold_0").mkdir(parents=True)
    (d / "dataset.json").write_text(json.dumps({"labels": labels, "channel_names": {"0": "MRI"}}))
    (d / "plans.json").write_text("{}")
    (d / "fold_0" / "checkpoint_final.pth").write_bytes(b"not a checkpoint")
    return d


def test_cli_predict_sees_the_added_subject(synth_release, tmp_path):
    csv = write_csv(_rows(synth_release, [0, 2]), tmp_path / "cohort.csv")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "nnunet_wmhloc.pipeline.predict", csv, "-o", out, "--device", "cpu",
           "--lesion-model", _fake_model(tmp_path, "lesion"), "--region-model", _fake_model(tmp_path, "region")]
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    assert p.returncode == 1 and "stage 'predict' failed" in p.stderr, p.stderr
    assert (out / "stages" / "convert.done").is_file()
    write_csv(_rows(synth_release, [0, 2, 50]), csv, overwrite=True)
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    assert "convert: inputs changed since the last run (cohort.csv edited, 2 file(s) added)" in p.stdout, p.stdout
    assert (out / "images" / "s50_flair_0000.nii.gz").is_file()
    assert "s50" in {r["subject"] for r in read_csv(out / "images" / "subjects.csv")}


def test_inner_argparse_exit_is_one_stage_line(tmp_path):
    # what used to escape: a stage calling a command whose argparse exits (message into the stage log)
    stage = Stage("convert", lambda ctx: ctx.call(["wmhloc_convert_cohort", "-cohort.csv"], cohort_cmd._main,
                                                  ["-cohort.csv"]))
    with pytest.raises(WMHLocError) as e:
        Runner(tmp_path / "run", [stage], {}, quiet=True).run()
    msg = str(e.value)
    assert msg.startswith("stage 'convert' failed: ") and "arguments are required: source" in msg, msg
    assert "\n" not in msg


def test_cli_run_dash_cohort_one_line(synth_release, tmp_path):
    csv = write_csv(_rows(synth_release, [0]), tmp_path / "-cohort.csv")
    p = subprocess.run([sys.executable, "-m", "nnunet_wmhloc.pipeline.run", "--cohort=-cohort.csv", "-o", "out",
                        "--quick", "--device", "cpu"], capture_output=True, text=True, cwd=csv.parent)
    err = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 1 and len(err) == 1 and err[0].startswith("error: stage 'convert' failed"), p.stderr


def test_marker_without_inputs_is_adopted_not_redone(synth_release, tmp_path, capsys):
    """A run folder from before inputs were recorded: its stages are kept (no retraining on an upgrade), the
    user is told they were not checked, and from then on a changed input re-runs them."""
    csv = write_csv(_rows(synth_release, [0, 2]), tmp_path / "cohort.csv")
    out = tmp_path / "run"
    first = Runner(out, _stages(csv, out), {}).run()
    marker = out / "stages" / "convert.done"
    old = json.loads(marker.read_text())
    del old["inputs"]
    marker.write_text(json.dumps(old))
    capsys.readouterr()
    again = Runner(out, _stages(csv, out), {}).run()
    shown = capsys.readouterr().out
    assert again["convert"]["finished"] == first["convert"]["finished"], shown
    assert "convert: the last run recorded no inputs (older version): not checked" in shown, shown
    assert json.loads(marker.read_text())["inputs"] == Cohort(csv).fingerprint()
    write_csv(_rows(synth_release, [0, 2, 50]), csv, overwrite=True)
    third = Runner(out, _stages(csv, out), {}, quiet=True).run()
    assert third["listing"]["summary"]["subjects"] == ["s0", "s2", "s50"]
