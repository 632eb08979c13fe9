"""wmhloc_export_models: the trained lesion and region models of a run as one file for wmhloc_predict --models.

    wmhloc_export_models wmh_run -o models.zip                        # a wmhloc_run output folder
    wmhloc_export_models --lesion-model RESULTS/Dataset601_WMHLesion/nnUNetTrainerWMHLoc__nnUNetPlans__3d_fullres \\
        --region-model RESULTS/Dataset602_WMHRegion/nnUNetTrainerWMHLoc__nnUNetPlans__3d_fullres -o models.zip

The zip holds both models as nnUNetv2_export_model_to_zip writes them (checkpoint_final.pth of each fold
only) and wmhloc_manifest.json (see nnunet_wmhloc.pipeline.models). The fusion per task is the run's
choice (its `choose` stage); for model folders it is chosen here from their cross-validation probabilities
when they have them (nnUNetv2_train --npz), else equal-weight fusion; `--fusion` overrides either.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from nnunet_wmhloc import cli
from nnunet_wmhloc.io import WMHLocError, read_csv
from nnunet_wmhloc.layout import RunLayout
from nnunet_wmhloc.pipeline import models as M


def build_parser():
    p = cli.parser("wmhloc_export_models", __doc__.split("\n\n")[0])
    p.add_argument("run", nargs="?", type=Path, help="a wmhloc_run output folder with trained models")
    p.add_argument("-o", "--output", type=Path, required=True, help="the archive to write (.zip)")
    p.add_argument("--lesion-model", type=Path, help="lesion model folder <trainer>__<plans>__<configuration>")
    p.add_argument("--region-model", type=Path, help="region model folder, as --lesion-model")
    p.add_argument("-f", "--folds", nargs="+", default=None,
                   help="folds to export (default: the run's folds / every fold with checkpoint_final.pth)")
    p.add_argument("--fusion", nargs="+", default=None,
                   help="override the fusion: flair, t1, fused, fused:<FLAIR weight>, or per task lesion=... region=...")
    p.add_argument("--overwrite", action="store_true", help="replace an existing archive")
    return p


def _run_models(run: Path) -> tuple[dict, dict, dict, dict]:
    """Model folders, folds, recorded fusion and training-data description of a wmhloc_run output."""
    models, folds, layout = {}, {}, RunLayout(run)
    for t in M.TASKS:
        marker = layout.marker(f"train_{t}")
        if not marker.is_file():
            raise WMHLocError(f"{marker}: not found ({run} is not a wmhloc_run output with a trained {t} model)")
        m = json.loads(marker.read_text(encoding="utf-8"))
        models[t] = Path(m["summary"]["model"])
        folds[t] = [str(f) for f in m["settings"]["folds"]]
    fusion = {}
    choice = layout.fusion_choice
    if choice.is_file():
        fusion = json.loads(choice.read_text(encoding="utf-8"))
    training = {"source": "wmhloc_run", "run": str(run.resolve())}
    conv = layout.marker("convert")
    if conv.is_file():
        training["datasets"] = json.loads(conv.read_text(encoding="utf-8")).get("summary", {})
    raw = models["lesion"].parents[2] / "nnUNet_raw" / models["lesion"].parent.name / "subjects.csv"
    if raw.is_file():
        rows = read_csv(raw)
        train = [r for r in rows if r.get("split") in ("train", "training")]
        training["subjects"] = {"training": len(train), "all": len(rows),
                                "sites": sorted({r.get("site", "") for r in train} - {""})}
    pred = layout.marker("predict")
    if pred.is_file():  # so wmhloc_predict --models mirrors (or not) as the run did
        tta = json.loads(pred.read_text(encoding="utf-8")).get("settings", {}).get("tta")
        if tta is not None:
            training["prediction"] = {"test_time_mirroring": bool(tta)}
    return models, folds, fusion, training


def _fusion(models: dict, folds: dict, fusion: dict, override: dict, say) -> dict:
    """Per task: --fusion, else the run's recorded choice, else chosen from the cross-validation
    probabilities, else equal-weight fusion."""
    for t in M.TASKS:
        if t in override:
            fusion[t] = override[t]
        elif t not in fusion:
            if M.has_cv_probabilities(models[t], folds[t]):
                fusion[t] = M.choose_fusion(models[t], folds[t], t, say=say)
            else:
                fusion[t] = dict(M.fusion_spec("fused"), source="default",
                                 reason="no cross-validation probabilities (nnUNetv2_train --npz) to choose from")
    return fusion


def export(output: Path, *, run: Path | None = None, lesion_model: Path | None = None,
           region_model: Path | None = None, folds: list[str] | None = None, fusion: list[str] | None = None,
           overwrite: bool = False, say=print) -> dict:
    """Write the archive `output` (.zip) of a wmhloc_run folder's models, or of two model folders; returns
    its manifest. `fusion` as --fusion (None: the run's choice / chosen here)."""
    import tempfile

    from nnunet_wmhloc.env import nnunet_environ
    from nnunet_wmhloc.pipeline.budget import budget_environ
    from nnunet_wmhloc.pipeline.predict import model_folds

    if run is not None and (lesion_model or region_model):
        raise WMHLocError("give a run folder or --lesion-model/--region-model, not both")
    if Path(output).suffix.lower() != ".zip":
        raise WMHLocError(f"{output}: the archive name must end in .zip")
    if run is not None:
        if not run.is_dir():
            raise WMHLocError(f"{run}: run folder not found")
        models, run_folds, chosen, training = _run_models(run)
        run_folds = {t: list(folds) for t in M.TASKS} if folds else run_folds
    else:
        if not (lesion_model and region_model):
            raise WMHLocError("give a wmhloc_run folder, or both --lesion-model and --region-model")
        models = {"lesion": lesion_model, "region": region_model}
        for t, m in models.items():
            if not m.is_dir():
                raise WMHLocError(f"{m}: {t} model folder not found")
            M.model_identity(m)
        run_folds = {t: model_folds(m, folds) for t, m in models.items()}
        chosen, training = {}, {"source": "model folders"}
    for t in M.TASKS:
        M.model_identity(models[t])  # checked before anything slow
    chosen = _fusion(models, run_folds, chosen, M.parse_fusion(fusion), say)
    with tempfile.TemporaryDirectory(prefix="wmhloc_shim_") as shim:
        env = budget_environ(nnunet_environ(None), shim)
        return M.export_models(models, run_folds, chosen, output, training=training, overwrite=overwrite, env=env,
                               prediction=training.pop("prediction", None), say=say)


def _main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    manifest = export(a.output, run=a.run, lesion_model=a.lesion_model, region_model=a.region_model,
                      folds=a.folds, fusion=a.fusion, overwrite=a.overwrite,
                      say=lambda s: print(s, file=sys.stderr))
    size = a.output.stat().st_size / 2**20
    fusion = manifest.get("fusion", {})
    print(f"wrote {a.output} ({size:.1f} MB): lesion {manifest['models']['lesion']['path']} "
          f"[{M.describe_fusion(fusion['lesion'])}], region {manifest['models']['region']['path']} "
          f"[{M.describe_fusion(fusion['region'])}]")
    return 0


main = cli.entry(_main)


if __name__ == "__main__":
    sys.exit(main())
