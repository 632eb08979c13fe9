"""MRI augmentation for nnU-Net (batchgeneratorsv2 transforms) and the training/validation pipelines.

batchgeneratorsv2 has additive Gaussian noise, rotation and elastic deformation (in SpatialTransform, which
moves image and segmentation with one shared grid); it has no multiplicative noise, bias field, ghosting or
motion, so those are small ImageOnlyTransforms here (intensity only: the segmentation is never touched).

nnU-Net feeds z-scored patches (negative background, or 0 outside the brain mask). The multiplicative and
k-space transforms act on the signal above the patch minimum of each channel, `x - min(x)`, which is what a
non-negative MR magnitude signal looks like, and add the minimum back afterwards.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple, Union

import numpy as np
import torch
from batchgeneratorsv2.helpers.scalar_type import RandomScalar, sample_scalar
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform, ImageOnlyTransform
from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
from batchgeneratorsv2.transforms.intensity.contrast import BGContrast, ContrastTransform
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.nnunet.random_binary_operator import ApplyRandomBinaryOperatorTransform
from batchgeneratorsv2.transforms.nnunet.remove_connected_components import \
    RemoveRandomConnectedComponentFromOneHotEncodingTransform
from batchgeneratorsv2.transforms.nnunet.seg_to_onehot import MoveSegAsOneHotToDataTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from batchgeneratorsv2.transforms.utils.nnunet_masking import MaskImageTransform
from batchgeneratorsv2.transforms.utils.pseudo2d import Convert2DTo3DTransform, Convert3DTo2DTransform
from batchgeneratorsv2.transforms.utils.random import RandomTransform
from batchgeneratorsv2.transforms.utils.remove_label import RemoveLabelTransform
from batchgeneratorsv2.transforms.utils.seg_to_regions import ConvertSegmentationToRegionsTransform

from nnunet_wmhloc.training.laterality import LRSwapMirrorTransform
from nnunet_wmhloc.training.skeleton import SkeletonTransform

# Probability of each extra transform per sample (rotation and additive Gaussian noise keep nnU-Net's own).
AUG_PROBABILITIES = {
    "elastic": 0.2,
    "bias_field": 0.2,
    "ghosting": 0.1,
    "motion": 0.1,
    "multiplicative_noise": 0.15,
}

# nnU-Net's own Gaussian blur (its default pipeline's settings): on the workers, or batched on the device
NNUNET_BLUR = {"probability": 0.2, "sigma": (0.5, 1.0), "p_per_channel": 0.5}
# and its two gamma transforms (on the inverted image, then on the image; every channel, statistics kept)
NNUNET_GAMMA = {"probability_inverted": 0.1, "probability": 0.3, "range": (0.7, 1.5)}
# what device_aug.DeviceAugmentation applies for trainers that augment on the device (on_device=True below):
# our MRI transforms and nnU-Net's blur and gamma, each with its worker-side probability
ON_DEVICE_PROBABILITIES = dict(AUG_PROBABILITIES, gaussian_blur=NNUNET_BLUR["probability"],
                               gamma_inverted=NNUNET_GAMMA["probability_inverted"], gamma=NNUNET_GAMMA["probability"])


def _spatial_axes(img: torch.Tensor) -> Tuple[int, ...]:
    return tuple(range(1, img.ndim))


def _in_plane_axes(img: torch.Tensor, axes: Sequence[int] | None) -> Tuple[int, ...]:
    """Spatial axes (0-based, without the channel) a phase-encoding direction may take. Default: the last two,
    i.e. both axes of a 2D patch and the in-plane axes of a 3D patch (nnU-Net puts the coarse axis first)."""
    n = img.ndim - 1
    if axes is None:
        return tuple(range(max(0, n - 2), n))
    bad = [a for a in axes if not 0 <= a < n]
    if bad:
        raise ValueError(f"axes {tuple(axes)} out of range for a {n}D patch")
    return tuple(axes)


class _PerChannel(ImageOnlyTransform):
    """Helper: draws per-channel parameters (or one set for all channels) and applies `_one` per channel."""

    def __init__(self, p_per_channel: float = 1.0, synchronize_channels: bool = False):
        super().__init__()
        self.p_per_channel = p_per_channel
        self.synchronize_channels = synchronize_channels

    def _draw(self, img: torch.Tensor) -> dict:
        raise NotImplementedError

    def _one(self, x: torch.Tensor, **p) -> torch.Tensor:
        raise NotImplementedError

    def get_parameters(self, **data_dict) -> dict:
        img = data_dict["image"]
        c = img.shape[0]
        apply = [bool(np.random.uniform() < self.p_per_channel) for _ in range(c)]
        shared = self._draw(img) if self.synchronize_channels else None
        return {"apply": apply, "params": [shared if shared is not None else self._draw(img) for _ in range(c)]}

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        for ch, (do, p) in enumerate(zip(params["apply"], params["params"])):
            if do:
                x = img[ch]
                base = x.min()
                img[ch] = self._one(x - base, **p) + base
        return img


class MultiplicativeNoiseTransform(_PerChannel):
    """Speckle-like noise: signal x (above the patch minimum) becomes x * (1 + sigma * N(0, 1)), clipped at 0."""

    def __init__(self, sigma: RandomScalar = (0.0, 0.1), p_per_channel: float = 1.0,
                 synchronize_channels: bool = False):
        super().__init__(p_per_channel, synchronize_channels)
        self.sigma = sigma

    def _draw(self, img):
        return {"sigma": float(sample_scalar(self.sigma))}

    def _one(self, x, sigma):
        return x * (1.0 + sigma * torch.randn_like(x)).clamp_min_(0.0)


class BiasFieldTransform(_PerChannel):
    """Smooth multiplicative bias field: exp of a random polynomial of degree <= `order` over the patch
    (coordinates in [-1, 1]), scaled to mean 1, so always positive. `strength` is the root-sum-square of the
    polynomial's coefficients (each uniform in +-strength/sqrt(n_terms)), so 2D and 3D fields are alike."""

    def __init__(self, strength: RandomScalar = (0.1, 0.6), order: int = 3, p_per_channel: float = 1.0,
                 synchronize_channels: bool = False):
        super().__init__(p_per_channel, synchronize_channels)
        self.strength = strength
        self.order = int(order)

    def field(self, shape: Sequence[int], coef: np.ndarray) -> torch.Tensor:
        """Bias field of `shape` for a coefficient array coef[i, j(, k)] (used for degrees summing to <= order)."""
        o = self.order + 1
        # Vandermonde matrices per axis: (n_axis, order + 1)
        vs = [torch.linspace(-1, 1, n, dtype=torch.float32)[:, None] ** torch.arange(o, dtype=torch.float32)
              for n in shape]
        c = torch.from_numpy(coef.astype(np.float32))
        letters = "abc"[: len(shape)]
        degs = "ijk"[: len(shape)]
        expr = ",".join(f"{a}{d}" for a, d in zip(letters, degs)) + f",{degs}->{letters}"
        f = torch.exp(torch.einsum(expr, *vs, c))
        return f / f.mean()

    def _draw(self, img):
        nd = img.ndim - 1
        o = self.order + 1
        total = np.indices((o,) * nd).sum(0)
        # the constant term only rescales, which the mean normalisation undoes anyway
        use = (total <= self.order) & (total > 0)
        amp = abs(float(sample_scalar(self.strength))) / np.sqrt(use.sum())
        coef = np.where(use, np.random.uniform(-amp, amp, size=(o,) * nd), 0.0)
        return {"coef": coef}

    def _one(self, x, coef):
        return x * self.field(x.shape, coef).to(x.device, x.dtype)


