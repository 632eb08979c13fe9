"""The convert stages' calls into dataset_conversion, as plain functions taking the cohort already loaded.

INTEGRATOR: `convert_cohort` and `write_dataset_splits` stand in for the plain functions the "atlasconv"
helper is making of `wmhloc_convert_cohort`'s and `wmhloc_splits`' mains (the same steps, without argparse);
once those land, these bodies become calls to them.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from nnunet_wmhloc import cli
from nnunet_wmhloc.io import WMHLocError, check_output, list_inputs, strip_nifti


def cohort_inputs(source: Path, subjects: list) -> list:
    """Every file a cohort names (and the cohort itself): what no output may replace."""
    return [source] + [f for s in subjects for f in (*s.images.values(), s.lesion, s.regions) if f is not None]


def convert_cohort(subjects: list, *, source: Path, mode: str, output: Path, lesion_id: int = 611,
                   region_id: int = 612, name: str = "Cohort", register_t1: bool = False,
                   preprocessed: str | None = None, overwrite: bool = False, log=print) -> dict:
    """wmhloc_convert_cohort on a loaded cohort (mode 'predict': the inference folder `output`; 'train': the
    nnU-Net datasets under the raw folder `output`). Returns {'cases': n} or {'lesion': built, 'region': built}.
    T1s off the FLAIR grid are registered into a temporary folder: `subjects` is not changed."""
    import copy

    from nnunet_wmhloc.dataset_conversion import cohort as C
    from nnunet_wmhloc.dataset_conversion.common import (LESION_DESCRIPTION, REGION_DESCRIPTION, DatasetJob,
                                                         build_datasets, raw_root_from)
    from nnunet_wmhloc.vocab import dataset_folder_name

    inputs = cohort_inputs(Path(source), subjects)
    if mode == "predict":
        check_output(output, overwrite=overwrite, inputs=inputs)
    else:
        for i, n in ((lesion_id, f"{name}Lesion"), (region_id, f"{name}Region")):
            dataset_folder_name(i, n)  # a bad id or name fails now, not after the T1 registrations
    subjects = copy.deepcopy(subjects)
    with tempfile.TemporaryDirectory(prefix="wmhloc_t1reg_") as tmp:
        for s in cli.progress(subjects, desc="T1 -> FLAIR check"):
            C._t1_to_flair(s, register_t1, Path(tmp))
        if mode == "predict":
            n = C.write_inference_folder(subjects, Path(output), overwrite)
            log(f"inference folder: {output} ({n} cases from {len(subjects)} subjects)")
            return {"cases": n}
        jobs = [DatasetJob("lesion", subjects, lesion_id, f"{name}Lesion", LESION_DESCRIPTION)]
        with_regions = [s for s in subjects if s.regions is not None]
        if sum(s.split == "train" for s in with_regions) >= 2:
            jobs.append(DatasetJob("region", with_regions, region_id, f"{name}Region", REGION_DESCRIPTION))
        built = build_datasets(jobs, raw_root_from(str(output)), preprocessed=preprocessed, overwrite=overwrite,
                               inputs=inputs)
    out = {j.task: b for j, b in zip(jobs, built)}
    log(f"lesion dataset: {out['lesion']['folder']} ({out['lesion']['train_cases']} training cases, "
        f"{out['lesion']['test_cases']} test cases)")
    if "region" in out:
        log(f"region dataset: {out['region']['folder']} ({out['region']['train_cases']} training cases)")
    elif with_regions:
        log("only one subject has a region map: region dataset not built")
    return out


def write_dataset_splits(dataset: Path, preprocessed: str, *, overwrite: bool = False) -> Path:
    """wmhloc_splits for one raw dataset folder: subject-grouped folds, so T1 and FLAIR never straddle folds."""
    from nnunet_wmhloc.dataset_conversion.common import N_FOLDS, grouped_splits, write_splits

    labels = dataset / "labelsTr"
    cases = [strip_nifti(f) for f in list_inputs(labels, (".nii.gz",), what="labelsTr")] if labels.is_dir() else []
    if not cases:
        raise WMHLocError(f"{labels}: no training labels")
    return write_splits(dataset.name, grouped_splits(cases, N_FOLDS), preprocessed, overwrite)
