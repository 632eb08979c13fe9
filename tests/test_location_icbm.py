"""Location classes on a real brain nobody here made (nilearn's ICBM152 2009a), with no model: lesions
planted at known places get their class, periventricular/deep loads match those from an independent
ventricle reference, on the 1 mm grid and on a tilted 1x1x3 mm axial FLAIR-like grid; atlas-space
centroids agree with an independent registration; atlas-space masks and the frequency map."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_wmhloc import location as L
from nnunet_wmhloc.atlas import _atlas
import location_common as C

pytest.importorskip("nilearn")
GRIDS = ("1mm", "axial3")


@pytest.fixture(scope="module")
def base(shared_data):
    icbm = C.icbm152()
    ref = C.icbm_reference(icbm, shared_data)
    labels, truth = C.plant(ref, np.random.default_rng(20))
    t1 = C.darken(icbm["t1"], labels, ref["gm"])
    eve = shared_data / "eve_atlas"
    return {"icbm": icbm, "ref": ref, "labels": labels, "truth": truth, "t1": t1,
            "atlas": _atlas.load_atlas(eve), "priors": L.atlas_priors(eve)}


_CACHE: dict = {}


def subject(base, grid: str) -> dict:
    """The subject stored on `grid`, registered and located (cached: one registration per grid)."""
    if grid in _CACHE:
        return _CACHE[grid]
    st = C.stored_on(base["t1"], base["labels"], base["ref"]["ventricles"], grid)
    t1, planted, vent = st["t1"], st["planted"], st["ref_vent"]
    lesion = C.as_image((planted > 0).astype(np.uint8), t1)
    reg = L.register_subject(t1, base["atlas"])
    loc = L.locate(lesion, reg, base["priors"], atlas_grid=base["atlas"].t1)
    _CACHE[grid] = {"t1": t1, "planted": planted, "ref_vent": vent, "reg": reg, "loc": loc, "lesion": lesion}
    return _CACHE[grid]


def dice(a, b):
    return 2.0 * float((a & b).sum()) / max(1.0, float(a.sum() + b.sum()))


@pytest.mark.parametrize("grid", GRIDS)
def test_ventricle_mask_matches_reference(base, grid):
    s = subject(base, grid)
    d = dice(s["loc"].context.ventricles, s["ref_vent"])
    print(f"{grid}: ventricle Dice {d:.3f}")
    assert d >= 0.8


@pytest.mark.parametrize("grid", GRIDS)
def test_planted_lesions_get_their_class(base, grid):
    s = subject(base, grid)
    lab, _ = L.components(s["planted"] > 0)
    by_id = {r["lesion"]: r for r in s["loc"].lesions}
    right, wrong = 0, []
    for k, cls in base["truth"].items():
        ids = lab[s["planted"] == k]
        if ids.size == 0:
            wrong.append((k, cls, "vanished"))
            continue
        got = by_id[int(np.bincount(ids).argmax())]["location"]
        if got == cls:
            right += 1
        else:
            wrong.append((k, cls, got))
    share = right / len(base["truth"])
    print(f"{grid}: {right}/{len(base['truth'])} planted classes right; wrong: {wrong}")
    assert share >= 0.9, wrong
    assert {"periventricular", "deep", "juxtacortical", "infratentorial"} <= set(base["truth"].values())


@pytest.mark.parametrize("grid", GRIDS)
def test_periventricular_deep_within_10_percent_of_reference(base, grid):
    s = subject(base, grid)
    pv_ref, deep_ref = C.pv_deep_reference(s, base["truth"])
    loads = s["loc"].loads
    print(f"{grid}: periventricular {loads['periventricular_mm3']:.0f} (ref {pv_ref:.0f}), deep "
          f"{loads['deep_mm3']:.0f} (ref {deep_ref:.0f}) mm3")
    assert pv_ref > 500 and deep_ref > 500  # both classes are really exercised
    assert abs(loads["periventricular_mm3"] - pv_ref) <= 0.1 * pv_ref
    assert abs(loads["deep_mm3"] - deep_ref) <= 0.1 * deep_ref
    total = loads["periventricular_mm3"] + loads["deep_mm3"] + loads["infratentorial_mm3"]
    assert total == pytest.approx(loads["lesion_mm3"])
    assert loads["periventricular_cc_mm3"] + loads["deep_cc_mm3"] + loads["infratentorial_mm3"] == \
        pytest.approx(loads["lesion_mm3"])
    assert 1.2e6 < loads["icv_mm3"] < 2.2e6
    assert loads["lesion_icv_fraction"] == pytest.approx(loads["lesion_mm3"] / loads["icv_mm3"])


def test_atlas_centroids_agree_with_an_independent_registration(base):
    s = subject(base, "axial3")
    indep = C.intensity_affine(s["t1"], base["atlas"].t1)
    far = []
    for r in s["loc"].lesions:
        ours = np.array([r["atlas_x"], r["atlas_y"], r["atlas_z"]])
        theirs = np.array(indep.TransformPoint((r["x"], r["y"], r["z"])))
        far.append(float(np.linalg.norm(ours - theirs)))
    print(f"atlas-space centroid distance to the independent registration: median {np.median(far):.1f}, "
          f"max {max(far):.1f} mm")
    assert max(far) <= 5.0


def test_atlas_space_masks_and_frequency_map(base):
    subs = {g: subject(base, g) for g in GRIDS}
    masks = {g: s["loc"].atlas_mask for g, s in subs.items()}
    for g, s in subs.items():
        det = abs(np.linalg.det(np.array(s["reg"].transform.GetMatrix()).reshape(3, 3)))
        atlas_ml = float(sitk.GetArrayViewFromImage(masks[g]).sum())  # 1 mm atlas voxels
        assert atlas_ml == pytest.approx(s["loc"].loads["lesion_mm3"] * det, rel=0.15)
        assert masks[g].GetSize() == base["atlas"].t1.GetSize()
    a, b = (sitk.GetArrayViewFromImage(masks[g]) > 0 for g in GRIDS)
    assert dice(a, b) >= 0.6  # one brain on two grids: the same atlas voxels
    freq = L.frequency_maps(masks, {"1mm": "g1", "axial3": "g2"})
    f = sitk.GetArrayViewFromImage(freq["all"])
    assert set(np.unique(f).tolist()) <= {0.0, 0.5, 1.0}
    assert (f == 1.0).sum() == (a & b).sum() and (f == 0.5).sum() == (a ^ b).sum()
    assert np.array_equal(sitk.GetArrayViewFromImage(freq["g1"]) > 0, a)


def test_location_map_and_context_images(base):
    s = subject(base, "1mm")
    loc = s["loc"]
    m = sitk.GetArrayViewFromImage(loc.location_map)
    lab, _ = L.components(s["planted"] > 0)
    for r in loc.lesions:
        assert set(np.unique(m[lab == r["lesion"]]).tolist()) == {L.LOCATION_CODES[r["location"]]}
    assert not m[s["planted"] == 0].any()
    ctxmap = sitk.GetArrayViewFromImage(loc.context.label_map())
    assert np.array_equal(ctxmap == 1, loc.context.ventricles)
    assert not (loc.context.ventricles & (s["planted"] > 0)).any()
    assert 100e3 < loc.context.infratentorial.sum() * loc.context.voxel_mm3 < 300e3  # brainstem + cerebellum
