"""Issue #16, output classes: a command deletes only what it made; an output that is, holds or lies inside
an input is refused; an unusable output location fails early with one line; outputs follow the umask."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from hostile_common import call, leftovers, seg_folders, snapshot, write_map
from nnunet_wmhloc.io import OWNER_MARKER, WMHLocError
from nnunet_wmhloc.pipeline import common
from nnunet_wmhloc.pipeline.stages import StageContext


def fake_model(folder: Path, n_labels: int) -> Path:
    """What resolve_model/model_folds look at: plans.json, dataset.json, fold_0/checkpoint_final.pth."""
    (folder / "fold_0").mkdir(parents=True)
    (folder / "fold_0" / "checkpoint_final.pth").write_bytes(b"")
    (folder / "plans.json").write_text("{}")
    labels = {"background": 0, **{f"l{i}": i for i in range(1, n_labels)}}
    (folder / "dataset.json").write_text(json.dumps({"labels": labels}))
    return folder


@pytest.fixture
def models(tmp_path):
    return (fake_model(tmp_path / "models" / "lesion", 2), fake_model(tmp_path / "models" / "region", 37))


def study_folder(root: Path) -> Path:
    """A user's study folder: images and masks its cohort CSV points to, and their own notes."""
    write_map(root / "images" / "s01_flair.nii.gz", dtype="float32")
    write_map(root / "images" / "s01_wmh.nii.gz")
    (root / "evaluation").mkdir()
    (root / "evaluation" / "notes.xlsx").write_bytes(b"PK\x03\x04 my notes")
    (root / "cohort.csv").write_text("subject,flair,lesion\ns01,images/s01_flair.nii.gz,images/s01_wmh.nii.gz\n")
    return root


class TestOwnership:
    """wmhloc_predict -o DIR deleted the user's images/ and evaluation/ (class: only delete what we made)."""

    def test_predict_into_the_study_folder_is_refused(self, tmp_path, models, capfd, monkeypatch):
        study = study_folder(tmp_path / "study")
        before = snapshot(study)
        monkeypatch.chdir(study)
        code, err = call("wmhloc_predict", ["cohort.csv", "-o", ".", "--lesion-model", models[0],
                                            "--region-model", models[1], "--device", "cpu"], capfd)
        assert code == 1 and "contains the input" in err
        assert snapshot(study) == before

    def test_predict_into_a_user_folder_is_refused(self, tmp_path, models, capfd):
        study = study_folder(tmp_path / "study")
        flair = write_map(tmp_path / "elsewhere" / "s02_flair.nii.gz", dtype="float32")
        cohort = tmp_path / "elsewhere" / "cohort.csv"
        cohort.write_text(f"subject,flair\ns02,{flair}\n")
        (study / "cohort.csv").unlink()
        before = snapshot(study)
        code, err = call("wmhloc_predict", [cohort, "-o", study, "--lesion-model", models[0],
                                            "--region-model", models[1], "--device", "cpu"], capfd)
        assert code == 1 and "not made by nnunet_wmhloc" in err
        assert snapshot(study) == before

    def test_stage_refuses_a_user_subfolder_and_replaces_its_own(self, tmp_path):
        out = tmp_path / "out"
        (out / "evaluation").mkdir(parents=True)
        (out / "evaluation" / "notes.xlsx").write_bytes(b"mine")
        (out / "logs").mkdir()
        ctx = StageContext("evaluate", out / "logs" / "evaluate.log", {}, out, quiet=True)
        with pytest.raises(WMHLocError, match="not made by nnunet_wmhloc"):
            common.evaluate_stage(ctx, {"lesion": None, "region": None}, None)
        assert (out / "evaluation" / "notes.xlsx").read_bytes() == b"mine"
        (out / "evaluation" / "notes.xlsx").unlink()  # an empty folder may be taken over, then it is ours
        common.evaluate_stage(ctx, {"lesion": None, "region": None}, None)
        assert (out / "evaluation" / OWNER_MARKER).is_file()
        (out / "evaluation" / "stale.csv").write_text("from an interrupted run")
        common.evaluate_stage(ctx, {"lesion": None, "region": None}, None)  # ours: replaced
        assert not (out / "evaluation" / "stale.csv").exists()

    def test_overwrite_replaces_only_our_folders(self, tmp_path, capfd):
        les, reg = seg_folders(tmp_path)
        user = tmp_path / "results"
        user.mkdir()
        (user / "thesis.docx").write_text("years of work")
        code, err = call("wmhloc_localize", ["--lesions", les, "--regions", reg, "-o", user, "--overwrite"], capfd)
        assert code == 1 and "not made by nnunet_wmhloc" in err and (user / "thesis.docx").exists()
        out = tmp_path / "loc"
        assert call("wmhloc_localize", ["--lesions", les, "--regions", reg, "-o", out], capfd)[0] == 0
        assert call("wmhloc_localize", ["--lesions", les, "--regions", reg, "-o", out, "--overwrite"], capfd)[0] == 0
        assert (out / "regional_loads.csv").is_file() and not leftovers(tmp_path)


