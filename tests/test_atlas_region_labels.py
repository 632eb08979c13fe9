"""wmhloc_region_labels end to end on a challenge-like synthetic subject, and its failure modes."""
import csv
import json
import subprocess

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_wmhloc.atlas import _atlas, _synthetic


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


def run(*args):
    return subprocess.run(["wmhloc_region_labels", *map(str, args)], capture_output=True, text=True,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "2"})


def region_dice(pred, truth, domain):
    out = []
    for r in range(1, 35):
        a, b = (pred == r) & domain, (truth == r) & domain
        if b.sum() + a.sum():
            out.append(2 * (a & b).sum() / (a.sum() + b.sum()))
    return np.array(out)


def test_synthetic_subject_end_to_end(subject, atlas_dir, tmp_path):
    out = tmp_path / "sub_regions.nii.gz"
    r = run("--t1", subject / "T1.nii.gz", "--atlas-dir", atlas_dir, "--output", out)
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
    assert r.returncode == 1 and "cube.nii.gz: subject WM is" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not any(p.name.startswith("o.") or p.name.startswith("o_") for p in tmp_path.iterdir())


def test_cohort_csv_reports_failures_and_keeps_the_good(subject, atlas_dir, tmp_path):
    csv_path = tmp_path / "cohort.csv"
    csv_path.write_text(f"subject,t1\nsynA,{subject / 'T1.nii.gz'}\nghost,{tmp_path / 'nope.nii.gz'}\n")
    out = tmp_path / "labels"
    r = run("--input", csv_path, "--atlas-dir", atlas_dir, "--output", out, "--workers", "1")
    assert r.returncode == 1 and "nope.nii.gz: T1 not found" in r.stderr
    assert (out / "synA.nii.gz").is_file() and (out / "synA.tfm").is_file()
    assert not (out / "ghost.nii.gz").exists()
    rows = {row["subject"]: row for row in csv.DictReader(open(out / "region_labels_summary.csv"))}
    assert rows["synA"]["status"] == "ok" and rows["ghost"]["status"] == "failed"
    bad = tmp_path / "bad.csv"
    bad.write_text("id,t1\nx,y\n")
    r = run("--input", bad, "--atlas-dir", atlas_dir, "--output", tmp_path / "l2")
    assert r.returncode == 1 and "missing column(s) subject" in r.stderr
