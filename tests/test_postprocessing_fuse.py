"""wmhloc_fuse on prediction folders produced by nnU-Net's own preprocessing and export code.

The cases are made exactly as nnUNetv2_predict makes them, minus the network: nnU-Net's DefaultPreprocessor
reads the image (SimpleITKIO or SimpleITKIOWithReorient), transposes, crops to non-zero and resamples; random
smooth logits at that preprocessed shape stand in for the network; nnU-Net's export_prediction_from_logits
reverts everything and writes <case>.nii.gz / .npz / .pkl. A transpose, a crop and a spacing change are all
exercised, so a wrong axis order or grid in the fusion cannot pass.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_wmhloc.postprocessing import fuse

torch = pytest.importorskip("torch")
from nnunetv2.inference.export_prediction import export_prediction_from_logits  # noqa: E402
from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor  # noqa: E402
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager  # noqa: E402

SIZE = (30, 26, 9)          # x, y, z of the "original" image
SPACING = (0.9, 1.1, 3.0)


def _plans(reader: str, transpose=(0, 2, 1)) -> dict:
    tb = [int(i) for i in np.argsort(transpose)]
    return {
        "dataset_name": "Dataset990_FuseTest", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [3.0, 1.0, 1.0],
        "original_median_shape_after_transp": [9, 26, 30],
        "image_reader_writer": reader, "transpose_forward": list(transpose), "transpose_backward": tb,
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {"max": 5.0, "mean": 1.0, "median": 1.0, "min": 0.0, "percentile_00_5": 0.0,
                  "percentile_99_5": 4.0, "std": 1.0}},
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": [8, 16, 16], "median_image_size_in_voxels": [9, 26, 30],
            # spacing after transpose_forward; differs from the image's so resampling is reverted too
            "spacing": [3.0, 1.5, 1.4],
            "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
            "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                   "force_separate_z": None},
            "architecture": {"network_class_name": "none", "arch_kwargs": {}, "_kw_requires_import": []},
            "batch_dice": False}},
    }


def _dataset_json(n_classes: int) -> dict:
    if n_classes == 2:  # lesion task with 'other pathology' declared as ignore: not a predicted class
        labels = {"background": 0, "WMH": 1, "ignore": 2}
    else:
        labels = {"background": 0, **{f"r{i}": i for i in range(1, n_classes)}}
    return {"channel_names": {"0": "image"}, "labels": labels, "numTraining": 1, "file_ending": ".nii.gz"}


def _image(path: Path, rng, direction=None, origin=(-12.0, 7.5, 30.0)) -> None:
    arr = np.zeros(SIZE[::-1], np.float32)
    arr[1:-1, 3:-2, 2:-4] = rng.random((SIZE[2] - 2, SIZE[1] - 5, SIZE[0] - 6)) + 1  # zero rim: nnU-Net crops it
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(SPACING)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    sitk.WriteImage(img, str(path))


def nnunet_predict_like(image: Path, out_folder: Path, case: str, n_classes: int, rng,
                        reader: str = "SimpleITKIO", transpose=(0, 2, 1)) -> None:
    """Write <case>.nii.gz/.npz/.pkl the way nnUNetv2_predict --save_probabilities does."""
    plans, dj = _plans(reader, transpose), _dataset_json(n_classes)
    pm = PlansManager(plans)
    cm = pm.get_configuration("3d_fullres")
    data, _, props = DefaultPreprocessor(verbose=False).run_case([str(image)], None, pm, cm, dj)
    logits = rng.normal(size=(n_classes, *data.shape[1:])).astype(np.float32) * 3
    logits[0] += 1.0  # background-dominated, like real lesion maps
    out_folder.mkdir(parents=True, exist_ok=True)
    export_prediction_from_logits(torch.from_numpy(logits), props, cm, pm, dj, str(out_folder / case),
                                  save_probabilities=True, num_threads_torch=1)
    # nnU-Net also drops these side files into the output folder
    for name, obj in (("dataset.json", dj), ("plans.json", plans), ("predict_from_raw_data_args.json", {})):
        (out_folder / name).write_text(json.dumps(obj))


def _probs(folder: Path, case: str) -> np.ndarray:
    return np.load(folder / f"{case}.npz")["probabilities"]


def _assert_same_geometry(a: sitk.Image, b: sitk.Image):
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


@pytest.fixture(scope="module")
def lesion_preds(tmp_path_factory):
    """Two subjects with FLAIR+T1 in separate folders, one FLAIR-only subject; 2-channel lesion model."""
    root = tmp_path_factory.mktemp("lesion")
    rng = np.random.default_rng(0)
    imgs = {}
    for s in ("wmh001", "wmh002", "wmh003"):
        imgs[s] = root / f"{s}_0000.nii.gz"
        _image(imgs[s], rng)
    for s in ("wmh001", "wmh002", "wmh003"):
        nnunet_predict_like(imgs[s], root / "pred_flair", f"{s}_flair", 2, rng)
    for s in ("wmh001", "wmh002"):
        nnunet_predict_like(imgs[s], root / "pred_t1", f"{s}_t1", 2, rng)
    return root, imgs


def test_npz_layout_is_what_nnunet_writes(lesion_preds):
    root, imgs = lesion_preds
    p = _probs(root / "pred_flair", "wmh001_flair")
    img = sitk.ReadImage(str(imgs["wmh001"]))
    # (classes, z, y, x) in the original image's SimpleITK array order, ignore label not a channel
    assert p.shape == (2, *sitk.GetArrayViewFromImage(img).shape)
    seg = sitk.ReadImage(str(root / "pred_flair" / "wmh001_flair.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(seg), p.argmax(0))


def test_fuse_matches_numpy_average(lesion_preds, tmp_path):
    root, imgs = lesion_preds
    out = tmp_path / "fused"
    rc = fuse.main([str(root / "pred_flair"), str(root / "pred_t1"), "-o", str(out),
                    "--modalities", "flair", "t1", "--weights", "2", "1"])
    assert rc == 0
    for s in ("wmh001", "wmh002"):
        pf, pt = _probs(root / "pred_flair", f"{s}_flair"), _probs(root / "pred_t1", f"{s}_t1")
        avg = (2 * pf.astype(np.float64) + pt) / 3
        got_img = sitk.ReadImage(str(out / f"{s}.nii.gz"))
        got = sitk.GetArrayFromImage(got_img)
        np.testing.assert_array_equal(got, avg.argmax(0))
        # fusion genuinely changed something relative to either modality alone (test can fail)
        assert (got != pf.argmax(0)).any() or (got != pt.argmax(0)).any()
        _assert_same_geometry(got_img, sitk.ReadImage(str(imgs[s])))
        assert got_img.GetPixelID() == sitk.sitkUInt8
    # subject with FLAIR only: falls back to it and says so
    only = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "wmh003.nii.gz")))
    np.testing.assert_array_equal(only, _probs(root / "pred_flair", "wmh003_flair").argmax(0))
    log = {r.split(",")[0]: r for r in (out / "fusion_log.csv").read_text().splitlines()[1:]}
    assert ",yes," in log["wmh003"] and ",no," in log["wmh001"]
    meta = json.loads((out / "fusion_log.json").read_text())
    assert meta["fallback_subjects"] == ["wmh003"]


def test_uint8_output_safe_for_challenge_evaluation(lesion_preds, tmp_path):
    """The WMH challenge's evaluation.py: integer results thresholded at [1, 1000], float at [0.5, 1000]."""
    root, _ = lesion_preds
    out = tmp_path / "f"
    assert fuse.main([str(root / "pred_flair"), "-o", str(out), "--modalities", "flair"]) == 0
    res = sitk.ReadImage(str(out / "wmh001.nii.gz"))
    arr = sitk.GetArrayFromImage(res)
    ref_arr = arr.astype(np.float32)
    ref_arr[0, 0, 0] = 2.0  # an 'other pathology' voxel in the (float) reference
    test_image = sitk.GetImageFromArray(ref_arr)
    test_image.CopyInformation(res)
    res.CopyInformation(test_image)
    non_wmh = sitk.BinaryThreshold(test_image, 1.5, 2.5, 0, 1)
    masked = sitk.Mask(res, non_wmh)
    assert "integer" in masked.GetPixelIDTypeAsString()
    b = sitk.GetArrayFromImage(sitk.BinaryThreshold(masked, 1, 1000, 1, 0))
    expected = (arr == 1)
    expected[0, 0, 0] = False
    np.testing.assert_array_equal(b.astype(bool), expected)
    assert 0 < b.sum() < b.size  # neither empty nor background-as-lesion


