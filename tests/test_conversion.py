"""wmhloc_synth, wmhloc_convert_wmh2017, wmhloc_splits: layout, labels, folds, nnU-Net acceptance, bad input."""
import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import run_cmd
from nnunet_wmhloc.dataset_conversion.common import grouped_splits
from nnunet_wmhloc.synth import make_cohort

ARR = lambda p: sitk.GetArrayFromImage(sitk.ReadImage(str(p)))  # noqa: E731


def _subject_dirs(release: Path):
    return sorted(p.parent for p in release.rglob("wmh.nii.gz"))


# ----------------------------------------------------------------------------------------- synth
def test_synth_layout_and_determinism(synth_release, tmp_path):
    dirs = _subject_dirs(synth_release)
    rel = {str(d.relative_to(synth_release).parent) for d in dirs}
    assert {"training/Utrecht", "training/Singapore", "training/GE3T", "test/Amsterdam/GE1T5",
            "test/Amsterdam/Philips_VU .PETMR_01."} <= rel
    assert len(dirs) == 11
    sizes = {sitk.ReadImage(str(d / "pre" / "FLAIR.nii.gz")).GetSize() for d in dirs}
    assert len(sizes) >= 3  # sites differ in matrix size
    again = make_cohort(tmp_path / "again", seed=0, show_progress=False)
    other = make_cohort(tmp_path / "other", seed=1, show_progress=False)
    d0 = dirs[0].relative_to(synth_release)
    np.testing.assert_array_equal(ARR(synth_release / d0 / "pre/FLAIR.nii.gz"),
                                  ARR(tmp_path / "again" / d0 / "pre/FLAIR.nii.gz"))
    assert not np.array_equal(ARR(synth_release / d0 / "wmh.nii.gz"), ARR(tmp_path / "other" / d0 / "wmh.nii.gz"))
    assert len(again) == len(other) == 11


def test_synth_lesions_look_like_wmh(synth_release):
    n_label2 = 0
    for d in _subject_dirs(synth_release):
        wmh = ARR(d / "wmh.nii.gz")
        flair, t1 = ARR(d / "pre/FLAIR.nii.gz"), ARR(d / "pre/T1.nii.gz")
        n_label2 += int((wmh == 2).any())
        split = "Train" if "training" in d.parts else "Test"
        rmap = synth_release / "region_labels" / split / f"WMH_{d.name}.nii.gz"
        if rmap.exists() and (wmh == 1).sum() > 100:  # tiny lesions blur away on T1
            regions = ARR(rmap)
            les = wmh == 1
            assert (regions[les] > 0).all()  # lesions lie inside WM
            wm = (regions > 0) & ~les
            assert flair[les].mean() > 1.3 * flair[wm].mean()  # bright on FLAIR
            assert t1[les].mean() < 0.85 * t1[wm].mean()  # dark on T1
    assert n_label2 >= 1


# ------------------------------------------------------------------------------------- converter
def test_converted_datasets(converted, synth_release):
    les, reg = converted["lesion"], converted["region"]
    dj = json.loads((les / "dataset.json").read_text())
    assert dj["labels"] == {"background": 0, "WMH": 1, "ignore": 2}
    assert max(dj["labels"].values()) == dj["labels"]["ignore"]
    assert dj["channel_names"] == {"0": "MRI"} and "ignore" in dj["description"]
    subjects = {f.name.rsplit("_", 2)[0] for f in (les / "imagesTr").glob("*_0000.nii.gz")}
    assert len(subjects) == 6 and dj["numTraining"] == 12
    for s in subjects:  # two single-channel cases per subject, one shared label map
        assert (les / "imagesTr" / f"{s}_flair_0000.nii.gz").exists()
        assert (les / "imagesTr" / f"{s}_t1_0000.nii.gz").exists()
        np.testing.assert_array_equal(ARR(les / "labelsTr" / f"{s}_flair.nii.gz"),
                                      ARR(les / "labelsTr" / f"{s}_t1.nii.gz"))
    src = synth_release / "training" / "Utrecht" / "0"
    np.testing.assert_array_equal(ARR(les / "labelsTr" / "wmh000_flair.nii.gz"), ARR(src / "wmh.nii.gz"))
    np.testing.assert_allclose(ARR(les / "imagesTr" / "wmh000_t1_0000.nii.gz"), ARR(src / "pre/T1.nii.gz"))
    assert len(list((les / "imagesTs").glob("*.nii.gz"))) == 10

    rows = {r.split(",")[0]: r.split(",") for r in (les / "subjects.csv").read_text().splitlines()}
    header = rows.pop("subject")
    row = dict(zip(header, rows["wmh000"]))
    img = sitk.ReadImage(str(src / "wmh.nii.gz"))
    expect = (ARR(src / "wmh.nii.gz") == 1).sum() * np.prod(img.GetSpacing())
    assert float(row["lesion_volume_mm3"]) == pytest.approx(expect, rel=1e-5)
    assert row["site"] == "Utrecht" and row["split"] == "train"
    assert dict(zip(header, rows["wmh171"]))["site"] == "Amsterdam"

    # region dataset: the subject without a map is left out of it only
    rj = json.loads((reg / "dataset.json").read_text())
    assert sorted(rj["labels"].values()) == list(range(37))
    assert not list((reg / "imagesTs").glob("wmh171_*"))
    assert list((les / "imagesTs").glob("wmh171_*"))


