"""Pairing predictions with references, and the site of each subject.

Per prediction file, in this order:
  1. exact name: ``<x>.nii.gz`` in the predictions ↔ ``<x>.nii.gz`` (or .nii) in the references;
  2. subject id (`vocab.subject_of_file`, the one subject-id rule): ``wmh003.nii.gz`` (fused),
     ``wmh003_flair.nii.gz`` (a case), ``WMH_3.nii.gz`` (the authors' naming) and ``3.nii.gz`` all name
     subject wmh003. When several references share the subject (the converter writes one label map per
     case, identical for _flair and _t1), the one with the prediction's own modality suffix wins, else the
     first by name. A name that follows no id rule is paired by its name without _flair/_t1.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nnunet_wmhloc import io
from nnunet_wmhloc.io import WMHLocError, few
from nnunet_wmhloc.vocab import split_case, subject_of_file


def subject_of(stem: str) -> str:
    """Subject of a case name as written: the name without a trailing _flair/_t1 (case-insensitive)."""
    return split_case(stem)[0]


def subject_key(stem: str) -> str:
    """What pairs a prediction with a reference: the subject id, else the name without _flair/_t1."""
    return subject_of_file(stem + ".nii.gz") or subject_of(stem)


def _modality_of(stem: str) -> str:
    return split_case(stem)[1] or ""


@dataclass(frozen=True)
class Pair:
    case: str
    pred: Path
    ref: Path
    how: str  # "exact" or "subject"


def nifti_files(folder: Path, what: str) -> dict[str, Path]:
    """stem → path of the .nii.gz/.nii files in `folder` (hidden files skipped)."""
    folder = Path(folder)
    out = io.files_by_key(io.list_inputs(folder, io.NIFTI_SUFFIXES, what=what), lambda p: io.strip_nifti(p.name),
                          lambda p, stem, first: f"{p}: duplicate case name (also {first.name}) in {what} folder")
    if not out:
        raise WMHLocError(f"{folder}: no .nii.gz/.nii files in {what} folder")
    return out


def match_cases(preds: dict[str, Path], refs: dict[str, Path]) -> tuple[list[Pair], list[str]]:
    """The pairs, and the subjects (as the references name them) that have references but no prediction.

    Raises WMHLocError naming a few predictions without a reference."""
    by_key: dict[str, list[str]] = {}
    for stem in sorted(refs):
        by_key.setdefault(subject_key(stem), []).append(stem)
    pairs, unmatched = [], []
    for stem in sorted(preds):
        if stem in refs:
            pairs.append(Pair(stem, preds[stem], refs[stem], "exact"))
            continue
        cands = by_key.get(subject_key(stem), [])
        if not cands:
            unmatched.append(stem)
            continue
        mod = _modality_of(stem)
        same_mod = [c for c in cands if _modality_of(c) == mod]
        pairs.append(Pair(stem, preds[stem], refs[(same_mod or cands)[0]], "subject"))
    if unmatched:
        first = next(iter(preds.values())).parent
        raise WMHLocError(f"{first}: {len(unmatched)} prediction(s) without a reference (by name or subject id): "
                          f"{few(unmatched)}")
    done = {subject_key(p.case) for p in pairs}
    missing = sorted(subject_of(stems[0]) for k, stems in by_key.items() if k not in done)
    return pairs, missing


def read_sites(path: Path, column: str = "site") -> dict[str, str]:
    """subject → site (or scanner, any `column`) from a CSV with a subject column."""
    rows = io.read_csv(path, required=("subject", column))
    sites: dict[str, str] = {}
    for i, r in enumerate(rows, start=2):
        s, site = (r["subject"] or "").strip(), (r[column] or "").strip()
        if not s:
            raise WMHLocError(f"{path}: empty subject on line {i}")
        if s in sites and sites[s] != site:
            raise WMHLocError(f"{path}: subject {s} listed with two sites ({sites[s]}, {site})")
        sites[s] = site
    return sites


def site_of(sites: dict[str, str], case: str) -> str:
    """The site of a case: by its subject as written, its own name, else its subject id."""
    subject = subject_of(case)
    return sites.get(subject) or sites.get(case) or sites.get(subject_key(case), "")
