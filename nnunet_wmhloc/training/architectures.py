"""The paper's four networks, built from an nnU-Net plan (patch size, input channels, classes, 2d or 3d).

- "UNet":         nnU-Net's own network of the plan (PlainConvUNet, or whatever the plan names).
- "UNETR":        MONAI's UNETR (Hatamizadeh et al. 2022): ViT-B/16 encoder (12 layers, hidden 768), conv decoder.
- "MultiResUNet": ours (Ibtehaz & Rahman 2020; MONAI and the other maintained packages do not have it):
                  MultiRes blocks + residual "Res paths", laid on the plan's stages, strides and kernel sizes.
- "MedNeXt":      MONAI's MedNeXt (Roy et al. 2023), size B, kernel 3, 4 stride-2 stages.

Every network keeps nnU-Net's contract: input (B, C_in, *patch_size), output logits (B, C_out, *patch_size), or,
with deep supervision on, a list of logits from full resolution down, matching `deep_supervision_scales`.
Networks with a fixed input grid (UNETR: 16-voxel ViT patches and learned position embeddings; MedNeXt: 16 =
2^4 for its four stride-2 stages) zero-pad the patch at its far end inside the module and crop the logits back,
so any plan patch size works (zero = the mean of nnU-Net's z-scored intensities; nnU-Net pads with 0 too).

Deep supervision: UNet (as in nnU-Net), MultiResUNet (a 1x1 head per decoder stage, at the plan's scales) and
MedNeXt (its own heads, at 1, 1/2, ..., 1/16) have it; UNETR has none (the loss then sees the full-resolution
output only). Heads exist whether or not it is on, so a checkpoint trained with it loads for inference without.
"""
from __future__ import annotations

import math
import pydoc
from typing import List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ARCHITECTURES", "build_network", "deep_supervision_scales", "has_deep_supervision", "set_deep_supervision",
           "MultiResUNet", "MultiResBlock", "ResPath", "PaddedUNETR", "PaddedMedNeXt"]

ARCHITECTURES = ("UNet", "UNETR", "MultiResUNet", "MedNeXt")
_HAS_DS = {"UNet": True, "UNETR": False, "MultiResUNet": True, "MedNeXt": True}

UNETR_PATCH = 16      # MONAI's UNETR hard-codes ViT patches of 16 voxels per axis
MEDNEXT_STAGES = 4    # stride-2 stages of MONAI's MedNeXt
MEDNEXT_VARIANT = "B"  # MedNeXt-B with kernel 3: the MedNeXt paper's base size


def _check_arch(arch: str) -> str:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")
    return arch


def has_deep_supervision(arch: str) -> bool:
    return _HAS_DS[_check_arch(arch)]


def _ceil_to(x: int, m: int) -> int:
    return int(math.ceil(x / m) * m)


def _mednext_levels(patch_size: Sequence[int]) -> int:
    """MedNeXt outputs used for deep supervision: all 5 unless a downsampled target would have 0 voxels."""
    n = 1
    for k in range(1, MEDNEXT_STAGES + 1):
        if min(round(p / 2 ** k) for p in patch_size) < 1:
            break
        n += 1
    return n


def set_deep_supervision(network: nn.Module, enabled: bool) -> None:
    """Switch deep supervision of a network from `build_network` (nnU-Net's networks keep the flag on their
    decoder, ours on the network itself)."""
    decoder = getattr(network, "decoder", None)
    if decoder is not None and hasattr(decoder, "deep_supervision"):
        decoder.deep_supervision = enabled
    else:
        network.deep_supervision = enabled


def deep_supervision_scales(arch: str, configuration_manager) -> Optional[List[List[float]]]:
    """Scales of the network's deep-supervision outputs (full resolution first), in the form nnU-Net's
    DownsampleSegForDSTransform and loss weighting take; None for a network without deep supervision."""
    _check_arch(arch)
    if arch in ("UNet", "MultiResUNet"):
        # nnU-Net's own rule (nnUNetTrainer._get_deep_supervision_scales)
        return [list(i) for i in 1 / np.cumprod(np.vstack(configuration_manager.pool_op_kernel_sizes), axis=0)][:-1]
    if arch == "MedNeXt":
        patch = configuration_manager.patch_size
        return [[1 / 2 ** k] * len(patch) for k in range(_mednext_levels(patch))]
    return None


