"""wmhloc_predict with no trained model (`--lesions csv --regions atlas`), end to end on real brains nobody
here made (nilearn's ICBM152 2009a with lesions planted at known places), stored on a 1 mm grid (lesion
mask) and on a tilted 1x1x3 mm axial grid (lesion probability map): location columns against exact values
from the reference ventricles, planted classes, the location images; one-line errors."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_wmhloc import location as L
import location_common as C

pytest.importorskip("nilearn")
GRIDS = ("1mm", "axial3")
BIN = Path(sys.executable).parent


def run(*args, cwd=None):
    return subprocess.run([str(BIN / "wmhloc_predict"), *map(str, args)], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def cohort(shared_data, tmp_path_factory):
    icbm = C.icbm152()
    ref = C.icbm_reference(icbm, shared_data)
    labels, truth = C.plant(ref, np.random.default_rng(20))
    t1 = C.darken(icbm["t1"], labels, ref["gm"])
    gm, wm = (sitk.GetArrayFromImage(icbm[k]) for k in ("gm", "wm"))
    flair = C.as_image((80 * gm + 60 * wm + 90 * (labels > 0)).astype(np.float32), t1)  # lesions bright
    d = tmp_path_factory.mktemp("model_free")
    rows, subjects = [], {}
    for g in GRIDS:
        s = C.stored_on(t1, labels, ref["ventricles"], g)
        name = f"icbm{g}"
        grid = s["t1"]
        if g == "1mm":
            lesion = C.as_image((labels > 0).astype(np.uint8), t1)  # a mask
            fl = flair
        else:  # a probability map: its 0.5 threshold is the stored planted mask
            lesion = C.resample(sitk.Cast(C.as_image(labels, t1) > 0, sitk.sitkFloat32), grid)
            fl = C.resample(flair, grid)
        files = {k: d / f"{name}_{k}.nii.gz" for k in ("t1", "flair", "lesion")}
        for k, img in (("t1", s["t1"]), ("flair", fl), ("lesion", lesion)):
            sitk.WriteImage(img, str(files[k]))
        rows.append({"subject": name, **{k: str(v) for k, v in files.items()}})
        subjects[name] = s
    manifest = d / "cohort.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["subject", "t1", "flair", "lesion"])
        w.writeheader()
        w.writerows(rows)
    out = d / "out"
    r = run(manifest, "-o", out, "--lesions", "csv", "--regions", "atlas", "--atlas-dir",
            shared_data / "eve_atlas", "--device", "cpu", "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    return {"dir": d, "manifest": manifest, "out": out, "truth": truth, "subjects": subjects,
            "atlas_dir": shared_data / "eve_atlas"}


def table(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("grid", GRIDS)
def test_loads_match_the_reference_ventricles(cohort, grid):
    name = f"icbm{grid}"
    row = next(r for r in table(cohort["out"] / "results" / "regional_loads.csv") if r["subject"] == name)
    pv_ref, deep_ref = C.pv_deep_reference(cohort["subjects"][name], cohort["truth"])
    pv, deep = float(row["periventricular_mm3"]), float(row["deep_mm3"])
    print(f"{grid}: periventricular {pv:.0f} (ref {pv_ref:.0f}), deep {deep:.0f} (ref {deep_ref:.0f}) mm3")
    assert pv_ref > 500 and deep_ref > 500
    assert abs(pv - pv_ref) <= 0.1 * pv_ref and abs(deep - deep_ref) <= 0.1 * deep_ref
    total = float(row["total_mm3"])
    assert pv + deep + float(row["infratentorial_mm3"]) == pytest.approx(total, rel=1e-4)
    assert float(row["periventricular_cc_mm3"]) + float(row["deep_cc_mm3"]) + float(row["infratentorial_mm3"]) \
        == pytest.approx(total, rel=1e-4)
    lobes = sum(float(row[f"{lobe}_mm3"]) for lobe in L.LOBES)
    assert lobes == pytest.approx(float(row["wm_mm3"]), rel=1e-4)  # the 34 regions, each in one lobe
    # supratentorial lesions get one of the 34 WM regions (the infratentorial ones: 35/36 or none)
    assert float(row["wm_mm3"]) >= 0.8 * (total - float(row["infratentorial_mm3"]))
    assert 1.2e6 < float(row["icv_mm3"]) < 2.2e6
    assert float(row["lesion_icv_fraction"]) == pytest.approx(total / float(row["icv_mm3"]), rel=1e-4)
    assert row["location_note"] == "" and float(row["pv_distance_mm"]) == 10.0


@pytest.mark.parametrize("grid", GRIDS)
def test_planted_classes_and_location_images(cohort, grid):
    name = f"icbm{grid}"
    s = cohort["subjects"][name]
    res = cohort["out"] / "results"
    got = {r["lesion_id"]: r for r in table(res / "lesions.csv") if r["subject"] == name}
    lab, n = L.components(s["planted"] > 0)
    assert len(got) == n
    right = 0
    for k, cls in cohort["truth"].items():
        ids = lab[s["planted"] == k]
        right += ids.size > 0 and got[str(int(np.bincount(ids).argmax()))]["location"] == cls
    print(f"{grid}: {right}/{len(cohort['truth'])} planted classes right")
    assert right >= 0.9 * len(cohort["truth"])
    for r in got.values():
        assert float(r["ventricle_distance_mm"]) >= 0 and all(r[f"atlas_lps_{a}_mm"] for a in "xyz")
    sub = res / name
    vent = sitk.GetArrayFromImage(sitk.ReadImage(str(sub / f"{name}_ventricles.nii.gz"))) > 0
    d = 2.0 * float((vent & s["ref_vent"]).sum()) / float(vent.sum() + s["ref_vent"].sum())
    assert d >= 0.8
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(sub / f"{name}_lesion_mask.nii.gz"))) > 0
    if grid == "axial3":  # the cohort's probability map thresholded at --lesion-threshold 0.5
        prob = sitk.GetArrayFromImage(sitk.ReadImage(str(cohort["dir"] / f"{name}_lesion.nii.gz")))
        assert np.array_equal(mask, prob >= 0.5)
    loc = sitk.GetArrayFromImage(sitk.ReadImage(str(sub / f"{name}_lesion_location.nii.gz")))
    assert set(np.unique(loc[mask]).tolist()) <= {1, 2, 3, 4} and not loc[~mask].any()
    regions = sitk.ReadImage(str(sub / f"{name}_regions.nii.gz"))
    assert regions.GetSize() == s["t1"].GetSize()  # on the lesion map's grid
    atlas_mask = sitk.ReadImage(str(sub / f"{name}_space-atlas_lesion_mask.nii.gz"))
    atlas_t1 = sitk.ReadImage(str(cohort["atlas_dir"] / "JHU_MNI_SS_T1_brain.nii.gz"))
    assert atlas_mask.GetSize() == atlas_t1.GetSize() and sitk.GetArrayViewFromImage(atlas_mask).any()
    freq = sitk.GetArrayFromImage(sitk.ReadImage(str(res / "lesion_frequency_atlas.nii.gz")))
    assert set(np.unique(freq).tolist()) <= {0.0, 0.5, 1.0} and (freq == 1.0).any()


def test_bad_input_is_one_line(cohort, tmp_path):
    rows = table(cohort["manifest"])
    cases = {}
    no_lesion = tmp_path / "no_lesion.csv"
    with open(no_lesion, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["subject", "t1", "flair"])
        w.writeheader()
        w.writerows({k: r[k] for k in ("subject", "t1", "flair")} for r in rows)
    cases["lesion map per subject"] = [no_lesion, "--lesions", "csv", "--regions", "atlas", "--atlas-dir",
                                       cohort["atlas_dir"]]
    no_t1 = tmp_path / "no_t1.csv"
    with open(no_t1, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["subject", "flair", "lesion"])
        w.writeheader()
        w.writerows({k: r[k] for k in ("subject", "flair", "lesion")} for r in rows)
    cases["no T1 for"] = [no_t1, "--lesions", "csv", "--regions", "atlas", "--atlas-dir", cohort["atlas_dir"]]
    cases["needs --atlas-dir"] = [cohort["manifest"], "--lesions", "csv", "--regions", "atlas"]
    cases["--atlas-dir not found"] = [cohort["manifest"], "--lesions", "csv", "--regions", "atlas", "--atlas-dir",
                                      tmp_path / "nowhere"]
    cases["--region-model"] = [cohort["manifest"], "--lesions", "csv"]
    for i, (want, args) in enumerate(cases.items()):
        out = tmp_path / f"out{i}"
        r = run(*args, "-o", out, "--device", "cpu")
        lines = r.stderr.strip().splitlines()
        assert r.returncode != 0 and len(lines) == 1 and want in lines[0], (want, r.stderr)
        assert "Traceback" not in r.stderr and not out.exists()


def test_old_regional_loads_still_read(tmp_path):
    """A table written before the location columns existed reads as before; empty location cells too."""
    from nnunet_wmhloc.postprocessing.loads import LOAD_COLUMNS, LOCATION_COLUMNS, REGION_LOAD_COLUMNS, read_loads

    for cols, name in ((REGION_LOAD_COLUMNS, "old.csv"), (LOAD_COLUMNS, "new.csv")):
        p = tmp_path / name
        with open(p, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerow({c: ("s1" if c == "subject" else "" if c in LOCATION_COLUMNS else
                            "x.nii.gz" if c.endswith("_file") else "0") for c in cols})
        assert read_loads(p)[0]["subject"] == "s1"


def test_without_atlas_or_t1_the_location_cells_are_empty_with_a_note(tmp_path):
    """The maps stage with no --atlas-dir (or a subject without a T1): no location images, one note per
    subject, and the merged tables keep every localize column with empty location cells."""
    from types import SimpleNamespace

    from nnunet_wmhloc.dataset_conversion.subjects import Subject
    from nnunet_wmhloc.pipeline import location_outputs as LO
    from nnunet_wmhloc.pipeline.stages import StageContext
    from nnunet_wmhloc.postprocessing.loads import LESION_LOCATION_COLUMNS, LOCATION_COLUMNS

    ctx = StageContext("maps", tmp_path / "maps.log", {}, tmp_path / "run", quiet=True)
    ctx.layout.segmentations("lesion").mkdir(parents=True)
    sitk.WriteImage(sitk.Image([8, 8, 8], sitk.sitkUInt8), str(ctx.layout.segmentations("lesion") / "s1.nii.gz"))
    s1 = Subject("s1", {"flair": str(tmp_path / "f.nii.gz")})
    got = LO.locate_cohort(ctx, [s1, Subject("s2", {})], SimpleNamespace(atlas_dir=None, pv_distance=10.0),
                           atlas_regions_too=False)
    assert got == {"located": 0, "not_located": 1}  # s2 has no lesion map: no row, as in localize
    assert not list(ctx.layout.location.glob("*.nii.gz"))
    tables = SimpleNamespace(loads=[{"subject": "s1", "total_mm3": "0"}, {"subject": "s3", "total_mm3": "0"}],
                             lesions=[{"subject": "s1", "lesion_id": "1"}])
    m = LO.merged(ctx.layout, tables)
    assert [r["location_note"] for r in m.loads] == [LO.NO_ATLAS, "location stage did not run"]
    assert all(r[c] == "" for r in m.loads for c in LOCATION_COLUMNS if c != "location_note")
    assert m.loads[0]["total_mm3"] == "0" and all(m.lesions[0][c] == "" for c in LESION_LOCATION_COLUMNS)


def test_report_shows_where_the_lesions_are(cohort, tmp_path):
    """The report's location section: per subject the four classes in mm³ as in regional_loads.csv (and their
    % of the subject's lesion volume, which they add up to by the distance rule), the cohort row, and the
    atlas-space frequency figure with a caption and >= 9 pt text; the linked tables carry the location
    columns. In a browser (offline) when chromium is here."""
    import re

    from browser import figure_problems, find_chromium, render

    from nnunet_wmhloc.pipeline.figtext import read_figure_info

    rep = cohort["out"] / "report"
    html = (rep / "report.html").read_text(encoding="utf-8")
    sec = html[html.index("<h2 id='location'>"):html.index("<h2 id='clustering'>")]
    loads = {r["subject"]: r for r in table(cohort["out"] / "results" / "regional_loads.csv")}
    for name, r in loads.items():
        row = re.search(rf"<tr><td>{name}</td>(.*?)</tr>", sec).group(1)
        cells = re.findall(r"<td>(.*?)</td>", row)
        total = sum(float(r[c]) for c in ("periventricular_mm3", "deep_mm3", "infratentorial_mm3"))
        assert cells[0] == f"{total:.0f}" and total > 0
        for i, c in ((1, "periventricular_cc_mm3"), (2, "juxtacortical_mm3"), (4, "infratentorial_mm3"),
                     (5, "periventricular_mm3"), (6, "deep_mm3")):
            assert cells[i] == f"{float(r[c]):.0f} ({100 * float(r[c]) / total:.0f} %)", (c, cells)
        classes = [float(cells[i].split()[0]) for i in range(1, 5)]  # whole lesions: they make up the volume
        assert abs(sum(classes) - total) <= 2 and classes[2] > 0
    assert "<td>all subjects</td><td>2</td>" in sec
    png = rep / "figures" / "lesion_frequency_atlas.png"
    assert "figures/lesion_frequency_atlas.png" in sec and read_figure_info(png)["min_font_pt"] >= 9
    assert "share (%, colour) of the 2 subjects" in sec
    linked = table(rep / "tables" / "regional_loads.csv")
    assert [r["periventricular_mm3"] for r in linked] == [loads[r["subject"]]["periventricular_mm3"] for r in linked]
    if find_chromium() is not None:
        seen = render(rep / "report.html", tmp_path / "shot.png")
        assert not seen["remote"] and any(i["src"] == "figures/lesion_frequency_atlas.png" for i in seen["images"])
        assert figure_problems(rep, seen["images"]) == []


def test_wmhloc_run_location_stage_matches_wmhloc_predict(cohort, tmp_path):
    """wmhloc_run's location stage on the maps and T1 cases wmhloc_predict had (fused maps in segmentations/,
    T1 cases as in imagesTs): the same location rows; without --atlas-dir one line, nothing written."""
    import shutil
    from types import SimpleNamespace

    from nnunet_wmhloc.pipeline import location_outputs as LO
    from nnunet_wmhloc.pipeline.stages import StageContext

    ctx = StageContext("location", tmp_path / "location.log", {}, tmp_path / "run", quiet=True)
    for task in ("lesion", "region"):
        dst = ctx.layout.segmentations(task)
        dst.mkdir(parents=True)
        for p in (cohort["out"] / "segmentations" / task).glob("*.nii.gz"):
            shutil.copyfile(p, dst / p.name)
    images = tmp_path / "imagesTs"
    images.mkdir()
    for p in (cohort["out"] / "images").glob("*_t1_0000.nii.gz"):
        shutil.copyfile(p, images / p.name)
    a = SimpleNamespace(atlas_dir=cohort["atlas_dir"], pv_distance=10.0)
    assert LO.run_stage(ctx, images, a) == {"located": 2, "not_located": 0}
    cols = ["periventricular_mm3", "deep_mm3", "juxtacortical_mm3", "infratentorial_mm3", "icv_mm3"]
    got = {r["subject"]: [r[c] for c in cols] for r in table(ctx.layout.location / LO.LOADS)}
    want = {r["subject"]: [r[c] for c in cols] for r in table(cohort["out"] / "location" / LO.LOADS)}
    assert got == want and len(got) == 2
    assert (ctx.layout.location / LO.FREQUENCY).is_file()

    said = []
    ctx.say = said.append
    assert LO.run_stage(ctx, images, SimpleNamespace(atlas_dir=None, pv_distance=10.0)) == {"skipped": LO.NO_ATLAS}
    assert len(said) == 1 and "--atlas-dir" in said[0] and not ctx.layout.location.exists()


def test_wmhloc_localize_with_t1_and_atlas_writes_the_location_columns(cohort, tmp_path):
    """wmhloc_localize --t1 DIR --atlas-dir: the subject with a T1 in DIR gets the location columns
    wmhloc_predict gave it (same lesion map, region map and T1) and its location images; the subject
    without one keeps empty cells and a note; --t1 without --atlas-dir is one line, nothing written."""
    import shutil

    seg = cohort["out"] / "segmentations"
    t1 = tmp_path / "t1"
    t1.mkdir()
    shutil.copyfile(cohort["out"] / "images" / "icbm1mm_t1_0000.nii.gz", t1 / "icbm1mm_t1.nii.gz")
    out = tmp_path / "loc"
    args = ["--lesions", seg / "lesion", "--regions", seg / "region", "-o", out]
    r = subprocess.run([str(BIN / "wmhloc_localize"), *map(str, args), "--t1", str(t1), "--atlas-dir",
                        str(cohort["atlas_dir"])], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    got = {row["subject"]: row for row in table(out / "regional_loads.csv")}
    want = {row["subject"]: row for row in table(cohort["out"] / "results" / "regional_loads.csv")}
    from nnunet_wmhloc.postprocessing._location import NO_T1
    from nnunet_wmhloc.postprocessing.loads import LOCATION_COLUMNS

    for c in LOCATION_COLUMNS:
        if c != "pv_distance_mm":
            assert got["icbm1mm"][c] == want["icbm1mm"][c], c
    assert got["icbmaxial3"]["location_note"] == NO_T1 and got["icbmaxial3"]["periventricular_mm3"] == ""
    lesions = [row for row in table(out / "lesions.csv") if row["subject"] == "icbm1mm"]
    before = {row["lesion_id"]: row["location"] for row in table(cohort["out"] / "results" / "lesions.csv")
              if row["subject"] == "icbm1mm"}
    assert lesions and {row["lesion_id"]: row["location"] for row in lesions} == before
    for name in ("ventricles", "lesion_location", "space-atlas_lesion_mask"):
        assert (out / "location" / f"icbm1mm_{name}.nii.gz").is_file()
    assert (out / "location" / "lesion_frequency_atlas.nii.gz").is_file()

    bad = tmp_path / "bad"
    r = subprocess.run([str(BIN / "wmhloc_localize"), *map(str, args[:-1]), str(bad), "--t1", str(t1)],
                       capture_output=True, text=True)
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(lines) == 1 and "--atlas-dir" in lines[0] and not bad.exists(), r.stderr


def test_wmhloc_run_location_options_checked_first(tmp_path):
    """wmhloc_run --atlas-dir / --pv-distance: a wrong value is one line before anything is made."""
    for want, args in (("--atlas-dir not found", ["--atlas-dir", tmp_path / "nowhere"]),
                       ("neither a built atlas", ["--atlas-dir", tmp_path]),
                       ("--pv-distance 0", ["--pv-distance", "0"])):
        out = tmp_path / "run"
        r = subprocess.run([str(BIN / "wmhloc_run"), "--demo", "-o", str(out), *map(str, args)],
                           capture_output=True, text=True)
        lines = r.stderr.strip().splitlines()
        assert r.returncode != 0 and len(lines) == 1 and want in lines[0], (want, r.stderr)
        assert "Traceback" not in r.stderr and not out.exists()
