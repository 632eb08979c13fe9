"""Left/right-aware training and prediction for datasets whose labels come in left/right pairs.

A dataset declares its pairs in dataset.json (our region converter writes them):

    "wmhloc_lr_pairs": [[1, 18], [2, 19], ..., [17, 34], [35, 36]]

and must be read in one canonical orientation ("overwrite_image_reader_writer": "SimpleITKIOWithReorient":
every image is turned to RAS on reading, predictions are written back in the image's own orientation). Then
the left-right axis is the last axis of the reader's (z, y, x) array, and, after the plans' transpose_forward,
axis `transpose_forward.index(2)` of a 3d patch (one less in a 2d patch, whose first axis is the slice axis).

- Training: a mirror along that axis turns a left hemisphere into a right one, so it swaps each left label
  with its partner (`LRSwapMirrorTransform`); mirrors along the other axes keep the labels.
- Rotation: nnU-Net rotates 2d patches (and anisotropic 3d ones, in plane) by up to +-180 deg. Together with
  an (unswapped) mirror along the other in-plane axis that makes an unswapped left-right mirror
  (rot180 o flip_y = flip_x), i.e. the contradiction the swap removes; rotations in the left-right plane are
  capped at MAX_ROTATION_DEG instead, so "left" stays on the left of the canonical frame.
- Prediction: the network itself is made left-right symmetric (`make_lr_symmetric`): in eval mode it returns
  (f(x) + swap(flip(f(flip(x))))) / 2, so the prediction of a mirrored image is exactly the mirrored,
  label-swapped prediction, with or without nnU-Net's test-time mirroring (whose left-right axis is dropped:
  it flips back without swapping channels). The axis and channel permutation are buffers of the network, so
  a checkpoint carries them to nnUNetv2_predict; checkpoints without them load as "no symmetry".
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import torch
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from torch import nn

from nnunet_wmhloc.vocab import LR_PAIRS_KEY  # the region converter declares the pairs under it

# readers that put every image in one orientation, and the left-right axis of the (z, y, x) array they return
CANONICAL_READERS = {"SimpleITKIOWithReorient": 2, "NibabelIOWithReorient": 2}
MAX_ROTATION_DEG = 30.0  # nnU-Net's own limit for isotropic 3d patches


def lr_pairs(dataset_json: dict) -> list[tuple[int, int]] | None:
    """The declared left/right label pairs (checked), or None when the dataset declares none."""
    raw = dataset_json.get(LR_PAIRS_KEY)
    if raw is None:
        return None
    labels = {v for v in dataset_json.get("labels", {}).values() if isinstance(v, int)}
    ignore = dataset_json.get("labels", {}).get("ignore")
    pairs, seen = [], set()
    for p in raw:
        if not (isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(v, int) for v in p)):
            raise ValueError(f"dataset.json {LR_PAIRS_KEY}: {p!r} is not a pair of integer labels")
        a, b = p
        if a == b:
            raise ValueError(f"dataset.json {LR_PAIRS_KEY}: pair {p!r} pairs a label with itself")
        for v in (a, b):
            if v not in labels or v == 0 or v == ignore:
                raise ValueError(f"dataset.json {LR_PAIRS_KEY}: {v} is not a foreground label of the dataset")
            if v in seen:
                raise ValueError(f"dataset.json {LR_PAIRS_KEY}: label {v} is in two pairs")
            seen.add(v)
        pairs.append((a, b))
    return pairs or None


def swap_permutation(pairs: Sequence[tuple[int, int]], n: int) -> list[int]:
    """perm[c] = the partner of label/channel c (c itself when unpaired), for n labels/channels."""
    perm = list(range(n))
    for a, b in pairs:
        if a >= n or b >= n:
            raise ValueError(f"pair ({a}, {b}) outside the {n} output channels")
        perm[a], perm[b] = b, a
    return perm


def lr_patch_axis(reader: str, transpose_forward: Sequence[int], patch_dims: int) -> int | None:
    """The left-right axis of a patch (0-based over its spatial axes) or None when the patch lacks it (2d
    slices cut along it). `reader` is the plans' image_reader_writer; it must be a canonical one."""
    if reader not in CANONICAL_READERS:
        raise ValueError(f"the dataset declares {LR_PAIRS_KEY} but is read with {reader}, which keeps each image "
                         f"in its stored orientation, so left and right are not one array axis. Put "
                         f"\"overwrite_image_reader_writer\": \"SimpleITKIOWithReorient\" in dataset.json and "
                         f"plan/preprocess again")
    axis = list(transpose_forward).index(CANONICAL_READERS[reader])
    if patch_dims == 2:
        axis -= 1
    return axis if axis >= 0 else None


