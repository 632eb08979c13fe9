"""README's commands stay true: every command line of its ```bash blocks is run here.

The walkthroughs name data a user downloads (the challenge release, the Eve atlas), which this machine does not
have, so each of our commands runs on paths that do not exist: it must accept every option the README gives
(argparse would exit 2) and stop with our one-line error naming the missing input (exit 1). nnU-Net's own
commands must accept the README's options (their --help lists each). What the commands do on real files is
exercised elsewhere: the demo and `--cohort`/`--release` runs (test_pipeline_demo, test_pipeline_paths),
training/prediction with our trainers through nnU-Net's CLI (test_training_cli), conversion (test_conversion,
test_cohort), the atlas (test_atlas_*), `make test` is CI itself and the demo test runs `make demo`'s command
with a shorter training (--epochs).
"""
from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

ARGPARSE_ERRORS = ("unrecognized arguments", "invalid choice", "the following arguments are required",
                   "expected one argument", "not allowed with argument", "invalid int value")


def readme_blocks() -> list[list[str]]:
    """Command lines of each of README's ```bash blocks: continuations joined, comments and blanks dropped."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        lines = [ln.split(" #", 1)[0].strip() for ln in joined.splitlines() if not ln.lstrip().startswith("#")]
        blocks.append([ln for ln in lines if ln])
    return blocks


BLOCKS = readme_blocks()
COMMANDS = [c for b in BLOCKS for c in b]
# a command with the shell variables the `eval "$(wmhloc_env ...)"` lines before it in its block set
CASES = [(c, [e for e in b[:i] if e.startswith('eval "$(wmhloc_env')]) for b in BLOCKS for i, c in enumerate(b)]


def _ours(cmd: str) -> bool:
    return cmd.startswith("wmhloc_") or cmd.startswith('eval "$(wmhloc_env')


def _nnunet(cmd: str) -> bool:
    return cmd.startswith("nnUNetv2_")


def test_readme_has_the_walkthroughs():
    """The commands this test covers are really there (a README rewritten into another format would otherwise
    leave nothing to check)."""
    names = {shlex.split(c)[0] for c in COMMANDS if _ours(c) or _nnunet(c)}
    assert {"wmhloc_run", "wmhloc_predict", "wmhloc_convert_wmh2017", "wmhloc_build_atlas",
            "wmhloc_region_labels", "nnUNetv2_plan_and_preprocess", "nnUNetv2_train", "nnUNetv2_predict"} <= names
    assert {"make demo", "make test"} <= set(COMMANDS)
    # everything else is set-up a user types once (clone, shell variables)
    rest = [c for c in COMMANDS if not (_ours(c) or _nnunet(c) or c.startswith("make "))]
    assert all(c.split()[0] in ("git", "export") for c in rest), rest


def _run(cmd: str, tmp_path: Path, env: dict) -> tuple[list[str], subprocess.CompletedProcess]:
    """Run one README line in tmp_path with HOME there (so ~ is a fresh folder)."""
    if cmd.startswith("eval"):
        cmd = re.match(r'eval "\$\((.*)\)"', cmd).group(1)
    home = str(tmp_path / "home")
    args = [home + a[1:] if a.startswith("~") else a for a in shlex.split(cmd)]
    exe = Path(sys.executable).parent / args[0]
    return args, subprocess.run([str(exe), *args[1:]], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=300)


@pytest.mark.parametrize("cmd,evals", [case for case in CASES if _ours(case[0])], ids=lambda x: str(x)[:80])
def test_our_commands_accept_readme_options(cmd, evals, tmp_path):
    env = dict(os.environ, HOME=str(tmp_path / "home"))
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        env.pop(k, None)
    for e in evals:  # what `eval "$(wmhloc_env ...)"` earlier in the block exported
        _, q = _run(e, tmp_path, env)
        assert q.returncode == 0, q.stderr
        env.update(re.findall(r"^export (\w+)=(.*)$", q.stdout, flags=re.M))
    args, p = _run(cmd, tmp_path, env)
    err = p.stderr.strip()
    assert not any(e in err for e in ARGPARSE_ERRORS), f"{cmd}: {err}"
    if args[0] == "wmhloc_env":
        assert p.returncode == 0 and "nnUNet_extTrainer=" in p.stdout, err
        return
    # no input exists here: one line naming a missing input, exit 1, and no output folder left behind
    assert p.returncode == 1, f"{cmd}: exit {p.returncode}\n{err}"
    last = err.splitlines()[-1]
    assert last.startswith("error: ") and ("not found" in last or "does not exist" in last or "no such" in last.lower()
                                           or "missing" in last), last
    outputs = [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-o", "--output")]
    for o in outputs:
        assert not (tmp_path / o).exists(), f"{cmd}: left {o} behind"


@functools.lru_cache(maxsize=None)
def _help(command: str) -> subprocess.CompletedProcess:
    """`<nnU-Net command> -h`, run once per command (README names some several times; each start imports torch)."""
    return subprocess.run([str(Path(sys.executable).parent / command), "-h"], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if _nnunet(c)])
def test_nnunet_commands_accept_readme_options(cmd):
    args = shlex.split(cmd)
    p = _help(args[0])
    assert p.returncode == 0, p.stderr
    for a in args[1:]:
        if a.startswith("-"):
            assert re.search(rf"(^|[\s,\[]){re.escape(a)}([\s,\]]|$)", p.stdout, flags=re.M), f"{args[0]} has no {a}"
