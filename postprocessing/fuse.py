"""wmhloc_fuse: average nnU-Net FLAIR/T1 probabilities per subject and take the argmax.

Input: one or more folders written by `nnUNetv2_predict --save_probabilities` holding cases
`<subject>_<modality>` (e.g. wmh012_flair, wmh012_t1): `<case>.npz` (key 'probabilities'), `<case>.pkl` and
the segmentation `<case>.nii.gz`. nnU-Net's plans.json / dataset.json / predict_from_raw_data_args.json in
those folders are ignored (dataset.json is only read to refuse region-based models).

Per subject the probabilities of the selected modalities are mapped onto the segmentation's grid (see
_nnunet_pred: reverting SimpleITKIOWithReorient where used), averaged with the given weights
(renormalised over the modalities present) and turned into labels by argmax; the label of channel c is c,
as in nnU-Net's own export. A weight of 0 makes a modality a fallback: used only for subjects that have
none of the weighted ones (e.g. `--modalities flair t1 --weights 1 0`: FLAIR alone, T1 where FLAIR is missing).
This works for any softmax model: the lesion task (2 channels when label 2 is
declared 'ignore' — nnU-Net predicts no ignore class — or 3 when 'other pathology' is a class) and the
region task (37 channels). A subject with only one of the modalities falls back to it: reported on stderr
and in fusion_log.csv.

Output folder (created atomically, nothing is left on error):
- `<subject>.nii.gz`: uint8 labels, geometry (size, spacing, origin, direction) of the subject's nnU-Net
  segmentation, i.e. of the input image. uint8 is what nnU-Net itself writes; it is safe for the WMH
  challenge evaluation, which thresholds integer images at [1, 1000] (tested in tests/).
- with `--probability-label L`: `probabilities/<subject>.nii.gz`, float32 in [0, 1], the fused probability of
  label L on the same grid, made consistent with the label map: `p > 0.5` exactly where the label is L.
  For a 2-class model argmax == (p > 0.5) already, up to float rounding of p0 + p1 = 1 and exact ties (which
  argmax gives to channel 0); those voxels move by at most a few ulps to 0.5 / the next float above it.
  With 3+ classes a voxel whose argmax is L with p <= 0.5 (or the reverse) is set to that boundary too:
  counted in fusion_log.csv (probability_adjusted_voxels).
- `fusion_log.csv`: one row per subject: modalities used, weights, fallback, channels, foreground voxels,
  voxels where the modalities' own argmax disagree, files.
- `fusion_log.json`: options and skipped files.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk

from nnunet_wmhloc import cli
from nnunet_wmhloc.io import WMHLocError, atomic_dir, check_output, write_csv, write_json
from nnunet_wmhloc.postprocessing._nnunet_pred import CaseReader, scan_prediction_folders

LOG_COLUMNS = ["subject", "modalities_used", "weights", "fallback", "missing_modalities", "n_channels",
               "foreground_voxels", "disagreeing_voxels", "probability_adjusted_voxels", "files"]
HALF_UP = np.nextafter(np.float32(0.5), np.float32(1))  # the smallest float32 above 0.5


@dataclass
class FuseResult:
    """What wmhloc_fuse made: the subjects fused, the fusion_log.csv rows (strings, as they read back), the
    output folder and fusion_log.json; `notes`: files skipped in the input folders."""
    subjects: list[str]
    log_rows: list[dict]
    output: Path
    log: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def fuse_subject(readers: list[CaseReader], weights: list[float], *, check: bool = True,
                 keep_channel: int | None = None) -> tuple[np.ndarray, int] | tuple[np.ndarray, int, np.ndarray]:
    """Weighted mean of the readers' probabilities, argmax over channels, streamed channel by channel.

    Returns (labels as uint8 (z, y, x), voxels where the single-modality argmaxes disagree), plus the fused
    probability of `keep_channel` (float32) when asked. The running strict '>' keeps the first maximal
    channel, exactly like np.argmax on the full average."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.max()  # first by the largest: 1e308 + 1e308 would overflow to inf and every weight to 0
    w = w / w.sum()
    shape = tuple(readers[0].seg_info["size"][::-1])
    best = np.full(shape, -np.inf)
    label = np.zeros(shape, dtype=np.uint8)
    # per-modality running argmax: verifies each case against nnU-Net's own segmentation
    own = check or len(readers) > 1
    own_best = [np.full(shape, -np.inf, dtype=np.float32) for _ in readers] if own else []
    own_label = [np.zeros(shape, dtype=np.uint8) for _ in readers] if own else []
    iters = [r.channels() for r in readers]
    fused = np.empty(shape, dtype=np.float64)
    tmp = np.empty(shape, dtype=np.float64)
    better = np.empty(shape, dtype=bool)
    # in-place ufuncs and copyto(where=): boolean fancy indexing was most of the time on 37-channel maps
    for c in range(readers[0].n_channels):
        for i, it in enumerate(iters):
            ch = next(it)
            # checked even with --no-check: a NaN or negative probability would silently decide the argmax
            if not (np.isfinite(ch).all() and ch.min(initial=0) >= 0):
                raise WMHLocError(f"{readers[i].case.npz}: channel {c} holds NaN, infinite or negative "
                                  "probabilities (not a softmax output)")
            if i == 0:
                np.multiply(ch, w[0], out=fused)
            else:
                np.multiply(ch, w[i], out=tmp)
                fused += tmp
            if own:
                np.greater(ch, own_best[i], out=better)
                np.copyto(own_best[i], ch, where=better)
                np.copyto(own_label[i], c, where=better, casting="unsafe")
        np.greater(fused, best, out=better)
        np.copyto(best, fused, where=better)
        np.copyto(label, c, where=better, casting="unsafe")
        if c == keep_channel:
            kept = fused.astype(np.float32)
    if check:
        for r, own in zip(readers, own_label):
            r.check_against_segmentation(own)
    disagree = 0
    for other in own_label[1:]:
        disagree = max(disagree, int(np.count_nonzero(other != own_label[0])))
    if keep_channel is None:
        return label, disagree
    return label, disagree, kept