def swap_labels(seg: torch.Tensor, pairs: Sequence[tuple[int, int]]) -> torch.Tensor:
    """seg with each label of a pair replaced by its partner (other values, e.g. -1 padding, untouched)."""
    out = seg.clone()
    for a, b in pairs:
        out[seg == a] = b
        out[seg == b] = a
    return out


class LRSwapMirrorTransform(MirrorTransform):
    """nnU-Net's MirrorTransform, except that a mirror along `lr_axis` also swaps the paired labels of the
    segmentation (every channel: all hold label maps at this point of the pipeline)."""

    def __init__(self, allowed_axes: Tuple[int, ...], lr_axis: int, pairs: Sequence[tuple[int, int]]):
        super().__init__(allowed_axes)
        self.lr_axis = int(lr_axis)
        self.pairs = [tuple(p) for p in pairs]

    def _apply_to_segmentation(self, segmentation: torch.Tensor, **params) -> torch.Tensor:
        out = super()._apply_to_segmentation(segmentation, **params)
        return swap_labels(out, self.pairs) if self.lr_axis in params["axes"] else out



# ------------------------------------------------------------------------------------------- network
_AXIS, _PERM = "wmhloc_lr_axis", "wmhloc_lr_perm"


def _fill_missing(module, state_dict, prefix, *args):
    """Checkpoints made before the symmetry existed load as 'no symmetry'."""
    if prefix + _AXIS not in state_dict:
        state_dict[prefix + _AXIS] = torch.tensor(-1, dtype=torch.long)
    if prefix + _PERM not in state_dict:
        state_dict[prefix + _PERM] = getattr(module, _PERM).detach().clone()


class _LRSymmetric:
    """Mixed into the network's own class: the module, its parameters and their names stay as they are."""

    def forward(self, x):
        out = super().forward(x)
        axis = int(getattr(self, _AXIS))
        if self.training or axis < 0:
            return out
        d = axis + 2  # batch and channel first
        perm = getattr(self, _PERM)
        mirrored = super().forward(torch.flip(x, (d,)))

        def avg(a, b):
            return 0.5 * (a + torch.flip(b, (d,))[:, perm])

        if isinstance(out, (list, tuple)):  # deep supervision: every scale
            return type(out)(avg(a, b) for a, b in zip(out, mirrored))
        return avg(out, mirrored)


_classes: dict[type, type] = {}


def make_lr_symmetric(net: nn.Module, num_outputs: int) -> nn.Module:
    """Give `net` (in place) the left-right symmetric forward, switched off until `set_lr_symmetry`."""
    cls = type(net)
    if not isinstance(net, _LRSymmetric):
        if cls not in _classes:
            _classes[cls] = type(cls.__name__, (_LRSymmetric, cls), {"__module__": cls.__module__})
        net.__class__ = _classes[cls]
        net.register_buffer(_AXIS, torch.tensor(-1, dtype=torch.long))
        net.register_buffer(_PERM, torch.arange(num_outputs, dtype=torch.long))
        net._register_load_state_dict_pre_hook(_fill_missing, with_module=True)
    return net


def set_lr_symmetry(net: nn.Module, axis: int | None, pairs: Sequence[tuple[int, int]] | None) -> None:
    """Switch the symmetric prediction on along spatial `axis` with these pairs (None: off)."""
    if not isinstance(net, _LRSymmetric):
        raise TypeError(f"{type(net).__name__} was not built by make_lr_symmetric")
    perm = getattr(net, _PERM)
    with torch.no_grad():
        getattr(net, _AXIS).fill_(-1 if axis is None or not pairs else int(axis))
        perm.copy_(torch.as_tensor(swap_permutation(pairs or [], perm.numel()), dtype=torch.long))


def lr_symmetry(net: nn.Module) -> tuple[int | None, list[int]]:
    """(axis or None, channel permutation) of a network built by make_lr_symmetric."""
    axis = int(getattr(net, _AXIS))
    return (None if axis < 0 else axis), [int(v) for v in getattr(net, _PERM)]


def rotation_capped(rotation, max_deg: float = MAX_ROTATION_DEG):
    """nnU-Net's rotation range (a (lo, hi) pair in radians, or a number) capped at +-max_deg."""
    cap = np.deg2rad(max_deg)
    if isinstance(rotation, (tuple, list)):
        return (max(float(rotation[0]), -cap), min(float(rotation[1]), cap))
    return float(np.clip(rotation, -cap, cap))
