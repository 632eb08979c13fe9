"""Benchmark wmhloc_predict: wall time and peak memory per stage and per subject at the challenge's geometry
(240x240x48 voxels of 0.958x0.958x3 mm), 2d and 3d_fullres, fused (FLAIR + T1 through both models) versus
the chosen single modality (lesions from FLAIR, regions from T1: the paper's best), test-time mirroring on
and off, on this machine's CPU. Prints one table row per setting, and the share of the total spent outside
nnU-Net's own prediction (the target: under 10%).

The models are nnU-Net's planned networks for this geometry (nnUNetv2_plan_experiment on a synthetic cohort
resampled to the challenge grid) with untrained weights: prediction cost does not depend on the weights, and
training a 3d_fullres model on a CPU would take hours. They are saved as nnUNetTrainerWMHLoc checkpoints
(with nnU-Net's mirroring axes, so --disable-tta changes something) and predicted through the real
nnUNetv2_predict_from_modelfolder.

Peak memory: the largest proportional set size (PSS) of wmhloc_predict's whole process tree (nnU-Net's worker
processes included), sampled every 0.2 s, attributed to the stage running at that moment.

    python benchmarks/bench_predict.py [--subjects 2] [--configurations 2d 3d_fullres] [--work DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SIZE = (240, 240, 48)
SPACING = (0.958, 0.958, 3.0)
TRAINER = "nnUNetTrainerWMHLoc"
SETTINGS = [("fused", "fused"), ("chosen", "lesion=flair region=t1")]


def to_challenge_grid(img: sitk.Image, label: bool) -> sitk.Image:
    """Resample onto a 240x240x48 grid of 0.958x0.958x3 mm with the same centre."""
    centre = img.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in img.GetSize()])
    ref = sitk.Image(SIZE, img.GetPixelID())
    ref.SetSpacing(SPACING)
    ref.SetOrigin([c - (n - 1) / 2 * s for c, n, s in zip(centre, SIZE, SPACING)])
    return sitk.Resample(img, ref, sitk.Transform(), sitk.sitkNearestNeighbor if label else sitk.sitkLinear, 0)


def make_cohort(work: Path, n_test: int) -> tuple[Path, Path]:
    """Synthetic subjects on the challenge grid: 4 to plan the models on, n_test to predict."""
    from nnunet_wmhloc.synth import make_cohort as synth

    src = work / "synth"
    if not src.exists():
        synth(src, seed=3, per_site=2, test_per_site=max(1, n_test), show_progress=False)
    rows = []
    for wmh in sorted(src.glob("*/**/wmh.nii.gz")):
        f = wmh.parent
        split = "train" if f.parts[len(src.parts)] == "training" else "test"
        reg = src / "region_labels" / ("Train" if split == "train" else "Test") / f"WMH_{f.name}.nii.gz"
        if not reg.is_file():
            continue
        out = work / "grid" / f.name
        out.mkdir(parents=True, exist_ok=True)
        paths = {}
        for key, path, label in (("flair", f / "pre" / "FLAIR.nii.gz", False), ("t1", f / "pre" / "T1.nii.gz", False),
                                 ("lesion", wmh, True), ("regions", reg, True)):
            paths[key] = out / f"{key}.nii.gz"
            if not paths[key].exists():
                sitk.WriteImage(to_challenge_grid(sitk.ReadImage(str(path)), label), str(paths[key]), True)
        rows.append(dict(subject=f"b{f.name}", split=split, site=f.parent.name, **{k: str(v) for k, v in paths.items()}))
    train = [r for r in rows if r["split"] == "train"][:4]
    test = [r for r in rows if r["split"] == "test"][:n_test]
    # the cohort to predict lists no reference masks: new subjects (evaluation would add its own cost)
    for name, rs, cols in (("train.csv", train, ["subject", "flair", "t1", "lesion", "regions", "site", "split"]),
                           ("predict.csv", test, ["subject", "flair", "t1", "site"])):
        with open(work / name, "w") as fh:
            fh.write(",".join(cols) + "\n")
            for r in rs:
                fh.write(",".join(r[c] for c in cols) + "\n")
    return work / "train.csv", work / "predict.csv"


def make_models(work: Path, train_csv: Path, configurations: list[str], env: dict) -> dict:
    """nnU-Net plans for the challenge grid, and an untrained checkpoint per task and configuration."""
    root = work / "nnunet"
    env = dict(env, nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "pre"),
               nnUNet_results=str(root / "results"))
    for k in ("raw", "pre", "results"):
        (root / k).mkdir(parents=True, exist_ok=True)
    py = [sys.executable, "-m", "nnunet_wmhloc.pipeline.launch"]
    if not list((root / "raw").glob("Dataset*")):
        subprocess.run([*py, "wmhloc_convert_cohort", str(train_csv), "--mode", "train", "-o", env["nnUNet_raw"],
                        "--preprocessed", env["nnUNet_preprocessed"], "--lesion-id", "601", "--region-id", "602"],
                       env=env, check=True, capture_output=True)
    if not list((root / "pre").glob("Dataset*/nnUNetPlans.json")):
        subprocess.run([*py, "nnUNetv2_extract_fingerprint", "-d", "601", "602", "-np", "1"], env=env, check=True,
                       capture_output=True)
        subprocess.run([*py, "nnUNetv2_plan_experiment", "-d", "601", "602"], env=env, check=True, capture_output=True)
    code = r'''
import json, sys, os
from pathlib import Path
import torch
from nnunet_wmhloc.training.trainers import nnUNetTrainerWMHLoc
pre, results, conf = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
for ds in sorted(pre.glob("Dataset*")):
    plans = json.loads((ds / "nnUNetPlans.json").read_text())
    dj = json.loads((ds / "dataset.json").read_text())
    out = results / ds.name / f"nnUNetTrainerWMHLoc__nnUNetPlans__{conf}"
    if (out / "fold_0" / "checkpoint_final.pth").is_file():
        continue
    plans["continue_training"] = False  # nnU-Net 2.8's run_training passes this through the plans
    # initialize() infers the dataset class from the preprocessed folder's file endings; no data is read
    stub = ds / plans["configurations"][conf]["data_identifier"]
    stub.mkdir(exist_ok=True)
    (stub / "stub.b2nd").touch()
    t = nnUNetTrainerWMHLoc(plans, conf, 0, dj, torch.device("cpu"))
    t.initialize()
    t.configure_rotation_dummyDA_mirroring_and_inital_patch_size()  # sets nnU-Net's inference mirroring axes
    t.save_checkpoint(str(out / "fold_0" / "checkpoint_final.pth"))
    for f in ("dataset.json", "dataset_fingerprint.json"):
        (out / f).write_text((ds / f).read_text())
    (out / "plans.json").write_text(json.dumps(plans))
    print(ds.name, conf, plans["configurations"][conf]["patch_size"], t.inference_allowed_mirroring_axes)
'''
    models = {}
    for c in configurations:
        p = subprocess.run([sys.executable, "-c", code, env["nnUNet_preprocessed"], env["nnUNet_results"], c],
                           env=env, capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"making the {c} models failed:\n{p.stderr[-2000:]}")
        for line in p.stdout.splitlines():
            if line.startswith("Dataset"):
                print(f"  model {line}", flush=True)
        models[c] = {t: next((root / "results").glob(f"Dataset{i}_*")) / f"{TRAINER}__nnUNetPlans__{c}"
                     for t, i in (("lesion", 601), ("region", 602))}
    return models


def _tree_rss(pid: int) -> int:
    """Memory (bytes) of a process and all its descendants, from /proc: the proportional set size (PSS), so
    pages nnU-Net's forked workers share with their parent count once, not once per process."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(d))
        except (OSError, IndexError, ValueError):
            continue
    todo = [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                rss[p] = next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("Pss:"))
        except (OSError, StopIteration, ValueError):
            continue
    return sum(rss.values())


