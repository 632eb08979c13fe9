"""Synthesis, conversion, splits, atlas, region labels, export, run and env cases of the hostile pass."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

import hostile_files as F
from hostile_cases import extra_args, SHARED, Case, copy

C = Case


def _synth(name, extra, expect="error", setup_more=None, **kw):
    def setup(w, base):
        if setup_more:
            setup_more(w)
        return ["-o", w / "out", *extra]
    return C(f"opt:{name}", "wmhloc_synth", setup, expect, **kw)


def synth_cases() -> list[Case]:
    return [
        _synth("seed_neg", ["--seed", "-1"]), _synth("seed_huge", ["--seed", str(2 ** 70)]),
        _synth("per_site_zero", ["--per-site", "0"]), _synth("per_site_text", ["--per-site", "two"]),
        _synth("per_site_float", ["--per-site", "1.5"]), _synth("test_per_site_neg", ["--test-per-site", "-3"]),
        _synth("out_is_user_folder", ["--overwrite"], setup_more=lambda w: (w / "out").mkdir() or
               (w / "out" / "thesis.docx").write_text("precious")),
        _synth("out_is_file", ["--overwrite"], setup_more=lambda w: (w / "out").write_text("precious")),
        C("opt:out_empty_string", "wmhloc_synth", lambda w, b: ["-o", ""]),
        C("opt:out_name_too_long", "wmhloc_synth", lambda w, b: ["-o", w / ("x" * 300)]),
    ]


# ---------------------------------------------------------------------------------- wmh2017 release
def _release(name, edit, expect="error", extra=(), out="out"):
    def setup(w, base):
        copy(base, w, "rel")
        more = extra_args(edit(w / "rel")) if edit else []
        return [w / "rel", "-o", w / "out", "--preprocessed", w / "pre", *extra, *more]
    return C(f"release:{name}", "wmhloc_convert_wmh2017", setup, expect, out=out)


def wmh2017_cases() -> list[Case]:
    def dup_id(r):
        shutil.copytree(r / "training/Utrecht/0", r / "training/GE3T/0")

    def flair_4d(r):
        p = r / "training/Utrecht/0/pre/FLAIR.nii.gz"
        p.unlink()
        F.variants()["four_d"](p, F.flair_arr())

    def wmh_label5(r):
        p = r / "training/Utrecht/0/wmh.nii.gz"
        import SimpleITK as sitk
        img = sitk.ReadImage(str(p))
        arr = sitk.GetArrayFromImage(img)
        arr[arr == 1] = 5
        out = sitk.GetImageFromArray(arr)
        out.CopyInformation(img)
        sitk.WriteImage(out, str(p), True)

    def region_wrong_grid(r):
        p = r / "region_labels/Train/WMH_0.nii.gz"
        p.unlink()
        F.write_sitk(p, F.region_arr())

    return [
        _release("empty", lambda r: [shutil.rmtree(r / d) for d in ("training", "test", "region_labels")] and None),
        C("release:is_file", "wmhloc_convert_wmh2017", lambda w, b: copy(b, w, "cohort.csv") or
          [w / "cohort.csv", "-o", w / "out"]),
        _release("no_flair", lambda r: (r / "training/Utrecht/0/pre/FLAIR.nii.gz").unlink()),
        _release("flair_4d", flair_4d),
        _release("wmh_label_5", wmh_label5),
        _release("duplicate_id_across_sites", dup_id),
        _release("lesion_id_zero", None, extra=("--lesion-id", "0")),
        _release("lesion_id_huge", None, extra=("--lesion-id", "1000")),
        _release("ids_equal", None, extra=("--lesion-id", "605", "--region-id", "605",
                                           "--region-labels", "REG")),
        _release("name_slash", None, extra=("--lesion-name", "a/b")),
        _release("name_traversal", None, extra=("--lesion-name", "../../x")),
        _release("name_empty", None, extra=("--lesion-name", "")),
        _release("region_labels_empty", lambda r: (r.parent / "emptyreg").mkdir() and None,
                 "any", extra=("--region-labels", "EMPTYREG")),
        _release("region_wrong_grid", region_wrong_grid, extra=("--region-labels", "REG")),
        _release("out_inside_release", None, extra=("-o", "REL/out"), out="rel/out"),
        _release("preprocessed_is_release", None, extra=("--preprocessed", "REL", "--overwrite")),
    ]


def _fix_placeholders(cases: list[Case]) -> list[Case]:
    """REG/REL/EMPTYREG in argv: folders of the case's copied release."""
    for c in cases:
        inner = c.setup

        def setup(w, base, inner=inner):
            argv = inner(w, base)
            m = {"REG": str(w / "rel" / "region_labels"), "REL": str(w / "rel"), "EMPTYREG": str(w / "emptyreg"),
                 "REL/out": str(w / "rel" / "out")}
            return [m.get(str(a), a) for a in argv]
        c.setup = setup
    return cases


