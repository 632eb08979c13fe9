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


# ----------------------------------------------------------------------------------------- report and results
def _tiny_run(root, subjects=("s1", "s2")):
    """A run folder as the stages leave it, hand-made: a FLAIR, lesion and regional map per subject (tiny
    volumes) and the localize tables as rows (the stage's return value), in localize's own columns."""
    import types

    import numpy as np
    import SimpleITK as sitk

    from nnunet_wmhloc.layout import RunLayout
    from nnunet_wmhloc.postprocessing.localize import LOAD_COLUMNS

    run = RunLayout(root)
    for d in (run.images, run.regional_maps, run.segmentations("lesion")):
        d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    loads, lesions = [], []
    for i, s in enumerate(subjects):
        regions = np.zeros((6, 20, 20), np.uint8)
        regions[2:4, 5:9, 5:9] = 3 + i
        regions[2:4, 12:15, 5:8] = 20
        lesion = (regions > 0).astype(np.uint8)
        for arr, path in ((rng.normal(100, 20, regions.shape).astype(np.float32), run.images / f"{s}_flair_0000.nii.gz"),
                          (regions, run.regional_maps / f"{s}.nii.gz"),
                          (lesion, run.segmentations("lesion") / f"{s}.nii.gz")):
            img = sitk.GetImageFromArray(arr)
            img.SetSpacing((1.0, 1.0, 3.0))
            sitk.WriteImage(img, str(path))
        mm3 = {3 + i: 96.0, 20: 54.0}
        row = {}
        for c in LOAD_COLUMNS:
            lab = int(c[1:3]) if c[:1] == "r" and c[1:3].isdigit() else None
            if lab is None:
                row[c] = 0
            elif c.endswith("_share"):
                row[c] = mm3.get(lab, 0.0) / 150.0
            else:
                row[c] = mm3.get(lab, 0.0)
        row |= {"subject": s, "n_lesions": 2, "total_voxels": 50, "total_mm3": 150.0, "wm_mm3": 150.0,
                "left_wm_mm3": 96.0, "right_wm_mm3": 54.0, "left_mm3": 96.0, "right_mm3": 54.0,
                "voxel_volume_mm3": 3.0, "lesion_file": str(run.segmentations("lesion") / f"{s}.nii.gz"),
                "region_file": str(run.regional_maps / f"{s}.nii.gz")}
        loads.append(row)
        lesions += [{"subject": s, "lesion_id": k, "voxels": 25, "volume_mm3": 75.0} for k in (1, 2)]
    return run, types.SimpleNamespace(loads=loads, lesions=lesions)


def _links(html: str) -> list[str]:
    import re

    return re.findall(r"(?:src|href)='([^']+)'", html)


def test_report_from_template_on_hand_made_run(tmp_path):
    """build_report renders the packaged template from the rows it is given: every subject's figure and the
    cohort figure are written and linked, every link is a file of the report folder, nothing points online,
    user text is escaped, and the cohort table is localize's table as given (not re-read from disk)."""
    from nnunet_wmhloc.io import read_csv
    from nnunet_wmhloc.pipeline.report import build_report

    run, tables = _tiny_run(tmp_path / "run")
    path = build_report(run.root, tables, title="Tiny <report>", images=run.images,
                        settings={"folds": ["0", "1"], "device": "cpu"}, command="wmhloc_run -o 'a&b'",
                        stages={"cluster": {"seconds": 1.5, "summary": {"skipped": "clustering skipped: 2 subject(s)"}}})
    html = path.read_text(encoding="utf-8")
    assert path == run.report_html and "<title>Tiny &lt;report&gt;</title>" in html and "a&amp;b" in html
    assert "http://" not in html and "https://" not in html and "<script" not in html.lower()
    links = _links(html)
    imgs = [x for x in links if x.startswith("figures/")]
    assert sorted(imgs) == ["figures/cohort_loads.png", "figures/subject_s1.png", "figures/subject_s2.png"]
    for x in links:
        assert x.startswith("#") or (path.parent / x).is_file(), x
    assert "clustering skipped: 2 subject(s)" in html and "0 1" in html  # the cluster note, a list setting
    assert "no reference segmentations: nothing evaluated" in html
    copied = read_csv(path.parent / "tables" / "regional_loads.csv")
    assert [r["subject"] for r in copied] == ["s1", "s2"] and float(copied[0]["total_mm3"]) == 150
    assert not run.regional_loads.exists()  # the rows were given: nothing was read back
    assert "2 lesions, total 150 mm³, WM 150 mm³; main regions:" in html


