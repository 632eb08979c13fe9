"""wmhloc_region_labels end to end on a challenge-like synthetic subject, and its failure modes."""
import contextlib
import csv
import io
import json
import subprocess
import types

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_wmhloc.atlas import _atlas, _synthetic
from nnunet_wmhloc.io import array_to_image


@pytest.fixture(scope="module")
def atlas_dir(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("atlas") / "refined"
    r = subprocess.run(["wmhloc_build_atlas", "--eve-dir", str(shared_data / "eve_atlas"), "--output", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def subject(atlas_dir, tmp_path_factory):
    """Eve with a skull, moved by a known random affine (±10°, ±8 % scale) onto 240×240×48 at
    0.96×0.96×3 mm far from Eve's origin (no overlap at the start), bias ±20 %, noise 3 %."""
    atlas = _atlas.load_atlas(atlas_dir)
    syn = _synthetic.make_subject(atlas, seed=7)
    d = tmp_path_factory.mktemp("subject")
    sitk.WriteImage(syn.t1, str(d / "T1.nii.gz"))
    sitk.WriteImage(syn.labels, str(d / "truth.nii.gz"))
    sitk.WriteImage(syn.wm, str(d / "truth_wm.nii.gz"))
    return d


def run_cli(*args):
    """The console script in a subprocess (end to end)."""
    return subprocess.run(["wmhloc_region_labels", *map(str, args)], capture_output=True, text=True,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "2"})


def run(*args):
    """The command's main in this process (no interpreter start-up per call); stderr as the user sees it."""
    from nnunet_wmhloc.atlas import region_labels

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = region_labels.main([str(a) for a in args])
        except SystemExit as e:  # argparse
            code = e.code
    return types.SimpleNamespace(returncode=code, stderr=err.getvalue())


def region_dice(pred, truth, domain):
    out = []
    for r in range(1, 35):
        a, b = (pred == r) & domain, (truth == r) & domain
        if b.sum() + a.sum():
            out.append(2 * (a & b).sum() / (a.sum() + b.sum()))
    return np.array(out)


def test_synthetic_subject_end_to_end(subject, atlas_dir, tmp_path):
    out = tmp_path / "sub_regions.nii.gz"
    r = run_cli("--t1", subject / "T1.nii.gz", "--atlas-dir", atlas_dir, "--output", out)
    assert r.returncode == 0, r.stderr
    t1 = sitk.ReadImage(str(subject / "T1.nii.gz"))
    lab_img = sitk.ReadImage(str(out))
    # the subject's exact geometry
    assert lab_img.GetSize() == t1.GetSize() and lab_img.GetSpacing() == t1.GetSpacing()
    assert lab_img.GetOrigin() == t1.GetOrigin() and lab_img.GetDirection() == t1.GetDirection()
    lab = sitk.GetArrayFromImage(lab_img)
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(subject / "truth.nii.gz")))
    truth_wm = sitk.GetArrayFromImage(sitk.ReadImage(str(subject / "truth_wm.nii.gz"))) > 0
    assert set(np.unique(lab)) <= set(range(37)) and len(np.unique(lab)) >= 30
    # labels where both we and the truth see WM regions: a correct affine gives ≈ 0.95 here (a 1 mm
    # shift of the truth itself scores 0.93-0.95 on 3 mm slices, 1.5 mm scores 0.89-0.93); any gross
    # error (wrong start, flipped, diverged) scores < 0.5. 0.88 leaves room for noise, not for a miss.
    dom = (lab > 0) & (truth >= 1) & (truth <= 34)
    d = region_dice(lab, truth, dom)
    assert d.mean() > 0.88, d
    # our WM estimate keeps the true WM labelled (it must not lose most of it)
    assert ((lab > 0) & truth_wm).sum() / truth_wm.sum() > 0.75
    # the transform beside it maps subject points to atlas points: close to the known one
    tfm = sitk.ReadTransform(str(tmp_path / "sub_regions.tfm"))
    assert (tmp_path / "sub_regions_qc.png").stat().st_size > 10_000
    q = json.loads((tmp_path / "sub_regions.json").read_text())
    assert q["subject_wm_labelled"] > 0.9
    # re-running refuses to overwrite
    r2 = run("--t1", subject / "T1.nii.gz", "--atlas-dir", atlas_dir, "--output", out)
    assert r2.returncode == 1 and "already exists" in r2.stderr
    # compare the saved transform with the truth at points around the brain centre
    atlas = _atlas.load_atlas(atlas_dir)
    syn = _synthetic.make_subject(atlas, seed=7)
    c = np.array(syn.transform.GetCenter())
    errs = [np.linalg.norm(np.subtract(tfm.TransformPoint(tuple(c + o)), syn.transform.TransformPoint(tuple(c + o))))
            for o in ((0, 0, 0), (40, 0, 0), (0, 40, 0), (0, 0, 30), (-40, -40, -20))]
    assert max(errs) < 3.0, errs