def consistent_probability(p: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, int]:
    """`p` clipped to [0, 1] with `p > 0.5` exactly where `mask`; returns it and the voxels moved."""
    p = np.clip(p, 0.0, 1.0).astype(np.float32, copy=False)
    low = mask & (p <= 0.5)
    high = ~mask & (p > 0.5)
    p[low] = HALF_UP
    p[high] = np.float32(0.5)
    return p, int(np.count_nonzero(low) + np.count_nonzero(high))


def _stderr(text: str) -> None:
    print(text, file=sys.stderr)


def _weights(modalities, weights) -> tuple[list[str], dict[str, float]]:
    """The modalities (unique) and their weights scaled to at most 1 (sums cannot overflow)."""
    mods = list(dict.fromkeys(modalities))
    if len(mods) != len(modalities):
        raise WMHLocError(f"--modalities: repeated modality in {list(modalities)}")
    weights = list(weights) if weights is not None else [1.0] * len(mods)
    if len(weights) != len(mods):
        raise WMHLocError(f"--weights: {len(weights)} weights for {len(mods)} modalities")
    if any(not np.isfinite(x) or x < 0 for x in weights) or not any(x > 0 for x in weights):
        raise WMHLocError(f"--weights: weights must be numbers >= 0, at least one positive, got {weights}")
    top = max(weights)
    return mods, dict(zip(mods, (x / top for x in weights)))


