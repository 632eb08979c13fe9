"""wmhloc_convert_wmh2017: the MICCAI 2017 WMH challenge release -> nnU-Net v2 lesion and region datasets.

Cases are found by walking the release for `wmh.nii.gz` with `pre/FLAIR.nii.gz` and `pre/T1.nii.gz` beside it
(training/{Utrecht,Singapore,GE3T}/<id>/, test/{Utrecht,Singapore,Amsterdam/{GE3T,GE1T5,Philips_VU .PETMR_01.}}/<id>/).
Each subject gives two single-channel cases, <subject>_flair and <subject>_t1, sharing one label map.
"""
from __future__ import annotations

import os
from pathlib import Path

from nnunet_wmhloc import cli
from nnunet_wmhloc.io import WMHLocError, is_number
from nnunet_wmhloc.dataset_conversion.common import (LESION_DESCRIPTION, REGION_DESCRIPTION, DatasetJob, Subject,
                                                     build_datasets, raw_root_from)
from nnunet_wmhloc.vocab import MODALITIES, dataset_folder_name, subject_id

SPLIT_FOLDERS = {"training": "train", "test": "test"}
# training/GE3T is the Amsterdam GE 3T scanner; the test release nests all three Amsterdam scanners
_SITE_OF_SCANNER = {"GE3T": "Amsterdam", "GE1T5": "Amsterdam", "Philips_VU .PETMR_01.": "Amsterdam"}


def find_subjects(root: str | os.PathLike, modalities=MODALITIES) -> list[Subject]:
    """Every folder holding wmh.nii.gz, pre/FLAIR.nii.gz and pre/T1.nii.gz below `root`."""
    root = Path(root)
    if not root.is_dir():
        raise WMHLocError(f"{root}: challenge release folder not found")
    subjects, seen = [], {}
    for wmh in sorted(root.rglob("wmh.nii.gz")):
        folder = wmh.parent
        parts = folder.relative_to(root).parts
        split_idx = next((i for i, p in enumerate(parts) if p.lower() in SPLIT_FOLDERS), None)
        if split_idx is None:
            raise WMHLocError(f"{folder}: not below a 'training' or 'test' folder; cannot tell its split")
        images = {"flair": folder / "pre" / "FLAIR.nii.gz", "t1": folder / "pre" / "T1.nii.gz"}
        for mod in modalities:
            if not images[mod].is_file():
                raise WMHLocError(f"{images[mod]}: missing (every challenge subject has pre/FLAIR and pre/T1)")
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
    """WMH_<id>.nii.gz anywhere below `folder` (the authors' WMH_refined_labels/{Train,Test})."""
    folder = Path(folder)
    if not folder.is_dir():
        raise WMHLocError(f"{folder}: region label folder not found")
    maps: dict[str, Path] = {}
    for p in sorted(folder.rglob("WMH_*.nii.gz")):
        raw = p.name[len("WMH_"):-len(".nii.gz")]
        sid = subject_id(raw, str(p))
        if sid in maps:
            raise WMHLocError(f"{p}: second region map for subject {raw} (also {maps[sid]})")
        maps[sid] = p
    if not maps:
        raise WMHLocError(f"{folder}: no WMH_<id>.nii.gz region maps found")
    return maps


def convert(release: str, *, output: str | None = None, lesion_id: int = 601, region_id: int = 602,
            lesion_name: str = "WMHLesion", region_name: str = "WMHRegion", region_labels: str | None = None,
            split: str = "challenge", modalities=MODALITIES, preprocessed: str | None = None,
            overwrite: bool = False, log=print) -> dict:
    raw_root = raw_root_from(output)
    for i, n in ((lesion_id, lesion_name), (region_id, region_name)):
        dataset_folder_name(i, n)  # bad ids and names fail before any reading
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
                f"{', '.join(missing)}")
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


def _main(argv=None) -> int:
    p = cli.parser("wmhloc_convert_wmh2017", __doc__.split("\n\n")[0])
    p.add_argument("release", help="root of the challenge release (holding training/ and test/)")
    p.add_argument("--output", "-o", help="nnU-Net raw folder (default: $nnUNet_raw)")
    p.add_argument("--lesion-id", type=int, default=601, help="dataset id of the lesion dataset")
    p.add_argument("--region-id", type=int, default=602, help="dataset id of the region dataset")
    p.add_argument("--lesion-name", default="WMHLesion", help="name of the lesion dataset (DatasetXXX_<name>)")
    p.add_argument("--region-name", default="WMHRegion", help="name of the region dataset (DatasetXXX_<name>)")
    p.add_argument("--region-labels", help="folder searched recursively for WMH_<id>.nii.gz region maps "
                   "(e.g. the authors' WMH_refined_labels); without it no region dataset is built")
    p.add_argument("--split", choices=("challenge", "paper"), default="challenge",
                   help="challenge: train on the challenge's training subjects; paper: swapped, as the paper did")
    p.add_argument("--modalities", nargs="+", choices=MODALITIES, default=list(MODALITIES),
                   help="which images become cases")
    p.add_argument("--preprocessed", default=os.environ.get("nnUNet_preprocessed"),
                   help="where splits_final.json goes (default: $nnUNet_preprocessed)")
    p.add_argument("--overwrite", action="store_true", help="replace existing datasets and splits")
    a = p.parse_args(argv)
    convert(a.release, output=a.output, lesion_id=a.lesion_id, region_id=a.region_id, lesion_name=a.lesion_name,
            region_name=a.region_name, region_labels=a.region_labels, split=a.split, modalities=a.modalities,
            preprocessed=a.preprocessed, overwrite=a.overwrite)
    return 0


def main(argv=None) -> int:
    return cli.run(_main, argv)