def test_wrong_wm_mask_makes_registration_fail_loudly(subject, atlas_dir, tmp_path):
    """A 'WM' that is two balls at the edges of the field of view: the atlas cannot fit it."""
    t1 = sitk.ReadImage(str(subject / "T1.nii.gz"))
    m = np.zeros(sitk.GetArrayViewFromImage(t1).shape, np.uint8)
    zz, yy, xx = np.ogrid[: m.shape[0], : m.shape[1], : m.shape[2]]
    for cy, cx in ((30, 30), (210, 210)):
        m[((yy - cy) ** 2 + (xx - cx) ** 2 < 25 ** 2) & (zz > 10) & (zz < 40)] = 1
    wm = sitk.GetImageFromArray(m)
    wm.CopyInformation(t1)
    sitk.WriteImage(wm, str(tmp_path / "wm.nii.gz"))
    out = tmp_path / "bad.nii.gz"
    r = run("--t1", subject / "T1.nii.gz", "--wm-mask", tmp_path / "wm.nii.gz", "--atlas-dir", atlas_dir,
            "--output", out)
    assert r.returncode == 1
    assert r.stderr.startswith("error: ") and "registration" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.glob("bad*"))


def test_input_errors_are_one_line_and_write_nothing(subject, atlas_dir, tmp_path):
    t1 = sitk.ReadImage(str(subject / "T1.nii.gz"))
    empty = sitk.Image(t1.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(t1)
    sitk.WriteImage(empty, str(tmp_path / "empty.nii.gz"))
    other = sitk.Image([64, 64, 20], sitk.sitkUInt8) + 1
    sitk.WriteImage(other, str(tmp_path / "other.nii.gz"))
    out = tmp_path / "o.nii.gz"
    cases = [
        (["--wm-mask", tmp_path / "empty.nii.gz"], "empty.nii.gz: WM mask is empty"),
        (["--wm-mask", tmp_path / "other.nii.gz"], "other.nii.gz: size (64, 64, 20) differs"),
        (["--flair", tmp_path / "other.nii.gz"], "T1.nii.gz: size"),
    ]
    for extra, msg in cases:
        r = run("--t1", subject / "T1.nii.gz", *extra, "--atlas-dir", atlas_dir, "--output", out)
        assert r.returncode == 1 and msg in r.stderr, (extra, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
    r = run("--t1", tmp_path / "missing.nii.gz", "--atlas-dir", atlas_dir, "--output", out)
    assert r.returncode == 1 and "missing.nii.gz: T1 not found" in r.stderr
    r = run("--t1", subject / "T1.nii.gz", "--atlas-dir", tmp_path, "--output", out)
    assert r.returncode == 1 and "neither a built atlas" in r.stderr
    r = run("--t1", subject / "T1.nii.gz", "--input", subject, "--atlas-dir", atlas_dir, "--output", out)
    assert r.returncode == 1 and "either --t1" in r.stderr
    # not a brain: a uniform box, and a box holding one small bright cube (no WM worth the name)
    box = sitk.Image([60, 60, 30], sitk.sitkFloat32) + 100.0
    sitk.WriteImage(box, str(tmp_path / "box.nii.gz"))
    r = run("--t1", tmp_path / "box.nii.gz", "--atlas-dir", atlas_dir, "--output", out)
    assert r.returncode == 1 and "box.nii.gz: T1 has no contrast" in r.stderr
    arr = np.zeros((30, 60, 60), np.float32)
    arr[5:25, 10:50, 10:50] = 100.0
    arr[12:18, 25:35, 25:35] = 300.0
    cube = sitk.GetImageFromArray(arr)
    sitk.WriteImage(cube, str(tmp_path / "cube.nii.gz"))
    r = run("--t1", tmp_path / "cube.nii.gz", "--atlas-dir", atlas_dir, "--output", out)
    assert r.returncode == 1 and "cube.nii.gz: subject brain is 32.0 ml" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not any(p.name.startswith("o.") or p.name.startswith("o_") for p in tmp_path.iterdir())


def test_cohort_csv_reports_failures_and_keeps_the_good(subject, atlas_dir, tmp_path):
    csv_path = tmp_path / "cohort.csv"
    csv_path.write_text(f"subject,t1\nsynA,{subject / 'T1.nii.gz'}\nghost,{tmp_path / 'nope.nii.gz'}\n")
    out = tmp_path / "labels"
    r = run_cli("--input", csv_path, "--atlas-dir", atlas_dir, "--output", out, "--workers", "1")
    assert r.returncode == 1 and "nope.nii.gz: T1 not found" in r.stderr
    assert (out / "synA.nii.gz").is_file() and (out / "synA.tfm").is_file()
    assert not (out / "ghost.nii.gz").exists()
    rows = {row["subject"]: row for row in csv.DictReader(open(out / "region_labels_summary.csv"))}
    assert rows["synA"]["status"] == "ok" and rows["ghost"]["status"] == "failed"
    bad = tmp_path / "bad.csv"
    bad.write_text("id,t1\nx,y\n")
    r = run("--input", bad, "--atlas-dir", atlas_dir, "--output", tmp_path / "l2")
    assert r.returncode == 1 and "missing column(s) subject" in r.stderr


# ------------------------------------------------------------------ WM estimate on real brains (issue 13)
def _dice(a, b):
    return 2.0 * (a & b).sum() / max(1, a.sum() + b.sum())


def _wm(img, **kw):
    from nnunet_wmhloc.atlas import _subject
    return sitk.GetArrayFromImage(_subject.segment(img, **kw)[1]) == 3


def test_wm_estimate_on_icbm152_matches_its_wm_probability_map():
    """nilearn ships the ICBM152 2009a T1 (skull-stripped, 1 mm) with its WM probability map: 3-means
    called 1351 ml WM there against the map's 632 ml (p > 0.5), Dice 0.64."""
    import os
    nilearn = pytest.importorskip("nilearn")
    d = os.path.join(os.path.dirname(nilearn.__file__), "datasets", "data")
    t1 = sitk.ReadImage(os.path.join(d, "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"), sitk.sitkFloat32)
    ref = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(d, "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"),
                                                sitk.sitkFloat32)) / 255.0 > 0.5
    info = {}
    wm = _wm(t1, info=info)
    assert info["skull_stripped"]
    assert _dice(wm, ref) >= 0.85, _dice(wm, ref)
    # measured +14 % (723 vs 632 ml; 3-means +114 %): the template's blurred GM/WM border puts its
    # p = 0.5 line a little inside our intensity cut
    assert abs(wm.sum() / ref.sum() - 1) <= 0.15, (wm.sum(), ref.sum())


