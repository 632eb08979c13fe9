"""wmhloc_run: the whole pipeline, images to regional lesion report, through the real nnU-Net commands.

    wmhloc_run --demo -o demo                       # synthetic cohort, tiny CPU training, full report
    wmhloc_run --release WMH2017 --region-labels WMH_refined_labels -o wmh_run       # GPU defaults
    wmhloc_run --cohort cohort.csv -o cohort_run --quick --device cpu               # own data with masks

Stages (each resumable, logged to <output>/logs/<stage>.log, marked done in <output>/stages/<stage>.done):
synth (--demo) -> convert -> preprocess -> train_lesion -> train_region -> choose (FLAIR, T1 or fused per task,
from the cross-validation probabilities; recorded in <output>/choice/fusion.json for wmhloc_export_models) ->
predict (T1 and FLAIR cases of the test split) -> fuse -> localize -> location (location classes and atlas-space
lesion maps, with --atlas-dir; --demo uses its own synthetic atlas) -> model_free (--demo: wmhloc_predict's
model-free path on the test subjects' reference lesion masks, regions by the atlas registration, into
<output>/model_free/, timed) -> cluster -> evaluate (when references exist) -> report.
A re-run skips finished stages; `--force STAGE` redoes that stage and the ones after it.
"""
from __future__ import annotations


import sys
from pathlib import Path

from nnunet_wmhloc import cli, parallel
from nnunet_wmhloc.io import WMHLocError, is_number
from nnunet_wmhloc.pipeline import common
from nnunet_wmhloc.pipeline.budget import BASES, budget_name, parse_budget
from nnunet_wmhloc.layout import RunLayout
from nnunet_wmhloc.location.rows import add_pv_distance_option, check_pv_distance, load_atlas
from nnunet_wmhloc.pipeline.stages import Runner, Stage, StageContext
from nnunet_wmhloc.vocab import dataset_folders

STAGES = ("synth", "convert", "preprocess", "train_lesion", "train_region", "choose", "predict", "fuse", "localize",
          "location", "model_free", "cluster", "evaluate", "report")
# --quick: what a 2-core CPU trains in a few minutes per model: 2d, fold 0, epochs of 20 steps of the planned batch
# (at most 8), AdamW (nnU-Net's SGD barely starts learning in so few steps); the 37-class region model gets more
# epochs. Measured on the demo: batch 6 beats batch 4 at equal epochs (lesion Dice 0.50 vs 0.37)
QUICK = {"configuration": "2d", "folds": ["0"], "epochs": 30, "region_epochs": 45, "iterations": 20, "batch_cap": 8,
         "adamw": True}
DEMO = {"seed": 0, "per_site": 2, "test_per_site": 2}


def resolve_trainer(base: str, *, epochs: int | None, quick: bool, task: str = "lesion") -> str:
    """Trainer name for nnU-Net: the base itself, or a budget variant of it (see pipeline.budget)."""
    if parse_budget(base) is not None and (epochs or quick):
        raise WMHLocError(f"--trainer {base}: already a budget trainer; drop --epochs/--quick or give the base name")
    if not (epochs or quick):
        return base
    if base not in BASES:
        raise WMHLocError(f"--trainer {base}: --epochs/--quick need one of {', '.join(BASES)} "
                          "(or give a trainer variant with its own schedule and no --epochs)")
    if quick:
        default = QUICK["region_epochs"] if task == "region" else QUICK["epochs"]
        return budget_name(base, epochs or default, QUICK["iterations"], QUICK["batch_cap"], adamw=QUICK["adamw"])
    return budget_name(base, epochs)


