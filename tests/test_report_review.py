"""The report a researcher reads: figures legible at the width the page shows them, captions that say what is
plotted, reviewer warnings (regions never predicted, loads far from the reference, lesion volume outside WM),
stated conventions; on the demo, and wmhloc_predict --models reproducing the demo's figures."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from browser import figure_problems, find_chromium, render

needs_chromium = pytest.mark.skipif(find_chromium() is None, reason="chromium, chromium-driver or selenium missing")


def _csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _script(name: str) -> str:
    p = Path(sys.executable).parent / name
    return str(p) if p.exists() else name


# ----------------------------------------------------------------------------------------- conventions, warnings
def test_mostly_left_needs_the_stated_share():
    from nnunet_wmhloc.postprocessing.cluster import SIDE_SHARE, _side

    loads = np.zeros((4, 34))
    loads[:, 0] = [55, 60, 40, 50]   # region 1, left
    loads[:, 17] = [45, 40, 60, 50]  # region 18, right
    assert SIDE_SHARE == 0.6
    assert list(_side(loads)) == ["balanced", "left", "right", "balanced"]


def test_load_and_outside_warnings_at_their_thresholds():
    from nnunet_wmhloc.pipeline.review import load_warning, outside_warning

    assert load_warning(200, 100) == "" and load_warning(50, 100) == ""
    assert "2.01×" in load_warning(201, 100) and "0.49×" in load_warning(49, 100)
    assert load_warning(0, 0) == "" and "reference has no lesion" in load_warning(5, 0)
    assert outside_warning({"total_mm3": 100, "outside_mm3": 25}) == ""
    assert "26 %" in outside_warning({"total_mm3": 100, "outside_mm3": 26})


def test_review_of_a_hand_made_run(tmp_path):
    """Stage warnings from a done-marker, a load 3× the reference, and region labels no map holds."""
    from test_pipeline_units import _tiny_run

    from nnunet_wmhloc.io import write_csv
    from nnunet_wmhloc.pipeline.review import cohort_review

    run, tables = _tiny_run(tmp_path / "run")
    # the tiny run's region "segmentations": its regional maps (labels 3/4 and 20)
    (run.segmentations("region")).mkdir(parents=True)
    for s in ("s1", "s2"):
        (run.segmentations("region") / f"{s}.nii.gz").write_bytes((run.regional_maps / f"{s}.nii.gz").read_bytes())
    run.reference_loads.parent.mkdir(parents=True, exist_ok=True)
    write_csv([{"subject": "s1", "total_mm3": 50}, {"subject": "s2", "total_mm3": 150}], run.reference_loads)
    run.stages.mkdir(parents=True, exist_ok=True)
    run.marker("atlas").write_text(json.dumps({"summary": {"warnings": {"s2": ["registration: NCC 0.2"]}}}))
    got = cohort_review(run, tables.loads)
    assert got["never_predicted"] == [lab for lab in range(1, 37) if lab not in (3, 4, 20)]
    assert "3.00×" in got["subjects"]["s1"][0] and len(got["subjects"]["s1"]) == 1
    assert got["subjects"]["s2"] == ["atlas: registration: NCC 0.2"]
    assert "33 region(s) never predicted" in got["text"][0]


# ----------------------------------------------------------------------------------------- legibility
def _small_text_figure(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nnunet_wmhloc.pipeline.figtext import save_figure

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot([0, 1], [0, 1])
    ax.set_xlabel("tiny", fontsize=6)
    save_figure(fig, path, 1100)


@needs_chromium
def test_browser_checks_figure_text_and_captions(tmp_path):
    """A hand-made report: every figure's text is >= 9 pt at its displayed width and has a caption; then a
    copy with one figure replaced by one with 6 pt text and a caption turned into a file name: both caught."""
    from test_pipeline_units import _tiny_run

    from nnunet_wmhloc.pipeline.report import build_report

    run, tables = _tiny_run(tmp_path / "run")
    html = build_report(run.root, tables, title="Tiny report", images=run.images, settings={"device": "cpu"})
    seen = render(html, tmp_path / "shot.png")
    assert len(seen["images"]) == 3
    assert figure_problems(html.parent, seen["images"]) == []

    bad = tmp_path / "bad"
    import shutil

    shutil.copytree(html.parent, bad)
    _small_text_figure(bad / "figures" / "cohort_loads.png")
    text = (bad / "report.html").read_text(encoding="utf-8")
    start = text.index("<figcaption>", text.index("subject_s1.png")) + len("<figcaption>")
    text = text[:start] + "subject s1" + text[text.index("</figcaption>", start):]
    (bad / "report.html").write_text(text, encoding="utf-8")
    problems = figure_problems(bad, render(bad / "report.html", tmp_path / "bad.png")["images"])
    assert len(problems) == 2
    assert problems[0].startswith("figures/cohort_loads.png: smallest text 6.0 pt")
    assert problems[1].startswith("figures/subject_s1.png: caption")


# ----------------------------------------------------------------------------------------- the demo
@needs_chromium
def test_demo_report_figures_legible_and_captioned(demo, tmp_path):
    html = demo["out"] / "report" / "report.html"
    seen = render(html, tmp_path / "shot.png")
    assert len(seen["images"]) > 10
    assert figure_problems(html.parent, seen["images"]) == []


def test_demo_report_flags_never_predicted_regions_and_far_loads(demo):
    """Against the demo's own tables: every region no predicted region map holds is named (and scores Dice 0
    in every scored subject); every subject whose predicted load is off by more than 2x is flagged in its
    section of the report, and no other subject has a load warning."""
    import SimpleITK as sitk

    from nnunet_wmhloc.vocab import REGION_NAMES

    out = demo["out"]
    html = (out / "report" / "report.html").read_text(encoding="utf-8")
    loads = {r["subject"]: float(r["total_mm3"]) for r in _csv(out / "localize" / "regional_loads.csv")}
    ref = {r["subject"]: float(r["total_mm3"]) for r in _csv(out / "localize" / "reference" / "regional_loads.csv")}
    seen = np.zeros(37, bool)
    for p in (out / "segmentations" / "region").glob("*.nii.gz"):
        seen[np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(p))))] = True
    never = [lab for lab in range(1, 37) if not seen[lab]]
    # the evaluation agrees: a region never predicted scores Dice 0 (or none) in every scored subject
    from nnunet_wmhloc.vocab import region_column

    cases = _csv(out / "evaluation" / "region_fused" / "cases.csv")
    assert len(cases) == 9  # one test subject has no reference region map
    for lab in never:
        assert all(float(c[region_column(lab)] or 0) == 0 for c in cases if c[region_column(lab)] not in ("nan",)), lab
    if never:
        assert f"{len(never)} region(s) never predicted" in html
        for lab in never:
            assert f"{lab} {REGION_NAMES[lab]}" in html
    else:
        assert "never predicted" not in html
    far = sorted(s for s in loads if s in ref and ref[s] > 0 and not 0.5 <= loads[s] / ref[s] <= 2)
    sections = {part.split("'", 1)[0]: part for part in html.split("<h3 id='subject-")[1:]}
    assert sorted(sections) == sorted(loads)
    flagged = sorted(s for s, text in sections.items() if "× the reference" in text)
    assert flagged == far
    for s in far:
        assert f"{loads[s] / ref[s]:.2f}× the reference" in sections[s]
    print(f"never predicted: {never}; loads off by > 2x: {far}")


def _demo_cohort(out: Path, tmp: Path) -> Path:
    """The demo's test subjects (those it predicted) as a CSV cohort of their nnU-Net test images."""
    raw = next((out / "nnunet" / "nnUNet_raw").glob("Dataset*_WMHLesion"))
    subjects = sorted(p.name[:-len(".nii.gz")] for p in (out / "segmentations" / "lesion").glob("*.nii.gz"))
    lines = ["subject,flair,t1"] + [f"{s},{raw / 'imagesTs' / f'{s}_flair_0000.nii.gz'},"
                                    f"{raw / 'imagesTs' / f'{s}_t1_0000.nii.gz'}" for s in subjects]
    (tmp / "cohort.csv").write_text("\n".join(lines) + "\n")
    return tmp / "cohort.csv"