class GhostingTransform(_PerChannel):
    """k-space ghosting: every `num_ghosts`-th k-space line along the phase-encoding axis is scaled by
    (1 - intensity), which adds faint copies of the image shifted by N / num_ghosts along that axis only.
    The central `restore` fraction of k-space is left as is (as in TorchIO's RandomGhosting)."""

    def __init__(self, num_ghosts: RandomScalar = (2, 8), intensity: RandomScalar = (0.3, 0.8),
                 axes: Sequence[int] | None = None, restore: float = 0.02, p_per_channel: float = 1.0,
                 synchronize_channels: bool = True):
        super().__init__(p_per_channel, synchronize_channels)
        self.num_ghosts = num_ghosts
        self.intensity = intensity
        self.axes = axes
        self.restore = restore

    def _draw(self, img):
        return {"axis": int(np.random.choice(_in_plane_axes(img, self.axes))),
                "num_ghosts": max(2, int(round(sample_scalar(self.num_ghosts)))),
                "intensity": float(sample_scalar(self.intensity))}

    def _one(self, x, axis, num_ghosts, intensity):
        n = x.shape[axis]
        spec = torch.fft.fftn(x.float())
        idx = torch.arange(n)
        freq = torch.fft.fftfreq(n) * n
        hit = (idx % num_ghosts == 0) & (freq.abs() > max(0.0, self.restore * n / 2))
        factor = torch.where(hit, 1.0 - intensity, 1.0)
        shape = [1] * x.ndim
        shape[axis] = n
        spec = spec * factor.view(shape).to(spec.device)
        return torch.fft.ifftn(spec).real.to(x.dtype)


