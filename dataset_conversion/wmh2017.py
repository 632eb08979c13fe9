"""wmhloc_convert_wmh2017: the MICCAI 2017 WMH challenge release -> nnU-Net v2 lesion and region datasets.

Cases are found by walking the release for `wmh.nii.gz` with `pre/FLAIR.nii.gz` and `pre/T1.nii.gz` beside it
(training/{Utrecht,Singapore,GE3T}/<id>/, test/{Utrecht,Singapore,Amsterdam/{GE3T,GE1T5,Philips_VU .PETMR_01.}}/<id>/).
Each subject gives two single-channel cases, <subject>_flair and <subject>_t1, sharing one label map.
"""
from __future__ import annotations

import os
from pathlib import Path

from nnunet_wmhloc import cli
from nnunet_wmhloc.io import WMHLocError, few, files_by_key, is_number
from nnunet_wmhloc.dataset_conversion.common import (LESION_DESCRIPTION, REGION_DESCRIPTION, DatasetJob,
                                                     add_output_options, build_datasets, raw_root_from)
from nnunet_wmhloc.dataset_conversion.subjects import IMAGE_FILES, LESION_FILE, Subject, subject_folders
from nnunet_wmhloc.vocab import MODALITIES, dataset_folder_name, subject_id, subject_of_file

SPLIT_FOLDERS = {"training": "train", "test": "test"}
# training/GE3T is the Amsterdam GE 3T scanner; the test release nests all three Amsterdam scanners
_SITE_OF_SCANNER = {"GE3T": "Amsterdam", "GE1T5": "Amsterdam", "Philips_VU .PETMR_01.": "Amsterdam"}


def find_subjects(root: str | os.PathLike, modalities=MODALITIES) -> list[Subject]:
    """Every subject folder below `root` (subjects.subject_folders: wmh.nii.gz, pre/FLAIR.nii.gz, pre/T1.nii.gz);
    each must hold all three."""
    root = Path(root)
    if not root.is_dir():
        raise WMHLocError(f"{root}: challenge release folder not found")
    subjects, seen = [], {}
    for folder in subject_folders(root):
        parts = folder.relative_to(root).parts
        split_idx = next((i for i, p in enumerate(parts) if p.lower() in SPLIT_FOLDERS), None)
        if split_idx is None:
            raise WMHLocError(f"{folder}: not below a 'training' or 'test' folder; cannot tell its split")
        wmh = folder / LESION_FILE
        images = {m: folder / "pre" / IMAGE_FILES[m] for m in MODALITIES}
        for f in [images[m] for m in modalities] + [wmh]:
            if not f.is_file():
                raise WMHLocError(f"{f}: missing (every challenge subject has pre/FLAIR, pre/T1 and wmh.nii.gz)")
        site_parts = parts[split_idx + 1:-1]
        scanner = site_parts[-1] if site_parts else ""
        site = site_parts[0] if len(site_parts) > 1 else _SITE_OF_SCANNER.get(scanner, scanner)
        sid = subject_id(folder.name, str(folder))
        if sid in seen:
            raise WMHLocError(f"{folder}: duplicate subject id {folder.name} (also {seen[sid]})")
        seen[sid] = folder
        subjects.append(Subject(subject=sid, images={m: images[m] for m in modalities}, lesion=wmh, site=site,
                                scanner=scanner, split=SPLIT_FOLDERS[parts[split_idx].lower()],
                                info={"challenge_id": int(folder.name) if is_number(folder.name) else folder.name}))
    if not subjects:
        raise WMHLocError(f"{root}: no subject found (no wmh.nii.gz with pre/FLAIR.nii.gz and pre/T1.nii.gz)")
    return subjects


