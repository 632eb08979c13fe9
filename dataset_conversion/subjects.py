"""The one cohort walker: the subjects of a BIDS root, a CSV manifest, a folder of subject folders (the
challenge's <id>/pre/FLAIR.nii.gz, or plain <id>/T1.nii.gz) or a folder of flat <id>_<modality>[_0000].nii.gz
files. The converters and region labelling read cohorts through `load_cohort`; the challenge converter walks
its release with `subject_folders`. Every subject id goes through `vocab.subject_id`."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from nnunet_wmhloc.io import WMHLocError, check_path, read_csv, strip_nifti
from nnunet_wmhloc.vocab import MODALITIES, split_case, subject_id


@dataclass
class Subject:
    """One subject's files; `images` maps modality ('flair', 't1') to a path; label maps may be absent."""
    subject: str
    images: dict
    lesion: Path | None = None
    regions: Path | None = None
    site: str = ""
    scanner: str = ""
    split: str = "train"  # "train" | "test"
    info: dict = field(default_factory=dict)
    wm_mask: Path | None = None  # a user's WM mask (region labelling)

    def files(self) -> list[Path]:
        """Every input file of the subject (outputs must never land on one)."""
        return [p for p in (*self.images.values(), self.lesion, self.regions, self.wm_mask) if p is not None]


# file names of the challenge layout (and of plain subject folders)
IMAGE_FILES = {"flair": "FLAIR.nii.gz", "t1": "T1.nii.gz"}
LESION_FILE = "wmh.nii.gz"
BIDS_SUFFIX = {"flair": "FLAIR", "t1": "T1w"}
LESION_PATTERNS = ("*_label-WMH_mask.nii.gz", "*_label-lesion_mask.nii.gz")
REGION_PATTERNS = ("*_label-WMregions_dseg.nii.gz",)
CSV_FILE_KINDS = {"flair": "FLAIR image", "t1": "T1 image", "lesion": "lesion mask", "regions": "region map",
                  "wm_mask": "WM mask"}


# ------------------------------------------------------------------------------------ subject folders
def subject_folders(root: Path) -> list[Path]:
    """Folders below `root` holding a subject: <id>/pre/{FLAIR,T1}.nii.gz (the challenge; its orig/ beside pre/
    is skipped), <id>/{FLAIR,T1}.nii.gz, or <id>/wmh.nii.gz."""
    found = set()
    for name in (*IMAGE_FILES.values(), LESION_FILE):
        for f in root.rglob(name):
            folder = f.parent
            if folder.name == "pre" and f.name != LESION_FILE:
                folder = folder.parent
            elif (folder.parent / "pre" / f.name).is_file():
                continue  # the challenge's unprocessed originals (orig/) beside pre/
            found.add(folder)
    return sorted(found)


def folder_images(folder: Path) -> dict[str, Path]:
    """The images of a subject folder: pre/<M>.nii.gz, else <M>.nii.gz (modalities present only)."""
    out = {}
    for mod, name in IMAGE_FILES.items():
        for p in (folder / "pre" / name, folder / name):
            if p.is_file():
                out[mod] = p
                break
    return out


def from_subject_folders(root: Path, require: str) -> list[Subject]:
    subjects = []
    for folder in subject_folders(root):
        images = folder_images(folder)
        if require not in images:
            raise WMHLocError(f"{folder}: no pre/{IMAGE_FILES[require]} or {IMAGE_FILES[require]} (every subject "
                              f"needs a {require.upper()})")
        lesion = folder / LESION_FILE
        site = folder.parent.name if folder.parent != root else root.name
        subjects.append(Subject(subject=subject_id(folder.name, str(folder)), images=images,
                                lesion=lesion if lesion.is_file() else None, site=site))
    return subjects


def from_flat_files(root: Path, require: str) -> list[Subject]:
    """<id>_<modality>[_0000].nii.gz directly in `root` (an inference folder is such a cohort)."""
    by_id: dict[str, dict] = {}
    for f in sorted(root.glob("*.nii.gz")):
        stem = strip_nifti(f)
        stem = stem[:-len("_0000")] if stem.endswith("_0000") else stem
        raw, mod = split_case(stem)
        if mod is None:
            continue
        images = by_id.setdefault(subject_id(raw, str(f)), {})
        if mod in images:
            raise WMHLocError(f"{f}: second {mod.upper()} of subject {raw} (also {images[mod].name})")
        images[mod] = f
    subjects = []
    for sid, images in by_id.items():
        if require not in images:
            other = next(iter(images.values()))
            raise WMHLocError(f"{other}: subject {sid} has no <id>_{require}.nii.gz beside it")
        subjects.append(Subject(subject=sid, images={m: images[m] for m in MODALITIES if m in images},
                                site=root.name))
    return subjects


# ------------------------------------------------------------------------------------------- BIDS
def _one(paths: list[Path], what: str, where: Path) -> Path | None:
    if len(paths) > 1:
        raise WMHLocError(f"{where}: {len(paths)} {what} files ({', '.join(p.name for p in paths[:3])}); "
                          f"expected one")
    return paths[0] if paths else None


