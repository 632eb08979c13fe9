"""Benchmark of the plugin's trainers against nnU-Net's default trainer (prints tables; not a test).

Times are process CPU time (time.process_time), which a machine shared with other jobs disturbs far less
than wall time; with one thread they equal the wall time of an idle machine (CUDA times are wall times after
a synchronize).

1. Workers: CPU time per batch of each trainer's data-loader pipeline (crop + augmentation + collation, one process, one
   thread, as one nnU-Net DA worker) for nnUNetTrainer (nnU-Net default), nnUNetTrainerWMHLocCEDC and
   nnUNetTrainerWMHLoc (+ skeleton channel), lesion task (2 classes + ignore) and 37-class region task, at the
   patch sizes nnU-Net plans for the WMH data, with ratios to the default; plus the time the trainer's
   device-side augmentation (device_aug.py) adds per iteration, on CUDA when a GPU is present, else on CPU.
   Goal: workers of our trainers <= 1.10x the default's. The trainers take turns batch by batch (the order
   rotating), batch i of each from the same crops and seeds, so a busy machine slows every trainer alike; the
   ratio is that of the mean times (what the GPU waits for), with a bootstrap interval over the paired batches
   (rare costly draws, such as nnU-Net's 3D blur, make single batches vary a lot).
2. Whole iteration on CPU (loader + train_step, which includes the device augmentation), each trainer on its
   own batches at CPU-sized patches, and the train_step alone.

Label maps come from the authors' subject-space region maps in ../shared/data when present (real anatomy,
37 classes; lesions are blobs placed in the WM), else from a synthetic brain. Images are label-dependent
intensities plus noise, z-scored. Networks and losses are built by the real trainer classes from a plans
dict written here in nnU-Net's format (PlainConvUNet, nnU-Net's stage/feature rules).

    python benchmarks/bench_trainers.py                 # defaults (several minutes on 2 cores)
    python benchmarks/bench_trainers.py --quick         # tiny sizes, a smoke run of the script
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _plans(dim: int, patch, batch: int, name: str) -> dict:
    """A plans dict in nnU-Net 2.8's format for a 1-channel MRI dataset (stages halve to >= 4 voxels)."""
    patch = [int(p) for p in patch]
    strides, size = [[1] * dim], list(patch)
    while len(strides) < (8 if dim == 2 else 6) and any(s >= 8 for s in size):
        st = [2 if s >= 8 else 1 for s in size]
        size = [s // t for s, t in zip(size, st)]
        strides.append(st)
    n = len(strides)
    feats = [min(32 * 2 ** i, 512 if dim == 2 else 320) for i in range(n)]
    conv = "torch.nn.modules.conv.Conv%dd" % dim
    norm = "torch.nn.modules.instancenorm.InstanceNorm%dd" % dim
    spacing = [0.96, 0.96] if dim == 2 else [3.0, 0.96, 0.96]
    cfg = {
        "data_identifier": f"nnUNetPlans_{dim}d", "preprocessor_name": "DefaultPreprocessor",
        "batch_size": batch, "patch_size": patch, "median_image_size_in_voxels": patch, "spacing": spacing,
        "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {"n_stages": n, "features_per_stage": feats, "conv_op": conv,
                            "kernel_sizes": [[3] * dim] * n, "strides": strides, "n_conv_per_stage": [2] * n,
                            "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True, "norm_op": norm,
                            "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None,
                            "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                            "nonlin_kwargs": {"inplace": True}},
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
        "batch_dice": dim == 2,
    }
    return {"dataset_name": name, "plans_name": "nnUNetPlans", "original_median_spacing_after_transp": [3.0, 0.96, 0.96],
            "original_median_shape_after_transp": [48, 240, 240], "image_reader_writer": "SimpleITKIO",
            "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2], "experiment_planner_used": "bench",
            "label_manager": "LabelManager",
            "foreground_intensity_properties_per_channel": {"0": {"max": 4.0, "mean": 0.0, "median": 0.0, "min": -2.0,
                                                                  "percentile_00_5": -2.0, "percentile_99_5": 4.0,
                                                                  "std": 1.0}},
            "configurations": {f"{dim}d": cfg}}


def _dataset_json(task: str) -> dict:
    labels = {"background": 0, "WMH": 1, "ignore": 2} if task == "lesion" else \
        dict({"background": 0}, **{f"region{i}": i for i in range(1, 37)})
    return {"channel_names": {"0": "MRI"}, "labels": labels, "numTraining": 4, "file_ending": ".nii.gz"}


# ------------------------------------------------------------------------------------------- source data
def _label_volumes(n: int, rng) -> list[tuple[np.ndarray, np.ndarray]]:
    """(region map 0..36, lesion map 0/1/2) pairs, z-y-x, ~48 x 240 x 240."""
    files = sorted(glob.glob(str(Path(__file__).resolve().parents[2] / "shared/data/wmhlocalization/"
                                 "WMH_refined_labels/Train/WMH_*.nii.gz")))
    out = []
    if files:
        import SimpleITK as sitk
        for f in files[:n]:
            out.append(sitk.GetArrayFromImage(sitk.ReadImage(f)).astype(np.int16))
        src = "authors' region maps (shared data)"
    else:
        z, y, x = np.mgrid[:48, :240, :240]
        for _ in range(n):
            r = np.sqrt(((z - 24) / 20) ** 2 + ((y - 120) / 95) ** 2 + ((x - 120) / 80) ** 2)
            ang = (np.arctan2(y - 120, x - 120) + np.pi) / (2 * np.pi)
            reg = np.where(r < 0.75, 1 + (ang * 17).astype(int) + 17 * (x > 120), 0)
            reg[(r < 0.75) & (z < 10)] = 35 + (x[(r < 0.75) & (z < 10)] > 120)
            out.append(reg.astype(np.int16))
        src = "synthetic brain"
    pairs = []
    for reg in out:
        les = np.zeros_like(reg)
        wm = np.argwhere(reg > 0)
        for k in range(25):
            c = wm[rng.integers(len(wm))]
            r = rng.uniform(1.5, 5)
            sl = tuple(slice(max(0, ci - 6), ci + 7) for ci in c)
            zz, yy, xx = np.meshgrid(*[np.arange(s.start, min(s.stop, sh)) for s, sh in zip(sl, reg.shape)],
                                     indexing="ij")
            blob = ((zz - c[0]) * 3) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r
            les[sl][blob & (reg[sl] > 0)] = 2 if k == 0 else 1
        pairs.append((reg, les))
    print(f"label maps: {len(pairs)} volumes from {src}, shape {pairs[0][0].shape}")
    return pairs


def _image(labels: np.ndarray, rng) -> np.ndarray:
    img = (labels > 0) * 1.0 + 0.02 * labels + rng.normal(0, 0.3, labels.shape)
    return ((img - img.mean()) / img.std()).astype(np.float32)


def _crop(vol: np.ndarray, seg: np.ndarray, size, dim: int, rng, force_fg: bool):
    """nnU-Net-like crop of `size` (padded with seg -1 outside) around a random or a foreground voxel."""
    if dim == 2:
        z = rng.integers(vol.shape[0]) if not force_fg else np.argwhere(seg > 0)[rng.integers((seg > 0).sum())][0]
        vol, seg = vol[z], seg[z]
    if force_fg and (seg > 0).any():
        centre = np.argwhere(seg > 0)[rng.integers((seg > 0).sum())]
    else:
        centre = np.array([rng.integers(s) for s in seg.shape])
    img = np.zeros(size, np.float32)
    lab = np.full(size, -1, np.int16)
    src, dst = [], []
    for c, s, n in zip(centre, size, seg.shape):
        lo = int(c) - s // 2
        a, b = max(lo, 0), min(lo + s, n)
        src.append(slice(a, b))
        dst.append(slice(a - lo, b - lo))
    img[tuple(dst)] = vol[tuple(src)]
    lab[tuple(dst)] = seg[tuple(src)]
    return img[None], lab[None]


# ----------------------------------------------------------------------------------------------- timing
def _trainer(cls, dim, patch, batch, task):
    import torch
    plans = _plans(dim, patch, batch, f"Dataset999_bench{task}")
    tr = cls(dict(plans, continue_training=False), f"{dim}d", 0, _dataset_json(task), device=torch.device("cpu"))
    tr.batch_size = batch
    tr.network = tr.build_network_architecture(tr.plans_manager, tr.configuration_manager, 1,
                                               tr.label_manager.num_segmentation_heads, True)
    tr.optimizer, tr.lr_scheduler = tr.configure_optimizers()
    tr.loss = tr._build_loss()
    tr.was_initialized = True
    return tr


def _pipeline_args(tr):
    rot, dummy2d, init_patch, mirror = tr.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    lm = tr.label_manager
    return [int(i) for i in init_patch], (tr.configuration_manager.patch_size, rot, tr._get_deep_supervision_scales(),
                                          mirror, dummy2d), dict(
        use_mask_for_norm=tr.configuration_manager.use_mask_for_norm, is_cascaded=False,
        foreground_labels=lm.foreground_labels, regions=None, ignore_label=lm.ignore_label)


def _make_batch(pipe, crops, batch, seed=None):
    """Collated batch of `pipe` on the crops. With `seed`, sample i's augmentation draws start from seed + i, so
    every trainer's pipeline gets the same spatial transform (the costliest, most variable part) per sample."""
    import torch
    data, segs = [], None
    for i, (img, lab) in enumerate(crops[:batch]):
        if seed is not None:
            np.random.seed(seed + i)
            torch.manual_seed(seed + i)
        out = pipe(image=torch.from_numpy(img.copy()), segmentation=torch.from_numpy(lab.copy()))
        data.append(out["image"])
        s = out["segmentation"]
        s = s if isinstance(s, list) else [s]  # a tensor when the deep-supervision targets are made on the device
        segs = [[x] for x in s] if segs is None else [acc + [x] for acc, x in zip(segs, s)]
    target = [torch.stack(x) for x in segs]
    return {"data": torch.stack(data), "target": target if isinstance(out["segmentation"], list) else target[0]}


TRAINERS = ("nnUNetTrainer", "nnUNetTrainerWMHLocCEDC", "nnUNetTrainerWMHLoc")


def _classes():
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunet_wmhloc.training import trainers
    return [nnUNetTrainer, trainers.nnUNetTrainerWMHLocCEDC, trainers.nnUNetTrainerWMHLoc]


def _sample(pairs, images, task, init_patch, dim, rng):
    k = rng.integers(len(pairs))
    reg, les = pairs[k]
    return _crop(images[k], les if task == "lesion" else reg, init_patch, dim, rng, force_fg=rng.uniform() < 0.33)


def _device_time(aug, batch, device) -> float:
    """Seconds the device augmentation (with the deep-supervision targets) takes on one batch (moved to `device`
    first, not timed)."""
    import torch
    data, target = batch["data"].to(device), batch["target"]
    target = [t.to(device) for t in target] if isinstance(target, list) else target.to(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        aug(data, target)
        torch.cuda.synchronize()
        return time.perf_counter() - t0
    t0 = time.process_time()
    aug(data, target)
    return time.process_time() - t0


def _warm_blur(pipe, patch) -> None:
    """batchgeneratorsv2's GaussianBlurTransform(benchmark=True) times conv against FFT the first time it meets
    an axis length and kernel size, a one-off cost of a long training: pay it here, outside the timing."""
    import torch
    from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
    dummy = torch.zeros((1, *[int(p) for p in patch]))
    for t in pipe.transforms:
        t = getattr(t, "transform", t)
        if isinstance(t, GaussianBlurTransform) and t.benchmark:
            lo, hi = t.blur_sigma
            for sigma in np.linspace(lo, hi, 21):
                for d in range(dummy.ndim - 1):
                    t._benchmark_wrapper(dummy, float(sigma), d)


def _setup(cls, dim, patch, batch, task):
    tr = _trainer(cls, dim, patch, batch, task)
    init_patch, args, kw = _pipeline_args(tr)
    pipe = tr.get_training_transforms(*args, **kw)
    _warm_blur(pipe, patch)
    return tr, init_patch, pipe


def _interleaved(setups, pairs, images, task, dim, batch, n, seed):
    """(i, k, batch, worker CPU s) for n + 1 rounds (i = 0 warms up); in each round every setup k makes one
    batch, in an order that rotates between rounds, from the same crop draws and augmentation seeds: the
    trainers share the machine's state (load, caches, clock) round by round instead of one after another."""
    for i in range(n + 1):
        for j in range(len(setups)):
            k = (i + j) % len(setups)
            tr, init_patch, pipe = setups[k]
            rng = np.random.default_rng([seed, i])
            t0 = time.process_time()
            crops = [_sample(pairs, images, task, init_patch, dim, rng) for _ in range(batch)]
            b = _make_batch(pipe, crops, batch, seed=1000 * i)
            yield i, k, b, time.process_time() - t0


def bench_loading(dim, patch, batch, task, pairs, n_batches, seed, device):
    """{trainer: (worker s per batch [list], device s per iteration [list])}, batch i of every trainer made
    from the same draws (so the lists pair up)."""
    rng = np.random.default_rng(seed)
    images = [_image(reg, rng) for reg, _ in pairs]
    classes = _classes()
    setups = [_setup(cls, dim, patch, batch, task) for cls in classes]
    results = {cls.__name__: ([], []) for cls in classes}
    for i, k, b, load in _interleaved(setups, pairs, images, task, dim, batch, n_batches, seed):
        aug = getattr(setups[k][0], "device_augmentation", None)  # made with the training transforms
        d = _device_time(aug, b, device) if aug is not None else 0.0
        if i:
            results[classes[k].__name__][0].append(load)
            results[classes[k].__name__][1].append(d)
    return results


def bench_iterations(dim, patch, batch, task, pairs, n_iter, seed):
    """{trainer: (loader s [list], train_step s [list])} on CPU, each trainer on its own pipeline's batches,
    interleaved round by round."""
    classes = _classes()
    setups = [_setup(c, dim, patch, batch, task) for c in classes]
    sd = setups[0][0].network.state_dict()
    for tr, _, _ in setups[1:]:  # identical initial weights
        tr.network.load_state_dict(sd)
    rng = np.random.default_rng(seed)
    images = [_image(reg, rng) for reg, _ in pairs]
    for tr, _, _ in setups:
        tr.on_train_epoch_start()
    out = {c.__name__: ([], []) for c in classes}
    for i, k, b, t_load in _interleaved(setups, pairs, images, task, dim, batch, n_iter, seed):
        t1 = time.process_time()
        setups[k][0].train_step(b)
        if i:
            out[classes[k].__name__][0].append(t_load)
            out[classes[k].__name__][1].append(time.process_time() - t1)
    return out


def _paired(work, base, n_boot: int = 2000):
    """Ratio of the mean times (the workers' throughput) and its 90% bootstrap interval, resampling the paired
    batches (batch i of both from the same draws)."""
    w, b = np.asarray(work), np.asarray(base)
    idx = np.random.default_rng(0).integers(len(w), size=(n_boot, len(w)))
    boot = w[idx].mean(1) / b[idx].mean(1)
    return w.mean() / b.mean(), np.percentile(boot, 5), np.percentile(boot, 95)


def _each(cfgs, quiet, bench, *args):
    """(task, label, bench's result) for both tasks and every (dim, patch, batch) of cfgs."""
    for task in ("lesion", "region"):
        for dim, patch, batch in cfgs:
            with quiet:
                res = bench(dim, patch, batch, task, *args)
            yield task, _label(dim, patch, batch), res


def _label(dim, patch, batch) -> str:
    return f"{dim}D {str(tuple(patch)) + ' x ' + str(batch):20}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes and few repeats (checks the script runs)")
    p.add_argument("--iters", type=int, default=6, help="timed training iterations per trainer (after 1 warm-up)")
    p.add_argument("--batches", type=int, default=24, help="timed batches per augmentation pipeline")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the training steps")
    p.add_argument("--skip-train", action="store_true", help="only the workers' table")
    p.add_argument("--skip-data", action="store_true", help="only the whole-iteration table")
    a = p.parse_args(argv)

    os.environ.setdefault("nnUNet_compile", "0")
    tmp = tempfile.mkdtemp(prefix="wmhloc_bench_")
    os.environ["nnUNet_results"] = tmp  # trainers write their log files there
    os.environ.pop("nnUNet_preprocessed", None)
    import torch
    import contextlib
    import io

    pairs = _label_volumes(2 if a.quick else 4, np.random.default_rng(0))
    # data loading: the sizes nnU-Net plans for the WMH data (2D 256^2 x 12, 3D 40 x 224 x 192 x 2)
    data_cfgs = [(2, (64, 64), 4), (3, (16, 48, 48), 2)] if a.quick else [(2, (256, 256), 12), (3, (40, 224, 192), 2)]
    # whole iterations: CPU-sized patches (a 256x256 x 12 2D batch takes tens of seconds per step on 2 cores)
    train_cfgs = [(2, (32, 32), 2), (3, (16, 32, 32), 1)] if a.quick else [(2, (128, 128), 8), (3, (32, 96, 96), 2)]
    nb, iters = (2, 1) if a.quick else (a.batches, a.iters)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    quiet = contextlib.redirect_stdout(io.StringIO())

    if not a.skip_data:
        torch.set_num_threads(1)
        print(f"\n## Workers: CPU s per batch, 1 thread (mean of {nb} interleaved rounds); vs default = ratio of "
              f"the means (same draws), with its 90% bootstrap interval; device augmentation s per iteration "
              f"on {device.type}")
        print(f"{'task':7} {'config':23} {'trainer':26} {'worker s':>9} {'vs default':>10} {'p5':>6} {'p95':>6} "
              f"{'device s':>9}")
        for task, label, res in _each(data_cfgs, quiet, bench_loading, pairs, nb, 1, device):
            base = res[TRAINERS[0]][0]
            for name, (work, dev) in res.items():
                ratio, lo, hi = _paired(work, base)
                print(f"{task:7} {label} {name:26} {np.mean(work):9.3f} {ratio:9.2f}x {lo:6.2f} {hi:6.2f} "
                      f"{np.mean(dev):9.3f}")
    if not a.skip_train:
        torch.set_num_threads(a.threads)
        print(f"\n## Whole iteration on CPU, {a.threads} thread(s) for the step (mean of {iters} interleaved "
              f"rounds): loader (1 thread) + train_step (incl. device augmentation)")
        print(f"{'task':7} {'config':23} {'trainer':26} {'loader s':>9} {'step s':>8} {'total s':>8} {'vs default':>10}")
        for task, label, res in _each(train_cfgs, quiet, bench_iterations, pairs, iters, 2):
            base = np.asarray(res[TRAINERS[0]][0]) + np.asarray(res[TRAINERS[0]][1])
            for name, (load, step) in res.items():
                tot = np.asarray(load) + np.asarray(step)
                print(f"{task:7} {label} {name:26} {np.mean(load):9.3f} {np.mean(step):8.3f} "
                      f"{np.mean(tot):8.3f} {_paired(tot, base)[0]:9.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
