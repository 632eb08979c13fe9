"""Tubed skeletons of ground-truth label maps, for the skeleton-recall loss.

The skeleton is computed per foreground class (a label map in, a label map out: a skeleton voxel carries the
class it was taken from), in 2D for 2D patches and in 3D for 3D patches, then thickened ("tubed") by a small
dilation kept inside its class. `SkeletonTransform` appends it to the sample's segmentation as an extra
channel so that nnU-Net's deep-supervision downsampling handles it with the segmentation.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
from batchgeneratorsv2.transforms.base.basic_transform import SegOnlyTransform
from scipy import ndimage as ndi
from skimage.morphology import skeletonize


def _thin(mask: np.ndarray) -> np.ndarray:
    """skimage skeleton of a binary 2D/3D mask, plus the centre voxels of any connected component the 3D
    thinning dropped (skimage #3757: objects of even thickness, plates and cubes can thin to nothing)."""
    skel = skeletonize(mask)
    if mask.ndim == 2:
        # Zhang's 2D thinning keeps every component (even-width bars included)
        return skel
    comps, n = ndi.label(mask, structure=np.ones((3,) * mask.ndim, bool))
    if n == 0:
        return skel
    has_skel = np.bincount(comps[skel], minlength=n + 1)[1:] > 0
    if has_skel.all():
        return skel
    for i, sl in enumerate(ndi.find_objects(comps), start=1):
        if sl is None or has_skel[i - 1]:
            continue
        comp = comps[sl] == i
        # the voxels farthest from the border are the medial core; for a 2-voxel-thick object that is all of it
        dist = ndi.distance_transform_edt(np.pad(comp, 1))[(slice(1, -1),) * comp.ndim]
        skel[sl] |= comp & (dist >= dist[comp].max())
    return skel


def _class_map(seg: np.ndarray, wanted: list[int]) -> tuple[np.ndarray, int]:
    """Non-negative integer map of the wanted classes only, and `single`.

    One wanted class (the lesion task): a uint8 mask coding it as 1 (a comparison instead of np.isin) and
    single = that class. Otherwise the class ids themselves and single = 0.
    """
    if len(wanted) == 1:
        return (seg == wanted[0]).view(np.uint8), wanted[0]
    if seg.dtype.kind in "iu" and seg.size:
        lo, hi = int(seg.min()), int(seg.max())
        # every positive value is wanted (the region task): seg itself, without background/padding < 0
        if hi <= wanted[-1] and set(range(1, hi + 1)) <= set(wanted):
            return (seg if lo >= 0 else np.maximum(seg, 0)), 0
    work = np.where(np.isin(seg, wanted), seg, 0)
    return (work if work.dtype.kind in "iu" else work.astype(np.int32)), 0


def _tube(out: np.ndarray, work: np.ndarray, steps: int, axes: Sequence[int] | None = None) -> None:
    """Grow the skeleton label map `out` in place by `steps` face-connected steps (along `axes` only, default
    all), each voxel only into its own class of `work` (same codes). Equal to a per-class
    binary_dilation(cross, iterations=steps, mask=class), done on the skeleton's voxel indices only: the
    skeleton is sparse, the patch is not. `out` and `work` carry a border of one background voxel along
    `axes` (`_padded`), where growth stops, so neighbours need no bounds checks."""
    axes = range(out.ndim) if axes is None else axes
    flat_out, flat_work = out.reshape(-1), work.reshape(-1)
    offsets = [d * int(np.prod(out.shape[a + 1:])) for a in axes for d in (-1, 1)]
    front = np.flatnonzero(flat_out)
    for _ in range(steps):
        if not front.size:
            break
        cls = flat_out[front]
        grown = []
        for off in offsets:
            nb = front + off
            new = flat_out[nb] == 0
            new &= flat_work[nb] == cls
            nb = nb[new]
            # marking at once is safe: voxels added in this step are not grown from until the next one
            flat_out[nb] = cls[new]
            grown.append(nb)
        front = np.concatenate(grown)


def _padded(work: np.ndarray, box: tuple[slice, ...], axes: Sequence[int]) -> tuple[np.ndarray, tuple]:
    """work[box] in a fresh array with one background voxel on both sides along `axes`, and the slices of
    that array holding work[box]."""
    inner = tuple(slice(1, -1) if a in axes else slice(None) for a in range(work.ndim))
    shape = [(s.stop - s.start) + (2 if a in axes else 0) for a, s in enumerate(box)]
    out = np.zeros(shape, dtype=work.dtype)
    out[inner] = work[box]
    return out, inner


def _foreground_box(work: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box of work > 0 (None when empty): find_objects then scans only it (brain patches are mostly
    background)."""
    fg = work > 0
    box = []
    for a in range(work.ndim):
        nz = np.flatnonzero(fg.any(axis=tuple(b for b in range(work.ndim) if b != a)))
        if not nz.size:
            return None
        box.append(slice(int(nz[0]), int(nz[-1]) + 1))
    return tuple(box)


def skeleton_labels(seg: np.ndarray, labels: Iterable[int], tube: int = 2) -> np.ndarray:
    """Tubed skeleton of each class of `seg` (2D or 3D integer label map) listed in `labels`.

    Returns an int16 map of seg's shape: voxel = class c where c's tubed skeleton passes, else 0. The tube is
    `tube` dilations with the face-connected cross, clipped to the class itself, so a skeleton voxel always
    lies inside its class (never in the background nor in the ignore label). Each class is thinned inside its
    own bounding box (one `find_objects` pass over the foreground's bounding box), which keeps the 37-class
    region maps cheap; the tubes of all classes are grown together on the skeleton voxels.
    """
    return _skeletons(seg, labels, tube, per_slice=False)


def skeleton_labels_per_slice(seg: np.ndarray, labels: Iterable[int], tube: int = 2) -> np.ndarray:
    """`skeleton_labels` of every slice along the first axis of a 3D map (for anisotropic, pseudo-2D patches:
    2D thinning is cheaper than 3D thinning and keeps even-thickness objects, see `_thin`), equal to calling it
    per slice. The class map is made once, each class is thinned inside its bounding box in each slice, and the
    tubes of all slices grow together, in-plane."""
    if np.ndim(seg) != 3:
        raise ValueError(f"per-slice skeletons need a 3D map, got {np.ndim(seg)}D")
    return _skeletons(seg, labels, tube, per_slice=True)


def _skeletons(seg, labels, tube: int, per_slice: bool) -> np.ndarray:
    seg = np.asarray(seg)
    out = np.zeros(seg.shape, dtype=np.int16)
    wanted = sorted({int(c) for c in labels if int(c) > 0})
    if not wanted or not seg.size:
        return out
    work, single = _class_map(seg, wanted)
    box = _foreground_box(work)
    if box is None:
        return out
    axes = tuple(range(1 if per_slice else 0, seg.ndim))  # per slice: thinning and tube in-plane only
    wpad, inner = _padded(work, box, axes)
    opad = np.zeros(wpad.shape, dtype=np.int16)
    wbox, obox = wpad[inner], opad[inner]
    keep = set(wanted)
    for w, o in (zip(wbox, obox) if per_slice else [(wbox, obox)]):
        for c0, sl in enumerate(ndi.find_objects(w)):
            c = c0 + 1
            if sl is None or (not single and c not in keep):
                continue
            o[sl][_thin(w[sl] == c)] = c
    if tube > 0:
        _tube(opad, wpad, tube, axes)
    out[box] = obox
    if single and single != 1:
        out[out > 0] = single
    return out


class SkeletonTransform(SegOnlyTransform):
    """Append the tubed skeleton of segmentation channel `source_channel` as a new last channel.

    Place it after the spatial transforms and RemoveLabelTransform(-1 -> 0), and before
    DownsampleSegForDSTransform, so every deep-supervision scale gets a matching skeleton.
    """

    def __init__(self, labels: Sequence[int], tube: int = 2, source_channel: int = 0, per_slice: bool = False):
        super().__init__()
        self.per_slice = bool(per_slice)
        self.labels = tuple(int(c) for c in labels)
        self.tube = int(tube)
        self.source_channel = source_channel

    def _apply_to_segmentation(self, segmentation: torch.Tensor, **params) -> torch.Tensor:
        seg = segmentation[self.source_channel].numpy()
        if self.per_slice and seg.ndim == 3:
            skel = skeleton_labels_per_slice(seg, self.labels, self.tube)
        else:
            skel = skeleton_labels(seg, self.labels, self.tube)
        return torch.cat((segmentation, torch.from_numpy(skel).to(segmentation.dtype)[None]), dim=0)