def test_splits_grouped_by_subject(converted):
    env = converted["env"]
    for ds in ("Dataset601_WMHLesion", "Dataset602_WMHRegion"):
        splits = json.loads((Path(env["nnUNet_preprocessed"]) / ds / "splits_final.json").read_text())
        assert len(splits) == 5
        all_val = [c for f in splits for c in f["val"]]
        assert len(all_val) == len(set(all_val)) == 12
        for f in splits:
            val_subj = {c.rsplit("_", 1)[0] for c in f["val"]}
            train_subj = {c.rsplit("_", 1)[0] for c in f["train"]}
            assert not val_subj & train_subj


def test_grouped_splits_keeps_modalities_together():
    cases = [f"s{i:02d}_{m}" for i in range(13) for m in ("flair", "t1")] + ["s99_flair"]
    splits = grouped_splits(cases)
    for f in splits:
        assert not {c.rsplit("_", 1)[0] for c in f["val"]} & {c.rsplit("_", 1)[0] for c in f["train"]}
    assert sorted(c for f in splits for c in f["val"]) == sorted(cases)


def test_nnunet_accepts_datasets(preprocessed_2d):
    """nnUNetv2_plan_and_preprocess --verify_dataset_integrity ran on both datasets (fixture); check outputs."""
    pre = Path(preprocessed_2d["env"]["nnUNet_preprocessed"])
    for ds in ("Dataset601_WMHLesion", "Dataset602_WMHRegion"):
        assert (pre / ds / "nnUNetPlans.json").exists()
        assert len(list((pre / ds / "nnUNetPlans_2d").glob("*.b2nd"))) >= 12
    assert "ignore" in json.loads((pre / "Dataset601_WMHLesion" / "dataset.json").read_text())["labels"]
    # both read through the reorienting reader (the plans carry it to training and nnUNetv2_predict); the region
    # dataset keeps its left/right pairs, which the integrity check and planning tolerate
    for ds in ("Dataset601_WMHLesion", "Dataset602_WMHRegion"):
        assert json.loads((pre / ds / "nnUNetPlans.json").read_text())["image_reader_writer"] == \
            "SimpleITKIOWithReorient"
    pairs = json.loads((pre / "Dataset602_WMHRegion" / "dataset.json").read_text())["wmhloc_lr_pairs"]
    assert pairs[0] == [1, 18] and pairs[16] == [17, 34] and pairs[17] == [35, 36] and len(pairs) == 18


def test_paper_split_swaps(synth_release, tmp_path):
    run_cmd(["wmhloc_convert_wmh2017", synth_release, "-o", tmp_path / "raw", "--split", "paper",
             "--preprocessed", tmp_path / "pre"])
    ds = tmp_path / "raw" / "Dataset601_WMHLesion"
    assert len(list((ds / "imagesTr").glob("*.nii.gz"))) == 10  # the 5 test subjects
    assert len(list((ds / "imagesTs").glob("*.nii.gz"))) == 12
    assert not (tmp_path / "raw" / "Dataset602_WMHRegion").exists()  # no --region-labels


