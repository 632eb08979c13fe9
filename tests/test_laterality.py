"""Left/right label pairs: the mirror that swaps them, the left-right axis of a patch, the symmetric network,
and the training pipeline keeping left on the left of the canonical frame (laterality.py)."""
import numpy as np
import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet

from conftest import trainer_env
from nnunet_wmhloc.dataset_conversion.common import dataset_json
from nnunet_wmhloc.training.laterality import (LRSwapMirrorTransform, lr_pairs, lr_patch_axis, lr_symmetry,
                                               make_lr_symmetric, set_lr_symmetry, swap_permutation)
from nnunet_wmhloc.training.transforms import training_transforms

REGION_PAIRS = [(l, l + 17) for l in range(1, 18)] + [(35, 36)]


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)
    torch.manual_seed(0)


def test_region_dataset_json_declares_the_pairs_and_a_canonical_reader():
    dj = dataset_json("region", 4, "d")
    assert lr_pairs(dj) == REGION_PAIRS
    assert dj["overwrite_image_reader_writer"] == "SimpleITKIOWithReorient"
    les = dataset_json("lesion", 4, "d")
    assert lr_pairs(les) is None and les["overwrite_image_reader_writer"] == "SimpleITKIOWithReorient"


@pytest.mark.parametrize("bad,msg", [([[1, 1]], "itself"), ([[1, 2], [2, 3]], "two pairs"), ([[1, 99]], "99"),
                                     ([[0, 1]], "0 is not"), ([[1]], "not a pair")])
def test_bad_pairs_are_refused(bad, msg):
    dj = {"labels": {"background": 0, "a": 1, "b": 2, "c": 3}, "wmhloc_lr_pairs": bad}
    with pytest.raises(ValueError, match=msg):
        lr_pairs(dj)


def test_swap_mirror_swaps_exactly_the_declared_pairs():
    seg = torch.randint(-1, 37, (1, 9, 12, 14), dtype=torch.int16)  # -1: nnU-Net's padding label
    t = LRSwapMirrorTransform((0, 1, 2), 2, REGION_PAIRS)
    partner = dict(REGION_PAIRS + [(b, a) for a, b in REGION_PAIRS])
    lut = np.array([partner.get(v, v) for v in range(-1, 37)])
    for axes in ([], [0], [1], [0, 1], [2], [0, 2], [1, 2], [0, 1, 2]):
        out = t._apply_to_segmentation(seg.clone(), axes=axes)
        flipped = torch.flip(seg, [a + 1 for a in axes]) if axes else seg
        if 2 in axes:
            assert torch.equal(out, torch.from_numpy(lut[flipped.numpy() + 1]).to(seg.dtype))
        else:
            assert torch.equal(out, flipped)
    # every voxel of an unpaired label (0, -1) keeps its value; each paired label becomes its partner
    out = t._apply_to_segmentation(seg.clone(), axes=[2])
    back = torch.flip(out, (3,))
    for v in range(-1, 37):
        assert set(back[seg == v].tolist()) == {partner.get(v, v)}
    img = torch.randn(2, 9, 12, 14)
    assert torch.equal(t._apply_to_image(img.clone(), axes=[2]), torch.flip(img, (3,)))


def test_swap_permutation():
    assert swap_permutation([(1, 3)], 5) == [0, 3, 2, 1, 4]
    with pytest.raises(ValueError):
        swap_permutation([(1, 7)], 5)


@pytest.mark.parametrize("transpose,dims,axis", [((0, 1, 2), 3, 2), ((0, 1, 2), 2, 1), ((2, 0, 1), 3, 0),
                                                 ((2, 0, 1), 2, None), ((1, 2, 0), 2, 0), ((1, 0, 2), 3, 2)])
def test_lr_axis_from_canonical_orientation_and_transpose(transpose, dims, axis):
    assert lr_patch_axis("SimpleITKIOWithReorient", transpose, dims) == axis


