"""The predict stage of wmhloc_run and wmhloc_predict: one nnU-Net prediction command per task, in one
process or sharded by subject over a Dask cluster."""
from __future__ import annotations

import os
from pathlib import Path

from nnunet_wmhloc.io import WMHLocError
from nnunet_wmhloc.layout import RunLayout
from nnunet_wmhloc.pipeline.stages import StageContext, clear_dir
from nnunet_wmhloc.vocab import split_case


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
        dst = clear_dir(RunLayout(output).predictions(task))
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
        dst = clear_dir(RunLayout(output).predictions(task))
        records = clear_dir(RunLayout(output).prediction_records(task))
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
        parallel.sweep(RunLayout(output).predictions(task))
    failed = [r for r in recs if r.get("status") != "ok"]
    for r in recs:
        ctx.log(f"{r.get('subject')} {r.get('task', '')}: {r.get('status')} {r.get('reason', '')} "
                f"(worker {r.get('worker', '?')})")
    if failed:
        raise WMHLocError(f"{len(failed)} of {len(recs)} prediction tasks failed: "
                          + "; ".join(r["reason"] for r in failed[:5]) + (" ..." if len(failed) > 5 else ""))
    out = {task: len(nifti_stems(RunLayout(output).predictions(task))) for task in models}
    for task, n in out.items():
        if n != len(cases[task]):
            raise WMHLocError(f"{RunLayout(output).predictions(task)}: {n} segmentations for {len(cases[task])} input "
                              "cases")
    return {"cases": n_cases, "predicted": out, "workers": sorted({r["worker"] for r in recs})}