def build_parser():
    p = cli.parser("wmhloc_run", __doc__.split("\n\n")[0])
    src = p.add_argument_group("input (one of; none = use the datasets already in the nnU-Net root)")
    src.add_argument("--demo", action="store_true",
                     help="synthesise a small challenge-like cohort (wmhloc_synth) and run everything with --quick "
                          "on the CPU")
    src.add_argument("--release", type=Path, help="MICCAI 2017 WMH challenge release root (training/ and test/)")
    src.add_argument("--region-labels", type=Path,
                     help="region maps WMH_<id>.nii.gz for the release (the authors' WMH_refined_labels)")
    src.add_argument("--split", choices=("challenge", "paper"), default="challenge",
                     help="challenge: train on its training subjects, test on its test subjects; paper: swapped")
    src.add_argument("--cohort", type=Path,
                     help="own cohort with lesion masks (BIDS root or CSV: subject, flair, t1, lesion, regions); "
                          "converted with wmhloc_convert_cohort")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder (created; re-runs resume it)")
    p.add_argument("--nnunet-root", type=Path,
                   help="folder holding nnUNet_raw, nnUNet_preprocessed, nnUNet_results (default <output>/nnunet)")
    p.add_argument("--lesion-id", type=cli.dataset_id, default=601, help="nnU-Net dataset id of the lesion task")
    p.add_argument("--region-id", type=cli.dataset_id, default=602, help="nnU-Net dataset id of the region task")
    t = p.add_argument_group("training")
    t.add_argument("-c", "--configuration", choices=("2d", "3d_fullres"), default=None,
                   help="nnU-Net configuration (default 3d_fullres; 2d with --quick)")
    t.add_argument("-f", "--folds", nargs="+", default=None,
                   help="folds to train and ensemble (default 0 1 2 3 4; 0 with --quick)")
    t.add_argument("--device", choices=("cuda", "cpu", "mps"), default=None,
                   help="device for training and prediction (default: cuda when torch finds a GPU, else cpu; "
                        "cpu with --demo)")
    t.add_argument("--trainer", default="nnUNetTrainerWMHLoc", help="lesion trainer (base name)")
    t.add_argument("--region-trainer", default=None, help="region trainer (default: --trainer)")
    t.add_argument("--epochs", type=cli.positive_int, default=None,
                   help="training budget: <trainer>_<E>epochs (nnU-Net default 1000 epochs x 250 iterations)")
    t.add_argument("--quick", action="store_true",
                   help=f"tiny CPU budget: {QUICK['configuration']}, fold {QUICK['folds'][0]}, {QUICK['epochs']} "
                        f"epochs (region model {QUICK['region_epochs']}) x {QUICK['iterations']} iterations, batch "
                        f"size <= {QUICK['batch_cap']}, AdamW instead of SGD, no test-time mirroring")
    t.add_argument("--disable-tta", action="store_true", help="predict without test-time mirroring (faster)")
    t.add_argument("--threads", type=cli.workers_int, default=None,
                   help="torch threads per nnU-Net process on the CPU (default: cores minus data-augmentation workers)")
    t.add_argument("--processes", type=cli.workers_int, default=None,
                   help="nnU-Net worker processes for preprocessing and export (default 3 on a GPU machine, 1-2 on CPU)")
    a = p.add_argument_group("analysis")
    a.add_argument("--atlas", help="refined 36-label atlas (36_labels_merged.nii.gz) for the cluster atlas maps")
    a.add_argument("--k-max", type=cli.int_range(2, 50), default=8,
                   help="largest number of groups tried by the clustering (2..50)")
    a.add_argument("--atlas-dir", type=Path, default=None,
                   help="atlas folder (wmhloc_build_atlas output or the Eve folder): every test subject with a T1 "
                        "gets location classes (periventricular/deep, ...) and its lesion mask in atlas space")
    add_pv_distance_option(a)
    p.add_argument("--force", choices=STAGES, help="redo this stage and every stage after it")
    parallel.add_argument(p)
    p.add_argument("--quiet", action="store_true", help="only errors on the terminal (logs are complete anyway)")
    return p