def _check_pair(a: CaseReader, b: CaseReader) -> None:
    if a.seg_info["size"] != b.seg_info["size"] or not np.allclose(
            np.r_[a.seg_info["spacing"], a.seg_info["origin"], a.seg_info["direction"]],
            np.r_[b.seg_info["spacing"], b.seg_info["origin"], b.seg_info["direction"]], atol=1e-3):
        raise WMHLocError(f"{b.case.seg}: geometry {b.seg_info['size']} differs from {a.case.seg} "
                          f"{a.seg_info['size']} (same subject, different grids)")
    if a.n_channels != b.n_channels:
        raise WMHLocError(f"{b.case.npz}: {b.n_channels} probability channels, {a.case.npz.name} has "
                          f"{a.n_channels} (different models?)")


def _plan(cases, mods, wmap, *, require_all: bool, source) -> list[tuple[str, list[str], list[str], dict]]:
    """(subject, modalities used, weighted ones missing, weights) per subject; every subject's headers are
    validated before any heavy work, so a bad subject fails fast."""
    plan = []
    for subject in sorted(cases):
        have = [m for m in mods if m in cases[subject]]
        missing = [m for m in mods if m not in cases[subject]]
        # weight-0 modalities stand in only for a subject without any weighted one
        weighted = [m for m in have if wmap[m] > 0]
        wm = wmap if weighted else {m: 1.0 for m in have}
        have = weighted or have
        if missing and require_all:
            c = cases[subject][have[0]]
            raise WMHLocError(f"{c.folder / (subject + '_' + missing[0] + '.npz')}: missing partner of {c.npz.name}"
                              " (--require-all)")
        readers = [CaseReader(cases[subject][m]) for m in have]
        for r in readers[1:]:
            _check_pair(readers[0], r)
        for r in readers:
            r.close()
        plan.append((subject, have, [m for m in mods if m not in have and wmap[m] > 0], wm))
    n_channels = {cases[s][h[0]].n_channels for s, h, _, _ in plan}
    if max(n_channels) > 255:
        raise WMHLocError(f"{source}: {max(n_channels)} classes do not fit the uint8 label maps")
    if len(n_channels) > 1:
        raise WMHLocError(f"{source}: subjects have different numbers of channels {sorted(n_channels)} "
                          "(mixed lesion and region predictions?)")
    return plan


def _fuse_one(cases, subject, have, wm, out: Path, *, check: bool, probability_label) -> dict:
    """Fuse and write one subject; its fusion_log.csv row (without the fallback columns)."""
    readers = [CaseReader(cases[subject][m]) for m in have]
    try:
        res = fuse_subject(readers, [wm[m] for m in have], check=check, keep_channel=probability_label)
    finally:
        for r in readers:
            r.close()
    labels, disagree = res[0], res[1]
    ref = sitk.ReadImage(str(readers[0].case.seg))
    img = sitk.GetImageFromArray(labels)
    img.CopyInformation(ref)
    sitk.WriteImage(img, str(out / f"{subject}.nii.gz"), True)
    adjusted = ""
    if probability_label is not None:
        prob, adjusted = consistent_probability(res[2], labels == probability_label)
        pimg = sitk.GetImageFromArray(prob)
        pimg.CopyInformation(ref)
        sitk.WriteImage(pimg, str(out / "probabilities" / f"{subject}.nii.gz"), True)
    wsum = sum(wm[m] for m in have)
    return {"subject": subject, "modalities_used": " ".join(have),
            "weights": " ".join(f"{wm[m] / wsum:.4g}" for m in have),
            "n_channels": str(readers[0].n_channels), "foreground_voxels": str(np.count_nonzero(labels)),
            "disagreeing_voxels": str(disagree) if len(have) > 1 else "",
            "probability_adjusted_voxels": str(adjusted), "files": ";".join(str(r.case.npz) for r in readers)}