def find_region_maps(folder: str | os.PathLike) -> dict[str, Path]:
    """Region maps anywhere below `folder`, by subject id (vocab.subject_of_file): the authors' WMH_<id>.nii.gz
    (WMH_refined_labels/{Train,Test}) and wmhloc_region_labels' <subject>.nii.gz alike; two maps of one
    subject are an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise WMHLocError(f"{folder}: region label folder not found")
    # a file without a subject id (e.g. wmhloc_region_labels' <subject>_brainmask.nii.gz beside the maps) is skipped
    maps = files_by_key((p for p in sorted(folder.rglob("*.nii.gz")) if not p.name.startswith(".")), subject_of_file,
                        lambda p, sid, first: f"{p}: second region map for subject {sid} (also {first})")
    if not maps:
        raise WMHLocError(f"{folder}: no region maps found (WMH_<id>.nii.gz or <subject>.nii.gz)")
    return maps


def convert(release: str, *, output: str | None = None, lesion_id: int = 601, region_id: int = 602,
            lesion_name: str = "WMHLesion", region_name: str = "WMHRegion", region_labels: str | None = None,
            split: str = "challenge", modalities=MODALITIES, preprocessed: str | None = None,
            overwrite: bool = False, log=print) -> dict:
    """wmhloc_convert_wmh2017: the lesion dataset (and the region dataset with `region_labels`). Returns
    {task: {folder, train_cases, test_cases, subjects (rows of its subjects.csv), splits}}; the region entry
    also lists the subjects without a map ('missing')."""
    raw_root = raw_root_from(output)
    for i, n in ((lesion_id, lesion_name), (region_id, region_name)):
        dataset_folder_name(i, n)  # bad ids and names fail before the release is walked
    subjects = find_subjects(release, modalities)
    if split == "paper":  # the paper trained on the 110 test subjects and tested on the 60 training ones
        for s in subjects:
            s.split = "test" if s.split == "train" else "train"
    elif split != "challenge":
        raise WMHLocError(f"--split {split}: unknown (challenge or paper)")
    maps = find_region_maps(region_labels) if region_labels else {}
    for s in subjects:
        s.regions = maps.get(s.subject)
    jobs = [DatasetJob("lesion", subjects, lesion_id, lesion_name, LESION_DESCRIPTION)]
    missing = []
    if region_labels:
        missing = [s.subject for s in subjects if s.regions is None]
        jobs.append(DatasetJob("region", [s for s in subjects if s.regions is not None], region_id, region_name,
                               REGION_DESCRIPTION))
    built = build_datasets(jobs, raw_root, preprocessed=preprocessed, overwrite=overwrite,
                           inputs=[release, region_labels])
    out = {j.task: b for j, b in zip(jobs, built)}
    log(f"lesion dataset: {out['lesion']['folder']} ({out['lesion']['train_cases']} training cases, "
        f"{out['lesion']['test_cases']} test cases)")
    if region_labels:
        if missing:
            log(f"no region map for {len(missing)} subject(s), left out of the region dataset only: "
                f"{few(missing)}")
        out["region"]["missing"] = missing
        log(f"region dataset: {out['region']['folder']} ({out['region']['train_cases']} training cases, "
            f"{out['region']['test_cases']} test cases)")
    else:
        log("no --region-labels given: region dataset not built")
    for task in out:
        if out[task]["splits"] is None:
            log(f"{task}: nnUNet_preprocessed not set; copy {out[task]['folder'] / 'splits_final.json'} to "
                f"$nnUNet_preprocessed/{out[task]['folder'].name}/ before training (wmhloc_splits does it)")
    return out


convert_wmh2017 = convert  # the name the pipeline and the README use


def _parser():
    p = cli.parser("wmhloc_convert_wmh2017", __doc__.split("\n\n")[0])
    p.add_argument("release", help="root of the challenge release (holding training/ and test/)")
    p.add_argument("--output", "-o", help="nnU-Net raw folder (default: $nnUNet_raw)")
    p.add_argument("--lesion-id", type=int, default=601, help="dataset id of the lesion dataset")
    p.add_argument("--region-id", type=int, default=602, help="dataset id of the region dataset")
    p.add_argument("--lesion-name", default="WMHLesion", help="name of the lesion dataset (DatasetXXX_<name>)")
    p.add_argument("--region-name", default="WMHRegion", help="name of the region dataset (DatasetXXX_<name>)")
    p.add_argument("--region-labels", help="folder searched recursively for region maps named by subject: "
                   "WMH_<id>.nii.gz (the authors' WMH_refined_labels) or <subject>.nii.gz (wmhloc_region_labels "
                   "--input <release>); without it no region dataset is built")
    p.add_argument("--split", choices=("challenge", "paper"), default="challenge",
                   help="challenge: train on the challenge's training subjects; paper: swapped, as the paper did")
    p.add_argument("--modalities", nargs="+", choices=MODALITIES, default=list(MODALITIES),
                   help="which images become cases")
    return add_output_options(p, "replace existing datasets and splits")


def _main(argv=None) -> int:
    a = _parser().parse_args(argv)
    convert(a.release, output=a.output, lesion_id=a.lesion_id, region_id=a.region_id, lesion_name=a.lesion_name,
            region_name=a.region_name, region_labels=a.region_labels, split=a.split, modalities=a.modalities,
            preprocessed=a.preprocessed, overwrite=a.overwrite)
    return 0


main = cli.entry(_main)
