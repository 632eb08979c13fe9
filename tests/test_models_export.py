"""Shareable models: the `choose` stage of a trained run (FLAIR, T1 or fused per task from the cross-validation
probabilities), `wmhloc_export_models` on that run, and `wmhloc_predict --models` in an environment without
any nnU-Net variable: same labels as nnU-Net predicting from the model folders, the expected outputs per
subject (also for a FLAIR-only subject), a BIDS derivative, and one-line errors for bad archives.

Reuses the session's trained smoke run (conftest.cohort_run); trains nothing itself."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import run_cmd
from nnunet_wmhloc.evaluation.metrics import dice, lesion_masks
from nnunet_wmhloc.pipeline import export, models as M, predict


def _csv(path: Path, delimiter=",") -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter=delimiter))


def _arr(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _script(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _clean_env() -> dict:
    """A fresh shell's environment: no nnUNet_* variable at all (not even nnUNet_extTrainer)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet")}
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture(scope="module")
def archive(cohort_run, tmp_path_factory) -> dict:
    zpath = tmp_path_factory.mktemp("archive") / "models.zip"
    assert export.main([str(cohort_run["out"]), "-o", str(zpath)]) == 0
    return {"zip": zpath, "run": cohort_run["out"]}


def test_choice_is_made_from_cross_validation_files(cohort_run):
    """The run's choose stage scored FLAIR, T1 and fused on the fold's validation probabilities; its
    FLAIR and T1 figures are re-derived here from nnU-Net's own validation segmentations."""
    out = cohort_run["out"]
    choice = json.loads((out / "choice" / "fusion.json").read_text())
    for task, ds in (("lesion", "Dataset601_*"), ("region", "Dataset602_*")):
        c = choice[task]
        assert c["source"] == "cross-validation" and c["folds"] == ["0"]
        assert c["choice"] in ("flair", "t1", "fused") and c["subjects"] >= 1
        assert set(c["mean_dice"]) == {"flair", "t1", "fused:0.25", "fused:0.5", "fused:0.75"}
        scored = {k: v for k, v in c["mean_dice"].items() if v is not None}
        assert c["mean_dice"][c["candidate"]] == max(scored.values())
        w = c["weights"]
        assert {"flair": (1.0, 0.0), "t1": (0.0, 1.0)}.get(c["choice"], (w["flair"], w["t1"])) == \
            (w["flair"], w["t1"]) and abs(w["flair"] + w["t1"] - 1) < 1e-9
        model = next((out / "nnunet" / "nnUNet_results").glob(f"{ds}/*__2d"))
        val = model / "fold_0" / "validation"
        labels = next((out / "nnunet" / "nnUNet_raw").glob(ds)) / "labelsTr"
        for mod in ("flair", "t1"):
            scores = []
            for subject in c["per_subject"]:
                pred, ref = _arr(val / f"{subject}_{mod}.nii.gz"), _arr(labels / f"{subject}_flair.nii.gz")
                if task == "lesion":
                    scores.append(dice(*lesion_masks(pred, ref)))
                else:
                    scores.append(np.mean([dice(pred == k, ref == k) for k in np.unique(ref) if k > 0]))
            assert np.isclose(np.nanmean(scores), c["mean_dice"][mod]), (task, mod)
    marker = json.loads((out / "stages" / "choose.done").read_text())["summary"]
    assert marker["lesion"]["choice"] == choice["lesion"]["candidate"]


def test_archive_is_nnunet_export_plus_manifest(archive):
    with zipfile.ZipFile(archive["zip"]) as z:
        names = set(z.namelist())
        man = json.loads(z.read(M.MANIFEST))
    choice = json.loads((archive["run"] / "choice" / "fusion.json").read_text())
    for task in M.TASKS:
        m = man["models"][task]
        assert m["trainer"] == "nnUNetTrainerWMHLoc_smoke" and m["plans"] == "nnUNetPlans"
        assert m["configuration"] == "2d" and m["folds"] == ["0"]
        assert f"{m['path']}/fold_0/checkpoint_final.pth" in names
        assert f"{m['path']}/plans.json" in names and f"{m['path']}/dataset.json" in names
        assert m["cross_validation"]["0"]["cases"] >= 1
        assert man["fusion"][task]["weights"] == choice[task]["weights"]
        assert man["fusion"][task]["mean_dice"] == choice[task]["mean_dice"]
    # only the checkpoints prediction needs
    assert not [n for n in names if n.endswith(("checkpoint_best.pth", "checkpoint_latest.pth", ".npz"))]
    assert len(man["models"]["region"]["labels"]) == 37 and "background" in man["models"]["lesion"]["labels"]
    assert man["nnunet_wmhloc_version"] and man["nnunetv2_version"].startswith("2.8")
    assert man["training_data"]["subjects"]["training"] == 6