def test_lr_pairs_need_a_canonical_reader():
    with pytest.raises(ValueError, match="SimpleITKIOWithReorient"):
        lr_patch_axis("SimpleITKIO", (0, 1, 2), 3)


def _net(ds=True):
    return PlainConvUNet(1, 3, (8, 16, 32), torch.nn.Conv2d, 3, (1, 2, 2), (1, 1, 1), 5, (1, 1), True,
                         torch.nn.InstanceNorm2d, None, None, None, torch.nn.LeakyReLU, deep_supervision=ds)


def test_symmetric_network_is_exactly_equivariant_and_keeps_checkpoints_loadable():
    plain = _net()
    old = {k: v.clone() for k, v in plain.state_dict().items()}
    net = make_lr_symmetric(_net(), 5)
    net.load_state_dict(old)  # a checkpoint from before the symmetry: loads, symmetry off
    assert lr_symmetry(net)[0] is None
    net.eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(net(x), plain.eval()(x)))  # off: the plain network
        set_lr_symmetry(net, 1, [(1, 3), (2, 4)])
        perm = [0, 3, 4, 1, 2]
        for y, yf in zip(net(x), net(torch.flip(x, (3,)))):  # every deep-supervision scale
            assert torch.allclose(yf, torch.flip(y, (3,))[:, perm], atol=1e-6)
        # the plain network is not: the property is the symmetry's doing
        y, yf = plain(x)[0], plain(torch.flip(x, (3,)))[0]
        assert not torch.allclose(yf, torch.flip(y, (3,))[:, perm], atol=1e-3)
    # the switch and pairs travel in the state dict (nnUNetv2_predict rebuilds the network, then loads it)
    again = make_lr_symmetric(_net(ds=False), 5)
    again.load_state_dict(net.state_dict())
    assert lr_symmetry(again) == (1, perm)
    net.train()
    assert isinstance(net(x), list) and len(net(x)) == 2  # training: one plain pass, deep supervision kept


@pytest.mark.parametrize("pairs", [[(1, 2)], None])
def test_pipeline_keeps_left_labels_on_the_left(pairs):
    """Two half-planes: label 1 (left) at low x, 2 (right) at high x; the image is a ramp along x, so a mirror
    along x shows. With the pairs declared, label 1 stays at low x of every augmented patch, mirrored or not,
    and the skeleton channel (built after the mirror) follows the swapped labels; without, mirrored patches
    put it on the right."""
    patch = (32, 32)
    x = torch.arange(40, dtype=torch.float32)
    img = x.expand(40, 40)[None].clone()
    seg = torch.ones((1, 40, 40), dtype=torch.int16)
    seg[0, :, 20:] = 2
    t = training_transforms(patch, 0.0, None, (0, 1), False, foreground_labels=[1, 2], skeleton=True,
                            probabilities=dict(elastic=0, bias_field=0, ghosting=0, motion=0,
                                               multiplicative_noise=0), lr_axis=1, lr_pairs=pairs)
    mirrored = left_on_right = 0
    for _ in range(40):
        out = t(image=img.clone(), segmentation=seg.clone())
        s, im = out["segmentation"], out["image"][0]
        mirrored += bool(im[:, :16].mean() > im[:, 16:].mean())
        cols = torch.arange(patch[1], dtype=torch.float32).expand(*patch)
        left_on_right += bool(cols[s[0] == 1].mean() > cols[s[0] == 2].mean())
        for c in (1, 2):
            assert ((s[1] == c) <= (s[0] == c)).all()
        assert (s[1] == 1).any() and (s[1] == 2).any()
    assert 5 < mirrored < 35
    assert left_on_right == (0 if pairs else mirrored)


def _plans(preprocessed, dataset):
    import json
    from pathlib import Path

    pre = Path(preprocessed["env"]["nnUNet_preprocessed"]) / dataset
    return json.loads((pre / "nnUNetPlans.json").read_text()), json.loads((pre / "dataset.json").read_text())