def test_results_regional_loads_are_the_localize_table(tmp_path):
    """results/regional_loads.csv is localize's table for the cohort's subjects, in localize's columns, written
    from the rows the stage returned; lesions.csv the census rows of those subjects."""
    import types

    from nnunet_wmhloc.io import read_csv
    from nnunet_wmhloc.pipeline.models import fusion_spec
    from nnunet_wmhloc.pipeline.results import write_results
    from nnunet_wmhloc.postprocessing.localize import LOAD_COLUMNS

    run, tables = _tiny_run(tmp_path / "run")
    for task in ("lesion", "region"):
        seg = run.segmentations(task)
        (seg / "probabilities").mkdir(parents=True, exist_ok=True)
        for s in ("s1", "s2"):
            src = run.segmentations("lesion") / f"{s}.nii.gz"
            (seg / f"{s}.nii.gz").write_bytes(src.read_bytes())
            (seg / "probabilities" / f"{s}.nii.gz").write_bytes(src.read_bytes())
    subjects = [types.SimpleNamespace(subject=s, images={"flair": run.images / f"{s}_flair_0000.nii.gz"})
                for s in ("s2", "s1", "s9")]  # s9: no loads, left out
    fusion = {t: dict(fusion_spec("fused"), source="default") for t in ("lesion", "region")}
    said = []
    res = write_results(run.root, subjects, tables, layout="flat", fusion=fusion, source=str(tmp_path),
                        say=said.append)
    assert res == {"layout": "flat", "subjects": 2, "fallback_subjects": 0}
    got = read_csv(run.results / "regional_loads.csv")
    assert list(got[0]) == list(LOAD_COLUMNS)
    assert [r["subject"] for r in got] == ["s2", "s1"]
    assert float(got[1]["left_wm_mm3"]) == 96 and got[1]["lesion_file"] == tables.loads[0]["lesion_file"]
    assert [r["subject"] for r in read_csv(run.results / "lesions.csv")] == ["s2", "s2", "s1", "s1"]
    assert (run.results / "s1" / "s1_lesion_mask.nii.gz").is_file() and said[-1].startswith("results (flat): 2")


def test_commands_come_from_the_entry_points():
    """The command table is the package's console_scripts: each module imports and has a main."""
    import importlib

    from nnunet_wmhloc.cli import commands

    table = commands()
    assert {"wmhloc_run", "wmhloc_predict", "wmhloc_localize", "wmhloc_export_models"} <= set(table)
    assert table["wmhloc_fuse"] == "nnunet_wmhloc.postprocessing.fuse"
    for mod in table.values():
        assert callable(importlib.import_module(mod).main), mod


def test_stage_call_logs_output_and_propagates_errors(tmp_path):
    """StageContext.call runs a plain function in-process: its header and printed output go into the stage's
    log (not the terminal), its return value comes back, and its error stops the stage naming the log."""
    from nnunet_wmhloc.pipeline.stages import StageContext

    def work(x, *, y):
        print(f"working {x} {y}")
        return x + y

    def broken(ctx):
        ctx.call(["wmhloc_thing", "/in"], lambda: (_ for _ in ()).throw(WMHLocError("/in/a.nii.gz: truncated")))

    (tmp_path / "logs").mkdir()
    ctx = StageContext("s", tmp_path / "logs" / "s.log", {}, tmp_path, quiet=True)
    assert ctx.call(["wmhloc_thing", "--x", 1], work, 1, y=2) == 3
    log = (tmp_path / "logs" / "s.log").read_text()
    assert "$ wmhloc_thing --x 1" in log and "working 1 2" in log and ctx.commands == ["wmhloc_thing --x 1"]
    with pytest.raises(WMHLocError, match=r"stage 'b' failed: /in/a.nii.gz: truncated \(log: .*b.log\)"):
        Runner(tmp_path / "r", [Stage("b", broken)], {}, quiet=True).run()


def _png_has_content(path) -> bool:
    import matplotlib.image as mpimg

    a = mpimg.imread(str(path))
    return a.ndim == 3 and a.shape[0] > 100 and a.shape[1] > 100 and float(a[..., :3].std()) > 0.02


