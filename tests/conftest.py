import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# subprocesses must find the console scripts of the interpreter running the tests (a venv not activated)
os.environ["PATH"] = str(Path(__import__("sys").executable).parent) + os.pathsep + os.environ.get("PATH", "")
SHARED = Path(os.environ.get("WMHLOC_SHARED", REPO.parent / "shared")) / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (read-only). Absent in a user's clone: tests that need it skip."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED} (set WMHLOC_SHARED to the folder holding data/)")
    return SHARED


# ---------------------------------------------------------------- synthetic cohort and nnU-Net folders
import subprocess  # noqa: E402
import sys  # noqa: E402


@pytest.fixture(scope="session")
def synth_release(tmp_path_factory) -> Path:
    """A synthetic challenge release (wmhloc_synth, seed 0): 6 training + 5 test subjects, region maps in
    <release>/region_labels (one test subject has none)."""
    from nnunet_wmhloc.synth import make_cohort

    out = tmp_path_factory.mktemp("synth") / "release"
    make_cohort(out, seed=0, show_progress=False)
    return out


@pytest.fixture(scope="session")
def nnunet_env(tmp_path_factory) -> dict:
    """Environment for nnU-Net subprocesses: fresh raw/preprocessed/results folders, our trainers on
    nnUNet_extTrainer, few worker processes (2 cores)."""
    from nnunet_wmhloc.env import nnunet_environ

    root = tmp_path_factory.mktemp("nnunet")
    env = nnunet_environ(root)
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        Path(env[k]).mkdir(parents=True, exist_ok=True)
    env.update({"nnUNet_n_proc_DA": "1", "nnUNet_def_n_proc": "2", "OMP_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1"})
    return env


def run_cmd(args, env=None, check=True, timeout=1800):
    """Run a command (console script or `python -m`), return CompletedProcess with text output."""
    p = subprocess.run([str(a) for a in args], env=env, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


@pytest.fixture(scope="session")
def converted(synth_release, nnunet_env) -> dict:
    """The synthetic release converted into nnU-Net raw datasets 601 (lesion) and 602 (region), splits
    written to nnUNet_preprocessed. Returns {'env', 'raw', 'lesion', 'region'} with dataset folders."""
    run_cmd(["wmhloc_convert_wmh2017", synth_release, "--region-labels", synth_release / "region_labels"],
            env=nnunet_env)
    raw = Path(nnunet_env["nnUNet_raw"])
    return {"env": nnunet_env, "raw": raw, "lesion": raw / "Dataset601_WMHLesion",
            "region": raw / "Dataset602_WMHRegion"}


@pytest.fixture(scope="session")
def preprocessed_2d(converted) -> dict:
    """`converted`, then nnUNetv2_plan_and_preprocess -d 601 602 -c 2d --verify_dataset_integrity."""
    run_cmd(["nnUNetv2_plan_and_preprocess", "-d", "601", "602", "-c", "2d", "--verify_dataset_integrity",
             "-np", "1"], env=converted["env"])
    return converted


# ---------------------------------------------------------------- a trained smoke run on a CSV cohort
from nnunet_wmhloc.io import write_csv  # noqa: E402

SMOKE = ["-c", "2d", "-f", "0", "--trainer", "nnUNetTrainerWMHLoc_smoke", "--device", "cpu", "--disable-tta"]


@pytest.fixture(scope="session")
def cohort_csv(synth_release, tmp_path_factory) -> Path:
    """The synthetic release as a user's CSV cohort: the 6 training subjects train, 4 test subjects test.
    One test subject has no T1 (FLAIR only), one no region map, one neither lesion mask nor region map."""
    rows = []
    for p in sorted(synth_release.glob("*/**/wmh.nii.gz")):
        folder = p.parent
        split = "train" if folder.parts[len(synth_release.parts)] == "training" else "test"
        sid = folder.name
        reg = synth_release / "region_labels" / ("Train" if split == "train" else "Test") / f"WMH_{sid}.nii.gz"
        rows.append({"subject": f"s{sid}", "flair": folder / "pre" / "FLAIR.nii.gz", "t1": folder / "pre" / "T1.nii.gz",
                     "lesion": p, "regions": reg if reg.is_file() else "", "site": folder.parent.name, "split": split})
    test = [r for r in rows if r["split"] == "test"][:4]
    rows = [r for r in rows if r["split"] == "train"] + test
    test[0]["t1"] = ""
    test[1]["regions"] = ""
    test[2]["lesion"] = test[2]["regions"] = ""
    return write_csv(rows, tmp_path_factory.mktemp("cohort") / "cohort.csv")


@pytest.fixture(scope="session")
def cohort_run(cohort_csv, tmp_path_factory) -> dict:
    """`wmhloc_run --cohort cohort_csv` with the smoke trainer (2d, fold 0), once per session: its tests are in
    test_pipeline_paths.py; test_models_export.py exports and reuses its models."""
    out = tmp_path_factory.mktemp("cohort_run") / "run"
    p = run_cmd(["wmhloc_run", "--cohort", cohort_csv, "-o", out, *SMOKE], timeout=1800)
    return {"out": out, "process": p}
