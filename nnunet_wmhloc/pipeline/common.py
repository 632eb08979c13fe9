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
import shutil
from pathlib import Path

from nnunet_wmhloc.env import nnunet_environ
from nnunet_wmhloc.io import (WMHLocError, check_not_input, check_output, is_owned, make_owned_dir, mark_owned,
                              read_csv,
                              remove_owned)
from nnunet_wmhloc.vocab import split_case
from nnunet_wmhloc.pipeline.budget import budget_environ
from nnunet_wmhloc.pipeline.stages import StageContext, clear_dir, cpu_count

TASKS = ("lesion", "region")
SETTINGS = (("FLAIR", "flair"), ("T1", "t1"), ("fused", None))


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


def check_pipeline_output(output: Path, cohort: Path | None = None, extra_inputs=()) -> None:
    """wmhloc_run/wmhloc_predict resume into an existing output folder, but never into one they did not make
    and never into (or around) their inputs: their stages replace images/, predictions/, evaluation/, ..."""
    inputs = [p for p in extra_inputs if p is not None]
    if cohort is not None:
        from nnunet_wmhloc.dataset_conversion.cohort import load_cohort

        inputs.append(cohort)
        try:
            subjects = load_cohort(cohort)
        except WMHLocError:
            subjects = []  # the convert stage reports the cohort's problem
        for s in subjects:
            inputs += [*s.images.values(), s.lesion, s.regions]
    if output.is_dir() and (output / "stages").is_dir() and not is_owned(output):
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


def nifti_stems(folder: Path) -> list[str]:
    return sorted(p.name[:-len(".nii.gz")] for p in folder.glob("*.nii.gz") if not p.name.startswith("."))


def predict_models(ctx: StageContext, images: Path | dict[str, Path], output: Path, models: dict[str, list[str]],
                   *, scheduler: str | None = None) -> dict:
    """Run one nnU-Net prediction command per task into <output>/predictions/<task>.

    `models[task]` is the command (console script and arguments) without -i/-o; `images` the input folder,
    or one per task (when a task predicts only some modalities). With `scheduler` (a Dask scheduler address)
    the cases are sharded by subject over the cluster's workers instead."""
    inputs = {t: (images[t] if isinstance(images, dict) else images) for t in models}
    cases = {t: sorted(p.name for p in inputs[t].glob("*_0000.nii.gz")) for t in models}
    for t, c in cases.items():
        if not c:
            raise WMHLocError(f"{inputs[t]}: no <case>_0000.nii.gz images to predict")
    if scheduler:
        return _predict_sharded(ctx, inputs, output, models, cases, scheduler)
    out = {}
    for task, cmd in models.items():
        dst = clear_dir(output / "predictions" / task)
        ctx.say(f"{task} model: predicting {len(cases[task])} cases -> {dst}")
        ctx.nnunet([cmd[0], "-i", inputs[task], "-o", dst, *cmd[1:]])
        got = nifti_stems(dst)
        if len(got) != len(cases[task]):
            raise WMHLocError(f"{dst}: {len(got)} segmentations for {len(cases[task])} input cases")
        out[task] = len(got)
    return {"cases": max(len(c) for c in cases.values()), "predicted": out}