@pytest.mark.parametrize("configuration", ["2d", "3d_fullres"])
def test_trainers_find_the_pairs_and_the_left_right_axis(preprocessed_2d, configuration, monkeypatch, tmp_path):
    """On the converted synthetic datasets: the region trainers (U-Net and an architecture variant) swap along
    the left-right axis, cap rotation, leave that axis out of test-time mirroring and switch the network's
    symmetry on; the lesion trainer is nnU-Net's usual."""
    from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform

    from nnunet_wmhloc.training.arch_trainers import nnUNetTrainerWMHLoc_MultiResUNet
    from nnunet_wmhloc.training.trainers import nnUNetTrainerWMHLoc

    trainer_env(monkeypatch, preprocessed_2d["env"], tmp_path / "results", data_workers=None)
    for dataset in ("Dataset602_WMHRegion", "Dataset601_WMHLesion"):
        plans, dj = _plans(preprocessed_2d, dataset)
        for cls in (nnUNetTrainerWMHLoc, nnUNetTrainerWMHLoc_MultiResUNet):
            tr = cls(dict(plans, continue_training=False), configuration, 0, dj, device=torch.device("cpu"))
            if configuration == "2d":  # the fixture preprocessed 2d only, which initialize() wants
                tr.initialize()
            rot, dummy, _, mirror = tr.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
            t = tr.get_training_transforms(tr.configuration_manager.patch_size, rot, None, mirror, dummy,
                                           foreground_labels=tr.label_manager.foreground_labels)
            mirrors = [x for x in t.transforms if isinstance(x, MirrorTransform)]
            assert len(mirrors) == 1 and mirrors[0].allowed_axes == mirror
            if dataset.endswith("Region"):
                axis = list(tr.plans_manager.transpose_forward).index(2) - (configuration == "2d")
                assert tr.laterality() == (axis, REGION_PAIRS)
                assert isinstance(mirrors[0], LRSwapMirrorTransform) and mirrors[0].lr_axis == axis
                assert axis not in tr.inference_allowed_mirroring_axes and axis in mirror
                assert max(abs(float(r)) for r in np.atleast_1d(rot)) <= np.deg2rad(30) + 1e-9
                if configuration == "2d":
                    assert lr_symmetry(tr.network) == (axis, swap_permutation(REGION_PAIRS, 37))
            else:
                assert tr.laterality() == (None, None) and not isinstance(mirrors[0], LRSwapMirrorTransform)
                assert tr.inference_allowed_mirroring_axes == mirror
                if configuration == "2d":
                    assert lr_symmetry(tr.network)[0] is None


def test_synthetic_left_regions_lie_on_the_patients_left(synth_release):
    """Whatever a site's storage orientation, the left labels (1-17, 35) lie at physical x > 0 (ITK's LPS: the
    patient's left), the right ones at x < 0, and each left region lies left of its partner."""
    import SimpleITK as sitk

    def centre_x(img, mask):
        idx = np.argwhere(mask)[:, ::-1].astype(float)  # (x, y, z) indices
        return img.TransformContinuousIndexToPhysicalPoint(idx.mean(0).tolist())[0]

    directions = set()
    for p in sorted((synth_release / "region_labels").rglob("WMH_*.nii.gz")):
        img = sitk.ReadImage(str(p))
        directions.add(img.GetDirection())
        a = sitk.GetArrayFromImage(img)
        left, right = [l for l, _ in REGION_PAIRS], [r for _, r in REGION_PAIRS]
        assert centre_x(img, np.isin(a, left)) > 5 and centre_x(img, np.isin(a, right)) < -5, p.name
        for l, r in REGION_PAIRS:
            if (a == l).any() and (a == r).any():
                assert centre_x(img, a == l) > centre_x(img, a == r), (p.name, l, r)
    assert len(directions) >= 2  # the sites are stored differently