@pytest.fixture(scope="module")
def predicted(archive, cohort_csv, tmp_path_factory) -> dict:
    """wmhloc_predict --models on two test subjects (one FLAIR-only), in an environment without nnU-Net
    variables; the region task forced to T1 (--fusion region=t1) so the FLAIR-only subject falls back."""
    rows = [r for r in _csv(cohort_csv) if r["split"] == "test"]
    flair_only = next(r for r in rows if not r["t1"])
    both = next(r for r in rows if r["t1"])
    tmp = tmp_path_factory.mktemp("predict")
    cohort = tmp / "new.csv"
    with open(cohort, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["subject", "flair", "t1"])  # new subjects: no references
        w.writeheader()
        for r in (flair_only, both):
            w.writerow({k: r[k] for k in ("subject", "flair", "t1")})
    out = tmp / "out"
    p = run_cmd([_script("wmhloc_predict"), cohort, "-o", out, "--models", archive["zip"], "--device", "cpu",
                 "--disable-tta", "--fusion", "region=t1"], env=_clean_env(), timeout=900)
    return {"out": out, "flair_only": flair_only["subject"], "both": both["subject"], "rows": (flair_only, both),
            "process": p, "cohort": cohort, "run": archive["run"], "zip": archive["zip"]}


def test_predict_from_archive_matches_model_folders(predicted):
    """Every nnU-Net case prediction equals the run's (nnUNetv2_predict from the model folders, same cases),
    and the fused maps equal wmhloc_fuse of the run's predictions with the archive's weights."""
    out, run = predicted["out"], predicted["run"]
    man = json.loads((out / "stages" / "models.done").read_text())
    assert man["summary"]["models"]["lesion"].endswith("__2d")
    lesion_w = json.loads((run / "choice" / "fusion.json").read_text())["lesion"]["weights"]
    lesion_need = [m for m in ("flair", "t1") if lesion_w[m] > 0]
    fo, both = predicted["flair_only"], predicted["both"]
    expect = {"lesion": sorted([f"{fo}_flair"] + [f"{both}_{m}" for m in lesion_need]),
              "region": sorted([f"{fo}_flair", f"{both}_t1"])}  # region=t1: FLAIR-only subject falls back
    for task in M.TASKS:
        got = sorted(p.name[:-7] for p in (out / "predictions" / task).glob("*.nii.gz"))
        assert got == expect[task], task
        for case in got:
            np.testing.assert_array_equal(_arr(out / "predictions" / task / f"{case}.nii.gz"),
                                          _arr(run / "predictions" / task / f"{case}.nii.gz"), err_msg=case)
    from nnunet_wmhloc.postprocessing import fuse

    ref = out.parent / "refused"
    assert fuse.main([str(run / "predictions" / "lesion"), "-o", str(ref), "--modalities", "flair", "t1",
                      "--weights", str(lesion_w["flair"]), str(lesion_w["t1"])]) == 0
    for s in (fo, both):
        np.testing.assert_array_equal(_arr(out / "segmentations" / "lesion" / f"{s}.nii.gz"),
                                      _arr(ref / f"{s}.nii.gz"))