@pytest.fixture(scope="module")
def eve(shared_data):
    atlas = _atlas.build_from_eve(shared_data / "eve_atlas")[0]
    return atlas, _wm(atlas.t1)


def test_wm_estimate_on_eve_matches_its_fsl_wm_class(eve):
    atlas, wm = eve
    ref = sitk.GetArrayFromImage(atlas.tissue) == 3
    assert _dice(wm, ref) >= 0.85, _dice(wm, ref)


def test_wm_estimate_same_with_and_without_skull(eve):
    """The Eve brain inside a head (CSF rim, dark skull, bright scalp fat, as the synthetic subjects)
    against the same brain skull-stripped: same WM whichever the user gives."""
    atlas, wm_stripped = eve
    head = _synthetic._head(atlas)  # padded by 24 mm on every side
    info = {}
    wm_head = _wm(head, info=info)
    assert not info["skull_stripped"]
    pad = [int(round(24.0 / s)) for s in atlas.t1.GetSpacing()]
    wm_head = wm_head[pad[2]:-pad[2], pad[1]:-pad[1], pad[0]:-pad[0]]
    assert abs(wm_head.sum() / wm_stripped.sum() - 1) <= 0.15, (wm_head.sum(), wm_stripped.sum())
    assert _dice(wm_head, wm_stripped) >= 0.85


