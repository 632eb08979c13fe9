"""What both converters share: checked subjects, nnU-Net raw dataset writing, subject-grouped folds."""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_wmhloc import cli
from nnunet_wmhloc.dataset_conversion.subjects import Subject
from nnunet_wmhloc.vocab import (ALL_LABELS, LESION_ALLOWED, LESION_LABELS, LR_PAIRS, LR_PAIRS_KEY, REST_REGIONS,
                                 case_name, dataset_folder_name, dataset_folders, region_column, split_case)
from nnunet_wmhloc.io import (WMHLocError, atomic_dir, check_not_input, check_output, check_same_geometry, read_image, to_float32,
                              read_labels, write_csv, write_json)

# nnU-Net z-scores every channel whose name is not CT (or a few other keywords): "MRI" is safe
CHANNEL_NAMES = {"0": "MRI"}
# nnU-Net's reader that puts every case in RAS and writes predictions back in the image's orientation
IMAGE_READER = "SimpleITKIOWithReorient"
N_FOLDS = 5
SPLIT_SEED = 12345  # nnU-Net's own seed for its random folds


def check_dataset_id_free(raw_root: Path, dataset_id: int, folder_name: str) -> None:
    """nnU-Net resolves ids by folder prefix: a second folder with the same id breaks every command."""
    if not raw_root.is_dir():
        return
    for p in dataset_folders(raw_root, dataset_id):
        if p.name != folder_name:
            raise WMHLocError(f"{p}: dataset id {dataset_id} is already used by another dataset; "
                              f"choose another id")


def load_subject(s: Subject, *, need_lesion: bool, read_regions: bool = True) -> dict:
    """Read and check one subject's images and labels; returns sitk images and arrays.

    All images must share the first image's grid; lesion labels must be in {0,1,2}, region labels in 0..36."""
    out: dict = {"images": {}}
    ref_mod = next(iter(s.images))
    ref_path = s.images[ref_mod]
    ref = None
    for mod, path in s.images.items():
        img = read_image(path, what=f"{mod.upper()} image")
        if ref is None:
            ref = img
        else:
            check_same_geometry(ref, ref_path, img, path)
        out["images"][mod] = img
    if need_lesion and s.lesion is None:
        raise WMHLocError(f"{ref_path}: subject {s.subject} has no lesion mask")
    if s.lesion is not None:
        arr, img = read_labels(s.lesion, allowed=LESION_ALLOWED, what="lesion mask")
        check_same_geometry(ref, ref_path, img, s.lesion)
        out["lesion"] = arr.astype(np.uint8)
    if s.regions is not None and read_regions:
        arr, img = read_labels(s.regions, allowed=ALL_LABELS, what="region map")
        check_same_geometry(ref, ref_path, img, s.regions)
        out["regions"] = arr.astype(np.uint8)
    out["ref"] = ref
    return out


def _label_image(arr: np.ndarray, ref: sitk.Image) -> sitk.Image:
    # uint8 is nnU-Net's own label type; our evaluation never thresholds in the pixel type, so it is safe
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.CopyInformation(ref)
    return img


def write_cases(img_dir: Path, s: Subject, loaded: dict, lab_dir: Path | None = None,
                label_key: str | None = None) -> list[str]:
    """Write `<subject>_<modality>_0000.nii.gz` into img_dir (+ the shared label map into lab_dir)."""
    img_dir.mkdir(exist_ok=True)
    cases = []
    for mod, img in loaded["images"].items():
        case = case_name(s.subject, mod)
        img = to_float32(img, s.images[mod], f"{mod.upper()} image")  # checked after the cast
        sitk.WriteImage(img, str(img_dir / f"{case}_0000.nii.gz"), True)
        if label_key is not None:
            lab_dir.mkdir(exist_ok=True)
            sitk.WriteImage(_label_image(loaded[label_key], loaded["ref"]), str(lab_dir / f"{case}.nii.gz"), True)
        cases.append(case)
    return cases


def dataset_json(task: str, num_training: int, description: str) -> dict:
    """nnU-Net's dataset.json. Both tasks are read through SimpleITKIOWithReorient: nnU-Net turns every image
    to RAS on reading (one orientation for every case, whatever its storage: LPS, RAS from dcm2niix, sagittal
    or coronal slices) and writes predictions back on the image's own grid. The region task declares its
    left/right label pairs (1-17 with 18-34, 35 with 36) for the trainers' hemisphere-aware mirroring."""
    extra = {}
    if task == "lesion":
        labels = dict(LESION_LABELS)
    else:
        labels = {"background": 0}
        labels.update({region_column(i): i for i in ALL_LABELS[1:]})
        extra[LR_PAIRS_KEY] = [list(p) for p in LR_PAIRS]
    return {
        "channel_names": dict(CHANNEL_NAMES),
        "labels": labels,
        "numTraining": num_training,
        "file_ending": ".nii.gz",
        "overwrite_image_reader_writer": IMAGE_READER,
        **extra,
        "name": f"WMH {task}",
        "description": description,
        "reference": "Machnio et al., Deep Learning for Localization of White Matter Lesions in Neurological "
                     "Diseases; Kuijf et al., IEEE TMI 2019 (MICCAI 2017 WMH challenge)",
        "licence": "see the source data's licence",
        "converted_by": "nnunet_wmhloc",
    }