def test_splits_command(synth_release, tmp_path):
    run_cmd(["wmhloc_convert_wmh2017", synth_release, "-o", tmp_path / "raw"],
            env={**__import__("os").environ, "nnUNet_preprocessed": ""})
    p = run_cmd(["wmhloc_splits", "-d", "601", "--raw", tmp_path / "raw", "--preprocessed", tmp_path / "pre"])
    target = tmp_path / "pre" / "Dataset601_WMHLesion" / "splits_final.json"
    assert json.loads(target.read_text()) == json.loads(
        (tmp_path / "raw" / "Dataset601_WMHLesion" / "splits_final.json").read_text())
    assert "5 subject-grouped folds" in p.stdout


# ------------------------------------------------------------------------------------- bad input
def _copy_release(src: Path, dst: Path, only=("training/Utrecht", "training/Singapore")) -> Path:
    for o in only:
        shutil.copytree(src / o, dst / o)
    return dst


def _fails(args, tmp_path, needle):
    """wmhloc_convert_wmh2017's main in this process: exit code and the last stderr line."""
    from nnunet_wmhloc.dataset_conversion import wmh2017

    out, errs = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(errs):
        code = wmh2017.main([str(a) for a in (*args, "-o", tmp_path / "raw", "--preprocessed", tmp_path / "pre")])
    assert code != 0, out.getvalue()
    err = errs.getvalue().strip().splitlines()[-1]
    assert err.startswith("error:") and needle in err, errs.getvalue()
    assert not list((tmp_path / "raw").glob("Dataset*")) if (tmp_path / "raw").exists() else True
    return err


def _modify(path: Path, fn):
    img = sitk.ReadImage(str(path))
    out = fn(img)
    sitk.WriteImage(out, str(path), True)


def test_mismatched_geometry(synth_release, tmp_path):
    rel = _copy_release(synth_release, tmp_path / "rel")
    t1 = rel / "training/Singapore/50/pre/T1.nii.gz"

    def respace(img):
        img.SetSpacing((1.0, 1.0, 1.0))
        return img
    _modify(t1, respace)
    err = _fails([rel], tmp_path, "spacing")
    assert str(t1) in err


