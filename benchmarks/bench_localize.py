"""Benchmark wmhloc_localize: N subjects at challenge geometry (240x240x48, 0.96x0.96x3 mm) in one pass.

Region maps: the authors' real 240x240x48 subject maps from ../shared/data/wmhlocalization when present
(cycled), otherwise a synthetic 36-label partition. Lesions: smoothed-noise blobs inside the region maps'
foreground (~10-30 mL per subject, a few dozen 26-connected lesions). Prints subjects/second for the whole
stage function (read, check, label, write CSVs and maps) and for the in-memory computation alone.

    python benchmarks/bench_localize.py [--n 170] [--no-maps]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from nnunet_wmhloc.postprocessing import localize

SHARED = Path(os.environ.get("WMHLOC_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "data"
SIZE = (240, 240, 48)
SPACING = (0.958, 0.958, 3.0)


def region_maps(k: int) -> list[sitk.Image]:
    folder = SHARED / "wmhlocalization" / "WMH_refined_labels"
    out = []
    if folder.is_dir():
        for f in sorted(folder.glob("*/*.nii.gz")):
            r = sitk.ImageFileReader()
            r.SetFileName(str(f))
            r.ReadImageInformation()
            if r.GetSize() == SIZE:
                out.append(sitk.ReadImage(str(f)))
            if len(out) == k:
                break
    if out:
        return out
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in SIZE[::-1]], indexing="ij")
    lab = (1 + (yy // 30) * 2 + (zz // 12)) % 17 + 1 + 17 * (xx >= SIZE[0] // 2)
    lab[(xx < 20) | (xx > 220)] = 0
    img = sitk.GetImageFromArray(lab.astype(np.int16))
    img.SetSpacing(SPACING)
    return [img]


def make_data(root: Path, n: int, rng) -> None:
    maps = region_maps(8)
    (root / "lesions").mkdir()
    (root / "regions").mkdir()
    for i in range(n):
        reg = maps[i % len(maps)]
        arr = sitk.GetArrayViewFromImage(reg)
        noise = ndimage.gaussian_filter(rng.random(arr.shape, dtype=np.float32), (0.7, 2.5, 2.5))
        thr = np.quantile(noise[arr > 0], 1 - rng.uniform(0.01, 0.04))
        les = ((noise > thr) & (arr > 0)).astype(np.uint8)
        img = sitk.GetImageFromArray(les)
        img.CopyInformation(reg)
        sitk.WriteImage(img, str(root / "lesions" / f"wmh{i:03d}.nii.gz"), True)
        sitk.WriteImage(reg, str(root / "regions" / f"wmh{i:03d}.nii.gz"), True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=170)
    ap.add_argument("--no-maps", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        make_data(root, args.n, rng)
        print(f"made {args.n} synthetic subjects in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        t = time.perf_counter()
        res = localize.localize(root / "lesions", root / "regions", root / "out", write_maps=not args.no_maps)
        dt = time.perf_counter() - t
        n_les = len(res.lesions)
        print(f"wmhloc_localize end to end: {args.n} subjects, {n_les} lesions in {dt:.2f} s = "
              f"{args.n / dt:.1f} subjects/s (maps {'off' if args.no_maps else 'on'})")
        # computation alone, data already in memory
        pairs = [(sitk.GetArrayFromImage(sitk.ReadImage(str(root / "lesions" / f"wmh{i:03d}.nii.gz"))) == 1,
                  sitk.ReadImage(str(root / "regions" / f"wmh{i:03d}.nii.gz"))) for i in range(min(args.n, 40))]
        arrays = [(les, sitk.GetArrayFromImage(reg), reg) for les, reg in pairs]
        t = time.perf_counter()
        for les, reg, img in arrays:
            localize.localize_arrays(les, reg, img)
        dt = time.perf_counter() - t
        print(f"in-memory localize_arrays(): {len(arrays) / dt:.1f} subjects/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
