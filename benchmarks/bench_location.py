"""Seconds per subject of the model-free location path (issue 20): T1 → tissue classes → atlas
registration → location context → lesion classes and loads → lesion mask on the atlas grid. Prints
figures; no pass/fail. Subjects: nilearn's ICBM152 2009a on its 1 mm grid and on a tilted 1x1x3 mm
axial grid, and the MNI152 brain, each with lesions planted as in tests/location_common.py. CPU time is
printed beside wall time: on a shared machine the wall time depends on the load.

    OMP_NUM_THREADS=2 python benchmarks/bench_location.py [--shared ../shared/data] [--repeat 1]
    OMP_NUM_THREADS=2 python benchmarks/bench_location.py --predict   # the whole wmhloc_predict command

--predict times `wmhloc_predict --lesions csv --regions atlas` (no model) on a cohort of those subjects
(their T1 doubling as FLAIR), every stage from convert to the report: seconds per subject.

    OMP_NUM_THREADS=2 python benchmarks/bench_location.py --versus-model [--quick] [--work DIR]

--versus-model: the same subjects resampled to the challenge grid (240x240x48 of 0.958x0.958x3 mm), region
maps two ways, side by side, on this CPU: `--regions atlas` (the maps stage: registration, region map and
location classes) against the 2d region model (nnU-Net's planned 2d network for that grid, untrained
weights: its cost does not depend on them; from benchmarks/bench_predict.py) on the T1 alone; and the whole
`wmhloc_predict --lesions csv --regions atlas` command per subject. --quick: one subject.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_wmhloc import location as L
from nnunet_wmhloc.atlas import _atlas

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))
import location_common as C  # noqa: E402


def subjects(shared: Path):
    icbm = C.icbm152()
    ref = C.icbm_reference(icbm, shared)
    labels, _ = C.plant(ref, np.random.default_rng(20))
    t1 = C.darken(icbm["t1"], labels, ref["gm"])
    yield "icbm152 1mm", t1, C.as_image((labels > 0).astype(np.uint8), t1)
    g = C.tilted_axial_grid(t1)
    m = C.resample(C.as_image((labels > 0).astype(np.float32), t1), g) > 0.5
    yield "icbm152 1x1x3 tilted", C.resample(t1, g), sitk.Cast(m, sitk.sitkUInt8)
    mni = sitk.ReadImage(str(shared / "external_reference" / "MNI152_T1_1mm_brain.nii.gz"), sitk.sitkFloat32)
    # the same lesions by world coordinates (both templates are in MNI space)
    yield "mni152 1mm", mni, sitk.Cast(C.resample(C.as_image((labels > 0).astype(np.float32), t1), mni) > 0.5,
                                       sitk.sitkUInt8)


def bench_predict(shared: Path) -> None:
    import csv
    import tempfile

    from nnunet_wmhloc.pipeline.predict import build_parser, predict_cohort

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        rows = []
        for i, (name, t1, lesion) in enumerate(subjects(shared)):
            files = {"t1": d / f"s{i}_t1.nii.gz", "flair": d / f"s{i}_flair.nii.gz", "lesion": d / f"s{i}_les.nii.gz"}
            for k, img in (("t1", t1), ("flair", t1), ("lesion", lesion)):
                sitk.WriteImage(img, str(files[k]))
            rows.append({"subject": f"s{i}", **{k: str(v) for k, v in files.items()}})
        with open(d / "cohort.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        a = build_parser().parse_args([str(d / "cohort.csv"), "-o", str(d / "out"), "--lesions", "csv", "--regions",
                                       "atlas", "--atlas-dir", str(shared / "eve_atlas"), "--device", "cpu", "--quiet"])
        c0, w0 = time.process_time(), time.time()
        predict_cohort(a)
        wall, cpu = time.time() - w0, time.process_time() - c0
    print(f"wmhloc_predict --lesions csv --regions atlas, {len(rows)} subjects: {wall:.1f} s wall, {cpu:.1f} s CPU; "
          f"{wall / len(rows):.1f} s/subject wall, {cpu / len(rows):.1f} s/subject CPU")


def _timed(args: list[str], env: dict) -> tuple[float, float]:
    """(wall s, CPU s of the command and its children) of a command that must succeed."""
    import resource
    import subprocess

    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    w0 = time.time()
    p = subprocess.run(args, env=env, capture_output=True, text=True)
    wall = time.time() - w0
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed: {p.stderr.strip()[-1500:]}")
    return wall, (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)


def _stage_seconds(out: Path, *stages: str) -> float:
    import json

    return sum(json.loads((out / "stages" / f"{s}.done").read_text())["seconds"] for s in stages)


def versus_model(shared: Path, work: Path, quick: bool) -> None:
    import csv
    import os
    import shutil

    import bench_predict as BP

    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet")}
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (name, t1, lesion) in enumerate(subjects(shared)):
        if quick and i:
            break
        files = {"t1": work / f"s{i}_t1.nii.gz", "flair": work / f"s{i}_t1.nii.gz", "lesion": work / f"s{i}_les.nii.gz"}
        sitk.WriteImage(BP.to_challenge_grid(t1, False), str(files["t1"]))
        sitk.WriteImage(BP.to_challenge_grid(lesion, True), str(files["lesion"]))
        rows.append({"subject": f"s{i}", **{k: str(v) for k, v in files.items()}})
    n = len(rows)
    with open(work / "cohort.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    train_csv, _ = BP.make_cohort(work / "models", 1)
    region = BP.make_models(work / "models", train_csv, ["2d"], env)["2d"]["region"]
    exe = str(Path(sys.executable).parent / "wmhloc_predict")
    base = [exe, str(work / "cohort.csv"), "--lesions", "csv", "--device", "cpu", "--quiet"]
    for old in ("atlas", "model"):
        shutil.rmtree(work / old, ignore_errors=True)
    threads = str(max(1, len(os.sched_getaffinity(0)) - 1))
    atlas_wall, atlas_cpu = _timed(base + ["-o", str(work / "atlas"), "--regions", "atlas", "--atlas-dir",
                                           str(shared / "eve_atlas")], env)
    model_wall, model_cpu = _timed(base + ["-o", str(work / "model"), "--region-model", str(region), "--fusion",
                                           "region=t1", "--disable-tta", "--threads", threads, "--processes", "1"],
                                   env)
    by_atlas = _stage_seconds(work / "atlas", "maps") / n
    by_model = _stage_seconds(work / "model", "predict", "fuse") / n
    load = os.getloadavg()[0]
    print(f"{n} subjects of {BP.SIZE} voxels ({BP.SPACING} mm), load average {load:.1f} on "
          f"{len(os.sched_getaffinity(0))} cores")
    print(f"{'':46s} {'--regions atlas':>16s} {'2d region model':>16s}")
    print(f"{'region maps, s/subject (wall)':46s} {by_atlas:16.1f} {by_model:16.1f}   "
          f"model / atlas = {by_model / by_atlas:.1f}x")
    print(f"{'whole wmhloc_predict --lesions csv, s/subject wall':46s} {atlas_wall / n:16.1f} {model_wall / n:16.1f}")
    print(f"{'whole wmhloc_predict --lesions csv, s/subject CPU':46s} {atlas_cpu / n:16.1f} {model_cpu / n:16.1f}")
    print("(--regions atlas's maps stage also makes the location classes; the model's TTA is off)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--predict", action="store_true", help="time the whole wmhloc_predict command instead")
    p.add_argument("--versus-model", action="store_true",
                   help="region maps by --regions atlas against the 2d region model, side by side")
    p.add_argument("--quick", action="store_true", help="--versus-model on one subject")
    p.add_argument("--work", type=Path, default=None, help="--versus-model: keep cohort, models and outputs here")
    a = p.parse_args()
    if a.versus_model:
        import tempfile

        versus_model(a.shared, a.work or Path(tempfile.mkdtemp(prefix="bench_location_")), a.quick)
        return 0
    if a.predict:
        bench_predict(a.shared)
        return 0
    eve = a.shared / "eve_atlas"
    c0, w0 = time.process_time(), time.time()
    atlas, priors = _atlas.load_atlas(eve), L.atlas_priors(eve)
    print(f"atlas + location priors: {time.time() - w0:.1f} s wall, {time.process_time() - c0:.1f} s CPU "
          f"(once per run)")
    print(f"{'subject':24s} {'wall s':>7s} {'CPU s':>6s} {'register':>8s} {'context':>7s} {'classes':>7s} "
          f"{'atlas':>6s} lesions")
    for name, t1, lesion in subjects(a.shared):
        for _ in range(a.repeat):
            c0, w0 = time.process_time(), time.time()
            reg = L.register_subject(t1, atlas)
            loc = L.locate(lesion, reg, priors, atlas_grid=atlas.t1)
            s = loc.seconds
            print(f"{name:24s} {time.time() - w0:7.1f} {time.process_time() - c0:6.1f} {reg.seconds:8.1f} "
                  f"{s['context']:7.1f} {s['classes']:7.1f} {s['atlas_space']:6.1f} {len(loc.lesions)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
