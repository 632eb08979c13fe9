"""Trained models as one shareable file, and the per-task choice of FLAIR, T1 or fused prediction.

The archive is what `nnUNetv2_export_model_to_zip` writes for each model (paths relative to nnUNet_results:
`DatasetXXX_Name/<trainer>__<plans>__<configuration>/{plans.json, dataset.json, dataset_fingerprint.json,
fold_X/{checkpoint_final.pth, debug.json, progress.png, validation/summary.json}}`), the two merged into one
zip (so `nnUNetv2_install_pretrained_model_from_zip` still installs it), plus `wmhloc_manifest.json` at its
root: trainers, plans, configurations, folds, label tables, left/right label pairs (when the dataset.json
has them), the package and nnU-Net versions, the training data, and the chosen fusion per task with the
cross-validation figures behind it.

The fusion choice compares, on the cross-validation predictions (`nnUNetv2_train --npz` writes the
probabilities of every validation case), FLAIR alone, T1 alone and weighted averages of the two, on the
subjects that have both; the best mean Dice wins (ties: a single modality, FLAIR first, since it halves the
prediction work).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

import numpy as np

from nnunet_wmhloc.io import WMHLocError, atomic_file, read_labels

MANIFEST = "wmhloc_manifest.json"
FORMAT = "nnunet_wmhloc-models"
FORMAT_VERSION = 1
TASKS = ("lesion", "region")
MODALITIES = ("flair", "t1")
FUSED_WEIGHTS = (0.25, 0.5, 0.75)  # FLAIR's weight in the fused candidates (T1 gets the rest)
# dataset.json keys nnU-Net itself defines; anything else (e.g. issue 12's left/right pairs) is carried along
NNUNET_DATASET_KEYS = {"channel_names", "modality", "labels", "numTraining", "file_ending", "name", "description",
                       "reference", "licence", "release", "tensorImageSize", "overwrite_image_reader_writer",
                       "regions_class_order", "numTest", "dataset_name"}


# ------------------------------------------------------------------------------------------ fusion specs
def fusion_spec(choice: str, flair_weight: float | None = None) -> dict:
    """{'choice', 'weights': {'flair': w, 't1': 1 - w}}; a single modality has weight 0 for the other
    (used only as a fallback for subjects without the chosen one)."""
    if choice == "flair":
        w = 1.0
    elif choice == "t1":
        w = 0.0
    elif choice == "fused":
        w = 0.5 if flair_weight is None else float(flair_weight)
        if not 0 < w < 1:
            raise WMHLocError(f"fused:{flair_weight}: the FLAIR weight of a fusion must be between 0 and 1")
    else:
        raise WMHLocError(f"{choice}: fusion is one of flair, t1, fused, fused:<FLAIR weight>")
    return {"choice": choice, "weights": {"flair": w, "t1": round(1.0 - w, 6)}}


def parse_fusion(values: list[str] | None) -> dict[str, dict]:
    """--fusion VALUE...: `flair`, `t1`, `fused`, `fused:0.7` for both tasks, or `lesion=flair region=t1`."""
    out: dict[str, dict] = {}
    for v in values or []:
        task, sep, spec = v.partition("=")
        tasks = [task] if sep else list(TASKS)
        if not sep:
            spec = v
        if sep and task not in TASKS:
            raise WMHLocError(f"--fusion {v}: task must be lesion or region")
        choice, _, w = spec.partition(":")
        try:
            weight = float(w) if w else None
        except ValueError:
            raise WMHLocError(f"--fusion {v}: weight {w!r} is not a number") from None
        if w and choice != "fused":
            raise WMHLocError(f"--fusion {v}: only 'fused' takes a weight")
        for t in tasks:
            out[t] = dict(fusion_spec(choice, weight), source="--fusion")
    return out


def needed_modalities(spec: dict, have: set[str]) -> list[str]:
    """Modalities to predict for a subject that has `have`: the weighted ones it has, else what it has."""
    weighted = [m for m in MODALITIES if spec["weights"][m] > 0 and m in have]
    return weighted or [m for m in MODALITIES if m in have]


# ------------------------------------------------------------------------------ choice from cross-validation
def _scores(pred: np.ndarray, ref: np.ndarray, task: str) -> float:
    from nnunet_wmhloc.evaluation.metrics import dice, lesion_masks

    if task == "lesion":
        return dice(*lesion_masks(pred, ref))
    vals = [dice(pred == k, ref == k) for k in np.unique(ref) if k > 0]
    return float(np.mean(vals)) if vals else float("nan")


def _references(folder: Path) -> dict[str, Path]:
    """case -> reference file, from nnU-Net's validation summary.json (metric_per_case)."""
    s = folder / "summary.json"
    out = {}
    if s.is_file():
        for m in json.loads(s.read_text(encoding="utf-8")).get("metric_per_case", []):
            name = Path(m.get("prediction_file", "")).name
            for e in (".nii.gz", ".nii"):
                if name.endswith(e):
                    out[name[: -len(e)]] = Path(m.get("reference_file", ""))
    return out