class TestOutputIsInput:
    """An output equal to, containing or inside an input, with --overwrite, destroyed the input."""

    def test_every_command_refuses(self, tmp_path, capfd):
        les, reg = seg_folders(tmp_path / "data")
        loc = tmp_path / "loc"
        assert call("wmhloc_localize", ["--lesions", les, "--regions", reg, "-o", loc], capfd)[0] == 0
        csv_in = loc / "regional_loads.csv"
        cohort = tmp_path / "data" / "cohort.csv"
        cohort.write_text("subject,flair\ns01,lesions/s01.nii.gz\n")
        before = snapshot(tmp_path)
        cases = [
            ("wmhloc_localize", ["--lesions", les, "--regions", reg, "-o", les, "--overwrite"], "is also an input"),
            ("wmhloc_localize", ["--lesions", les, "--regions", reg, "-o", tmp_path / "data", "--overwrite"],
             "contains the input"),
            ("wmhloc_localize", ["--lesions", les, "--regions", reg, "-o", les / "out"], "lies inside the input"),
            ("wmhloc_fuse", [les, "-o", tmp_path / "data", "--overwrite"], "contains the input"),
            ("wmhloc_cluster", [csv_in, "-o", csv_in, "--overwrite"], "is also an input"),
            ("wmhloc_cluster", [csv_in, "-o", loc, "--overwrite"], "contains the input"),
            ("wmhloc_evaluate", ["--pred", les, "--ref", reg, "--task", "lesion", "-o", les, "--overwrite"],
             "is also an input"),
            ("wmhloc_compare", ["--results", f"A={loc}", f"B={les}", "-o", loc, "--overwrite"], "is also an input"),
            ("wmhloc_region_labels", ["--t1", les / "s01.nii.gz", "--atlas-dir", reg, "-o", les / "s01.nii.gz",
                                      "--overwrite"], "is also an input"),
            ("wmhloc_build_atlas", ["--eve-dir", reg, "-o", reg, "--overwrite"], "is also an input"),
            ("wmhloc_convert_cohort", [cohort, "--mode", "predict", "-o", les, "--overwrite"], "contains the input"),
        ]
        for cmd, argv, msg in cases:
            code, err = call(cmd, argv, capfd)
            assert code == 1 and msg in err, (cmd, err)
        assert snapshot(tmp_path) == before


class TestUnusableOutput:
    """Read-only parent, a file in the path, `-o . --overwrite`: one line, before any work."""

    def test_file_in_path_cwd_and_wrong_kind(self, tmp_path, capfd, monkeypatch):
        les, reg = seg_folders(tmp_path)
        (tmp_path / "afile").write_text("x")
        code, err = call("wmhloc_localize", ["--lesions", les, "--regions", reg, "-o", tmp_path / "afile" / "out"],
                         capfd)
        assert code == 1 and "afile: is a file" in err
        code, err = call("wmhloc_localize", ["--lesions", les, "--regions", reg, "-o", tmp_path / "afile",
                                             "--overwrite"], capfd)
        assert code == 1 and "is not a folder" in err and (tmp_path / "afile").read_text() == "x"
        work = tmp_path / "work"
        work.mkdir()
        monkeypatch.chdir(work)
        code, err = call("wmhloc_localize", ["--lesions", les, "--regions", reg, "-o", ".", "--overwrite"], capfd)
        assert code == 1 and "current folder" in err and work.is_dir()

    @pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
    def test_read_only_parent(self, tmp_path, capfd):
        les, reg = seg_folders(tmp_path)
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            code, err = call("wmhloc_localize", ["--lesions", les, "--regions", reg, "-o", ro / "out"], capfd)
            assert code == 1 and "not writable" in err
        finally:
            ro.chmod(0o755)


class TestUmask:
    """Folders were created 0700 and tables 0600 whatever the umask."""

    @pytest.mark.parametrize("umask", [0o022, 0o027])
    def test_outputs_follow_the_umask(self, tmp_path, capfd, umask):
        les, reg = seg_folders(tmp_path)
        old = os.umask(umask)
        try:
            assert call("wmhloc_localize", ["--lesions", les, "--regions", reg, "-o", tmp_path / "o"], capfd)[0] == 0
        finally:
            os.umask(old)
        mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
        assert mode(tmp_path / "o") == 0o777 & ~umask
        assert mode(tmp_path / "o" / "regional_maps") == 0o777 & ~umask
        assert mode(tmp_path / "o" / "regional_loads.csv") == 0o666 & ~umask
