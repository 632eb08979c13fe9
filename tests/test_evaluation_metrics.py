"""Challenge metrics on hand-built volumes with answers worked out by hand, and against a transcription of
the official WMH challenge evaluation (SimpleITK filters) on random volumes."""
import math

import numpy as np
import pytest
import SimpleITK as sitk
import scipy.spatial

from nnunet_wmhloc import io
from nnunet_wmhloc.evaluation import metrics as M

IDENTITY = (1, 0, 0, 0, 1, 0, 0, 0, 1)
# x → -y, y → z, z → x: a permutation with a flip (det +1)
PERMUTED = (0, 0, 1, -1, 0, 0, 0, 1, 0)


def _oblique():
    a, b = math.radians(30), math.radians(-20)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    return tuple((rz @ rx).ravel())


OBLIQUE = _oblique()
DIRECTIONS = [IDENTITY, PERMUTED, OBLIQUE]


def _image(arr, spacing, direction, origin=(10.0, -20.0, 5.0)):
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetDirection(direction)
    img.SetOrigin(origin)
    return img


# ----------------------------------------------------------------------------------------- HD95
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_hd95_single_voxels_anisotropic_any_direction(direction):
    # spacing (x, y, z) = (0.5, 1, 3) mm. Reference: one voxel at index (x5, y5, z2). Prediction: the
    # same voxel, one 2 slices up (2 * 3 = 6 mm) and one 4 columns over (4 * 0.5 = 2 mm).
    # prediction→reference distances [0, 2, 6]: 95th percentile (linear) = 2 + 0.9 * (6 - 2) = 5.6;
    # reference→prediction [0]. HD95 = 5.6 whatever the (orthonormal) direction.
    ref = np.zeros((6, 10, 12), np.uint8)
    pred = np.zeros_like(ref)
    ref[2, 5, 5] = 1
    pred[2, 5, 5] = pred[4, 5, 5] = pred[2, 5, 9] = 1
    img = _image(ref, (0.5, 1.0, 3.0), direction)
    m = M.lesion_metrics_images(_image(pred, (0.5, 1.0, 3.0), direction), img)
    assert m["hd95_mm"] == pytest.approx(5.6)
    # spacing given in the other axis order gives distances [0, 2 * 0.5, 4 * 3] → 1 + 0.9 * 11: the
    # (x, y, z) order is honoured
    assert M.hd95(pred == 1, ref == 1, (3.0, 1.0, 0.5)) == pytest.approx(1 + 0.9 * (12 - 1))


def test_physical_points_match_sitk_for_oblique_direction():
    mask = np.zeros((4, 5, 6), bool)
    mask[1, 2, 3] = mask[3, 0, 5] = mask[0, 4, 0] = True
    img = _image(mask.astype(np.uint8), (0.7, 1.3, 2.9), OBLIQUE)
    pts = M.physical_points(mask, img.GetSpacing(), img.GetOrigin(), img.GetDirection())
    want = [img.TransformIndexToPhysicalPoint((int(x), int(y), int(z))) for z, y, x in zip(*np.nonzero(mask))]
    np.testing.assert_allclose(pts, want, atol=1e-9)


def test_hd95_uses_in_plane_boundary_only():
    # Reference: a filled 5x5 square in slice 2; prediction: the same square in slice 3 (3 mm above).
    # In-plane erosion keeps the 16-voxel ring of each; every ring point is 3 mm from its twin → 3.0.
    ref = np.zeros((6, 9, 9), np.uint8)
    pred = np.zeros_like(ref)
    ref[2, 2:7, 2:7] = 1
    pred[3, 2:7, 2:7] = 1
    assert M.hd95(pred == 1, ref == 1, (1.0, 1.0, 3.0)) == pytest.approx(3.0)
    assert M.boundary(ref == 1).sum() == 16
    # prediction 3x3 inside the 5x5: rings 1 voxel apart; the ref ring's 4 corners are √2 away.
    # 16 ref-ring distances = twelve 1s and four √2: 95th pct at rank 14.25 → √2.
    pred[:] = 0
    pred[2, 3:6, 3:6] = 1
    assert M.boundary(pred == 1).sum() == 8
    assert M.hd95(pred == 1, ref == 1, (1.0, 1.0, 3.0)) == pytest.approx(math.sqrt(2))