def test_region_task_37_channels_and_reoriented_reader(tmp_path):
    """37-channel region model, image with a non-RAS direction read by SimpleITKIOWithReorient: the npz is in
    RAS order and must be turned back; nnU-Net's own segmentation is the reference."""
    rng = np.random.default_rng(1)
    img_path = tmp_path / "wmh007_0000.nii.gz"
    _image(img_path, rng, direction=(-1, 0, 0, 0, 0, 1, 0, -1, 0))
    for mod in ("flair", "t1"):
        nnunet_predict_like(img_path, tmp_path / "pred", f"wmh007_{mod}", 37, rng,
                            reader="SimpleITKIOWithReorient", transpose=(0, 1, 2))
    pf = _probs(tmp_path / "pred", "wmh007_flair")
    assert pf.shape[0] == 37
    assert pf.shape[1:] != sitk.GetArrayViewFromImage(sitk.ReadImage(str(img_path))).shape  # really reoriented
    out = tmp_path / "fused"
    assert fuse.main([str(tmp_path / "pred"), "-o", str(out)]) == 0
    got_img = sitk.ReadImage(str(out / "wmh007.nii.gz"))
    _assert_same_geometry(got_img, sitk.ReadImage(str(img_path)))
    got = sitk.GetArrayFromImage(got_img)
    segs = [sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "pred" / f"wmh007_{m}.nii.gz")))
            for m in ("flair", "t1")]
    # fused labels come from one of the two models wherever they agree
    agree = segs[0] == segs[1]
    assert agree.mean() < 1.0
    np.testing.assert_array_equal(got[agree], segs[0][agree])
    assert len(np.unique(got)) > 10


