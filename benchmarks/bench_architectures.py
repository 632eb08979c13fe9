"""Benchmark of the paper's four networks on CPU at nnU-Net plans (prints a table; not a test).

For U-Net (nnU-Net's own), UNETR, MultiResUNet and MedNeXt, built exactly as the trainers build them
(nnunet_wmhloc.training.architectures, deep supervision as in training), at each configuration's patch and batch
size: parameters, forward + backward time per batch (cross-entropy summed over the outputs; median of --reps
after a first pass) and peak memory of that forward + backward (rise of the process's peak resident set,
Linux VmHWM, over the memory held before it, on the first pass; each network in a fresh process).

Default plans: the synthetic cohort (wmhloc_synth seed 0, lesion dataset 601, planned by nnU-Net in a temporary
folder, about a minute). --plans/--dataset-json take any nnU-Net plans instead.

    python benchmarks/bench_architectures.py                          # synthetic cohort, 2d and 3d_fullres
    python benchmarks/bench_architectures.py --task region            # 37-class region dataset (602)
    python benchmarks/bench_architectures.py --plans P/nnUNetPlans.json --dataset-json P/dataset.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rss_hwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return -1


def _reset_hwm() -> bool:
    try:  # "5" resets the peak RSS to the current RSS (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def worker(arch: str, configuration: str, plans_path: str, dataset_json_path: str, reps: int, threads: int) -> dict:
    import numpy as np
    import torch
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_wmhloc.training import architectures

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    pm = PlansManager(json.loads(Path(plans_path).read_text()))
    dataset_json = json.loads(Path(dataset_json_path).read_text())
    cm = pm.get_configuration(configuration)
    n_in = determine_num_input_channels(pm, cm, dataset_json)
    n_out = pm.get_label_manager(dataset_json).num_segmentation_heads
    ds = architectures.has_deep_supervision(arch)
    net = architectures.build_network(arch, pm, cm, n_in, n_out, ds)
    net.train()
    patch, batch = list(cm.patch_size), cm.batch_size
    x = torch.randn(batch, n_in, *patch)
    scales = architectures.deep_supervision_scales(arch, cm) if ds else [[1.0] * len(patch)]
    targets = [torch.randint(0, n_out, (batch, *[round(p * s) for p, s in zip(patch, sc)])) for sc in scales]
    ce = torch.nn.CrossEntropyLoss()

    def step():
        out = net(x)
        out = out if isinstance(out, (list, tuple)) else [out]
        loss = sum(ce(o, t) for o, t in zip(out, targets))
        loss.backward()
        net.zero_grad(set_to_none=True)

    # memory on the first pass: later ones reuse memory the allocator kept, which the RSS does not show again
    hwm_ok = _reset_hwm()
    base = _rss_hwm_kib()
    step()
    peak = _rss_hwm_kib() - base if hwm_ok else float("nan")
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return {"arch": arch, "configuration": configuration, "patch": "x".join(map(str, patch)), "batch": batch,
            "params_M": sum(p.numel() for p in net.parameters()) / 1e6, "deep_supervision": len(scales) if ds else 0,
            "time_s": float(np.median(times)), "peak_MiB": peak / 1024}


def synthetic_plans(root: Path, task: str) -> tuple[Path, Path]:
    """Plan the synthetic cohort with nnU-Net (fingerprint + plans, no preprocessing)."""
    from nnunet_wmhloc.env import nnunet_environ
    from nnunet_wmhloc.synth import make_cohort

    release = root / "release"
    make_cohort(release, seed=0, show_progress=False)
    env = nnunet_environ(root / "nnunet")
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        Path(env[k]).mkdir(parents=True, exist_ok=True)
    env["OMP_NUM_THREADS"] = "1"
    run = dict(env=env, check=True, capture_output=True, text=True)
    subprocess.run(["wmhloc_convert_wmh2017", str(release), "--region-labels", str(release / "region_labels")],
                   **run)
    dataset_id = "601" if task == "lesion" else "602"
    subprocess.run(["nnUNetv2_plan_and_preprocess", "-d", dataset_id, "--no_pp", "-np", "1", "-npfp", "1"], **run)
    name = "Dataset601_WMHLesion" if task == "lesion" else "Dataset602_WMHRegion"
    pre = Path(env["nnUNet_preprocessed"]) / name
    return pre / "nnUNetPlans.json", pre / "dataset.json"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--plans", help="nnUNetPlans.json (default: plan the synthetic cohort)")
    p.add_argument("--dataset-json", help="dataset.json belonging to --plans")
    p.add_argument("--task", choices=("lesion", "region"), default="lesion",
                   help="synthetic dataset to plan: lesion (601, 2 outputs) or region (602, 37 outputs)")
    p.add_argument("--configurations", nargs="+", default=["2d", "3d_fullres"])
    p.add_argument("--architectures", nargs="+", default=["UNet", "UNETR", "MultiResUNet", "MedNeXt"])
    p.add_argument("--reps", type=int, default=3, help="timed forward+backward passes per network")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.add_argument("--_worker", nargs=4, help=argparse.SUPPRESS)
    a = p.parse_args(argv)

    if a._worker:
        arch, cfg, plans, dj = a._worker
        print(json.dumps(worker(arch, cfg, plans, dj, a.reps, a.threads)))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        if a.plans:
            if not a.dataset_json:
                p.error("--plans needs --dataset-json")
            plans, dj = Path(a.plans), Path(a.dataset_json)
        else:
            print(f"planning the synthetic cohort ({a.task}) ...", file=sys.stderr)
            plans, dj = synthetic_plans(Path(tmp), a.task)
        rows = []
        env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
        for cfg in a.configurations:
            for arch in a.architectures:
                print(f"{cfg} {arch} ...", file=sys.stderr)
                r = subprocess.run([sys.executable, __file__, "--reps", str(a.reps), "--threads", str(a.threads),
                                    "--_worker", arch, cfg, str(plans), str(dj)],
                                   env=env, capture_output=True, text=True)
                if r.returncode != 0:
                    print(r.stderr[-2000:], file=sys.stderr)
                    return 1
                rows.append(json.loads(r.stdout.strip().splitlines()[-1]))

    head = f"{'configuration':<13} {'network':<13} {'patch':<10} {'batch':>5} {'params (M)':>10} {'DS outputs':>10} " \
           f"{'fwd+bwd (s/batch)':>17} {'peak mem (MiB)':>14}"
    print(f"CPU, {a.threads} thread(s), median of {a.reps}; peak mem = rise of peak RSS during forward+backward")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['configuration']:<13} {r['arch']:<13} {r['patch']:<10} {r['batch']:>5} {r['params_M']:>10.2f} "
              f"{r['deep_supervision'] or '-':>10} {r['time_s']:>17.3f} {r['peak_MiB']:>14.0f}")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
