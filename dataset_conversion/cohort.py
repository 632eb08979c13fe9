"""wmhloc_convert_cohort: plug in a new cohort (BIDS root, CSV manifest or a folder in the challenge's layout).

With lesion masks for every subject it writes an nnU-Net training dataset (lesion task; and the region task
for subjects that have region maps). Without masks it writes an inference folder of
<subject>_flair_0000.nii.gz / <subject>_t1_0000.nii.gz, ready for nnUNetv2_predict.

BIDS: sub-*/[ses-*/]anat/*_FLAIR.nii.gz and *_T1w.nii.gz; lesion masks under derivatives/ named
<sub>[_<ses>]*_label-WMH_mask.nii.gz (or _label-lesion_mask), region maps *_label-WMregions_dseg.nii.gz.
CSV: columns subject, flair, t1 (may be empty), and optional lesion, regions, site, split (train or test: test
subjects go to imagesTs/labelsTs and may lack masks); relative paths are relative to the CSV's folder.
Folder in the challenge's layout: any <...>/<subject>/pre/FLAIR.nii.gz (or <subject>/FLAIR.nii.gz) below it,
with pre/T1.nii.gz and wmh.nii.gz (lesion mask) when present; the subject's parent folder is its site.
A folder of flat <subject>_flair[_0000].nii.gz (+ <subject>_t1[_0000].nii.gz) files is a cohort too.
(One walker for every command: dataset_conversion/subjects.py.)
FLAIR-only subjects give one case. A T1 not on the FLAIR's grid is an error unless --register-t1.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk

from nnunet_wmhloc import cli
from nnunet_wmhloc.registration import moments_mattes
from nnunet_wmhloc.io import (WMHLocError, atomic_dir, check_output, check_same_geometry, read_image, to_float32,
                              temp_dir, write_csv)
from nnunet_wmhloc.dataset_conversion.common import (LESION_DESCRIPTION, REGION_DESCRIPTION, DatasetJob,
                                                     add_output_options, build_datasets, load_subject,
                                                     raw_root_from, subject_row, write_cases)
from nnunet_wmhloc.dataset_conversion.subjects import Subject, from_bids, from_csv, load_cohort  # noqa: F401
from nnunet_wmhloc.vocab import dataset_folder_name


# ------------------------------------------------------------------------------- T1 -> FLAIR space
def register_rigid(fixed: sitk.Image, moving: sitk.Image) -> sitk.Transform:
    """Rigid T1 -> FLAIR registration by Mattes mutual information (multi-resolution)."""
    # every voxel: at 3 mm slices a subject has ~1e6 voxels, and random sampling made results vary by run
    return moments_mattes(fixed, moving, sitk.Euler3DTransform(), bins=32, shrink=[4, 2, 1], sigmas=[2, 1, 0],
                          optimizer=lambda r: r.SetOptimizerAsRegularStepGradientDescent(
                              learningRate=2.0, minStep=1e-4, numberOfIterations=300, relaxationFactor=0.6))


def _t1_to_flair(s: Subject, register: bool, tmp: Path) -> None:
    """Leave s.images['t1'] when it shares the FLAIR grid; else register it (or refuse)."""
    if "t1" not in s.images:
        return
    flair = read_image(s.images["flair"], what="FLAIR image")
    t1 = read_image(s.images["t1"], what="T1 image")
    try:
        check_same_geometry(flair, s.images["flair"], t1, s.images["t1"])
        return
    except WMHLocError as e:
        if not register:
            raise WMHLocError(f"{e} (T1 not in FLAIR space: use --register-t1)") from None
    tx = register_rigid(to_float32(flair, s.images["flair"], "FLAIR image"), to_float32(t1, s.images["t1"], "T1 image"))
    out = sitk.Resample(t1, flair, tx, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    dst = tmp / f"{s.subject}_T1_in_FLAIR.nii.gz"
    sitk.WriteImage(out, str(dst), True)
    sitk.WriteTransform(tx, str(tmp / f"{s.subject}_T1_to_FLAIR.tfm"))
    s.info["t1_registered"] = True
    s.images["t1"] = dst


# ------------------------------------------------------------------------------------------ outputs
def write_inference_folder(subjects: list[Subject], output: Path, overwrite: bool) -> int:
    """<subject>_<modality>_0000.nii.gz for nnUNetv2_predict, plus subjects.csv; returns the number of cases."""
    return _write_inference_folder(subjects, output, overwrite)[0]


def _write_inference_folder(subjects: list[Subject], output: Path, overwrite: bool) -> tuple[int, list[dict]]:
    n = 0
    rows = []
    with atomic_dir(output, overwrite=overwrite) as tmp:
        for s in cli.progress(subjects, desc="cohort"):
            loaded = load_subject(s, need_lesion=False, read_regions=False)
            cases = write_cases(tmp, s, loaded)
            n += len(cases)
            rows.append(subject_row(s, loaded, "predict", len(cases)))
        write_csv(rows, tmp / "subjects.csv", columns=list(dict.fromkeys(k for r in rows for k in r)))
    return n, rows


@dataclass
class CohortConversion:
    """What convert_cohort made: a training conversion fills `datasets` (task -> build_datasets' dict: folder,
    train_cases, test_cases, subjects rows, splits); an inference one `inference`, `cases` and `rows`."""
    mode: str  # "train" | "predict"
    subjects: list[Subject]
    datasets: dict = field(default_factory=dict)
    inference: Path | None = None
    cases: int = 0
    rows: list = field(default_factory=list)

    def lines(self) -> list[str]:
        """What the command prints (and a pipeline stage logs)."""
        if self.mode == "predict":
            return [f"inference folder: {self.inference} ({self.cases} cases from {len(self.subjects)} subjects)"]
        les = self.datasets["lesion"]
        out = [f"lesion dataset: {les['folder']} ({les['train_cases']} training cases, {les['test_cases']} test "
               "cases)"]
        if "region" in self.datasets:
            out.append(f"region dataset: {self.datasets['region']['folder']} "
                       f"({self.datasets['region']['train_cases']} training cases)")
        elif any(s.regions is not None for s in self.subjects):
            out.append("only one subject has a region map: region dataset not built")
        return out


def choose_mode(subjects: list[Subject], mode: str = "auto") -> str:
    """auto: 'train' when every training subject has a lesion mask, 'predict' when none does."""
    if mode != "auto":
        return mode
    train = [s for s in subjects if s.split == "train"]
    with_mask = [s for s in train if s.lesion is not None]
    if with_mask and len(with_mask) != len(train):
        missing = next(s for s in train if s.lesion is None)
        raise WMHLocError(f"{missing.images['flair']}: subject {missing.subject} has no lesion mask while "
                          f"{len(with_mask)} others do (use --mode predict, or add the mask)")
    return "train" if with_mask else "predict"


def convert_cohort(source: str | os.PathLike, *, output: str | os.PathLike | None = None, mode: str = "auto",
                   lesion_id: int = 611, region_id: int = 612, name: str = "Cohort", register_t1: bool = False,
                   preprocessed: str | None = None, overwrite: bool = False,
                   subjects: list[Subject] | None = None) -> CohortConversion:
    """wmhloc_convert_cohort: nnU-Net training datasets (lesion, and region when 2+ training subjects have
    region maps) or an inference folder (`output`, required then). `subjects`: the cohort already loaded from
    `source` (it is loaded otherwise)."""
    # registering a T1 repoints its subject at a temporary file: the caller's list stays as it was
    subjects = load_cohort(source) if subjects is None else copy.deepcopy(subjects)
    mode = choose_mode(subjects, mode)
    if mode == "predict" and not output:
        raise WMHLocError("inference mode needs --output (the folder to create)")
    inputs = [source] + [f for s in subjects for f in s.files()]
    if mode == "predict":
        check_output(output, overwrite=overwrite, inputs=inputs)
    else:
        for i, n in ((lesion_id, f"{name}Lesion"), (region_id, f"{name}Region")):
            dataset_folder_name(i, n)  # a bad id or name fails now, not after the T1 registrations
    out = CohortConversion(mode, subjects)
    with temp_dir("wmhloc_t1reg_") as tmp:  # tagged: a later run sweeps what a killed one left
        for s in cli.progress(subjects, desc="T1 -> FLAIR check"):
            _t1_to_flair(s, register_t1, Path(tmp))
        if mode == "predict":
            out.inference = Path(output)
            out.cases, out.rows = _write_inference_folder(subjects, out.inference, overwrite)
            return out
        jobs = [DatasetJob("lesion", subjects, lesion_id, f"{name}Lesion", LESION_DESCRIPTION)]
        with_regions = [s for s in subjects if s.regions is not None]
        if sum(s.split == "train" for s in with_regions) >= 2:
            jobs.append(DatasetJob("region", with_regions, region_id, f"{name}Region", REGION_DESCRIPTION))
        built = build_datasets(jobs, raw_root_from(output), preprocessed=preprocessed, overwrite=overwrite,
                               inputs=inputs)
    out.datasets = {j.task: b for j, b in zip(jobs, built)}
    return out


def _parser():
    p = cli.parser("wmhloc_convert_cohort", __doc__.split("\n\n")[0])
    p.add_argument("source", help="BIDS root folder or CSV manifest (subject, flair, t1, lesion, regions)")
    p.add_argument("--output", "-o", help="training: nnU-Net raw folder (default $nnUNet_raw); "
                   "inference: the folder to create")
    p.add_argument("--mode", choices=("auto", "train", "predict"), default="auto",
                   help="auto: training dataset when every subject has a lesion mask, inference folder when none does")
    p.add_argument("--lesion-id", type=int, default=611, help="dataset id of the lesion dataset (training)")
    p.add_argument("--region-id", type=int, default=612, help="dataset id of the region dataset (training)")
    p.add_argument("--name", default="Cohort", help="dataset name suffix (DatasetXXX_<name>Lesion/Region)")
    p.add_argument("--register-t1", action="store_true",
                   help="rigidly register T1s that are not on the FLAIR grid (mutual information)")
    return add_output_options(p, "replace existing datasets, splits or inference folder")


def _main(argv=None) -> int:
    a = _parser().parse_args(argv)
    c = convert_cohort(a.source, output=a.output, mode=a.mode, lesion_id=a.lesion_id, region_id=a.region_id,
                       name=a.name, register_t1=a.register_t1, preprocessed=a.preprocessed, overwrite=a.overwrite)
    print("\n".join(c.lines()))
    return 0


main = cli.entry(_main)