def validation_folders(model: Path, folds: list[str]) -> list[Path]:
    return [model / f"fold_{f}" / "validation" for f in folds]


def has_cv_probabilities(model: Path, folds: list[str]) -> bool:
    return all(d.is_dir() and any(d.glob("*.npz")) for d in validation_folders(model, folds))


def choose_fusion(model: Path, folds: list[str], task: str, *, labels_dir: Path | None = None,
                  say=print) -> dict:
    """Pick FLAIR, T1 or fused (with FLAIR weight among FUSED_WEIGHTS) for `task` from the validation
    probabilities of `folds`. References come from nnU-Net's summary.json, else `labels_dir/<case>.nii.gz`."""
    from nnunet_wmhloc.postprocessing._nnunet_pred import CaseReader, scan_prediction_folders
    from nnunet_wmhloc.postprocessing.fuse import fuse_subject
    import SimpleITK as sitk

    folders = validation_folders(model, folds)
    missing = [d for d in folders if not (d.is_dir() and any(d.glob("*.npz")))]
    if missing:
        raise WMHLocError(f"{missing[0]}: no cross-validation probabilities (train with nnUNetv2_train --npz, "
                          "or rerun the validation: nnUNetv2_train ... --val --npz)")
    cases, _ = scan_prediction_folders(folders, list(MODALITIES))
    refs = {}
    for d in folders:
        refs.update(_references(d))
    candidates = ["flair", "t1"] + [f"fused:{w:g}" for w in FUSED_WEIGHTS]
    per_subject: dict[str, dict[str, float]] = {}
    both = sorted(s for s, c in cases.items() if all(m in c for m in MODALITIES))
    for subject in both:
        c = cases[subject]
        ref_path = refs.get(c["flair"].name)
        if (ref_path is None or not ref_path.is_file()) and labels_dir is not None:
            ref_path = labels_dir / f"{c['flair'].name}.nii.gz"
        if ref_path is None or not ref_path.is_file():
            raise WMHLocError(f"{c['flair'].npz}: no reference segmentation found for case {c['flair'].name}")
        ref = read_labels(ref_path, what="reference segmentation")[0]
        row = {}
        for m in MODALITIES:
            row[m] = _scores(sitk.GetArrayFromImage(sitk.ReadImage(str(c[m].seg))), ref, task)
        for w in FUSED_WEIGHTS:
            readers = [CaseReader(c[m]) for m in MODALITIES]
            try:
                labels = fuse_subject(readers, [w, 1 - w], check=False)[0]
            finally:
                for r in readers:
                    r.close()
            row[f"fused:{w:g}"] = _scores(labels, ref, task)
        per_subject[subject] = row
    means = {k: (float(np.nanmean(v)) if np.isfinite(v).any() else None)
             for k in candidates for v in [np.array([per_subject[s][k] for s in both], dtype=float)]} if both else {}
    scored = {k: v for k, v in means.items() if v is not None}
    if not scored:
        best = "flair"
        reason = ("no validation subject has both FLAIR and T1" if not both else
                  "no validation subject has foreground in its reference")
        spec = fusion_spec("flair")
    else:
        top = max(scored.values())
        best = next(k for k in candidates if k in scored and scored[k] >= top - 1e-9)  # order breaks ties
        reason = f"best mean Dice over {len(both)} validation subjects with both modalities"
        spec = fusion_spec("fused", float(best.split(":")[1])) if best.startswith("fused") else fusion_spec(best)
    say(f"{task}: {best} ({reason}; " + ", ".join(f"{k} {v:.4f}" for k, v in scored.items()) + ")")
    metric = "Dice of label 1 (label 2 voxels removed)" if task == "lesion" else "mean Dice over reference labels"
    return dict(spec, source="cross-validation", candidate=best, reason=reason, metric=metric, folds=list(folds),
                subjects=len(both), mean_dice=means, per_subject=per_subject)


