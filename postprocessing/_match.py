"""Matching segmentation files to subjects (shared by wmhloc_localize).

Rule: a file's subject key is its name without .nii.gz/.nii, minus a trailing `_<modality>` for a
modality in `priority` (default flair, t1). So `wmh012.nii.gz` (wmhloc_fuse output), `wmh012_flair.nii.gz`
and `wmh012_t1.nii.gz` (per-case nnU-Net output or labelsTr) all belong to subject wmh012. When one folder
gives a subject several files, the one without a modality suffix wins, then the modalities in `priority`
order; which file was used is reported. Matching is exact and case-sensitive otherwise.
"""
from __future__ import annotations

from pathlib import Path

from nnunet_wmhloc.io import NIFTI_SUFFIXES, WMHLocError, list_inputs, strip_nifti
from nnunet_wmhloc.vocab import split_case


def subject_key(name: str, priority) -> tuple[str, int]:
    """(subject, rank): rank 0 for a bare subject name, 1 + index in `priority` for a modality suffix."""
    subject, mod = split_case(strip_nifti(name), tuple(priority))
    return subject, 0 if mod is None else 1 + list(priority).index(mod)


def index_folder(folder, priority, *, what: str) -> tuple[dict[str, Path], list[str]]:
    """subject -> chosen file, and notes on files passed over for a preferred one."""
    files = list_inputs(folder, NIFTI_SUFFIXES, what=what)
    if not files:
        raise WMHLocError(f"{folder}: no .nii.gz/.nii files in {what} folder")
    chosen: dict[str, tuple[int, Path]] = {}
    notes = []
    for p in files:
        subject, rank = subject_key(p.name, priority)
        prev = chosen.get(subject)
        if prev is not None and prev[0] == rank:
            raise WMHLocError(f"{p}: same subject '{subject}' as {prev[1].name} in {what} folder")
        if prev is None or rank < prev[0]:
            if prev is not None:
                notes.append(f"{what} {subject}: using {p.name}, not {prev[1].name}")
            chosen[subject] = (rank, p)
        else:
            notes.append(f"{what} {subject}: using {prev[1].name}, not {p.name}")
    return {s: p for s, (_, p) in chosen.items()}, notes