def test_outputs_per_subject_on_flair_grid(predicted):
    out = predicted["out"] / "results"
    for row in predicted["rows"]:
        s = row["subject"]
        flair = sitk.ReadImage(row["flair"])
        files = {k: out / s / f"{s}_{k}.nii.gz" for k in ("lesion_mask", "lesion_prob", "regions", "regional_lesions")}
        imgs = {k: sitk.ReadImage(str(f)) for k, f in files.items()}
        for k, img in imgs.items():
            assert img.GetSize() == flair.GetSize(), k
            np.testing.assert_allclose(img.GetSpacing(), flair.GetSpacing(), rtol=1e-5)
            np.testing.assert_allclose(img.GetOrigin(), flair.GetOrigin(), atol=1e-3)
            np.testing.assert_allclose(img.GetDirection(), flair.GetDirection(), atol=1e-5)
        prob = sitk.GetArrayFromImage(imgs["lesion_prob"])
        mask = sitk.GetArrayFromImage(imgs["lesion_mask"])
        assert imgs["lesion_prob"].GetPixelID() == sitk.sitkFloat32 and 0 <= prob.min() and prob.max() <= 1
        np.testing.assert_array_equal((prob > 0.5).astype(np.uint8), mask)
        regional = sitk.GetArrayFromImage(imgs["regional_lesions"])
        np.testing.assert_array_equal(regional, np.where(mask == 1, sitk.GetArrayFromImage(imgs["regions"]), 0))
    subjects = {r["subject"]: r for r in _csv(out / "subjects.csv")}
    fo = subjects[predicted["flair_only"]]
    assert fo["region_modalities"] == "flair" and fo["region_fallback"] == "yes" and "no t1" in fo["note"]
    assert subjects[predicted["both"]]["region_modalities"] == "t1"
    assert subjects[predicted["both"]]["region_fallback"] == "no"
    loads = _csv(out / "regional_loads.csv")
    assert sorted(r["subject"] for r in loads) == sorted(subjects)
    for r in loads:
        shares = sum(float(v) for k, v in r.items() if k.endswith("_share"))
        mm3 = sum(float(v) for k, v in r.items() if k.endswith("_mm3") and k[:1] == "r" and k[1:3].isdigit())
        assert np.isclose(mm3 + float(r["outside_mm3"]), float(r["total_mm3"]), rtol=1e-6)
        if float(r["total_mm3"]) > 0:
            assert np.isclose(shares + float(r["outside_mm3"]) / float(r["total_mm3"]), 1, atol=1e-4)
    census = _csv(out / "lesions.csv")
    assert sum(int(r["n_lesions"]) for r in loads) == len(census)


# ----------------------------------------------------------------------------------------- BIDS derivative
BIDS_NAME = re.compile(r"^sub-(?P<sub>[A-Za-z0-9]+)(?:_ses-[A-Za-z0-9]+)?_space-FLAIR_desc-[A-Za-z0-9]+"
                       r"_(?P<suffix>mask|probseg|dseg)\.(?:nii\.gz|json|tsv)$")


def check_bids_derivative(root: Path) -> None:
    """The BIDS derivative naming rules our outputs must follow (sub-<label>[/ses-<label>]/anat/, entities in
    order sub, ses, space, desc; _mask/_probseg/_dseg) and dataset_description.json's required fields."""
    dd = json.loads((root / "dataset_description.json").read_text())
    assert dd["DatasetType"] == "derivative" and dd["BIDSVersion"] and dd["Name"]
    assert dd["GeneratedBy"][0]["Name"] == "nnunet_wmhloc" and dd["GeneratedBy"][0]["Version"]
    assert _csv(root / "participants.tsv", "\t")[0]["participant_id"].startswith("sub-")
    # hidden files (e.g. the ownership marker) are not part of a BIDS dataset, .bidsignore is
    files = [p.relative_to(root) for p in root.rglob("*") if p.is_file()
             and (not p.name.startswith(".") or p.name == ".bidsignore")]
    top = {"dataset_description.json", "participants.tsv", "README.md", ".bidsignore", "lesions.tsv", "lesions.json"}
    for f in files:
        if str(f) in top or f.parts[0] == "phenotype":
            assert str(f) in top or re.fullmatch(r"phenotype/\w+\.(tsv|json)", str(f)), f
            continue
        parts = f.parts
        assert parts[0].startswith("sub-") and parts[-2] == "anat", f
        if len(parts) == 4:
            assert parts[1].startswith("ses-") and f"_{parts[1]}_" in parts[-1], f
        m = BIDS_NAME.match(parts[-1])
        assert m and parts[0] == f"sub-{m['sub']}", f
    suffixes = {BIDS_NAME.match(f.name)["suffix"] for f in files if f.name.endswith(".nii.gz")}
    assert suffixes == {"mask", "probseg", "dseg"}


