import json
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
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402


# ------------------------------------------------ what all xdist workers of one test run share
WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # set in pytest-xdist's workers (make test runs two)


def shared_root(tmp_path_factory) -> Path:
    """The base temp folder every xdist worker of this test run sees (the run's own one without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if WORKER else base


def _once(root: Path, name: str, make) -> Path:
    """root/name made by make(folder) once per test run, whichever worker asks first (the others wait)."""
    from filelock import FileLock

    folder = root / name
    with FileLock(str(root / f".{name}.lock")):
        if not (root / f".{name}.done").is_file():
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            make(folder)
            (root / f".{name}.done").touch()
    return folder


def _make_release(folder: Path) -> None:
    from nnunet_wmhloc.synth import make_cohort

    make_cohort(folder / "release", seed=0, show_progress=False)


@pytest.fixture(scope="session")
def synth_release(tmp_path_factory) -> Path:
    """A synthetic challenge release (wmhloc_synth, seed 0): 6 training + 5 test subjects, region maps in
    <release>/region_labels (one test subject has none). Read-only: shared by every test (and worker)."""
    return _once(shared_root(tmp_path_factory), "synth", _make_release) / "release"


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


def trainer_env(monkeypatch, env: dict, results: Path, data_workers: str | None = "0") -> None:
    """Environment for an nnU-Net trainer built in-process on the test datasets: their raw and preprocessed
    folders, `results` (trainers make their output folders), no torch.compile, `data_workers` augmentation
    processes (None: as set)."""
    for k in ("nnUNet_raw", "nnUNet_preprocessed"):
        monkeypatch.setenv(k, env[k])
    monkeypatch.setenv("nnUNet_results", str(results))
    monkeypatch.setenv("nnUNet_compile", "0")
    if data_workers is not None:
        monkeypatch.setenv("nnUNet_n_proc_DA", data_workers)


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
    # -npfp 1: nnU-Net's fingerprint step otherwise starts 8 processes (each importing torch) on 2 cores
    run_cmd(["nnUNetv2_plan_and_preprocess", "-d", "601", "602", "-c", "2d", "--verify_dataset_integrity",
             "-np", "1", "-npfp", "1"], env=converted["env"])
    return converted


# ---------------------------------------------------------------- a trained smoke run on a CSV cohort
from nnunet_wmhloc.io import write_csv  # noqa: E402

SMOKE = ["-c", "2d", "-f", "0", "--trainer", "nnUNetTrainerWMHLoc_smoke", "--device", "cpu", "--disable-tta"]


def _write_cohort_csv(release: Path, path: Path) -> Path:
    rows = []
    for p in sorted(release.glob("*/**/wmh.nii.gz")):
        folder = p.parent
        split = "train" if folder.parts[len(release.parts)] == "training" else "test"
        sid = folder.name
        reg = release / "region_labels" / ("Train" if split == "train" else "Test") / f"WMH_{sid}.nii.gz"
        rows.append({"subject": f"s{sid}", "flair": folder / "pre" / "FLAIR.nii.gz", "t1": folder / "pre" / "T1.nii.gz",
                     "lesion": p, "regions": reg if reg.is_file() else "", "site": folder.parent.name, "split": split})
    test = [r for r in rows if r["split"] == "test"][:4]
    rows = [r for r in rows if r["split"] == "train"] + test
    test[0]["t1"] = ""
    test[1]["regions"] = ""
    test[2]["lesion"] = test[2]["regions"] = ""
    return write_csv(rows, path)


def _cohort_csv(root: Path) -> Path:
    release = _once(root, "synth", _make_release) / "release"
    return _once(root, "cohort", lambda d: _write_cohort_csv(release, d / "cohort.csv")) / "cohort.csv"


@pytest.fixture(scope="session")
def cohort_csv(tmp_path_factory) -> Path:
    """The synthetic release as a user's CSV cohort: the 6 training subjects train, 4 test subjects test.
    One test subject has no T1 (FLAIR only), one no region map, one neither lesion mask nor region map."""
    return _cohort_csv(shared_root(tmp_path_factory))


# ---------------------------------------------- the two trained runs, made beside the rest of the suite
# `wmhloc_run --demo` and the smoke `wmhloc_run --cohort` are most of the suite's time, yet each keeps about one
# core busy (one torch thread beside one augmentation worker). So both start at the first test as background
# processes, the tests needing them run last (pytest_collection_modifyitems), and every xdist worker uses the
# same two runs. They stay real CLI runs: that is what test_pipeline_demo / test_pipeline_paths test.
TRAINED_RUNS = ("demo", "cohort_run")
# `make demo`'s command with a shorter training (both models 12 epochs instead of 30 and 45): the demo's
# training was most of the suite's CPU time. Its tests check that the models learned, with thresholds for this
# budget; the full demo's figures are README's, from `make demo` runs.
DEMO_TEST_EPOCHS = 12
DEMO_ARGS = ["--demo", "--epochs", str(DEMO_TEST_EPOCHS)]


def _script(name: str) -> str:
    """The console script beside this interpreter (the venv's bin), else on PATH."""
    p = Path(sys.executable).parent / name
    return str(p) if p.exists() else name


def _run_command(root: Path, name: str) -> tuple[list, dict]:
    out = root / "runs" / name / "run"
    if name == "demo":
        return [_script("wmhloc_run"), *DEMO_ARGS, "-o", out], {"OMP_NUM_THREADS": "1"}
    return [_script("wmhloc_run"), "--cohort", _cohort_csv(root), "-o", out, *SMOKE], {}


def start_run(root: Path, name: str) -> Path:
    """Start trained run `name` in the background unless this test run already did; its folder."""
    from filelock import FileLock

    folder = root / "runs" / name
    with FileLock(str(root / f".run_{name}.lock")):
        if not (folder / "pid").is_file():
            argv, env = _run_command(root, name)
            folder.mkdir(parents=True, exist_ok=True)
            env = {**os.environ, **{k: v for k, v in env.items() if k not in os.environ}}
            with open(folder / "stdout", "w") as o, open(folder / "stderr", "w") as e:
                # the shell records the exit code and the run's CPU time (`times`: what the suite's budget is
                # made of); its own session, so one killpg ends the run and its children
                shell = '"$@"; rc=$?; times > cpu_times; echo $rc > rc.tmp && mv rc.tmp rc'
                p = subprocess.Popen(["/bin/sh", "-c", shell, "sh", *map(str, argv)], cwd=folder, stdout=o,
                                     stderr=e, env=env, start_new_session=True)
            (folder / "argv").write_text("\n".join(map(str, argv)))
            (folder / "pid").write_text(str(p.pid))
    return folder


def wait_run(root: Path, name: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    """Trained run `name` finished (started now if it was not): its exit code and output."""
    folder = start_run(root, name)
    t0 = time.time()
    while not (folder / "rc").is_file():
        if time.time() - t0 > timeout:
            raise AssertionError(f"{name}: not finished after {timeout:.0f} s ({folder})")
        time.sleep(1)
    return subprocess.CompletedProcess((folder / "argv").read_text().splitlines(),
                                       int((folder / "rc").read_text()), (folder / "stdout").read_text(),
                                       (folder / "stderr").read_text())


@pytest.fixture(scope="session", autouse=True)
def _trained_runs_started(request, tmp_path_factory):
    """Start the trained runs the selected tests need, at the first test."""
    needed = {n for item in request.session.items for n in TRAINED_RUNS if n in item.fixturenames}
    for name in TRAINED_RUNS:
        if name in needed:
            start_run(shared_root(tmp_path_factory), name)


def _group(item) -> str | None:
    """The xdist worker an item must share with others: its same_worker mark (tests that change a shared folder
    and those reading it, in file order), the session's nnU-Net folders (nnunet_env: its tests train into them),
    a module-scoped fixture (made once), else none."""
    mark = item.get_closest_marker("same_worker")
    if mark:
        return mark.args[0]
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return None
    if "nnunet_env" in info.names_closure:
        return "nnunet_env"
    if any(d and d[-1].scope == "module" for d in info.name2fixturedefs.values()):
        return item.nodeid.split("::")[0]
    return None


def pytest_configure(config):
    config.addinivalue_line("markers", "same_worker(group): run on one xdist worker with the group's other tests, "
                            "in file order (they change and read one shared folder)")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Tests of the trained runs last (the cohort run's, then the demo's), so the suite's other tests run while
    the runs train; under xdist each worker writes the items' groups for the controller's scheduler."""
    def rank(item):
        names = getattr(item, "fixturenames", ())
        return 2 if "demo" in names else 1 if "cohort_run" in names else 0

    items.sort(key=rank)
    if WORKER:
        groups = {item.nodeid: g for item in items if (g := _group(item))}
        path = shared_root(config._tmp_path_factory) / ".xdist_groups.json"
        tmp = path.with_name(f"{path.name}.{WORKER}.tmp")
        tmp.write_text(json.dumps(groups))
        os.replace(tmp, path)


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """--dist loadgroup with the groups of _group(). xdist's own loadgroup reads the group from a suffix it adds
    to the node id, which pytest 9.2 no longer lets it change (pytest-xdist issue 1386): all tests were spread
    as if ungrouped. The workers write the groups (above) before they report their collection, so they are
    there when the scheduler first asks."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    path = shared_root(config._tmp_path_factory) / ".xdist_groups.json"

    class GroupScheduling(LoadScopeScheduling):
        groups: dict | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:
                self.groups = json.loads(path.read_text()) if path.is_file() else {}
            key = nodeid[:nodeid.rfind("@")] if nodeid.rfind("@") > nodeid.rfind("]") else nodeid
            return self.groups.get(key, nodeid)

    return GroupScheduling(config, log)


def pytest_sessionfinish(session, exitstatus):
    """End trained runs still going (the run stopped early, or no test waited for them). Workers leave that to
    the controller: another worker may still be waiting for the run."""
    if WORKER:
        return
    runs = shared_root(session.config._tmp_path_factory) / "runs"
    for pid in runs.glob("*/pid") if runs.is_dir() else ():
        if not (pid.parent / "rc").is_file():
            try:
                os.killpg(int(pid.read_text()), signal.SIGTERM)
            except (ProcessLookupError, PermissionError, ValueError):
                pass


@pytest.fixture(scope="session")
def cohort_run(tmp_path_factory) -> dict:
    """`wmhloc_run --cohort cohort_csv` with the smoke trainer (2d, fold 0), once per test run: its tests are in
    test_pipeline_paths.py; test_models_export.py exports and reuses its models."""
    root = shared_root(tmp_path_factory)
    p = wait_run(root, "cohort_run")
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(p.args)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return {"out": root / "runs" / "cohort_run" / "run", "process": p}


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> dict:
    """`wmhloc_run --demo` (synthetic cohort, real tiny nnU-Net trainings on the CPU), once per test run: its
    tests are in test_pipeline_demo.py."""
    root = shared_root(tmp_path_factory)
    p = wait_run(root, "demo")
    assert p.returncode == 0, f"demo failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return {"out": root / "runs" / "demo" / "run", "stdout": p.stdout}
