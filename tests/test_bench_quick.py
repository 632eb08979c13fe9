"""benchmarks/bench_trainers.py in its --quick mode, so the benchmark keeps running (it rotted once unnoticed:
it called an instance method on the class). Checks that each table has a row per trainer, task and config
with real figures, not the speed itself."""
import re
import subprocess
import sys

from conftest import REPO

TRAINERS = ("nnUNetTrainer", "nnUNetTrainerWMHLocCEDC", "nnUNetTrainerWMHLoc")


def test_bench_trainers_quick_prints_both_tables(tmp_path):
    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_trainers.py"), "--quick"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout
    workers, whole = out.split("## Whole iteration")
    assert re.search(r"device augmentation s per iteration on (cpu|cuda)", workers)
    for table, ncols in ((workers, 5), (whole, 4)):
        for task in ("lesion", "region"):
            for dim in ("2D", "3D"):
                for tr in TRAINERS:
                    row = re.search(rf"^{task}\s+{dim} .*\s{tr}\s+(.*)$", table, flags=re.M)
                    assert row, (task, dim, tr, table)
                    nums = [float(v.rstrip("x")) for v in row.group(1).split()]
                    assert len(nums) == ncols and all(v >= 0 for v in nums), row.group(0)
                    if table is workers:  # ratio of the means inside its bootstrap interval
                        assert nums[2] <= nums[1] <= nums[3], row.group(0)
                    if tr == "nnUNetTrainer":
                        assert nums[1:4] == [1.0] * 3 if table is workers else nums[3] == 1.0
                    else:
                        assert nums[0] > 0
    # our trainers augment on the device: they report a device time, nnU-Net's default none
    dev = [float(m) for m in re.findall(r"nnUNetTrainerWMHLoc\s+\S+\s+\S+x\s+\S+\s+\S+\s+(\S+)$", workers,
                                        flags=re.M)]
    assert dev and all(d > 0 for d in dev)
