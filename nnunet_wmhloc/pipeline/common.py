"""What wmhloc_run and wmhloc_predict share: the nnU-Net environment, and the stages after prediction
(fuse -> localize -> cluster -> evaluate -> report) on one output layout:

<output>/predictions/{lesion,region}/      nnUNetv2_predict --save_probabilities output, <subject>_{flair,t1}
<output>/segmentations/{lesion,region}/    wmhloc_fuse: one map per subject (FLAIR and T1 averaged)
<output>/localize/                          wmhloc_localize: regional_loads.csv, lesions.csv, regional_maps/
<output>/cluster/                           wmhloc_cluster (when >= 3 subjects have WM lesions)
<output>/evaluation/<task>_<setting>/       wmhloc_evaluate (FLAIR, T1, fused), compare_<task>/ wmhloc_compare
<output>/report/report.html                 the report, with its figures/ and tables/
"""
from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Callable

from nnunet_wmhloc.env import nnunet_environ
from nnunet_wmhloc.io import (WMHLocError, check_not_input, check_output, is_owned, make_owned_dir, mark_owned,
                              remove_owned)
from nnunet_wmhloc.layout import RunLayout
from nnunet_wmhloc.vocab import split_case
from nnunet_wmhloc.pipeline.budget import budget_environ
from nnunet_wmhloc.pipeline.prediction import nifti_stems, predict_models  # noqa: F401  (run/predict use both)
from nnunet_wmhloc.pipeline.stages import StageContext, clear_dir, cpu_count, input_fingerprint

TASKS = ("lesion", "region")
SETTINGS = (("FLAIR", "flair"), ("T1", "t1"), ("fused", None))
REPORT_TITLE = "White-matter lesion localization report"


def pipeline_environ(nnunet_root: Path | None, shim_folder: Path, *, device: str, threads: int | None,
                     processes: int) -> dict:
    """Environment for nnU-Net subprocesses: its folders (when a root is given), our trainers and the budget
    trainers on nnUNet_extTrainer; on a CPU one torch thread per free core and few worker processes."""
    env = nnunet_environ(nnunet_root)
    if nnunet_root is not None:
        for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            Path(env[k]).mkdir(parents=True, exist_ok=True)
    env = budget_environ(env, shim_folder)
    if device == "cpu":
        env.setdefault("nnUNet_n_proc_DA", "1")
        n_da = int(env["nnUNet_n_proc_DA"])
        t = threads or max(1, cpu_count() - n_da)
        env["WMHLOC_TORCH_THREADS"] = str(t)
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(t)
        env["nnUNet_def_n_proc"] = str(processes)
    elif threads:
        env["WMHLOC_TORCH_THREADS"] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"  # nnU-Net's progress reaches the log as it happens
    return env


class Cohort:
    """A cohort (BIDS root, CSV or challenge-layout folder) loaded once per run. A cohort that does not load
    is not an error yet: the convert stage reports it (`subjects` raises), after the output checks."""

    def __init__(self, source: Path):
        from nnunet_wmhloc.dataset_conversion.cohort import load_cohort

        self.source = Path(source)
        try:
            self._subjects, self.error = load_cohort(self.source), None
        except WMHLocError as e:
            self._subjects, self.error = [], e

    @property
    def subjects(self) -> list:
        if self.error is not None:
            raise self.error
        return self._subjects

    def inputs(self) -> list[Path]:
        """Every file the cohort names, and the cohort itself: what no output may replace."""
        return [self.source] + [f for s in self._subjects for f in s.files()]

    def fingerprint(self) -> dict:
        """The convert stage's inputs record: the CSV's content hash, size and mtime of every listed file."""
        return input_fingerprint(self.source if self.source.is_file() else None,
                                 [f for s in self._subjects for f in s.files()])


def pipeline_main(prog: str, parser, run: Callable[..., dict], argv=None) -> int:
    """wmhloc_run's / wmhloc_predict's `_main`: parse, `run(options, command line)`, print where the report is."""
    a = parser.parse_args(argv)
    command = f"{prog} " + shlex.join(sys.argv[1:] if argv is None else [str(x) for x in argv])
    results = run(a, command)
    if not a.quiet:
        print(f"done: {results.get('report', {}).get('summary', {}).get('report') or a.output.resolve()}")
    return 0


def check_pipeline_output(output: Path, cohort: Cohort | None = None, extra_inputs=()) -> None:
    """wmhloc_run/wmhloc_predict resume into an existing output folder, but never into one they did not make
    and never into (or around) their inputs: their stages replace images/, predictions/, evaluation/, ..."""
    inputs = [p for p in extra_inputs if p is not None] + (cohort.inputs() if cohort is not None else [])
    if output.is_dir() and RunLayout(output).stages.is_dir() and not is_owned(output):
        check_not_input(output, inputs)
        mark_owned(output)  # a run folder made before ownership markers existed
    check_output(output, overwrite=True, inputs=inputs, reuse=True)


