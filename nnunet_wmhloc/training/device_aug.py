"""The augmentation nnU-Net's default pipeline lacks, run batched on the training device in `train_step`
(after the batch has moved there) instead of on the data-loader workers, which on a GPU server are the
bottleneck: elastic deformation, bias field, ghosting, motion and multiplicative noise, and nnU-Net's own
Gaussian blur and gamma transforms (the costliest of nnU-Net's worker pipeline after the spatial transform;
nnU-Net's additive Gaussian noise optionally, off by default: it is cheap and stays on the workers). They run
after the workers' transforms (blur, then gamma, last, in nnU-Net's order), each with its worker-side parameter
distribution and per-sample probability (transforms.py, SpatialTransform's elastic branch);
tests/test_training_device_aug.py compares them.

Elastic deformation: per sample, each displacement component d is N(0, 1) noise blurred (in Fourier space, as
batchgeneratorsv2 does) with sigma = U(0.05, 0.15) x patch edge d, scaled to a maximum of U(0, 0.03) x patch
edge d voxels and centred (mean 0). The image is resampled bilinearly, every target (each deep-supervision
scale, the skeleton channel) with nearest neighbour from the same normalised field, so labels (the ignore
label, left/right labels after the workers' swap-mirroring) move with the image and keep their values.
The patch is already cropped: samples falling outside it take the border value. Pseudo-2D patches (nnU-Net's
dummy 2D augmentation) get one in-plane field for all slices, as on the workers.

Deep-supervision targets: with `ds_scales` the workers stop before nnU-Net's DownsampleSegForDSTransform and
the downsampling runs here, batched, after the deformation (`downsample_for_ds`, the same nearest-exact rule).
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F

from nnunet_wmhloc.training import intensity
from nnunet_wmhloc.training.transforms import NNUNET_BLUR, NNUNET_GAMMA


def _fourier_gaussian_blur(noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur (n, k, *shape) with an isotropic Gaussian of sigma[n, k] voxels (periodic, as scipy's
    fourier_gaussian on a complex FFT)."""
    shape = noise.shape[2:]
    dims = tuple(range(2, noise.ndim))
    spec = torch.fft.rfftn(noise, dim=dims)
    f2 = 0
    for i, s in enumerate(shape):
        f = torch.fft.rfftfreq(s, device=noise.device) if i == len(shape) - 1 else \
            torch.fft.fftfreq(s, device=noise.device)
        f2 = f2 + (f ** 2).view([f.numel() if j == i else 1 for j in range(len(shape))])
    g = torch.exp(-2 * torch.pi ** 2 * sigma.view(*sigma.shape, *([1] * len(shape))) ** 2 * f2)
    return torch.fft.irfftn(spec * g, s=shape, dim=dims)


def elastic_offsets(n: int, shape: Sequence[int], device, scale=(0.05, 0.15), magnitude=(0.0, 0.03)) -> torch.Tensor:
    """(n, nd, *shape) displacements in voxels, component d along spatial axis d."""
    nd = len(shape)
    edge = torch.tensor([float(s) for s in shape], device=device)
    sigma = torch.empty((n, nd), device=device).uniform_(*scale) * edge
    mag = torch.empty((n, nd), device=device).uniform_(*magnitude) * edge
    off = _fourier_gaussian_blur(torch.randn((n, nd, *shape), device=device), sigma)
    dims = tuple(range(2, off.ndim))
    mx = off.abs().amax(dim=dims, keepdim=True)
    off = off / (mx / mag.clamp_min(1e-8).view(n, nd, *([1] * nd)))
    return off - off.mean(dim=dims, keepdim=True)


def normalised_field(off: torch.Tensor) -> torch.Tensor:
    """Voxel displacements (n, nd, *shape) -> normalised ones (align_corners=False units: 2 d / edge)."""
    shape = off.shape[2:]
    scale = torch.tensor([2.0 / s for s in shape], device=off.device).view(1, len(shape), *([1] * len(shape)))
    return off * scale


def _grid(field: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """grid_sample grid (n, *shape, nd) = identity + the normalised field resampled to `shape`."""
    nd = len(shape)
    if tuple(field.shape[2:]) != tuple(shape):
        field = F.interpolate(field, size=tuple(shape), mode="bilinear" if nd == 2 else "trilinear",
                              align_corners=False)
    axes = [(torch.arange(s, device=field.device, dtype=field.dtype) * 2 + 1) / s - 1 for s in shape]
    ident = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)[None]
    g = (ident + field).movedim(1, -1)
    return g.flip(-1)  # grid_sample wants (x, y[, z]) = reversed spatial axes


def warp(x: torch.Tensor, field: torch.Tensor, nd: int, nearest: bool) -> torch.Tensor:
    """Resample (n, C, *spatial) with the normalised field (n, nd, *field_shape). When the patch has one more
    spatial axis than the field (pseudo-2D), the same in-plane field moves every slice."""
    shape = x.shape[2:]
    flat = x.reshape(x.shape[0], -1, *shape[-nd:]) if len(shape) > nd else x
    src = flat if flat.is_floating_point() else flat.float()
    out = F.grid_sample(src, _grid(field.to(src.dtype), flat.shape[2:]), mode="nearest" if nearest else "bilinear",
                        padding_mode="border", align_corners=False)
    return out.to(x.dtype).reshape(x.shape)