def _snapshot(folder: Path) -> set:
    return {p.relative_to(folder) for p in folder.rglob("*")}


def test_geometry_mismatch_between_modalities(tmp_path):
    rng = np.random.default_rng(2)
    a, b = tmp_path / "a_0000.nii.gz", tmp_path / "b_0000.nii.gz"
    _image(a, rng)
    _image(b, rng, origin=(0.0, 0.0, 0.0))
    nnunet_predict_like(a, tmp_path / "p", "wmh009_flair", 2, rng)
    nnunet_predict_like(b, tmp_path / "p", "wmh009_t1", 2, rng)
    before = _snapshot(tmp_path)
    r = subprocess.run([sys.executable, "-m", "nnunet_wmhloc.postprocessing.fuse", str(tmp_path / "p"),
                        "-o", str(tmp_path / "out")], capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.startswith("error: ") and "wmh009_t1" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert _snapshot(tmp_path) == before


def test_bad_inputs(lesion_preds, tmp_path, capsys):
    root, _ = lesion_preds
    empty = tmp_path / "empty"
    empty.mkdir()
    assert fuse.main([str(empty), "-o", str(tmp_path / "o1")]) == 1
    assert "no nnU-Net probability files" in capsys.readouterr().err
    # same case in two folders
    assert fuse.main([str(root / "pred_flair"), str(root / "pred_flair"), "-o", str(tmp_path / "o2")]) == 1
    assert "also found" in capsys.readouterr().err
    # --require-all: wmh003 has no T1
    assert fuse.main([str(root / "pred_flair"), str(root / "pred_t1"), "-o", str(tmp_path / "o3"),
                      "--require-all"]) == 1
    assert "wmh003_t1.npz: missing partner" in capsys.readouterr().err
    # a corrupted npz and a missing pkl
    bad = tmp_path / "bad"
    bad.mkdir()
    for ext in (".nii.gz", ".pkl"):
        (bad / f"wmh001_flair{ext}").write_bytes((root / "pred_flair" / f"wmh001_flair{ext}").read_bytes())
    (bad / "wmh001_flair.npz").write_bytes(b"not a zip")
    assert fuse.main([str(bad), "-o", str(tmp_path / "o4")]) == 1
    assert "not a readable .npz" in capsys.readouterr().err
    (bad / "wmh001_flair.pkl").unlink()
    assert fuse.main([str(bad), "-o", str(tmp_path / "o5")]) == 1
    assert "wmh001_flair.pkl: missing" in capsys.readouterr().err
    # probabilities of one case beside the segmentation of another: caught by the argmax check
    swap = tmp_path / "swap"
    swap.mkdir()
    (swap / "wmh001_flair.npz").write_bytes((root / "pred_flair" / "wmh002_flair.npz").read_bytes())
    for ext in (".nii.gz", ".pkl"):
        (swap / f"wmh001_flair{ext}").write_bytes((root / "pred_flair" / f"wmh001_flair{ext}").read_bytes())
    assert fuse.main([str(swap), "-o", str(tmp_path / "o6")]) == 1
    assert "argmax of the probabilities differs" in capsys.readouterr().err
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 7))
    assert fuse.main([str(root / "pred_flair"), "-o", str(tmp_path / "o7"), "--weights", "1", "-1"]) == 1
    assert "--weights" in capsys.readouterr().err


