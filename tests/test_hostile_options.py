"""Issue #16, option classes: out-of-range options (--seed -1, --k-range 2 2000000000, loads of 1e308),
wmhloc_splits --folds < 2, fuse weights that overflow and NaN/negative probabilities under --no-check, the
same folder as --pred and --ref, wmhloc_predict's device, and a help text for every option."""
from __future__ import annotations

import argparse
import importlib

import numpy as np
import pytest
import SimpleITK as sitk

from hostile_common import MODULES, call, leftovers, seg_folders
from test_hostile_outputs import fake_model
from test_hostile_tables import tiny_cohort
from test_postprocessing_cluster import _loads_csv


def refused_by_argparse(command: str, argv, capsys, expect: str) -> None:
    """argparse's own refusal: usage line + one `error:` line naming the option, exit 2, no traceback."""
    mod = importlib.import_module(MODULES[command])
    with pytest.raises(SystemExit) as e:
        mod.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    assert expect in err.strip().splitlines()[-1], err


class TestOutOfRangeOptions:
    """--seed -1 crashed, --k-range 2 2000000000 tried to allocate two billion Ks, loads of 1e308 gave NaNs."""

    def test_seeds_and_counts(self, tmp_path, capsys):
        src = tmp_path / "loads.csv"
        _loads_csv(src, n_per_group=(4, 3, 3), n_zero=0)
        refused_by_argparse("wmhloc_cluster", [src, "-o", tmp_path / "o", "--seed", -1], capsys,
                            "argument --seed: -1 is out of range")
        refused_by_argparse("wmhloc_cluster", [src, "-o", tmp_path / "o", "--seed", 2**40], capsys, "--seed")
        refused_by_argparse("wmhloc_cluster", [src, "-o", tmp_path / "o", "--n-init", 0], capsys, "--n-init")
        refused_by_argparse("wmhloc_synth", ["-o", tmp_path / "s", "--seed", -1], capsys, "--seed")
        refused_by_argparse("wmhloc_synth", ["-o", tmp_path / "s", "--per-site", 0], capsys, "--per-site")
        refused_by_argparse("wmhloc_predict", [src, "-o", tmp_path / "p", "--lesion-model", "1", "--region-model",
                                               "2", "--threads", 0], capsys, "--threads")
        refused_by_argparse("wmhloc_region_labels", ["--input", src, "--atlas-dir", tmp_path, "-o", tmp_path / "r",
                                                     "--workers", -2], capsys, "--workers")
        assert not any((tmp_path / n).exists() for n in ("o", "s", "p", "r"))

    def test_huge_k_range_and_loads(self, tmp_path, capfd):
        src = tmp_path / "loads.csv"
        _loads_csv(src, n_per_group=(4, 3, 3), n_zero=0)
        code, err = call("wmhloc_cluster", [src, "-o", tmp_path / "o", "--k-range", 2, 2_000_000_000,
                                            "--n-init", 2], capfd)
        assert code == 0 and "... 2000000000 skipped" in err
        assert (tmp_path / "o" / "silhouette.csv").read_text().count("\n") == 1 + 8  # K = 2..9 (10 subjects)
        code, err = call("wmhloc_cluster", [src, "-o", tmp_path / "o2", "--k-range", 0, 5], capfd)
        assert code == 1 and "--k-range 0 5: K must be at least 2" in err
        text = src.read_text().splitlines()
        head, row = text[0].split(","), text[2].split(",")
        row[head.index("r01_L_parietal") if "r01_L_parietal" in head else 2] = "1e308"
        (tmp_path / "big.csv").write_text("\n".join([text[0], text[1], ",".join(row), *text[3:]]) + "\n")
        code, err = call("wmhloc_cluster", [tmp_path / "big.csv", "-o", tmp_path / "o3"], capfd)
        assert code == 1 and "big.csv: line 3" in err and "not a plausible lesion volume" in err
        assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()


class TestSplitsFolds:
    """wmhloc_splits --folds 0|1|-1 wrote empty or train-less splits with exit 0."""

    @pytest.mark.parametrize("folds", [0, 1, -1])
    def test_fewer_than_two_folds_refused(self, tmp_path, capfd, folds):
        labels = tmp_path / "raw" / "Dataset777_X" / "labelsTr"
        labels.mkdir(parents=True)
        for s in ("a", "b", "c"):
            for m in ("flair", "t1"):
                (labels / f"{s}_{m}.nii.gz").write_bytes(b"")
        argv = ["-d", 777, "--raw", tmp_path / "raw", "--preprocessed", tmp_path / "pre", "--folds", folds]
        code, err = call("wmhloc_splits", argv, capfd)
        assert code == 1 and f"--folds {folds}: cross-validation needs at least 2 folds" in err
        assert not (tmp_path / "pre").exists()
        assert call("wmhloc_splits", argv[:-1] + [2], capfd)[0] == 0


