"""Device-side augmentation (device_aug.py, intensity.py) against the worker-side transforms it replaces:
the same distribution of effects over many draws (two-sample Kolmogorov-Smirnov tests on per-draw effect
sizes), and labels that stay aligned with the image under the device's elastic deformation."""
import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.intensity.contrast import BGContrast
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform, blur_dimension
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from scipy.stats import ks_2samp

from nnunet_wmhloc.training import intensity
from nnunet_wmhloc.training.device_aug import (DeviceAugmentation, downsample_for_ds, elastic_offsets,
                                               normalised_field, warp)
from nnunet_wmhloc.training.skeleton import skeleton_labels, skeleton_labels_per_slice
from nnunet_wmhloc.training.transforms import (AUG_PROBABILITIES, NNUNET_BLUR, NNUNET_GAMMA, BiasFieldTransform,
                                               ElasticMagnitude, GhostingTransform, MotionTransform,
                                               MultiplicativeNoiseTransform, training_transforms)

N = 150  # draws per side


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)
    torch.manual_seed(0)


def _phantom(shape):
    """Signal 1 on a 0 background (patch minimum 0), a brighter blob in the middle: every transform acts."""
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(sum((g / 0.7) ** 2 for g in grids))
    img = np.where(r < 1, 1.0, 0.0) + np.where(r < 0.3, 1.0, 0.0)
    img.flat[0] = 0.0
    return torch.from_numpy(img.astype(np.float32))[None]


def _effects(worker, device, effect, shape):
    """Per-draw effect sizes of the worker transform (one sample) and the device function (a batch)."""
    x = _phantom(shape)
    w = [effect(x, worker(image=x.clone())["image"]) for _ in range(N)]
    batch = x[None].repeat(N, 1, *([1] * len(shape)))
    y = device(batch.clone(), torch.ones(N, dtype=torch.bool))
    d = [effect(x, y[i]) for i in range(N)]
    return np.array(w), np.array(d)


def _rel_change(x, y):
    return float((y - x).norm() / x.norm())


def _noise_std(x, y):
    return float((y - x).std())


def _log_range(x, y):
    inside = x > 0
    lr = torch.log(y[inside] / x[inside])
    return float(lr.max() - lr.min())


CASES = {
    "multiplicative_noise": (MultiplicativeNoiseTransform(), intensity.multiplicative_noise, _noise_std),
    "bias_field": (BiasFieldTransform(), intensity.bias_field, _log_range),
    "ghosting": (GhostingTransform(), intensity.ghosting, _rel_change),
    "motion": (MotionTransform(), intensity.motion, _rel_change),
    "gaussian_noise": (GaussianNoiseTransform(noise_variance=(0, 0.1), p_per_channel=1, synchronize_channels=True),
                       intensity.gaussian_noise, _noise_std),
    # nnU-Net's blur as its pipeline sets it (half the channels, so half the draws leave the image as is)
    "gaussian_blur": (GaussianBlurTransform(blur_sigma=NNUNET_BLUR["sigma"], synchronize_channels=False,
                                            synchronize_axes=False, p_per_channel=NNUNET_BLUR["p_per_channel"],
                                            benchmark=True),
                      lambda x, sel: intensity.gaussian_blur(x, sel, NNUNET_BLUR["sigma"],
                                                             NNUNET_BLUR["p_per_channel"]), _rel_change),
    # nnU-Net's two gamma transforms (on the inverted image, and on the image)
    **{name: (GammaTransform(gamma=BGContrast(NNUNET_GAMMA["range"]), p_invert_image=inv, synchronize_channels=False,
                             p_per_channel=1, p_retain_stats=1),
              lambda x, sel, inv=inv: intensity.gamma(x, sel, NNUNET_GAMMA["range"], invert=bool(inv)), _rel_change)
       for name, inv in (("gamma_inverted", 1), ("gamma", 0))},
}


