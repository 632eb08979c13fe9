"""Batched intensity augmentations for the training device: the worker-side transforms of transforms.py
(additive Gaussian noise, multiplicative noise, bias field, ghosting, motion) applied to a whole batch
(B, C, *spatial) at once, with the same parameter distributions, drawn per sample (per channel where the
worker draws per channel). Each function changes only the samples in `sel` (a boolean (B,) mask) and returns
the batch. Device-agnostic: every random draw is made on the batch's device.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def _uniform(lo: float, hi: float, shape, like: torch.Tensor) -> torch.Tensor:
    return torch.empty(shape, device=like.device, dtype=torch.float32).uniform_(lo, hi)


def _bcast(t: torch.Tensor, nd: int) -> torch.Tensor:
    """(n,) or (n, c) parameters broadcast against (n, c, *spatial)."""
    return t.view(*t.shape, *([1] * (nd + 2 - t.ndim)))


def _spatial(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(2, x.ndim))


def _in_plane_axes(nd: int) -> tuple[int, ...]:
    # the last two spatial axes, as transforms._in_plane_axes (0-based over the spatial axes)
    return tuple(range(max(0, nd - 2), nd))


def gaussian_noise(x: torch.Tensor, sel: torch.Tensor, variance=(0.0, 0.1)) -> torch.Tensor:
    """nnU-Net's GaussianNoiseTransform (synchronised channels): x + N(0, sigma), sigma ~ U(variance)."""
    idx = sel.nonzero().flatten()
    if idx.numel():
        sigma = _uniform(*variance, (idx.numel(),), x)
        x[idx] += torch.randn_like(x[idx]) * _bcast(sigma, x.ndim - 2).to(x.dtype)
    return x


def multiplicative_noise(x: torch.Tensor, sel: torch.Tensor, sigma=(0.0, 0.1)) -> torch.Tensor:
    """MultiplicativeNoiseTransform: signal above the patch minimum times (1 + sigma N(0, 1)), clipped at 0;
    sigma ~ U(sigma) per channel."""
    idx = sel.nonzero().flatten()
    if idx.numel():
        v = x[idx]
        base = v.amin(dim=_spatial(v), keepdim=True)
        s = _bcast(_uniform(*sigma, v.shape[:2], v), v.ndim - 2).to(v.dtype)
        x[idx] = (v - base) * (1.0 + s * torch.randn_like(v)).clamp_min_(0.0) + base
    return x


def bias_field(x: torch.Tensor, sel: torch.Tensor, strength=(0.1, 0.6), order: int = 3) -> torch.Tensor:
    """BiasFieldTransform: per channel, exp of a random polynomial of degree <= order over [-1, 1]^nd (no
    constant term; coefficients U(+-s / sqrt(n_terms)), s ~ U(strength)), scaled to mean 1."""
    idx = sel.nonzero().flatten()
    if not idx.numel():
        return x
    v = x[idx]
    n, c, shape = v.shape[0], v.shape[1], v.shape[2:]
    nd, o = len(shape), order + 1
    total = torch.from_numpy(np.indices((o,) * nd).sum(0)).to(v.device)
    use = ((total <= order) & (total > 0)).float()
    amp = _uniform(*strength, (n, c), v) / float(use.sum().sqrt())
    coef = (torch.rand((n, c) + (o,) * nd, device=v.device) * 2 - 1) * _bcast(amp, nd) * use
    vs = [torch.linspace(-1, 1, s, device=v.device)[:, None] ** torch.arange(o, device=v.device) for s in shape]
    letters, degs = "xyz"[:nd], "ijk"[:nd]
    expr = ",".join(f"{a}{d}" for a, d in zip(letters, degs)) + f",nc{degs}->nc{letters}"
    f = torch.exp(torch.einsum(expr, *vs, coef))
    f = f / f.mean(dim=_spatial(f), keepdim=True)
    base = v.amin(dim=_spatial(v), keepdim=True)
    x[idx] = ((v - base) * f.to(v.dtype)) + base
    return x


def _axis_draws(n: int, nd: int, like: torch.Tensor) -> torch.Tensor:
    axes = torch.tensor(_in_plane_axes(nd), device=like.device)
    return axes[torch.randint(len(axes), (n,), device=like.device)]


def _line_view(t: torch.Tensor, nd: int, axis: int) -> torch.Tensor:
    """(n, length) per-line values viewed as (n, 1, ..., length at spatial `axis`, ...)."""
    shape = [t.shape[0], 1] + [1] * nd
    shape[2 + axis] = t.shape[1]
    return t.view(shape)


