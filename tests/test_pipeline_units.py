"""Pipeline machinery without training: budget trainer names, resumable stages, failure messages, the
nnU-Net launcher, model-folder resolution and the report's HTML checks."""
from __future__ import annotations

import inspect
import json
import subprocess
import sys
import time

import pytest

from nnunet_wmhloc.io import WMHLocError
from nnunet_wmhloc.pipeline import budget
from nnunet_wmhloc.pipeline.stages import Runner, Stage, _last_error_line


# ----------------------------------------------------------------------------------------- budgets
def test_budget_names_round_trip():
    n = budget.budget_name("nnUNetTrainerWMHLoc", 12, 20, 8)
    assert n == "nnUNetTrainerWMHLoc_12epochs_20it_bs8"
    assert budget.parse_budget(n) == {"base": "nnUNetTrainerWMHLoc", "epochs": 12, "iterations": 20, "batch_cap": 8,
                                      "adamw": False}
    a = budget.budget_name("nnUNetTrainerWMHLoc", 12, 20, 8, adamw=True)
    assert a == "nnUNetTrainerWMHLoc_12epochs_20it_bs8_adamw" and budget.parse_budget(a)["adamw"]
    assert budget.parse_budget("nnUNetTrainerWMHLoc_12epochs_adam") is None
    assert budget.parse_budget("nnUNetTrainerWMHLocCEDC_50epochs")["iterations"] is None
    assert budget.parse_budget("nnUNetTrainer_50epochs") is None  # not one of our bases
    assert budget.parse_budget("nnUNetTrainerWMHLoc") is None
    with pytest.raises(ValueError):
        budget.budget_name("nnUNetTrainer", 5)
    with pytest.raises(ValueError):
        budget.budget_name("nnUNetTrainerWMHLoc", 0)


def test_budget_trainer_classes():
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_wmhloc.training.trainers import nnUNetTrainerWMHLoc, nnUNetTrainerWMHLocCEDC

    cls = budget.make_trainer("nnUNetTrainerWMHLoc_7epochs_11it_bs4")
    assert issubclass(cls, nnUNetTrainerWMHLoc) and cls.__name__ == "nnUNetTrainerWMHLoc_7epochs_11it_bs4"
    assert cls is budget.make_trainer(cls.__name__)  # one class per name
    # nnU-Net rebuilds trainers from checkpoints by these parameter names
    assert list(inspect.signature(cls.__init__).parameters) == list(inspect.signature(nnUNetTrainer.__init__).parameters)
    assert issubclass(getattr(budget, "nnUNetTrainerWMHLocCEDC_3epochs"), nnUNetTrainerWMHLocCEDC)
    assert not hasattr(budget, "nnUNetTrainerWMHLoc_fast")


def test_budget_adamw_optimizer():
    """`_adamw` budgets train with AdamW under nnU-Net's poly schedule; the others keep nnU-Net's SGD."""
    import types

    import torch

    net = torch.nn.Conv2d(1, 2, 3)
    fake = types.SimpleNamespace(network=net, weight_decay=3e-5, num_epochs=10, initial_lr=1e-2)
    opt, sched = budget.make_trainer("nnUNetTrainerWMHLoc_10epochs_adamw").configure_optimizers(fake)
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["lr"] == budget.ADAMW_LR
    sched.step(5)
    assert 0 < opt.param_groups[0]["lr"] < budget.ADAMW_LR
    opt, _ = budget.make_trainer("nnUNetTrainerWMHLoc_10epochs").configure_optimizers(fake)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["nesterov"]


def test_budget_shim_is_found_by_nnunet(tmp_path, monkeypatch):
    """nnU-Net's own lookup (recursive_find_trainer_class_by_name) finds budget trainers through the shim."""
    from nnunet_wmhloc.env import nnunet_environ

    env = budget.budget_environ(nnunet_environ(None), tmp_path / "shim")
    assert (tmp_path / "shim" / f"{budget.SHIM_MODULE}.py").is_file()
    code = ("from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as f;"
            "c = f('nnUNetTrainerWMHLoc_3epochs_5it_bs2'); print('FOUND', c.__name__, c.__mro__[1].__name__)")
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "FOUND nnUNetTrainerWMHLoc_3epochs_5it_bs2 nnUNetTrainerWMHLoc" in p.stdout


# ----------------------------------------------------------------------------------------- stages
def _stages(calls, fail_at=None):
    def make(name):
        def fn(ctx):
            calls.append(name)
            ctx.log(f"working on {name}")
            if name == fail_at:
                raise WMHLocError(f"/data/{name}.nii.gz: broken")
            return {"n": len(calls)}
        return fn
    return [Stage(n, make(n), {"opt": 1}) for n in ("a", "b", "c", "d")]