@pytest.mark.parametrize("shape", [(48, 40), (12, 24, 20)], ids=["2d", "3d"])
@pytest.mark.parametrize("name", list(CASES))
def test_device_intensity_has_the_worker_distribution(name, shape):
    worker, device, effect = CASES[name]
    w, d = _effects(worker, device, effect, shape)
    assert w.std() > 0 and d.std() > 0, (w, d)  # the effect varies from draw to draw on both sides
    assert ks_2samp(w, d).pvalue > 1e-3, (name, w.mean(), d.mean(), w.std(), d.std())
    assert abs(w.mean() - d.mean()) < 0.15 * w.mean() + 1e-6, (w.mean(), d.mean())


def test_effect_statistics_tell_different_settings_apart():
    """The comparison can fail: the worker's multiplicative noise against a device one twice as strong."""
    w, d = _effects(MultiplicativeNoiseTransform(),
                    lambda x, sel: intensity.multiplicative_noise(x, sel, sigma=(0.0, 0.2)), _noise_std, (48, 40))
    assert ks_2samp(w, d).pvalue < 1e-3


def _field_stats(off: np.ndarray) -> list[float]:
    """Per axis: max |displacement| (voxels) and mean |gradient| (smoothness) of a centred field (nd, *shape)."""
    off = off - off.reshape(off.shape[0], -1).mean(1).reshape(-1, *([1] * (off.ndim - 1)))
    out = []
    for d in range(off.shape[0]):
        out.append(float(np.abs(off[d]).max()))
        out.append(float(np.mean([np.abs(g).mean() for g in np.gradient(off[d])])))
    return out


@pytest.mark.parametrize("shape", [(64, 48), (16, 32, 24)], ids=["2d", "3d"])
def test_elastic_displacements_have_the_worker_distribution(shape):
    st = SpatialTransform(shape, 0, False, p_elastic_deform=1, elastic_deform_scale=(0.05, 0.15),
                          elastic_deform_magnitude=ElasticMagnitude(0.0, 0.03))
    img = torch.zeros((1, *shape))
    w = np.array([_field_stats(st.get_parameters(image=img)["elastic_offsets"].movedim(-1, 0).numpy())
                  for _ in range(N)])
    d = np.array([_field_stats(o.numpy()) for o in elastic_offsets(N, shape, torch.device("cpu"))])
    for k in range(w.shape[1]):
        assert ks_2samp(w[:, k], d[:, k]).pvalue > 1e-3, (k, w[:, k].mean(), d[:, k].mean())
    # magnitudes are a fraction (up to 3 %) of each patch edge
    for a, s in enumerate(shape):
        assert d[:, 2 * a].max() <= 0.03 * s * 2 + 1e-6 and d[:, 2 * a].mean() > 0.005 * s


