"""The paper's architectures (U-Net, UNETR, MultiResUNet, MedNeXt) as nnU-Net trainers, on the synthetic cohort's
own nnU-Net plans (2d [64, 56] and 3d_fullres [12, 64, 56]: neither UNETR's 16-voxel grid nor MedNeXt's 2^4
divides every axis, so both pad inside the module).

Networks are built through the trainers' static build_network_architecture (what nnUNetv2_train and
nnUNetv2_predict call); one short variant trains and predicts through nnU-Net's CLI.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from conftest import run_cmd, trainer_env
from nnunet_wmhloc.training import arch_trainers, architectures
from nnunet_wmhloc.training.architectures import MultiResBlock, MultiResUNet, PaddedUNETR

TRAINERS = {"UNETR": arch_trainers.nnUNetTrainerWMHLoc_UNETR,
            "MultiResUNet": arch_trainers.nnUNetTrainerWMHLoc_MultiResUNet,
            "MedNeXt": arch_trainers.nnUNetTrainerWMHLoc_MedNeXt}


def _plans(preprocessed, dataset="Dataset601_WMHLesion"):
    pre = Path(preprocessed["env"]["nnUNet_preprocessed"]) / dataset
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    dataset_json = json.loads((pre / "dataset.json").read_text())
    return plans, dataset_json


def _build(arch, pm, cm, n_out, ds):
    if arch == "UNet":  # nnU-Net's own network: what nnUNetTrainerWMHLoc builds
        from nnunet_wmhloc.training.trainers import nnUNetTrainerWMHLoc
        return nnUNetTrainerWMHLoc.build_network_architecture(pm, cm, 1, n_out, ds)
    return TRAINERS[arch].build_network_architecture(pm, cm, 1, n_out, ds)


@pytest.mark.parametrize("configuration", ["2d", "3d_fullres"])
@pytest.mark.parametrize("arch", architectures.ARCHITECTURES)
def test_build_forward_backward_and_reload_for_inference(preprocessed_2d, arch, configuration):
    plans, dataset_json = _plans(preprocessed_2d)
    pm = PlansManager(plans)
    cm = pm.get_configuration(configuration)
    n_out = pm.get_label_manager(dataset_json).num_segmentation_heads
    assert n_out == 2  # background, WMH (label 2 is the ignore label: no output)
    patch = tuple(cm.patch_size)
    assert len(patch) == (2 if configuration == "2d" else 3)
    torch.manual_seed(0)
    ds = architectures.has_deep_supervision(arch)
    net = _build(arch, pm, cm, n_out, ds)
    x = torch.randn(2, 1, *patch)

    # training: the outputs must match nnU-Net's downsampled targets one for one
    net.train()
    out = net(x)
    scales = architectures.deep_supervision_scales(arch, cm)
    if ds:
        seg = torch.randint(0, 2, (1, *patch), dtype=torch.int16)
        targets = DownsampleSegForDSTransform(scales)(segmentation=seg)["segmentation"]
        assert isinstance(out, (list, tuple)) and len(out) == len(scales) > 1
        assert [tuple(o.shape) for o in out] == [(2, n_out, *t.shape[1:]) for t in targets]
        outs = out
    else:
        assert scales is None and isinstance(out, torch.Tensor)
        assert tuple(out.shape) == (2, n_out, *patch)
        outs = [out]
    loss = sum(torch.nn.functional.cross_entropy(o, torch.randint(0, n_out, (2, *o.shape[2:]))) for o in outs)
    loss.backward()
    no_grad = [n for n, p in net.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum())]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"

    # inference as nnUNetv2_predict does it: rebuilt with deep supervision off, trained weights loaded strictly
    net.eval()
    architectures.set_deep_supervision(net, False)
    pred_net = _build(arch, pm, cm, n_out, False)
    pred_net.load_state_dict(net.state_dict())
    pred_net.eval()
    with torch.no_grad():
        a, b = net(x), pred_net(x)
    assert isinstance(b, torch.Tensor) and tuple(b.shape) == (2, n_out, *patch)
    assert torch.allclose(a, b)


def test_region_plans_37_outputs_all_architectures(preprocessed_2d):
    plans, dataset_json = _plans(preprocessed_2d, "Dataset602_WMHRegion")
    pm = PlansManager(plans)
    cm = pm.get_configuration("2d")
    n_out = pm.get_label_manager(dataset_json).num_segmentation_heads
    assert n_out == 37
    x = torch.randn(1, 1, *cm.patch_size)
    for arch in architectures.ARCHITECTURES:
        net = _build(arch, pm, cm, n_out, False).eval()
        with torch.no_grad():
            y = net(x)
        assert tuple(y.shape) == (1, 37, *cm.patch_size), arch


def test_multiresunet_structure_follows_paper_and_plan():
    # MultiRes block: W = 1.67 U split W/6, W/3, W/2 -> 8 + 17 + 26 = 51 channels for U = 32 (as the original)
    ops = dict(conv_op=torch.nn.Conv2d, norm_op=torch.nn.InstanceNorm2d, norm_kwargs={"affine": True},
               nonlin=torch.nn.LeakyReLU, nonlin_kwargs={})
    blk = MultiResBlock(ops, 1, 32, [3, 3])
    assert blk.out_channels == 51
    assert [m.out_channels for m in (blk.conv3[0], blk.conv5[0], blk.conv7[0])] == [8, 17, 26]
    # anisotropic 3D plan (thick slices): 1x3x3 kernels and in-plane-only pooling first; Res paths 3, 2, 1
    net = MultiResUNet(2, 3, [8, 16, 24, 32], [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
                       [[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3]], conv_op=torch.nn.Conv3d, deep_supervision=True)
    assert [len(r.convs) for r in net.res_paths] == [3, 2, 1]
    assert tuple(net.encoder_blocks[0].conv3[0].kernel_size) == (1, 3, 3)
    assert [type(p).__name__ for p in net.pools] == ["Identity", "MaxPool3d", "MaxPool3d", "MaxPool3d"]
    out = net(torch.randn(1, 2, 8, 32, 32))
    assert [tuple(o.shape) for o in out] == [(1, 3, 8, 32, 32), (1, 3, 8, 16, 16), (1, 3, 4, 8, 8)]


def test_unetr_pads_to_its_grid_and_refuses_larger_inputs():
    net = PaddedUNETR(1, 2, [16, 72], hidden_size=48, mlp_dim=96, num_heads=4, feature_size=8)
    assert net.grid == (16, 80)
    assert tuple(net(torch.randn(1, 1, 16, 72)).shape) == (1, 2, 16, 72)
    # the padding is outside the returned patch: the result does not depend on what lies beyond it
    net.eval()
    with torch.no_grad():
        x = torch.randn(1, 1, 16, 72)
        assert torch.allclose(net(x), net.net(torch.nn.functional.pad(x, [0, 8]))[..., :72])
    with pytest.raises(RuntimeError, match="up to"):
        net(torch.randn(1, 1, 16, 96))
    with pytest.raises(ValueError, match="no deep supervision"):
        net.deep_supervision = True


def test_trainers_deep_supervision_plumbing_in_process(preprocessed_2d, tmp_path, monkeypatch):
    """One training and one validation step of the MedNeXt trainer (its own 5 scales, not the plan's 3) and the
    UNETR trainer (no deep supervision: one target, no DeepSupervisionWrapper) on the real 2d data."""
    env = preprocessed_2d["env"]
    trainer_env(monkeypatch, env, tmp_path / "results")
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunet_wmhloc.training.loss import DC_CE_SR_loss

    plans, dataset_json = _plans(preprocessed_2d)
    plans["configurations"]["2d"]["batch_size"] = 4  # keep the CPU step small
    for cls, n_targets in ((arch_trainers.nnUNetTrainerWMHLoc_MedNeXt, 5),
                           (arch_trainers.nnUNetTrainerWMHLoc_UNETR, 0)):
        torch.manual_seed(0)
        np.random.seed(0)
        tr = cls(dict(plans, continue_training=False), "2d", 0, dataset_json, device=torch.device("cpu"))
        tr.on_train_start()
        try:
            raw = next(tr.dataloader_train)
            batch = tr.on_device(dict(raw, data=raw["data"].clone()))  # device augmentation + deep supervision
            if n_targets:
                assert tr.enable_deep_supervision
                assert isinstance(tr.loss, DeepSupervisionWrapper) and isinstance(tr.loss.loss, DC_CE_SR_loss)
                assert len(tr.loss.weight_factors) == n_targets and tr.loss.weight_factors[-1] == 0
                assert isinstance(batch["target"], list) and len(batch["target"]) == n_targets
                out = tr.network(batch["data"])
                assert [o.shape[2:] for o in out] == [t.shape[2:] for t in batch["target"]]
            else:
                assert not tr.enable_deep_supervision and isinstance(tr.loss, DC_CE_SR_loss)
                assert isinstance(batch["target"], torch.Tensor) and batch["target"].shape[1] == 2
            tr.on_train_epoch_start()
            assert np.isfinite(tr.train_step(raw)["loss"])
            tr.on_validation_epoch_start()
            with torch.no_grad():
                v = tr.validation_step(next(tr.dataloader_val))
            assert np.isfinite(v["loss"]) and v["tp_hard"].shape == (1,)
            # nnU-Net switches deep supervision off for validation/inference and back on afterwards
            tr.set_deep_supervision_enabled(False)
            with torch.no_grad():
                assert isinstance(tr.network(batch["data"]), torch.Tensor)
            tr.set_deep_supervision_enabled(True)
            with torch.no_grad():
                assert isinstance(tr.network(batch["data"]), list) == bool(n_targets)
        finally:
            tr.on_train_end()


SMOKE = "nnUNetTrainerWMHLoc_MultiResUNet_smoke"


def test_multiresunet_smoke_trains_and_predicts_through_cli(preprocessed_2d, tmp_path):
    env = dict(preprocessed_2d["env"])
    run_cmd(["nnUNetv2_train", "601", "2d", "0", "-tr", SMOKE, "-device", "cpu"], env=env)
    fold = Path(env["nnUNet_results"]) / "Dataset601_WMHLesion" / f"{SMOKE}__nnUNetPlans__2d" / "fold_0"
    ckpt = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert ckpt["trainer_name"] == SMOKE
    assert any(k.startswith("res_paths.") for k in ckpt["network_weights"])  # a MultiResUNet was trained
    assert len(ckpt["logging"]["train_losses"]) == 2 and all(np.isfinite(ckpt["logging"]["train_losses"]))
    debug = json.loads((fold / "debug.json").read_text())
    assert debug["network"] == "MultiResUNet" and debug["enable_deep_supervision"] == "True"
    assert "DC_CE_SR_loss" in debug["loss"]
    assert (fold / "validation" / "summary.json").is_file()

    src = sorted((preprocessed_2d["lesion"] / "imagesTs").glob("*_0000.nii.gz"))[0]
    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copy(src, inp / src.name)
    pred = tmp_path / "pred"
    run_cmd(["nnUNetv2_predict", "-i", inp, "-o", pred, "-d", "601", "-c", "2d", "-f", "0", "-tr", SMOKE,
             "-device", "cpu", "--save_probabilities", "-npp", "1", "-nps", "1"], env=env)
    case = src.name[: -len("_0000.nii.gz")]
    img, seg = sitk.ReadImage(str(src)), sitk.ReadImage(str(pred / f"{case}.nii.gz"))
    assert seg.GetSize() == img.GetSize() and np.allclose(seg.GetSpacing(), img.GetSpacing())
    assert set(np.unique(sitk.GetArrayFromImage(seg))) <= {0, 1}
    prob = np.load(pred / f"{case}.npz")["probabilities"]
    assert prob.shape == (2, *sitk.GetArrayFromImage(img).shape) and np.allclose(prob.sum(0), 1, atol=1e-3)