def test_boundary_kernel_is_3x3_square_in_plane():
    # a plus sign: a 4-connected (cross) kernel would keep its centre, the 3x3 square (the script's
    # BinaryErode radius (1,1,0)) removes it, so the whole plus is boundary
    m = np.zeros((3, 7, 7), bool)
    m[1, 3, 2:5] = True
    m[1, 2:5, 3] = True
    assert (M.boundary(m) == m).all()
    # a column through all slices is not eroded across slices: each slice's voxel is its own boundary
    col = np.zeros((5, 5, 5), bool)
    col[:, 1:4, 1:4] = True
    assert M.boundary(col)[:, 2, 2].sum() == 0 and M.boundary(col).sum() == 5 * 8


# ----------------------------------------------------------------------------------------- all metrics
def _hand_case():
    """Reference with 3 lesions (26-connectivity), a label-2 block and a prediction touching all of it.

    See test_hand_built_all_metrics for the worked answers."""
    ref = np.zeros((8, 16, 16), np.uint8)
    pred = np.zeros_like(ref)
    ref[1:3, 2:4, 2:4] = 1            # L1: 2x2x2 cube, 8 voxels
    ref[4, 8, 8] = ref[5, 9, 9] = 1   # L2: two voxels touching only by a corner: one 26-connected lesion
    ref[6, 13, 13] = 1                # L3: 1 voxel
    ref[1:3, 10:13, 2:5] = 2          # other pathology, 18 voxels
    pred[1, 2:4, 2:4] = 1             # P1: 4 voxels inside L1
    pred[5, 9, 9] = 1                 # P2: hits L2
    pred[6, 2:4, 12] = 1              # P3: 2 voxels, false positive
    pred[1, 10:13, 2:5] = 1           # P4: 9 voxels inside label 2 → removed
    pred[2, 12:14, 3] = 1             # P5: (2,12,3) in label 2 → removed; (2,13,3) stays: false positive
    return pred, ref


@pytest.mark.parametrize("direction", [IDENTITY, OBLIQUE])
def test_hand_built_all_metrics(direction):
    pred, ref = _hand_case()
    spacing = (0.9, 1.1, 3.0)
    m = M.lesion_metrics_images(_image(pred, spacing, direction), _image(ref, spacing, direction))
    # after masking: prediction 4 + 1 + 2 + 1 = 8 voxels in 4 lesions (P1, P2 true); reference 11 voxels,
    # 3 lesions (L1, L2 detected); overlap 4 + 1 = 5 voxels.
    assert m["n_pred_voxels_masked"] == 10
    assert m["dice"] == pytest.approx(2 * 5 / (8 + 11))
    assert m["avd_pct"] == pytest.approx(3 / 11 * 100)
    assert m["log_vd"] == pytest.approx(math.log(11 / 8))
    assert m["n_ref_lesions"] == 3 and m["n_pred_lesions"] == 4
    assert m["lesion_recall"] == pytest.approx(2 / 3)
    assert m["lesion_precision"] == pytest.approx(2 / 4)
    assert m["lesion_f1"] == pytest.approx(4 / 7)  # 2 * (1/2 * 2/3) / (1/2 + 2/3)
    assert m["vol_ref_ml"] == pytest.approx(11 * 0.9 * 1.1 * 3.0 / 1000)
    assert m["vol_pred_ml"] == pytest.approx(8 * 0.9 * 1.1 * 3.0 / 1000)
    assert np.isfinite(m["hd95_mm"]) and m["hd95_mm"] > 0


def test_label2_masking_changes_the_scores():
    pred, ref = _hand_case()
    masked = M.lesion_metrics(pred, ref, (1, 1, 3))
    unmasked_ref = np.where(ref == 2, 0, ref)  # same WMH, label 2 forgotten
    unmasked = M.lesion_metrics(pred, unmasked_ref, (1, 1, 3))
    # without the mask P4 and P5 (touching) form one extra 11-voxel false-positive lesion
    assert unmasked["n_pred_lesions"] == 4 and unmasked["n_pred_voxels_masked"] == 0
    assert unmasked["dice"] == pytest.approx(2 * 5 / (4 + 1 + 2 + 9 + 2 + 11))
    assert masked["dice"] > unmasked["dice"]
    # a prediction entirely inside label 2 scores as an empty prediction
    p2 = (ref == 2).astype(np.uint8)
    e = M.lesion_metrics(p2, ref, (1, 1, 3))
    assert e["n_pred_lesions"] == 0 and e["dice"] == 0 and math.isnan(e["hd95_mm"])