def test_probability_map_thresholds_to_the_fused_labels(lesion_preds, tmp_path):
    """--probability-label 1: float32 in [0, 1] on the segmentation's grid, the weighted mean of the two
    modalities' lesion probabilities, and p > 0.5 exactly where the fused label is 1."""
    root, imgs = lesion_preds
    out = tmp_path / "fused"
    assert fuse.main([str(root / "pred_flair"), str(root / "pred_t1"), "-o", str(out), "--weights", "0.7", "0.3",
                      "--probability-label", "1"]) == 0
    for s in ("wmh001", "wmh002", "wmh003"):
        pimg = sitk.ReadImage(str(out / "probabilities" / f"{s}.nii.gz"))
        assert pimg.GetPixelID() == sitk.sitkFloat32
        _assert_same_geometry(pimg, sitk.ReadImage(str(imgs[s])))
        p = sitk.GetArrayFromImage(pimg)
        lab = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{s}.nii.gz")))
        assert p.min() >= 0 and p.max() <= 1
        np.testing.assert_array_equal(p > 0.5, lab == 1)
        pf = _probs(root / "pred_flair", f"{s}_flair")[1]
        expect = pf if s == "wmh003" else 0.7 * pf + 0.3 * _probs(root / "pred_t1", f"{s}_t1")[1]
        np.testing.assert_allclose(p, expect, atol=1e-6)
        assert 0 < (lab == 1).sum() < lab.size


def test_consistent_probability_at_exact_ties():
    """argmax gives an exact tie to channel 0: p = 0.5 is not lesion; a rounding-off 0.5 under a lesion
    label moves just above 0.5, never further."""
    p = np.array([0.5, 0.5, 0.49999997, 0.50000006, 0.9, 0.1], dtype=np.float32)
    mask = np.array([False, True, True, False, True, False])
    q, moved = fuse.consistent_probability(p.copy(), mask)
    np.testing.assert_array_equal(q > 0.5, mask)
    assert moved == 3 and np.abs(q - p).max() < 1e-6


def test_zero_weight_is_a_fallback(lesion_preds, tmp_path):
    """--weights 0 1: T1 only, FLAIR only for the subject without a T1 (logged as a fallback)."""
    root, _ = lesion_preds
    out = tmp_path / "t1"
    assert fuse.main([str(root / "pred_flair"), str(root / "pred_t1"), "-o", str(out), "--weights", "0", "1"]) == 0
    log = {r["subject"]: r for r in csv.DictReader(open(out / "fusion_log.csv"))}
    assert log["wmh001"]["modalities_used"] == "t1" and log["wmh001"]["fallback"] == "no"
    assert log["wmh003"]["modalities_used"] == "flair" and log["wmh003"]["fallback"] == "yes"
    assert log["wmh003"]["missing_modalities"] == "t1"
    for s, case in (("wmh001", "pred_t1/wmh001_t1"), ("wmh003", "pred_flair/wmh003_flair")):
        np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{s}.nii.gz"))),
                                      sitk.GetArrayFromImage(sitk.ReadImage(str(root / f"{case}.nii.gz"))))
    assert fuse.main([str(root / "pred_flair"), "-o", str(tmp_path / "z"), "--modalities", "flair", "t1",
                      "--weights", "0", "0"]) == 1


def test_function_returns_the_log_and_says_the_fallback(lesion_preds, tmp_path):
    """fuse() in-process: its rows are fusion_log.csv as it reads back, its notes go to `say`, and the maps are
    the command's."""
    from nnunet_wmhloc.io import read_csv

    root, _ = lesion_preds
    notes = []
    res = fuse.fuse([root / "pred_flair", root / "pred_t1"], tmp_path / "fn", weights=[2, 1], say=notes.append,
                    progress=False)
    assert res.subjects == ["wmh001", "wmh002", "wmh003"] and res.output == tmp_path / "fn"
    assert res.log_rows == read_csv(tmp_path / "fn" / "fusion_log.csv")
    assert res.log["fallback_subjects"] == ["wmh003"]
    assert notes == ["note: wmh003: no t1 prediction, using flair only"]
    assert fuse.main([str(root / "pred_flair"), str(root / "pred_t1"), "-o", str(tmp_path / "cli"),
                      "--weights", "2", "1"]) == 0
    assert (tmp_path / "cli" / "fusion_log.csv").read_bytes() == (tmp_path / "fn" / "fusion_log.csv").read_bytes()
    for s in res.subjects:
        a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / d / f"{s}.nii.gz"))) for d in ("fn", "cli"))
        np.testing.assert_array_equal(a, b)
