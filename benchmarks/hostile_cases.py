"""The cases of benchmarks/hostile_pass.py: (command, setup writing the inputs into a fresh folder and
returning argv, what must happen). The output of every case is `out` (or `out.zip`) in its folder."""
from __future__ import annotations

import csv
import io
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import hostile_files as F

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


@dataclass
class Case:
    name: str
    cmd: str
    setup: Callable  # (work folder, base folder) -> argv
    expect: str = "error"  # error | ok | any
    check: Callable | None = None  # (work folder) -> None or why the output is wrong
    out: str = "out"
    names: tuple = ()  # one of these must be in the error line
    may_change: str = ""  # an input prefix a command may legitimately write to (its own run folder)
    timeout: float | None = None
    out_existed: bool = False
    workdir: Path | None = None


# ----------------------------------------------------------------------------------------------- base
def make_base(base: Path) -> Path:
    """Valid inputs every case copies from: tiny segmentations, their loads and evaluation, a synthetic
    release, nnU-Net-like prediction folders, a toy model archive."""
    base.mkdir(parents=True, exist_ok=True)
    for i in range(1, 7):
        a = F.lesion_arr()
        a[0, 0:i, 0:i] = 1
        if i % 2:
            a[4:6, 8:11, 8:11] = 1  # a right-hemisphere lesion for some
        F.write_sitk(base / "seg" / "lesions" / f"s0{i}.nii.gz", a)
        F.write_sitk(base / "seg" / "regions" / f"s0{i}.nii.gz", F.region_arr())
        F.write_sitk(base / "seg" / "flair" / f"s0{i}.nii.gz", F.flair_arr(i))
    from nnunet_wmhloc.pipeline import run as _  # noqa: F401  (imports once, before the subprocesses)
    from nnunet_wmhloc.postprocessing.localize import main as localize
    from nnunet_wmhloc.evaluation.evaluate import main as evaluate
    from nnunet_wmhloc.synth import make_cohort

    assert localize(["--lesions", str(base / "seg/lesions"), "--regions", str(base / "seg/regions"),
                     "-o", str(base / "loc")]) == 0
    ref = base / "seg" / "ref"
    for i in range(1, 7):
        a = F.lesion_arr()
        a[3:5, 3:8, 3:8] = 1
        F.write_sitk(ref / f"s0{i}.nii.gz", a)
    assert evaluate(["--pred", str(base / "seg/lesions"), "--ref", str(ref), "--task", "lesion",
                     "-o", str(base / "ev")]) == 0
    make_cohort(base / "rel", seed=0, per_site=1, test_per_site=1, show_progress=False)
    rows = [{"subject": s, "flair": str(base / "seg/flair" / f"{s}.nii.gz"), "t1": "",
             "lesion": str(base / "seg/lesions" / f"{s}.nii.gz"), "regions": str(base / "seg/regions" / f"{s}.nii.gz")}
            for s in ("s01", "s02")]
    write_rows(base / "cohort.csv", rows)
    sys.path.insert(0, str(REPO / "tests"))
    import test_security_models as SM  # the toy archive builder of the security tests

    SM.write_archive(base / "models.zip")
    (base / "archive_members.json").write_text(json.dumps({k: v.hex() for k, v in SM.members().items()}))
    _fuse_preds(base)
    return base


def _fuse_preds(base: Path) -> None:
    import numpy as np
    import test_postprocessing_fuse as TF

    rng = np.random.default_rng(0)
    for s in ("wmh001", "wmh002"):
        img = base / "fuse_img" / f"{s}_0000.nii.gz"
        img.parent.mkdir(parents=True, exist_ok=True)
        TF._image(img, rng)
        for m in ("flair", "t1"):
            TF.nnunet_predict_like(img, base / "preds" / f"pred_{m}", f"{s}_{m}", 2, rng)


def write_rows(path: Path, rows: list[dict], *, delimiter=",", encoding="utf-8") -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), delimiter=delimiter)
    w.writeheader()
    w.writerows(rows)
    path.write_bytes(buf.getvalue().encode(encoding))
    return path


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def extra_args(value) -> list:
    """What a case's edit returned, as more argv (edits that only change files return something else)."""
    return list(value) if isinstance(value, (list, tuple)) else []


def copy(base: Path, w: Path, *names: str) -> None:
    for n in names:
        src = base / n
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, w / Path(n).name)


# ------------------------------------------------------------------------------------------- checks
def loads_equal_base(subjects=("s01", "s02")) -> Callable:
    """The output's regional loads equal the base's for these subjects (the same data, only told oddly)."""
    def check(w: Path):
        got = {r["subject"]: r for r in read_rows(w / "out" / "regional_loads.csv")}
        want = {r["subject"]: r for r in read_rows(w / "base_loads.csv")}
        for s in subjects:
            if s not in got:
                return f"subject {s} missing from regional_loads.csv"
            diff = [k for k, v in want[s].items() if k.endswith("_mm3") and got[s].get(k) != v]
            if diff:
                return f"{s}: loads differ from the plain file's ({diff[:3]})"
        return None
    return check


def rows_have(file: str, column: str, values: set) -> Callable:
    def check(w: Path):
        rows = read_rows(w / "out" / file)
        got = {r[column] for r in rows}
        return None if values <= got else f"{file}: {column} lacks {sorted(values - got)[:3]} (has {sorted(got)[:5]})"
    return check


def no_cell_starts_with(file: str, chars="=+-@") -> Callable:
    def check(w: Path):
        for r in read_rows(w / "out" / file):
            for k, v in r.items():
                if v and v[0] in chars and not _number(v):
                    return f"{file}: cell {k}={v[:30]!r} would run in a spreadsheet"
        return None
    return check


def _number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def all_cases(quick: bool = False) -> list[Case]:
    from hostile_cases_b import more_cases
    from hostile_cases_images import image_cases

    cases = image_cases() + more_cases()
    names = [c.cmd + "/" + c.name for c in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    if quick:
        seen: dict[str, int] = {}
        keep = []
        for c in cases:
            kind = c.cmd + c.name.split(":")[0]
            if seen.get(kind, 0) < 1:
                keep.append(c)
            seen[kind] = seen.get(kind, 0) + 1
        cases = keep[::2]
    return cases
