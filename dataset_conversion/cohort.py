"""wmhloc_convert_cohort: plug in a new cohort (BIDS root, CSV manifest or a folder in the challenge's layout).

With lesion masks for every subject it writes an nnU-Net training dataset (lesion task; and the region task
for subjects that have region maps). Without masks it writes an inference folder of
<subject>_flair_0000.nii.gz / <subject>_t1_0000.nii.gz, ready for nnUNetv2_predict.

BIDS: sub-*/[ses-*/]anat/*_FLAIR.nii.gz and *_T1w.nii.gz; lesion masks under derivatives/ named
<sub>[_<ses>]*_label-WMH_mask.nii.gz (or _label-lesion_mask), region maps *_label-WMregions_dseg.nii.gz.
CSV: columns subject, flair, t1 (may be empty), and optional lesion, regions, site, split (train or test: test
subjects go to imagesTs/labelsTs and may lack masks); relative paths are relative to the CSV's folder.
Folder in the challenge's layout: any <...>/<subject>/pre/FLAIR.nii.gz below it, with pre/T1.nii.gz and
wmh.nii.gz (lesion mask) when present; the subject's parent folder is its site.
FLAIR-only subjects give one case. A T1 not on the FLAIR's grid is an error unless --register-t1.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import SimpleITK as sitk

from nnunet_wmhloc import cli
from nnunet_wmhloc.io import (WMHLocError, atomic_dir, check_output, check_path, check_same_geometry, read_csv,
                              read_image, write_csv)
from nnunet_wmhloc.dataset_conversion.common import (LESION_DESCRIPTION, REGION_DESCRIPTION, DatasetJob, Subject,
                                                     build_datasets, load_subject, raw_root_from, subject_row,
                                                     write_cases)
from nnunet_wmhloc.vocab import dataset_folder_name, subject_id

LESION_PATTERNS = ("*_label-WMH_mask.nii.gz", "*_label-lesion_mask.nii.gz")
REGION_PATTERNS = ("*_label-WMregions_dseg.nii.gz",)
CSV_FILE_KINDS = {"flair": "FLAIR image", "t1": "T1 image", "lesion": "lesion mask", "regions": "region map"}


# ------------------------------------------------------------------------------------------ inputs
def _one(paths: list[Path], what: str, where: Path) -> Path | None:
    if len(paths) > 1:
        raise WMHLocError(f"{where}: {len(paths)} {what} files ({', '.join(p.name for p in paths[:3])}); "
                          f"expected one")
    return paths[0] if paths else None


def from_bids(root: Path) -> list[Subject]:
    anat_dirs = sorted(list(root.glob("sub-*/anat")) + list(root.glob("sub-*/ses-*/anat")))
    if not anat_dirs:
        raise WMHLocError(f"{root}: no sub-*/[ses-*/]anat folders (not a BIDS root?)")
    deriv = root / "derivatives"
    subjects = []
    for anat in anat_dirs:
        parts = anat.relative_to(root).parts
        prefix = "_".join(parts[:-1])  # sub-01 or sub-01_ses-1
        flair = _one(sorted(anat.glob(f"{prefix}*_FLAIR.nii.gz")), "FLAIR", anat)
        if flair is None:
            raise WMHLocError(f"{anat}: no *_FLAIR.nii.gz (every subject needs a FLAIR)")
        t1 = _one(sorted(anat.glob(f"{prefix}*_T1w.nii.gz")), "T1w", anat)
        images = {"flair": flair} | ({"t1": t1} if t1 else {})
        lesion = regions = None
        if deriv.is_dir():
            lesion = _one(sorted(p for pat in LESION_PATTERNS for p in deriv.rglob(f"{prefix}{pat[1:]}")),
                          "lesion mask", deriv)
            regions = _one(sorted(p for pat in REGION_PATTERNS for p in deriv.rglob(f"{prefix}{pat[1:]}")),
                           "region map", deriv)
        subjects.append(Subject(subject=subject_id(prefix.replace("_", "-"), str(anat)), images=images, lesion=lesion,
                                regions=regions, site=root.name))
    return subjects


def from_challenge_layout(root: Path) -> list[Subject]:
    """Subjects as the challenge ships them: <subject>/pre/FLAIR.nii.gz [+ pre/T1.nii.gz, wmh.nii.gz]."""
    subjects = []
    for flair in sorted(root.rglob("pre/FLAIR.nii.gz")):
        folder = flair.parent.parent
        t1, lesion = folder / "pre" / "T1.nii.gz", folder / "wmh.nii.gz"
        images = {"flair": flair} | ({"t1": t1} if t1.is_file() else {})
        site = folder.parent.name if folder.parent != root else root.name
        subjects.append(Subject(subject=subject_id(folder.name, str(folder)), images=images,
                                lesion=lesion if lesion.is_file() else None, regions=None, site=site))
    if not subjects:
        raise WMHLocError(f"{root}: no sub-*/[ses-*/]anat folders (BIDS) and no <subject>/pre/FLAIR.nii.gz "
                          "(challenge layout)")
    return subjects


def from_csv(path: Path) -> list[Subject]:
    rows = read_csv(path, required=("subject", "flair"))
    if not rows:
        raise WMHLocError(f"{path}: no rows")
    base = path.parent

    subjects, lines = [], {}
    for i, r in enumerate(rows, start=2):  # ids first: a duplicate is named before any missing file
        where = f"{path}: line {i}"
        if not (r.get("subject") or "").strip() or not (r.get("flair") or "").strip():
            raise WMHLocError(f"{where}: subject and flair are required")
        sid = subject_id(r["subject"].strip(), where)
        if sid in lines:
            raise WMHLocError(f"{where}: duplicate subject id {sid} (also line {lines[sid]})")
        lines[sid] = i
    for i, r in enumerate(rows, start=2):
        where = f"{path}: line {i}"

        def resolve(col):
            v = (r.get(col) or "").strip()
            if not v:
                return None
            f = Path(v) if Path(v).is_absolute() else base / v
            try:
                check_path(f, what=CSV_FILE_KINDS[col])
            except WMHLocError as e:
                raise WMHLocError(f"{where}: {e}") from None
            return f

        images = {"flair": resolve("flair")}
        if resolve("t1"):
            images["t1"] = resolve("t1")
        split = (r.get("split") or "train").strip().lower()
        if split not in ("train", "test"):
            raise WMHLocError(f"{where}: split '{split}' is neither train nor test")
        subjects.append(Subject(subject=subject_id(r["subject"].strip()), images=images,
                                lesion=resolve("lesion"), regions=resolve("regions"),
                                site=(r.get("site") or "").strip(), split=split))
    return subjects


def load_cohort(source: str | os.PathLike) -> list[Subject]:
    source = Path(source)
    if not source.exists():
        raise WMHLocError(f"{source}: not found")
    if source.is_file() and source.suffix.lower() == ".csv":
        subjects = from_csv(source)
    elif source.is_dir():
        subjects = from_bids(source) if any(source.glob("sub-*")) else from_challenge_layout(source)
    else:
        raise WMHLocError(f"{source}: neither a folder (BIDS or challenge layout) nor a .csv manifest")
    seen = {}
    for s in subjects:
        if s.subject in seen:
            raise WMHLocError(f"{source}: duplicate subject id {s.subject}")
        seen[s.subject] = s
    return subjects


# ------------------------------------------------------------------------------- T1 -> FLAIR space
def register_rigid(fixed: sitk.Image, moving: sitk.Image) -> sitk.Transform:
    """Rigid T1 -> FLAIR registration by Mattes mutual information (multi-resolution)."""
    f = sitk.Cast(fixed, sitk.sitkFloat32)
    m = sitk.Cast(moving, sitk.sitkFloat32)
    init = sitk.CenteredTransformInitializer(f, m, sitk.Euler3DTransform(),
                                             sitk.CenteredTransformInitializerFilter.MOMENTS)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    # every voxel: at 3 mm slices a subject has ~1e6 voxels, and random sampling made results vary by run
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-4, numberOfIterations=300,
                                                 relaxationFactor=0.6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2, 1, 0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(init, inPlace=False)
    return reg.Execute(f, m)


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
    tx = register_rigid(flair, t1)
    out = sitk.Resample(t1, flair, tx, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    dst = tmp / f"{s.subject}_T1_in_FLAIR.nii.gz"
    sitk.WriteImage(out, str(dst), True)
    sitk.WriteTransform(tx, str(tmp / f"{s.subject}_T1_to_FLAIR.tfm"))
    s.info["t1_registered"] = True
    s.images["t1"] = dst


# ------------------------------------------------------------------------------------------ outputs
def write_inference_folder(subjects: list[Subject], output: Path, overwrite: bool) -> int:
    """<subject>_<modality>_0000.nii.gz for nnUNetv2_predict, plus subjects.csv."""
    n = 0
    rows = []
    with atomic_dir(output, overwrite=overwrite) as tmp:
        for s in cli.progress(subjects, desc="cohort"):
            loaded = load_subject(s, need_lesion=False, read_regions=False)
            cases = write_cases(tmp, s, loaded)
            n += len(cases)
            rows.append(subject_row(s, loaded, "predict", len(cases)))
        write_csv(rows, tmp / "subjects.csv", columns=list(dict.fromkeys(k for r in rows for k in r)))
    return n


def _main(argv=None) -> int:
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
    p.add_argument("--preprocessed", default=os.environ.get("nnUNet_preprocessed"),
                   help="where splits_final.json goes (default: $nnUNet_preprocessed)")
    p.add_argument("--overwrite", action="store_true", help="replace existing datasets, splits or inference folder")
    a = p.parse_args(argv)

    subjects = load_cohort(a.source)
    train = [s for s in subjects if s.split == "train"]
    with_mask = [s for s in train if s.lesion is not None]
    mode = a.mode
    if mode == "auto":
        if with_mask and len(with_mask) != len(train):
            missing = next(s for s in train if s.lesion is None)
            raise WMHLocError(f"{missing.images['flair']}: subject {missing.subject} has no lesion mask while "
                              f"{len(with_mask)} others do (use --mode predict, or add the mask)")
        mode = "train" if with_mask else "predict"
    if mode == "predict" and not a.output:
        raise WMHLocError("inference mode needs --output (the folder to create)")
    inputs = [a.source] + [f for s in subjects for f in (*s.images.values(), s.lesion, s.regions)]
    if mode == "predict":
        check_output(a.output, overwrite=a.overwrite, inputs=inputs)
    else:
        for i, n in ((a.lesion_id, f"{a.name}Lesion"), (a.region_id, f"{a.name}Region")):
            dataset_folder_name(i, n)  # a bad id or name fails now, not after the T1 registrations
    with tempfile.TemporaryDirectory(prefix="wmhloc_t1reg_") as tmp:
        for s in cli.progress(subjects, desc="T1 -> FLAIR check"):
            _t1_to_flair(s, a.register_t1, Path(tmp))
        if mode == "predict":
            n = write_inference_folder(subjects, Path(a.output), a.overwrite)
            print(f"inference folder: {a.output} ({n} cases from {len(subjects)} subjects)")
            return 0
        raw_root = raw_root_from(a.output)
        jobs = [DatasetJob("lesion", subjects, a.lesion_id, f"{a.name}Lesion", LESION_DESCRIPTION)]
        with_regions = [s for s in subjects if s.regions is not None]
        if sum(s.split == "train" for s in with_regions) >= 2:
            jobs.append(DatasetJob("region", with_regions, a.region_id, f"{a.name}Region", REGION_DESCRIPTION))
        built = build_datasets(jobs, raw_root, preprocessed=a.preprocessed, overwrite=a.overwrite, inputs=inputs)
        les = built[0]
        print(f"lesion dataset: {les['folder']} ({les['train_cases']} training cases, "
              f"{les['test_cases']} test cases)")
        if len(built) > 1:
            print(f"region dataset: {built[1]['folder']} ({built[1]['train_cases']} training cases)")
        elif with_regions:
            print("only one subject has a region map: region dataset not built")
    return 0


def main(argv=None) -> int:
    return cli.run(_main, argv)