def predict_shard(job: dict) -> dict:
    """One subject's cases through one model, as a Dask task: nnU-Net runs as a subprocess (so the daemonic
    Dask worker may start it, and nnU-Net may start its own processes), into a staging folder; the results
    are moved into the task's prediction folder, segmentations last, with a JSON record beside them."""
    import subprocess
    import sys
    import time

    from nnunet_wmhloc import io, parallel

    dst, subject, task = Path(job["dst"]), job["subject"], job["task"]
    cmd = [str(c) for c in job["cmd"]]
    env = {**os.environ, **job["env"], "WMHLOC_PARENT_PID": str(os.getpid())}  # launch: die with the worker
    t = time.time()
    with parallel.staging(dst, f"{task}-{subject}") as tmp:
        inp, out = tmp / "in", tmp / "out"
        inp.mkdir()
        for c in job["cases"]:
            os.symlink(c, inp / Path(c).name)
        log = tmp / f"{subject}.log"
        with open(log, "w", encoding="utf-8") as f:
            p = subprocess.run([sys.executable, "-m", "nnunet_wmhloc.pipeline.launch", cmd[0], "-i", str(inp),
                                "-o", str(out), *cmd[1:]], env=env, stdout=f, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
        logs = Path(job["logs"])
        logs.mkdir(parents=True, exist_ok=True)
        parallel.publish([log], logs)
        rec = {"subject": subject, "task": task, "cases": [Path(c).name for c in job["cases"]],
               "command": cmd[0], "seconds": round(time.time() - t, 1), **parallel.record_stamp()}
        if p.returncode != 0:
            from nnunet_wmhloc.pipeline.stages import _last_error_line

            reason = (f"{subject} ({task}): {cmd[0]} exited with {p.returncode}: "
                      f"{_last_error_line((logs / log.name).read_text(errors='replace')[-20000:])}")
            return {**rec, "status": "failed", "reason": reason}
        segs = sorted(out.glob("*.nii.gz"))
        if len(segs) != len(job["cases"]):
            return {**rec, "status": "failed",
                    "reason": f"{subject} ({task}): {len(segs)} segmentations for {len(job['cases'])} cases"}
        parallel.publish([f for f in sorted(out.iterdir()) if f not in segs] + segs, dst)
    rec["status"] = "ok"
    io.write_json(rec, Path(job["records"]) / f"{subject}.json", overwrite=True)
    return rec


def _predict_sharded(ctx: StageContext, inputs: dict[str, Path], output: Path, models: dict[str, list[str]],
                     cases: dict[str, list[str]], scheduler: str) -> dict:
    """predict_models on a Dask cluster: one task per subject and model (a model used on a GPU asks its worker
    for the resource GPU=1); every subject done, or the stage fails naming the subjects and their reasons."""
    from nnunet_wmhloc import parallel

    by_subject: dict[str, dict[str, list[str]]] = {}
    for task, cs in cases.items():
        for c in cs:
            by_subject.setdefault(task, {}).setdefault(split_case(c[:-len("_0000.nii.gz")])[0], []).append(
                str((inputs[task] / c).resolve()))
    env = {k: v for k, v in ctx.env.items() if os.environ.get(k) != v}  # only what the pipeline sets
    jobs = []
    for task, cmd in models.items():
        dst = clear_dir(output / "predictions" / task)
        records = clear_dir(output / "predictions" / "records" / task)
        gpu = "-device" in cmd and str(cmd[cmd.index("-device") + 1]) == "cuda"
        jobs += [{"subject": s, "task": task, "cmd": [str(x) for x in cmd], "cases": cs, "dst": str(dst),
                  "env": env, "records": str(records), "logs": str(ctx.log_path.parent / "predict" / task),
                  "gpu": gpu} for s, cs in sorted(by_subject[task].items())]
    n_cases = max(len(c) for c in cases.values())
    n_subjects = len({s for per in by_subject.values() for s in per})
    ctx.say(f"predicting {n_cases} cases of {n_subjects} subjects with {len(models)} model(s) on the Dask "
            f"cluster at {scheduler}: {len(jobs)} tasks")
    with parallel.session(scheduler) as client:
        recs = []
        for gpu in (False, True):
            part = [j for j in jobs if j["gpu"] == gpu]
            recs += parallel.map_tasks(predict_shard, part, desc="predict", client=client,
                                       resources={"GPU": 1} if gpu else None)
    for task in models:
        parallel.sweep(output / "predictions" / task)
    failed = [r for r in recs if r.get("status") != "ok"]
    for r in recs:
        ctx.log(f"{r.get('subject')} {r.get('task', '')}: {r.get('status')} {r.get('reason', '')} "
                f"(worker {r.get('worker', '?')})")
    if failed:
        raise WMHLocError(f"{len(failed)} of {len(recs)} prediction tasks failed: "
                          + "; ".join(r["reason"] for r in failed[:5]) + (" ..." if len(failed) > 5 else ""))
    out = {task: len(nifti_stems(output / "predictions" / task)) for task in models}
    for task, n in out.items():
        if n != len(cases[task]):
            raise WMHLocError(f"{output / 'predictions' / task}: {n} segmentations for {len(cases[task])} input "
                              "cases")
    return {"cases": n_cases, "predicted": out, "workers": sorted({r["worker"] for r in recs})}


def fuse_stage(ctx: StageContext, weights: dict[str, dict] | None = None) -> dict:
    """wmhloc_fuse per task (FLAIR and T1 weights per task, default equal); the lesion task also writes the
    fused lesion probability map (segmentations/lesion/probabilities/). ctx.made["fuse"]: {task: FuseResult}."""
    from nnunet_wmhloc.postprocessing.fuse import fuse

    made = ctx.made["fuse"] = {}
    for task in TASKS:
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
    return {"clustered": n, "k_range": [2, max(plan.ks)]}


def _link(src: Path, dst: Path) -> None:
    try:
        os.symlink(os.path.relpath(src.resolve(), dst.parent.resolve()), dst)
    except OSError:  # file systems without symlinks
        shutil.copy2(src, dst)


def evaluate_stage(ctx: StageContext, references: dict[str, Path | None], sites: Path | None) -> dict:
    """Score FLAIR, T1 and fused predictions against the references of each task that has them, then set
    the three side by side (wmhloc_compare). Only subjects with a reference are scored: the others (e.g. a
    subject without a region map) are listed in the summary."""
    root = make_owned_dir(ctx.output / "evaluation")  # a user's evaluation/ folder is refused, never deleted
    summary = {}
    for task in TASKS:
        ref = references.get(task)
        if ref is None or not ref.is_dir() or not nifti_stems(ref):
            summary[task] = "no references"
            ctx.say(f"{task}: no references, not evaluated")
            continue
        ref_subjects = {split_case(s)[0] for s in nifti_stems(ref)}
        done = {}
        unscored: set[str] = set()
        for name, mod in SETTINGS:
            src = ctx.output / ("predictions" if mod else "segmentations") / task
            view = clear_dir(root / "inputs" / f"{task}_{name.lower()}")
            n = 0
            for stem in nifti_stems(src):
                subject, m = split_case(stem)
                if (mod is None and m is not None) or (mod is not None and m != mod):
                    continue
                if subject not in ref_subjects:
                    unscored.add(subject)
                    continue
                _link(src / f"{stem}.nii.gz", view / f"{stem}.nii.gz")
                n += 1
            if not n:
                continue
            dst = root / f"{task}_{name.lower()}"
            args = ["--pred", view, "--ref", ref, "--task", task, "--output", dst]
            if sites is not None and sites.is_file():
                args += ["--sites", sites]
            ctx.tool("wmhloc_evaluate", args)
            done[name] = dst
        if len(done) >= 2:
            ctx.tool("wmhloc_compare", ["--results", *[f"{k}={v}" for k, v in done.items()],
                                        "--output", root / f"compare_{task}", "--published"])
        summary[task] = {"settings": sorted(done), "unscored_subjects": sorted(unscored)}
    return summary


def read_markers(output: Path) -> dict:
    """{stage: done-marker} of the stages finished so far, in the order they finished."""
    import json

    out = []
    for p in (output / "stages").glob("*.done"):
        try:
            m = json.loads(p.read_text(encoding="utf-8"))
        except ValueError:
            continue
        out.append((p.stat().st_mtime, p.stem, m))
    return {name: m for _, name, m in sorted(out)}


def read_rows(path: Path) -> list[dict]:
    return read_csv(path)