def test_26_connectivity_counts_corner_touching_voxels_as_one_lesion():
    ref = np.zeros((4, 4, 4), np.uint8)
    ref[1, 1, 1] = ref[2, 2, 2] = 1
    pred = np.zeros_like(ref)
    pred[1, 1, 1] = 1
    m = M.lesion_metrics(pred, ref, (1, 1, 1))
    assert m["n_ref_lesions"] == 1 and m["lesion_recall"] == 1.0


# ----------------------------------------------------------------------------------------- uint8 pitfall
def test_uint8_reference_background_is_not_lesion(tmp_path):
    ref = np.zeros((6, 12, 12), np.uint8)
    ref[2:4, 4:7, 4:7] = 1
    ref[4, 1:3, 1:3] = 2
    img = _image(ref, (1.0, 1.0, 3.0), IDENTITY)
    io.write_image(img, tmp_path / "ref.nii.gz")
    io.write_image(_image(ref.copy(), (1.0, 1.0, 3.0), IDENTITY), tmp_path / "pred.nii.gz")
    # the pitfall is real: SimpleITK's threshold at 0.5 on uint8 counts background as lesion
    r = sitk.ReadImage(str(tmp_path / "ref.nii.gz"))
    assert r.GetPixelID() == sitk.sitkUInt8
    naive = sitk.GetArrayFromImage(sitk.BinaryThreshold(r, 0.5, 1.5, 1, 0))
    assert naive.sum() > ref.size - 10  # nearly every voxel
    # ours: integer comparison, background stays background
    from nnunet_wmhloc.evaluation.evaluate import score_case

    m = score_case("lesion", tmp_path / "pred.nii.gz", tmp_path / "ref.nii.gz")
    assert m["vol_ref_ml"] == pytest.approx(18 * 3 / 1000)
    assert m["dice"] == 1.0 and m["avd_pct"] == 0.0 and m["hd95_mm"] == 0.0
    assert m["lesion_recall"] == 1.0 and m["lesion_f1"] == 1.0 and m["n_ref_lesions"] == 1


# ----------------------------------------------------------------------------------------- edge cases
def _vol():
    v = np.zeros((5, 10, 10), np.uint8)
    return v


def test_empty_prediction():
    ref = _vol()
    ref[2, 3:6, 3:6] = 1
    m = M.lesion_metrics(_vol(), ref, (1, 1, 3))
    assert m["dice"] == 0.0
    assert math.isnan(m["hd95_mm"])
    assert m["avd_pct"] == 100.0
    assert m["lesion_recall"] == 0.0 and m["lesion_f1"] == 0.0
    assert math.isnan(m["log_vd"])


def test_empty_reference():
    pred = _vol()
    pred[2, 3:6, 3:6] = 1
    m = M.lesion_metrics(pred, _vol(), (1, 1, 3))
    assert m["dice"] == 0.0
    assert math.isnan(m["hd95_mm"]) and math.isnan(m["avd_pct"]) and math.isnan(m["log_vd"])
    assert m["lesion_recall"] == 1.0          # challenge: no true WMH → recall 1
    assert m["lesion_precision"] == 0.0 and m["lesion_f1"] == 0.0


def test_both_empty():
    m = M.lesion_metrics(_vol(), _vol(), (1, 1, 3))
    assert math.isnan(m["dice"]) and math.isnan(m["hd95_mm"]) and math.isnan(m["avd_pct"])
    assert math.isnan(m["log_vd"])
    assert m["lesion_recall"] == 1.0 and m["lesion_f1"] == 1.0   # challenge: no lesions, no detections
    # reference holding only label 2 is "empty" too
    ref = _vol()
    ref[1, 1:3, 1:3] = 2
    m2 = M.lesion_metrics(_vol(), ref, (1, 1, 3))
    assert math.isnan(m2["dice"]) and m2["lesion_f1"] == 1.0


