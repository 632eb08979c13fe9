"""Where each stage of `wmhloc_run` / `wmhloc_predict` writes, in one place: stages take their folders from a
`RunLayout`, never from string literals.

<root>/stages/<stage>.done, logs/<stage>.log     the runner's markers and logs
<root>/nnunet/                                   nnU-Net's raw/preprocessed/results folders (wmhloc_run)
<root>/models/                                   an extracted model archive (wmhloc_predict --models)
<root>/images/, inputs/<task>/, references/<task>/   prediction inputs and references (wmhloc_predict)
<root>/choice/fusion.json                        the FLAIR/T1/fused choice from cross-validation
<root>/predictions/<task>/                       nnU-Net's output per case, <subject>_{flair,t1}
<root>/segmentations/<task>/                     fused: one map per subject
<root>/localize/                                 regional_loads.csv, lesions.csv, regional_maps/
<root>/location/                                 location classes and atlas-space maps (--atlas-dir)
<root>/cluster/                                  k-means groups (when >= 3 subjects have WM lesions)
<root>/demo_atlas/, model_free/                  wmhloc_run --demo: its atlas, and the model-free run (a layout
                                                 of its own) on the test subjects' reference lesion masks
<root>/evaluation/<task>_<setting>/, compare_<task>/   scores per setting and their comparison
<root>/results/                                  the user-facing per-subject outputs (flat or BIDS)
<root>/report/report.html                        the report, with its figures/ and tables/
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TASKS = ("lesion", "region")
REGIONAL_LOADS = "regional_loads.csv"
LESIONS = "lesions.csv"


def _below(*parts: str, doc: str | None = None) -> property:
    """A layout property: the path <root>/<parts...>."""
    return property(lambda self: self.root.joinpath(*parts), doc=doc)


def _per_task(*parts: str, doc: str | None = None):
    """A layout method: task -> the path <root>/<parts...>/<task>."""
    def at(self, task: str) -> Path:
        return self.root.joinpath(*parts, task)
    at.__doc__ = doc
    return at


@dataclass(frozen=True)
class RunLayout:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    # runner
    stages = _below("stages")
    logs = _below("logs")

    def marker(self, stage: str) -> Path:
        return self.stages / f"{stage}.done"

    def log(self, stage: str) -> Path:
        return self.logs / f"{stage}.log"

    # models and inputs
    nnunet = _below("nnunet")
    trainers = _below("wmhloc_trainers", doc="Budget trainers' shim folder (on nnUNet_extTrainer).")
    models = _below("models")
    images = _below("images")
    inputs = _per_task("inputs")
    references = _per_task("references")
    choice = _below("choice")
    fusion_choice = _below("choice", "fusion.json")

    # prediction -> fusion
    predictions = _per_task("predictions")
    prediction_records = _per_task("predictions", "records")
    segmentations = _per_task("segmentations")

    def fusion_log(self, task: str) -> Path:
        return self.segmentations(task) / "fusion_log.csv"

    # localisation, clustering, evaluation
    localize = _below("localize")
    regional_loads = _below("localize", REGIONAL_LOADS)
    lesions = _below("localize", LESIONS)
    regional_maps = _below("localize", "regional_maps")
    reference_loads = _below("localize", "reference", REGIONAL_LOADS)
    location = _below("location", doc="Location classes, ventricles and atlas-space maps (location_outputs.py).")
    cluster = _below("cluster")
    demo_atlas = _below("demo_atlas", doc="wmhloc_run --demo's atlas folder (synth.write_demo_atlas).")
    model_free = _below("model_free", doc="wmhloc_run --demo's model-free run: a RunLayout root of its own.")
    model_free_summary = _below("model_free", "model_free.json")
    evaluation = _below("evaluation")

    def evaluation_setting(self, task: str, setting: str) -> Path:
        return self.evaluation / f"{task}_{setting.lower()}"

    def evaluation_inputs(self, task: str, setting: str) -> Path:
        """The predictions one setting scores (links to those with a reference)."""
        return self.evaluation / "inputs" / f"{task}_{setting.lower()}"

    def compare(self, task: str) -> Path:
        return self.evaluation / f"compare_{task}"

    # what the user reads
    results = _below("results")
    report = _below("report")
    report_html = _below("report", "report.html")
