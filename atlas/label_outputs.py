"""Writing one subject's region labels: the label map with its sidecars (.tfm transform, _qc.png, .json record)
as one unit, after checking that nothing of the user's is replaced; `region_labels_subject` is the whole
one-subject command as a function."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_wmhloc import io, parallel
from nnunet_wmhloc.atlas import _atlas
from nnunet_wmhloc.atlas.subject_labels import TOOL, Outcome, label_subject
from nnunet_wmhloc.io import WMHLocError


def sidecars(output: Path) -> dict[str, Path]:
    stem = io.strip_nifti(output)
    return {"tfm": output.with_name(stem + ".tfm"), "qc": output.with_name(stem + "_qc.png"),
            "json": output.with_name(stem + ".json")}


def qc_png(t1: sitk.Image, labels: sitk.Image, path: Path, title: str = "", wm: sitk.Image | None = None) -> None:
    """Three planes through the labelled centre: the subject's WM outlined over the T1 (top row, when
    `wm` is given) beside the labels over the T1 (bottom row)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    t1o = sitk.DICOMOrient(sitk.Resample(t1, labels), "LPS")  # radiological: patient right on the left
    lo = sitk.DICOMOrient(labels, "LPS")
    a = sitk.GetArrayFromImage(t1o).astype(np.float32)
    lab = sitk.GetArrayFromImage(lo)
    w = None if wm is None else sitk.GetArrayFromImage(sitk.DICOMOrient(wm, "LPS")) > 0
    sx, sy, sz = lo.GetSpacing()
    idx = np.argwhere(lab > 0)
    cz, cy, cx = (idx.mean(0).round().astype(int) if idx.size else np.array(lab.shape) // 2)
    lo_v, hi_v = np.percentile(a[a > 0], [1, 99.5]) if (a > 0).any() else (0, 1)
    rng = np.random.default_rng(7)
    colors = np.vstack([[0, 0, 0, 0], np.c_[rng.uniform(0.15, 1, (36, 3)), np.full(36, 0.55)]])
    cmap = ListedColormap(colors)
    cuts = [("axial", np.s_[cz], sy / sx, "upper"), ("coronal", np.s_[:, cy, :], sz / sx, "lower"),
            ("sagittal", np.s_[:, :, cx], sz / sy, "lower")]
    rows = 1 if w is None else 2
    fig, axes = plt.subplots(rows, 3, figsize=(13, 4.6 * rows), squeeze=False)
    for j, (name, cut, aspect, origin) in enumerate(cuts):
        for i in range(rows):
            ax = axes[i, j]
            ax.imshow(a[cut], cmap="gray", vmin=lo_v, vmax=hi_v, aspect=aspect, origin=origin,
                      interpolation="nearest")
            if i == 0 and w is not None:
                ax.contour(w[cut].astype(np.float32), levels=[0.5], colors="red", linewidths=0.6, origin=origin)
                ax.set_title(f"{name}: subject WM (outline)")
            else:
                ax.imshow(np.ma.masked_equal(lab[cut], 0), cmap=cmap, vmin=0, vmax=36, aspect=aspect,
                          origin=origin, interpolation="nearest")
                ax.set_title(f"{name}: region labels")
            ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _ours(json_path: Path) -> bool:
    """Whether json_path is a record this command wrote (so the sidecars beside it are ours)."""
    try:
        return json.loads(json_path.read_text(encoding="utf-8")).get("tool") == TOOL
    except (OSError, ValueError, AttributeError):
        return False


def check_outputs(output: Path, overwrite: bool, extra: tuple[Path, ...] = (), inputs=()) -> bool:
    """io.check_output for the label map and its sidecars: existing ones are refused without --overwrite,
    except the sidecars an interrupted run left (no label map, our JSON record beside them). Returns
    whether existing files may be replaced."""
    sc = sidecars(output)
    replace = overwrite or (not output.exists() and _ours(sc["json"]))
    for q in [output, *sc.values(), *extra]:
        io.check_output(q, overwrite=replace, inputs=inputs, kind="file")
    return replace


def write_outcome(o: Outcome, output: Path, replace: bool, extra: dict[str, sitk.Image] | None = None) -> list[Path]:
    """Write the label map and its sidecars (and `extra` images, by file name) as one unit: all are built
    in a hidden temporary folder beside the output, then moved into place, JSON first (it marks the set
    as ours) and the label map last (its presence means success). `replace`: what check_outputs, run before
    the work, returned. Returns the files written, the label map last."""
    extra = extra or {}
    sc = sidecars(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    # named as a task's staging folder, so a cohort run sweeps what a killed worker left
    tmp = io.new_temp_dir(f"{parallel.STAGING_PREFIX}{io.fit_name(output.name, 180)}-", dir=output.parent)
    try:
        io.write_json(o.quality, tmp / sc["json"].name)
        sitk.WriteTransform(o.transform, str(tmp / sc["tfm"].name))
        q = o.quality
        qc_png(o.t1, o.labels, tmp / sc["qc"].name, wm=o.wm,
               title=f"{output.name}: WM {q['wm_ml']:.0f} ml ({100 * q['wm_brain_ratio']:.0f}% of the brain), "
               f"WM Dice atlas/subject {q['wm_dice_atlas_vs_subject']:.2f}, "
               f"WM labelled {100 * q['subject_wm_labelled']:.0f}%" + ("  WARNING: WM/brain ratio" if q["warnings"] else ""))
        for name, img in extra.items():
            io.write_image(img, tmp / name)
        io.write_image(o.labels, tmp / output.name)
        written = []
        for name in [sc["json"].name, sc["tfm"].name, sc["qc"].name, *extra, output.name]:
            dst = output.with_name(name)
            if not replace:
                io.check_overwrite(dst, False)  # appeared meanwhile (another run): do not clobber it
            os.replace(tmp / name, dst)
            written.append(dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return written


@dataclass
class SubjectLabels:
    """What region_labels_subject made: the label map, every file written (the map last), the JSON record."""
    output: Path
    files: list
    quality: dict


def region_labels_subject(t1, atlas_dir, output, *, flair=None, wm_mask=None, deformable: bool = False,
                          skull_stripped: bool | None = None, save_masks: bool = False,
                          overwrite: bool = False) -> SubjectLabels:
    """wmhloc_region_labels --t1: label one subject and write <output> (.nii.gz/.nii) with its sidecars (and
    <stem>_brainmask/_wm.nii.gz with `save_masks`). Outputs are checked before any work."""
    output = Path(output)
    if not output.name.endswith(io.NIFTI_SUFFIXES):
        raise WMHLocError(f"{output}: output must be a .nii.gz or .nii file")
    stem = io.strip_nifti(output)
    masks = (stem + "_brainmask.nii.gz", stem + "_wm.nii.gz") if save_masks else ()
    replace = check_outputs(output, overwrite, tuple(output.with_name(n) for n in masks),
                            inputs=[t1, flair, wm_mask])
    atlas = _atlas.load_atlas(atlas_dir)
    o = label_subject(t1, atlas, flair_path=flair, wm_path=wm_mask, deformable=deformable,
                      skull_stripped=skull_stripped)
    files = write_outcome(o, output, replace, dict(zip(masks, (o.brain, o.wm))))
    return SubjectLabels(output, files, o.quality)


