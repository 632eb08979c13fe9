"""Our trainers through nnU-Net's own commands (subprocesses, env from nnunet_environ), on the synthetic cohort.

The lesion dataset (labels 0/1 + ignore 2) goes through nnUNetv2_train / _predict / _find_best_configuration;
the 37-class region dataset runs one training and one validation step in process (same trainer code, a
fraction of the time).
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import run_cmd, trainer_env

SMOKE = "nnUNetTrainerWMHLoc_smoke"


def test_smoke_trainer_train_predict_find_best(preprocessed_2d, tmp_path):
    env = dict(preprocessed_2d["env"])
    pre = Path(env["nnUNet_preprocessed"]) / "Dataset601_WMHLesion"
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    cfg = plans["configurations"]["2d"]
    # a tiny dataset must give a tiny 2D problem, or this CPU test would not be a smoke test
    assert len(cfg["patch_size"]) == 2 and np.prod(cfg["patch_size"]) * cfg["batch_size"] <= 64 ** 2 * 40

    run_cmd(["nnUNetv2_train", "601", "2d", "0", "-tr", SMOKE, "-device", "cpu"], env=env)
    out = Path(env["nnUNet_results"]) / "Dataset601_WMHLesion" / f"{SMOKE}__nnUNetPlans__2d"
    fold = out / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file()
    ckpt = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert ckpt["trainer_name"] == SMOKE
    assert list(ckpt["init_args"]) == ["plans", "configuration", "fold", "dataset_json", "device"]
    assert ckpt["inference_allowed_mirroring_axes"] is None  # smoke: no test-time mirroring
    losses = ckpt["logging"]["train_losses"]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert all(np.isfinite(ckpt["logging"]["val_losses"]))
    debug = json.loads((fold / "debug.json").read_text())
    pipeline = debug["dataloader_train.generator.transforms"]
    # the workers run nnU-Net's pipeline + the skeleton; elastic and the MRI transforms run on the device
    assert "SkeletonTransform" in pipeline and "p_elastic_deform = 0," in pipeline
    for name in ("GhostingTransform", "MotionTransform", "BiasFieldTransform", "MultiplicativeNoiseTransform"):
        assert name not in pipeline
    assert "DC_CE_SR_loss" in debug["loss"]
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert "1" in summary["mean"] and "2" not in summary["mean"]  # the ignore label is not scored

    # predict two test cases (FLAIR and T1 of one subject) with probabilities
    src = preprocessed_2d["lesion"] / "imagesTs"
    cases = sorted(src.glob("*_0000.nii.gz"))[:2]
    inp = tmp_path / "in"
    inp.mkdir()
    for c in cases:
        shutil.copy(c, inp / c.name)
    pred = tmp_path / "pred"
    run_cmd(["nnUNetv2_predict", "-i", inp, "-o", pred, "-d", "601", "-c", "2d", "-f", "0", "-tr", SMOKE,
             "-device", "cpu", "--save_probabilities", "-npp", "1", "-nps", "1"], env=env)
    for c in cases:
        case = c.name[: -len("_0000.nii.gz")]
        img = sitk.ReadImage(str(c))
        seg = sitk.ReadImage(str(pred / f"{case}.nii.gz"))
        assert seg.GetSize() == img.GetSize()
        assert np.allclose(seg.GetSpacing(), img.GetSpacing()) and np.allclose(seg.GetOrigin(), img.GetOrigin())
        assert np.allclose(seg.GetDirection(), img.GetDirection())
        assert set(np.unique(sitk.GetArrayFromImage(seg))) <= {0, 1}
        prob = np.load(pred / f"{case}.npz")["probabilities"]
        assert prob.shape == (2, *sitk.GetArrayFromImage(img).shape)
        assert np.allclose(prob.sum(0), 1, atol=1e-3)

    p = run_cmd(["nnUNetv2_find_best_configuration", "601", "-c", "2d", "-tr", SMOKE, "-f", "0", "-np", "1"],
                env=env)
    assert f"-tr {SMOKE}" in p.stdout
    assert (out / "crossval_results_folds_0" / "postprocessing.pkl").is_file()
    info = json.loads((out.parent / "inference_information.json").read_text())
    assert info["best_model_or_ensemble"]["selected_model_or_models"][0]["trainer"] == SMOKE


def test_region_trainer_37_classes_steps_in_process(preprocessed_2d, tmp_path, monkeypatch):
    """nnUNetTrainerWMHLoc on the 37-class region dataset: the batch carries a skeleton channel at every
    deep-supervision scale, one training step and one validation step give finite losses."""
    env = preprocessed_2d["env"]
    trainer_env(monkeypatch, env, tmp_path / "results")
    from nnunet_wmhloc.training.trainers import nnUNetTrainerWMHLoc
    from nnunet_wmhloc.training.loss import DC_CE_SR_loss

    pre = Path(env["nnUNet_preprocessed"]) / "Dataset602_WMHRegion"
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    dataset_json = json.loads((pre / "dataset.json").read_text())
    assert len(dataset_json["labels"]) == 37
    torch.manual_seed(0)
    np.random.seed(0)
    tr = nnUNetTrainerWMHLoc(dict(plans, continue_training=False), "2d", 0, dataset_json,
                             device=torch.device("cpu"))
    tr.on_train_start()
    try:
        assert isinstance(tr.loss.loss, DC_CE_SR_loss)
        raw = next(tr.dataloader_train)
        # the workers hand over the full-resolution seg + skeleton; the device side makes the deep-supervision list
        assert isinstance(raw["target"], torch.Tensor) and raw["target"].shape[1] == 2
        batch = tr.on_device(dict(raw, data=raw["data"].clone()))
        targets = batch["target"]
        assert isinstance(targets, list) and len(targets) > 1
        for t in targets:
            assert t.shape[1] == 2
            seg, sk = t[:, 0], t[:, 1]
            assert ((sk == 0) | (sk == seg)).all()   # skeleton voxels carry their own class
        assert len(torch.unique(targets[0][:, 1])) > 10  # many region classes have a skeleton
        tr.on_train_epoch_start()
        out = tr.train_step(raw)
        assert np.isfinite(out["loss"])
        tr.on_validation_epoch_start()
        with torch.no_grad():
            v = tr.validation_step(next(tr.dataloader_val))
        assert np.isfinite(v["loss"]) and v["tp_hard"].shape == (36,)
        # the SR term is part of the loss: same batch, SR switched off, smaller loss
        tr.network.eval()
        with torch.no_grad():
            o = tr.network(batch["data"])
            full = tr.loss(o, targets).item()
            tr.loss.loss.weight_sr = 0.0
            no_sr = tr.loss(o, targets).item()
        assert full > no_sr
    finally:
        tr.on_train_end()
