"""WM estimate of wmhloc_region_labels on real brains with a known WM (issue 13). Prints figures; no pass/fail.

- ICBM152 2009a (nilearn's copy: skull-stripped T1 and its WM probability map): WM Dice against p > 0.5, volumes.
- Eve (../shared/data/eve_atlas): Dice against its FSL WM class.
- Eve inside a synthetic head (CSF rim, skull, scalp fat; atlas/_synthetic.py) against Eve stripped.
- The two external references (MNI152, Rorden; no WM truth): WM, GM and brain volumes, WM/brain ratio.
Timings are CPU seconds of the brain/WM estimate alone (SimpleITK with --threads threads).

    OMP_NUM_THREADS=1 python benchmarks/bench_wm_estimate.py [--shared ../shared/data]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_wmhloc.atlas import _atlas, _subject, _synthetic

REPO = Path(__file__).resolve().parents[1]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(1.0, float(a.sum() + b.sum()))


def estimate(img: sitk.Image) -> tuple[np.ndarray, np.ndarray, bool, float]:
    """(brain mask, tissue classes, detected stripped, CPU s)."""
    c0, info = time.process_time(), {}
    brain, tissue = _subject.segment(img, info=info)
    return (sitk.GetArrayFromImage(brain) > 0, sitk.GetArrayFromImage(tissue), info["skull_stripped"],
            time.process_time() - c0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", default=os.environ.get("WMHLOC_SHARED", str(REPO.parent / "shared")) + "/data")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(a.threads)
    shared = Path(a.shared)
    ml = lambda m, img: float(m.sum()) * float(np.prod(img.GetSpacing())) / 1000.0  # noqa: E731
    try:
        import nilearn
        d = Path(nilearn.__file__).parent / "datasets" / "data"
        t1 = sitk.ReadImage(str(d / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"), sitk.sitkFloat32)
        ref = sitk.GetArrayFromImage(sitk.ReadImage(str(d / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"),
                                                    sitk.sitkFloat32)) / 255.0 > 0.5
        b, t, s, cpu = estimate(t1)
        wm = t == 3
        print(f"ICBM152 2009a: WM {ml(wm, t1):.0f} ml vs {ml(ref, t1):.0f} ml (p > 0.5), "
              f"{100 * (wm.sum() / ref.sum() - 1):+.0f}%, Dice {dice(wm, ref):.3f}; stripped detected {s}; {cpu:.1f} s CPU")
    except ImportError:
        print("ICBM152: nilearn not installed (pip install nilearn)")
    atlas = _atlas.build_from_eve(shared / "eve_atlas")[0]
    ref = sitk.GetArrayFromImage(atlas.tissue) == 3
    b, t, s, cpu = estimate(atlas.t1)
    wm_s = t == 3
    print(f"Eve: WM {ml(wm_s, atlas.t1):.0f} ml vs FSL {ml(ref, atlas.t1):.0f} ml, Dice {dice(wm_s, ref):.3f}; "
          f"stripped detected {s}; {cpu:.1f} s CPU")
    head = _synthetic._head(atlas)
    b, t, s, cpu = estimate(head)
    pad = [int(round(24.0 / sp)) for sp in atlas.t1.GetSpacing()]
    wm_h = (t == 3)[pad[2]:-pad[2], pad[1]:-pad[1], pad[0]:-pad[0]]
    print(f"Eve with skull: WM {ml(wm_h, atlas.t1):.0f} ml vs stripped {ml(wm_s, atlas.t1):.0f} ml "
          f"({100 * (wm_h.sum() / wm_s.sum() - 1):+.0f}%), Dice with stripped {dice(wm_h, wm_s):.3f}, "
          f"with FSL {dice(wm_h, ref):.3f}; stripped detected {s}; {cpu:.1f} s CPU")
    for name in ("MNI152_T1_1mm_brain.nii.gz", "betsct1_unsmooth.nii.gz"):
        img = sitk.ReadImage(str(shared / "external_reference" / name), sitk.sitkFloat32)
        b, t, s, cpu = estimate(img)
        wm, gm = ml(t == 3, img), ml(t == 2, img)
        print(f"{name}: WM {wm:.0f} ml, GM {gm:.0f} ml, brain {ml(b, img):.0f} ml, WM/brain "
              f"{wm / ml(b, img):.2f}; stripped detected {s}; {cpu:.1f} s CPU")


if __name__ == "__main__":
    main()