class MotionTransform(_PerChannel):
    """Rigid translational motion during acquisition: k-space lines are acquired in order along the
    phase-encoding axis; after each of `num_movements` random instants the head sits translated by up to
    `max_shift` voxels (per axis), i.e. those lines get the matching phase ramp. Gives ghosting/blurring
    along the phase-encoding axis, the typical motion artefact."""

    def __init__(self, num_movements: RandomScalar = (1, 3), max_shift: RandomScalar = (0.5, 3.0),
                 axes: Sequence[int] | None = None, p_per_channel: float = 1.0, synchronize_channels: bool = True):
        super().__init__(p_per_channel, synchronize_channels)
        self.num_movements = num_movements
        self.max_shift = max_shift
        self.axes = axes

    def _draw(self, img):
        nd = img.ndim - 1
        m = max(1, int(round(sample_scalar(self.num_movements))))
        amp = float(sample_scalar(self.max_shift))
        return {"axis": int(np.random.choice(_in_plane_axes(img, self.axes))),
                "times": np.sort(np.random.uniform(0.0, 1.0, m)),
                "shifts": np.random.uniform(-amp, amp, size=(m, nd))}

    def _one(self, x, axis, times, shifts):
        n = x.shape[axis]
        spec = torch.fft.fftn(x.float())
        freqs = [torch.fft.fftfreq(s) for s in x.shape]
        # acquisition time of each line: linear ordering from the most negative to the most positive frequency
        order = torch.argsort(torch.argsort(freqs[axis]))
        t_line = order.float() / n
        segment = torch.from_numpy(np.searchsorted(times, t_line.numpy(), side="right"))  # 0 = before any move
        out = spec.clone()
        view = [1] * x.ndim
        view[axis] = n
        for s, d in enumerate(shifts, start=1):
            sel = (segment == s)
            if not bool(sel.any()):
                continue
            ramp = None
            for ax, (f, dd) in enumerate(zip(freqs, d)):
                shp = [1] * x.ndim
                shp[ax] = f.numel()
                e = torch.exp(-2j * np.pi * f.double() * float(dd)).to(torch.complex64).view(shp)
                ramp = e if ramp is None else ramp * e
            out = torch.where(sel.view(view), spec * ramp, out)
        return torch.fft.ifftn(out).real.to(x.dtype)


class ElasticMagnitude:
    """Elastic displacement magnitude for SpatialTransform, which wants it in voxels: a fraction (uniform in
    [lo, hi]) of the patch edge along that axis, so 2D, 3D and anisotropic patches deform alike."""

    def __init__(self, lo: float = 0.0, hi: float = 0.03):
        self.lo, self.hi = lo, hi

    def __call__(self, *args, patch_size=None, dim=0, **kwargs):
        return float(np.random.uniform(self.lo, self.hi)) * float(patch_size[dim])

    def __repr__(self):
        return f"ElasticMagnitude({self.lo}, {self.hi})"


