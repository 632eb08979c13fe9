"""Resumable stages: one done-marker and one log per stage in the output folder.

<output>/stages/<stage>.done   JSON: when it finished, how long it took, its settings and a short summary
<output>/logs/<stage>.log      every command of the stage with its full output

A stage whose marker exists with the same settings is skipped. Once a stage runs, every later stage runs
too (its inputs may have changed); `force` names the first stage to redo. A failing command stops the run
with one line naming the stage, the reason and the log.
"""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from nnunet_wmhloc.io import WMHLocError, is_owned, make_owned_dir, mark_owned, write_json
from nnunet_wmhloc.layout import RunLayout

# nnU-Net's commands run as subprocesses (StageContext.nnunet); ours are plain functions the stages call


class StageFailed(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Stage:
    name: str
    func: Callable[["StageContext"], dict | None]
    settings: dict = field(default_factory=dict)  # a change re-runs the stage
    enabled: bool = True
    description: str = ""
    inputs: dict = field(default_factory=dict)  # what its inputs are (input_fingerprint): a change re-runs it


def input_fingerprint(table: Path | None, files=()) -> dict:
    """What a stage's inputs are, for its done-marker: the content hash of a table (cohort CSV) and the size
    and mtime of every file it lists, so that an edited cohort (a subject added, an image replaced) re-runs
    the stage instead of returning the last run's results."""
    import hashlib

    out: dict = {}
    if table is not None and Path(table).is_file():
        out["table"] = {"path": str(Path(table).resolve()),
                        "sha256": hashlib.sha256(Path(table).read_bytes()).hexdigest()}
    listed = {}
    for f in files:
        try:
            st = os.stat(f)
            listed[str(Path(f).resolve())] = [st.st_size, st.st_mtime_ns]
        except OSError:
            listed[str(f)] = None  # missing: the stage itself reports it
    out["files"] = listed
    return out


def _input_changes(old: dict | None, new: dict) -> str:
    """What differs between two input_fingerprint records, in a few words."""
    if old is None:
        return "not recorded by the last run"
    what = []
    if old.get("table") != new.get("table"):
        what.append(f"{Path((new.get('table') or old.get('table') or {}).get('path', 'table')).name} edited")
    a, b = old.get("files", {}), new.get("files", {})
    added, removed = len(set(b) - set(a)), len(set(a) - set(b))
    changed = sum(1 for k in set(a) & set(b) if a[k] != b[k])
    for n, word in ((added, "added"), (removed, "removed"), (changed, "changed")):
        if n:
            what.append(f"{n} file(s) {word}")
    return ", ".join(what) or "changed"


def _last_error_line(text: str) -> str:
    """The most telling line of a failed command's output: our 'error: ...', else a traceback's last line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("# exit")]
    for ln in reversed(lines):
        head, sep, rest = ln.partition("error:")
        if sep and (not head or (head.endswith(": ") and " " not in head.rstrip(": "))):  # ours, or argparse's
            return rest.strip()
    for ln in reversed(lines):
        if ("Error" in ln or "Exception" in ln) and ":" in ln and not ln.startswith("File "):
            return ln
    return lines[-1] if lines else "no output"


class StageContext:
    """What a stage function gets: its log file, the run's layout, what earlier stages of this process made
    (`made`), and helpers that run nnU-Net's commands into the log."""

    def __init__(self, name: str, log_path: Path, env: dict, output: Path, quiet: bool, made: dict | None = None):
        self.name = name
        self.log_path = log_path
        self.env = env
        self.output = output
        self.layout = RunLayout(output)
        self.quiet = quiet
        self.commands: list[str] = []
        self.made = {} if made is None else made  # shared by the run's stages: key -> what a stage returned

    def made_or(self, key: str, load: Callable[[], object]):
        """What an earlier stage of this run made under `key`, else `load()` (a stage skipped on resume left
        its result on disk only); the loaded value is kept for the stages after this one."""
        if key not in self.made:
            self.made[key] = load()
        return self.made[key]

    def log(self, text: str) -> None:
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(text.rstrip("\n") + "\n")

    def say(self, text: str) -> None:
        """A line for the user (stdout) and the log."""
        self.log(text)
        if not self.quiet:
            print(f"  {text}", flush=True)

    def _header(self, shown: list[str]) -> None:
        line = shlex.join(str(a) for a in shown)
        self.commands.append(line)
        self.log(f"\n$ {line}\n# {time.strftime('%Y-%m-%d %H:%M:%S')}")

    def nnunet(self, args: list, *, env: dict | None = None) -> None:
        """Run an nnU-Net console script as a subprocess (through `launch`, which caps torch threads when
        WMHLOC_TORCH_THREADS is set); output appended to the log; non-zero exit = StageFailed."""
        args = [str(a) for a in args]
        self._header(args)
        t = time.time()
        with open(self.log_path, "a", encoding="utf-8") as f:
            p = subprocess.run([sys.executable, "-m", "nnunet_wmhloc.pipeline.launch", *args],
                               env=self.env if env is None else env, stdout=f, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
        self.log(f"# exit {p.returncode} after {time.time() - t:.1f} s")
        if p.returncode != 0:
            tail = self.log_path.read_text(encoding="utf-8", errors="replace")[-20000:]
            raise StageFailed(f"{args[0]} exited with {p.returncode}: {_last_error_line(tail)}")

    def call(self, what: list, func: Callable, *args, **kwargs):
        """Run one of our stage functions in-process: `what` (the equivalent command line) heads its part of
        the log, and what it prints (progress bars too) goes into the log; returns what the function returns.
        Its errors propagate: the runner names the stage and the log."""
        self._header([str(w) for w in what])
        t = time.time()
        with open(self.log_path, "a", encoding="utf-8") as f, contextlib.redirect_stdout(f), \
                contextlib.redirect_stderr(f):
            out = func(*args, **kwargs)
        self.log(f"# done after {time.time() - t:.1f} s")
        return out


class Runner:
    def __init__(self, output: Path, stages: list[Stage], env: dict, *, force: str | None = None,
                 quiet: bool = False):
        self.output = Path(output)
        self.stages = [s for s in stages if s.enabled]
        self.env = env
        self.quiet = quiet
        names = [s.name for s in stages]
        if force is not None and force not in names:
            raise WMHLocError(f"--force {force}: unknown stage (stages: {', '.join(names)})")
        if force is not None and force not in [s.name for s in self.stages]:
            raise WMHLocError(f"--force {force}: this stage is not part of this run")
        self.force = force
        self.layout = RunLayout(self.output)
        self.marker_dir = self.layout.stages
        self.log_dir = self.layout.logs
        self.made: dict = {}  # what the stages that ran in this process returned, for the stages after them

    def marker(self, name: str) -> Path:
        return self.layout.marker(name)

    def read_marker(self, name: str) -> dict | None:
        p = self.marker(name)
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except ValueError:
            return None  # a broken marker means: not done

    def _print(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    def run(self) -> dict:
        """Run or skip every stage in order; returns {stage: marker dict}."""
        if not self.output.exists() or is_owned(self.output):  # new or empty: ours (never a user's folder)
            self.output.mkdir(parents=True, exist_ok=True)
            mark_owned(self.output)
        self.marker_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        redo = False
        results = {}
        for i, st in enumerate(self.stages, start=1):
            done = self.read_marker(st.name)
            settings = json.loads(json.dumps(st.settings, default=str))
            inputs = json.loads(json.dumps(st.inputs, default=str))
            if st.name == self.force:
                redo = True
            elif done is not None and inputs and "inputs" not in done and not redo:
                # a marker from a version that recorded no inputs: redoing would retrain on an upgrade, so
                # adopt today's inputs (changes from now on re-run) and say that the old ones were not checked
                self._print(f"[{i}/{len(self.stages)}] {st.name}: the last run recorded no inputs (older "
                            f"version): not checked; --force {st.name} redoes it")
                done["inputs"] = inputs
                write_json(done, self.marker(st.name), overwrite=True)
            elif done is not None and inputs and done.get("inputs") != inputs and not redo:
                self._print(f"[{i}/{len(self.stages)}] {st.name}: inputs changed since the last run "
                            f"({_input_changes(done.get('inputs'), inputs)}), redoing it and the stages after it")
                redo = True
            elif done is not None and done.get("settings") != settings and not redo:
                self._print(f"[{i}/{len(self.stages)}] {st.name}: settings changed since the last run, redoing "
                            "it and the stages after it")
                redo = True
            if done is not None and not redo:
                self._print(f"[{i}/{len(self.stages)}] {st.name}: done, skipped ({done.get('seconds', 0):.0f} s "
                            f"at {done.get('finished', '?')}; --force {st.name} redoes it)")
                results[st.name] = done
                continue
            redo = True  # everything after a stage that ran runs too
            for later in self.stages[i - 1:]:
                self.marker(later.name).unlink(missing_ok=True)
            log_path = self.layout.log(st.name)
            log_path.write_text(f"# stage {st.name} started {time.strftime('%Y-%m-%d %H:%M:%S')}\n",
                                encoding="utf-8")
            self._print(f"[{i}/{len(self.stages)}] {st.name}: {st.description or 'running'} (log: {log_path})")
            ctx = StageContext(st.name, log_path, self.env, self.output, self.quiet, self.made)
            t = time.time()
            try:
                summary = st.func(ctx) or {}
            except StageFailed as e:
                raise WMHLocError(f"stage '{st.name}' failed: {e.reason} (log: {log_path})") from None
            except SystemExit as e:  # an inner command's argparse exit: its reason went to the log
                if e.code in (0, None):
                    raise WMHLocError(f"stage '{st.name}' failed: it exited early (log: {log_path})") from None
                tail = log_path.read_text(encoding="utf-8", errors="replace")[-20000:]
                reason = str(e.code) if isinstance(e.code, str) else _last_error_line(tail)
                raise WMHLocError(f"stage '{st.name}' failed: {reason} (log: {log_path})") from None
            except WMHLocError as e:
                ctx.log(f"error: {e}")
                raise WMHLocError(f"stage '{st.name}' failed: {e} (log: {log_path})") from None
            except Exception as e:  # a bug: full traceback in the log, one line for the user
                ctx.log(traceback.format_exc())
                raise WMHLocError(f"stage '{st.name}' failed: {type(e).__name__}: {e} (log: {log_path})") from None
            seconds = time.time() - t
            marker = {"stage": st.name, "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": round(seconds, 1),
                      "settings": settings, "inputs": inputs, "commands": ctx.commands, "summary": summary}
            write_json(marker, self.marker(st.name), overwrite=True)
            ctx.log(f"# stage {st.name} done in {seconds:.1f} s")
            self._print(f"      done in {seconds:.0f} s")
            results[st.name] = marker
        return results


def clear_dir(path: Path) -> Path:
    """An empty folder the stage owns (what a previous, interrupted attempt left is removed; a folder of
    the same name that we did not make is refused, never deleted)."""
    return make_owned_dir(path)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