# ------------------------------------------- determinism and interrupted runs (issue 16) on a 2 mm brain
@pytest.fixture(scope="module")
def small_brain(shared_data, tmp_path_factory):
    """The MNI152 brain (skull-stripped) block-averaged to 2 mm: a real brain, cheap to label."""
    img = sitk.ReadImage(str(shared_data / "external_reference" / "MNI152_T1_1mm_brain.nii.gz"), sitk.sitkFloat32)
    p = tmp_path_factory.mktemp("small") / "t1.nii.gz"
    sitk.WriteImage(sitk.BinShrink(img, [2, 2, 2]), str(p))
    return p


def test_same_input_same_output_bit_for_bit(small_brain, shared_data, tmp_path):
    from nnunet_wmhloc.atlas import region_labels
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(2)  # the multithreaded path is the one that varied
    maps, tfms = set(), set()
    for i in range(5):
        out = tmp_path / f"r{i}.nii.gz"
        assert region_labels.main(["--t1", str(small_brain), "--atlas-dir", str(shared_data / "eve_atlas"),
                                   "-o", str(out)]) == 0
        maps.add(sitk.GetArrayFromImage(sitk.ReadImage(str(out))).tobytes())
        tfms.add((tmp_path / f"r{i}.tfm").read_text())
    assert len(maps) == 1 and len(tfms) == 1
    q = json.loads((tmp_path / "r0.json").read_text())
    assert q["skull_stripped"] and q["skull_stripped_detected"] and q["warnings"] == []
    # the rest of the brain mask is CSF; the labels cover (almost all) the WM and nothing else
    assert 0 < q["wm_ml"] + q["gm_ml"] < q["brain_ml"] and 0.25 <= q["wm_brain_ratio"] <= 0.5
    assert 0.9 * q["wm_ml"] <= q["labelled_ml"] <= q["wm_ml"]
    assert abs(q["wm_ml"] / q["brain_ml"] - q["wm_brain_ratio"]) < 1e-3


def test_interrupted_run_leaves_nothing_and_rerun_works(small_brain, shared_data, tmp_path, monkeypatch, capsys):
    from nnunet_wmhloc.atlas import label_outputs, region_labels
    out = tmp_path / "sub.nii.gz"
    argv = ["--t1", str(small_brain), "--atlas-dir", str(shared_data / "eve_atlas"), "-o", str(out)]

    def interrupted(*a, **k):  # Ctrl-C while the QC image is drawn (the slow part, after the .tfm)
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(label_outputs, "qc_png", interrupted)
        assert region_labels.main(argv) == 130  # cli.run: "error: interrupted"
    assert not any(tmp_path.iterdir())  # no .tfm, no temporary folder
    assert region_labels.main(argv) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub.json", "sub.nii.gz", "sub.tfm", "sub_qc.png"]
    # an older interruption between the final moves: our JSON (and .tfm) without the label map
    out.unlink()
    assert region_labels.main(argv) == 0 and out.is_file()
    # but a user's own file of that name is never replaced without --overwrite
    out.unlink()
    (tmp_path / "sub.json").write_text('{"mine": 1}')
    capsys.readouterr()
    assert region_labels.main(argv) == 1
    assert "already exists (use --overwrite" in capsys.readouterr().err
    assert (tmp_path / "sub.json").read_text() == '{"mine": 1}'


def test_wm_brain_ratio_warning(small_brain, shared_data, tmp_path):
    """A --wm-mask that swallows the GM too: the record and the command warn."""
    t1 = sitk.ReadImage(str(small_brain))
    wm = sitk.BinaryDilate(array_to_image(_wm(t1).astype(np.uint8), t1), [2, 2, 2])
    sitk.WriteImage(wm, str(tmp_path / "wm.nii.gz"))
    r = run("--t1", small_brain, "--wm-mask", tmp_path / "wm.nii.gz", "--atlas-dir", shared_data / "eve_atlas",
            "-o", tmp_path / "w.nii.gz")
    assert r.returncode == 0, r.stderr
    q = json.loads((tmp_path / "w.json").read_text())
    assert q["wm_brain_ratio"] > 0.5 and "WM/brain volume ratio" in q["warnings"][0]
    assert "warning:" in r.stderr and "WM/brain volume ratio" in r.stderr