# ------------------------------------------------------------------------------------------- export
def model_identity(folder: Path) -> dict:
    """Dataset, trainer, plans and configuration of an nnU-Net results folder, from its name and files."""
    folder = Path(folder).resolve()
    parts = folder.name.split("__")
    if len(parts) != 3 or not re.fullmatch(r"Dataset\d{3}_.+", folder.parent.name):
        raise WMHLocError(f"{folder}: not an nnU-Net results folder (expected "
                          "DatasetXXX_Name/<trainer>__<plans>__<configuration>)")
    for f in ("plans.json", "dataset.json"):
        if not (folder / f).is_file():
            raise WMHLocError(f"{folder}: not an nnU-Net model folder (no {f})")
    return {"dataset": folder.parent.name, "trainer": parts[0], "plans": parts[1], "configuration": parts[2],
            "path": f"{folder.parent.name}/{folder.name}"}


def _nnunet_export(folder: Path, ident: dict, folds: list[str], dst: Path, env: dict) -> None:
    """nnUNetv2_export_model_to_zip on the results root holding `folder` (checkpoint_final.pth only)."""
    env = dict(env, nnUNet_results=str(folder.parent.parent))
    args = ["nnUNetv2_export_model_to_zip", "-d", ident["dataset"], "-o", str(dst), "-c", ident["configuration"],
            "-tr", ident["trainer"], "-p", ident["plans"], "-f", *folds]
    p = subprocess.run([sys.executable, "-m", "nnunet_wmhloc.pipeline.launch", *args], env=env,
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if p.returncode != 0 or not dst.is_file():
        from nnunet_wmhloc.pipeline.stages import _last_error_line

        raise WMHLocError(f"{folder}: nnUNetv2_export_model_to_zip failed: "
                          f"{_last_error_line(p.stdout + p.stderr)}")


def _cv_figures(folder: Path, folds: list[str]) -> dict:
    out = {}
    for f in folds:
        s = folder / f"fold_{f}" / "validation" / "summary.json"
        if s.is_file():
            d = json.loads(s.read_text(encoding="utf-8"))
            out[f] = {"foreground_mean_dice": d.get("foreground_mean", {}).get("Dice"),
                      "cases": len(d.get("metric_per_case", []))}
    return out


def _left_right_pairs(dataset: dict):
    for k, v in dataset.items():
        low = k.lower()
        if ("left" in low and "right" in low) or "hemisphere" in low or "lr_pair" in low:
            return {"key": k, "value": v}
    return None


def task_manifest(folder: Path, folds: list[str], task: str) -> dict:
    ident = model_identity(folder)
    dataset = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    for f in folds:
        if not (folder / f"fold_{f}" / "checkpoint_final.pth").is_file():
            raise WMHLocError(f"{folder / f'fold_{f}' / 'checkpoint_final.pth'}: not found (fold {f} not trained)")
    return dict(ident, task=task, folds=list(folds), labels=dataset.get("labels", {}),
                channel_names=dataset.get("channel_names", {}), file_ending=dataset.get("file_ending", ".nii.gz"),
                left_right_pairs=_left_right_pairs(dataset),
                dataset_extras={k: v for k, v in dataset.items() if k not in NNUNET_DATASET_KEYS},
                training={"dataset": dataset.get("name", ident["dataset"]), "description": dataset.get("description"),
                          "training_cases": dataset.get("numTraining")},
                cross_validation=_cv_figures(folder, folds))


def export_models(models: dict[str, Path], folds: dict[str, list[str]], fusion: dict[str, dict], output: Path, *,
                  training: dict | None = None, overwrite: bool = False, env: dict | None = None,
                  prediction: dict | None = None, say=print) -> dict:
    """Write the archive (atomically); returns the manifest. `prediction`: the run's prediction settings
    ({"test_time_mirroring": bool}), which wmhloc_predict --models uses by default."""
    from importlib.metadata import version

    from nnunet_wmhloc import __version__

    tasks = {t: task_manifest(models[t], folds[t], t) for t in TASKS}
    if tasks["lesion"]["path"] == tasks["region"]["path"]:
        raise WMHLocError(f"{models['lesion']}: the same model given for lesions and regions")
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "id": uuid.uuid4().hex,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "nnunet_wmhloc_version": __version__,
                "nnunetv2_version": version("nnunetv2"), "models": tasks, "fusion": fusion,
                "training_data": training or {}} | ({"prediction": prediction} if prediction else {})
    env = dict(os.environ if env is None else env)
    hashes: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="wmhloc_export_") as tmp, \
            atomic_file(output, overwrite=overwrite, suffix=".zip") as dst:
        with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as out:
            for t in TASKS:
                say(f"{t}: nnUNetv2_export_model_to_zip {tasks[t]['path']} folds {' '.join(folds[t])}")
                part = Path(tmp) / f"{t}.zip"
                _nnunet_export(Path(models[t]).resolve(), tasks[t], folds[t], part, env)
                with zipfile.ZipFile(part) as z:
                    for info in z.infolist():
                        h = hashlib.sha256()
                        with z.open(info) as src, out.open(info, "w") as o:
                            while chunk := src.read(1 << 20):
                                h.update(chunk)
                                o.write(chunk)
                        if not info.is_dir():
                            hashes[info.filename] = h.hexdigest()
                    tasks[t]["files"] = sorted(z.namelist())
            manifest["files_sha256"] = hashes  # checked by open_archive before any member is used
            out.writestr(MANIFEST, json.dumps(manifest, indent=2, default=str))
    return manifest


