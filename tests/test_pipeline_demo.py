"""End to end: `wmhloc_run --demo` once per test run (conftest's `demo`: synthetic cohort, real tiny nnU-Net
trainings on the CPU, started in the background at the first test), then its outputs, its resumption, `--force`,
failures naming their stage, and `wmhloc_predict` with the demo's models on a new cohort."""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from browser import CDN_STYLESHEET, break_report, find_chromium, render
from conftest import DEMO_ARGS

STAGES = ["synth", "convert", "preprocess", "train_lesion", "train_region", "choose", "predict", "fuse", "localize",
          "location", "model_free", "cluster", "evaluate", "report"]
DEMO_ONLY = ("synth", "model_free")  # the stages only --demo runs


def _run(args, timeout=1800, env=None):
    env = dict(os.environ if env is None else env)
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env)


def _in_process(command: str, args, capfd) -> subprocess.CompletedProcess:
    """A command's main(argv) in this process, where the subprocess is not what a test tests (it saves an
    interpreter start and its imports): its exit code and output, as _run gives them."""
    import importlib

    from hostile_common import MODULES

    capfd.readouterr()
    code = importlib.import_module(MODULES[command]).main([str(a) for a in args])
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess([command, *map(str, args)], code or 0, out, err)


def _script(name: str) -> str:
    """The console script beside this interpreter (the venv's bin), else on PATH."""
    p = Path(sys.executable).parent / name
    return str(p) if p.exists() else name


# the tests that read the demo's report and outputs and the two that run stages on them again (--force cluster
# rewrites the report): one xdist worker, in this order
DEMO_FOLDER = pytest.mark.same_worker("demo_outputs")


def _csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.hrefs, self.other = [], [], []

    def handle_starttag(self, tag, attrs):
        d = dict(attrs)
        if tag == "img":
            self.imgs.append(d.get("src", ""))
        if tag == "a" and "href" in d:
            self.hrefs.append(d["href"])
        for k, v in attrs:
            if k in ("src", "href") and tag not in ("img", "a"):
                self.other.append(v)


def check_report_offline(html_path: Path) -> _Links:
    """The report parses, every image and link is a local file of the report folder (or a data URI) and
    nothing points to the network."""
    text = html_path.read_text(encoding="utf-8")
    parser = _Links()
    parser.feed(text)
    parser.close()
    assert "http://" not in text and "https://" not in text and "<script" not in text.lower()
    for src in parser.imgs + parser.hrefs + parser.other:
        if src.startswith("data:") or src.startswith("#"):
            continue
        assert not src.startswith("/") and "://" not in src, src
        assert (html_path.parent / src).is_file(), f"{src} missing"
    return parser


def _png_has_content(path: Path) -> bool:
    import matplotlib.image as mpimg

    a = mpimg.imread(str(path))
    return a.ndim == 3 and a.shape[0] > 100 and a.shape[1] > 100 and float(a[..., :3].std()) > 0.02


