"""MRI augmentation transforms on synthetic volumes, and the assembled nnU-Net pipelines."""
import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.random import RandomTransform

from nnunet_wmhloc.training.transforms import (BiasFieldTransform, ElasticMagnitude, GhostingTransform,
                                               MotionTransform, MultiplicativeNoiseTransform, training_transforms)


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)
    torch.manual_seed(0)


def _phantom(shape, seed=0):
    """A positive 'brain' ellipsoid on a dark background, with a segmentation of a blob inside it."""
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(sum((g / 0.6) ** 2 for g in grids))
    img = np.where(r < 1, 100.0, 5.0).astype(np.float32)
    seg = np.zeros(shape, np.int16)
    seg[tuple(slice(n // 2 - n // 8, n // 2 + n // 8) for n in shape)] = 1
    img[seg == 1] = 180.0
    return torch.from_numpy(img)[None], torch.from_numpy(seg)[None]


INTENSITY = [
    MultiplicativeNoiseTransform(sigma=0.1),
    BiasFieldTransform(strength=0.6),
    GhostingTransform(),
    MotionTransform(),
]


@pytest.mark.parametrize("t", INTENSITY, ids=lambda t: type(t).__name__)
@pytest.mark.parametrize("shape", [(48, 48), (16, 32, 32)])
def test_intensity_transforms_change_the_image_not_the_segmentation(t, shape):
    img, seg = _phantom(shape)
    out = RandomTransform(t, apply_probability=1.0)(image=img.clone(), segmentation=seg.clone())
    assert torch.equal(out["segmentation"], seg)
    assert out["image"].shape == img.shape and torch.isfinite(out["image"]).all()
    assert (out["image"] - img).abs().max() > 0.5


def test_bias_field_is_smooth_positive_and_mean_one():
    t = BiasFieldTransform()
    for shape in [(64, 64), (20, 40, 40)]:
        img = torch.zeros((1, *shape))
        for _ in range(20):
            f = t.field(shape, t._draw(img)["coef"])
            assert (f > 0).all()
            assert float(f.mean()) == pytest.approx(1.0, rel=1e-4)
            logf = f.log()
            # smooth: slowly varying, and its slope varies slower still (a noise field fails both)
            for ax in range(f.ndim):
                assert torch.diff(logf, dim=ax).abs().max() < 0.15
                assert torch.diff(logf, n=2, dim=ax).abs().max() < 0.02
        assert float(f.max() / f.min()) > 1.02  # and it does something
    # applied: the image becomes base + (x - base) * field, so the patch minimum stays in place
    img, _ = _phantom((40, 40))
    out = BiasFieldTransform(strength=0.6)(image=img.clone())["image"]
    assert float(out.min()) == pytest.approx(float(img.min()), abs=1e-4)
    ratio = (out - img.min())[img > 50] / (img - img.min())[img > 50]
    assert (ratio > 0).all() and ratio.std() > 0.01


def _ghost_energy(shape, axis, t, margin=0):
    """|artefact| inside the band through the object along `axis` (widened by `margin` across it) vs
    outside it (object voxels excluded)."""
    img = torch.full((1, *shape), 0.0)
    sl = tuple(slice(n // 2 - 4, n // 2 + 4) for n in shape)
    img[(0, *sl)] = 100.0
    out = t._one(img[0].clone(), **dict(t._draw(img), axis=axis))
    diff = (out - img[0]).abs()
    band = torch.zeros(shape, dtype=torch.bool)
    band_sl = [slice(s.start - margin, s.stop + margin) for s in sl]
    band_sl[axis] = slice(None)
    band[tuple(band_sl)] = True
    obj = torch.zeros(shape, dtype=torch.bool)
    obj[sl] = True
    return diff[band & ~obj].sum().item(), diff[~band].sum().item(), out


@pytest.mark.parametrize("shape,axis", [((64, 64), 0), ((64, 64), 1), ((12, 48, 48), 2)])
def test_ghosts_appear_along_the_phase_encoding_axis(shape, axis):
    t = GhostingTransform(num_ghosts=4, intensity=0.6, restore=0.0)
    inside, outside, out = _ghost_energy(shape, axis, t)
    assert inside > 50 * max(outside, 1e-3)
    # the ghosts are (negative, attenuated) copies N / num_ghosts away from the object along that axis:
    # the line through the object is periodic with that period outside the object
    n = shape[axis]
    centre = [s // 2 for s in shape]

    def at(offset):
        p = list(centre)
        p[axis] = (centre[axis] + offset) % n
        return out[tuple(p)].item()
    assert at(n // 4) == pytest.approx(at(n // 2), abs=0.5)
    assert at(n // 4) < at(n // 8) - 5


@pytest.mark.parametrize("axis", [0, 1])
def test_motion_artefact_spreads_along_the_phase_encoding_axis(axis):
    t = MotionTransform(num_movements=2, max_shift=3.0)
    np.random.seed(1)
    # the band is widened by the largest shift: a move across the band also blurs the object's edges
    inside, outside, _ = _ghost_energy((64, 64), axis, t, margin=3)
    assert inside > 5 * outside and inside > 10
def test_ghosting_default_axes_are_in_plane_for_3d():
    t = GhostingTransform()
    axes = {t._draw(torch.zeros(1, 8, 16, 16))["axis"] for _ in range(50)}
    assert axes == {1, 2}
    with pytest.raises(ValueError):
        GhostingTransform(axes=(3,))._draw(torch.zeros(1, 8, 16, 16))


def test_multiplicative_noise_scales_with_signal():
    img, _ = _phantom((64, 64))
    out = MultiplicativeNoiseTransform(sigma=0.1)(image=img.clone())["image"]
    dark = img == img.min()
    assert torch.equal(out[dark], img[dark])            # no signal, no noise
    bright = img == 180.0
    rel = ((out - img.min())[bright] / (img - img.min())[bright])
    assert rel.std().item() == pytest.approx(0.1, rel=0.25)


@pytest.mark.parametrize("shape", [(64, 64), (24, 48, 48)])
def test_elastic_and_rotation_move_image_and_segmentation_together(shape):
    img, seg = _phantom(shape)
    img = img.clone()
    img[seg == 1] = 500.0
    t = SpatialTransform(shape, patch_center_dist_from_border=0, random_crop=False, p_elastic_deform=1.0,
                         elastic_deform_scale=(0.1, 0.1), elastic_deform_magnitude=ElasticMagnitude(0.05, 0.05),
                         p_rotation=1.0, rotation=(0.3, 0.3), bg_style_seg_sampling=False,
                         border_mode_seg='constant', padding_value_seg=-1)
    out = t(image=img.clone(), segmentation=seg.clone())
    oi, os_ = out["image"][0], out["segmentation"][0]
    assert not torch.equal(os_, seg[0])                  # it did move
    inside = os_ == 1
    assert inside.sum() > 0.7 * (seg == 1).sum()
    # where the moved segmentation says lesion, the moved image is bright, and vice versa (boundary aside)
    assert (oi[inside] > 300).float().mean() > 0.9
    assert (oi[os_ == 0] > 300).float().mean() < 0.02


def test_elastic_magnitude_is_a_fraction_of_the_patch_edge():
    m = ElasticMagnitude(0.02, 0.02)
    assert m(patch_size=(40, 200), dim=1) == pytest.approx(4.0)
    assert m(patch_size=(40, 200), dim=0) == pytest.approx(0.8)


@pytest.mark.parametrize("patch,ds", [((48, 48), [[1, 1], [0.5, 0.5], [0.25, 0.25]]),
                                      ((16, 32, 32), [[1, 1, 1], [1, 0.5, 0.5]])])
def test_training_pipeline_with_every_transform_on(patch, ds):
    img, seg = _phantom(tuple(int(n * 1.25) for n in patch))
    seg[0][img[0] == 5.0] = 0
    seg[0, :3] = 2  # some ignore label
    always = dict(elastic=1.0, bias_field=1.0, ghosting=1.0, motion=1.0, multiplicative_noise=1.0)
    t = training_transforms(patch, (-0.5, 0.5), ds, tuple(range(len(patch))), False, foreground_labels=[1],
                            ignore_label=2, skeleton=True, probabilities=always)
    out = t(image=img.clone(), segmentation=seg.clone())
    assert tuple(out["image"].shape[1:]) == patch
    segs = out["segmentation"]
    assert len(segs) == len(ds)
    for s, scale in zip(segs, ds):
        assert s.shape[0] == 2
        assert tuple(s.shape[1:]) == tuple(round(p * f) for p, f in zip(patch, scale))
        assert ((s[1] == 1) <= (s[0] == 1)).all()
        assert not (s[1] == 2).any()
    assert (segs[0][1] == 1).any()
    without = training_transforms(patch, (-0.5, 0.5), ds, tuple(range(len(patch))), False, foreground_labels=[1],
                                  ignore_label=2, skeleton=False)
    assert without(image=img.clone(), segmentation=seg.clone())["segmentation"][0].shape[0] == 1


def test_skeleton_refuses_region_training():
    with pytest.raises(RuntimeError, match="region"):
        training_transforms((32, 32), 0.0, None, (0, 1), False, foreground_labels=[1, 2],
                            regions=[(1, 2), 2], skeleton=True)
