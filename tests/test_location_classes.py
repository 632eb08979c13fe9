"""The location rules on small hand-made contexts (fast): LST-AI's priority order, distances in mm on
anisotropic grids, the distance and continuity splits, lobes, atlas-space inversion, frequency maps."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_wmhloc import location as L
from nnunet_wmhloc.vocab import WM_REGIONS


def grid(shape_zyx=(20, 40, 40), spacing=(1.0, 1.0, 1.0)) -> sitk.Image:
    g = sitk.Image([shape_zyx[2], shape_zyx[1], shape_zyx[0]], sitk.sitkUInt8)
    g.SetSpacing(spacing)
    g.SetOrigin((10.0, -5.0, 3.0))
    return g


def context(g, vent, cortex=None, infra=None):
    z = np.zeros(vent.shape, bool)
    return L.LocationContext(grid=g, ventricles=vent, cortex=z if cortex is None else cortex,
                             infratentorial=z if infra is None else infra, brain=np.ones(vent.shape, bool),
                             transform=sitk.TranslationTransform(3, (1.0, 2.0, 3.0)))


def test_priority_order_and_rows():
    g = grid()
    vent = np.zeros((20, 40, 40), bool)
    vent[8:12, 18:22, 2:6] = True
    cortex = np.zeros_like(vent)
    cortex[:, :, 36:] = True
    infra = np.zeros_like(vent)
    infra[:, 30:, :] = True
    les = np.zeros_like(vent)
    les[9:11, 19:21, 6:8] = True      # touches the ventricles (and lies in nothing else)
    les[9:11, 5:7, 34:36] = True      # touches cortex
    les[9:11, 33:35, 33:36] = True    # touches cortex and is infratentorial: juxtacortical wins (LST-AI's order)
    les[9:11, 33:35, 15:18] = True    # infratentorial
    les[9:11, 5:7, 15:18] = True      # none: deep
    ctx = context(g, vent, cortex, infra)
    rows = L.classify_lesions(les, ctx)
    got = {(r["x"] - 10.0) // 1: r["location"] for r in rows}
    assert sorted(r["location"] for r in rows) == sorted(["periventricular", "juxtacortical", "juxtacortical",
                                                           "infratentorial", "deep"])
    assert got[6.0] == "periventricular" and got[16.0] in ("infratentorial", "deep")
    pv = next(r for r in rows if r["location"] == "periventricular")
    assert pv["ventricle_distance_mm"] == 1.0 and pv["volume_mm3"] == 8.0
    assert (pv["atlas_x"], pv["atlas_y"], pv["atlas_z"]) == (pv["x"] + 1, pv["y"] + 2, pv["z"] + 3)
    m = sitk.GetArrayFromImage(L.location_map(L.components(les)[0], rows, g))
    assert set(np.unique(m).tolist()) == {0, 1, 2, 3, 4} and not m[~les].any()


def test_distances_honour_anisotropic_spacing():
    g = grid((20, 20, 20), spacing=(1.0, 1.0, 3.0))
    vent = np.zeros((20, 20, 20), bool)
    vent[5, 10, 10] = True
    les = np.zeros_like(vent)
    les[8, 10, 10] = True   # 3 slices above: 9 mm
    les[5, 10, 16] = True   # 6 columns: 6 mm
    rows = L.classify_lesions(les, context(g, vent))
    assert sorted(r["ventricle_distance_mm"] for r in rows) == [6.0, 9.0]
    assert {r["volume_mm3"] for r in rows} == {3.0}
    loads = L.subject_loads(les, context(g, vent), rows, pv_distance_mm=7.0)
    assert loads["periventricular_mm3"] == 3.0 and loads["deep_mm3"] == 3.0


def test_distance_and_continuity_splits_add_up():
    g = grid()
    vent = np.zeros((20, 40, 40), bool)
    vent[5:15, 18:22, 0:4] = True
    infra = np.zeros_like(vent)
    infra[:, 34:, :] = True
    les = np.zeros_like(vent)
    les[9:11, 19:21, 4:20] = True     # touches, reaches 16 mm away: split by distance, whole by continuity
    les[9:11, 5:7, 20:22] = True      # far: deep
    les[9:11, 35:37, 20:22] = True    # infratentorial
    ctx = context(g, vent, infra=infra)
    rows = L.classify_lesions(les, ctx)
    d = L.subject_loads(les, ctx, rows, pv_distance_mm=10.0)
    assert d["lesion_mm3"] == 64 + 8 + 8
    assert d["periventricular_mm3"] == 40 and d["deep_mm3"] == 24 + 8  # x = 4..13 within 10 mm of x = 3
    assert d["periventricular_cc_mm3"] == 64 and d["deep_cc_mm3"] == 8 and d["infratentorial_mm3"] == 8
    for rule in ("", "_cc"):
        assert d[f"periventricular{rule}_mm3"] + d[f"deep{rule}_mm3"] + d["infratentorial_mm3"] == d["lesion_mm3"]
    assert d["icv_mm3"] == 20 * 40 * 40 and d["lesion_icv_fraction"] == pytest.approx(80 / 32000)


def test_lobar_loads_cover_the_34_regions():
    assert {L.lobe_of(r) for r in WM_REGIONS} == set(L.LOBES)
    assert all(L.lobe_of(r) == L.lobe_of(r + 17) for r in range(1, 18))
    assert L.lobe_of(0) is None and L.lobe_of(35) is None and L.lobe_of(36) is None
    g = grid()
    vent = np.zeros((20, 40, 40), bool)
    vent[0, 0, 0] = True
    les = np.zeros_like(vent)
    les[5:7, 5:7, 5:7] = True
    regions = np.zeros(vent.shape, np.int16)
    regions[5, 5:7, 5:7] = 3      # superior frontal
    regions[6, 5:7, 5:7] = 27     # right temporal
    ctx = context(g, vent)
    d = L.subject_loads(les, ctx, L.classify_lesions(les, ctx), regions=regions)
    assert d["frontal_mm3"] == 4 and d["temporal_mm3"] == 4 and d["occipital_mm3"] == 0


def test_inverse_of_affine_and_deformable_transforms():
    g = sitk.Image([60, 60, 40], sitk.sitkUInt8)
    g.SetSpacing((2.0, 2.0, 3.0))
    aff = sitk.AffineTransform(3)
    aff.SetMatrix((1.05, 0.05, 0, -0.04, 0.97, 0.02, 0, 0.03, 1.1))
    aff.SetTranslation((4.0, -3.0, 2.0))
    bs = sitk.BSplineTransformInitializer(g, [3, 3, 3])
    p = np.array(bs.GetParameters())
    p[:] = np.random.default_rng(0).normal(0, 1.5, p.size)
    bs.SetParameters(tuple(p))
    comp = sitk.CompositeTransform(aff)
    comp.AddTransform(bs)
    for t, tol in ((aff, 1e-6), (comp, 1.0)):  # the field is inverted on a 2 mm grid: sub-voxel
        inv = L.inverse(t, g)
        for q in ((40.0, 50.0, 60.0), (60.0, 60.0, 50.0)):
            assert np.allclose(inv.TransformPoint(t.TransformPoint(q)), q, atol=tol)


def test_to_atlas_and_frequency_maps():
    g = grid()
    a = np.zeros((20, 40, 40), np.uint8)
    a[5:10, 5:15, 5:15] = 1
    img = sitk.GetImageFromArray(a)
    img.CopyInformation(g)
    shift = sitk.TranslationTransform(3, (2.0, 0.0, 0.0))  # subject point → atlas point
    m = L.to_atlas(img, shift, g)
    out = sitk.GetArrayFromImage(m)
    assert out.sum() == a.sum() and out[5:10, 5:15, 7:17].all()
    f = L.frequency_maps({"s1": m, "s2": img, "s3": img}, {"s1": "A", "s2": "A", "s3": "B"})
    assert sitk.GetArrayViewFromImage(f["all"]).max() == 1.0
    assert np.isclose(sitk.GetArrayViewFromImage(f["all"])[7, 10, 6], 2 / 3)
    assert set(np.unique(sitk.GetArrayViewFromImage(f["A"])).tolist()) == {0.0, 0.5, 1.0}
    with pytest.raises(ValueError):
        L.frequency_map([])


def test_group_frequency_maps_written_per_cluster_group(tmp_path):
    """After clustering, one lesion-frequency NIfTI per group in cluster/, from the subjects' atlas-space masks in
    location/: the share of that group's subjects with a lesion at each voxel; a subject without a mask is left
    out, and no location/ means no maps."""
    from nnunet_wmhloc.layout import RunLayout
    from nnunet_wmhloc.pipeline.location_outputs import GROUP_FREQUENCY, group_frequency_maps

    lay = RunLayout(tmp_path / "run")
    assignments = [{"subject": s, "group": g} for s, g in (("a", "1"), ("b", "1"), ("c", "2"), ("d", "2"), ("e", "0"))]
    assert group_frequency_maps(lay, assignments) == []
    lay.location.mkdir(parents=True)
    lay.cluster.mkdir(parents=True)
    g = grid((6, 8, 8))
    boxes = {"a": (slice(0, 3),), "b": (slice(1, 4),), "c": (slice(2, 6),)}  # "d" and "e": no mask file
    for s, box in boxes.items():
        a = np.zeros((6, 8, 8), np.uint8)
        a[box] = 1
        img = sitk.GetImageFromArray(a)
        img.CopyInformation(g)
        sitk.WriteImage(img, str(lay.location / f"{s}_space-atlas_lesion_mask.nii.gz"))
    written = group_frequency_maps(lay, assignments)
    assert sorted(p.name for p in written) == [GROUP_FREQUENCY.format(group=k) for k in ("1", "2")]
    one = sitk.GetArrayFromImage(sitk.ReadImage(str(lay.cluster / GROUP_FREQUENCY.format(group="1"))))
    assert np.allclose(one[:, 0, 0], [0.5, 1, 1, 0.5, 0, 0])  # a: z 0-2, b: z 1-3
    two = sitk.ReadImage(str(lay.cluster / GROUP_FREQUENCY.format(group="2")))
    assert np.allclose(sitk.GetArrayFromImage(two)[:, 0, 0], [0, 0, 1, 1, 1, 1])  # c alone (d has no mask)
    assert two.GetOrigin() == g.GetOrigin() and two.GetSpacing() == g.GetSpacing()