@pytest.mark.parametrize("problem", ["label3", "nan", "4d", "truncated", "2d"])
def test_bad_images(synth_release, tmp_path, problem):
    rel = _copy_release(synth_release, tmp_path / "rel")
    d = rel / "training/Utrecht/2"
    if problem == "label3":
        _modify(d / "wmh.nii.gz", lambda img: img + 3 * (img == 1))
        target, needle = d / "wmh.nii.gz", "unexpected label values [4]"
    elif problem == "nan":
        arr = ARR(d / "pre/FLAIR.nii.gz")
        arr[5, 10, 10] = np.nan
        img = sitk.GetImageFromArray(arr)
        img.CopyInformation(sitk.ReadImage(str(d / "pre/FLAIR.nii.gz")))
        sitk.WriteImage(img, str(d / "pre/FLAIR.nii.gz"))
        target, needle = d / "pre/FLAIR.nii.gz", "NaN"
    elif problem == "4d":
        img = sitk.ReadImage(str(d / "pre/T1.nii.gz"))
        sitk.WriteImage(sitk.JoinSeries([img, img]), str(d / "pre/T1.nii.gz"))
        target, needle = d / "pre/T1.nii.gz", "4D"
    elif problem == "2d":
        img = sitk.ReadImage(str(d / "pre/T1.nii.gz"))
        sitk.WriteImage(img[:, :, 3], str(d / "pre/T1.nii.gz"))
        target, needle = d / "pre/T1.nii.gz", "2D"
    else:
        data = (d / "pre/FLAIR.nii.gz").read_bytes()
        (d / "pre/FLAIR.nii.gz").write_bytes(data[: len(data) // 2])
        target, needle = d / "pre/FLAIR.nii.gz", "truncated"  # float images too are size-checked first
    err = _fails([rel], tmp_path, needle)
    assert str(target) in err


def test_duplicate_ids_and_missing_files(synth_release, tmp_path):
    rel = _copy_release(synth_release, tmp_path / "rel")
    shutil.copytree(rel / "training/Utrecht/0", rel / "training/GE3T/0")
    _fails([rel], tmp_path, "duplicate subject id 0")
    shutil.rmtree(rel / "training/GE3T")
    (rel / "training/Utrecht/0/pre/T1.nii.gz").unlink()
    _fails([rel], tmp_path, "T1.nii.gz: missing")
    _fails([tmp_path / "nowhere"], tmp_path, "not found")


def test_existing_dataset_needs_overwrite(synth_release, tmp_path):
    rel = _copy_release(synth_release, tmp_path / "rel")
    args = ["wmhloc_convert_wmh2017", rel, "-o", tmp_path / "raw", "--preprocessed", tmp_path / "pre"]
    run_cmd(args)
    marker = tmp_path / "raw" / "Dataset601_WMHLesion" / "imagesTr" / "wmh000_flair_0000.nii.gz"
    before = marker.stat().st_mtime_ns
    p = run_cmd(args, check=False)
    assert p.returncode == 1 and "--overwrite" in p.stderr
    assert marker.stat().st_mtime_ns == before
    run_cmd(args + ["--overwrite"])
    assert marker.exists() and marker.stat().st_mtime_ns != before
    assert not [p for p in (tmp_path / "raw").iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_unknown_option_and_help():
    p = run_cmd(["wmhloc_convert_wmh2017", "x", "--bogus"], check=False)
    assert p.returncode == 2 and "unrecognized arguments: --bogus" in p.stderr
    assert "--region-labels" in run_cmd(["wmhloc_convert_wmh2017", "--help"]).stdout


# ------------------------------------------------------------------- real region-map geometries
def test_region_maps_in_real_geometries(shared_data, tmp_path):
    """One subject per distinct geometry of the authors' 170 region maps: a synthetic release built in that
    geometry converts, and the region labels arrive voxel for voxel."""
    maps = sorted((shared_data / "wmhlocalization" / "WMH_refined_labels").rglob("WMH_*.nii.gz"))
    assert len(maps) == 170
    reader = sitk.ImageFileReader()
    by_geo = {}
    for m in maps:
        reader.SetFileName(str(m))
        reader.ReadImageInformation()
        key = (reader.GetSize(), tuple(round(s, 2) for s in reader.GetSpacing()))
        by_geo.setdefault(key, m)
    assert len(by_geo) >= 5
    # the region dataset needs 2 training subjects (cross-validation): add training maps if needed
    for m in maps:
        if sum(p.parent.name == "Train" for p in by_geo.values()) >= 2:
            break
        if m.parent.name == "Train" and m not in by_geo.values():
            by_geo[("extra", m.name)] = m
    rel = tmp_path / "rel"
    rng = np.random.default_rng(0)
    for m in by_geo.values():
        sid = m.name[4:-7]
        split = "training" if m.parent.name == "Train" else "test"
        d = rel / split / "Site" / sid
        (d / "pre").mkdir(parents=True)
        ref = sitk.ReadImage(str(m))
        for name in ("FLAIR", "T1"):  # smooth content: random noise would make the .gz slow to write
            img = sitk.GetImageFromArray((ARR(m) * 10.0 + 100.0 + rng.uniform()).astype(np.float32))
            img.CopyInformation(ref)
            sitk.WriteImage(img, str(d / "pre" / f"{name}.nii.gz"), True)
        lab = sitk.Cast(sitk.GetImageFromArray((ARR(m) == 12).astype(np.uint8)), sitk.sitkUInt8)
        lab.CopyInformation(ref)
        sitk.WriteImage(lab, str(d / "wmh.nii.gz"), True)
    run_cmd(["wmhloc_convert_wmh2017", rel, "-o", tmp_path / "raw", "--preprocessed", tmp_path / "pre",
             "--region-labels", shared_data / "wmhlocalization" / "WMH_refined_labels"])
    ds = tmp_path / "raw" / "Dataset602_WMHRegion"
    for m in by_geo.values():
        sid = f"wmh{int(m.name[4:-7]):03d}"
        sub = "labelsTr" if m.parent.name == "Train" else "labelsTs"
        out = ds / sub / f"{sid}_t1.nii.gz"
        np.testing.assert_array_equal(ARR(out), ARR(m))
        a, b = sitk.ReadImage(str(out)), sitk.ReadImage(str(m))
        assert a.GetSize() == b.GetSize()
        np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-5)