# ------------------------------------------------------------------------------------------ splits
def _splits(name, edit, extra=(), expect="error"):
    def setup(w, base):
        raw = w / "nnunet" / "raw"
        ds = raw / "Dataset601_WMHLesion"
        (ds / "labelsTr").mkdir(parents=True)
        (ds / "imagesTr").mkdir(parents=True)
        for s in ("s01", "s02", "s03"):
            shutil.copy2(base / "seg/lesions" / f"{s}.nii.gz", ds / "labelsTr" / f"{s}_flair.nii.gz")
            shutil.copy2(base / "seg/flair" / f"{s}.nii.gz", ds / "imagesTr" / f"{s}_flair_0000.nii.gz")
        (ds / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}, "labels": {"background": 0, "WMH": 1},
                                                     "numTraining": 3, "file_ending": ".nii.gz"}))
        more = extra_args(edit(w, ds)) if edit else []
        return ["-d", "601", "--raw", raw, "--preprocessed", w / "pre", "--folds", "2", *extra, *more]
    return C(f"splits:{name}", "wmhloc_splits", setup, expect, out="pre")


def splits_cases() -> list[Case]:
    return [
        _splits("id_zero", None, ("-d", "0")), _splits("id_absent", None, ("-d", "999")),
        _splits("id_text", None, ("-d", "abc")),
        # wmhloc_splits reads only the case files (nnU-Net's own planning checks dataset.json): these still split
        _splits("dataset_json_garbage", lambda w, ds: (ds / "dataset.json").write_bytes(os.urandom(100)) and None,
                expect="ok"),
        _splits("dataset_json_list", lambda w, ds: (ds / "dataset.json").write_text("[1,2]") and None, expect="ok"),
        _splits("no_labels", lambda w, ds: shutil.rmtree(ds / "labelsTr")),
        _splits("folds_zero", None, ("--folds", "0")), _splits("folds_huge", None, ("--folds", "1000"), "any"),
        _splits("two_datasets_same_id", lambda w, ds: shutil.copytree(ds, ds.parent / "Dataset601_Other")),
        _splits("raw_is_file", lambda w, ds: [(w / "rawfile").write_text("x"), "--raw", w / "rawfile"][1:]),
        _splits("ok", None, (), "ok"),
    ]


# ------------------------------------------------------------------------------------------- atlas
EVE = ("JHU_MNI_SS_T1_brain.nii.gz", "JHU_MNI_SS_WMPM_Type-II.nii.gz", "JHU_MNI_SS_T1_FSL_Tissue_Classes_seg.nii.gz")


def _eve(name, edit, out="out"):
    def setup(w, base):
        (w / "eve").mkdir()
        for f in EVE:
            os.symlink(SHARED / "eve_atlas" / f, w / "eve" / f)
        more = extra_args(edit(w / "eve")) if edit else []
        return ["--eve-dir", w / "eve", "-o", w / "out", *more]
    return C(f"eve:{name}", "wmhloc_build_atlas", setup, "error", out=out, timeout=300)


