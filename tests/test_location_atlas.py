"""Location on the atlas's own T1 (Eve) and on the MNI152 brain that ANTs SyN labelled with the Eve
type-II atlas: ventricles against Eve's FSL classes, planted classes and regional loads against the SyN
labels, with no model."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi

import location_common as C
from nnunet_wmhloc import location as L
from nnunet_wmhloc.atlas import _atlas, merge_table, region_labels
from nnunet_wmhloc.location import priors as P


@pytest.fixture(scope="module")
def eve(shared_data):
    d = shared_data / "eve_atlas"
    return {"dir": d, "atlas": _atlas.load_atlas(d), "priors": L.atlas_priors(d)}


def dice(a, b):
    return 2.0 * float((a & b).sum()) / max(1.0, float(a.sum() + b.sum()))


def test_ventricles_of_the_eve_t1_match_its_fsl_csf(eve):
    """Reference: Eve's FSL CSF class in the central region (unlabelled CSF lining the corpus callosum,
    caudate, thalamus, fornix, enclosed by tissue); ours: from the Eve T1 alone (our tissue classes and
    registration), so this checks the subject side, not the prior's definition."""
    d = eve["dir"]
    type2 = sitk.GetArrayFromImage(sitk.ReadImage(str(d / _atlas.EVE_TYPE2)))
    tissue = sitk.GetArrayFromImage(sitk.ReadImage(str(d / _atlas.EVE_TISSUE)))
    ref = P.ventricle_prior(type2, tissue, (1.0, 1.0, 1.0))
    assert 10_000 < ref.sum() < 40_000  # ml-sized lateral + third ventricles
    reg = L.register_subject(eve["atlas"].t1, eve["atlas"])
    ctx = L.location_context(reg.tissue, reg.brain, reg.transform, eve["priors"])
    dv = dice(ctx.ventricles, ref)
    print(f"Eve: ventricle Dice {dv:.3f} ({ctx.ventricles.sum()} vs {ref.sum()} voxels)")
    assert dv >= 0.8


@pytest.fixture(scope="module")
def mni(shared_data, eve):
    """The MNI152 brain with lesions planted by the SyN labels and a 3-class split of its T1."""
    from skimage.filters import threshold_multiotsu

    path = shared_data / "external_reference" / "MNI152_T1_1mm_brain.nii.gz"
    t1 = sitk.ReadImage(str(path), sitk.sitkFloat32)
    a = sitk.GetArrayFromImage(t1)
    syn = C.syn_labels_on(t1, shared_data)
    csf_gm, gm_wm = threshold_multiotsu(a[a > 0][::7], classes=3)
    infra_zone = ndi.binary_dilation(np.isin(syn, P.INFRATENTORIAL), iterations=6)
    deep = ndi.binary_dilation(np.isin(syn, P.DEEP_GM), iterations=5)
    wm = np.clip((a - csf_gm) / (gm_wm - csf_gm) - 0.5, 0, 1)  # 0 at CSF/GM, 1 beyond the GM/WM cut
    # ventricles: its CSF (the T1's darkest class) that the SyN labels leave unlabelled next to the ventricle
    # lining, enclosed (the rule that defines Eve's, on labels placed by ANTs)
    classes = np.select([a <= 0, a < csf_gm, a < gm_wm], [0, 1, 2], 3)
    ref = {"ventricles": P.ventricle_prior(syn, classes, (1.0, 1.0, 1.0)), "wm": np.where(a > gm_wm, 1.0, wm * 0.5),
           "cortex": (a > csf_gm) & (a < gm_wm) & ~deep & ~infra_zone, "infra_zone": infra_zone,
           "infra": ndi.binary_erosion(np.isin(syn, P.INFRATENTORIAL), iterations=4) & (a > csf_gm)}
    # regional lesions: in the WM (the T1's brightest class, eroded by 2 mm: lesions are WM lesions), inside
    # one of the 34 regions of the SyN labels, 3 mm from its border
    merged = merge_table.merge_type2(syn)
    interior = np.zeros(a.shape, bool)
    for r in range(1, 35):
        interior |= ndi.binary_erosion(merged == r, iterations=3)
    interior &= ndi.binary_erosion(a > gm_wm, iterations=2)
    labels, truth = C.plant(ref, np.random.default_rng(5), counts={"periventricular": 5, "deep": 5,
                                                                   "juxtacortical": 5, "infratentorial": 5})
    # (plant's "infratentorial" places lesions anywhere in the mask given as "infra": here the interiors)
    regional, _ = C.plant({**ref, "wm": np.where(interior, 1.0, 0.0), "infra": interior},
                          np.random.default_rng(6), counts={"infratentorial": 12}, min_gap_mm=14)
    return {"path": path, "t1": t1, "syn": syn, "merged": merged, "labels": labels, "truth": truth,
            "regional": regional}


def test_planted_classes_on_the_mni152_brain(mni, eve):
    reg = L.register_subject(mni["t1"], eve["atlas"], where=str(mni["path"]))
    lesion = C.as_image((mni["labels"] > 0).astype(np.uint8), mni["t1"])
    loc = L.locate(lesion, reg, eve["priors"])
    lab, _ = L.components(mni["labels"] > 0)
    by_id = {r["lesion"]: r["location"] for r in loc.lesions}
    got = {k: by_id[int(np.bincount(lab[mni["labels"] == k]).argmax())] for k in mni["truth"]}
    wrong = [(k, c, got[k]) for k, c in mni["truth"].items() if got[k] != c]
    print(f"MNI152: {len(got) - len(wrong)}/{len(got)} planted classes right; wrong: {wrong}")
    assert len(wrong) <= 0.1 * len(got)


def test_atlas_regions_agree_with_the_syn_labels(mni, eve):
    """`wmhloc_region_labels`' registration (what --regions atlas runs) puts the planted lesion volume in the
    region the ANTs SyN labels give, for at least 80% of it."""
    o = region_labels.label_subject(mni["path"], eve["atlas"])
    ours = sitk.GetArrayFromImage(o.labels)  # the region map as written: atlas labels x subject WM
    les = mni["regional"] > 0
    same = float((ours[les] == mni["merged"][les]).sum()) / les.sum()
    print(f"MNI152: {100 * same:.1f}% of the planted volume in the SyN region")
    assert same >= 0.8
    lobes = {L.lobe_of(int(r)) for r in np.unique(mni["merged"][les])}
    assert len(lobes) >= 3 and None not in lobes


def test_priors_from_a_built_atlas_folder(eve, tmp_path):
    """A built atlas folder has no type-II map: the priors come from the Eve folder its manifest names,
    and a folder whose Eve folder is gone is refused in one line naming it."""
    atlas, prov = _atlas.build_from_eve(eve["dir"])
    built = tmp_path / "atlas"
    built.mkdir()
    _atlas.write_atlas(atlas, prov, built)
    pri = L.atlas_priors(built)
    assert np.array_equal(sitk.GetArrayViewFromImage(pri.ventricles),
                          sitk.GetArrayViewFromImage(eve["priors"].ventricles))
    assert pri.source.endswith(_atlas.EVE_TYPE2)
    manifest = built / _atlas.MANIFEST
    manifest.write_text(manifest.read_text().replace(prov["eve_dir"], str(tmp_path / "gone")))
    with pytest.raises(L.priors.WMHLocError, match="type-II"):
        L.atlas_priors(built)
