"""Cost of io.read_image's completeness check for integer NIfTI files (issue #16: ITK reads a truncated
.nii.gz "fine", so integer label maps, masks and atlases are checked on disk too).

For a 240x240x48 challenge label map and a 181x217x181 atlas-sized one (uint8 and int16, realistic
label content, gzip-compressed as our writers do) it prints, in ms per file (median of --repeat):
ITK's read alone, the check read_image adds (header + gzip trailer size), the same check when the
trailer does not settle it (streamed decompression), the whole read_image, and what a full nibabel read
of the voxels would cost instead.

    python benchmarks/bench_read_checks.py [--repeat 7]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_wmhloc import io


def _labels(shape_zyx, dtype, seed=0) -> np.ndarray:
    """Blocky labels 0..36 inside an ellipsoid, like a region map (compresses like one)."""
    z, y, x = np.indices(shape_zyx, dtype=np.float32)
    c = [(n - 1) / 2 for n in shape_zyx]
    r = ((z - c[0]) / c[0]) ** 2 + ((y - c[1]) / c[1]) ** 2 + ((x - c[2]) / c[2]) ** 2
    lab = ((x // 12 + y // 15 + z // 9) % 36 + 1).astype(dtype)
    lab[r > 0.8] = 0
    return lab


def _ms(f, repeat: int) -> float:
    t = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        t.append((time.perf_counter() - t0) * 1000)
    return statistics.median(t)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=7)
    a = p.parse_args(argv)
    import nibabel as nib

    print(f"{'image':>26} {'ITK read':>9} {'check':>7} {'streamed':>9} {'read_image':>11} {'nibabel full':>13}"
          "  (ms)")
    with tempfile.TemporaryDirectory() as d:
        for size, spacing in (((240, 240, 48), (0.96, 0.96, 3.0)), ((181, 217, 181), (1.0, 1.0, 1.0))):
            for dtype in (np.uint8, np.int16):
                img = sitk.GetImageFromArray(_labels(size[::-1], dtype))
                img.SetSpacing(spacing)
                path = Path(d) / f"lab_{size[2]}_{np.dtype(dtype).name}.nii.gz"
                sitk.WriteImage(img, str(path), True)
                itk = _ms(lambda: sitk.ReadImage(str(path)), a.repeat)
                check = _ms(lambda: io.images._check_nifti_file(path, "label map", False), a.repeat)
                streamed = _ms(lambda: io.images._nifti_bytes(path, -1), a.repeat)  # -1: the trailer never matches
                full = _ms(lambda: io.read_image(path), a.repeat)
                nibfull = _ms(lambda: np.asanyarray(nib.load(str(path)).dataobj), a.repeat)
                name = f"{'x'.join(map(str, size))} {np.dtype(dtype).name}"
                print(f"{name:>26} {itk:9.1f} {check:7.1f} {streamed:9.1f} {full:11.1f} {nibfull:13.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