def claim_output(output: Path) -> None:
    """Create the pipeline's output folder, marked as ours when it is new or empty (never a user's folder)."""
    if not output.exists() or is_owned(output):
        output.mkdir(parents=True, exist_ok=True)
        mark_owned(output)


def default_processes(device: str) -> int:
    """Worker processes for nnU-Net preprocessing/export: nnU-Net's 3 on a GPU machine, 1-2 on a CPU."""
    return 3 if device != "cpu" else max(1, min(2, cpu_count() - 1))


def fuse_stage(ctx: StageContext, weights: dict[str, dict] | None = None, tasks=TASKS) -> dict:
    """wmhloc_fuse per task (FLAIR and T1 weights per task, default equal); the lesion task also writes the
    fused lesion probability map (segmentations/lesion/probabilities/). ctx.made["fuse"]: {task: FuseResult}."""
    from nnunet_wmhloc.postprocessing.fuse import fuse

    made = ctx.made["fuse"] = {}
    for task in tasks:  # a model-free task (wmhloc_predict --lesions csv / --regions atlas) has no predictions
        src, dst = ctx.layout.predictions(task), ctx.layout.segmentations(task)
        w = (weights or {}).get(task)
        if w and not any(src.glob("*.npz")):
            made[task] = select_segmentations(ctx, src, dst, w)
            continue
        ctx.log(f"fuse {src} -> {dst}" + (f" (weights {w})" if w else ""))
        made[task] = fuse([src], dst, modalities=list(w) if w else ("flair", "t1"),
                          weights=[float(v) for v in w.values()] if w else None,
                          probability_label=1 if task == "lesion" else None, overwrite=True, say=ctx.log,
                          progress=False)
    return {"subjects": {task: len(r.subjects) for task, r in made.items()}}


def select_segmentations(ctx: StageContext, src: Path, dst: Path, weights: dict):
    """A task predicted from one modality per subject without probabilities (nothing to average): each
    subject's map is nnU-Net's segmentation of the weighted modality, else of the one it has; logged in
    wmhloc_fuse's fusion_log.csv format. Returns a FuseResult."""
    from nnunet_wmhloc.io import atomic_dir, write_csv
    from nnunet_wmhloc.postprocessing.fuse import LOG_COLUMNS, FuseResult

    cases: dict[str, dict[str, Path]] = {}
    for stem in nifti_stems(src):
        subject, mod = split_case(stem)
        cases.setdefault(subject, {})[mod] = src / f"{stem}.nii.gz"
    rows = []
    with atomic_dir(dst, overwrite=True) as tmp:
        for subject, have in sorted(cases.items()):
            weighted = [m for m in weights if weights[m] > 0]
            use = next((m for m in weighted if m in have), next(iter(sorted(have))))
            shutil.copyfile(have[use], tmp / f"{subject}.nii.gz")
            missing = [m for m in weighted if m not in have]
            rows.append({"subject": subject, "modalities_used": use, "weights": "1",
                         "fallback": "yes" if missing else "no", "missing_modalities": " ".join(missing),
                         "files": str(have[use])})
        rows = [{c: r.get(c, "") for c in LOG_COLUMNS} for r in rows]
        write_csv(rows, tmp / "fusion_log.csv", columns=LOG_COLUMNS)
    ctx.say(f"{dst}: nnU-Net's segmentations of {len(rows)} subjects (one modality each, no fusion)")
    return FuseResult([r["subject"] for r in rows], rows, dst)


def localize_stage(ctx: StageContext, reference_lesions: Path | None) -> dict:
    """wmhloc_localize on the fused maps (and the reference lesions); ctx.made["localize"]: LocalizeResult."""
    from nnunet_wmhloc.postprocessing.localize import localize

    lay = ctx.layout
    ctx.log(f"localize {lay.segmentations('lesion')} over {lay.segmentations('region')} -> {lay.localize}"
            + (f" (reference {reference_lesions})" if reference_lesions is not None else ""))
    res = ctx.made["localize"] = localize(lay.segmentations("lesion"), lay.segmentations("region"), lay.localize,
                                          reference_lesions=reference_lesions, overwrite=True, say=ctx.log,
                                          progress=False)
    return {"subjects": len(res.loads), "with_wm_lesions": sum(float(r["wm_mm3"]) > 0 for r in res.loads),
            "reference": reference_lesions is not None}


