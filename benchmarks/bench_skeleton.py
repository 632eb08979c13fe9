"""Benchmark of skeleton_labels (the skeleton-recall target built in the data pipeline): the current code vs
the straightforward per-class algorithm it replaced (kept below as `reference`, also the oracle of
tests/test_training_skeleton.py), per patch (prints a table).

Patches are crops of the authors' subject-space region maps in ../shared/data when present (37 classes; lesion
maps are blobs placed in the WM plus one ignore-label blob), else of a synthetic brain (see bench_trainers.py):
2D lesion patches (labels [1], ignore 2 present) and 3D region patches (labels 1..36), at the sizes nnU-Net
plans for the WMH data (2D 256 x 256, 3D 40 x 224 x 192) and smaller ones. Every output is checked equal to the
reference. Times are process CPU time, 1 thread; the median over patches is printed.

    OMP_NUM_THREADS=1 python benchmarks/bench_skeleton.py [--patches 12] [--quick]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def reference(seg, labels, tube=2):
    """The per-class algorithm before the speed-up: np.isin class map, per-class thinning, #3757 check with
    ndi.label and per-class binary_dilation for the tube."""
    from skimage.morphology import skeletonize
    seg = np.asarray(seg)
    out = np.zeros(seg.shape, dtype=np.int16)
    wanted = sorted({int(c) for c in labels if int(c) > 0})
    if not wanted:
        return out
    work = np.where(np.isin(seg, wanted), seg, 0).astype(np.int32, copy=False)
    if not work.any():
        return out
    cross = ndi.generate_binary_structure(seg.ndim, 1)
    for c0, sl in enumerate(ndi.find_objects(work)):
        c = c0 + 1
        if sl is None or c not in wanted:
            continue
        m = work[sl] == c
        sk = skeletonize(m)
        if m.ndim == 3:
            comps, n = ndi.label(m, structure=np.ones((3, 3, 3), bool))
            has_skel = np.bincount(comps[sk], minlength=n + 1)[1:] > 0
            if not has_skel.all():
                for i, csl in enumerate(ndi.find_objects(comps), start=1):
                    if csl is None or has_skel[i - 1]:
                        continue
                    comp = comps[csl] == i
                    dist = ndi.distance_transform_edt(np.pad(comp, 1))[(slice(1, -1),) * comp.ndim]
                    sk[csl] |= comp & (dist >= dist[comp].max())
        if tube > 0:
            sk = ndi.binary_dilation(sk, cross, iterations=tube, mask=m)
        out[sl][sk] = c
    return out


def _patches(pairs, task, dim, size, n, rng):
    from bench_trainers import _crop
    out = []
    for k in range(n):
        reg, les = pairs[k % len(pairs)]
        seg = les if task == "lesion" else reg
        _, lab = _crop(np.zeros(seg.shape, np.float32), seg, size, dim, rng, force_fg=k % 3 != 2)
        out.append(np.maximum(lab[0], 0))  # RemoveLabelTransform(-1 -> 0) runs before the skeleton
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--patches", type=int, default=12, help="patches per case (2D: 4x as many)")
    p.add_argument("--quick", action="store_true", help="few patches (checks the script runs)")
    a = p.parse_args(argv)
    from bench_trainers import _label_volumes
    from nnunet_wmhloc.training.skeleton import skeleton_labels

    rng = np.random.default_rng(0)
    pairs = _label_volumes(2 if a.quick else 4, rng)
    n = 2 if a.quick else a.patches
    cases = [("lesion", 2, (64, 56), [1]), ("lesion", 2, (256, 256), [1]), ("region", 2, (256, 256), range(1, 37)),
             ("lesion", 3, (40, 224, 192), [1]), ("region", 3, (48, 160, 160), range(1, 37)),
             ("region", 3, (40, 224, 192), range(1, 37))]
    print(f"{'task':7} {'patch':16} {'n':>3} {'reference ms':>13} {'current ms':>11} {'speed-up':>9}  equal")
    for task, dim, size, labels in cases:
        segs = _patches(pairs, task, dim, size, 4 * n if dim == 2 else n, rng)
        t_ref, t_new, equal = [], [], True
        for seg in segs:
            reps = 20 if dim == 2 else 1
            t0 = time.process_time()
            for _ in range(reps):
                r = reference(seg, labels)
            t1 = time.process_time()
            for _ in range(reps):
                s = skeleton_labels(seg, labels)
            t2 = time.process_time()
            t_ref.append((t1 - t0) / reps)
            t_new.append((t2 - t1) / reps)
            equal &= bool(np.array_equal(r, s))
        mr, mn = 1000 * np.median(t_ref), 1000 * np.median(t_new)
        print(f"{task:7} {str(size):16} {len(segs):3} {mr:13.2f} {mn:11.2f} {mr / mn:8.2f}x  {equal}")
        if not equal:
            print("error: outputs differ from the reference", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
