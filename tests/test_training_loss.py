"""Skeleton-recall loss: values, gradients, ignore label, deep supervision, 2 and 37 classes."""
import numpy as np
import pytest
import torch
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

from nnunet_wmhloc.training.loss import DC_CE_SR_loss, SkeletonRecallLoss
from nnunet_wmhloc.training.skeleton import skeleton_labels
from nnunet_wmhloc.training.transforms import validation_transforms


def _logits(labels: torch.Tensor, n_cls: int, scale: float = 20.0) -> torch.Tensor:
    """Confident logits predicting `labels` (B, *spatial)."""
    onehot = torch.nn.functional.one_hot(labels.long(), n_cls).movedim(-1, 1).float()
    return scale * (2 * onehot - 1)


def _blobs(shape=(2, 32, 32), n_cls=2, seed=0):
    rng = np.random.default_rng(seed)
    seg = np.zeros(shape, np.int16)
    for b in range(shape[0]):
        for c in range(1, n_cls):
            y, x = rng.integers(4, shape[1] - 10), rng.integers(4, shape[2] - 10)
            seg[b, y:y + 6, x:x + 6] = c
    skel = np.stack([skeleton_labels(s, range(1, n_cls)) for s in seg])
    return torch.from_numpy(seg)[:, None], torch.from_numpy(skel)[:, None]


@pytest.mark.parametrize("n_cls", [2, 37])
def test_perfect_prediction_gives_zero_and_wrong_prediction_gives_one(n_cls):
    seg, skel = _blobs(n_cls=n_cls, shape=(2, 64, 64) if n_cls > 2 else (2, 32, 32))
    assert (skel > 0).sum() > 0
    sr = SkeletonRecallLoss()
    perfect = sr(_logits(seg[:, 0], n_cls), skel, seg)
    assert perfect.item() == pytest.approx(0.0, abs=1e-5)
    wrong = sr(_logits(torch.zeros_like(seg[:, 0]), n_cls), skel, seg)  # everything background
    assert wrong.item() == pytest.approx(1.0, abs=1e-5)


def test_37_classes_average_over_present_classes():
    seg, skel = _blobs(shape=(1, 96, 96), n_cls=37, seed=3)
    present = [c for c in range(1, 37) if (skel == c).any()]
    assert len(present) >= 20
    # predict half of the present classes right, the rest as background
    missed = present[::2]
    pred = seg[:, 0].clone()
    for c in missed:
        pred[pred == c] = 0
    loss = SkeletonRecallLoss()(_logits(pred, 37), skel, seg)
    assert loss.item() == pytest.approx(len(missed) / len(present), abs=1e-4)


def test_empty_skeleton_is_zero_and_backward_works():
    logits = torch.randn(2, 3, 16, 16, requires_grad=True)
    skel = torch.zeros(2, 1, 16, 16, dtype=torch.int16)
    loss = SkeletonRecallLoss()(logits, skel)
    assert loss.item() == 0.0 and torch.isfinite(loss)
    loss.backward()
    assert logits.grad is not None and torch.count_nonzero(logits.grad) == 0


def test_gradient_flows_only_through_skeleton_voxels():
    seg, skel = _blobs()
    logits = torch.randn(2, 2, 32, 32, requires_grad=True)
    SkeletonRecallLoss()(logits, skel, seg).backward()
    g = logits.grad.abs().sum(1)
    on = skel[:, 0] > 0
    assert (g[on] > 0).all()
    assert torch.count_nonzero(g[~on]) == 0
    # a descent step raises the skeleton's probability
    with torch.no_grad():
        before = SkeletonRecallLoss()(logits, skel, seg).item()
        after = SkeletonRecallLoss()(logits - 10.0 * logits.grad, skel, seg).item()
    assert after < before


def test_ignore_label_voxels_contribute_nothing():
    seg, skel = _blobs(shape=(1, 32, 32))
    # mark the left half of the skeleton as ignore (label 2) in the ground truth
    ys, xs = torch.nonzero(skel[0, 0] > 0, as_tuple=True)
    cut = int(xs.float().median())
    ign = torch.zeros_like(seg, dtype=torch.bool)
    ign[0, 0][:, :cut] = True
    ign &= skel > 0
    seg_ign = torch.where(ign, torch.full_like(seg, 2), seg)
    sr = SkeletonRecallLoss(ignore_label=2)
    base = _logits(seg[:, 0], 2)
    # predict background exactly on the ignored part: no penalty
    pred = seg[:, 0].clone()
    pred[ign[:, 0]] = 0
    logits = _logits(pred, 2).requires_grad_(True)
    loss = sr(logits, skel, seg_ign)
    assert loss.item() == pytest.approx(0.0, abs=1e-5)
    assert sr(base, skel, seg_ign).item() == pytest.approx(0.0, abs=1e-5)
    loss.backward()
    assert torch.count_nonzero(logits.grad[0][:, ign[0, 0]]) == 0
    # without the ignore label the same prediction is penalised
    assert SkeletonRecallLoss()(_logits(pred, 2), skel, seg_ign).item() > 0.1