# ------------------------------- a challenge tree: region labels feed the converter directly (issue 19)
def _challenge_tree(t1_path, root, ids=(("training", "1"), ("training", "3"), ("test", "5"))):
    """A release in the challenge's layout (<split>/Utrecht/<id>/pre/{T1,FLAIR}.nii.gz, wmh.nii.gz, and the
    unprocessed orig/ beside pre/) made of one real brain shifted a little per subject."""
    img = sitk.ReadImage(str(t1_path))
    for k, (split, sid) in enumerate(ids):
        d = root / split / "Utrecht" / sid
        (d / "pre").mkdir(parents=True)
        (d / "orig").mkdir()
        moved = sitk.Image(img)
        moved.SetOrigin([o + 2.0 * k for o in img.GetOrigin()])
        for name in ("T1", "FLAIR"):
            sitk.WriteImage(moved, str(d / "pre" / f"{name}.nii.gz"))
        sitk.WriteImage(sitk.BinShrink(moved, [2, 2, 2]), str(d / "orig" / "T1.nii.gz"))  # another grid
        wmh = np.zeros(sitk.GetArrayViewFromImage(img).shape, np.uint8)
        wmh[40:44, 50:54, 40:44] = 1
        sitk.WriteImage(array_to_image(wmh, moved), str(d / "wmh.nii.gz"))
    return root


def test_region_labels_of_a_release_feed_the_converter(small_brain, shared_data, tmp_path):
    """wmhloc_region_labels --input <release> names its maps by the one subject id (1 -> wmh001), and
    wmhloc_convert_wmh2017 --region-labels <that folder> builds the region dataset from them."""
    from nnunet_wmhloc.atlas.cohort_labels import region_labels_cohort
    from nnunet_wmhloc.dataset_conversion.wmh2017 import convert

    rel = _challenge_tree(small_brain, tmp_path / "release")
    labels = region_labels_cohort(rel, shared_data / "eve_atlas", tmp_path / "labels")
    assert labels.failed == [] and sorted(labels.outputs) == ["wmh001", "wmh003", "wmh005"]
    assert sorted(p.name for p in (tmp_path / "labels").glob("*.nii.gz")) == \
        ["wmh001.nii.gz", "wmh003.nii.gz", "wmh005.nii.gz"]
    rows = {r["subject"]: r for r in csv.DictReader(open(labels.summary))}
    assert rows["wmh003"]["t1"] == str(rel / "training/Utrecht/3/pre/T1.nii.gz")  # pre/, never orig/
    out = convert(rel, output=tmp_path / "raw", region_labels=tmp_path / "labels", preprocessed=tmp_path / "pre",
                  log=lambda *a: None)
    reg = out["region"]
    assert reg["missing"] == [] and reg["train_cases"] == 4 and reg["test_cases"] == 2
    assert sorted(r["subject"] for r in reg["subjects"]) == ["wmh001", "wmh003", "wmh005"]
    for sid, sub in (("wmh001", "labelsTr"), ("wmh005", "labelsTs")):
        ours = sitk.GetArrayFromImage(sitk.ReadImage(str(reg["folder"] / sub / f"{sid}_t1.nii.gz")))
        assert (ours > 0).sum() > 10_000
        np.testing.assert_array_equal(ours, sitk.GetArrayFromImage(sitk.ReadImage(str(labels.outputs[sid]))))
    assert (tmp_path / "pre" / reg["folder"].name / "splits_final.json").is_file()


def test_region_maps_found_by_subject_id(tmp_path):
    """The authors' WMH_12, a bare 12 and our wmh012 are one subject; two maps of one subject are an error."""
    from nnunet_wmhloc.dataset_conversion.wmh2017 import find_region_maps
    from nnunet_wmhloc.io import WMHLocError

    for name in ("Train/WMH_12.nii.gz", "Test/7.nii.gz", "x/wmh020.nii.gz", "x/wmh020_brainmask.nii.gz"):
        (tmp_path / "m" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "m" / name).write_bytes(b"")
    maps = find_region_maps(tmp_path / "m")
    assert {k: v.name for k, v in maps.items()} == {"wmh012": "WMH_12.nii.gz", "wmh007": "7.nii.gz",
                                                    "wmh020": "wmh020.nii.gz"}
    (tmp_path / "m" / "x" / "wmh012.nii.gz").write_bytes(b"")
    with pytest.raises(WMHLocError, match="second region map for subject wmh012"):
        find_region_maps(tmp_path / "m")