def cluster_stage(ctx: StageContext, *, k_max: int = 8, atlas: str | None = None) -> dict:
    """k-means on the predicted regional loads over the Ks the data support; skipped (and said so) when none
    is: fewer than 3 subjects with WM lesions (K >= 2 groups and a silhouette need K + 1), or one regional
    distribution shared by all (e.g. a model that puts every lesion in one region) - a finding, not a failure.
    ctx.made["cluster"]: the ClusterResult, or None when skipped."""
    from nnunet_wmhloc.postprocessing.cluster import cluster, plan_clustering
    from nnunet_wmhloc.postprocessing.localize import read_localize

    lay = ctx.layout
    loads = ctx.made_or("localize", lambda: read_localize(lay.localize)).loads
    plan = plan_clustering(loads, k_range=(2, max(2, k_max)), source=str(lay.regional_loads))
    n = plan.clustered
    if n < 3 or not plan.feasible:
        remove_owned(lay.cluster)
        ctx.made["cluster"] = None
        msg = (f"clustering skipped: {n} subject(s) with WM lesions, at least 3 needed" if n < 3 else
               f"clustering skipped: the {n} subjects with WM lesions all have the same regional distribution "
               "of lesions")
        ctx.say(msg)
        return {"skipped": msg}
    ctx.log(f"cluster {lay.regional_loads} -> {lay.cluster}, K = {plan.ks[0]}..{plan.ks[-1]}")
    res = ctx.made["cluster"] = cluster(plan, lay.cluster, atlas=atlas, overwrite=True, say=ctx.log)
    ctx.log(f"K={res.k} (silhouette {res.best_silhouette:.3f}) for {n} subjects")
    from nnunet_wmhloc.pipeline.location_outputs import group_frequency_maps
    maps = group_frequency_maps(lay, res.assignments)
    if maps:
        ctx.log(f"lesion-frequency maps of {len(maps)} groups in atlas space -> {lay.cluster}")
    return {"clustered": n, "k_range": [2, max(plan.ks)]}


def _link(src: Path, dst: Path) -> None:
    try:
        os.symlink(os.path.relpath(src.resolve(), dst.parent.resolve()), dst)
    except OSError:  # file systems without symlinks
        shutil.copy2(src, dst)


def evaluate_stage(ctx: StageContext, references: dict[str, Path | None], sites: Path | None) -> dict:
    """Score FLAIR, T1 and fused predictions against the references of each task that has them, then set
    the three side by side (compare). Only subjects with a reference (paired by subject id) are scored: the
    others (e.g. a subject without a region map) are listed in the summary. What it made is in
    ctx.made["evaluate"]: {task: {"settings": {setting: EvaluationResult}, "compare": Comparison | None}} for
    the tasks that have references."""
    from nnunet_wmhloc.evaluation.compare import compare
    from nnunet_wmhloc.evaluation.evaluate import evaluate
    from nnunet_wmhloc.evaluation.matching import subject_key

    lay = ctx.layout
    make_owned_dir(lay.evaluation)  # a user's evaluation/ folder is refused, never deleted
    sites = sites if sites is not None and sites.is_file() else None
    summary, made = {}, {}
    for task in TASKS:
        ref = references.get(task)
        if ref is None or not ref.is_dir() or not nifti_stems(ref):
            summary[task] = "no references"
            ctx.say(f"{task}: no references, not evaluated")
            continue
        ref_subjects = {subject_key(s) for s in nifti_stems(ref)}
        done = {}
        unscored: set[str] = set()
        for name, mod in SETTINGS:
            src = lay.predictions(task) if mod else lay.segmentations(task)
            view = clear_dir(lay.evaluation_inputs(task, name))
            n = 0
            for stem in nifti_stems(src):
                subject, m = split_case(stem)
                if (mod is None and m is not None) or (mod is not None and m != mod):
                    continue
                if subject_key(stem) not in ref_subjects:
                    unscored.add(subject)
                    continue
                _link(src / f"{stem}.nii.gz", view / f"{stem}.nii.gz")
                n += 1
            if not n:
                continue
            ctx.log(f"\n# evaluate {task} {name}: {view} against {ref}")
            res = evaluate(view, ref, task, lay.evaluation_setting(task, name), sites=sites, progress=False)
            ctx.log("\n".join([f"note: {x}" for x in res.notes] + res.lines()))
            done[name] = res
        comparison = None
        if len(done) >= 2:
            ctx.log(f"\n# compare {task}: {', '.join(done)}")
            comparison = compare({k: v.output for k, v in done.items()}, lay.compare(task), published=True)
            ctx.log("\n".join([f"note: {x}" for x in comparison.notes()] + comparison.lines()))
        made[task] = {"settings": done, "compare": comparison}
        summary[task] = {"settings": sorted(done), "unscored_subjects": sorted(unscored)}
    ctx.made["evaluate"] = made
    return summary


def localize_tables(ctx: StageContext):
    """The localize stage's tables (`.loads`, `.lesions`: rows): what it returned in this process, else (the
    stage was skipped on resume) read back from its CSVs."""
    from nnunet_wmhloc.postprocessing.loads import read_localize

    return ctx.made_or("localize", lambda: read_localize(ctx.layout.localize))


def read_markers(output: Path) -> dict:
    """{stage: done-marker} of the stages finished so far, in the order they finished."""
    import json

    out = []
    for p in RunLayout(output).stages.glob("*.done"):
        try:
            m = json.loads(p.read_text(encoding="utf-8"))
        except ValueError:
            continue
        out.append((p.stat().st_mtime, p.stem, m))
    return {name: m for _, name, m in sorted(out)}