@DEMO_FOLDER
def test_demo_report_and_outputs(demo):
    out = demo["out"]
    for s in STAGES:
        assert (out / "stages" / f"{s}.done").is_file(), s
        assert (out / "logs" / f"{s}.log").is_file(), s
    # the demo's own atlas (synth.write_demo_atlas): the location stage located every test subject's predicted
    # lesions, and the report has the location section
    assert (out / "demo_atlas" / "atlas.json").is_file()
    located = _csv(out / "location" / "location_loads.csv")
    assert len(located) == 10 and all(r["location_note"] == "" for r in located)
    assert "id='location'" in (out / "report" / "report.html").read_text()
    # the figures come from a real training: nnU-Net's own log and checkpoints are there
    train_log = (out / "logs" / "train_lesion.log").read_text()
    assert "$ nnUNetv2_train 601 2d 0 -tr nnUNetTrainerWMHLoc_" in train_log and "Epoch time" in train_log
    ckpts = list((out / "nnunet" / "nnUNet_results").glob("Dataset60[12]_*/*__nnUNetPlans__2d/fold_0/checkpoint_final.pth"))
    assert len(ckpts) == 2
    # one row of regional loads per test subject (synthetic: 5 sites x 2), numbers consistent
    rows = _csv(out / "localize" / "regional_loads.csv")
    subjects = sorted(p.name[:-len(".nii.gz")] for p in (out / "segmentations" / "lesion").glob("*.nii.gz"))
    assert sorted(r["subject"] for r in rows) == subjects and len(subjects) == 10
    for r in rows:
        region_sum = sum(float(v) for k, v in r.items() if k[:1] == "r" and k[1:3].isdigit() and k.endswith("_mm3"))
        assert math.isclose(region_sum + float(r["outside_mm3"]), float(r["total_mm3"]), rel_tol=1e-6, abs_tol=1e-6)
    assert sum(float(r["total_mm3"]) > 0 for r in rows) >= 3
    # evaluation against labelsTs: FLAIR, T1 and fused, and the comparison
    for task in ("lesion", "region"):
        for setting in ("flair", "t1", "fused"):
            summ = json.loads((out / "evaluation" / f"{task}_{setting}" / "summary.json").read_text())
            assert summ["task"] == task and summ["n_cases"] >= 9
        assert (out / "evaluation" / f"compare_{task}" / "table.csv").is_file()
    fused = json.loads((out / "evaluation" / "lesion_fused" / "summary.json").read_text())
    dice = fused["summary"]["all"]["dice"]["mean"]
    assert dice is not None and dice > 0.1, f"the tiny lesion model learned nothing (Dice {dice})"
    # the region model learned the regions (an untrained 37-class model scores ~0.01; the 12-epoch test budget of
    # conftest.DEMO_TEST_EPOCHS well above that, `make demo`'s 45 epochs about 0.5) and tells left from right
    # (about 1% of the voxels in the wrong hemisphere; 53% before it knew laterality)
    region = json.loads((out / "evaluation" / "region_fused" / "summary.json").read_text())["summary"]["all"]
    rdice, wrong = region["mean_dice_wm"]["mean"], region["wrong_hemisphere"]["mean"]
    assert rdice is not None and rdice >= 0.08, f"region Dice {rdice}"
    assert wrong is not None and wrong < 0.05, f"{wrong:.1%} of the region voxels in the wrong hemisphere"
    # the region map of the subject without one is predicted but not scored
    assert "wmh173" in json.loads((out / "stages" / "evaluate.done").read_text())["summary"]["region"]["unscored_subjects"]

    html = out / "report" / "report.html"
    links = check_report_offline(html)
    figs = [out / "report" / s for s in links.imgs]
    names = {f.name for f in figs}
    assert {f"subject_{s}.png" for s in subjects} <= names
    assert {"cluster_silhouette.png", "cluster_heatmap.png", "cohort_loads.png", "lesion_violin_sites_dice.png",
            "region_violin_regions.png"} <= names
    for f in figs:
        assert _png_has_content(f), f
    text = html.read_text()
    assert "groups.csv" in text and "regional_loads.csv" in text and "Wilcoxon" in text
    assert {"lesion_frequency_atlas.png", "model_free_lesion_frequency_atlas.png"} <= names


@DEMO_FOLDER
def test_demo_model_free_run(demo):
    """The demo's second, model-free run (wmhloc_predict's --lesions csv --regions atlas functions) on the test
    subjects' reference masks: its maps, loads and location classes in model_free/, its time in the report."""
    out = demo["out"]
    mf = out / "model_free"
    summary = json.loads((mf / "model_free.json").read_text())
    assert summary["seconds"] > 0 and len(summary["subjects"]) == 10
    marker = json.loads((out / "stages" / "model_free.done").read_text())["summary"]
    assert marker["seconds"] == summary["seconds"] and marker["located"] == 10 and marker["lesion_maps"] == 10
    for task in ("lesion", "region"):
        assert sorted(p.name[:-7] for p in (mf / "segmentations" / task).glob("*.nii.gz")) == summary["subjects"]
    rows = {r["subject"]: r for r in _csv(mf / "localize" / "regional_loads.csv")}
    # its lesions are the reference masks: the same volumes as the demo's reference loads
    ref = {r["subject"]: r for r in _csv(out / "localize" / "reference" / "regional_loads.csv")}
    assert sorted(rows) == sorted(ref) == summary["subjects"]
    for s, r in rows.items():
        assert math.isclose(float(r["total_mm3"]), float(ref[s]["total_mm3"]), rel_tol=1e-6, abs_tol=1e-6), s
    # and the atlas regions cover them: lesion volume in the regions > 0, nearly all of it
    inside = {s: float(r["total_mm3"]) - float(r["outside_mm3"]) for s, r in rows.items()}
    total = sum(float(r["total_mm3"]) for r in rows.values())
    assert all(v > 0 for s, v in inside.items() if float(rows[s]["total_mm3"]) > 0) and sum(inside.values()) > 0.9 * total
    located = _csv(mf / "location" / "location_loads.csv")
    assert len(located) == 10 and all(float(r["periventricular_mm3"]) + float(r["deep_mm3"])
                                      + float(r["infratentorial_mm3"]) > 0 for r in located)
    text = (out / "report" / "report.html").read_text()
    assert "id='model-free'" in text and f"{summary['seconds']:.1f} s" in text
    assert "tables/model_free_regional_loads.csv" in text