def bids_validator() -> str | None:
    """bids-validator-deno (PyPI; the official schema validator with its schema bundled: runs offline)."""
    p = Path(sys.executable).parent / "bids-validator-deno"
    return str(p) if p.exists() else shutil.which("bids-validator-deno")


def test_bids_layout_is_a_valid_derivative(predicted, monkeypatch):
    """--layout bids on the same output: only the results stage (and those after it) run again (in this process,
    in the same environment without nnU-Net variables as `predicted`)."""
    out = predicted["out"]
    before = (out / "stages" / "predict.done").stat().st_mtime_ns
    for k in [k for k in os.environ if k.startswith("nnUNet")]:
        monkeypatch.delenv(k)
    assert predict.main([str(predicted["cohort"]), "-o", str(out), "--models", str(predicted["zip"]), "--device",
                         "cpu", "--disable-tta", "--fusion", "region=t1", "--layout", "bids"]) == 0
    assert (out / "stages" / "predict.done").stat().st_mtime_ns == before
    root = out / "results"
    check_bids_derivative(root)
    for s in (predicted["flair_only"], predicted["both"]):
        sub = re.sub(r"[^A-Za-z0-9]", "", s)
        anat = root / f"sub-{sub}" / "anat"
        prob = _arr(anat / f"sub-{sub}_space-FLAIR_desc-lesion_probseg.nii.gz")
        mask = _arr(anat / f"sub-{sub}_space-FLAIR_desc-lesion_mask.nii.gz")
        np.testing.assert_array_equal((prob > 0.5).astype(np.uint8), mask)
        side = json.loads((anat / f"sub-{sub}_space-FLAIR_desc-regions_dseg.json").read_text())
        assert side["SpatialReference"].startswith("file://")
    loads = _csv(root / "phenotype" / "wmhloc_regional_loads.tsv", "\t")
    assert len(loads) == 2 and all(r["participant_id"].startswith("sub-") for r in loads)
    exe = bids_validator()
    if exe is None:
        pytest.skip("bids-validator-deno not installed (pip install -e .[test]): naming rules checked only")
    p = subprocess.run([exe, str(root), "--format", "json"], capture_output=True, text=True, timeout=300)
    issues = json.loads(p.stdout)["issues"]["issues"]
    errors = [(i["code"], i.get("subCode"), i.get("location")) for i in issues if i["severity"] == "error"]
    assert errors == [], errors


def test_bids_checks_catch_wrong_names(tmp_path):
    """The naming check fails on what it must refuse (entity order, missing anat/, derivative type)."""
    root = tmp_path / "d"
    (root / "sub-01" / "anat").mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "x", "BIDSVersion": "1.10.0", "DatasetType": "derivative", "GeneratedBy": [{"Name": "nnunet_wmhloc",
                                                                                               "Version": "1"}]}))
    (root / "participants.tsv").write_text("participant_id\nsub-01\n")
    for suf in ("mask", "probseg", "dseg"):
        (root / "sub-01" / "anat" / f"sub-01_space-FLAIR_desc-lesion_{suf}.nii.gz").write_bytes(b"")
    check_bids_derivative(root)
    bad = root / "sub-01" / "anat" / "sub-01_desc-lesion_space-FLAIR_mask.nii.gz"
    bad.write_bytes(b"")
    with pytest.raises(AssertionError):
        check_bids_derivative(root)


