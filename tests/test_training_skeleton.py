"""Tubed skeletons: 2D/3D, per class, even thickness (skimage #3757), ignore label, transform channel."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from nnunet_wmhloc.training.skeleton import SkeletonTransform, skeleton_labels, skeleton_labels_per_slice


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


# ------------------------------------------------------------------------------------------------------------
# The fast skeleton_labels (shared bounding box, one class map, tubes grown on the skeleton voxels) must give
# exactly what the straightforward per-class algorithm it replaced gives: that algorithm is kept once, as the
# `reference` of benchmarks/bench_skeleton.py (which times the two against each other).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_skeleton import reference as _reference_skeleton_labels  # noqa: E402


def _random_label_map(rng, shape, n_classes, sigma, fg=0.5):
    """Contiguous random regions 1..n_classes (touching each other) inside a random foreground."""
    noise = ndi.gaussian_filter(rng.normal(size=shape), sigma)
    seg = 1 + np.digitize(noise, np.quantile(noise, np.linspace(0, 1, n_classes + 1)[1:-1]))
    smooth = ndi.gaussian_filter(rng.normal(size=shape), sigma)
    mask = smooth > np.quantile(smooth, 1 - fg)
    return np.where(mask, seg, 0).astype(np.int16)


def _equality_cases():
    rng = np.random.default_rng(42)
    cases = []
    for k in range(3):
        cases.append((f"2d-regions-{k}", _random_label_map(rng, (64, 56), 8, 2.5), range(1, 9)))
        cases.append((f"3d-regions-{k}", _random_label_map(rng, (20, 40, 36), 12, 2.0 + k), range(1, 13)))
    # all region ids wanted though fewer are present, and the -1 padding of nnU-Net's crops
    seg = _random_label_map(rng, (18, 40, 40), 6, 2.0)
    seg[:, :5] = -1
    cases.append(("3d-padded-all-labels", seg, range(1, 37)))
    # subsets: a present class left out, an ignore label, labels listed but absent
    seg = _random_label_map(rng, (20, 36, 36), 5, 1.5)
    cases.append(("3d-subset", seg, [1, 3, 4, 9]))
    seg2 = _random_label_map(rng, (64, 64), 5, 1.5)
    cases.append(("2d-subset", seg2, [2, 5]))
    # lesion-like: blobs of class 1 touching an ignore label 2; and a single class other than 1
    seg = np.zeros((24, 48, 48), np.int16)
    for _ in range(12):
        c = rng.integers(3, 45, size=3) * [0.5, 1, 1]
        r = rng.uniform(1, 4)
        z, y, x = np.ogrid[:24, :48, :48]
        seg[((z - c[0]) * 2) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= r * r] = 1
    seg[10:14, 20:30, 20:34] = 2
    cases.append(("3d-lesions-ignore", seg, [1]))
    cases.append(("3d-single-class-2", seg, [2]))
    les2d = seg[12].copy()
    les2d[les2d == 1] = 3
    cases.append(("2d-single-class-3", les2d, [3]))
    # even-thickness plates, bars and cubes that Lee's 3D thinning erases (skimage #3757), in two classes
    seg = np.zeros((30, 40, 40), np.int16)
    seg[2:6, 2:30, 2:30] = 1       # 4-thick plate
    seg[6:8, 2:30, 2:30] = 2       # 2-thick plate touching it
    seg[10:12, 10:12, 5:35] = 1    # 2x2 bar
    seg[15:17, 15:17, 15:17] = 2   # 2-cube
    seg[20:28, 20:28, 8:36] = 1    # odd-ish bar
    seg[20:24, 30:34, 30:34] = 3   # 4-cube
    cases.append(("3d-even-plates", seg, [1, 2, 3]))
    cases.append(("3d-even-plates-float", seg.astype(np.float32), [1, 2, 3]))
    # empty and label-free
    cases.append(("3d-empty", np.zeros((8, 12, 12), np.int16), [1, 2]))
    cases.append(("2d-only-ignore", np.full((16, 16), 2, np.int16), [1]))
    cases.append(("2d-no-labels", np.ones((16, 16), np.int16), []))
    cases.append(("3d-padding-only", np.full((6, 8, 8), -1, np.int16), range(1, 37)))
    # a class filling the whole patch (its tube reaches every border)
    cases.append(("2d-full", np.ones((20, 24), np.int16), [1]))
    return cases


@pytest.mark.parametrize("name,seg,labels", _equality_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_fast_skeleton_labels_equals_the_per_class_reference(name, seg, labels):
    for tube in (0, 1, 2, 3):
        ref = _reference_skeleton_labels(seg, labels, tube)
        got = skeleton_labels(seg, labels, tube)
        assert got.dtype == ref.dtype == np.int16 and got.shape == seg.shape
        assert np.array_equal(got, ref), f"{name}, tube={tube}: {(got != ref).sum()} voxels differ"
    if name.startswith("3d-even"):
        assert (ref > 0).any()  # the cases exercise the #3757 fall-back, not only empty outputs


@pytest.mark.parametrize("name,seg,labels", [c for c in _equality_cases() if c[0].startswith("3d")],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_per_slice_skeleton_equals_the_reference_of_every_slice(name, seg, labels):
    # pseudo-2D patches: one class map, per-slice thinning and one in-plane tube must be the 2D reference per slice
    for tube in (0, 1, 2, 3):
        ref = np.stack([_reference_skeleton_labels(seg[z], labels, tube) for z in range(seg.shape[0])])
        got = skeleton_labels_per_slice(seg, labels, tube)
        assert got.dtype == np.int16 and np.array_equal(got, ref), f"{name}, tube={tube}: {(got != ref).sum()} differ"


def test_per_slice_skeleton_of_real_region_maps_equals_the_reference(shared_data):
    import SimpleITK as sitk
    files = sorted((shared_data / "wmhlocalization" / "WMH_refined_labels" / "Train").glob("WMH_*.nii.gz"))[:2]
    assert files
    for f in files:
        reg = sitk.GetArrayFromImage(sitk.ReadImage(str(f))).astype(np.int16)
        seg = np.full((40, 224, 192), -1, np.int16)  # a pseudo-2D 3d_fullres patch with nnU-Net's -1 padding
        part = reg[10:50, 8:232, 40:232]
        seg[:part.shape[0], :part.shape[1], :part.shape[2]] = part
        ref = np.stack([_reference_skeleton_labels(s, range(1, 37), 2) for s in seg])
        got = skeleton_labels_per_slice(seg, range(1, 37), 2)
        assert len(np.unique(got)) > 30 and np.array_equal(got, ref), f"{f.name}: {(got != ref).sum()} differ"