def downsample_for_ds(target: torch.Tensor, scales) -> List[torch.Tensor]:
    """Deep-supervision targets of a batched (n, C, *spatial) target: batchgeneratorsv2's
    DownsampleSegForDSTransform (nearest-exact per scale, scale 1 as is), on the whole batch at once."""
    out, flt = [], None
    for s in scales:
        s = [s] * (target.ndim - 2) if not isinstance(s, (tuple, list)) else list(s)
        if all(i == 1 for i in s):
            out.append(target)
            continue
        if flt is None:
            flt = target.float()
        shape = [round(i * j) for i, j in zip(target.shape[2:], s)]
        out.append(F.interpolate(flt, shape, mode="nearest-exact").to(target.dtype))
    return out


class DeviceAugmentation:
    """Batched augmentation of (data, target[s]) on their device; `probabilities` as transforms.AUG_PROBABILITIES
    (elastic, bias_field, ghosting, motion, multiplicative_noise), plus optionally `gaussian_noise` and
    `gaussian_blur`, `gamma_inverted` and `gamma` (nnU-Net's, with transforms.NNUNET_BLUR's and NNUNET_GAMMA's
    settings; default 0 for all four).
    `pseudo_2d`: the patch's first spatial axis is the slice axis (nnU-Net's dummy 2D augmentation).
    `mask_channels`: channels normalised inside a mask (zero outside); they stay zero there.
    `ds_scales`: nnU-Net's deep-supervision scales; the workers then hand over the full-resolution target only
    and the list of downsampled targets is made here, after the elastic deformation (as the worker pipeline
    orders them), which also takes that work off the workers."""

    def __init__(self, probabilities: dict, pseudo_2d: bool = False, mask_channels: Sequence[int] = (),
                 ds_scales=None):
        self.p = dict(probabilities)
        self.p.setdefault("gaussian_noise", 0.0)
        for key in ("gaussian_blur", "gamma_inverted", "gamma"):
            self.p.setdefault(key, 0.0)
        self.pseudo_2d = bool(pseudo_2d)
        self.mask_channels = list(mask_channels)
        self.ds_scales = ds_scales

    def __repr__(self):  # nnU-Net's debug.json records it
        return (f"DeviceAugmentation(p={self.p}, pseudo_2d={self.pseudo_2d}, mask_channels={self.mask_channels}, "
                f"ds_scales={self.ds_scales})")

    def _draw(self, key: str, n: int, device) -> torch.Tensor:
        return torch.rand(n, device=device) < self.p[key]

    def elastic(self, data: torch.Tensor, targets: List[torch.Tensor]):
        n = data.shape[0]
        sel = self._draw("elastic", n, data.device).nonzero().flatten()
        if not sel.numel():
            return data, targets
        nd = data.ndim - 2 - (1 if self.pseudo_2d and data.ndim == 5 else 0)
        field = normalised_field(elastic_offsets(sel.numel(), data.shape[-nd:], data.device))
        data = data.clone()
        data[sel] = warp(data[sel], field, nd, nearest=False)
        out = []
        for t in targets:
            t = t.clone()
            t[sel] = warp(t[sel], field, nd, nearest=True)
            out.append(t)
        return data, out

    @torch.no_grad()
    def __call__(self, data: torch.Tensor, target):
        targets = target if isinstance(target, list) else [target]
        data, targets = self.elastic(data, targets)
        zero = data[:, self.mask_channels] == 0 if self.mask_channels else None
        n, dev = data.shape[0], data.device
        data = intensity.bias_field(data, self._draw("bias_field", n, dev))
        data = intensity.ghosting(data, self._draw("ghosting", n, dev))
        data = intensity.motion(data, self._draw("motion", n, dev))
        data = intensity.multiplicative_noise(data, self._draw("multiplicative_noise", n, dev))
        data = intensity.gaussian_noise(data, self._draw("gaussian_noise", n, dev))
        data = intensity.gaussian_blur(data, self._draw("gaussian_blur", n, dev), NNUNET_BLUR["sigma"],
                                       NNUNET_BLUR["p_per_channel"])
        data = intensity.gamma(data, self._draw("gamma_inverted", n, dev), NNUNET_GAMMA["range"], invert=True)
        data = intensity.gamma(data, self._draw("gamma", n, dev), NNUNET_GAMMA["range"])
        if zero is not None:
            sub = data[:, self.mask_channels]
            data[:, self.mask_channels] = torch.where(zero, torch.zeros_like(sub), sub)
        if self.ds_scales is not None and not isinstance(target, list):
            return data, downsample_for_ds(targets[0], self.ds_scales)
        return data, (targets if isinstance(target, list) else targets[0])
