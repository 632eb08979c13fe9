"""Issue #21, the fresh hostile-input pass (benchmarks/hostile_pass.py): one test per class of failure it
found, on real files through the real commands, and the pass's --quick mode."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import hostile_files as F  # noqa: E402
from hostile_common import call, leftovers, seg_folders, snapshot  # noqa: E402

from nnunet_wmhloc.io import WMHLocError, read_csv  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("variant, says", [("nan_affine", "orientation matrix"), ("singular_affine", "singular"),
                                           ("inf_affine", "orientation"), ("zero_dim", "dimensions"),
                                           ("negative_dim", "dimensions"), ("bad_magic", "not a NIfTI")])
def test_header_lies_are_one_line_without_itk_chatter(tmp_path, capfd, variant, says):
    """ITK read a NaN sform (printing vnl_svd warnings), a zero/negative dimension (niftilib's '** ERROR')
    and a file without NIfTI magic (as Analyze, orientation lost, exit 0)."""
    les, reg = seg_folders(tmp_path)
    target = les / "s01.nii.gz"
    target.unlink()
    F.variants()[variant](target, F.lesion_arr())
    before = snapshot(tmp_path)
    code, err = call("wmhloc_localize", ["--lesions", les, "--regions", reg, "-o", tmp_path / "out"], capfd)
    assert code == 1 and str(target) in err and says in err
    assert not (tmp_path / "out").exists() and snapshot(tmp_path) == before


def test_atlas_with_fractional_labels_is_refused(tmp_path, capfd):
    """wmhloc_cluster --atlas rounded a float atlas (labels 0.5, 9) silently."""
    les, reg = seg_folders(tmp_path, subjects=("s01", "s02", "s03", "s04"))
    for i in (2, 4):  # distinct profiles: some with a right-hemisphere lesion too
        a = F.lesion_arr()
        a[4:6, 8:11, 8:11] = 1
        F.write_sitk(les / f"s0{i}.nii.gz", a)
    assert call("wmhloc_localize", ["--lesions", les, "--regions", reg, "-o", tmp_path / "loc"], capfd)[0] == 0
    F.variants()["slope_half"](tmp_path / "atlas.nii.gz", F.region_arr())
    code, err = call("wmhloc_cluster", [tmp_path / "loc/regional_loads.csv", "-o", tmp_path / "out", "--k", "2",
                                        "--atlas", tmp_path / "atlas.nii.gz"], capfd)
    assert code == 1 and "atlas.nii.gz" in err and "non-integer" in err and not (tmp_path / "out").exists()


def test_csv_duplicate_columns_and_extra_cells_are_refused(tmp_path):
    """csv.DictReader kept the last of two 'flair' columns, and dropped cells beyond the header."""
    p = tmp_path / "c.csv"
    p.write_text("subject,flair,flair\ns01,a.nii.gz,b.nii.gz\n")
    with pytest.raises(WMHLocError, match="'flair' appear more than once"):
        read_csv(p)
    p.write_text("subject,flair\ns01,a.nii.gz,b.nii.gz\n")
    with pytest.raises(WMHLocError, match="line 2: 3 cells, the header has 2"):
        read_csv(p)
    p.write_text("subject,flair,t1\ns01,a.nii.gz\n")  # fewer cells: the rest is empty, as before
    assert read_csv(p) == [{"subject": "s01", "flair": "a.nii.gz", "t1": None}]


@pytest.mark.parametrize("sid", ["s" * 300, "9" * 5000])
def test_overlong_subject_id_is_one_line(tmp_path, capfd, sid):
    """A 300-character id reached ITK's writer (file name too long: a traceback); 5000 digits passed int()'s
    digit limit."""
    flair = F.write_sitk(tmp_path / "f.nii.gz", F.flair_arr())
    (tmp_path / "c.csv").write_text(f"subject,flair\n{sid},{flair}\n")
    code, err = call("wmhloc_convert_cohort", [tmp_path / "c.csv", "--mode", "predict", "-o", tmp_path / "out"], capfd)
    assert code == 1 and "characters long" in err and not (tmp_path / "out").exists()


def test_symlink_loop_in_a_cohort_folder_is_one_line(tmp_path, capfd):
    """Path.resolve() raised RuntimeError (a traceback) on a link loop among the inputs."""
    co = tmp_path / "co"
    F.write_sitk(co / "s02_flair.nii.gz", F.flair_arr())
    (co / "s01_flair.nii.gz").symlink_to(co / "s01_flair.nii.gz")
    code, err = call("wmhloc_convert_cohort", [co, "--mode", "predict", "-o", tmp_path / "out"], capfd)
    assert code == 1 and "s01_flair.nii.gz" in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("command, argv", [("wmhloc_cluster", ["x.csv", "-o", "o", "--n-init", "1000000000"]),
                                           ("wmhloc_predict", ["c.csv", "-o", "o", "--k-max", "1"]),
                                           ("wmhloc_run", ["-o", "o", "--k-max", "100000"])])
def test_unbounded_options_are_refused_by_argparse(tmp_path, command, argv):
    """--n-init 1e9 ran k-means for hours; --k-max 1 leaves nothing to choose; --k-max 1e5 is unbounded."""
    from hostile_common import MODULES
    import importlib

    with pytest.raises(SystemExit) as e:
        importlib.import_module(MODULES[command]).main(argv)
    assert e.value.code == 2


def test_refused_conversion_leaves_no_empty_output_root(tmp_path, capfd):
    """The raw root (-o) was created before a FLAIR of the release was found 4D, and left behind empty."""
    from nnunet_wmhloc.synth import make_cohort

    make_cohort(tmp_path / "rel", seed=0, per_site=1, test_per_site=1, show_progress=False)
    flair = tmp_path / "rel/training/Utrecht/0/pre/FLAIR.nii.gz"
    flair.unlink()
    F.variants()["four_d"](flair, F.flair_arr())
    code, err = call("wmhloc_convert_wmh2017", [tmp_path / "rel", "-o", tmp_path / "raw" / "inner",
                                                "--preprocessed", tmp_path / "pre"], capfd)
    assert code == 1 and "4D" in err
    assert not (tmp_path / "raw").exists() and not (tmp_path / "pre").exists() and not leftovers(tmp_path)


def test_preprocessed_inside_the_release_is_refused(tmp_path, capfd):
    """--preprocessed RELEASE --overwrite wrote splits_final.json folders into the user's release."""
    from nnunet_wmhloc.synth import make_cohort

    make_cohort(tmp_path / "rel", seed=0, per_site=1, test_per_site=1, show_progress=False)
    before = snapshot(tmp_path / "rel")
    code, err = call("wmhloc_convert_wmh2017", [tmp_path / "rel", "-o", tmp_path / "raw", "--preprocessed",
                                                tmp_path / "rel", "--overwrite"], capfd)
    assert code == 1 and "--preprocessed" in err and "rel" in err
    assert snapshot(tmp_path / "rel") == before and not (tmp_path / "raw").exists()


def test_predict_refuses_a_cohort_that_does_not_load_before_the_run_folder(tmp_path, capfd):
    """wmhloc_predict unpacked the models and made the run folder before the cohort's bad id was refused."""
    from test_security_models import write_archive

    flair = F.write_sitk(tmp_path / "f.nii.gz", F.flair_arr())
    (tmp_path / "c.csv").write_text(f"subject,flair\n../x,{flair}\n")
    code, err = call("wmhloc_predict", [tmp_path / "c.csv", "--models", write_archive(tmp_path / "m.zip"),
                                        "-o", tmp_path / "out", "--device", "cpu"], capfd)
    assert code == 1 and "c.csv: line 2" in err and not (tmp_path / "out").exists()


def test_pv_distance_must_be_finite(tmp_path):
    from types import SimpleNamespace

    from nnunet_wmhloc.pipeline import model_free

    with pytest.raises(WMHLocError, match="pv-distance inf"):
        model_free.check(SimpleNamespace(lesion_threshold=0.5, pv_distance=float("inf"), lesions="model"), None)


def test_splits_says_when_it_makes_fewer_folds(tmp_path, capfd):
    """wmhloc_splits --folds 1000 on 3 subjects wrote 3 folds without a word."""
    ds = tmp_path / "raw" / "Dataset601_WMHLesion"
    for s in ("s01", "s02", "s03"):
        F.write_sitk(ds / "labelsTr" / f"{s}_flair.nii.gz", F.lesion_arr())
    code, err = call("wmhloc_splits", ["-d", 601, "--raw", tmp_path / "raw", "--preprocessed", tmp_path / "pre",
                                       "--folds", 1000], capfd)
    assert code == 0 and "note: 1000 folds asked for" in err and "3 folds" in err


def test_hostile_pass_quick():
    """The pass itself, a few cases of each kind: every case holds."""
    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / "hostile_pass.py"), "--quick"],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert "0 failed" in p.stdout.splitlines()[-1]
    np.testing.assert_(int(p.stdout.splitlines()[-1].split()[1]) >= 8)
