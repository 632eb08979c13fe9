"""Case and subject names, one rule for every stage: a subject gives cases `<subject>_<modality>`
(wmh012_flair, wmh012_t1); fused outputs are named `<subject>`."""
from __future__ import annotations

MODALITIES = ("flair", "t1")


def case_name(subject: str, modality: str) -> str:
    return f"{subject}_{modality}"


def split_case(stem: str, modalities=MODALITIES) -> tuple[str, str | None]:
    """(subject, modality) of a case name; modality None when the name carries no known suffix
    (matched case-insensitively, the first of `modalities` that fits)."""
    low = stem.lower()
    for m in modalities:
        suffix = "_" + m.lower()
        if low.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)], m
    return stem, None