def run_predict(cohort: Path, out: Path, models: dict, fusion: str, tta: bool, env: dict, threads: int) -> dict:
    args = [str(Path(sys.executable).parent / "wmhloc_predict"), str(cohort), "-o", str(out),
            "--lesion-model", str(models["lesion"]), "--region-model", str(models["region"]), "--device", "cpu",
            "--threads", str(threads), "--processes", "1", "--fusion", *fusion.split(), "--quiet"]
    if not tta:
        args.append("--disable-tta")
    samples: list[tuple[float, int]] = []
    t0 = time.time()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            samples.append((time.time(), _tree_rss(proc.pid)))
            stop.wait(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    _, err = proc.communicate()
    stop.set()
    th.join()
    total = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"wmhloc_predict failed: {err.strip().splitlines()[-1:]}")
    stages = {}
    for m in (out / "stages").glob("*.done"):
        d = json.loads(m.read_text())
        end = m.stat().st_mtime
        peak = max((r for t, r in samples if end - d["seconds"] - 0.2 <= t <= end + 0.2), default=0)
        stages[d["stage"]] = {"seconds": d["seconds"], "peak_mb": peak / 2**20, "end": end}
    # nnU-Net's own prediction: its commands inside the predict stage ("# exit 0 after X s" in the log)
    nnunet = sum(float(ln.split("after")[1].split()[0]) for ln in (out / "logs" / "predict.log").read_text().splitlines()
                 if ln.startswith("# exit 0 after"))
    return {"total": total, "stages": stages, "nnunet": nnunet, "peak_mb": max(r for _, r in samples) / 2**20}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--subjects", type=int, default=2, help="subjects predicted per setting")
    p.add_argument("--configurations", nargs="+", default=["2d", "3d_fullres"])
    p.add_argument("--tta", nargs="+", default=["off", "on"], choices=("on", "off"))
    p.add_argument("--fusions", nargs="+", default=[n for n, _ in SETTINGS], choices=[n for n, _ in SETTINGS])
    p.add_argument("--threads", type=int, default=max(1, len(os.sched_getaffinity(0)) - 1),
                   help="torch threads for nnU-Net (wmhloc_predict --threads)")
    p.add_argument("--work", type=Path, default=None, help="keep the cohort, models and outputs here")
    a = p.parse_args(argv)
    work = a.work or Path(tempfile.mkdtemp(prefix="bench_predict_"))
    work.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet")}
    print(f"cohort and models in {work} ({a.subjects} subjects of {SIZE} voxels, {SPACING} mm)", flush=True)
    train_csv, cohort = make_cohort(work, a.subjects)
    models = make_models(work, train_csv, a.configurations, env)
    order = ["convert", "predict", "fuse", "localize", "results", "cluster", "evaluate", "report"]
    print(f"\n{'configuration':<11} {'fusion':<7} {'TTA':<4} {'total s':>8} {'s/subject':>9} {'nnU-Net s':>9} "
          f"{'other %':>7} {'peak MB':>8}  per stage: seconds (peak MB)")
    rows = []
    for c in a.configurations:
        for name, fusion in [x for x in SETTINGS if x[0] in a.fusions]:
            for tta in a.tta:
                out = work / "out" / f"{c}_{name}_tta{tta}"
                if out.exists():
                    import shutil

                    shutil.rmtree(out)
                r = run_predict(cohort, out, models[c], fusion, tta == "on", env, a.threads)
                other = (r["total"] - r["nnunet"]) / r["total"] * 100
                st = " ".join(f"{s} {r['stages'][s]['seconds']:.1f} ({r['stages'][s]['peak_mb']:.0f})"
                              for s in order if s in r["stages"])
                print(f"{c:<11} {name:<7} {tta:<4} {r['total']:8.1f} {r['total'] / a.subjects:9.1f} "
                      f"{r['nnunet']:9.1f} {other:6.1f}% {r['peak_mb']:8.0f}  {st}", flush=True)
                rows.append({"configuration": c, "fusion": name, "tta": tta, **{k: v for k, v in r.items()}})
    (work / "bench_predict.json").write_text(json.dumps(rows, indent=1, default=str))
    print(f"\nraw figures: {work / 'bench_predict.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