def test_batch_dice_pools_samples():
    skel = torch.zeros(2, 1, 20, 20, dtype=torch.int16)
    skel[0, 0, 2:18, 5] = 1     # 16 voxels, recalled
    skel[1, 0, 2:6, 5] = 1      # 4 voxels, missed
    pred = torch.zeros(2, 20, 20, dtype=torch.long)
    pred[0] = (skel[0, 0] > 0).long()
    logits = _logits(pred, 2)
    assert SkeletonRecallLoss(batch_dice=True)(logits, skel).item() == pytest.approx(1 - 16 / 20, abs=1e-4)
    assert SkeletonRecallLoss(batch_dice=False)(logits, skel).item() == pytest.approx(0.5, abs=1e-4)


def _dc_ce(ignore_label=None):
    return DC_and_CE_loss({'batch_dice': True, 'smooth': 1e-5, 'do_bg': False, 'ddp': False}, {}, weight_ce=1,
                          weight_dice=1, ignore_label=ignore_label, dice_class=MemoryEfficientSoftDiceLoss)


def test_compound_is_ce_dice_plus_sr_and_refuses_one_channel_targets():
    seg, skel = _blobs()
    target = torch.cat((seg, skel), 1)
    logits = torch.randn(2, 2, 32, 32)
    loss = DC_CE_SR_loss(_dc_ce(), SkeletonRecallLoss(), 1.0)
    expect = _dc_ce()(logits, seg) + SkeletonRecallLoss()(logits, skel, seg)
    assert loss(logits, target).item() == pytest.approx(expect.item(), rel=1e-6)
    with pytest.raises(RuntimeError, match="2-channel target"):
        loss(logits, seg)


def test_deep_supervision_lists_from_the_validation_pipeline():
    """Targets downsampled by nnU-Net's DS transform keep a skeleton at every scale; the wrapped loss takes
    the lists, equals the weighted per-scale sum, and a perfect prediction leaves SR ~0 at every scale."""
    seg = torch.zeros(1, 64, 64, dtype=torch.int16)
    seg[0, 10:30, 8:56] = 1
    seg[0, 40:44, 20:40] = 2  # ignore
    scales = [[1, 1], [0.5, 0.5], [0.25, 0.25]]
    out = validation_transforms(scales, foreground_labels=[1], ignore_label=2, skeleton=True)(
        image=torch.randn(1, 64, 64), segmentation=seg.clone())
    targets = [t[None] for t in out["segmentation"]]
    assert [tuple(t.shape) for t in targets] == [(1, 2, 64, 64), (1, 2, 32, 32), (1, 2, 16, 16)]
    for t in targets:
        sk = t[:, 1]
        assert (sk > 0).any() and ((sk == 1) <= (t[:, 0] == 1)).all()
    logits = [torch.randn(1, 2, *t.shape[2:], requires_grad=True) for t in targets]
    weights = [4 / 7, 2 / 7, 1 / 7]
    inner = DC_CE_SR_loss(_dc_ce(ignore_label=2), SkeletonRecallLoss(ignore_label=2))
    ds = DeepSupervisionWrapper(inner, weights)
    total = ds(logits, targets)
    expect = sum(w * inner(o, t) for w, o, t in zip(weights, logits, targets))
    assert total.item() == pytest.approx(expect.item(), rel=1e-6)
    total.backward()
    assert all(o.grad is not None and torch.isfinite(o.grad).all() for o in logits)
    sr = SkeletonRecallLoss(ignore_label=2)
    for t in targets:
        good = _logits(torch.where(t[:, 0] == 2, 0, t[:, 0]), 2)
        assert sr(good, t[:, 1:], t[:, :1]).item() == pytest.approx(0.0, abs=1e-5)


def test_3d_and_float16_logits():
    seg = torch.zeros(1, 1, 12, 24, 24, dtype=torch.int16)
    seg[0, 0, 3:9, 4:20, 8:14] = 1
    skel = torch.from_numpy(skeleton_labels(seg[0, 0].numpy(), [1]))[None, None]
    logits = _logits(seg[:, 0], 2).half()
    assert SkeletonRecallLoss()(logits, skel, seg).item() == pytest.approx(0.0, abs=1e-4)