def test_log_vd_is_symmetric():
    a = np.zeros((2, 4, 4), bool)
    b = a.copy()
    a[0, :2, :2] = True              # 4 voxels
    b[0, :2, :] = True               # 8 voxels
    assert M.log_vd(a, b) == pytest.approx(math.log(2)) == pytest.approx(M.log_vd(b, a))
    assert M.avd(a, b) == 50.0 and M.avd(b, a) == 100.0


# ----------------------------------------------------------------------------------------- regions
def test_region_dice_by_hand():
    ref = np.zeros((2, 4, 5), np.int16)
    pred = np.zeros_like(ref)
    ref[0, 0, :4] = 1      # region 1: 4 voxels
    pred[0, 0, :2] = 1     # 2 of them predicted...
    pred[0, 1, 0] = 1      # ...plus 1 false positive → Dice 2*2/(3+4)
    ref[1, 2, :] = 2       # region 2: 5 voxels, predicted as 3 → Dice 0
    pred[1, 2, :] = 3      # region 3: absent from the reference → Dice 0
    ref[1, 3, :2] = 35
    pred[1, 3, :2] = 35    # exact → 1
    d = M.region_dice(pred, ref, [1, 2, 3, 4, 35, 36])
    assert d[1] == pytest.approx(4 / 7)
    assert d[2] == 0.0 and d[3] == 0.0 and d[35] == 1.0
    assert math.isnan(d[4]) and math.isnan(d[36])  # absent from both
    assert M.nanmean_or_nan([d[l] for l in (1, 2, 3, 4)]) == pytest.approx((4 / 7) / 3)


def test_wrong_hemisphere_share_by_hand():
    left, right = (1, 2, 35), (18, 19, 36)
    ref = np.array([1, 1, 2, 18, 35, 36, 0, 5, 1, 0])
    pred = np.array([1, 18, 19, 1, 36, 36, 1, 5, 0, 0])
    # scored where both hold a hemisphere's label: positions 0-5 (6 voxels: 7 is label 5, in neither set here)
    # wrong: 1 (L->R), 2 (L->R), 3 (R->L), 4 (L rest -> R rest) = 4 of 6
    assert M.wrong_hemisphere(pred, ref, left, right) == pytest.approx(4 / 6)
    assert M.wrong_hemisphere(ref, ref, left, right) == 0.0
    assert math.isnan(M.wrong_hemisphere(np.zeros(4, int), np.ones(4, int), left, right))
    swapped = np.where(np.isin(ref, left), ref + 17, np.where(np.isin(ref, right), ref - 17, ref))
    swapped[ref == 35], swapped[ref == 36] = 36, 35
    assert M.wrong_hemisphere(swapped, ref, left, right) == 1.0


# ----------------------------------------------------------------------------------------- vs official
def _official(ref_arr, pred_arr, spacing, direction, origin):
    """Independent transcription of the official evaluation's steps with SimpleITK filters.

    Reference passed as float32 so its 0.5/1.5 threshold is the one the challenge intended."""
    test = _image(ref_arr.astype(np.float32), spacing, direction, origin)
    res = _image(pred_arr.astype(np.uint8), spacing, direction, origin)
    test_b = sitk.BinaryThreshold(test, 0.5, 1.5, 1, 0)
    keep = sitk.BinaryThreshold(test, 1.5, 2.5, 0, 1)
    res_b = sitk.BinaryThreshold(sitk.Mask(res, keep), 1, 1000, 1, 0)
    t = sitk.GetArrayFromImage(test_b).ravel()
    r = sitk.GetArrayFromImage(res_b).ravel()
    dsc = 1.0 - scipy.spatial.distance.dice(t, r)

    def edge_points(b):
        h = sitk.GetArrayFromImage(sitk.Subtract(b, sitk.BinaryErode(b, (1, 1, 0))))
        return np.array([test.TransformIndexToPhysicalPoint([int(i) for i in idx])
                         for idx in np.transpose(np.flipud(np.nonzero(h)))])

    pt, pr = edge_points(test_b), edge_points(res_b)
    d1 = scipy.spatial.KDTree(pt).query(pr, k=1)[0]
    d2 = scipy.spatial.KDTree(pr).query(pt, k=1)[0]
    h95 = max(np.percentile(d1, 95), np.percentile(d2, 95))
    avd = abs(float(t.sum()) - float(r.sum())) / float(t.sum()) * 100

    cc = sitk.ConnectedComponentImageFilter()
    cc.SetFullyConnected(True)
    cc_t = cc.Execute(test_b)
    n_t = len(np.unique(sitk.GetArrayFromImage(cc_t))) - 1
    hit_t = len(np.unique(sitk.GetArrayFromImage(sitk.Multiply(cc_t, sitk.Cast(res_b, sitk.sitkUInt32))))) - 1
    cc_r = cc.Execute(res_b)
    n_r = len(np.unique(sitk.GetArrayFromImage(cc_r))) - 1
    hit_r = len(np.unique(sitk.GetArrayFromImage(sitk.Multiply(cc_r, sitk.Cast(test_b, sitk.sitkUInt32))))) - 1
    recall = 1.0 if n_t == 0 else hit_t / n_t
    precision = 1.0 if n_r == 0 else hit_r / n_r
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return {"dice": dsc, "hd95_mm": h95, "avd_pct": avd, "lesion_recall": recall, "lesion_f1": f1}