def mri_transforms(probabilities: dict | None = None) -> List[BasicTransform]:
    """The extra MRI intensity transforms, each wrapped with its own probability."""
    p = dict(AUG_PROBABILITIES, **(probabilities or {}))
    return [
        RandomTransform(BiasFieldTransform(), apply_probability=p["bias_field"]),
        RandomTransform(GhostingTransform(), apply_probability=p["ghosting"]),
        RandomTransform(MotionTransform(), apply_probability=p["motion"]),
        RandomTransform(MultiplicativeNoiseTransform(), apply_probability=p["multiplicative_noise"]),
    ]


def _tail(transforms: list, is_cascaded: bool, foreground_labels) -> list:
    """Padding label to background and, for cascades, previous-stage seg to image channels (as in nnU-Net)."""
    transforms.append(RemoveLabelTransform(-1, 0))
    if is_cascaded:
        assert foreground_labels is not None, 'We need foreground_labels for cascade augmentations'
        transforms.append(MoveSegAsOneHotToDataTransform(source_channel_idx=1, all_labels=foreground_labels,
                                                         remove_channel_from_source=True))
    return transforms


def _finish(transforms, foreground_labels, regions, ignore_label, deep_supervision_scales, skeleton,
            per_slice=False):
    """Skeleton channel (after the padding label is gone), regions, then deep-supervision downsampling, so
    every scale gets a skeleton matching its segmentation."""
    if skeleton:
        if regions is not None:
            raise RuntimeError("skeleton recall is implemented for label-based training only, not for nnU-Net "
                               "region-based training (dataset.json labels given as lists)")
        transforms.append(SkeletonTransform(foreground_labels, tube=2, per_slice=per_slice))
    if regions is not None:
        transforms.append(ConvertSegmentationToRegionsTransform(
            regions=list(regions) + [ignore_label] if ignore_label is not None else regions, channel_in_seg=0))
    if deep_supervision_scales is not None:
        transforms.append(DownsampleSegForDSTransform(ds_scales=deep_supervision_scales))
    return ComposeTransforms(transforms)