def test_exported_demo_models_reproduce_the_report(demo, tmp_path):
    """wmhloc_export_models on the demo, then wmhloc_predict --models on its test subjects with the archive's
    recorded test-time-mirroring setting: the same lesions and regional loads as the demo's report."""
    out = demo["out"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    zip_ = tmp_path / "demo_models.zip"
    p = subprocess.run([_script("wmhloc_export_models"), out, "-o", zip_], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    import zipfile

    with zipfile.ZipFile(zip_) as z:
        manifest = json.loads(z.read("wmhloc_manifest.json"))
    settings = json.loads((out / "stages" / "predict.done").read_text())["settings"]
    assert manifest["prediction"]["test_time_mirroring"] == settings["tta"]
    pred = tmp_path / "pred"
    p = subprocess.run([_script("wmhloc_predict"), _demo_cohort(out, tmp_path), "-o", pred, "--models", zip_,
                        "--device", "cpu"], capture_output=True, text=True, env=env, timeout=1800)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert json.loads((pred / "stages" / "predict.done").read_text())["settings"]["tta"] == settings["tta"]
    ours, theirs = _csv(pred / "results" / "regional_loads.csv"), _csv(out / "report" / "tables" / "regional_loads.csv")
    # the demo's location columns come from its atlas (location stage); this prediction has no --atlas-dir
    from nnunet_wmhloc.postprocessing.loads import LOCATION_COLUMNS

    cols = [c for c in theirs[0] if (c.endswith("_mm3") or c == "n_lesions") and c not in LOCATION_COLUMNS]
    assert {r["subject"]: [r[c] for c in cols] for r in ours} == {r["subject"]: [r[c] for c in cols] for r in theirs}
    census = ["subject", "voxels", "volume_mm3", "centroid_lps_x_mm", "main_region"]
    key = lambda rows: sorted([r[c] for c in census] for r in rows)  # noqa: E731
    assert key(_csv(pred / "results" / "lesions.csv")) == key(_csv(out / "report" / "tables" / "lesions.csv"))