def _label_map(shape):
    rng = np.random.default_rng(3)
    seg = np.zeros(shape, np.int64)
    for k in range(1, 5):  # a few boxes of labels 1..4 (4: the ignore label of the region... any label)
        lo = [rng.integers(0, s // 2) for s in shape]
        seg[tuple(slice(a, a + s // 3) for a, s in zip(lo, shape))] = k
    return torch.from_numpy(seg)


@pytest.mark.parametrize("shape", [(64, 48), (16, 32, 24)], ids=["2d", "3d"])
def test_elastic_keeps_seg_skeleton_and_scales_aligned_with_the_image(shape):
    seg = _label_map(shape)
    n, labels = 4, 5
    image = torch.nn.functional.one_hot(seg, labels).movedim(-1, 0).float()[None].repeat(n, 1, *([1] * len(shape)))
    target = torch.stack((seg, seg)).to(torch.int16)[None].repeat(n, 1, *([1] * len(shape)))  # seg + "skeleton"
    half = target[(slice(None), slice(None)) + (slice(None, None, 2),) * len(shape)]
    aug = DeviceAugmentation(dict({k: 0.0 for k in AUG_PROBABILITIES}, elastic=1.0, gaussian_noise=0.0))
    data, (t0, t1) = aug(image.clone(), [target.clone(), half.clone()])
    assert (data != image).any() and (t0 != target).any()  # it deformed
    assert torch.equal(t0[:, 0], t0[:, 1]) and torch.equal(t1[:, 0], t1[:, 1])  # skeleton moves with the seg
    assert set(t0.unique().tolist()) <= set(seg.unique().tolist()) and t0.dtype == torch.int16
    agree = (data.argmax(1) == t0[:, 0]).float().mean()
    assert agree > 0.97, agree
    # the half-resolution target follows the same field
    agree_half = (t0[(slice(None), 0) + (slice(None, None, 2),) * len(shape)] == t1[:, 0]).float().mean()
    assert agree_half > 0.9, agree_half


def test_pseudo_2d_moves_every_slice_with_one_in_plane_field():
    seg = _label_map((32, 24))
    vol = seg[None].repeat(6, 1, 1)  # 6 identical slices
    target = vol[None, None].repeat(3, 1, 1, 1, 1).to(torch.int16)
    field = normalised_field(elastic_offsets(3, (32, 24), torch.device("cpu"), magnitude=(0.05, 0.05)))
    out = warp(target, field, 2, nearest=True)
    assert (out != target).any()
    assert all(torch.equal(out[:, :, 0], out[:, :, z]) for z in range(6))


def test_trainer_pipeline_on_device_leaves_the_extra_augmentation_to_the_device():
    names = lambda p: [type(getattr(t, "transform", t)).__name__ for t in p.transforms]  # noqa: E731
    spatial = lambda p: next(t for t in p.transforms if type(t).__name__ == "SpatialTransform")  # noqa: E731
    args = ((32, 32), (-0.5, 0.5), None, (0, 1), False)
    worker = training_transforms(*args, foreground_labels=(1,), skeleton=True)
    device = training_transforms(*args, foreground_labels=(1,), skeleton=True, on_device=True)
    moved = {"BiasFieldTransform", "GhostingTransform", "MotionTransform", "MultiplicativeNoiseTransform",
             "GaussianBlurTransform", "GammaTransform"}
    assert moved <= set(names(worker)) and not moved & set(names(device))
    assert spatial(worker).p_elastic_deform > 0 and spatial(device).p_elastic_deform == 0
    assert "SkeletonTransform" in names(device) and "GaussianNoiseTransform" in names(device)


@pytest.mark.parametrize("shape", [(40, 36), (12, 24, 20)], ids=["2d", "3d"])
def test_device_blur_is_batchgenerators_blur_with_the_drawn_sigmas(shape):
    """Same kernels and reflect padding: each blurred channel equals blur_dimension along every axis in turn
    with the sigmas drawn for it (replayed from the seed)."""
    x = torch.randn((3, 2, *shape))
    torch.manual_seed(1)
    y = intensity.gaussian_blur(x.clone(), torch.tensor([True, False, True]), sigma=(0.5, 1.0), p_per_channel=0.5)
    torch.manual_seed(1)
    hit = (torch.tensor([True, False, True])[:, None] & (torch.rand((3, 2)) < 0.5)).nonzero().tolist()
    sig = torch.empty((len(hit), len(shape))).uniform_(0.5, 1.0)
    assert hit and not any(b == 1 for b, _ in hit)
    for j, (b, c) in enumerate(hit):
        ref = x[b, c][None]
        for a in range(len(shape)):
            ref = blur_dimension(ref, float(sig[j, a]), a)
        assert torch.allclose(ref[0], y[b, c], atol=1e-5)
    untouched = [(b, c) for b in range(3) for c in range(2) if [b, c] not in hit]
    assert all(torch.equal(x[b, c], y[b, c]) for b, c in untouched)


@pytest.mark.parametrize("invert", [False, True])
def test_device_gamma_is_batchgenerators_gamma_with_the_drawn_gamma(invert):
    """Per channel the same formula as GammaTransform (min/range scaling, statistics kept, inverted or not) for
    the gamma drawn for that channel (replayed from the seed: the BGContrast branch, then the value)."""
    x = torch.randn((3, 2, 12, 16, 10)) * 2 + 1
    sel = torch.tensor([True, False, True])
    torch.manual_seed(3)
    y = intensity.gamma(x.clone(), sel, (0.7, 1.5), invert=invert)
    torch.manual_seed(3)
    below = torch.empty((2, 2)).uniform_(0.7, 1.0)
    above = torch.empty((2, 2)).uniform_(1.0, 1.5)
    g = torch.where(torch.rand((2, 2)) < 0.5, below, above)
    for j, b in enumerate((0, 2)):
        for c in range(2):
            worker = GammaTransform(gamma=float(g[j, c]), p_invert_image=float(invert), synchronize_channels=False,
                                    p_per_channel=1, p_retain_stats=1)
            ref = worker(image=x[b, c][None].clone())["image"][0]
            assert torch.allclose(ref, y[b, c], atol=1e-4), (b, c, (ref - y[b, c]).abs().max())
    assert torch.equal(x[1], y[1])


@pytest.mark.parametrize("scales", [[[1, 1], [0.5, 0.5], [0.25, 0.25]],
                                    [[1, 1, 1], [1, 0.5, 0.5], [0.5, 0.25, 0.25], [0.25, 0.125, 0.125]]],
                         ids=["2d", "3d"])
def test_device_deep_supervision_targets_equal_the_worker_downsampling(scales):
    shape = (96, 80) if len(scales[0]) == 2 else (8, 96, 80)  # big enough for the deformation to move voxels
    target = torch.randint(-1, 37, (3, 2, *shape), dtype=torch.int16)  # seg + skeleton channel, padding -1
    got = downsample_for_ds(target, scales)
    worker = [DownsampleSegForDSTransform(ds_scales=scales)(segmentation=target[i])["segmentation"] for i in range(3)]
    assert len(got) == len(scales)
    for k, g in enumerate(got):
        assert g.dtype == torch.int16 and torch.equal(g, torch.stack([w[k] for w in worker]))
    # DeviceAugmentation hands nnU-Net's train_step the list; with everything off it is exactly the worker's
    aug = DeviceAugmentation({k: 0.0 for k in AUG_PROBABILITIES}, ds_scales=scales)
    data, out = aug(torch.randn((3, 1, *shape)), target.clone())
    assert isinstance(out, list) and all(torch.equal(o, g) for o, g in zip(out, got))
    # after an elastic deformation every scale is the downsampled deformed full-resolution target
    aug = DeviceAugmentation(dict({k: 0.0 for k in AUG_PROBABILITIES}, elastic=1.0), ds_scales=scales)
    _, out = aug(torch.randn((3, 1, *shape)), target.clone())
    assert not torch.equal(out[0], target)
    assert all(torch.equal(o, d) for o, d in zip(out, downsample_for_ds(out[0], scales)))


def test_per_slice_skeleton_is_the_2d_skeleton_of_each_slice_inside_its_class():
    seg = np.zeros((5, 40, 40), np.int16)
    seg[1:4, 10:30, 12:16] = 1  # 4-voxel-thick plate: 3D thinning can lose it (skimage #3757), 2D keeps a line
    seg[2, 5:9, 20:38] = 2
    out = skeleton_labels_per_slice(seg, [1, 2], tube=1)
    for z in range(5):
        assert np.array_equal(out[z], skeleton_labels(seg[z], [1, 2], tube=1))
    assert ((out == 0) | (out == seg)).all()
    assert all((out[z] == 1).any() for z in (1, 2, 3)) and not out[0].any()