def test_runner_resumes_and_forces(tmp_path):
    calls = []
    Runner(tmp_path, _stages(calls), {}, quiet=True).run()
    assert calls == ["a", "b", "c", "d"]
    for n in "abcd":
        m = json.loads((tmp_path / "stages" / f"{n}.done").read_text())
        assert m["stage"] == n and m["settings"] == {"opt": 1}
        assert f"working on {n}" in (tmp_path / "logs" / f"{n}.log").read_text()
    mtimes = {n: (tmp_path / "stages" / f"{n}.done").stat().st_mtime_ns for n in "abcd"}
    calls.clear()
    Runner(tmp_path, _stages(calls), {}, quiet=True).run()
    assert calls == []  # everything skipped
    time.sleep(0.01)
    Runner(tmp_path, _stages(calls), {}, force="c", quiet=True).run()
    assert calls == ["c", "d"]
    assert (tmp_path / "stages" / "b.done").stat().st_mtime_ns == mtimes["b"]
    assert (tmp_path / "stages" / "c.done").stat().st_mtime_ns > mtimes["c"]
    # changed settings of one stage redo it and the later ones
    calls.clear()
    st = _stages(calls)
    st[1].settings = {"opt": 2}
    Runner(tmp_path, st, {}, quiet=True).run()
    assert calls == ["b", "c", "d"]
    with pytest.raises(WMHLocError, match="unknown stage"):
        Runner(tmp_path, _stages(calls), {}, force="zz", quiet=True)


def test_runner_failure_names_stage_and_log(tmp_path):
    calls = []
    with pytest.raises(WMHLocError) as e:
        Runner(tmp_path, _stages(calls, fail_at="c"), {}, quiet=True).run()
    msg = str(e.value)
    assert "stage 'c' failed" in msg and "/data/c.nii.gz: broken" in msg and str(tmp_path / "logs" / "c.log") in msg
    assert "\n" not in msg
    assert not (tmp_path / "stages" / "c.done").exists() and (tmp_path / "stages" / "b.done").exists()
    assert "error: /data/c.nii.gz: broken" in (tmp_path / "logs" / "c.log").read_text()
    # the re-run resumes at the failed stage
    calls.clear()
    Runner(tmp_path, _stages(calls), {}, quiet=True).run()
    assert calls == ["c", "d"]


def test_failed_nnunet_command_is_reported(tmp_path):
    """A real nnU-Net console script that fails (bad arguments): the stage stops, the reason is its error."""
    from nnunet_wmhloc.env import nnunet_environ

    def fn(ctx):
        ctx.nnunet(["nnUNetv2_train", "601"])  # configuration and fold missing

    with pytest.raises(WMHLocError) as e:
        Runner(tmp_path, [Stage("train_lesion", fn)], nnunet_environ(tmp_path / "nn"), quiet=True).run()
    msg = str(e.value)
    assert msg.startswith("stage 'train_lesion' failed: nnUNetv2_train exited with 2")
    assert "required" in msg and "train_lesion.log" in msg
    log = (tmp_path / "logs" / "train_lesion.log").read_text()
    assert "$ nnUNetv2_train 601" in log and "# exit 2" in log


def test_last_error_line():
    assert _last_error_line("noise\nerror: /x.nii.gz: bad\n# exit 1 after 2 s\n") == "/x.nii.gz: bad"
    assert _last_error_line("usage: x\nnnUNetv2_train: error: the following arguments are required: fold") == \
        "the following arguments are required: fold"
    tb = "Traceback (most recent call last):\n  File \"a.py\", line 1\nRuntimeError: CUDA missing\n\n"
    assert _last_error_line(tb) == "RuntimeError: CUDA missing"