@pytest.fixture(scope="module")
def preds(tmp_path_factory):
    pytest.importorskip("torch")
    from test_postprocessing_fuse import _image, nnunet_predict_like

    root = tmp_path_factory.mktemp("hostile_fuse")
    rng = np.random.default_rng(1)
    _image(root / "img.nii.gz", rng)
    for m in ("flair", "t1"):
        nnunet_predict_like(root / "img.nii.gz", root / "pred", f"s01_{m}", 2, rng)
    return root / "pred"


class TestFuseNumbers:
    """--weights 1e308 1e308 overflowed to zero weights (all background, exit 0); with --no-check NaN or
    negative probabilities passed."""

    def test_huge_weights_equal_unit_weights(self, preds, tmp_path, capfd):
        assert call("wmhloc_fuse", [preds, "-o", tmp_path / "a"], capfd)[0] == 0
        assert call("wmhloc_fuse", [preds, "-o", tmp_path / "b", "--weights", 1e308, 1e308], capfd)[0] == 0
        a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / d / "s01.nii.gz"))) for d in ("a", "b"))
        assert a.any() and np.array_equal(a, b)

    @pytest.mark.parametrize("bad", [np.nan, -0.25, np.inf])
    def test_bad_probabilities_refused_even_without_check(self, preds, tmp_path, capfd, bad):
        import shutil

        work = tmp_path / "pred"
        shutil.copytree(preds, work)
        npz = work / "s01_t1.npz"
        p = np.load(npz)["probabilities"].copy()
        p[1, 2, 5, 5] = bad
        np.savez_compressed(npz, probabilities=p)
        code, err = call("wmhloc_fuse", [work, "-o", tmp_path / "f", "--no-check"], capfd)
        assert code == 1 and f"{npz}: channel 1 holds NaN, infinite or negative probabilities" in err
        assert not (tmp_path / "f").exists() and not leftovers(tmp_path)


class TestSamePredRef:
    """The same folder as --pred and --ref gave Dice 1.0 without a word."""

    def test_refused(self, tmp_path, capfd):
        les, _ = seg_folders(tmp_path)
        code, err = call("wmhloc_evaluate", ["--pred", les, "--ref", tmp_path / "lesions" / ".." / "lesions",
                                             "--task", "lesion", "-o", tmp_path / "e"], capfd)
        assert code == 1 and "--pred and --ref are the same folder" in err and not (tmp_path / "e").exists()


class _Parsed(BaseException):
    def __init__(self, parser):
        self.parser = parser


class TestDeviceAndHelp:
    """wmhloc_predict defaulted to cuda and failed only at its second stage without a GPU; options lacked help."""

    def test_every_option_of_every_command_has_help(self, monkeypatch):
        def grab(self, args=None, namespace=None):
            raise _Parsed(self)

        monkeypatch.setattr(argparse.ArgumentParser, "parse_args", grab)
        missing = []
        for command, module in MODULES.items():
            with pytest.raises(_Parsed) as e:
                importlib.import_module(module).main([])
            for action in e.value.parser._actions:
                if not action.help or action.help == argparse.SUPPRESS:
                    missing.append(f"{command} {'/'.join(action.option_strings) or action.dest}")
        assert not missing, missing

    def test_predict_device(self, tmp_path, capfd):
        torch = pytest.importorskip("torch")
        from nnunet_wmhloc import cli

        assert cli.default_device() == ("cuda" if torch.cuda.is_available() else
                                        "mps" if torch.backends.mps.is_available() else "cpu")
        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
        csv = tiny_cohort(tmp_path / "c", n=1)
        models = fake_model(tmp_path / "m" / "l", 2), fake_model(tmp_path / "m" / "r", 37)
        code, err = call("wmhloc_predict", [csv, "-o", tmp_path / "p", "--lesion-model", models[0],
                                            "--region-model", models[1], "--device", "cuda"], capfd)
        assert code == 1 and "--device cuda: not available on this machine" in err
        assert not (tmp_path / "p").exists()  # checked before any stage (and before the output exists)
