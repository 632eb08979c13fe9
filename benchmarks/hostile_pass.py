"""A hostile-input pass over every command (issue #21's "fresh pass"): each case runs the real console script
in a subprocess, in its own temporary folder, time-boxed, and is classified

  held:   a one-line `error:` (argparse's usage + error line too) with a non-zero exit, no traceback, no
          partial output, inputs untouched; or exit 0 with a correct output;
  failed: a traceback, a hang, more than one error line, exit 0 on input that must be refused or with an
          output that is wrong, an output left behind after an error, an input changed.

    python benchmarks/hostile_pass.py [--quick] [--only SUBSTRING] [--jobs 1] [--list]

Prints one line per failed case, then the counts per command and overall. The cases are in
benchmarks/hostile_cases.py; the odd files in benchmarks/hostile_files.py. --quick runs a few cases of each
kind (the test runs it). Exit code 1 when a case failed.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hostile_cases import Case, all_cases, make_base  # noqa: E402

BIN = Path(sys.executable).parent
TIMEOUT = 120


def snapshot(folder: Path, skip: str = "") -> dict:
    """relative path -> content hash of everything below `folder` but `skip` (a relative path) and locks."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(folder))
            if (skip and (rel == skip or rel.startswith(skip + os.sep))) or ".wmhloc-lock" in name:
                continue
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            elif p.is_file():
                out[rel] = hashlib.sha1(p.read_bytes()).hexdigest()
            else:
                out[rel] = "special"
    return out


def leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*")
                  if ".tmp" in p.name or p.name.endswith(".old") or "wmhloc-part" in p.name
                  or p.name.endswith(".wmhloc-lock"))


def error_lines(err: str) -> list[str]:
    """stderr lines that are not notes, warnings we pass on, or progress bars."""
    keep = []
    for ln in err.replace("\r", "\n").splitlines():
        s = ln.strip()
        if not s or s.startswith("note:") or "it/s]" in s or "%|" in s or s.startswith("warning:"):
            continue
        keep.append(s)
    return keep


def _skip(case: Case) -> str:
    """What the snapshot leaves out: the output, unless it existed before (then it is the user's, and kept)."""
    return case.out if case.out and not case.out_existed else ""


def judge(case: Case, rc: int | None, out: str, err: str, w: Path, before: dict) -> str | None:
    """None when the case held, else why it failed."""
    if rc is None:
        return "hang (timeout)"
    if "Traceback" in err or "Traceback" in out:
        last = [ln for ln in err.splitlines() if ln.strip()][-1:] or [""]
        return f"traceback: {last[0][:160]}"
    after = snapshot(w, _skip(case))
    if after != before:
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        if not case.may_change or any(not k.startswith(case.may_change) for k in changed):
            return f"input changed: {changed[:4]}"
    if rc != 0:
        lines = error_lines(err)
        usage = rc == 2 and lines and lines[0].startswith("usage:")
        if usage:
            lines = [ln for ln in lines if ": error:" in ln]
            if len(lines) != 1:
                return f"argparse exit without its error line: {err[-200:]!r}"
        elif len(lines) != 1 or not lines[0].startswith("error: "):
            return f"not one error line (rc {rc}): {' | '.join(lines)[:200]!r}"
        # a run folder of wmhloc_run/wmhloc_predict stays after a failed stage (the re-run resumes it), the
        # error then names the stage and its log
        resumable = case.cmd in ("wmhloc_run", "wmhloc_predict") and "stage '" in lines[-1]
        if case.out and (w / case.out).exists() and not case.out_existed and not resumable:
            return f"partial output left: {case.out}"
        if leftovers(w):
            return f"leftover temporaries: {leftovers(w)[:3]}"
        if case.expect == "ok":
            return f"refused a valid input: {lines[-1][:200]}"
        if case.names and not any(n in lines[-1] for n in case.names):
            return f"error does not name {case.names}: {lines[-1][:200]}"
        return None
    if case.expect == "error":
        return f"exit 0 on input that must be refused: {out.strip()[-160:]!r}"
    if leftovers(w):
        return f"leftover temporaries after success: {leftovers(w)[:3]}"
    if case.check is not None:
        return case.check(w)
    return None