class RunPlan:
    """Options resolved into paths, trainer names and commands."""

    def __init__(self, a):
        self.a = a
        if a.demo and (a.release or a.cohort):
            raise WMHLocError("--demo makes its own cohort: drop --release/--cohort")
        if a.release and a.cohort:
            raise WMHLocError("give --release or --cohort, not both")
        if a.region_labels and not a.release:
            raise WMHLocError("--region-labels belongs to --release")
        if a.release and not a.region_labels:
            raise WMHLocError(f"{a.release}: --region-labels DIR is needed to train the region model")
        # inputs are checked before anything is created
        for flag, path in (("--release", a.release), ("--region-labels", a.region_labels), ("--cohort", a.cohort),
                           ("--atlas", a.atlas)):
            if path is not None and not Path(path).exists():
                raise WMHLocError(f"{path}: not found ({flag})")
        check_pv_distance(a.pv_distance)
        if a.atlas_dir is not None:
            load_atlas(a.atlas_dir)  # a wrong folder fails now, not after the training
        self.cohort = common.Cohort(a.cohort) if a.cohort is not None else None  # loaded once per run
        common.check_pipeline_output(a.output, self.cohort, [a.release, a.region_labels])
        self.quick = a.quick or a.demo
        self.output = a.output.resolve()
        self.layout = RunLayout(self.output)
        self.root = (a.nnunet_root or self.layout.nnunet).resolve()
        self.configuration = a.configuration or (QUICK["configuration"] if self.quick else "3d_fullres")
        self.folds = a.folds or (QUICK["folds"] if self.quick else ["0", "1", "2", "3", "4"])
        for f in self.folds:
            if f != "all" and not is_number(f):
                raise WMHLocError(f"--folds {f}: folds are numbers (or 'all')")
        self.device = "cpu" if (a.demo and a.device is None) else cli.check_device(a.device)
        self.tta = not (a.disable_tta or self.quick)
        self.processes = a.processes or common.default_processes(self.device)
        self.trainers = {"lesion": resolve_trainer(a.trainer, epochs=a.epochs, quick=self.quick),
                         "region": resolve_trainer(a.region_trainer or a.trainer, epochs=a.epochs, quick=self.quick,
                                                   task="region")}
        self.ids = {"lesion": a.lesion_id, "region": a.region_id}
        if a.lesion_id == a.region_id:
            raise WMHLocError(f"--lesion-id and --region-id are both {a.lesion_id}")
        self.release = (self.output / "synthetic") if a.demo else (a.release.resolve() if a.release else None)
        self.region_labels = (self.release / "region_labels") if a.demo else a.region_labels
        # the demo's heads register to the demo's own atlas (synth.demo_atlas), which its synth stage writes
        self.atlas_dir = a.atlas_dir or (self.layout.demo_atlas if a.demo else None)
        common.claim_output(self.output)  # every option checked: now the first thing is created
        self.env = common.pipeline_environ(self.root, self.root / "wmhloc_trainers", device=self.device,
                                           threads=a.threads, processes=self.processes)

    @property
    def raw(self) -> Path:
        return Path(self.env["nnUNet_raw"])

    def dataset(self, task: str) -> Path:
        """The raw dataset folder of a task (found by id, as nnU-Net does)."""
        i = self.ids[task]
        hits = dataset_folders(self.raw, i)
        if len(hits) != 1:
            raise WMHLocError(f"{self.raw}: expected one Dataset{i:03d}_* folder for the {task} task, found "
                              f"{len(hits)} (convert data first: --release, --cohort or --demo)")
        return hits[0]

    def settings(self) -> dict:
        return {"input": "demo (wmhloc_synth)" if self.a.demo else str(self.a.release or self.a.cohort or
                                                                       "existing nnU-Net datasets"),
                "nnU-Net root": str(self.root), "configuration": self.configuration, "folds": self.folds,
                "device": self.device, "lesion trainer": self.trainers["lesion"],
                "region trainer": self.trainers["region"], "lesion dataset": self.ids["lesion"],
                "region dataset": self.ids["region"], "test-time mirroring": self.tta}

    # ------------------------------------------------------------------------------------ stages
    def synth(self, ctx: StageContext) -> dict:
        from nnunet_wmhloc.synth import make_cohort, write_demo_atlas

        ctx.say(f"wmhloc_synth -o {self.release} --seed {DEMO['seed']} --per-site {DEMO['per_site']} "
                f"--test-per-site {DEMO['test_per_site']}")
        subs = make_cohort(self.release, seed=DEMO["seed"], per_site=DEMO["per_site"],
                           test_per_site=DEMO["test_per_site"], overwrite=True, show_progress=False, brain_t1=True)
        write_demo_atlas(self.layout.demo_atlas, overwrite=True)
        ctx.say(f"demo atlas (the canonical synthetic head): {self.layout.demo_atlas}")
        return {"subjects": len(subs), "training": sum(s["split"] == "training" for s in subs),
                "atlas": str(self.layout.demo_atlas)}

    def convert(self, ctx: StageContext) -> dict:
        from nnunet_wmhloc.dataset_conversion.cohort import convert_cohort
        from nnunet_wmhloc.dataset_conversion.splits import make_splits
        from nnunet_wmhloc.dataset_conversion.wmh2017 import convert as convert_release

        pre = self.env["nnUNet_preprocessed"]
        # datasets under <output> are ours to replace on a re-run; elsewhere an existing one is an error
        own = self.output in self.root.parents or self.root == self.output
        ids = {"lesion_id": self.ids["lesion"], "region_id": self.ids["region"]}
        if self.release is not None:
            ctx.call(["wmhloc_convert_wmh2017", self.release, "--region-labels", self.region_labels],
                     convert_release, str(self.release), output=str(self.raw), region_labels=str(self.region_labels),
                     split=self.a.split, preprocessed=pre, overwrite=own, **ids)
        elif self.a.cohort is not None:
            done = ctx.call(["wmhloc_convert_cohort", self.a.cohort, "--mode", "train"], convert_cohort,
                            self.a.cohort, subjects=self.cohort.subjects, mode="train", output=self.raw,
                            preprocessed=pre, overwrite=own, **ids)
            ctx.log("\n".join(done.lines()))
        else:
            ctx.say("no --release/--cohort/--demo: using the datasets already in " + str(self.raw))
        out = {}
        for task in ("lesion", "region"):
            ds = self.dataset(task)
            out[task] = {"dataset": ds.name, "training_cases": len(common.nifti_stems(ds / "labelsTr")),
                         "test_cases": len(common.nifti_stems(ds / "imagesTs")) if (ds / "imagesTs").is_dir() else 0}
            if not (Path(pre) / ds.name / "splits_final.json").is_file():
                # datasets made by other tools: subject-grouped folds, so T1 and FLAIR never straddle folds
                ctx.call(["wmhloc_splits", "-d", self.ids[task]], make_splits, self.raw, self.ids[task], pre)
        return out

    def preprocess(self, ctx: StageContext) -> dict:
        ctx.nnunet(["nnUNetv2_plan_and_preprocess", "-d", self.ids["lesion"], self.ids["region"],
                    "-c", self.configuration, "--verify_dataset_integrity", "-np", self.processes,
                    "-npfp", self.processes])
        return {"configuration": self.configuration}

    def model_folder(self, task: str) -> Path:
        return (Path(self.env["nnUNet_results"]) / self.dataset(task).name
                / f"{self.trainers[task]}__nnUNetPlans__{self.configuration}")

    def train(self, ctx: StageContext, task: str, forced: bool) -> dict:
        """Every fold, from scratch unless its checkpoint_final.pth is newer than the preprocessing (then
        it was trained on this very data: kept), or continued (--c) from checkpoint_latest.pth."""
        prep_marker = self.layout.marker("preprocess")
        since = prep_marker.stat().st_mtime if prep_marker.is_file() else 0
        folder = self.model_folder(task)
        out = {"model": str(folder), "trainer": self.trainers[task], "folds": {}}
        for fold in self.folds:
            fdir = folder / f"fold_{fold}"
            final, latest = fdir / "checkpoint_final.pth", fdir / "checkpoint_latest.pth"
            if not forced and final.is_file() and final.stat().st_mtime > since:
                ctx.say(f"fold {fold}: already trained ({final}), kept")
                out["folds"][fold] = "kept"
                continue
            cont = not forced and not final.is_file() and latest.is_file() and latest.stat().st_mtime > since
            ctx.say(f"fold {fold}: training {self.trainers[task]} on {self.dataset(task).name} "
                    f"({self.configuration}, {self.device}){' (continued)' if cont else ''}")
            # --npz: the validation probabilities the choose stage compares FLAIR, T1 and fused on
            ctx.nnunet(["nnUNetv2_train", self.ids[task], self.configuration, fold, "-tr", self.trainers[task],
                        "-device", self.device, "--npz"] + (["--c"] if cont else []))
            if not final.is_file():
                raise WMHLocError(f"{final}: nnUNetv2_train finished without writing it")
            out["folds"][fold] = "trained"
        val = folder / f"fold_{self.folds[0]}" / "validation" / "summary.json"
        if val.is_file():
            import json

            out["validation_dice"] = json.loads(val.read_text()).get("foreground_mean", {}).get("Dice")
        return out

    def choose(self, ctx: StageContext) -> dict:
        """Per task FLAIR, T1 or fused, from the cross-validation probabilities (pipeline.models)."""
        from nnunet_wmhloc.io import write_json
        from nnunet_wmhloc.pipeline import models as M

        out = {}
        for task in ("lesion", "region"):
            folder = self.model_folder(task)
            for fold in self.folds:
                val = folder / f"fold_{fold}" / "validation"
                if not (val.is_dir() and any(val.glob("*.npz"))):  # trained without --npz: validate again
                    ctx.say(f"{task} fold {fold}: no validation probabilities, rerunning nnU-Net's validation")
                    ctx.nnunet(["nnUNetv2_train", self.ids[task], self.configuration, fold, "-tr",
                                self.trainers[task], "-device", self.device, "--val", "--npz"])
            out[task] = M.choose_fusion(folder, self.folds, task, labels_dir=self.dataset(task) / "labelsTr",
                                        say=ctx.say)
        write_json(out, self.layout.fusion_choice, overwrite=True)
        return {t: {"choice": c["candidate"], "weights": c["weights"], "mean_dice": c["mean_dice"],
                    "subjects": c["subjects"]} for t, c in out.items()}

    def fuse(self, ctx: StageContext) -> dict:
        """Fuse with the choose stage's weights (choice/fusion.json, what wmhloc_export_models archives), so the
        report's figures are those the exported models give."""
        from nnunet_wmhloc.io import read_json

        choice = read_json(self.layout.fusion_choice)
        return common.fuse_stage(ctx, {t: c["weights"] for t, c in choice.items()})

    def predict(self, ctx: StageContext) -> dict:
        images = self.dataset("lesion") / "imagesTs"
        if not images.is_dir():
            raise WMHLocError(f"{images}: no test split to predict (mark held-out subjects split=test in the "
                              "cohort CSV, or apply the trained models to new subjects with wmhloc_predict)")
        models = {}
        for task in ("lesion", "region"):
            models[task] = (["nnUNetv2_predict", "-d", self.ids[task], "-c", self.configuration, "-f", *self.folds,
                             "-tr", self.trainers[task], "--save_probabilities", "-device", self.device,
                             "-npp", self.processes, "-nps", self.processes]
                            + ([] if self.tta else ["--disable_tta"]))
        return common.predict_models(ctx, images, self.output, models, scheduler=self.a.scheduler)

    def references(self) -> dict:
        out = {}
        for task in ("lesion", "region"):
            lab = self.dataset(task) / "labelsTs"
            out[task] = lab if lab.is_dir() and common.nifti_stems(lab) else None
        return out

    def stages(self, force: str | None) -> list[Stage]:
        a = self.a
        src = {"release": str(self.release), "region_labels": str(self.region_labels), "split": a.split,
               "cohort": str(a.cohort), "ids": self.ids}
        train_key = {"configuration": self.configuration, "folds": self.folds}
        return [
            Stage("synth", self.synth, {"demo": DEMO, "brain_t1": True, "atlas": "synth.demo_atlas"}, enabled=a.demo,
                  description="synthetic cohort and its atlas"),
            Stage("convert", self.convert, src, description="nnU-Net raw datasets",
                  inputs=self.cohort.fingerprint() if self.cohort is not None else {}),
            Stage("preprocess", self.preprocess, {"configuration": self.configuration},
                  description="nnUNetv2_plan_and_preprocess"),
            Stage("train_lesion", lambda c: self.train(c, "lesion", force == "train_lesion"),
                  dict(train_key, trainer=self.trainers["lesion"]), description="nnUNetv2_train, lesion model"),
            Stage("train_region", lambda c: self.train(c, "region", force == "train_region"),
                  dict(train_key, trainer=self.trainers["region"]), description="nnUNetv2_train, region model"),
            Stage("choose", self.choose, train_key,
                  description="FLAIR, T1 or fused per task, from the cross-validation probabilities"),
            Stage("predict", self.predict, {"tta": self.tta}, description="nnUNetv2_predict on the test split"),
            Stage("fuse", self.fuse, description="FLAIR + T1 fusion, with the weights the choose stage picked"),
            Stage("localize", lambda c: common.localize_stage(c, self.references()["lesion"]),
                  description="regional lesion loads"),
            Stage("location", self.location, {"atlas_dir": str(self.atlas_dir), "pv_distance": a.pv_distance},
                  description="location classes and atlas-space lesion maps (--atlas-dir)"),
            Stage("model_free", self.model_free, {"atlas_dir": str(self.atlas_dir), "pv_distance": a.pv_distance},
                  enabled=a.demo, description="model-free run on the reference lesion masks (wmhloc_predict "
                                              "--lesions csv --regions atlas)"),
            Stage("cluster", lambda c: common.cluster_stage(c, k_max=a.k_max, atlas=a.atlas),
                  {"k_max": a.k_max, "atlas": a.atlas}, description="k-means on regional loads"),
            Stage("evaluate", lambda c: common.evaluate_stage(c, self.references(),
                                                              self.dataset("lesion") / "subjects.csv"),
                  description="against the references"),
            Stage("report", self.report, description="report.html"),
        ]

    def options(self):
        """The options with the atlas folder the run uses (--atlas-dir, or the demo's)."""
        import copy

        a = copy.copy(self.a)
        a.atlas_dir = self.atlas_dir
        return a

    def location(self, ctx: StageContext) -> dict:
        from nnunet_wmhloc.pipeline.location_outputs import run_stage

        t1_of = None
        if self.a.demo:
            from nnunet_wmhloc.pipeline.model_free import demo_subjects

            demo = demo_subjects(self.release)
            t1_of = lambda s: demo[s.subject].images["t1"] if s.subject in demo else None  # noqa: E731
        return run_stage(ctx, self.dataset("lesion") / "imagesTs", self.options(), t1_of=t1_of)

    def model_free(self, ctx: StageContext) -> dict:
        from nnunet_wmhloc.pipeline.model_free import demo_run

        return demo_run(ctx, self.layout, self.release, self.atlas_dir, self.a.pv_distance)

    def report(self, ctx: StageContext) -> dict:
        from nnunet_wmhloc.pipeline.report import build_report

        path = build_report(self.output, common.localize_tables(ctx), title=common.REPORT_TITLE, settings=self.settings(),
                            images=self.dataset("lesion") / "imagesTs", stages=common.read_markers(self.output),
                            command=self.command, progress=None)
        ctx.say(f"report: {path}")
        return {"report": str(path)}


def run_pipeline(a, command: str = "") -> dict:
    """The whole pipeline for parsed options `a` (build_parser()'s); returns {stage: done-marker}."""
    if a.scheduler:
        parallel.require()
    plan = RunPlan(a)
    plan.command = command
    plan.output.mkdir(parents=True, exist_ok=True)
    return Runner(plan.output, plan.stages(a.force), plan.env, force=a.force, quiet=a.quiet).run()


def _main(argv=None) -> int:
    return common.pipeline_main("wmhloc_run", build_parser(), run_pipeline, argv)


main = cli.entry(_main)


if __name__ == "__main__":
    sys.exit(main())
