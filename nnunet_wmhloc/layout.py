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
<root>/cluster/                                  k-means groups (when >= 3 subjects have WM lesions)
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


@dataclass(frozen=True)
class RunLayout:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    # runner
    @property
    def stages(self) -> Path:
        return self.root / "stages"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def marker(self, stage: str) -> Path:
        return self.stages / f"{stage}.done"

    def log(self, stage: str) -> Path:
        return self.logs / f"{stage}.log"

    # models and inputs
    @property
    def nnunet(self) -> Path:
        return self.root / "nnunet"

    @property
    def trainers(self) -> Path:
        """Budget trainers' shim folder (on nnUNet_extTrainer)."""
        return self.root / "wmhloc_trainers"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def images(self) -> Path:
        return self.root / "images"

    def inputs(self, task: str) -> Path:
        return self.root / "inputs" / task

    def references(self, task: str) -> Path:
        return self.root / "references" / task

    @property
    def choice(self) -> Path:
        return self.root / "choice"

    @property
    def fusion_choice(self) -> Path:
        return self.choice / "fusion.json"

    # prediction -> fusion
    def predictions(self, task: str) -> Path:
        return self.root / "predictions" / task

    def prediction_records(self, task: str) -> Path:
        return self.root / "predictions" / "records" / task

    def segmentations(self, task: str) -> Path:
        return self.root / "segmentations" / task

    def fusion_log(self, task: str) -> Path:
        return self.segmentations(task) / "fusion_log.csv"

    # localisation, clustering, evaluation
    @property
    def localize(self) -> Path:
        return self.root / "localize"

    @property
    def regional_loads(self) -> Path:
        return self.localize / REGIONAL_LOADS

    @property
    def lesions(self) -> Path:
        return self.localize / LESIONS

    @property
    def regional_maps(self) -> Path:
        return self.localize / "regional_maps"

    @property
    def reference_loads(self) -> Path:
        return self.localize / "reference" / REGIONAL_LOADS

    @property
    def cluster(self) -> Path:
        return self.root / "cluster"

    @property
    def evaluation(self) -> Path:
        return self.root / "evaluation"

    def evaluation_setting(self, task: str, setting: str) -> Path:
        return self.evaluation / f"{task}_{setting.lower()}"

    def evaluation_inputs(self, task: str, setting: str) -> Path:
        """The predictions one setting scores (links to those with a reference)."""
        return self.evaluation / "inputs" / f"{task}_{setting.lower()}"

    def compare(self, task: str) -> Path:
        return self.evaluation / f"compare_{task}"

    # what the user reads
    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def report_html(self) -> Path:
        return self.report / "report.html"
