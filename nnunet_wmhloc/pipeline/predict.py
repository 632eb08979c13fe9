"""wmhloc_predict: apply trained lesion and region models to a new cohort: lesion and region maps per
subject, regional lesion loads, clustering (>= 3 subjects with lesions) and the report.

    wmhloc_predict cohort.csv -o out --lesion-model RESULTS/Dataset601_WMHLesion/nnUNetTrainerWMHLoc__nnUNetPlans__3d_fullres \\
        --region-model RESULTS/Dataset602_WMHRegion/nnUNetTrainerWMHLoc__nnUNetPlans__3d_fullres
    wmhloc_predict bids_root -o out --lesion-model 601 --region-model 602 -c 3d_fullres   # ids in $nnUNet_results
    wmhloc_predict cohort.csv -o out --models models.zip          # wmhloc_export_models: nothing else needed

The cohort (BIDS root, CSV manifest or folder, see wmhloc_convert_cohort) becomes an inference folder of
<subject>_flair_0000 / <subject>_t1_0000 images. Per task the fusion (the archive's choice from
cross-validation, `--fusion`, else equal-weight FLAIR + T1) says which cases each model predicts
(nnUNetv2_predict_from_modelfolder): a single chosen modality predicts only that one, and a subject without
it falls back to the modality it has (results/subjects.csv says so). Then fusion, localisation, the
per-subject results (results/: lesion mask, lesion probability map, region map, regional lesion map on the
FLAIR grid, cohort tables; a BIDS derivative with --layout bids), clustering, evaluation against the lesion
masks or region maps listed in the cohort, and the report. Stages resume like wmhloc_run's.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from nnunet_wmhloc import cli, parallel
from nnunet_wmhloc.io import WMHLocError, is_number, read_json
from nnunet_wmhloc.layout import RunLayout
from nnunet_wmhloc.pipeline import common, model_free
from nnunet_wmhloc.pipeline import models as M
from nnunet_wmhloc.pipeline.stages import Runner, Stage, StageContext, clear_dir

STAGES = ("models", "convert", "predict", "fuse", "maps", "localize", "results", "cluster", "evaluate", "report")


def resolve_model(spec: str, *, task: str, trainer: str, configuration: str, plans: str,
                  results: str | None) -> Path:
    """A trained model folder (holding plans.json, dataset.json and fold_X/) from a path or a dataset id/name."""
    p = Path(spec)
    if p.is_dir():
        folder = p
    else:
        if not (is_number(spec) or spec.startswith("Dataset")):
            raise WMHLocError(f"--{task}-model {spec}: neither a model folder nor a dataset id/name")
        if not results:
            raise WMHLocError(f"--{task}-model {spec}: a dataset id needs --nnunet-results or $nnUNet_results")
        root = Path(results)
        pattern = f"Dataset{int(spec):03d}_*" if is_number(spec) else spec
        hits = sorted(root.glob(pattern)) if root.is_dir() else []
        if len(hits) != 1:
            raise WMHLocError(f"{root}: expected one {pattern} folder for --{task}-model, found {len(hits)}")
        folder = hits[0] / f"{trainer}__{plans}__{configuration}"
        if not folder.is_dir():
            have = ", ".join(sorted(x.name for x in hits[0].iterdir() if x.is_dir())) or "none"
            raise WMHLocError(f"{folder}: no such trained model (trained models there: {have})")
    for f in ("plans.json", "dataset.json"):
        if not (folder / f).is_file():
            raise WMHLocError(f"{folder}: not an nnU-Net model folder (no {f})")
    labels = read_json(folder / "dataset.json", what="model dataset.json").get("labels", {})
    if not isinstance(labels, dict):
        raise WMHLocError(f"{folder / 'dataset.json'}: 'labels' is not a mapping of label names to values")
    n = len([v for v in labels.values() if not isinstance(v, (list, tuple))])
    if task == "region" and n < 30:
        raise WMHLocError(f"{folder}: {n} labels; a region model has 37 (0..36). Lesion and region models swapped?")
    if task == "lesion" and n > 3:
        raise WMHLocError(f"{folder}: {n} labels; a lesion model has 2-3 (0 background, 1 WMH, 2 other). "
                          "Lesion and region models swapped?")
    return folder.resolve()


def model_folds(folder: Path, folds: list[str] | None) -> list[str]:
    if folds:
        for f in folds:
            if not (folder / f"fold_{f}" / "checkpoint_final.pth").is_file():
                raise WMHLocError(f"{folder / f'fold_{f}' / 'checkpoint_final.pth'}: not found (fold {f} not trained)")
        return folds
    found = sorted(d.name[len("fold_"):] for d in folder.glob("fold_*") if (d / "checkpoint_final.pth").is_file())
    if not found:
        raise WMHLocError(f"{folder}: no fold_X/checkpoint_final.pth (no finished training)")
    return found


def build_parser():
    p = cli.parser("wmhloc_predict", __doc__.split("\n\n")[0])
    p.add_argument("cohort", type=Path, help="BIDS root or CSV manifest (subject, flair, t1[, lesion, regions, site])")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder (created; re-runs resume it)")
    p.add_argument("--models", type=Path, default=None,
                   help="model archive written by wmhloc_export_models (instead of --lesion-model/--region-model)")
    p.add_argument("--lesion-model",
                   help="trained lesion model: an nnU-Net results folder <trainer>__<plans>__<configuration> or a "
                        "dataset id/name found in --nnunet-results")
    p.add_argument("--region-model", help="trained region model, as --lesion-model")
    p.add_argument("--fusion", nargs="+", default=None,
                   help="FLAIR/T1 use per task, overriding the archive's choice: flair, t1, fused, fused:<FLAIR "
                        "weight>, or per task lesion=... region=... (default without an archive: fused, equal)")
    p.add_argument("--layout", choices=("auto", "flat", "bids"), default="auto",
                   help="results/ layout: flat (<subject>/ folders, CSV) or a BIDS derivative (TSV); auto = bids "
                        "when the cohort is a BIDS root")
    p.add_argument("--trainer", default="nnUNetTrainerWMHLoc", help="trainer of models given by dataset id")
    p.add_argument("--region-trainer", default=None, help="region trainer when given by id (default: --trainer)")
    p.add_argument("-c", "--configuration", default="3d_fullres", help="configuration of models given by dataset id")
    p.add_argument("-p", "--plans", default="nnUNetPlans", help="plans identifier of models given by dataset id")
    p.add_argument("--nnunet-results", default=os.environ.get("nnUNet_results"),
                   help="nnU-Net results folder for dataset ids (default $nnUNet_results)")
    p.add_argument("-f", "--folds", nargs="+", default=None,
                   help="folds to ensemble (default: every fold with checkpoint_final.pth / the archive's folds)")
    p.add_argument("--device", choices=("cuda", "cpu", "mps"), default=None,
                   help="device for prediction (default: cuda when torch finds a GPU, else cpu)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="test-time mirroring (default: the setting the archive's run predicted with, recorded in "
                        "its manifest; else on)")
    p.add_argument("--disable-tta", action="store_true", help="same as --no-tta")
    p.add_argument("--threads", type=cli.workers_int, default=None, help="torch threads per nnU-Net process on the CPU (default: cores minus one)")
    p.add_argument("--processes", type=cli.workers_int, default=None, help="nnU-Net preprocessing/export worker processes")
    p.add_argument("--register-t1", action="store_true",
                   help="rigidly register T1s that are not on the FLAIR grid (wmhloc_convert_cohort)")
    p.add_argument("--atlas", help="refined 36-label atlas for the cluster atlas maps")
    p.add_argument("--k-max", type=cli.int_range(2, 50), default=8,
                   help="largest number of groups tried by the clustering (2..50)")
    model_free.add_arguments(p)
    parallel.add_argument(p)
    p.add_argument("--force", choices=STAGES, help="redo this stage and every stage after it")
    p.add_argument("--quiet", action="store_true", help="only errors on the terminal")
    return p


class PredictPlan:
    def __init__(self, a, command: str):
        self.a = a
        self.command = command
        self.output = a.output.resolve()
        if not a.cohort.exists():
            raise WMHLocError(f"{a.cohort}: cohort not found (BIDS root or CSV manifest)")
        self.manifest = None
        if a.models is not None:
            if a.lesion_model or a.region_model:
                raise WMHLocError("--models replaces --lesion-model/--region-model: give one or the other")
            self.manifest = M.open_archive(a.models)  # checked before anything is written
            self.models = {t: RunLayout(self.output).models / self.manifest["models"][t]["path"]
                           for t in model_free.model_tasks(a)}
            self.folds = {t: [str(f) for f in self.manifest["models"][t]["folds"]] for t in self.models}
            if a.tta is None and not a.disable_tta:  # the run's own setting, so the archive reproduces its report
                a.tta = self.manifest.get("prediction", {}).get("test_time_mirroring")
            if a.folds:
                for t in self.models:
                    extra = sorted(set(a.folds) - set(self.folds[t]))
                    if extra:
                        raise WMHLocError(f"{a.models}: the {t} model has no fold(s) {', '.join(extra)} "
                                          f"(archived: {', '.join(self.folds[t])})")
                self.folds = {t: list(a.folds) for t in self.models}
        else:
            need = model_free.model_tasks(a)
            given = {"lesion": a.lesion_model, "region": a.region_model}
            if not all(given[t] for t in need):
                raise WMHLocError("give --models ARCHIVE, or both --lesion-model and --region-model (or "
                                  "--lesions csv / --regions atlas --atlas-dir for no model)")
            self.models = {t: resolve_model(given[t], task=t, trainer=(a.region_trainer if t == "region" else None)
                                            or a.trainer, configuration=a.configuration, plans=a.plans,
                                            results=a.nnunet_results) for t in need}
            self.folds = {t: model_folds(m, a.folds) for t, m in self.models.items()}
        self.fusion = self._fusion(a)
        a.disable_tta = a.disable_tta if a.tta is None else not a.tta
        a.device = cli.check_device(a.device)  # before any stage: a missing GPU fails now, not at stage 2
        self.cohort = common.Cohort(a.cohort)  # loaded once: checks, convert, references and results use it
        common.check_pipeline_output(a.output, self.cohort)
        self.cohort.subjects  # noqa: B018  a cohort that does not load is refused before the run folder exists
        model_free.check(a, self.cohort)
        self.processes = a.processes or common.default_processes(a.device)
        self.env = common.pipeline_environ(None, RunLayout(self.output).trainers, device=a.device,
                                           threads=a.threads, processes=self.processes)
        self.layout = RunLayout(self.output)
        self.images = self.layout.images

    def _fusion(self, a) -> dict[str, dict]:
        """Per task: --fusion, else the archive's choice, else equal-weight fusion."""
        override = M.parse_fusion(a.fusion)
        out = {}
        for t in M.TASKS:
            if t in override:
                out[t] = override[t]
            elif self.manifest is not None and t in self.manifest.get("fusion", {}):
                f = self.manifest["fusion"][t]
                out[t] = dict(M.fusion_spec(f["choice"], f["weights"]["flair"]), source=f.get("source", "archive"))
            else:
                out[t] = dict(M.fusion_spec("fused"), source="default")
        return out

    def extract(self, ctx: StageContext) -> dict:
        M.extract_archive(self.a.models, self.manifest, self.layout.models)
        for t, folder in self.models.items():
            model_folds(folder, self.folds[t])
        ctx.say(f"models from {self.a.models} -> {self.layout.models}")
        return {"archive": str(self.a.models.resolve()), "id": self.manifest.get("id"),
                "models": {t: self.manifest["models"][t]["path"] for t in M.TASKS}}

    def settings(self) -> dict:
        return {"cohort": str(self.a.cohort.resolve()), "device": self.a.device,
                **{f"{t} model": str(self.models.get(t, {"lesion": "none: the cohort's lesion column",
                                                         "region": "none: atlas registration"}[t]))
                   for t in M.TASKS},
                **{f"{t} folds": f for t, f in self.folds.items()},
                "test-time mirroring": not self.a.disable_tta,
                "lesion fusion": M.describe_fusion(self.fusion["lesion"]) + f" ({self.fusion['lesion']['source']})",
                "region fusion": M.describe_fusion(self.fusion["region"]) + f" ({self.fusion['region']['source']})"}

    def convert(self, ctx: StageContext) -> dict:
        from nnunet_wmhloc.dataset_conversion.cohort import convert_cohort

        subjects = model_free.convert_subjects(self.cohort.subjects, self.a)
        done = ctx.call(["wmhloc_convert_cohort", self.a.cohort, "--mode", "predict", "-o", self.images],
                        convert_cohort, self.a.cohort, subjects=subjects, mode="predict", output=self.images,
                        register_t1=self.a.register_t1, overwrite=True)
        ctx.log("\n".join(done.lines()))
        # masks listed in the cohort are references: linked under references/<task>/<subject>.nii.gz
        refs = {"lesion": 0, "region": 0}
        for task in refs:
            clear_dir(self.layout.references(task))
        for s in subjects:
            for task, path in (("lesion", s.lesion), ("region", s.regions)):
                if path is not None:
                    common._link(Path(path), self.layout.references(task) / f"{s.subject}.nii.gz")
                    refs[task] += 1
        return {"cases": len(list(self.images.glob("*_0000.nii.gz"))), "references": refs}

    def subject_modalities(self) -> dict[str, set[str]]:
        """subject -> modalities it has in the inference folder."""
        from nnunet_wmhloc.vocab import split_case

        out: dict[str, set[str]] = {}
        for p in self.images.glob("*_0000.nii.gz"):
            subject, mod = split_case(p.name[:-len("_0000.nii.gz")])
            out.setdefault(subject, set()).add(mod)
        return out

    def inputs(self, task: str) -> Path:
        """The cases `task` predicts: all of images/, or a folder of links to the ones its fusion needs."""
        have = self.subject_modalities()
        need = {f"{s}_{m}_0000.nii.gz" for s, mods in have.items()
                for m in M.needed_modalities(self.fusion[task], mods)}
        if len(need) == sum(len(v) for v in have.values()):
            return self.images
        d = clear_dir(self.layout.inputs(task))
        for name in sorted(need):
            common._link(self.images / name, d / name)
        return d

    def predict(self, ctx: StageContext) -> dict:
        models, inputs = {}, {}
        if self.a.models is None:  # an archive's models were checked when it was opened
            for task, folder in self.models.items():
                M.check_model_folder(folder, self.folds[task], task)  # before nnU-Net unpickles anything
        for task, folder in self.models.items():
            inputs[task] = self.inputs(task)
            # probabilities: to average two modalities, and for the lesion probability map; a region task on
            # one modality needs none (nnU-Net's 37-channel .npz export is slow)
            probs = task == "lesion" or all(w > 0 for w in self.fusion[task]["weights"].values())
            models[task] = (["nnUNetv2_predict_from_modelfolder", "-m", folder, "-f", *self.folds[task],
                             "-device", self.a.device, "-npp", self.processes, "-nps", self.processes]
                            + (["--save_probabilities"] if probs else [])
                            + (["--disable_tta"] if self.a.disable_tta else []))
        return common.predict_models(ctx, inputs, self.output, models, scheduler=self.a.scheduler)

    def fuse(self, ctx: StageContext) -> dict:
        return common.fuse_stage(ctx, {t: f["weights"] for t, f in self.fusion.items()}, tasks=tuple(self.models))

    def results(self, ctx: StageContext) -> dict:
        from nnunet_wmhloc.pipeline.results import write_results

        bids_in = self.a.cohort.is_dir() and any(self.a.cohort.glob("sub-*"))
        layout = self.a.layout if self.a.layout != "auto" else ("bids" if bids_in else "flat")
        from nnunet_wmhloc.pipeline.location_outputs import merged

        tables = merged(self.layout, common.localize_tables(ctx))
        return write_results(self.output, self.cohort.subjects, tables, layout=layout,
                             fusion=self.fusion, source=str(self.a.cohort.resolve()),
                             bids_root=self.a.cohort if bids_in else None, say=ctx.say)

    def references(self) -> dict:
        out = {}
        for task in ("lesion", "region"):
            if task not in self.models:  # the cohort's map is this task's input, not a reference
                out[task] = None
                continue
            d = self.layout.references(task)
            out[task] = d if d.is_dir() and common.nifti_stems(d) else None
        return out

    def report(self, ctx: StageContext) -> dict:
        from nnunet_wmhloc.pipeline.report import build_report

        path = build_report(self.output, common.localize_tables(ctx), title=common.REPORT_TITLE, settings=self.settings(),
                            images=self.images, stages=common.read_markers(self.output), command=self.command)
        ctx.say(f"report: {path}")
        return {"report": str(path)}

    def stages(self) -> list[Stage]:
        a = self.a
        fusion = {t: f["weights"] for t, f in self.fusion.items()}
        return [
            Stage("models", self.extract, {"archive": str(a.models.resolve()) if a.models else None,
                                           "id": (self.manifest or {}).get("id")},
                  enabled=a.models is not None, description="unpack the model archive"),
            Stage("convert", self.convert, {"cohort": str(a.cohort.resolve()), "register_t1": a.register_t1},
                  description="inference folder (wmhloc_convert_cohort)", inputs=self.cohort.fingerprint()),
            Stage("predict", self.predict, {"models": {t: str(m) for t, m in self.models.items()},
                                            "folds": self.folds, "tta": not a.disable_tta, "fusion": fusion},
                  enabled=bool(self.models), description="nnUNetv2_predict_from_modelfolder, lesion and region models"),
            Stage("fuse", self.fuse, {"fusion": fusion}, enabled=bool(self.models), description="FLAIR + T1 fusion"),
            Stage("maps", lambda c: model_free.maps_stage(c, self.cohort.subjects, a),
                  {"lesions": a.lesions, "regions": a.regions, "atlas_dir": str(a.atlas_dir),
                   "threshold": a.lesion_threshold, "pv_distance": a.pv_distance},
                  description="model-free lesion/region maps and location classes"),
            Stage("localize", lambda c: common.localize_stage(c, self.references()["lesion"]),
                  description="regional lesion loads"),
            Stage("results", self.results, {"layout": a.layout},
                  description="per-subject maps and cohort tables (results/)"),
            Stage("cluster", lambda c: common.cluster_stage(c, k_max=a.k_max, atlas=a.atlas),
                  {"k_max": a.k_max, "atlas": a.atlas}, description="k-means on regional loads"),
            Stage("evaluate", lambda c: common.evaluate_stage(c, self.references(), self.images / "subjects.csv"),
                  description="against references listed in the cohort"),
            Stage("report", self.report, description="report.html"),
        ]


def predict_cohort(a, command: str = "") -> dict:
    """wmhloc_predict for parsed options `a` (build_parser()'s); returns {stage: done-marker}."""
    if a.scheduler:
        parallel.require()
    plan = PredictPlan(a, command)
    plan.output.mkdir(parents=True, exist_ok=True)
    return Runner(plan.output, plan.stages(), plan.env, force=a.force, quiet=a.quiet).run()


def _main(argv=None) -> int:
    return common.pipeline_main("wmhloc_predict", build_parser(), predict_cohort, argv)


main = cli.entry(_main)


if __name__ == "__main__":
    sys.exit(main())
