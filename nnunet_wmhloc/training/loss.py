"""Skeleton-recall (SR) loss and its combination with nnU-Net's CE + Dice.

SR = 1 - soft recall of the predicted softmax on the tubed ground-truth skeleton, averaged over the foreground
classes whose skeleton is present (Kirchhoff et al., ECCV 2024). The skeleton arrives as a label map (one
channel, voxel = class), so no one-hot tensor is built: with the 37 region classes that would be 37x the
memory of the logits. Works on any device and under CUDA autocast (computed in float32).
"""
from __future__ import annotations

import torch
from torch import nn


class SkeletonRecallLoss(nn.Module):
    """1 - mean soft recall of the skeleton, per foreground class.

    forward(net_output, skeleton, seg=None):
      net_output: logits (B, C, *spatial); skeleton: (B, 1, *spatial) label map of the tubed skeleton (0 = none);
      seg: (B, 1, *spatial) ground truth, only used to drop voxels of `ignore_label` (they contribute nothing).
    batch_dice=True pools the batch before dividing (as nnU-Net's Dice does); otherwise recall is computed per
    (sample, class) and averaged over the pairs that have a skeleton. No skeleton at all gives 0 (still part of
    the graph, so backward works).
    """

    def __init__(self, batch_dice: bool = True, smooth: float = 1e-5, ignore_label: int | None = None):
        super().__init__()
        self.batch_dice = batch_dice
        self.smooth = smooth
        self.ignore_label = ignore_label

    def forward(self, net_output: torch.Tensor, skeleton: torch.Tensor, seg: torch.Tensor | None = None):
        n_cls = net_output.shape[1]
        b = net_output.shape[0]
        probs = torch.softmax(net_output.float(), 1)
        skel = skeleton[:, 0].long() if skeleton.ndim == net_output.ndim else skeleton.long()
        valid = (skel > 0) & (skel < n_cls)
        if self.ignore_label is not None and seg is not None:
            s = seg[:, 0] if seg.ndim == net_output.ndim else seg
            valid &= s != self.ignore_label
        idx = torch.where(valid, skel, torch.zeros_like(skel))
        # probability of the skeleton's own class at every voxel
        p = probs.gather(1, idx[:, None])[:, 0]
        w = valid.to(p.dtype)
        idx = idx.reshape(b, -1)
        inter = torch.zeros((b, n_cls), device=p.device, dtype=p.dtype).scatter_add_(1, idx, (p * w).reshape(b, -1))
        count = torch.zeros((b, n_cls), device=p.device, dtype=p.dtype).scatter_add_(1, idx, w.reshape(b, -1))
        inter, count = inter[:, 1:], count[:, 1:]
        if self.batch_dice:
            inter, count = inter.sum(0), count.sum(0)
        present = count > 0
        if not bool(present.any()):
            return net_output.sum() * 0.0
        recall = (inter[present] + self.smooth) / (count[present] + self.smooth)
        return 1.0 - recall.mean()


class DC_CE_SR_loss(nn.Module):
    """nnU-Net's DC_and_CE_loss on target channel 0 plus weight_sr x SkeletonRecallLoss on channel 1.

    target: (B, 2, *spatial) = segmentation, tubed skeleton (as SkeletonTransform appends it). Used inside
    nnU-Net's DeepSupervisionWrapper, which calls it once per scale.
    """

    def __init__(self, dc_ce: nn.Module, sr: SkeletonRecallLoss, weight_sr: float = 1.0):
        super().__init__()
        self.dc_ce = dc_ce
        self.sr = sr
        self.weight_sr = weight_sr

    def forward(self, net_output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.shape[1] != 2:
            raise RuntimeError(f"DC_CE_SR_loss expects a 2-channel target (segmentation, skeleton), got shape "
                               f"{tuple(target.shape)}: is SkeletonTransform in the data pipeline?")
        seg, skel = target[:, :1], target[:, 1:2]
        loss = self.dc_ce(net_output, seg)
        if self.weight_sr != 0:
            loss = loss + self.weight_sr * self.sr(net_output, skel, seg)
        return loss
