"""A cohort's region labels (`region_labels_cohort`): its subjects found by the one cohort walker
(dataset_conversion/subjects.py, T1 required), one task per subject on local processes or a Dask cluster,
outputs named by the subject id (<subject>.nii.gz + .tfm, _qc.png, .json) and region_labels_summary.csv.
A failed subject is a row with its reason; the others are done."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from nnunet_wmhloc import io, parallel
from nnunet_wmhloc.atlas import _atlas
from nnunet_wmhloc.atlas.label_outputs import check_outputs, write_outcome
from nnunet_wmhloc.atlas.subject_labels import label_subject
from nnunet_wmhloc.dataset_conversion.subjects import Subject, load_cohort
from nnunet_wmhloc.io import WMHLocError

SUMMARY = "region_labels_summary.csv"
SUMMARY_COLUMNS = ["subject", "status", "reason", "t1", "output", "wm_ml", "wm_brain_ratio", "wm_dice",
                   "wm_labelled", "seconds", "warning", "worker"]


def cohort_subjects(source) -> list[Subject]:
    """The subjects region labelling reads: a CSV (subject,t1[,flair,wm_mask]; a missing file fails its
    subject only), a folder of <id>/T1.nii.gz or <id>/pre/T1.nii.gz (FLAIR.nii.gz beside it used), a folder
    of <id>_t1[_0000].nii.gz (+ <id>_flair[_0000].nii.gz), or a BIDS root."""
    return load_cohort(source, require="t1", check_files=False)


@dataclass
class CohortLabels:
    """What region_labels_cohort made: one summary row per subject (status ok/failed, reason, output, ...),
    the summary CSV, and the label map of each labelled subject."""
    rows: list
    summary: Path
    outputs: dict

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r["status"] != "ok"]


_ATLAS_CACHE: dict = {}


def _worker(job: dict) -> dict:
    """One subject of a cohort (a local process or a Dask worker): its outputs are made in a private staging
    folder and moved into place together, label map last, so a task killed midway leaves nothing behind
    (its staging folder is swept when the cohort ends) and a retry starts clean."""
    atlas = _ATLAS_CACHE.get(job["atlas_dir"])
    if atlas is None:
        atlas = _ATLAS_CACHE[job["atlas_dir"]] = _atlas.load_atlas(job["atlas_dir"])
    row = {"subject": job["subject"], "status": "failed", "reason": "", "output": "", "t1": str(job["t1"]),
           "worker": parallel.worker_name()}
    try:
        o = label_subject(job["t1"], atlas, flair_path=job["flair"], wm_path=job["wm_mask"],
                          deformable=job["deformable"], skull_stripped=job["skull_stripped"])
        o.quality.update(parallel.record_stamp())
        # checked again here, not only before the cohort: a retried task finds what a killed attempt moved
        replace = check_outputs(Path(job["output"]), job["overwrite"])
        write_outcome(o, Path(job["output"]), replace)  # one unit; a killed task's staging is swept
        row.update(status="ok", output=job["output"], wm_ml=o.quality["wm_ml"],
                   wm_dice=o.quality["wm_dice_atlas_vs_subject"], wm_labelled=o.quality["subject_wm_labelled"],
                   seconds=o.quality["seconds"], wm_brain_ratio=o.quality["wm_brain_ratio"],
                   warning="; ".join(o.quality["warnings"]))
    except WMHLocError as e:
        row["reason"] = str(e)
    except Exception as e:  # noqa: BLE001 — one broken subject must not sink a cohort; reported below
        row["reason"] = f"{job['t1']}: unexpected {type(e).__name__}: {str(e).strip().splitlines()[-1][:160]}"
    return row


def _init_worker(threads: int | None) -> None:
    """ITK threads per task: `threads`, or on a Dask worker the machine's cores shared by the worker's task
    slots. ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS, when set, wins (ITK reads it at start-up)."""
    if os.environ.get("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        return
    if threads is None:
        from distributed import get_worker

        threads = max(1, (os.cpu_count() or 1) // max(1, get_worker().state.nthreads))
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def region_labels_cohort(source, atlas_dir, output, *, workers: int = 1, scheduler: str | None = None,
                         deformable: bool = False, skull_stripped: bool | None = None, overwrite: bool = False,
                         subjects: list[Subject] | None = None) -> CohortLabels:
    """wmhloc_region_labels --input: label every subject of `source` (or of `subjects`, already loaded from
    it) into the folder `output`, on `workers` local processes or the Dask scheduler at `scheduler`."""
    subjects = cohort_subjects(source) if subjects is None else subjects
    with parallel.session(scheduler) as client:  # connected (or refused) before anything is written
        out_dir = Path(output)
        # the folder is filled subject by subject: it may sit in the cohort folder, never hold its images
        io.check_not_input(out_dir, [source if Path(source).is_file() else None]
                           + [f for s in subjects for f in s.files()])
        if out_dir.exists() and not out_dir.is_dir():
            raise WMHLocError(f"{out_dir}: exists and is not a folder")
        out_dir.mkdir(parents=True, exist_ok=True)
        _atlas.load_atlas(atlas_dir)  # fail fast on a bad atlas, before any work
        jobs = [{"subject": s.subject, "t1": s.images["t1"], "flair": s.images.get("flair"), "wm_mask": s.wm_mask,
                 "atlas_dir": str(atlas_dir), "output": str(out_dir / f"{s.subject}.nii.gz"), "overwrite": overwrite,
                 "deformable": deformable, "skull_stripped": skull_stripped} for s in subjects]
        for j in jobs:  # every subject's outputs, before any work
            check_outputs(Path(j["output"]), overwrite)
        rows = _run(jobs, workers, client)
    parallel.sweep(out_dir)
    io.write_csv(rows, out_dir / SUMMARY, columns=SUMMARY_COLUMNS, overwrite=True)
    return CohortLabels(rows, out_dir / SUMMARY, {r["subject"]: Path(r["output"]) for r in rows if r["status"] == "ok"})


def _run(jobs: list[dict], workers: int, client) -> list[dict]:
    if client is not None:
        return parallel.map_tasks(_worker, jobs, desc="region labels", client=client, initializer=_init_worker,
                                  initargs=(None,))
    workers = max(1, min(workers, len(jobs)))
    threads = max(1, (os.cpu_count() or 1) // workers)
    return parallel.map_tasks(_worker, jobs, desc="region labels", workers=workers,
                              initializer=_init_worker if workers > 1 else None, initargs=(threads,))