# --------------------------------------------------------------------------------------------- import
def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def open_archive(path: Path) -> dict:
    """Check an archive without writing anything (limits, manifest, hashes, per-task models, checkpoints
    read without running code: pipeline.archive). Returns the manifest."""
    from nnunet_wmhloc.pipeline.archive import open_archive as check

    return check(path)


def trainer_available(name: str) -> bool:
    from nnunet_wmhloc.pipeline.budget import parse_budget

    if parse_budget(name) is not None:
        return True
    from nnunet_wmhloc.nnunet_ext import nnunet_wmhloc_trainers as ours

    if hasattr(ours, name):
        return True
    import nnunetv2
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    return recursive_find_python_class(os.path.join(nnunetv2.__path__[0], "training", "nnUNetTrainer"), name,
                                       "nnunetv2.training.nnUNetTrainer") is not None


def check_model_folder(folder: Path, folds: list[str], task: str) -> None:
    """A model folder given by path, checked as archive models are (pipeline.archive) before nnU-Net loads
    its checkpoints: labels of `task`, plans imports, checkpoints read without running code."""
    from nnunet_wmhloc.pipeline.archive import check_model_folder as check

    check(folder, folds, task)


def extract_archive(path: Path, manifest: dict, dest: Path) -> Path:
    """Unpack the archive into `dest` (atomically; kept when it already holds this archive), writing only
    the bytes open_archive checked."""
    from nnunet_wmhloc.pipeline.archive import extract_archive as unpack

    return unpack(path, manifest, dest)


def describe_fusion(spec: dict) -> str:
    w = spec["weights"]
    if spec["choice"] == "fused":
        return f"fused (FLAIR {w['flair']:g}, T1 {w['t1']:g})"
    return spec["choice"].upper() if spec["choice"] == "flair" else "T1"