def bids_anat_dirs(root: Path) -> list[Path]:
    return sorted(list(root.glob("sub-*/anat")) + list(root.glob("sub-*/ses-*/anat")))


def from_bids(root: Path, require: str = "flair") -> list[Subject]:
    anat_dirs = bids_anat_dirs(root)
    if not anat_dirs:
        raise WMHLocError(f"{root}: no sub-*/[ses-*/]anat folders (not a BIDS root?)")
    deriv = root / "derivatives"
    subjects = []
    for anat in anat_dirs:
        parts = anat.relative_to(root).parts
        prefix = "_".join(parts[:-1])  # sub-01 or sub-01_ses-1
        images = {}
        for mod, suffix in BIDS_SUFFIX.items():
            f = _one(sorted(anat.glob(f"{prefix}*_{suffix}.nii.gz")), suffix, anat)
            if f is not None:
                images[mod] = f
        if require not in images:
            raise WMHLocError(f"{anat}: no *_{BIDS_SUFFIX[require]}.nii.gz (every subject needs a "
                              f"{BIDS_SUFFIX[require]})")
        lesion = regions = None
        if deriv.is_dir():
            lesion = _one(sorted(p for pat in LESION_PATTERNS for p in deriv.rglob(f"{prefix}{pat[1:]}")),
                          "lesion mask", deriv)
            regions = _one(sorted(p for pat in REGION_PATTERNS for p in deriv.rglob(f"{prefix}{pat[1:]}")),
                           "region map", deriv)
        subjects.append(Subject(subject=subject_id(prefix.replace("_", "-"), str(anat)), images=images,
                                lesion=lesion, regions=regions, site=root.name))
    return subjects


# -------------------------------------------------------------------------------------------- CSV
def from_csv(path: Path, require: str = "flair", *, check_files: bool = True) -> list[Subject]:
    """Columns subject, <require> and optionally flair, t1, lesion, regions, wm_mask, site, split (train or
    test); relative paths are relative to the CSV's folder. With `check_files`, a missing file is an error
    naming the line (else the caller reports it per subject)."""
    rows = read_csv(path, required=("subject", require))
    if not rows:
        raise WMHLocError(f"{path}: no rows")
    lines: dict[str, int] = {}
    for i, r in enumerate(rows, start=2):  # ids first: a duplicate is named before any missing file
        where = f"{path}: line {i}"
        if not (r.get("subject") or "").strip() or not (r.get(require) or "").strip():
            raise WMHLocError(f"{where}: subject and {require} are required")
        sid = subject_id(r["subject"].strip(), where)
        if sid in lines:
            raise WMHLocError(f"{where}: duplicate subject id {sid} (also line {lines[sid]})")
        lines[sid] = i
    subjects = []
    for (sid, i), r in zip(lines.items(), rows):
        where = f"{path}: line {i}"

        def resolve(col):
            v = (r.get(col) or "").strip()
            if not v:
                return None
            f = Path(v) if Path(v).is_absolute() else path.parent / v
            if check_files:
                try:
                    check_path(f, what=CSV_FILE_KINDS[col])
                except WMHLocError as e:
                    raise WMHLocError(f"{where}: {e}") from None
            return f

        images = {m: p for m in MODALITIES if (p := resolve(m)) is not None}
        split = (r.get("split") or "train").strip().lower()
        if split not in ("train", "test"):
            raise WMHLocError(f"{where}: split '{split}' is neither train nor test")
        subjects.append(Subject(subject=sid, images=images, lesion=resolve("lesion"), regions=resolve("regions"),
                                wm_mask=resolve("wm_mask"), site=(r.get("site") or "").strip(), split=split))
    return subjects


# ------------------------------------------------------------------------------------------ a cohort
def load_cohort(source: str | os.PathLike, *, require: str = "flair", check_files: bool = True) -> list[Subject]:
    """The subjects of a CSV manifest, a BIDS root (sub-*/[ses-*/]anat), a folder of subject folders, or a
    folder of flat <id>_<modality>.nii.gz files; every subject has a `require` image ('flair' for the
    converters, 't1' for region labelling). Ids are unique."""
    source = Path(source)
    if not source.exists():
        raise WMHLocError(f"{source}: not found")
    if source.is_file() and source.suffix.lower() == ".csv":
        subjects = from_csv(source, require, check_files=check_files)
    elif source.is_dir():
        if bids_anat_dirs(source):
            subjects = from_bids(source, require)
        else:
            subjects = from_subject_folders(source, require) or from_flat_files(source, require)
        if not subjects:
            name = IMAGE_FILES[require]
            raise WMHLocError(f"{source}: no sub-*/[ses-*/]anat folders (BIDS), no <subject>/pre/{name} or "
                              f"<subject>/{name} (challenge layout) and no <subject>_{require}.nii.gz files")
    else:
        raise WMHLocError(f"{source}: neither a folder (BIDS or challenge layout) nor a .csv manifest")
    seen: dict[str, Subject] = {}
    for s in subjects:
        if s.subject in seen:
            raise WMHLocError(f"{source}: duplicate subject id {s.subject}")
        seen[s.subject] = s
    return subjects