def ghosting(x: torch.Tensor, sel: torch.Tensor, num_ghosts=(2, 8), intensity=(0.3, 0.8),
             restore: float = 0.02) -> torch.Tensor:
    """GhostingTransform (channels synchronised): every g-th k-space line along a random in-plane axis, outside
    the central `restore` fraction, scaled by 1 - intensity; g = max(2, round(U(num_ghosts)))."""
    idx = sel.nonzero().flatten()
    if not idx.numel():
        return x
    v = x[idx].float()
    n, nd = v.shape[0], v.ndim - 2
    axis = _axis_draws(n, nd, v)
    g = torch.round(_uniform(*num_ghosts, (n,), v)).clamp_min(2).long()
    k = _uniform(*intensity, (n,), v)
    spec = torch.fft.fftn(v, dim=_spatial(v))
    for a in _in_plane_axes(nd):
        m = v.shape[2 + a]
        line = torch.arange(m, device=v.device)
        freq = torch.fft.fftfreq(m, device=v.device) * m
        hit = (line[None] % g[:, None] == 0) & (freq.abs() > max(0.0, restore * m / 2))[None] & (axis == a)[:, None]
        spec = spec * _line_view(torch.where(hit, 1.0 - k[:, None], torch.ones_like(k)[:, None]), nd, a)
    x[idx] = torch.fft.ifftn(spec, dim=_spatial(v)).real.to(x.dtype)
    return x


def motion(x: torch.Tensor, sel: torch.Tensor, num_movements=(1, 3), max_shift=(0.5, 3.0)) -> torch.Tensor:
    """MotionTransform (channels synchronised): k-space lines along a random in-plane axis are acquired in
    frequency order; after each of m = max(1, round(U(num_movements))) instants ~ U(0, 1) the object sits
    shifted by U(+-a) voxels per axis (a ~ U(max_shift)): those lines get the matching phase ramp."""
    idx = sel.nonzero().flatten()
    if not idx.numel():
        return x
    v = x[idx].float()
    n, nd = v.shape[0], v.ndim - 2
    mmax = int(round(max(num_movements)))
    axis = _axis_draws(n, nd, v)
    m = torch.round(_uniform(*num_movements, (n,), v)).clamp_min(1).long()
    amp = _uniform(*max_shift, (n,), v)
    times = torch.rand((n, mmax), device=v.device)
    times = torch.where(torch.arange(mmax, device=v.device)[None] < m[:, None], times, 2.0).sort(dim=1).values
    shifts = (torch.rand((n, mmax, nd), device=v.device) * 2 - 1) * amp[:, None, None]
    shifts = torch.cat((torch.zeros_like(shifts[:, :1]), shifts), dim=1)  # segment 0: before any move
    spec = torch.fft.fftn(v, dim=_spatial(v))
    freqs = [torch.fft.fftfreq(s, device=v.device, dtype=torch.float64) for s in v.shape[2:]]
    for a in _in_plane_axes(nd):
        rows = (axis == a).nonzero().flatten()
        if not rows.numel():
            continue
        length = v.shape[2 + a]
        t_line = torch.argsort(torch.argsort(freqs[a])).float() / length
        seg = torch.searchsorted(times[rows].contiguous(), t_line[None].expand(len(rows), -1).contiguous(),
                                 right=True)
        d = torch.gather(shifts[rows], 1, seg[..., None].expand(-1, -1, nd))  # (rows, lines, nd) shift per line
        phase = 0
        for ax, f in enumerate(freqs):
            fv = f.view([1, 1] + [f.numel() if i == ax else 1 for i in range(nd)])
            phase = phase + fv * _line_view(d[..., ax].double(), nd, a)
        spec[rows] = spec[rows] * torch.exp(-2j * np.pi * phase).to(spec.dtype)
    x[idx] = torch.fft.ifftn(spec, dim=_spatial(v)).real.to(x.dtype)
    return x


def _kernel_sizes(sigma: torch.Tensor, truncate: float) -> torch.Tensor:
    """batchgeneratorsv2's Gaussian kernel size per sigma: _round_to_nearest_odd(truncate sigma + 0.5)."""
    n = sigma * truncate + 0.5
    r = torch.round(n)  # half to even, as Python's round
    return torch.where(r % 2 == 1, r, torch.where(n - r >= 0, r + 1, r - 1))


