"""Accuracy and speed of atlas → subject region labels (issue 3). Prints figures; no pass/fail.

1. Real anatomy, others' reference: the Eve atlas carried onto the MNI152 brain and the Rorden template,
   compared with the Eve type-II labels that others warped there with ANTs SyN (merged with our table).
   Dice per region 1..34 inside the reference's regions 1..34 (so WM masking does not count), mean.
2. Synthetic known truth: Eve with a skull, resampled by a random affine onto challenge-like 3 mm slices
   (240×240×48), bias field and noise; Dice of the carried labels against the known warped atlas.
Methods: `baseline` = plain SimpleITK affine of Eve T1 → subject T1 (whole brains, moments start,
Mattes MI, 3-level pyramid), `ours` = wmhloc_region_labels' pipeline (brain/WM estimate, WM-driven
affine), `ours+bspline` = with --deformable.

    OMP_NUM_THREADS=2 python benchmarks/bench_registration.py [--shared ../shared/data] [--synthetic 3]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_wmhloc.atlas import _atlas, _synthetic
from nnunet_wmhloc.atlas.merge_table import merge_type2
from nnunet_wmhloc.atlas.subject_labels import label_subject
from nnunet_wmhloc.registration import moments_mattes

REPO = Path(__file__).resolve().parents[1]


def region_dice(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    dom = (ref >= 1) & (ref <= 34)
    out = []
    for r in range(1, 35):
        a, b = (pred == r) & dom, ref == r
        out.append(2.0 * (a & b).sum() / max(1, a.sum() + b.sum()))
    return np.array(out)


def baseline(atlas: _atlas.Atlas, subject_t1: sitk.Image) -> sitk.Transform:
    """The plain recipe: moments start, affine, Mattes MI, shrink 4/2/1 — on whole-brain T1s."""
    return moments_mattes(subject_t1, atlas.t1, sitk.AffineTransform(3), bins=50, sampling=(0.05, 1),
                          shrink=[4, 2, 1], sigmas=[2, 1, 0],
                          optimizer=lambda r: r.SetOptimizerAsGradientDescent(
                              learningRate=1.0, numberOfIterations=100, convergenceMinimumValue=1e-6,
                              convergenceWindowSize=10))


def run_case(name, atlas, t1_path, ref_labels: np.ndarray, methods, tmp: Path, t1_img=None) -> dict:
    res = {}
    if t1_img is not None:
        tmp.mkdir(parents=True, exist_ok=True)
        t1_path = tmp / f"{name}_t1.nii.gz"
        sitk.WriteImage(t1_img, str(t1_path))
    t1 = sitk.ReadImage(str(t1_path))
    for m in methods:
        t0, c0 = time.time(), time.process_time()
        if m == "baseline":
            tr = baseline(atlas, t1)
            pred = sitk.GetArrayFromImage(sitk.Resample(atlas.labels, t1, tr, sitk.sitkNearestNeighbor, 0))
            masked = None
        else:
            o = label_subject(t1_path, atlas, deformable=(m == "ours+bspline"))
            pred = sitk.GetArrayFromImage(o.carried)
            masked = sitk.GetArrayFromImage(o.labels)
        dt, cpu = time.time() - t0, time.process_time() - c0
        d = region_dice(pred, ref_labels)
        res[m] = {"dice": d, "seconds": dt, "cpu": cpu,
                  "masked_dice": None if masked is None else region_dice(masked, ref_labels)}
        extra = "" if masked is None else f"  (output masked by estimated WM: {res[m]['masked_dice'].mean():.3f})"
        print(f"  {name:10s} {m:13s} mean Dice {d.mean():.3f}  min {d.min():.3f}  {dt:5.1f} s wall, {cpu:5.1f} s CPU{extra}", flush=True)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", default=os.environ.get("WMHLOC_SHARED", str(REPO.parent / "shared")) + "/data")
    p.add_argument("--synthetic", type=int, default=3, help="number of synthetic subjects")
    p.add_argument("--methods", default="baseline,ours,ours+bspline")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tmp", default="/tmp/wmhloc_bench_registration")
    a = p.parse_args()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(a.threads)
    shared = Path(a.shared)
    methods = a.methods.split(",")
    atlas = _atlas.build_from_eve(shared / "eve_atlas")[0]
    ext = shared / "external_reference"
    print(f"SimpleITK threads {a.threads}; load average at start {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("Real anatomy (reference: Eve type-II warped by ANTs SyN, merged to 36 labels), Dice in regions 1-34:")
    table = {}
    for name, t1, lab in [("MNI152", "MNI152_T1_1mm_brain.nii.gz", "JHU_MNI_SS_WMPM_Type-II_to_MNI_brain.nii.gz"),
                          ("Rorden", "betsct1_unsmooth.nii.gz", "JHU_MNI_SS_WMPM_Type-II_to_Rorden_brain.nii.gz")]:
        ref = merge_type2(sitk.GetArrayFromImage(sitk.ReadImage(str(ext / lab))))
        table[name] = run_case(name, atlas, ext / t1, ref, methods, Path(a.tmp))
    print("Synthetic challenge-like subjects (240x240x48 at 0.96x0.96x3 mm, skull, bias ±20%, noise 3%):")
    syn = []
    for seed in range(a.synthetic):
        s = _synthetic.make_subject(atlas, seed=100 + seed)
        ref = sitk.GetArrayFromImage(s.labels)
        syn.append(run_case(f"synth{seed}", atlas, None, ref, methods, Path(a.tmp), t1_img=s.t1))
    print("\nSummary (mean region Dice over 1-34; wall / CPU seconds per subject; the CPU time of 2 threads is"
          " the fair figure on a shared machine: wall on 2 idle cores is between CPU/2 and CPU):")
    print(f"  {'method':13s} {'MNI152':>20s} {'Rorden':>20s} {'synthetic':>20s}")
    for m in methods:
        cells = [f"{table[n][m]['dice'].mean():.3f} ({table[n][m]['seconds']:.0f}/{table[n][m]['cpu']:.0f}s)"
                 for n in ("MNI152", "Rorden")]
        if syn:
            sd = np.array([c[m]["dice"].mean() for c in syn])
            st = np.mean([c[m]["seconds"] for c in syn])
            sc = np.mean([c[m]["cpu"] for c in syn])
            cells.append(f"{sd.mean():.3f}±{sd.std():.3f} min {sd.min():.3f} ({st:.0f}/{sc:.0f}s)")
        print(f"  {m:13s} " + " ".join(f"{c:>20s}" for c in cells))
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
