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


def skeleton_labels(seg: np.ndarray, labels: Iterable[int], tube: int = 2) -> np.ndarray:
    """Tubed skeleton of each class of `seg` (2D or 3D integer label map) listed in `labels`.

    Returns an int16 map of seg's shape: voxel = class c where c's tubed skeleton passes, else 0. The tube is
    `tube` dilations with the face-connected cross, clipped to the class itself, so a skeleton voxel always
    lies inside its class (never in the background nor in the ignore label). Each class is thinned inside its
    own bounding box (one `find_objects` pass), which keeps the 37-class region maps cheap.
    """
    seg = np.asarray(seg)
    out = np.zeros(seg.shape, dtype=np.int16)
    wanted = sorted({int(c) for c in labels if int(c) > 0})
    if not wanted:
        return out
    # find_objects needs non-negative ints; anything not wanted (bg, ignore, padding) becomes 0
    work = np.where(np.isin(seg, wanted), seg, 0).astype(np.int32, copy=False)
    if not work.any():
        return out
    cross = ndi.generate_binary_structure(seg.ndim, 1)
    for c0, sl in enumerate(ndi.find_objects(work)):
        c = c0 + 1
        if sl is None or c not in wanted:
            continue
        m = work[sl] == c
        sk = _thin(m)
        if tube > 0:
            sk = ndi.binary_dilation(sk, cross, iterations=tube, mask=m)
        out[sl][sk] = c
    return out


class SkeletonTransform(SegOnlyTransform):
    """Append the tubed skeleton of segmentation channel `source_channel` as a new last channel.

    Place it after the spatial transforms and RemoveLabelTransform(-1 -> 0), and before
    DownsampleSegForDSTransform, so every deep-supervision scale gets a matching skeleton.
    """

    def __init__(self, labels: Sequence[int], tube: int = 2, source_channel: int = 0):
        super().__init__()
        self.labels = tuple(int(c) for c in labels)
        self.tube = int(tube)
        self.source_channel = source_channel

    def _apply_to_segmentation(self, segmentation: torch.Tensor, **params) -> torch.Tensor:
        seg = segmentation[self.source_channel].numpy()
        skel = skeleton_labels(seg, self.labels, self.tube)
        return torch.cat((segmentation, torch.from_numpy(skel).to(segmentation.dtype)[None]), dim=0)