# ------------------------------------------------------------------------------------------- bad archives
def _predict_error(args, out: Path, capsys) -> str:
    assert predict.main(args + ["-o", str(out), "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert not out.exists(), "an archive error must write nothing"
    return err[0]


def test_damaged_or_incompatible_archive(archive, cohort_csv, tmp_path, capsys):
    src = archive["zip"]
    data = src.read_bytes()
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(data[: len(data) // 2])
    err = _predict_error([str(cohort_csv), "--models", str(truncated)], tmp_path / "o1", capsys)
    assert str(truncated) in err and "damaged" in err
    # one flipped byte inside a checkpoint: the zip opens, its checksum does not match
    flipped = tmp_path / "flipped.zip"
    with zipfile.ZipFile(src) as z:
        info = next(i for i in z.infolist() if i.filename.endswith("checkpoint_final.pth"))
    b = bytearray(data)
    pos = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size // 2
    b[pos] ^= 0xFF
    flipped.write_bytes(bytes(b))
    err = _predict_error([str(cohort_csv), "--models", str(flipped)], tmp_path / "o2", capsys)
    assert "damaged" in err
    # manifests of another format version or nnU-Net version
    for key, value, says in (("format_version", 99, "format version 99"),
                             ("nnunetv2_version", "3.0.0", "nnU-Net 3.0.0")):
        other = tmp_path / f"{key}.zip"
        with zipfile.ZipFile(src) as z, zipfile.ZipFile(other, "w") as o:
            for i in z.infolist():
                if i.filename == M.MANIFEST:
                    man = json.loads(z.read(i))
                    man[key] = value
                    o.writestr(M.MANIFEST, json.dumps(man))
                else:
                    o.writestr(i, z.read(i))
        err = _predict_error([str(cohort_csv), "--models", str(other)], tmp_path / f"o_{key}", capsys)
        assert says in err
    notzip = tmp_path / "models.zip"
    notzip.write_text("not a zip")
    assert "damaged or not a model archive" in _predict_error([str(cohort_csv), "--models", str(notzip)],
                                                              tmp_path / "o3", capsys)


def test_fusion_option_parsing():
    f = M.parse_fusion(["lesion=flair", "region=fused:0.7"])
    assert f["lesion"]["weights"] == {"flair": 1.0, "t1": 0.0}
    assert f["region"]["weights"] == {"flair": 0.7, "t1": 0.3}
    assert M.parse_fusion(["t1"])["lesion"]["weights"] == {"flair": 0.0, "t1": 1.0}
    assert M.needed_modalities(f["lesion"], {"flair", "t1"}) == ["flair"]
    assert M.needed_modalities(M.fusion_spec("t1"), {"flair"}) == ["flair"]  # fallback
    assert M.needed_modalities(f["region"], {"flair", "t1"}) == ["flair", "t1"]
    for bad in (["fused:1.5"], ["flair:0.3"], ["pet"], ["brain=flair"]):
        with pytest.raises(M.WMHLocError):
            M.parse_fusion(bad)


def test_export_from_model_folders_chooses_from_their_validation(cohort_run, tmp_path, capsys):
    """Explicit model folders: the fusion is chosen from their own cross-validation probabilities, the same
    choice the run made; a folder not laid out as nnU-Net's results is refused in one line, writing nothing."""
    out = cohort_run["out"]
    folders = {t: next((out / "nnunet" / "nnUNet_results").glob(f"{ds}/*__2d"))
               for t, ds in (("lesion", "Dataset601_*"), ("region", "Dataset602_*"))}
    zpath = tmp_path / "folders.zip"
    assert export.main(["--lesion-model", str(folders["lesion"]), "--region-model", str(folders["region"]),
                        "-o", str(zpath)]) == 0
    with zipfile.ZipFile(zpath) as z:
        man = json.loads(z.read(M.MANIFEST))
    run_choice = json.loads((out / "choice" / "fusion.json").read_text())
    for t in M.TASKS:
        assert man["fusion"][t]["source"] == "cross-validation"
        assert man["fusion"][t]["weights"] == run_choice[t]["weights"]
    odd = tmp_path / "my_model"
    shutil.copytree(folders["lesion"], odd, ignore=shutil.ignore_patterns("*.pth", "validation"))
    capsys.readouterr()
    assert export.main(["--lesion-model", str(odd), "--region-model", str(folders["region"]),
                        "-o", str(tmp_path / "odd.zip")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(odd) in err[0] and "not an nnU-Net results folder" in err[0]
    assert not (tmp_path / "odd.zip").exists()


def test_archive_trainers_must_be_buildable():
    """open_archive accepts budget trainers (made on demand, see pipeline.budget) and ours, refuses unknown ones."""
    assert M.trainer_available("nnUNetTrainerWMHLoc_30epochs_20it_bs8_adamw")
    assert M.trainer_available("nnUNetTrainerWMHLoc_smoke") and M.trainer_available("nnUNetTrainer")
    assert not M.trainer_available("nnUNetTrainerWMHLocFromTheFuture")
