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