def atlas_cases() -> list[Case]:
    def replace(f, arr):
        def edit(d):
            (d / f).unlink()
            F.write_sitk(d / f, arr)
        return edit

    def trunc(f):
        def edit(d):
            data = (SHARED / "eve_atlas" / f).read_bytes()
            (d / f).unlink()
            (d / f).write_bytes(data[: len(data) // 3])
        return edit

    return [
        _eve("empty", lambda d: [p.unlink() for p in d.iterdir()] and None),
        _eve("missing_wmpm", lambda d: (d / EVE[1]).unlink()),
        _eve("wmpm_other_grid", replace(EVE[1], F.region_arr())),
        _eve("t1_truncated", trunc(EVE[0])),
        _eve("wmpm_truncated", trunc(EVE[1])),
        _eve("eve_is_file", lambda d: ["--eve-dir", d / EVE[0]]),
        _eve("out_is_eve", lambda d: ["-o", d, "--overwrite"]),
        _eve("out_inside_eve", lambda d: ["-o", d / "atlas"], out="eve/atlas"),
    ]


# ------------------------------------------------------------------------------------ region labels
def _rl(name, argv_fn, expect="error", out="out"):
    return C(f"rl:{name}", "wmhloc_region_labels", lambda w, b: argv_fn(w, b), expect, out=out, timeout=300)


def region_labels_cases() -> list[Case]:
    atl = SHARED / "eve_atlas"

    def t1_variant(v):
        def argv(w, b):
            F.variants()[v](w / "t1.nii.gz", F.flair_arr())
            return ["--t1", w / "t1.nii.gz", "--atlas-dir", atl, "-o", w / "out.nii.gz"]
        return argv

    def csv_input(text):
        def argv(w, b):
            (w / "in.csv").write_text(text.replace("T1", str(b / "seg/flair/s01.nii.gz")))
            return ["--input", w / "in.csv", "--atlas-dir", atl, "-o", w / "out"]
        return argv

    cases = [_rl(f"t1:{v}", t1_variant(v), out="out.nii.gz") for v in ("four_d", "truncated", "huge_claim", "float_nan",
                                                                        "directory", "complex64")]
    cases += [
        _rl("neither_input", lambda w, b: ["--atlas-dir", atl, "-o", w / "out"]),
        _rl("both_inputs", lambda w, b: ["--t1", b / "seg/flair/s01.nii.gz", "--input", b / "cohort.csv",
                                         "--atlas-dir", atl, "-o", w / "out"]),
        _rl("atlas_missing", lambda w, b: ["--t1", b / "seg/flair/s01.nii.gz", "--atlas-dir", w / "nope",
                                           "-o", w / "out.nii.gz"], out="out.nii.gz"),
        _rl("atlas_empty", lambda w, b: (w / "a").mkdir() or ["--t1", b / "seg/flair/s01.nii.gz", "--atlas-dir",
                                                              w / "a", "-o", w / "out.nii.gz"], out="out.nii.gz"),
        _rl("workers_zero", lambda w, b: ["--input", b / "cohort.csv", "--workers", "0", "--atlas-dir", atl,
                                          "-o", w / "out"]),
        _rl("flair_other_grid", lambda w, b: ["--t1", b / "seg/flair/s01.nii.gz", "--flair",
                                              b / "rel/training/Utrecht/0/pre/FLAIR.nii.gz", "--atlas-dir", atl,
                                              "-o", w / "out.nii.gz"], out="out.nii.gz"),
        _rl("wm_mask_other_grid", lambda w, b: ["--t1", b / "seg/flair/s01.nii.gz", "--wm-mask",
                                                b / "rel/training/Utrecht/0/wmh.nii.gz", "--atlas-dir", atl,
                                                "-o", w / "out.nii.gz"], out="out.nii.gz"),
        _rl("scheduler_garbage", lambda w, b: ["--input", b / "cohort.csv", "--scheduler", "not an address",
                                               "--atlas-dir", atl, "-o", w / "out"]),
        _rl("input_csv_no_t1", csv_input("subject,flair\ns01,T1\n")),
        _rl("input_csv_dup", csv_input("subject,t1\ns01,T1\ns01,T1\n")),
        _rl("input_csv_traversal", csv_input("subject,t1\n../../x,T1\n")),
        _rl("out_is_t1", lambda w, b: copy(b, w, "seg/flair") or ["--t1", w / "flair/s01.nii.gz", "--atlas-dir", atl,
                                                                  "-o", w / "flair/s01.nii.gz", "--overwrite"],
            out="flair/s01.nii.gz"),
    ]
    return cases


# ------------------------------------------------------------------------------------------- export
def export_cases() -> list[Case]:
    def run_dir(w, b):
        (w / "run").mkdir()
        return ["run_placeholder"]

    return [
        C("export:run_empty", "wmhloc_export_models", lambda w, b: (w / "run").mkdir() or [w / "run", "-o", w / "out.zip"],
          out="out.zip"),
        C("export:run_is_file", "wmhloc_export_models", lambda w, b: copy(b, w, "cohort.csv") or
          [w / "cohort.csv", "-o", w / "out.zip"], out="out.zip"),
        C("export:no_source", "wmhloc_export_models", lambda w, b: ["-o", w / "out.zip"], out="out.zip"),
        C("export:model_missing", "wmhloc_export_models", lambda w, b: ["--lesion-model", w / "nope", "--region-model",
                                                                        w / "nope2", "-o", w / "out.zip"], out="out.zip"),
        C("export:model_no_folds", "wmhloc_export_models", lambda w, b: [(w / d).mkdir() for d in ("l", "r")] and
          ["--lesion-model", w / "l", "--region-model", w / "r", "-o", w / "out.zip"], out="out.zip"),
        C("export:fusion_bad", "wmhloc_export_models", lambda w, b: (w / "run").mkdir() or
          [w / "run", "-o", w / "out.zip", "--fusion", "fused:2"], out="out.zip"),
        C("export:out_is_dir", "wmhloc_export_models", lambda w, b: (w / "run").mkdir() or (w / "o.zip").mkdir() or
          [w / "run", "-o", w / "o.zip", "--overwrite"], out="o.zip"),
        C("export:out_into_run", "wmhloc_export_models", lambda w, b: (w / "run").mkdir() or
          [w / "run", "-o", w / "run" / "m.zip"], out="run/m.zip"),
    ]


# ---------------------------------------------------------------------------------------------- run
def _run(name, extra, setup_more=None, **kw):
    def setup(w, base):
        more = extra_args(setup_more(w, base)) if setup_more else []
        return ["-o", w / "out", "--device", "cpu", "--nnunet-root", w / "nn", *extra, *more]
    return C(f"run:{name}", "wmhloc_run", setup, "error", timeout=300, may_change="nn", **kw)


def run_cases() -> list[Case]:
    return [
        _run("no_input", []), _run("cohort_missing", ["--cohort", "nope.csv"]),
        _run("release_is_file", [], lambda w, b: ["--release", b / "cohort.csv"]),
        _run("demo_and_cohort", ["--demo"], lambda w, b: ["--cohort", b / "cohort.csv"]),
        _run("epochs_zero", ["--epochs", "0"]), _run("epochs_neg", ["--epochs", "-5"]),
        _run("k_max_one", ["--k-max", "1"], lambda w, b: ["--cohort", b / "cohort.csv"]),
        _run("k_max_huge", ["--k-max", "100000"], lambda w, b: ["--cohort", b / "cohort.csv"]),
        _run("folds_bad", ["-f", "x"], lambda w, b: ["--cohort", b / "cohort.csv"]),
        _run("ids_equal", ["--lesion-id", "700", "--region-id", "700"], lambda w, b: ["--cohort", b / "cohort.csv"]),
        _run("out_is_file", [], lambda w, b: [(w / "out").write_text("precious"), "--cohort", b / "cohort.csv"][1:]),
        _run("trainer_unknown", ["--trainer", "os.system"], lambda w, b: ["--cohort", b / "cohort.csv"]),
        _run("cohort_bad_id", [], lambda w, b: [(w / "c.csv").write_text(
            f"subject,flair,lesion\n../x,{b}/seg/flair/s01.nii.gz,{b}/seg/lesions/s01.nii.gz\n"), "--cohort", w / "c.csv"][1:]),
    ]


# ---------------------------------------------------------------------------------------------- env
def _env_safe(w: Path):
    out = (w / "stdout.txt")
    return None


def env_cases() -> list[Case]:
    def shell_root(w, b):
        return ["--root", f"{w}/a; touch {w}/PWNED #"]

    def check_shell(w: Path):
        r = subprocess.run(["bash", "-c", f'eval "$({Path(os.sys.executable).parent}/wmhloc_env --root '
                            f"'{w}/a; touch {w}/PWNED #')\""], capture_output=True, text=True)
        if (w / "PWNED").exists():
            return "eval of wmhloc_env's output ran a command from --root"
        return None

    def check_dollar(w: Path):
        r = subprocess.run(["bash", "-c", f'eval "$({Path(os.sys.executable).parent}/wmhloc_env --root '
                            f"'{w}/$(touch {w}/PWNED2)')\""], capture_output=True, text=True)
        return "eval ran $(...) from --root" if (w / "PWNED2").exists() else None

    return [
        C("env:root_shell_metachars", "wmhloc_env", shell_root, "any", check_shell, out=""),
        C("env:root_dollar", "wmhloc_env", lambda w, b: ["--root", f"{w}/$(touch {w}/PWNED2)"], "any", check_dollar, out=""),
        C("env:root_empty", "wmhloc_env", lambda w, b: ["--root", ""], "any", out=""),
        C("env:root_is_file", "wmhloc_env", lambda w, b: [(w / "f").write_text("x"), "--root", w / "f"][1:], "any", out=""),
        C("env:root_newline", "wmhloc_env", lambda w, b: ["--root", f"{w}/a\nexport X=1"], "any", out=""),
    ]


def d_cases() -> list[Case]:
    return (synth_cases() + _fix_placeholders(wmh2017_cases()) + splits_cases() + atlas_cases() +
            region_labels_cases() + export_cases() + run_cases() + env_cases())


__all__ = ["d_cases", "np"]
