"""The warnings a reviewer would raise on a run's results, per subject and for the cohort.

Per subject: predicted and reference lesion loads disagreeing by more than LOAD_RATIO (either way), more than
OUTSIDE_SHARE of the lesion volume outside every WM region (1-34), and any warning a stage recorded for the
subject (a stage's done-marker summary may hold {"warnings": {subject: [text, ...]}}, e.g. a registration or
WM-estimate warning of the atlas stage). For the cohort: regions no subject's predicted region map holds.
They are shown in the report (per subject, per cluster group) and in results/subjects.csv's `warnings`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nnunet_wmhloc.io import read_csv, read_labels
from nnunet_wmhloc.layout import RunLayout
from nnunet_wmhloc.vocab import REGION_NAMES

LOAD_RATIO = 2.0        # predicted / reference total load outside [1/LOAD_RATIO, LOAD_RATIO] is flagged
OUTSIDE_SHARE = 0.25    # share of a subject's lesion volume outside the WM regions 1-34 that is flagged
N_REGIONS = 36


def load_warning(predicted_mm3: float, reference_mm3: float) -> str:
    """'' when the predicted total load is within LOAD_RATIO of the reference, else what is wrong."""
    if reference_mm3 <= 0:
        return f"reference has no lesion, {predicted_mm3:.0f} mm³ predicted" if predicted_mm3 > 0 else ""
    ratio = predicted_mm3 / reference_mm3
    if 1 / LOAD_RATIO <= ratio <= LOAD_RATIO:
        return ""
    return (f"predicted load {predicted_mm3:.0f} mm³ is {ratio:.2f}× the reference {reference_mm3:.0f} mm³ "
            f"(outside {1 / LOAD_RATIO:g}–{LOAD_RATIO:g})")


def outside_warning(row: dict) -> str:
    total, outside = float(row.get("total_mm3") or 0), float(row.get("outside_mm3") or 0)
    if total <= 0 or outside / total <= OUTSIDE_SHARE:
        return ""
    return (f"{100 * outside / total:.0f} % of the lesion volume ({outside:.0f} of {total:.0f} mm³) lies outside "
            f"the WM regions (flagged above {100 * OUTSIDE_SHARE:.0f} %)")


def stage_warnings(run: RunLayout) -> dict[str, list[str]]:
    """Per subject, the warnings stages recorded in their done-markers' summaries."""
    out: dict[str, list[str]] = {}
    for marker in sorted(run.stages.glob("*.done")) if run.stages.is_dir() else ():
        try:
            summary = json.loads(marker.read_text(encoding="utf-8")).get("summary") or {}
        except (OSError, ValueError):
            continue
        warnings = summary.get("warnings") if isinstance(summary, dict) else None
        for subject, texts in (warnings.items() if isinstance(warnings, dict) else ()):
            texts = [texts] if isinstance(texts, str) else list(texts)
            out.setdefault(str(subject), []).extend(f"{marker.stem}: {t}" for t in texts)
    return out


def subject_warnings(run: RunLayout, loads: list[dict]) -> dict[str, list[str]]:
    """Every subject of `loads` (localize rows) -> its warnings (possibly none)."""
    ref = {r["subject"]: r for r in read_csv(run.reference_loads)} if run.reference_loads.is_file() else {}
    staged = stage_warnings(run)
    out = {}
    for r in loads:
        s = r["subject"]
        w = [outside_warning(r)]
        if s in ref:
            w.append(load_warning(float(r.get("total_mm3") or 0), float(ref[s].get("total_mm3") or 0)))
        out[s] = [x for x in w if x] + staged.get(s, [])
    return out


def never_predicted(run: RunLayout, subjects: list[str]) -> list[int]:
    """Region labels 1-36 that no predicted region map of `subjects` holds (subjects without one ignored)."""
    seen = np.zeros(N_REGIONS + 1, dtype=bool)
    found = False
    for s in subjects:
        p = Path(run.segmentations("region")) / f"{s}.nii.gz"
        if not p.is_file():
            continue
        found = True
        a = read_labels(p, what="region map")[0].ravel()
        seen |= np.bincount(np.clip(a, 0, N_REGIONS).astype(np.int64), minlength=N_REGIONS + 1) > 0
    return [int(lab) for lab in np.flatnonzero(~seen[1:]) + 1] if found else []


def cohort_review(run: RunLayout, loads: list[dict]) -> dict:
    """{"subjects": subject -> warnings, "never_predicted": labels, "text": the cohort warnings as sentences}."""
    per = subject_warnings(run, loads)
    missing = never_predicted(run, [r["subject"] for r in loads])
    text = []
    if missing:
        names = ", ".join(f"{lab} {REGION_NAMES[lab]}" for lab in missing)
        text.append(f"{len(missing)} region(s) never predicted in any of the {len(loads)} subjects: {names}; "
                    "their Dice is 0 wherever the reference has them, which lowers the mean over regions")
    flagged = [s for s, w in per.items() if w]
    if flagged:
        text.append(f"{len(flagged)} of {len(loads)} subjects carry a warning: {', '.join(flagged)}")
    return {"subjects": per, "never_predicted": missing, "text": text}


def group_warnings(assignments: list[dict], per_subject: dict[str, list[str]]) -> dict[str, str]:
    """Cluster group -> a summary of its members' warnings ('' when none has any)."""
    groups: dict[str, list[str]] = {}
    for a in assignments:
        groups.setdefault(str(a.get("group", "")), []).append(a["subject"])
    out = {}
    for g, members in groups.items():
        flagged = [s for s in members if per_subject.get(s)]
        out[g] = (f"{len(flagged)} of {len(members)} members flagged ({', '.join(flagged)}): see their warnings"
                  if flagged else "")
    return out
