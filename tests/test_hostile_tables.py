"""Issue #16, table and naming classes: non-UTF-8 CSVs, errors naming the CSV and its line, subject ids and
dataset names as path parts (incl. '²'.isdigit()), malformed side files (splits_final.json, a model's
dataset.json, nnU-Net's .pkl)."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from hostile_common import call, leftovers, snapshot, write_map
from test_hostile_outputs import fake_model
from test_postprocessing_cluster import _loads_csv


def _rows(path: Path) -> list[dict]:
    from nnunet_wmhloc.io import read_csv

    return read_csv(path)


class TestCsvEncodings:
    """Latin-1 and UTF-16 CSVs (Excel exports) ended in a UnicodeDecodeError traceback."""

    @pytest.mark.parametrize("encoding", ["utf-16", "cp1252", "utf-8-sig"])
    def test_excel_exports_read_correctly(self, tmp_path, capfd, encoding):
        csv = tiny_cohort(tmp_path / "c", n=2)
        text = csv.read_text().replace("subject,flair,lesion", "subject,flair,lesion,site")
        text = text.replace(".nii.gz\n", ".nii.gz,Zürich\n")
        csv.write_bytes(text.encode(encoding))
        assert call("wmhloc_convert_cohort", [csv, "-o", tmp_path / "inf", "--mode", "predict"], capfd)[0] == 0
        assert [r["site"] for r in _rows(tmp_path / "inf" / "subjects.csv")] == ["Zürich", "Zürich"]

    def test_utf16_regional_loads(self, tmp_path, capfd):
        src = tmp_path / "loads.csv"
        _loads_csv(src, n_per_group=(4, 3, 3), n_zero=0)
        text = src.read_text(encoding="utf-8").replace("s000", "Zürich-000")
        src.write_bytes(text.encode("utf-16"))
        assert call("wmhloc_cluster", [src, "-o", tmp_path / "a", "--k", 3, "--n-init", 2], capfd)[0] == 0
        rows = _rows(tmp_path / "a" / "assignments.csv")
        assert len(rows) == 10 and rows[0]["subject"] == "Zürich-000"

    def test_binary_and_excel_files_one_line(self, tmp_path, capfd):
        (tmp_path / "x.csv").write_bytes(b"\x00\x01garbage\xff" * 10)
        code, err = call("wmhloc_cluster", [tmp_path / "x.csv", "-o", tmp_path / "o"], capfd)
        assert code == 1 and "x.csv: holds NUL bytes" in err
        (tmp_path / "book.csv").write_bytes(b"PK\x03\x04" + b"\x00" * 30)
        code, err = call("wmhloc_convert_cohort", [tmp_path / "book.csv", "-o", tmp_path / "o"], capfd)
        assert code == 1 and "zip/Excel file, not a CSV" in err


def tiny_cohort(root: Path, n: int = 3, regions: bool = False) -> Path:
    """FLAIR + lesion mask (+ region map) per subject, and a cohort CSV listing them."""
    lines = ["subject,flair,lesion" + (",regions" if regions else "")]
    for i in range(1, n + 1):
        s = f"s{i:02d}"
        write_map(root / f"{s}_flair.nii.gz", dtype="float32")
        write_map(root / f"{s}_wmh.nii.gz")
        row = f"{s},{s}_flair.nii.gz,{s}_wmh.nii.gz"
        if regions:
            write_map(root / f"{s}_regions.nii.gz")
            row += f",{s}_regions.nii.gz"
        lines.append(row)
    (root / "cohort.csv").write_text("\n".join(lines) + "\n")
    return root / "cohort.csv"


class TestCsvLineErrors:
    """Some errors named neither the CSV nor the line."""

    def test_cohort_csv_names_file_and_line(self, tmp_path, capfd):
        csv = tiny_cohort(tmp_path / "c")
        csv.write_text(csv.read_text().replace("s02_wmh.nii.gz", "nothere.nii.gz"))
        code, err = call("wmhloc_convert_cohort", [csv, "-o", tmp_path / "raw"], capfd)
        assert code == 1 and f"{csv}: line 3: " in err and "nothere.nii.gz: lesion mask not found" in err
        csv.write_text(csv.read_text().replace("nothere.nii.gz", "s02_flair.nii.gz").replace("s03,", "s 03,"))
        code, err = call("wmhloc_convert_cohort", [csv, "-o", tmp_path / "raw"], capfd)
        assert code == 1 and f"{csv}: line 4: subject id 's 03'" in err
        assert not (tmp_path / "raw").exists()

    def test_region_labels_csv_names_line(self, tmp_path, capfd):
        (tmp_path / "c.csv").write_text("subject,t1\nok,a.nii.gz\n../x,b.nii.gz\n")
        code, err = call("wmhloc_region_labels", ["--input", tmp_path / "c.csv", "--atlas-dir", tmp_path,
                                                  "-o", tmp_path / "o"], capfd)
        assert code == 1 and f"{tmp_path / 'c.csv'}: line 3: subject id '../x'" in err
        assert not (tmp_path / "o").exists() and not (tmp_path.parent / "x.nii.gz").exists()


class TestIdsAsPathParts:
    """`../x`, a blank id, `x/../../y` or '²' wrote outside the output or crashed."""

    @pytest.mark.parametrize("bad", ["../x", "x/../../y", "²", "  ", ".."])
    def test_cohort_subject_ids(self, tmp_path, capfd, bad):
        csv = tiny_cohort(tmp_path / "c", n=2)
        csv.write_text(csv.read_text().replace("s02,", f"{bad},"))
        before = snapshot(tmp_path)
        code, err = call("wmhloc_convert_cohort", [csv, "-o", tmp_path / "inf", "--mode", "predict"], capfd)
        assert code == 1 and f"{csv}: line 3" in err
        assert snapshot(tmp_path) == before

    def test_dataset_name_and_model_id(self, tmp_path, capfd):
        csv = tiny_cohort(tmp_path / "c")
        raw = tmp_path / "deep" / "raw"
        code, err = call("wmhloc_convert_cohort", [csv, "-o", raw, "--name", "x/../../y"], capfd)
        assert code == 1 and "dataset name 'x/../../yLesion'" in err
        assert not (tmp_path / "deep").exists() and not (tmp_path / "yLesion").exists()
        code, err = call("wmhloc_predict", [csv, "-o", tmp_path / "p", "--lesion-model", "²", "--region-model", "602",
                                            "--nnunet-results", tmp_path, "--device", "cpu"], capfd)
        assert code == 1 and "--lesion-model ²" in err
        code, err = call("wmhloc_convert_wmh2017", [tmp_path, "-o", raw, "--region-name", "../z"], capfd)
        assert code == 1 and "dataset name '../z'" in err and not raw.exists()


class TestMalformedSideFiles:
    """A corrupt splits_final.json or model dataset.json, or a .pkl without the expected keys, crashed."""

    def test_corrupt_splits(self, tmp_path, capfd):
        csv = tiny_cohort(tmp_path / "c")
        pre = tmp_path / "pre"
        target = pre / "Dataset611_CohortLesion" / "splits_final.json"
        target.parent.mkdir(parents=True)
        target.write_text("[{\"train\": [")
        argv = [csv, "-o", tmp_path / "raw", "--preprocessed", pre]
        code, err = call("wmhloc_convert_cohort", argv, capfd)
        assert code == 1 and "splits_final.json: already exists" in err and not (tmp_path / "raw").exists()
        assert call("wmhloc_convert_cohort", argv + ["--overwrite"], capfd)[0] == 0
        assert len(json.loads(target.read_text())) >= 2
        # wmhloc_splits on a corrupt file: one line without --overwrite, replaced with it
        target.write_text("{corrupt")
        argv = ["-d", 611, "--raw", tmp_path / "raw", "--preprocessed", pre]
        code, err = call("wmhloc_splits", argv, capfd)
        assert code == 1 and "not a readable splits file" in err
        assert call("wmhloc_splits", argv + ["--overwrite"], capfd)[0] == 0
        assert isinstance(json.loads(target.read_text()), list) and not leftovers(tmp_path)

    def test_corrupt_model_dataset_json(self, tmp_path, capfd):
        csv = tiny_cohort(tmp_path / "c")
        les, reg = fake_model(tmp_path / "m" / "l", 2), fake_model(tmp_path / "m" / "r", 37)
        for text, msg in (("{not json", "is not valid JSON"), ("[1, 2]", "holds a JSON list"),
                          ('{"labels": 3}', "'labels' is not a mapping")):
            (les / "dataset.json").write_text(text)
            code, err = call("wmhloc_predict", [csv, "-o", tmp_path / "p", "--lesion-model", les,
                                                "--region-model", reg, "--device", "cpu"], capfd)
            assert code == 1 and f"{les / 'dataset.json'}" in err and msg in err, err
        assert not (tmp_path / "p").exists()

    def test_pkl_without_expected_keys(self, tmp_path, capfd):
        pytest.importorskip("torch")
        from test_postprocessing_fuse import _image, nnunet_predict_like
        import numpy as np

        rng = np.random.default_rng(0)
        _image(tmp_path / "img.nii.gz", rng)
        nnunet_predict_like(tmp_path / "img.nii.gz", tmp_path / "pred", "s01_flair", 2, rng)
        pkl = tmp_path / "pred" / "s01_flair.pkl"
        props = pickle.loads(pkl.read_bytes())
        for broken in ({"sitk_stuff": {"spacing": props["sitk_stuff"]["spacing"]}},
                       {"sitk_stuff": {"spacing": 3, "origin": None, "direction": None}}):
            pkl.write_bytes(pickle.dumps(broken))
            code, err = call("wmhloc_fuse", [tmp_path / "pred", "-o", tmp_path / "f"], capfd)
            assert code == 1 and f"{pkl}: nnU-Net properties malformed" in err, err
        assert not (tmp_path / "f").exists()
