"""End to end: nnU-Net prediction folders (lesion and region models, FLAIR + T1) -> wmhloc_fuse ->
wmhloc_localize -> wmhloc_cluster, each CLI run as a subprocess like a user would; and the pipeline's stages,
which call the same functions in-process, give the same files."""
from __future__ import annotations

import csv
import shutil
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_wmhloc.postprocessing.loads import mm3_column

pytest.importorskip("torch")
from test_postprocessing_fuse import _image, nnunet_predict_like  # noqa: E402

SUBJECTS = [f"wmh{i:03d}" for i in range(5)]


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", f"nnunet_wmhloc.postprocessing.{module}", *args],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="module")
def cli_chain(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("chain")
    rng = np.random.default_rng(3)
    for s in SUBJECTS:
        img = tmp_path / f"{s}_0000.nii.gz"
        _image(img, rng)
        for mod in ("flair", "t1"):
            nnunet_predict_like(img, tmp_path / "lesion_pred", f"{s}_{mod}", 2, rng)
            nnunet_predict_like(img, tmp_path / "region_pred", f"{s}_{mod}", 37, rng)
    _cli("fuse", str(tmp_path / "lesion_pred"), "-o", str(tmp_path / "lesions"), "--probability-label", "1")
    _cli("fuse", str(tmp_path / "region_pred"), "-o", str(tmp_path / "regions"))
    _cli("localize", "--lesions", str(tmp_path / "lesions"), "--regions", str(tmp_path / "regions"),
         "-o", str(tmp_path / "loc"))
    _cli("cluster", str(tmp_path / "loc" / "regional_loads.csv"), "-o", str(tmp_path / "cl"), "--k-range", "2", "3")
    return tmp_path


def test_fuse_localize_cluster(cli_chain):
    tmp_path = cli_chain
    with open(tmp_path / "loc" / "regional_loads.csv", newline="") as f:
        rows = {r["subject"]: r for r in csv.DictReader(f)}
    assert sorted(rows) == SUBJECTS
    for s in SUBJECTS:  # loads agree with the fused maps read back independently
        les_img = sitk.ReadImage(str(tmp_path / "lesions" / f"{s}.nii.gz"))
        les = sitk.GetArrayFromImage(les_img) == 1
        reg = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "regions" / f"{s}.nii.gz")))
        vv = np.prod(les_img.GetSpacing())
        assert les.any()
        for r in (1, 12, 29, 36):
            assert float(rows[s][mm3_column(r)]) == pytest.approx(np.count_nonzero(les & (reg == r)) * vv,
                                                                  rel=1e-9, abs=1e-9)
    with open(tmp_path / "cl" / "assignments.csv", newline="") as f:
        groups = {a["subject"]: int(a["group"]) for a in csv.DictReader(f)}
    assert sorted(groups) == SUBJECTS and set(groups.values()) <= {1, 2, 3}


def _same_images(a, b) -> None:
    ia, ib = sitk.ReadImage(str(a)), sitk.ReadImage(str(b))
    assert ia.GetPixelID() == ib.GetPixelID() and ia.GetSize() == ib.GetSize(), a
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ia), sitk.GetArrayFromImage(ib))
    assert (ia.GetSpacing(), ia.GetOrigin(), ia.GetDirection()) == (ib.GetSpacing(), ib.GetOrigin(), ib.GetDirection())


def test_stages_call_the_functions_and_pass_results_on(cli_chain, tmp_path):
    """fuse_stage -> localize_stage -> cluster_stage in one process: the same maps and tables as the commands;
    the stages hand their results on in ctx.made (cluster reads no table from disk), and a resumed run that
    reads them back from disk clusters the same."""
    from nnunet_wmhloc.pipeline.common import cluster_stage, fuse_stage, localize_stage
    from nnunet_wmhloc.pipeline.stages import StageContext
    from nnunet_wmhloc.postprocessing.cluster import ClusterResult
    from nnunet_wmhloc.postprocessing.loads import LocalizeResult

    run = tmp_path / "run"
    for task in ("lesion", "region"):
        shutil.copytree(cli_chain / f"{task}_pred", run / "predictions" / task)
    (run / "logs").mkdir()
    made: dict = {}

    def ctx(name, shared=made):
        return StageContext(name, run / "logs" / f"{name}.log", {}, run, quiet=True, made=shared)

    assert fuse_stage(ctx("fuse")) == {"subjects": {"lesion": 5, "region": 5}}
    assert made["fuse"]["lesion"].subjects == SUBJECTS
    for s in SUBJECTS:
        _same_images(run / "segmentations" / "lesion" / f"{s}.nii.gz", cli_chain / "lesions" / f"{s}.nii.gz")
        _same_images(run / "segmentations" / "lesion" / "probabilities" / f"{s}.nii.gz",
                     cli_chain / "lesions" / "probabilities" / f"{s}.nii.gz")
        _same_images(run / "segmentations" / "region" / f"{s}.nii.gz", cli_chain / "regions" / f"{s}.nii.gz")
    assert localize_stage(ctx("localize"), None)["subjects"] == 5
    assert isinstance(made["localize"], LocalizeResult)
    loc = run / "localize"
    cli_rows = list(csv.DictReader(open(cli_chain / "loc" / "regional_loads.csv", newline="")))
    strip = ("lesion_file", "region_file")  # paths differ: different run folders
    assert [{k: v for k, v in r.items() if k not in strip} for r in made["localize"].loads] == \
        [{k: v for k, v in r.items() if k not in strip} for r in cli_rows]
    assert (loc / "lesions.csv").read_bytes() == (cli_chain / "loc" / "lesions.csv").read_bytes()
    for s in SUBJECTS:
        _same_images(loc / "regional_maps" / f"{s}.nii.gz", cli_chain / "loc" / "regional_maps" / f"{s}.nii.gz")

    (loc / "regional_loads.csv").rename(loc / "moved.csv")  # cluster must use what localize handed on
    summary = cluster_stage(ctx("cluster"), k_max=3)
    (loc / "moved.csv").rename(loc / "regional_loads.csv")
    assert summary["clustered"] == 5 and isinstance(made["cluster"], ClusterResult)
    for name in ("assignments.csv", "groups.csv", "group_profiles.csv", "silhouette.csv"):
        assert (run / "cluster" / name).read_bytes() == (cli_chain / "cl" / name).read_bytes(), name

    resumed: dict = {}
    assert cluster_stage(ctx("cluster", resumed), k_max=3) == summary  # loads read back from localize/
    assert resumed["localize"].loads == made["localize"].loads
    assert resumed["cluster"].assignments == made["cluster"].assignments