def test_browser_sees_hand_made_report_whole_and_catches_breakage(tmp_path):
    """Headless Chromium (through Selenium and Debian's chromedriver, network cut off) on a report rendered
    from hand-made tables: every <img> loads, nothing leaves the machine or fails, no console error, a
    non-blank full-page screenshot. Then the same report with one figure deleted, one emptied and a CDN
    stylesheet added: each is caught, and only those."""
    from browser import CDN_STYLESHEET, break_report, find_chromium, render

    from nnunet_wmhloc.pipeline.report import build_report

    if find_chromium() is None:
        pytest.skip("chromium, chromium-driver or selenium missing (apt-get install chromium chromium-driver; "
                    "pip install -e .[test])")
    run, tables = _tiny_run(tmp_path / "run")
    html = build_report(run.root, tables, title="Tiny report", images=run.images, settings={"device": "cpu"})
    imgs = [x for x in _links(html.read_text(encoding="utf-8")) if x.startswith("figures/")]
    seen = render(html, tmp_path / "shot.png")
    assert seen["title"] == "Tiny report" and seen["text_length"] > 300
    assert [i["src"] for i in seen["images"]] == imgs
    assert all(i["complete"] and i["decoded"] and i["width"] > 0 for i in seen["images"])
    assert seen["remote"] == [] and seen["failed"] == [] and seen["console_errors"] == []
    assert seen["height"] > 1500 and _png_has_content(tmp_path / "shot.png")

    rep = tmp_path / "broken"
    gone, empty = break_report(html.parent, rep, imgs)
    seen = render(rep / "report.html", tmp_path / "broken.png")
    assert sorted(i["src"] for i in seen["images"] if not (i["complete"] and i["decoded"] and i["width"] > 0)) \
        == sorted([gone, empty])
    assert seen["remote"] == [CDN_STYLESHEET]
    assert sorted(u for u, _ in seen["failed"]) == sorted([CDN_STYLESHEET, (rep / gone).as_uri()])
    assert len(seen["console_errors"]) >= 2


def test_predict_convert_stage_calls_the_converter_on_the_loaded_cohort(tmp_path):
    """wmhloc_predict's convert stage runs the converter function on the cohort loaded once by the plan:
    the inference folder is written, the cohort's lesion masks are linked as references, the converter's
    output is in the stage log; a cohort that does not load is refused by the plan, naming the file,
    before the run folder is made."""
    from test_hostile_outputs import fake_model
    from test_hostile_tables import tiny_cohort

    from nnunet_wmhloc.pipeline.predict import PredictPlan, build_parser

    csv = tiny_cohort(tmp_path / "c", n=2)
    models = [str(fake_model(tmp_path / "m" / t, n)) for t, n in (("l", 2), ("r", 37))]
    a = build_parser().parse_args([str(csv), "-o", str(tmp_path / "p"), "--lesion-model", models[0],
                                   "--region-model", models[1], "--device", "cpu"])
    plan = PredictPlan(a, "wmhloc_predict ...")
    assert [s.subject for s in plan.cohort.subjects] == ["s01", "s02"]
    convert = [s for s in plan.stages() if s.name == "convert"]
    res = Runner(plan.output, convert, plan.env, quiet=True).run()["convert"]["summary"]
    assert res == {"cases": 2, "references": {"lesion": 2, "region": 0}}
    assert sorted(p.name for p in plan.layout.images.glob("*_0000.nii.gz")) == ["s01_flair_0000.nii.gz",
                                                                                 "s02_flair_0000.nii.gz"]
    assert (plan.layout.references("lesion") / "s01.nii.gz").resolve().is_file()
    assert "inference folder:" in plan.layout.log("convert").read_text()

    (tmp_path / "c" / "bad.csv").write_text("subject,flair\ns01,missing.nii.gz\n")
    a = build_parser().parse_args([str(tmp_path / "c" / "bad.csv"), "-o", str(tmp_path / "q"), "--lesion-model",
                                   models[0], "--region-model", models[1], "--device", "cpu"])
    with pytest.raises(WMHLocError, match=r"bad.csv: line 2: .*missing.nii.gz: FLAIR image not found"):
        PredictPlan(a, "")  # refused before the run folder exists
    assert not (tmp_path / "q").exists()