# ------------------------------------------------------------------ padding to a fixed grid
def _pad_end(x: torch.Tensor, target: Sequence[int]) -> torch.Tensor:
    spatial = x.shape[2:]
    pad = []
    for s, t in zip(reversed(spatial), reversed(list(target))):
        pad += [0, t - s]
    return F.pad(x, pad) if any(pad) else x


def _crop(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    return x[(slice(None), slice(None)) + tuple(slice(0, s) for s in shape)]


# ------------------------------------------------------------------ UNETR (MONAI)
class PaddedUNETR(nn.Module):
    """MONAI's UNETR for one nnU-Net patch size: the ViT's grid is the patch size rounded up to multiples of 16
    (its learned position embeddings fix it), inputs are zero-padded to it and logits cropped back."""

    def __init__(self, in_channels: int, out_channels: int, patch_size: Sequence[int], **unetr_kwargs):
        super().__init__()
        from monai.networks.nets import UNETR
        self.patch_size = tuple(int(p) for p in patch_size)
        self.grid = tuple(_ceil_to(p, UNETR_PATCH) for p in self.patch_size)
        kw = dict(feature_size=16, hidden_size=768, mlp_dim=3072, num_heads=12, proj_type="conv",
                  norm_name="instance", res_block=True, dropout_rate=0.0)
        kw.update(unetr_kwargs)
        self.net = UNETR(in_channels=in_channels, out_channels=out_channels, img_size=self.grid,
                         spatial_dims=len(self.patch_size), **kw)
        # MONAI builds a cross-attention LayerNorm in every block even without cross-attention; left unused it
        # would break nnU-Net's multi-GPU training (DDP without find_unused_parameters)
        for blk in self.net.vit.blocks:
            if not getattr(blk, "with_cross_attention", True):
                blk.norm_cross_attn = nn.Identity()

    @property
    def deep_supervision(self) -> bool:
        return False

    @deep_supervision.setter
    def deep_supervision(self, enabled: bool):
        if enabled:
            raise ValueError("UNETR has no deep supervision")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape[2:]
        if any(s > g for s, g in zip(shape, self.grid)):
            raise RuntimeError(f"UNETR was built for inputs up to {self.grid}, got {tuple(shape)}")
        return _crop(self.net(_pad_end(x, self.grid)), shape)


# ------------------------------------------------------------------ MedNeXt (MONAI)
def _mednext_class():
    from monai.networks.nets import MedNeXt

    class _MedNeXt(MedNeXt):
        """MONAI's MedNeXt, but the deep-supervision outputs follow `do_ds` alone: MONAI returns them in training
        mode only, and nnU-Net computes its validation loss in eval mode with deep supervision on."""

        def forward(self, x):
            x = self.stem(x)
            skips = []
            for enc_stage, down_block in zip(self.enc_stages, self.down_blocks):
                x = enc_stage(x)
                skips.append(x)
                x = down_block(x)
            x = self.bottleneck(x)
            ds = []
            for i, (up_block, dec_stage) in enumerate(zip(self.up_blocks, self.dec_stages)):
                if self.do_ds:
                    ds.append(self.out_blocks[i](x))
                x = dec_stage(up_block(x) + skips[-(i + 1)])
            x = self.out_0(x)
            return [x] + ds[::-1] if self.do_ds else x

    return _MedNeXt


class PaddedMedNeXt(nn.Module):
    """MONAI's MedNeXt (size B, kernel 3, residual blocks, as MONAI's create_mednext) with zero padding to a
    multiple of 16 and logits cropped back; deep-supervision outputs cropped to the sizes nnU-Net's target
    downsampling gives (round(size * scale))."""

    VARIANTS = {
        "S": dict(encoder_expansion_ratio=2, decoder_expansion_ratio=2, bottleneck_expansion_ratio=2,
                  blocks_down=(2, 2, 2, 2), blocks_bottleneck=2, blocks_up=(2, 2, 2, 2)),
        "B": dict(encoder_expansion_ratio=(2, 3, 4, 4), decoder_expansion_ratio=(4, 4, 3, 2),
                  bottleneck_expansion_ratio=4, blocks_down=(2, 2, 2, 2), blocks_bottleneck=2,
                  blocks_up=(2, 2, 2, 2)),
    }

    def __init__(self, in_channels: int, out_channels: int, patch_size: Sequence[int], deep_supervision: bool,
                 variant: str = MEDNEXT_VARIANT, kernel_size: int = 3, init_filters: int = 32):
        super().__init__()
        self.patch_size = tuple(int(p) for p in patch_size)
        self.multiple = 2 ** MEDNEXT_STAGES
        self.n_outputs = _mednext_levels(self.patch_size)
        # heads always built (deep_supervision=True) so one state dict serves training and inference
        self.net = _mednext_class()(spatial_dims=len(self.patch_size), in_channels=in_channels,
                                    out_channels=out_channels, init_filters=init_filters, kernel_size=kernel_size,
                                    deep_supervision=True, use_residual_connection=True, norm_type="group",
                                    global_resp_norm=False, **self.VARIANTS[variant])
        self.deep_supervision = deep_supervision

    @property
    def deep_supervision(self) -> bool:
        return self.net.do_ds

    @deep_supervision.setter
    def deep_supervision(self, enabled: bool):
        self.net.do_ds = bool(enabled)

    def forward(self, x: torch.Tensor):
        shape = tuple(x.shape[2:])
        out = self.net(_pad_end(x, [_ceil_to(s, self.multiple) for s in shape]))
        if not self.deep_supervision:
            return _crop(out, shape)
        return [_crop(o, [round(s / 2 ** k) for s in shape]) for k, o in enumerate(out[:self.n_outputs])]


# ------------------------------------------------------------------ MultiResUNet (ours)
class _ConvNorm(nn.Sequential):
    """conv -> norm (-> nonlin): the original's conv2d_bn (bias-free conv, normalisation, optional activation)."""

    def __init__(self, conv_op, norm_op, norm_kwargs, nonlin, nonlin_kwargs, c_in, c_out, kernel, act=True):
        kernel = [kernel] * _dim(conv_op) if isinstance(kernel, int) else list(kernel)
        layers = [conv_op(c_in, c_out, kernel, padding=[k // 2 for k in kernel], bias=False),
                  norm_op(c_out, **norm_kwargs)]
        if act:
            layers.append(nonlin(**nonlin_kwargs))
        super().__init__(*layers)


def _dim(conv_op) -> int:
    return 3 if conv_op is nn.Conv3d else 2


class MultiResBlock(nn.Module):
    """MultiRes block: three chained kxk convs (the 3x3, "5x5" and "7x7" receptive fields) with W/6, W/3, W/2
    filters (W = alpha * U), concatenated, normalised, plus a 1x1 shortcut, activation, normalisation."""

    def __init__(self, ops: dict, c_in: int, u: int, kernel, alpha: float = 1.67):
        super().__init__()
        w = alpha * u
        c3, c5, c7 = int(w * 0.167), int(w * 0.333), int(w * 0.5)
        self.out_channels = c3 + c5 + c7
        self.shortcut = _ConvNorm(**ops, c_in=c_in, c_out=self.out_channels, kernel=1, act=False)
        self.conv3 = _ConvNorm(**ops, c_in=c_in, c_out=c3, kernel=kernel)
        self.conv5 = _ConvNorm(**ops, c_in=c3, c_out=c5, kernel=kernel)
        self.conv7 = _ConvNorm(**ops, c_in=c5, c_out=c7, kernel=kernel)
        self.norm_cat = ops["norm_op"](self.out_channels, **ops["norm_kwargs"])
        self.act = ops["nonlin"](**ops["nonlin_kwargs"])
        self.norm_out = ops["norm_op"](self.out_channels, **ops["norm_kwargs"])

    def forward(self, x):
        a = self.conv3(x)
        b = self.conv5(a)
        c = self.conv7(b)
        return self.norm_out(self.act(self.norm_cat(torch.cat([a, b, c], 1)) + self.shortcut(x)))


class ResPath(nn.Module):
    """Res path: `length` residual units (kxk conv + 1x1 shortcut, activation, normalisation) on a skip
    connection, so encoder features get more processing before meeting the decoder's."""

    def __init__(self, ops: dict, c_in: int, c_out: int, length: int, kernel):
        super().__init__()
        self.convs = nn.ModuleList()
        self.shortcuts = nn.ModuleList()
        self.post = nn.ModuleList()
        for i in range(length):
            ci = c_in if i == 0 else c_out
            self.convs.append(_ConvNorm(**ops, c_in=ci, c_out=c_out, kernel=kernel))
            self.shortcuts.append(_ConvNorm(**ops, c_in=ci, c_out=c_out, kernel=1, act=False))
            self.post.append(nn.Sequential(ops["nonlin"](**ops["nonlin_kwargs"]),
                                           ops["norm_op"](c_out, **ops["norm_kwargs"])))

    def forward(self, x):
        for conv, sc, post in zip(self.convs, self.shortcuts, self.post):
            x = post(conv(x) + sc(x))
        return x


class MultiResUNet(nn.Module):
    """MultiResUNet (Ibtehaz & Rahman, Neural Networks 2020) on an nnU-Net plan, 2D or 3D.

    As the original: MultiRes blocks with U = features_per_stage[s] (original 32, 64, ..., 512; alpha 1.67),
    max pooling between stages, Res paths of length n_stages-1-s on the skips (4, 3, 2, 1 for 5 stages),
    transposed-conv upsampling to U filters, concatenation with the Res path, MultiRes block, 1x1 output.
    From the plan: number of stages, pooling strides (anisotropic allowed), conv kernel sizes (e.g. 1x3x3),
    normalisation and activation (nnU-Net's instance norm + leaky ReLU: the original's batch norm is unreliable
    at nnU-Net's batch size of 2 in 3D). Added for nnU-Net: a 1x1 head on every decoder stage for deep
    supervision, at the resolutions nnU-Net's plan-derived scales expect.
    """

    def __init__(self, input_channels: int, num_classes: int, features_per_stage: Sequence[int],
                 strides: Sequence[Sequence[int]], kernel_sizes: Sequence[Sequence[int]], conv_op=nn.Conv3d,
                 norm_op=None, norm_op_kwargs=None, nonlin=None, nonlin_kwargs=None,
                 deep_supervision: bool = False, alpha: float = 1.67):
        super().__init__()
        n = len(features_per_stage)
        if not (len(strides) == len(kernel_sizes) == n) or n < 2:
            raise ValueError("features_per_stage, strides and kernel_sizes need one entry per stage (>= 2)")
        dim = _dim(conv_op)
        ops = dict(conv_op=conv_op,
                   norm_op=norm_op or (nn.InstanceNorm3d if dim == 3 else nn.InstanceNorm2d),
                   norm_kwargs=norm_op_kwargs if norm_op_kwargs is not None else {"eps": 1e-5, "affine": True},
                   nonlin=nonlin or nn.LeakyReLU,
                   nonlin_kwargs=nonlin_kwargs if nonlin_kwargs is not None else {"inplace": True})
        pool_op = nn.MaxPool3d if dim == 3 else nn.MaxPool2d
        convtr_op = nn.ConvTranspose3d if dim == 3 else nn.ConvTranspose2d
        self.strides = [[int(s) for s in st] for st in strides]
        self.deep_supervision = deep_supervision

        self.pools = nn.ModuleList()
        self.encoder_blocks = nn.ModuleList()
        self.res_paths = nn.ModuleList()
        c = input_channels
        for s in range(n):
            self.pools.append(pool_op(self.strides[s], self.strides[s]) if any(x > 1 for x in self.strides[s])
                              else nn.Identity())
            block = MultiResBlock(ops, c, features_per_stage[s], kernel_sizes[s], alpha)
            self.encoder_blocks.append(block)
            c = block.out_channels
            if s < n - 1:
                self.res_paths.append(ResPath(ops, c, features_per_stage[s], n - 1 - s, kernel_sizes[s]))

        self.ups = nn.ModuleList()
        self.decoder_blocks = nn.ModuleList()
        self.seg_heads = nn.ModuleList()
        for s in range(n - 2, -1, -1):
            u = features_per_stage[s]
            self.ups.append(convtr_op(c, u, self.strides[s + 1], self.strides[s + 1]))
            block = MultiResBlock(ops, 2 * u, u, kernel_sizes[s], alpha)
            self.decoder_blocks.append(block)
            c = block.out_channels
            self.seg_heads.append(conv_op(c, num_classes, 1))

    def forward(self, x):
        skips = []
        for s, (pool, block) in enumerate(zip(self.pools, self.encoder_blocks)):
            x = block(pool(x))
            if s < len(self.res_paths):
                skips.append(self.res_paths[s](x))
        outs = []
        for up, block, head, skip in zip(self.ups, self.decoder_blocks, self.seg_heads, reversed(skips)):
            x = block(torch.cat([up(x), skip], 1))
            if self.deep_supervision:
                outs.append(head(x))
        if not self.deep_supervision:
            return self.seg_heads[-1](x)
        return outs[::-1]


# ------------------------------------------------------------------ from nnU-Net plans
def _arch_kwargs(configuration_manager) -> dict:
    kw = dict(configuration_manager.network_arch_init_kwargs)
    for k in configuration_manager.network_arch_init_kwargs_req_import:
        if kw.get(k) is not None:
            kw[k] = pydoc.locate(kw[k])
    return kw


def build_network(arch: str, plans_manager, configuration_manager, num_input_channels: int,
                  num_output_channels: int, enable_deep_supervision: bool = True) -> nn.Module:
    """The network `arch` for an nnU-Net configuration (the arguments of nnUNetTrainer's
    build_network_architecture). enable_deep_supervision is ignored by networks without it."""
    _check_arch(arch)
    patch = [int(p) for p in configuration_manager.patch_size]
    if arch == "UNet":
        from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
        return get_network_from_plans(configuration_manager.network_arch_class_name,
                                      configuration_manager.network_arch_init_kwargs,
                                      configuration_manager.network_arch_init_kwargs_req_import,
                                      num_input_channels, num_output_channels, allow_init=True,
                                      deep_supervision=enable_deep_supervision)
    if arch == "UNETR":
        return PaddedUNETR(num_input_channels, num_output_channels, patch)
    if arch == "MedNeXt":
        return PaddedMedNeXt(num_input_channels, num_output_channels, patch, enable_deep_supervision)
    kw = _arch_kwargs(configuration_manager)
    strides = kw.get("strides") or configuration_manager.pool_op_kernel_sizes
    kernels = kw.get("kernel_sizes") or configuration_manager.conv_kernel_sizes
    net = MultiResUNet(num_input_channels, num_output_channels, kw["features_per_stage"], strides, kernels,
                       conv_op=kw.get("conv_op") or (nn.Conv3d if len(patch) == 3 else nn.Conv2d),
                       norm_op=kw.get("norm_op"), norm_op_kwargs=kw.get("norm_op_kwargs"),
                       nonlin=kw.get("nonlin"), nonlin_kwargs=kw.get("nonlin_kwargs"),
                       deep_supervision=enable_deep_supervision)
    from dynamic_network_architectures.initialization.weight_init import InitWeights_He
    net.apply(InitWeights_He(1e-2))  # nnU-Net's initialisation of its own networks
    return net
