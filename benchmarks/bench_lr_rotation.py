"""Rotation range of the region model vs its left/right errors, on a finished demo (prints a table; not a test).

nnU-Net rotates 2d patches by up to +-180 deg; for datasets with left/right label pairs the trainers cap rotations
that turn the left-right axis at +-30 deg (laterality.py: a 180 deg turn plus nnU-Net's unswapped mirror along
the other in-plane axis is an unswapped left-right mirror). This trains the demo's region budget again with
other caps (same data, fold, budget and everything else), predicts the demo's test cases (FLAIR and T1, fused as
the demo does) and scores them against labelsTs: wrong-hemisphere share and region Dice.

    wmhloc_run --demo -o demo                                     # first (or reuse a finished demo)
    python benchmarks/bench_lr_rotation.py demo --caps 180 30     # ~2 region trainings of the demo's budget
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from nnunet_wmhloc.pipeline.run import QUICK, resolve_trainer

MODULE = "wmhloc_bench_rotation"


def _trainer_module(folder: Path, base: str, caps: list[float]) -> dict[float, str]:
    """A module nnU-Net can find (on nnUNet_extTrainer) with one budget trainer per rotation cap."""
    names = {c: f"{base}_rot{int(c)}" for c in caps}
    lines = ['"""Written by benchmarks/bench_lr_rotation.py."""',
             "from nnunet_wmhloc.pipeline.budget import make_trainer", f"_Base = make_trainer({base!r})"]
    for c, n in names.items():
        lines += [f"class {n}(_Base):", f"    lr_max_rotation_deg = {float(c)!r}"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{MODULE}.py").write_text("\n".join(lines) + "\n")
    return names


def _run(args, env, log):
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(map(str, args))}\n")
        f.flush()
        p = subprocess.run([str(a) for a in args], env=env, stdout=f, stderr=subprocess.STDOUT)
    if p.returncode:
        sys.exit(f"error: {args[0]} failed (log: {log})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("demo", type=Path, help="output folder of a finished `wmhloc_run --demo`")
    ap.add_argument("--caps", type=float, nargs="+", default=[180.0, 30.0], help="rotation caps (degrees) to train")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default <demo>/bench_lr_rotation)")
    a = ap.parse_args(argv)
    demo = a.demo.resolve()
    root = demo / "nnunet"
    work = (a.work or demo / "bench_lr_rotation").resolve()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.txt"
    bindir = Path(sys.executable).parent
    base = resolve_trainer("nnUNetTrainerWMHLoc", epochs=None, quick=True, task="region")
    names = _trainer_module(work / "trainers", base, a.caps)
    env = dict(os.environ)
    for k in ("nnUNet_raw", "nnUNet_preprocessed"):
        env[k] = str(root / k)
    env["nnUNet_results"] = str(work / "results")  # the demo's own models stay as they are
    from nnunet_wmhloc.env import nnunet_environ

    env["nnUNet_extTrainer"] = os.pathsep.join([nnunet_environ(None)["nnUNet_extTrainer"],
                                               str(root / "wmhloc_trainers"), str(work / "trainers")])
    env.setdefault("nnUNet_n_proc_DA", "1")
    images = next((root / "nnUNet_raw").glob("Dataset601_*")) / "imagesTs"
    refs = next((root / "nnUNet_raw").glob("Dataset602_*")) / "labelsTs"
    rows = []
    for cap, name in names.items():
        t = time.time()
        _run([bindir / "nnUNetv2_train", "602", QUICK["configuration"], "0", "-tr", name, "-device", "cpu"], env, log)
        train_s = time.time() - t
        pred, fused, ev = work / f"pred_{int(cap)}", work / f"fused_{int(cap)}", work / f"eval_{int(cap)}"
        for d in (pred, fused, ev):
            shutil.rmtree(d, ignore_errors=True)
        _run([bindir / "nnUNetv2_predict", "-i", images, "-o", pred, "-d", "602", "-c", QUICK["configuration"],
              "-f", "0", "-tr", name, "--save_probabilities", "-device", "cpu", "--disable_tta", "-npp", "1",
              "-nps", "1"], env, log)
        _run([bindir / "wmhloc_fuse", pred, "-o", fused], env, log)
        _run([bindir / "wmhloc_evaluate", "--pred", fused, "--ref", refs, "--task", "region", "-o", ev], env, log)
        s = json.loads((ev / "summary.json").read_text())["summary"]["all"]
        rows.append((cap, s["wrong_hemisphere"]["mean"], s["mean_dice_wm"]["mean"], s["mean_dice_rest"]["mean"],
                     train_s))
    print(f"region model, demo budget {base}, fused FLAIR+T1 on the demo's test cases")
    print(f"{'rotation cap':>12}  {'wrong hemisphere':>16}  {'Dice 1-34':>9}  {'Dice 35/36':>10}  {'train s':>7}")
    for cap, wh, d, r, ts in rows:
        print(f"{cap:>10.0f}°  {wh:>16.3f}  {d:>9.3f}  {r:>10.3f}  {ts:>7.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