@DEMO_FOLDER
def test_demo_rerun_skips_finished_stages(demo, capfd):
    out = demo["out"]
    before = {s: (out / "stages" / f"{s}.done").stat().st_mtime_ns for s in STAGES}
    logs = {s: (out / "logs" / f"{s}.log").stat().st_mtime_ns for s in STAGES}
    p = _in_process("wmhloc_run", [*DEMO_ARGS, "-o", out], capfd)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("done, skipped") == len(STAGES)
    assert before == {s: (out / "stages" / f"{s}.done").stat().st_mtime_ns for s in STAGES}
    assert logs == {s: (out / "logs" / f"{s}.log").stat().st_mtime_ns for s in STAGES}


@DEMO_FOLDER
def test_demo_force_cluster_redoes_it_and_later_stages(demo, capfd):
    out = demo["out"]
    before = {s: (out / "stages" / f"{s}.done").stat().st_mtime_ns for s in STAGES}
    p = _in_process("wmhloc_run", [*DEMO_ARGS, "-o", out, "--force", "cluster"], capfd)
    assert p.returncode == 0, p.stderr
    after = {s: (out / "stages" / f"{s}.done").stat().st_mtime_ns for s in STAGES}
    i = STAGES.index("cluster")
    assert all(after[s] == before[s] for s in STAGES[:i])
    assert all(after[s] > before[s] for s in STAGES[i:])
    assert p.stdout.count("done, skipped") == i
    assert "K=" in (out / "logs" / "cluster.log").read_text()  # the cluster function ran in the stage
    check_report_offline(out / "report" / "report.html")


def test_bad_dataset_id_stops_at_convert(demo, tmp_path, capfd):
    """No dataset with that id in the nnU-Net root: the convert stage fails and says so."""
    root = tmp_path / "nnunet"
    shutil.copytree(demo["out"] / "nnunet" / "nnUNet_raw", root / "nnUNet_raw")
    p = _in_process("wmhloc_run", ["-o", tmp_path / "run", "--nnunet-root", root, "--lesion-id", "777", "--quick",
                                   "--device", "cpu"], capfd)
    assert p.returncode == 1
    err = p.stderr.strip().splitlines()[-1]
    assert err.startswith("error: stage 'convert' failed:") and "Dataset777_*" in err
    assert str(tmp_path / "run" / "logs" / "convert.log") in err
    assert not (tmp_path / "run" / "stages" / "convert.done").exists()


def test_corrupted_image_stops_at_convert(demo, tmp_path, capfd):
    rel = tmp_path / "release"
    shutil.copytree(demo["out"] / "synthetic", rel)
    bad = sorted(rel.glob("training/Utrecht/*/pre/FLAIR.nii.gz"))[0]
    bad.write_bytes(bad.read_bytes()[:300])  # truncated download
    p = _in_process("wmhloc_run", ["--release", rel, "--region-labels", rel / "region_labels", "-o",
                                   tmp_path / "run", "--quick", "--device", "cpu"], capfd)
    assert p.returncode == 1
    err = p.stderr.strip().splitlines()[-1]
    assert err.startswith("error: stage 'convert' failed:") and str(bad) in err and "convert.log" in err


def _model(demo, task):
    """The model folder the demo's training stage wrote (its done-marker says which)."""
    return Path(json.loads((demo["out"] / "stages" / f"train_{task}.done").read_text())["summary"]["model"])