def run_case(case: Case, base: Path, scratch: Path) -> tuple[Case, str | None, float]:
    w = Path(tempfile.mkdtemp(prefix="c_", dir=scratch))
    t0 = time.perf_counter()
    try:
        argv = case.setup(w, base)
        assert isinstance(argv, list), f"setup returned {argv!r}, not argv"
    except Exception as e:  # a broken case is the harness's bug: report it, do not count it as held
        return case, f"HARNESS: setup failed: {type(e).__name__}: {e}", 0.0
    case.out_existed = bool(case.out) and (w / case.out).exists()
    before = snapshot(w, _skip(case))
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", OMP_NUM_THREADS="1",
               nnUNet_raw=str(w / "nnunet" / "raw"), nnUNet_preprocessed=str(w / "nnunet" / "pre"),
               nnUNet_results=str(w / "nnunet" / "res"), TMPDIR=str(w / "tmp"), PYTHONWARNINGS="ignore")
    (w / "tmp").mkdir(exist_ok=True)
    try:
        p = subprocess.run([str(BIN / case.cmd), *map(str, argv)], cwd=w, capture_output=True, text=True,
                           timeout=case.timeout or TIMEOUT, env=env, stdin=subprocess.DEVNULL, errors="replace")
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = None, str(e.stdout or ""), str(e.stderr or "")
    # ours only: torch keeps its compile cache (torchinductor_<user>) in $TMPDIR
    leftover_tmp = sorted(x.name for x in (w / "tmp").iterdir() if "wmhloc" in x.name)
    shutil.rmtree(w / "tmp", ignore_errors=True)
    verdict = judge(case, rc, out, err, w, before)
    if verdict is None and leftover_tmp:
        verdict = f"leftovers in $TMPDIR: {leftover_tmp[:3]}"
    dt = time.perf_counter() - t0
    if verdict is None:
        shutil.rmtree(w, ignore_errors=True)
    else:
        case.workdir = w
        (w.parent / f"{w.name}.log").write_text(f"{case.cmd} {case.name}\nargv: {argv}\nrc: {rc}\n"
                                                f"--- stdout\n{out[-3000:]}\n--- stderr\n{err[-6000:]}\n")
    return case, verdict, dt


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a few cases of each kind")
    p.add_argument("--only", default=None, help="cases whose name contains this")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--list", action="store_true")
    p.add_argument("--skip", type=int, default=0, help="leave out the first N cases (to split a pass)")
    p.add_argument("--keep", default=None, help="folder for the failed cases' work folders (default: removed)")
    a = p.parse_args(argv)
    cases = all_cases(quick=a.quick)
    if a.only:
        cases = [c for c in cases if a.only in c.name]
    cases = cases[a.skip:]
    if a.list:
        print("\n".join(f"{c.cmd:24} {c.name}" for c in cases))
        return 0
    scratch = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="wmhloc_hostile_"))
    scratch.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base = make_base(scratch / "base")
    results = []
    with ThreadPoolExecutor(max(1, a.jobs)) as ex:
        for case, verdict, dt in ex.map(lambda c: run_case(c, base, scratch), cases):
            results.append((case, verdict))
            if verdict is not None:
                print(f"FAILED {case.cmd} {case.name}: {verdict}", flush=True)
    per = {}
    for case, verdict in results:
        h, f = per.get(case.cmd, (0, 0))
        per[case.cmd] = (h + (verdict is None), f + (verdict is not None))
    for cmd, (h, f) in sorted(per.items()):
        print(f"{cmd:24} {h + f:4} cases  {h:4} held  {f:4} failed")
    failed = sum(v is not None for _, v in results)
    print(f"{'total':24} {len(results):4} cases  {len(results) - failed:4} held  {failed:4} failed  "
          f"({time.perf_counter() - t0:.0f} s)")
    if not a.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