def test_launch_unknown_script():
    p = subprocess.run([sys.executable, "-m", "nnunet_wmhloc.pipeline.launch", "no_such_script_xyz"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 127 and "no_such_script_xyz" in p.stderr


# ----------------------------------------------------------------------------------------- options
def test_run_option_errors(tmp_path):
    from nnunet_wmhloc.pipeline.run import main

    assert main(["--release", str(tmp_path), "-o", str(tmp_path / "o")]) == 1  # no --region-labels
    assert main(["--demo", "--cohort", str(tmp_path), "-o", str(tmp_path / "o")]) == 1
    assert main(["-o", str(tmp_path / "o"), "--quick", "--trainer", "nnUNetTrainer"]) == 1
    assert not (tmp_path / "o").exists()


def test_run_resolves_quick_budget():
    from nnunet_wmhloc.pipeline.run import QUICK, resolve_trainer

    q = resolve_trainer("nnUNetTrainerWMHLocCEDC", epochs=None, quick=True)
    assert budget.parse_budget(q) == {"base": "nnUNetTrainerWMHLocCEDC", "epochs": QUICK["epochs"],
                                      "iterations": QUICK["iterations"], "batch_cap": QUICK["batch_cap"],
                                      "adamw": QUICK["adamw"]}
    r = resolve_trainer("nnUNetTrainerWMHLoc", epochs=None, quick=True, task="region")
    assert budget.parse_budget(r)["epochs"] == QUICK["region_epochs"]
    assert budget.parse_budget(resolve_trainer("nnUNetTrainerWMHLoc", epochs=7, quick=True, task="region"))["epochs"] == 7
    assert resolve_trainer("nnUNetTrainerWMHLoc", epochs=100, quick=False) == "nnUNetTrainerWMHLoc_100epochs"
    assert resolve_trainer("nnUNetTrainerWMHLoc", epochs=None, quick=False) == "nnUNetTrainerWMHLoc"


def test_predict_model_resolution(tmp_path):
    from nnunet_wmhloc.pipeline.predict import model_folds, resolve_model

    res = tmp_path / "results"
    for i, name, n in ((601, "WMHLesion", 3), (602, "WMHRegion", 37)):
        m = res / f"Dataset{i}_{name}" / "nnUNetTrainerWMHLoc__nnUNetPlans__2d"
        (m / "fold_0").mkdir(parents=True)
        (m / "fold_0" / "checkpoint_final.pth").write_bytes(b"x")
        (m / "plans.json").write_text("{}")
        (m / "dataset.json").write_text(json.dumps({"labels": {str(k): k for k in range(n)}}))
    kw = dict(trainer="nnUNetTrainerWMHLoc", configuration="2d", plans="nnUNetPlans", results=str(res))
    les = resolve_model("601", task="lesion", **kw)
    assert les.name == "nnUNetTrainerWMHLoc__nnUNetPlans__2d" and les.parent.name == "Dataset601_WMHLesion"
    assert resolve_model(str(les), task="lesion", **kw) == les
    assert model_folds(les, None) == ["0"]
    with pytest.raises(WMHLocError, match="swapped"):
        resolve_model("602", task="lesion", **kw)
    with pytest.raises(WMHLocError, match="no such trained model"):
        resolve_model("601", task="lesion", **dict(kw, configuration="3d_fullres"))
    with pytest.raises(WMHLocError, match="fold 3 not trained"):
        model_folds(les, ["3"])


def test_cluster_stage_skips_what_cannot_be_clustered(tmp_path):
    """One regional distribution shared by every subject (a model that puts all lesions in one region) is
    reported and skipped, not a failed run; different distributions are clustered by wmhloc_cluster."""
    import csv

    from nnunet_wmhloc.vocab import WM_REGIONS
    from nnunet_wmhloc.pipeline.common import cluster_stage
    from nnunet_wmhloc.postprocessing.loads import LESION_COLUMNS, LOAD_COLUMNS
    from nnunet_wmhloc.postprocessing.loads import mm3_column as region_column  # the one loads layout
    from nnunet_wmhloc.pipeline.stages import StageContext

    def stage(profiles):
        out = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        (out / "localize").mkdir(parents=True)
        (out / "logs").mkdir()
        cols = [region_column(r) for r in WM_REGIONS]
        with open(out / "localize" / "regional_loads.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=LOAD_COLUMNS, restval="0")  # what localize writes
            w.writeheader()
            for i, p in enumerate(profiles):
                row = dict.fromkeys(cols, 0.0) | {region_column(r): v for r, v in p.items()}
                w.writerow(row | {"subject": f"s{i}", "total_mm3": sum(p.values()), "wm_mm3": sum(p.values())})
        (out / "localize" / "lesions.csv").write_text(",".join(LESION_COLUMNS) + "\n")
        ctx = StageContext("cluster", out / "logs" / "cluster.log", {}, out, quiet=True)
        return out, cluster_stage(ctx, k_max=4)

    out, res = stage([{7: 10.0 * (i + 1)} for i in range(5)])  # same shares, different volumes
    assert "same regional distribution" in res["skipped"] and not (out / "cluster").exists()
    out, res = stage([{7: 10.0}, {7: 12.0}, {20: 5.0}, {20: 9.0}, {3: 1.0, 30: 1.0}])
    assert res == {"clustered": 5, "k_range": [2, 3]}  # 3 distinct profiles bound K
    assert (out / "cluster" / "groups.csv").is_file()
