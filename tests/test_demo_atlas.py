"""The demo's built-in atlas (synth.write_demo_atlas): a folder load_atlas and the location priors accept,
made from the synthetic heads' own phantom, that a synthetic subject registers to."""
import numpy as np
import SimpleITK as sitk

from nnunet_wmhloc import synth
from nnunet_wmhloc.atlas import _atlas
from nnunet_wmhloc.location import atlas_priors


def test_demo_atlas_folder_loads(tmp_path):
    folder = synth.write_demo_atlas(tmp_path / "atlas")
    for name in (_atlas.LABELS, _atlas.LABELS_WM, _atlas.T1, _atlas.BRAIN, _atlas.TISSUE, _atlas.NAMES,
                 _atlas.MANIFEST, _atlas.EVE_TYPE2):
        assert (folder / name).is_file(), name
    atlas = _atlas.load_atlas(folder)
    labels = sitk.GetArrayFromImage(atlas.labels)
    tissue = sitk.GetArrayFromImage(atlas.tissue)
    assert set(np.unique(labels)) == set(range(0, 37))  # every region of the subjects' maps
    assert set(np.unique(tissue)) == {0, 1, 2, 3}
    assert (labels[tissue == 3] > 0).all() and (labels[tissue <= 1] == 0).all()
    # left regions (1-17, 35) on the patient's left: +x in LPS
    x = np.indices(labels.shape)[2]
    left = np.isin(labels, list(range(1, 18)) + [35])
    right = np.isin(labels, list(range(18, 35)) + [36])
    assert x[left].mean() > x[right].mean()
    pri = atlas_priors(folder)
    for name in ("ventricles", "infratentorial"):
        assert sitk.GetArrayViewFromImage(getattr(pri, name)).sum() > 50, name
    vent = sitk.GetArrayViewFromImage(pri.ventricles) > 0
    assert (tissue[vent] == 1).all()


def test_synthetic_subject_registers_to_the_demo_atlas(tmp_path):
    """A demo subject's skull-stripped T1 (make_cohort brain_t1): registered by the model-free path's
    register_subject, the atlas labels carried onto its WM mostly agree with its own region map."""
    from nnunet_wmhloc.location import register_subject
    from nnunet_wmhloc.pipeline.model_free import atlas_regions

    atlas = _atlas.load_atlas(synth.write_demo_atlas(tmp_path / "atlas"))
    synth.make_cohort(tmp_path / "c", seed=0, per_site=2, test_per_site=2, show_progress=False, brain_t1=True)
    d = tmp_path / "c" / "test" / "Singapore" / "51"
    lesion = sitk.ReadImage(str(d / "wmh.nii.gz"))
    mask = sitk.GetArrayFromImage(lesion) == 1
    reg = register_subject(sitk.ReadImage(str(d / "pre" / synth.T1_BRAIN)), atlas)
    carried = sitk.GetArrayFromImage(atlas_regions(reg, atlas, lesion, mask))
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "c" / "region_labels" / "Test" / "WMH_51.nii.gz")))
    fg = (carried > 0) | (truth > 0)
    assert (carried[fg] == truth[fg]).mean() > 0.8
    assert (carried[mask] > 0).mean() > 0.9