def _blur_kernels(sigma: torch.Tensor, truncate: float, radius: int) -> torch.Tensor:
    """(k, 2 radius + 1) Gaussian kernels, one per sigma: batchgeneratorsv2's _build_kernel (size
    `_kernel_sizes`, normalised to sum 1), centred in zeros up to `radius`."""
    half = (_kernel_sizes(sigma, truncate) - 1) / 2
    t = torch.arange(-radius, radius + 1, device=sigma.device, dtype=torch.float32)[None]
    pdf = torch.exp(-0.5 * (t / sigma[:, None]) ** 2) * (t.abs() <= half[:, None])
    return pdf / pdf.sum(dim=1, keepdim=True)


def gaussian_blur(x: torch.Tensor, sel: torch.Tensor, sigma=(0.5, 1.0), p_per_channel: float = 0.5,
                  truncate: float = 6.0) -> torch.Tensor:
    """nnU-Net's GaussianBlurTransform(blur_sigma, synchronize_channels=False, synchronize_axes=False,
    p_per_channel): each channel of a selected sample with probability p_per_channel, blurred along every
    spatial axis in turn with its own sigma ~ U(sigma) (batchgeneratorsv2's kernel, reflect padding); all
    blurred channels of the batch in one grouped convolution per axis."""
    n, c, shape = x.shape[0], x.shape[1], x.shape[2:]
    nd = len(shape)
    hit = (sel[:, None] & (torch.rand((n, c), device=x.device) < p_per_channel)).nonzero()
    if not hit.shape[0]:
        return x
    v = x[hit[:, 0], hit[:, 1]][None].float()  # (1, k, *shape): one group per blurred channel
    k = v.shape[1]
    sig = _uniform(*sigma, (k, nd), v)
    # the largest kernel's half (the size grows with sigma)
    radius = int(_kernel_sizes(torch.tensor([float(max(sigma))]), truncate)[0]) // 2
    conv = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
    for a in range(nd):
        w = _blur_kernels(sig[:, a], truncate, radius)
        shp = [k, 1] + [1] * nd
        shp[2 + a] = 2 * radius + 1
        pad = [0, 0] * nd
        pad[2 * (nd - 1 - a)] = pad[2 * (nd - 1 - a) + 1] = radius
        v = conv(F.pad(v, pad, mode="reflect"), w.view(shp), groups=k)
    x[hit[:, 0], hit[:, 1]] = v[0].to(x.dtype)
    return x


def _bg_contrast(value_range, shape, like: torch.Tensor) -> torch.Tensor:
    """batchgeneratorsv2's BGContrast draw: with probability 1/2 (when the range reaches below 1) U(lo, 1),
    else U(max(lo, 1), hi)."""
    lo, hi = value_range
    below = _uniform(lo, 1.0, shape, like) if lo < 1 else None
    above = _uniform(max(lo, 1.0), hi, shape, like)
    if below is None:
        return above
    return torch.where(torch.rand(shape, device=like.device) < 0.5, below, above)


def gamma(x: torch.Tensor, sel: torch.Tensor, gamma_range=(0.7, 1.5), invert: bool = False,
          retain_stats: bool = True, eps: float = 1e-7) -> torch.Tensor:
    """nnU-Net's GammaTransform(BGContrast(gamma_range), p_invert_image=invert, synchronize_channels=False,
    p_per_channel=1, p_retain_stats=retain_stats): per channel, x -> ((x - min) / range) ** g * range + min,
    g drawn per channel; on the negated image when inverting; mean and standard deviation kept."""
    idx = sel.nonzero().flatten()
    if not idx.numel():
        return x
    v = x[idx].float()
    if invert:
        v = -v
    dims = _spatial(v)
    if retain_stats:
        mean, std = v.mean(dim=dims, keepdim=True), v.std(dim=dims, keepdim=True)
    lo = v.amin(dim=dims, keepdim=True)
    rng = v.amax(dim=dims, keepdim=True) - lo
    g = _bcast(_bg_contrast(gamma_range, v.shape[:2], v), v.ndim - 2)
    v = ((v - lo) / rng.clamp_min(eps)) ** g * rng + lo
    if retain_stats:
        v = (v - v.mean(dim=dims, keepdim=True)) * (std / v.std(dim=dims, keepdim=True).clamp_min(eps)) + mean
    if invert:
        v = -v
    x[idx] = v.to(x.dtype)
    return x