def training_transforms(
        patch_size: Union[np.ndarray, Tuple[int]],
        rotation_for_DA: RandomScalar,
        deep_supervision_scales: Union[List, Tuple, None],
        mirror_axes: Tuple[int, ...],
        do_dummy_2d_data_aug: bool,
        use_mask_for_norm: List[bool] = None,
        is_cascaded: bool = False,
        foreground_labels: Union[Tuple[int, ...], List[int]] = None,
        regions: List[Union[List[int], Tuple[int, ...], int]] = None,
        ignore_label: int = None,
        *,
        skeleton: bool = False,
        probabilities: dict | None = None,
        lr_axis: int | None = None,
        lr_pairs: Sequence[Tuple[int, int]] | None = None,
        on_device: bool = False,
) -> BasicTransform:
    """nnU-Net 2.8's default training pipeline plus elastic deformation, bias field, ghosting, motion and
    multiplicative noise; `skeleton=True` appends the tubed skeleton as a last segmentation channel.
    With `lr_pairs`, a mirror along `lr_axis` swaps each left label with its right partner (laterality.py);
    the skeleton channel is built after mirroring, from the swapped labels.
    `on_device=True` leaves out what device_aug.DeviceAugmentation does in the trainer's train_step (elastic
    deformation, the MRI intensity transforms, nnU-Net's Gaussian blur and gamma; the deep-supervision
    downsampling when the caller passes no scales); pseudo-2D patches then get per-slice skeletons (thinner work
    than 3D thinning, and the slices are what the in-plane augmentation moves)."""
    p = dict(AUG_PROBABILITIES, **(probabilities or {}))
    transforms = []
    if do_dummy_2d_data_aug:
        ignore_axes = (0,)
        transforms.append(Convert3DTo2DTransform())
        patch_size_spatial = patch_size[1:]
    else:
        patch_size_spatial = patch_size
        ignore_axes = None
    transforms.append(SpatialTransform(
        patch_size_spatial, patch_center_dist_from_border=0, random_crop=False,
        p_elastic_deform=0 if on_device else p["elastic"], elastic_deform_scale=(0.05, 0.15),
        elastic_deform_magnitude=ElasticMagnitude(0.0, 0.03),
        p_rotation=0.2, rotation=rotation_for_DA, p_scaling=0.2, scaling=(0.7, 1.4),
        p_synchronize_scaling_across_axes=1, bg_style_seg_sampling=False, border_mode_seg='constant',
        padding_value_seg=-1))
    if do_dummy_2d_data_aug:
        transforms.append(Convert2DTo3DTransform())

    if not on_device:
        transforms.extend(mri_transforms(p))
    transforms.append(RandomTransform(GaussianNoiseTransform(
        noise_variance=(0, 0.1), p_per_channel=1, synchronize_channels=True), apply_probability=0.1))
    if not on_device:
        transforms.append(RandomTransform(GaussianBlurTransform(
            blur_sigma=NNUNET_BLUR["sigma"], synchronize_channels=False, synchronize_axes=False,
            p_per_channel=NNUNET_BLUR["p_per_channel"], benchmark=True),
            apply_probability=NNUNET_BLUR["probability"]))
    transforms.append(RandomTransform(MultiplicativeBrightnessTransform(
        multiplier_range=BGContrast((0.75, 1.25)), synchronize_channels=False, p_per_channel=1),
        apply_probability=0.15))
    transforms.append(RandomTransform(ContrastTransform(
        contrast_range=BGContrast((0.75, 1.25)), preserve_range=True, synchronize_channels=False,
        p_per_channel=1), apply_probability=0.15))
    transforms.append(RandomTransform(SimulateLowResolutionTransform(
        scale=(0.5, 1), synchronize_channels=False, synchronize_axes=True, ignore_axes=ignore_axes,
        allowed_channels=None, p_per_channel=0.5), apply_probability=0.25))
    if not on_device:
        for invert in (1, 0):
            transforms.append(RandomTransform(GammaTransform(
                gamma=BGContrast(NNUNET_GAMMA["range"]), p_invert_image=invert, synchronize_channels=False,
                p_per_channel=1, p_retain_stats=1),
                apply_probability=NNUNET_GAMMA["probability_inverted" if invert else "probability"]))
    if mirror_axes is not None and len(mirror_axes) > 0:
        if lr_pairs and lr_axis is not None and lr_axis in mirror_axes:
            transforms.append(LRSwapMirrorTransform(mirror_axes, lr_axis, lr_pairs))
        else:
            transforms.append(MirrorTransform(allowed_axes=mirror_axes))
    if use_mask_for_norm is not None and any(use_mask_for_norm):
        transforms.append(MaskImageTransform(
            apply_to_channels=[i for i in range(len(use_mask_for_norm)) if use_mask_for_norm[i]],
            channel_idx_in_seg=0, set_outside_to=0))

    _tail(transforms, is_cascaded, foreground_labels)
    if is_cascaded:
        transforms.append(RandomTransform(ApplyRandomBinaryOperatorTransform(
            channel_idx=list(range(-len(foreground_labels), 0)), strel_size=(1, 8), p_per_label=0.5),
            apply_probability=0.4))
        transforms.append(RandomTransform(RemoveRandomConnectedComponentFromOneHotEncodingTransform(
            channel_idx=list(range(-len(foreground_labels), 0)), fill_with_other_class_p=0,
            dont_do_if_covers_more_than_x_percent=0.15, p_per_label=0.5), apply_probability=0.2))
    return _finish(transforms, foreground_labels, regions, ignore_label, deep_supervision_scales, skeleton,
                   per_slice=on_device and do_dummy_2d_data_aug)


def validation_transforms(
        deep_supervision_scales: Union[List, Tuple, None],
        is_cascaded: bool = False,
        foreground_labels: Union[Tuple[int, ...], List[int]] = None,
        regions: List[Union[List[int], Tuple[int, ...], int]] = None,
        ignore_label: int = None,
        *,
        skeleton: bool = False,
) -> BasicTransform:
    """nnU-Net's validation pipeline; `skeleton=True` adds the skeleton channel exactly as in training."""
    transforms = _tail([], is_cascaded, foreground_labels)
    return _finish(transforms, foreground_labels, regions, ignore_label, deep_supervision_scales, skeleton)