def _new_cohort(tmp_path) -> Path:
    """Four new synthetic subjects (another seed) as a CSV manifest; lesion masks of three as references."""
    from nnunet_wmhloc.synth import make_cohort

    src = tmp_path / "src"
    make_cohort(src, seed=7, per_site=1, test_per_site=1, show_progress=False)
    folders = sorted(p.parent for p in src.glob("test/**/wmh.nii.gz"))[:4]
    lines = ["subject,flair,t1,lesion,site"]
    for i, f in enumerate(folders):
        les = f / "wmh.nii.gz" if i < 3 else ""
        lines.append(f"new{i},{f / 'pre' / 'FLAIR.nii.gz'},{f / 'pre' / 'T1.nii.gz'},{les},{f.parent.name}")
    (tmp_path / "cohort.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "cohort.csv"


PREDICT_ARGS = ["--device", "cpu", "--disable-tta"]


@pytest.fixture(scope="module")
def predicted(demo, tmp_path_factory) -> Path:
    """wmhloc_predict with the demo's models on _new_cohort, in local processes: its output folder."""
    tmp = tmp_path_factory.mktemp("predict_new")
    out = tmp / "pred"
    p = _run([_script("wmhloc_predict"), _new_cohort(tmp), "-o", out, "--lesion-model", _model(demo, "lesion"),
              "--region-model", _model(demo, "region"), *PREDICT_ARGS], timeout=900)
    assert p.returncode == 0, f"{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
    return out


def test_predict_new_cohort(predicted):
    out = predicted
    subjects = [f"new{i}" for i in range(4)]
    for task in ("lesion", "region"):
        assert sorted(x.name for x in (out / "segmentations" / task).glob("*.nii.gz")) == \
            [f"{s}.nii.gz" for s in subjects]
        assert len(list((out / "predictions" / task).glob("*.npz"))) == 8  # FLAIR and T1 of each
    rows = _csv(out / "localize" / "regional_loads.csv")
    assert [r["subject"] for r in rows] == subjects
    # lesion maps are the model's: loads match the fused segmentation read back
    import SimpleITK as sitk

    img = sitk.ReadImage(str(out / "segmentations" / "lesion" / "new0.nii.gz"))
    vox = float(np.prod(img.GetSpacing()))
    assert math.isclose(float(rows[0]["total_mm3"]), (sitk.GetArrayFromImage(img) == 1).sum() * vox, rel_tol=1e-6)
    ev = json.loads((out / "evaluation" / "lesion_fused" / "summary.json").read_text())
    assert ev["n_cases"] == 3  # only the subjects with a mask in the CSV
    assert (out / "localize" / "reference" / "regional_loads.csv").is_file()
    n_les = sum(float(r["wm_mm3"]) > 0 for r in rows)
    cluster = json.loads((out / "stages" / "cluster.done").read_text())["summary"]
    assert ("skipped" in cluster) == (n_les < 3)
    check_report_offline(out / "report" / "report.html")
    assert "new3" in (out / "report" / "report.html").read_text()


def test_predict_corrupted_model_names_stage(demo, tmp_path, capfd):
    """A truncated checkpoint: refused by our restricted load before nnU-Net starts, and the predict stage
    says so, naming the file."""
    model = tmp_path / "model"
    src = _model(demo, "lesion")
    (model / "fold_0").mkdir(parents=True)
    for f in ("plans.json", "dataset.json"):
        shutil.copy(src / f, model / f)
    (model / "fold_0" / "checkpoint_final.pth").write_bytes((src / "fold_0" / "checkpoint_final.pth").read_bytes()[:5000])
    cohort = _new_cohort(tmp_path)
    p = _in_process("wmhloc_predict", [cohort, "-o", tmp_path / "pred", "--lesion-model", model,
                                       "--region-model", _model(demo, "region"), "--device", "cpu"], capfd)
    assert p.returncode == 1
    err = p.stderr.strip().splitlines()[-1]
    assert err.startswith("error: stage 'predict' failed: ")
    assert "checkpoint_final.pth" in err and "predict.log" in err
    assert (tmp_path / "pred" / "stages" / "convert.done").is_file()
    assert not (tmp_path / "pred" / "stages" / "predict.done").exists()


# Real-browser checks of the report (headless Chromium, network cut off); a clone without chromium skips them.
needs_chromium = pytest.mark.skipif(find_chromium() is None, reason="chromium not installed (Debian: apt-get "
                                    "install chromium); the report's real-browser check is skipped")


def _not_loaded(seen: dict) -> list[str]:
    return [i["src"] for i in seen["images"] if not (i["complete"] and i["decoded"] and i["width"] > 0)]


@needs_chromium
@DEMO_FOLDER
def test_demo_report_renders_in_browser(demo, tmp_path):
    html = demo["out"] / "report" / "report.html"
    links = check_report_offline(html)
    assert len(links.imgs) > 10
    shot = tmp_path / "report_screenshot.png"
    seen = render(html, shot)
    assert seen["title"].strip() and seen["text_length"] > 500
    assert [i["src"] for i in seen["images"]] == links.imgs  # the browser saw every <img> of the file
    assert _not_loaded(seen) == []
    assert seen["remote"] == [], "the report asks for something off this machine"
    assert seen["failed"] == [] and seen["console_errors"] == []
    assert seen["height"] > 2000  # the figures take room: not a blank or collapsed page
    assert _png_has_content(shot), shot


@needs_chromium
@DEMO_FOLDER
def test_browser_check_detects_broken_report(demo, tmp_path):
    """The same check on a copy of the report with one figure deleted, one emptied (not an image any more: a
    truncated PNG still shows its top, so that is the file checks' job) and a CDN stylesheet added: each is
    caught, and only those."""
    rep = tmp_path / "report"
    imgs = check_report_offline(demo["out"] / "report" / "report.html").imgs
    gone, empty = break_report(demo["out"] / "report", rep, imgs)
    seen = render(rep / "report.html", tmp_path / "broken.png")
    assert sorted(_not_loaded(seen)) == sorted([gone, empty])
    assert seen["remote"] == [CDN_STYLESHEET]
    assert sorted(u for u, _ in seen["failed"]) == sorted([CDN_STYLESHEET, (rep / gone).as_uri()])
    assert len(seen["console_errors"]) >= 2


def test_predict_challenge_layout_folder(demo, tmp_path, capfd):
    """wmhloc_predict on a folder as the challenge ships it: <site>/<id>/pre/{FLAIR,T1}.nii.gz, wmh.nii.gz."""
    from nnunet_wmhloc.synth import make_cohort

    make_cohort(tmp_path / "rel", seed=11, per_site=1, test_per_site=1, show_progress=False)
    folder = tmp_path / "rel" / "test" / "Amsterdam"
    ids = sorted(f"wmh{int(p.parent.name):03d}" for p in folder.rglob("wmh.nii.gz"))
    out = tmp_path / "pred"
    p = _in_process("wmhloc_predict", [folder, "-o", out, "--lesion-model", _model(demo, "lesion"),
                                       "--region-model", _model(demo, "region"), "--device", "cpu", "--disable-tta"],
                    capfd)
    assert p.returncode == 0, f"{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
    assert len(ids) == 3
    for task in ("lesion", "region"):
        assert sorted(x.name[:-7] for x in (out / "segmentations" / task).glob("*.nii.gz")) == ids
    # each subject's wmh.nii.gz is its reference
    ev = json.loads((out / "evaluation" / "lesion_fused" / "summary.json").read_text())
    assert ev["n_cases"] == 3
    assert [r["subject"] for r in _csv(out / "localize" / "regional_loads.csv")] == ids
    check_report_offline(out / "report" / "report.html")


# ---------------------------------------------------------------------------------------- orientation
REGION_PAIRS = [(l, l + 17) for l in range(1, 18)] + [(35, 36)]


def _swap_lr(a: np.ndarray) -> np.ndarray:
    """Region labels with left and right exchanged."""
    lut = np.arange(256)
    for l, r in REGION_PAIRS:
        lut[l], lut[r] = r, l
    return lut[a].astype(a.dtype)


def _restore(img, arr: np.ndarray, direction, origin):
    import SimpleITK as sitk

    out = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    out.SetSpacing(img.GetSpacing())
    out.SetDirection(tuple(float(v) for v in np.ravel(direction)))
    out.SetOrigin(tuple(float(v) for v in origin))
    return out


def _stored_x_flipped(img):
    """The same physical image stored the other way along x (as dcm2niix's RAS files are, vs LPS)."""
    d = np.array(img.GetDirection()).reshape(3, 3)
    d[:, 0] *= -1
    import SimpleITK as sitk

    return _restore(img, sitk.GetArrayFromImage(img)[:, :, ::-1], d,
                    img.TransformIndexToPhysicalPoint((img.GetSize()[0] - 1, 0, 0)))


def _mirrored_brain(img):
    """A different, mirror-image brain: the array flipped along x on the same grid."""
    import SimpleITK as sitk

    return _restore(img, sitk.GetArrayFromImage(img)[:, :, ::-1], img.GetDirection(), img.GetOrigin())


def test_predictions_do_not_depend_on_storage_orientation(demo, tmp_path):
    """One test subject stored as it is (LPS axial), flipped along x with its geometry adjusted (RAS, as from
    dcm2niix), and in coronal slice order: wmhloc_predict gives the same lesion and region labels in physical
    space (exactly: nnU-Net reads all three as the same RAS array). A fourth copy is the mirror-image brain:
    its region map is the mirrored one with left and right swapped (the region network is symmetric)."""
    import SimpleITK as sitk

    from nnunet_wmhloc.pipeline import predict

    src = next((demo["out"] / "synthetic" / "test" / "Utrecht").iterdir())
    variants = {"orig": lambda i: i, "xflip": _stored_x_flipped, "coronal": lambda i: sitk.PermuteAxes(i, [0, 2, 1]),
                "mirror": _mirrored_brain}
    lines = ["subject,flair,t1"]
    for name, make in variants.items():
        for mod in ("FLAIR", "T1"):
            img = make(sitk.ReadImage(str(src / "pre" / f"{mod}.nii.gz")))
            sitk.WriteImage(img, str(tmp_path / f"{name}_{mod}.nii.gz"))
        lines.append(f"{name},{tmp_path / f'{name}_FLAIR.nii.gz'},{tmp_path / f'{name}_T1.nii.gz'}")
    (tmp_path / "cohort.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "pred"
    assert predict.main([str(tmp_path / "cohort.csv"), "-o", str(out), "--lesion-model", str(_model(demo, "lesion")),
                         "--region-model", str(_model(demo, "region")), "--device", "cpu", "--disable-tta",
                         "--quiet"]) == 0
    def agreement(x, y):  # over the voxels either map labels: background alone agrees trivially
        fg = (x > 0) | (y > 0)
        return float((x[fg] == y[fg]).mean())

    agree, orig = {}, {}
    for task in ("lesion", "region"):
        ref = sitk.ReadImage(str(out / "segmentations" / task / "orig.nii.gz"))
        a = orig[task] = sitk.GetArrayFromImage(ref)
        assert (a > 0).sum() > 50, task
        for name in ("xflip", "coronal"):
            img = sitk.ReadImage(str(out / "segmentations" / task / f"{name}.nii.gz"))
            assert img.GetDirection() != ref.GetDirection()  # written in the input's own orientation
            back = sitk.GetArrayFromImage(sitk.Resample(img, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
            agree[task, name] = agreement(back, a)
    m = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "segmentations" / "region" / "mirror.nii.gz")))[:, :, ::-1]
    agree["region", "mirror"] = agreement(_swap_lr(m), orig["region"])
    print(agree)
    for task in ("lesion", "region"):
        assert agree[task, "xflip"] == 1.0 and agree[task, "coronal"] >= 0.98, agree
    assert agree["region", "mirror"] >= 0.98, agree


def test_region_model_test_time_mirroring_is_symmetric(demo, monkeypatch):
    """The trained region model (through nnU-Net's own predictor, test-time mirroring on): the prediction of a
    mirrored image is the mirrored prediction with left and right labels swapped. The left-right axis is out of
    nnU-Net's test-time mirror axes (it would flip back without swapping) and the network is symmetric; with the
    symmetry switched off, the same model is not."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor

    from nnunet_wmhloc.env import nnunet_environ
    from nnunet_wmhloc.training.laterality import lr_symmetry, set_lr_symmetry, swap_permutation

    monkeypatch.setenv("nnUNet_extTrainer", os.pathsep.join(
        [nnunet_environ(None)["nnUNet_extTrainer"], str(demo["out"] / "nnunet" / "wmhloc_trainers")]))
    model = _model(demo, "region")
    ckpt = torch.load(model / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    p = nnUNetPredictor(use_mirroring=True, device=torch.device("cpu"), verbose=False, allow_tqdm=False)
    p.initialize_from_trained_model_folder(str(model), use_folds=(0,))
    axis, perm = lr_symmetry(p.network)
    assert axis == 1 and perm == swap_permutation(REGION_PAIRS, 37)  # 2d slices (y, x) of the RAS array: x
    assert axis not in (ckpt["inference_allowed_mirroring_axes"] or ()) and p.allowed_mirroring_axes == (0,)
    case = next((demo["out"] / "nnunet" / "nnUNet_raw" / "Dataset602_WMHRegion" / "imagesTs").glob("*_flair_0000.nii.gz"))
    data, _, _ = DefaultPreprocessor(verbose=False).run_case([str(case)], None, p.plans_manager,
                                                             p.configuration_manager, p.dataset_json)
    # one tile along x, padded evenly on both sides: nnU-Net's tiling itself is then symmetric
    px = p.configuration_manager.patch_size[1]
    sx = min(data.shape[-1], px)
    sx -= (px - sx) % 2
    x = torch.from_numpy(np.ascontiguousarray(data[..., :sx]))
    d = x.ndim - 1

    def check():
        y = p.predict_logits_from_preprocessed_data(x)
        ym = p.predict_logits_from_preprocessed_data(torch.flip(x, (d,)))
        expect = torch.flip(y, (d,))[perm]
        # nnU-Net sums the tiles' logits in float16: equal up to a rounding step at the logits' magnitude, so
        # the argmax may differ only where the two best classes are closer than that step
        step = 2 ** -8 * float(expect.abs().max())
        diff = float((ym - expect).abs().max()) / float(expect.abs().max())
        differ = ym.argmax(0) != expect.argmax(0)
        top2 = expect.topk(2, dim=0).values
        near_tie = (top2[0] - top2[1]) <= step
        return diff, float((~differ).float().mean()), bool((differ & ~near_tie).any())

    diff, same, real_change = check()
    print("symmetric", diff, same)
    assert diff < 2 ** -8 and not real_change, (diff, same)
    set_lr_symmetry(p.network, None, None)
    p.list_of_parameters = [{k: v for k, v in p.list_of_parameters[0].items() if "wmhloc_lr" not in k}]
    diff, same, real_change = check()
    print("plain", diff, same)
    assert diff > 0.05 and same < 0.999 and real_change, (diff, same)


def test_predict_on_dask_cluster_equals_local(demo, predicted, tmp_path):
    """wmhloc_predict --scheduler: a real `dask scheduler` and two `dask worker` processes on 127.0.0.1; each
    subject's cases go through each model as one task (nnU-Net as a subprocess of the worker). Label maps equal
    the local run's (`predicted`; each case is predicted on its own, so two of its subjects suffice), and both
    workers did work (from the per-subject records)."""
    import SimpleITK as sitk
    from dask_cluster import dask_cluster

    lines = _new_cohort(tmp_path).read_text().splitlines()
    cohort = tmp_path / "cohort2.csv"
    cohort.write_text("\n".join(lines[:3]) + "\n")  # new0, new1: 4 tasks for 2 workers
    subjects = ["new0", "new1"]
    out = tmp_path / "dask_out"
    with dask_cluster(tmp_path / "dask") as cl:
        p = _run([_script("wmhloc_predict"), cohort, "-o", out, "--lesion-model", _model(demo, "lesion"),
                  "--region-model", _model(demo, "region"), *PREDICT_ARGS, "--scheduler", cl.address], timeout=900)
        addresses = cl.addresses
    assert p.returncode == 0, f"{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
    workers = set()
    for task in ("lesion", "region"):
        for sub, names in (("predictions", [f"{s}_{m}" for s in subjects for m in ("flair", "t1")]),
                           ("segmentations", subjects)):
            assert sorted(x.name for x in (out / sub / task).glob("*.nii.gz")) == [f"{n}.nii.gz" for n in names]
            for n in names:
                a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(d / sub / task / f"{n}.nii.gz")))
                        for d in (predicted, out))
                assert np.array_equal(a, b), (sub, task, n)
        assert len(list((out / "predictions" / task).glob("*.npz"))) == 4
        for s in subjects:
            rec = json.loads((out / "predictions" / "records" / task / f"{s}.json").read_text())
            assert rec["status"] == "ok" and rec["worker"] in addresses and rec["software"] and rec["time"]
            assert rec["cases"] == [f"{s}_flair_0000.nii.gz", f"{s}_t1_0000.nii.gz"]
            workers.add(rec["worker"])
    assert workers == set(addresses)
    from nnunet_wmhloc.io import OWNER_MARKER

    assert not [q for q in (out / "predictions").rglob(".*") if q.name != OWNER_MARKER]

    # the loads downstream are the same (but for the columns naming the input files)
    def loads(folder):
        return [{k: v for k, v in r.items() if not k.endswith("_file")}
                for r in _csv(folder / "localize" / "regional_loads.csv") if r["subject"] in subjects]
    assert loads(out) == loads(predicted) and len(loads(out)) == 2