@pytest.mark.parametrize("seed", range(6))
def test_matches_official_evaluation_on_random_volumes(seed):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    shape = (7, 28, 24)
    smooth = lambda s: ndimage.gaussian_filter(rng.normal(size=shape), s)  # noqa: E731
    ref = (smooth((0.6, 1.5, 1.5)) > 0.25).astype(np.uint8)
    ref[(smooth((0.6, 2, 2)) > 0.3) & (ref == 0)] = 2
    pred = (smooth((0.6, 1.5, 1.5)) > 0.25).astype(np.uint8)
    pred |= (ref == 1) & (rng.random(shape) < 0.6)  # partly right, partly noise
    spacing = tuple(float(s) for s in rng.uniform(0.4, 3.5, 3))
    direction = DIRECTIONS[seed % 3]
    origin = tuple(float(o) for o in rng.uniform(-50, 50, 3))
    assert (ref == 1).sum() > 5 and (pred == 1).sum() > 5 and (ref == 2).sum() > 0
    want = _official(ref, pred, spacing, direction, origin)
    got = M.lesion_metrics(pred, ref, spacing, origin, direction)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-9, abs=1e-9), k


def test_matches_official_evaluation_on_real_geometry(shared_data):
    # the authors' region map of challenge subject 0: 240x240x48, 0.96x0.96x3 mm, oblique direction.
    # Lesion-like reference = region 12 (label 1) with region 17 as "other pathology" (label 2);
    # prediction = region 12 shifted by 2 voxels plus region 13 and part of region 17.
    path = shared_data / "wmhlocalization" / "WMH_refined_labels" / "Train" / "WMH_0.nii.gz"
    labels, img = io.read_labels(path)
    ref = np.zeros(labels.shape, np.uint8)
    ref[labels == 12] = 1
    ref[labels == 17] = 2
    pred = np.roll(labels == 12, 2, axis=2) | (labels == 13)
    pred[: labels.shape[0] // 2] |= labels[: labels.shape[0] // 2] == 17
    pred = pred.astype(np.uint8)
    want = _official(ref, pred, img.GetSpacing(), img.GetDirection(), img.GetOrigin())
    got = M.lesion_metrics(pred, ref, img.GetSpacing(), img.GetOrigin(), img.GetDirection())
    assert got["n_pred_voxels_masked"] > 0
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-9, abs=1e-9), k


@pytest.mark.parametrize("seed", range(4))
def test_boundary_equals_simpleitk_erosion(seed):
    # masks touching the image edges: ITK counts outside voxels as foreground, so must we
    rng = np.random.default_rng(seed)
    m = rng.random((5, 9, 11)) < (0.5 + 0.1 * seed)
    m[:, 0, :] |= seed % 2 == 0
    img = sitk.GetImageFromArray(m.astype(np.uint8))
    want = m & ~sitk.GetArrayFromImage(sitk.BinaryErode(img, (1, 1, 0))).astype(bool)
    np.testing.assert_array_equal(M.boundary(m), want)