def fuse(inputs, output, *, modalities=("flair", "t1"), weights=None, require_all: bool = False,
         check: bool = True, probability_label: int | None = None, overwrite: bool = False,
         say: Callable[[str], None] = _stderr, progress: bool = True) -> FuseResult:
    """Fuse the nnU-Net probabilities of `inputs` (prediction folders) per subject into label maps (and the
    probability of `probability_label`) in the folder `output`, written atomically; notes go to `say`."""
    inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    mods, wmap = _weights(modalities, weights)
    check_output(output, overwrite=overwrite, inputs=inputs)
    cases, notes = scan_prediction_folders(inputs, mods)
    for n in notes:
        say(f"note: {n}")
    if not cases:
        raise WMHLocError(f"{inputs[0]}: no cases of modalities {', '.join(mods)} in the input folder(s)")
    plan = _plan(cases, mods, wmap, require_all=require_all, source=inputs[0])
    n_classes = min(cases[s][h[0]].n_channels for s, h, _, _ in plan)
    if probability_label is not None and not 0 < probability_label < n_classes:
        raise WMHLocError(f"--probability-label {probability_label}: the models have labels 0..{n_classes - 1}")
    rows = []
    output = Path(output)
    with atomic_dir(output, overwrite=overwrite) as out:
        if probability_label is not None:
            (out / "probabilities").mkdir()
        for subject, have, missing, wm in cli.progress(plan, desc="fuse", total=len(plan),
                                                       disable=None if progress else True):
            if missing:
                say(f"note: {subject}: no {', '.join(missing)} prediction, using {', '.join(have)} only")
            row = _fuse_one(cases, subject, have, wm, out, check=check, probability_label=probability_label)
            rows.append({**row, "fallback": "yes" if missing else "no", "missing_modalities": " ".join(missing)})
        rows = [{c: r[c] for c in LOG_COLUMNS} for r in rows]
        write_csv(rows, out / "fusion_log.csv", columns=LOG_COLUMNS)
        log = {"inputs": [str(p) for p in inputs], "modalities": mods, "weights": wmap, "subjects": len(rows),
               "fallback_subjects": [r["subject"] for r in rows if r["fallback"] == "yes"], "skipped": notes,
               "label_dtype": "uint8", "checked_against_nnunet_segmentation": check,
               "probability_label": probability_label}
        write_json(log, out / "fusion_log.json")
    return FuseResult([r["subject"] for r in rows], rows, output, log, notes)


def _build_parser():
    p = cli.parser("wmhloc_fuse", __doc__.split("\n\n")[0] + " Writes one label map per subject in its "
                   "original geometry, plus fusion_log.csv/json.")
    p.add_argument("inputs", nargs="+", help="folder(s) written by nnUNetv2_predict --save_probabilities")
    p.add_argument("-o", "--output", required=True, help="output folder (must not exist unless --overwrite)")
    p.add_argument("--modalities", nargs="+", default=["flair", "t1"],
                   help="case-name suffixes to fuse (<subject>_<modality>); others are skipped")
    p.add_argument("--weights", nargs="+", type=float, default=None,
                   help="one weight per modality (default: equal); renormalised over the modalities a "
                        "subject has; 0 = fallback only (used when a subject has no weighted modality)")
    p.add_argument("--require-all", action="store_true",
                   help="error instead of falling back when a subject lacks a modality")
    p.add_argument("--no-check", action="store_true",
                   help="skip the check that each case's probabilities reproduce nnU-Net's segmentation")
    p.add_argument("--probability-label", type=int, default=None,
                   help="also write probabilities/<subject>.nii.gz: the fused probability of this label (float32 0-1)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    return p


def _main(argv=None) -> int:
    a = _build_parser().parse_args(argv)
    res = fuse(a.inputs, a.output, modalities=a.modalities, weights=a.weights, require_all=a.require_all,
               check=not a.no_check, probability_label=a.probability_label, overwrite=a.overwrite)
    nf = len(res.log["fallback_subjects"])
    print(f"fused {len(res.subjects)} subjects ({nf} with a single modality) -> {a.output}", file=sys.stderr)
    return 0


main = cli.entry(_main)


if __name__ == "__main__":
    sys.exit(main())