LESION_DESCRIPTION = ("White-matter hyperintensity segmentation. T1 and FLAIR are one modality: each subject "
                      "gives two single-channel cases (<subject>_flair, <subject>_t1) sharing one label map. "
                      "Label 2 is the challenge's 'other pathology', which the challenge never scores: it is "
                      "nnU-Net's ignore label here, trained as neither background nor WMH.")
REGION_DESCRIPTION = ("34 white-matter regions merged from the JHU Eve type-II atlas (1-17 left, 18-34 right), "
                      f"plus {REST_REGIONS[0]}/{REST_REGIONS[1]} = the rest of the left/right hemisphere's atlas "
                      "labels, in subject space. T1 and FLAIR are one modality: two cases per subject.")


def grouped_splits(cases: list[str], n_folds: int = N_FOLDS, seed: int = SPLIT_SEED) -> list[dict]:
    """nnU-Net splits_final.json with every case of a subject in the same fold (subject = case minus
    its last '_<modality>' part)."""
    if n_folds < 2:
        raise WMHLocError(f"--folds {n_folds}: cross-validation needs at least 2 folds")
    subjects = sorted({split_case(c)[0] for c in cases})
    if len(subjects) < 2:
        raise WMHLocError(f"cross-validation needs at least 2 training subjects, got {len(subjects)}")
    n_folds = min(n_folds, len(subjects))
    order = np.random.RandomState(seed).permutation(len(subjects))
    folds = [sorted(subjects[i] for i in order[k::n_folds]) for k in range(n_folds)]
    splits = []
    for k in range(n_folds):
        val = set(folds[k])
        splits.append({"train": sorted(c for c in cases if split_case(c)[0] not in val),
                       "val": sorted(c for c in cases if split_case(c)[0] in val)})
    return splits


def _splits_target(dataset_folder: str, splits: list[dict], preprocessed, overwrite: bool,
                   inputs=()) -> Path | None:
    """Where splits_final.json goes, checked before anything is written: never inside an input (e.g.
    --preprocessed given the release itself); an existing different (or unreadable) split is kept unless
    `overwrite` (trained folds would silently change)."""
    if not preprocessed:
        return None
    target = Path(preprocessed) / dataset_folder / "splits_final.json"
    check_not_input(target, inputs, flag="--preprocessed")
    if target.exists():
        try:
            same = json.loads(target.read_text(encoding="utf-8")) == splits
        except (ValueError, UnicodeDecodeError, OSError):
            same = False
            if not overwrite:
                raise WMHLocError(f"{target}: not a readable splits file (corrupt JSON); use --overwrite to "
                                  "replace it") from None
        if not same and not overwrite:
            raise WMHLocError(f"{target}: a different split already exists (use --overwrite to replace it)")
    check_output(target, overwrite=True, kind="file", flag="splits_final.json")
    return target


def write_splits(dataset_folder: str, splits: list[dict], preprocessed: str | os.PathLike | None,
                 overwrite: bool) -> Path | None:
    """Put splits_final.json where nnU-Net reads it (nnUNet_preprocessed/<dataset>/), if that root is known."""
    target = _splits_target(dataset_folder, splits, preprocessed, overwrite)
    if target is None:
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    write_json(splits, target, overwrite=True)
    return target


def subject_row(s: Subject, loaded: dict, split: str, n_cases: int) -> dict:
    ref = loaded["ref"]
    vox = float(np.prod(ref.GetSpacing()))
    row = {"subject": s.subject, "site": s.site, "scanner": s.scanner, "split": split, "cases": n_cases,
           "modalities": "+".join(loaded["images"]),
           "size": "x".join(map(str, ref.GetSize())),
           "spacing": "x".join(f"{v:.4g}" for v in ref.GetSpacing())}
    if "lesion" in loaded:
        row["lesion_volume_mm3"] = float((loaded["lesion"] == 1).sum()) * vox
        row["other_pathology_mm3"] = float((loaded["lesion"] == 2).sum()) * vox
    row["has_region_labels"] = s.regions is not None
    row.update(s.info)
    return row


