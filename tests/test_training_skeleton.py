"""Tubed skeletons: 2D/3D, per class, even thickness (skimage #3757), ignore label, transform channel."""
import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from nnunet_wmhloc.training.skeleton import SkeletonTransform, skeleton_labels


def test_2d_bar_skeleton_is_its_centre_line():
    seg = np.zeros((40, 60), np.int16)
    seg[10:21, 5:55] = 1  # 11 px wide, 50 long
    sk = skeleton_labels(seg, [1], tube=0)
    rows = np.nonzero(sk.any(1))[0]
    assert set(rows) <= {14, 15, 16}            # thin, near the middle row 15
    assert 30 <= (sk == 1).sum() <= 55          # about the bar's length
    tubed = skeleton_labels(seg, [1], tube=2)
    assert (sk > 0).sum() < (tubed > 0).sum() < (seg > 0).sum()
    assert ((tubed > 0) <= (seg == 1)).all()
    assert ((sk > 0) <= (tubed > 0)).all()


def test_2d_even_width_bar():
    seg = np.zeros((20, 40), np.int16)
    seg[5:7, 5:35] = 1
    assert (skeleton_labels(seg, [1], tube=0) == 1).sum() >= 25


def test_3d_cylinder_skeleton_follows_its_axis():
    z, y, x = np.mgrid[:40, :32, :32]
    seg = (((y - 16) ** 2 + (x - 16) ** 2 <= 16) & (z >= 4) & (z < 36)).astype(np.int16)
    sk = skeleton_labels(seg, [1], tube=0)
    pts = np.argwhere(sk)
    assert len(pts) >= 20
    assert np.abs(pts[:, 1] - 16).max() <= 1 and np.abs(pts[:, 2] - 16).max() <= 1
    tubed = skeleton_labels(seg, [1], tube=1)
    assert ((tubed > 0) <= (seg == 1)).all() and (tubed > 0).sum() > len(pts)


@pytest.mark.parametrize("box", [
    (slice(5, 7), slice(5, 7), slice(5, 35)),    # 2x2 bar (even thickness)
    (slice(5, 9), slice(5, 9), slice(5, 35)),    # 4x4 bar
    (slice(10, 14), slice(8, 30), slice(8, 30)),  # 4-thick slab
    (slice(3, 5), slice(3, 5), slice(3, 5)),     # 2-cube
])
def test_3d_even_thickness_objects_keep_a_skeleton(box):
    seg = np.zeros((40, 40, 40), np.int16)
    seg[box] = 1
    seg[25:32, 25:32, 10:35] = 1  # an odd-thickness bar beside it, a second component
    sk = skeleton_labels(seg, [1], tube=0)
    comps, n = ndi.label(seg > 0)
    assert n == 2
    for i in (1, 2):
        assert (sk[comps == i] > 0).any(), f"component {i} lost its skeleton"
    assert ((sk > 0) <= (seg == 1)).all()
    # the fallback takes the central voxels, not the whole object (except 2-thick ones, which are all centre)
    assert (sk > 0).sum() < (seg > 0).sum()


def test_per_class_labels_and_ignore_label_is_not_skeletonised():
    seg = np.zeros((48, 48), np.int16)
    seg[4:20, 4:44] = 1
    seg[20:36, 4:44] = 3   # touches class 1
    seg[38:46, 4:44] = 2   # the ignore label
    sk = skeleton_labels(seg, [1, 3], tube=2)
    assert set(np.unique(sk)) == {0, 1, 3}
    for c in (1, 3):
        assert ((sk == c) <= (seg == c)).all()      # each tube stays in its own class
        rows = np.nonzero((skeleton_labels(seg, [c], tube=0) == c).any(1))[0]
        assert abs(rows.mean() - np.nonzero((seg == c).any(1))[0].mean()) < 1.5
    assert not (sk[seg == 2]).any()


def test_37_region_map_every_present_class_gets_a_skeleton():
    rng = np.random.default_rng(0)
    noise = ndi.gaussian_filter(rng.normal(size=(24, 64, 64)), 3)
    seg = np.digitize(noise, np.quantile(noise, np.linspace(0, 1, 38)[1:-1])).astype(np.int16)
    assert len(np.unique(seg)) == 37
    sk = skeleton_labels(seg, range(1, 37))
    assert set(np.unique(sk)) == set(range(37))
    assert (sk[sk > 0] == seg[sk > 0]).all()


def test_empty_and_label_free_inputs():
    assert not skeleton_labels(np.zeros((10, 10), np.int16), [1]).any()
    assert not skeleton_labels(np.full((10, 10), 2, np.int16), [1]).any()
    assert not skeleton_labels(np.ones((10, 10), np.int16), []).any()


def test_transform_appends_a_channel_and_leaves_the_segmentation():
    seg = torch.zeros(1, 30, 30, dtype=torch.int16)
    seg[0, 5:25, 10:20] = 1
    out = SkeletonTransform([1])(image=torch.zeros(1, 30, 30), segmentation=seg.clone())
    s = out["segmentation"]
    assert s.shape == (2, 30, 30) and s.dtype == torch.int16
    assert torch.equal(s[0], seg[0])
    assert torch.equal(s[1], torch.from_numpy(skeleton_labels(seg[0].numpy(), [1])))