@dataclass
class DatasetJob:
    """One nnU-Net raw dataset to build: its task ('lesion' or 'region'), subjects, id, name, description."""
    task: str
    subjects: list
    dataset_id: int
    name: str
    description: str


def build_datasets(jobs: list[DatasetJob], raw_root: Path, *, preprocessed: str | None, overwrite: bool,
                   inputs=()) -> list[dict]:
    """Write the datasets of one conversion as a unit: every check first (ids, names, existing outputs and
    splits, training subjects), then every dataset is built in a temporary folder, then all are moved into
    place and their splits written. A bad map, an id clash or Ctrl-C/SIGTERM leaves no half conversion.
    Returns per job {folder, train_cases, test_cases, subjects (the rows of its subjects.csv), splits (the
    splits_final.json written to `preprocessed`, or None)}."""
    plans, seen = [], {}
    for j in jobs:
        folder_name = dataset_folder_name(j.dataset_id, j.name)
        if j.dataset_id in seen:
            raise WMHLocError(f"dataset id {j.dataset_id}: given to both the {seen[j.dataset_id]} and the {j.task} "
                              "dataset")
        seen[j.dataset_id] = j.task
        check_dataset_id_free(raw_root, j.dataset_id, folder_name)
        check_output(raw_root / folder_name, overwrite=overwrite, inputs=inputs)
        if preprocessed and not overwrite and (Path(preprocessed) / folder_name / "splits_final.json").exists():
            raise WMHLocError(f"{Path(preprocessed) / folder_name / 'splits_final.json'}: already exists "
                              f"(use --overwrite to replace it)")
        train_cases = sorted(case_name(s.subject, m) for s in j.subjects if s.split == "train" for m in s.images)
        if not train_cases:
            raise WMHLocError(f"{raw_root / folder_name}: no training subjects for the {j.task} dataset")
        splits = grouped_splits(train_cases)
        _splits_target(folder_name, splits, preprocessed, overwrite, inputs)
        plans.append((j, folder_name, train_cases, splits))
    results = []
    with contextlib.ExitStack() as stack:
        tmps = [stack.enter_context(atomic_dir(raw_root / fn, overwrite=overwrite)) for _, fn, _, _ in plans]
        for (j, folder_name, train_cases, splits), tmp in zip(plans, tmps):
            rows = _fill_dataset(tmp, j, train_cases, splits)
            results.append({"folder": raw_root / folder_name, "train_cases": len(train_cases),
                            "test_cases": sum(r["cases"] for r in rows if r["split"] != "train"), "subjects": rows})
    for (j, folder_name, _, splits), r in zip(plans, results):
        r["splits"] = write_splits(folder_name, splits, preprocessed, overwrite)
    return results


def _fill_dataset(tmp: Path, j: DatasetJob, train_cases: list[str], splits: list[dict]) -> list[dict]:
    label_key = "lesion" if j.task == "lesion" else "regions"
    rows, written = [], []
    for s in cli.progress(j.subjects, desc=f"{j.task} dataset"):
        # test subjects may come without labels (a cohort's held-out subjects); training ones may not
        loaded = load_subject(s, need_lesion=(j.task == "lesion" and s.split == "train"),
                              read_regions=(j.task == "region"))
        tr = s.split == "train"
        cases = write_cases(tmp / ("imagesTr" if tr else "imagesTs"), s, loaded,
                            tmp / ("labelsTr" if tr else "labelsTs"), label_key if label_key in loaded else None)
        if tr:
            written += cases
        rows.append(subject_row(s, loaded, s.split, len(cases)))
    assert sorted(written) == train_cases, "cases planned and written differ"
    write_json(dataset_json(j.task, len(train_cases), j.description), tmp / "dataset.json")
    write_json(splits, tmp / "splits_final.json")
    cols = list(dict.fromkeys(k for r in rows for k in r))
    write_csv(rows, tmp / "subjects.csv", columns=cols)
    return rows


def add_output_options(p, overwrite_help: str):
    """The converters' last options, --preprocessed and --overwrite; returns `p`."""
    p.add_argument("--preprocessed", default=os.environ.get("nnUNet_preprocessed"),
                   help="where splits_final.json goes (default: $nnUNet_preprocessed)")
    p.add_argument("--overwrite", action="store_true", help=overwrite_help)
    return p


def raw_root_from(arg: str | None) -> Path:
    root = arg or os.environ.get("nnUNet_raw")
    if not root:
        raise WMHLocError("no output folder: give --output or set nnUNet_raw")
    return Path(root)
