"""Tables, options, archives and folders of the hostile pass, per command."""
from __future__ import annotations

import gzip
import json
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np

import hostile_files as F
from hostile_cases import extra_args, Case, copy, no_cell_starts_with, read_rows, rows_have, write_rows

LOADS = "loc/regional_loads.csv"


def C(name, cmd, setup, expect="error", check=None, **kw) -> Case:
    return Case(name, cmd, setup, expect, check, **kw)


# ------------------------------------------------------------------------------------ cohort tables
def _cohort_rows(base: Path) -> list[dict]:
    return [{"subject": s, "flair": str(base / "seg/flair" / f"{s}.nii.gz"), "t1": ""} for s in ("s01", "s02")]


def _cohort(name, edit, expect="error", check=None, raw=None):
    """convert_cohort --mode predict on a cohort CSV changed by edit(rows, w, base) (or raw bytes)."""
    def setup(w, base):
        rows = _cohort_rows(base)
        data = edit(rows, w, base) if edit else None
        path = w / "cohort.csv"
        if raw is not None:
            path.write_bytes(raw(rows, w, base))
        else:
            write_rows(path, data if data is not None else rows)
        return [path, "--mode", "predict", "-o", w / "out"]
    return C(f"csv:{name}", "wmhloc_convert_cohort", setup, expect, check)


def _setcell(i, k, v):
    def edit(rows, w, base):
        rows[i][k] = v(w, base) if callable(v) else v
        return rows
    return edit


def _csv_text(rows, sep=","):
    return "\n".join([sep.join(rows[0])] + [sep.join(r.values()) for r in rows]) + "\n"


def _two_cases(w: Path):
    got = sorted(p.name for p in (w / "out").rglob("*_0000.nii.gz"))
    return None if len(got) == 2 else f"expected 2 cases, got {got}"


def cohort_cases() -> list[Case]:
    return [
        _cohort("bom", None, "ok", _two_cases, raw=lambda r, w, b: b"\xef\xbb\xbf" + _csv_text(r).encode()),
        _cohort("semicolon", None, "any", _two_cases, raw=lambda r, w, b: _csv_text(r, ";").encode()),
        _cohort("tab", None, "any", _two_cases, raw=lambda r, w, b: _csv_text(r, "\t").encode()),
        _cohort("dup_header", None, raw=lambda r, w, b: ("subject,flair,flair\n" + "\n".join(
            f"{x['subject']},{x['flair']},{x['flair']}" for x in r) + "\n").encode()),
        _cohort("dup_subject", _setcell(1, "subject", "s01")),
        _cohort("dup_subject_by_rule", _setcell(1, "subject", "S01"), "any", _two_cases),
        _cohort("empty_file", None, raw=lambda r, w, b: b""),
        _cohort("header_only", None, raw=lambda r, w, b: b"subject,flair,t1\n"),
        _cohort("huge_cell", _setcell(0, "subject", "x" * 5_000_000)),
        _cohort("latin1_subject", None, "any", raw=lambda r, w, b: _csv_text(r).replace("s01", "s\xe901").encode("latin-1")),
        _cohort("formula_subject", _setcell(0, "subject", "=HYPERLINK(\"http://x\")")),
        _cohort("traversal_subject", _setcell(0, "subject", "../../evil")),
        _cohort("slash_subject", _setcell(0, "subject", "a/b")),
        _cohort("dot_subject", _setcell(0, "subject", "..")),
        _cohort("space_subject", _setcell(0, "subject", "   ")),
        _cohort("long_subject", _setcell(0, "subject", "s" * 300)),
        _cohort("nul_byte", None, raw=lambda r, w, b: _csv_text(r).replace("s01", "s0\x001").encode()),
        _cohort("relative_flair", _setcell(0, "flair", lambda w, b: os.path.relpath(b / "seg/flair/s01.nii.gz", w)),
                "ok", _two_cases),
        _cohort("flair_is_dir", _setcell(0, "flair", lambda w, b: str(b / "seg"))),
        _cohort("flair_empty", _setcell(0, "flair", "")),
        _cohort("flair_missing", _setcell(0, "flair", "nope.nii.gz")),
        _cohort("flair_is_csv", _setcell(0, "flair", lambda w, b: str(b / LOADS))),
        _cohort("flair_same_for_two", _setcell(1, "flair", lambda w, b: str(b / "seg/flair/s01.nii.gz")), "any"),
        _cohort("t1_is_flair", _setcell(0, "t1", lambda w, b: str(b / "seg/flair/s01.nii.gz")), "any"),
        _cohort("t1_other_grid", _setcell(0, "t1", lambda w, b: str(b / "rel/training/Utrecht/0/pre/T1.nii.gz"))),
        _cohort("missing_column", None, raw=lambda r, w, b: b"subject,t1\ns01,\n"),
        _cohort("extra_cells", None, raw=lambda r, w, b: (_csv_text(r).rstrip("\n") + ",x,y\n").encode()),
        _cohort("fewer_cells", None, "any", raw=lambda r, w, b: ("subject,flair,t1\n" + r[0]["subject"] + "," +
                                                                    r[0]["flair"] + "\n").encode()),
        _cohort("bad_split", lambda r, w, b: [dict(x, split="validation") for x in r]),
        _cohort("newline_in_subject", _setcell(0, "subject", "s0\n1")),
        _cohort("cr_only_lines", None, "any", _two_cases, raw=lambda r, w, b: _csv_text(r).replace("\n", "\r").encode()),
        _cohort("extra_column", lambda r, w, b: [dict(x, notes="=1+1") for x in r], "ok", _two_cases),
        _cohort("utf16", None, "ok", _two_cases, raw=lambda r, w, b: _csv_text(r).encode("utf-16")),
        _cohort("lesion_is_region_map", lambda r, w, b: [dict(x, lesion=str(b / "seg/regions" / f"{x['subject']}.nii.gz"))
                                                         for x in r]),
        _cohort("binary_garbage", None, raw=lambda r, w, b: os.urandom(3000)),
        _cohort("subject_with_dash_option", _setcell(0, "subject", "--overwrite"), "any"),
    ]


# ---------------------------------------------------------------------------------------- cluster
def _loads(name, edit=None, expect="error", check=None, extra=(), raw=None):
    def setup(w, base):
        rows = read_rows(base / LOADS)
        path = w / "loads.csv"
        if raw is not None:
            path.write_bytes(raw(rows, base))
        else:
            write_rows(path, (edit(rows) if edit else rows) or rows)
        return [path, "-o", w / "out", *extra]
    return C(f"loads:{name}", "wmhloc_cluster", setup, expect, check)


def _cell(i, k, v):
    def edit(rows):
        rows[i][k] = v
        return rows
    return edit


def _assign(w: Path):
    rows = read_rows(w / "out" / "assignments.csv")
    return None if rows else "assignments.csv is empty"


def cluster_cases() -> list[Case]:
    mm = "r01_L_parietal_mm3"
    opts = [("k0", ["--k", "0"]), ("k_neg", ["--k", "-1"]), ("k1", ["--k", "1"]), ("k_more_than_subjects", ["--k", "50"]),
            ("krange_reversed", ["--k-range", "5", "2"]), ("krange_zero", ["--k-range", "0", "0"]),
            ("n_init0", ["--n-init", "0"]), ("n_init_huge", ["--n-init", "1000000000"]),
            ("top_regions0", ["--top-regions", "0"]), ("top_regions_neg", ["--top-regions", "-2"]),
            ("seed_neg", ["--seed", "-1"]), ("seed_huge", ["--seed", str(2 ** 40)]), ("k_nan", ["--k", "nan"]),
            ("k_float", ["--k", "2.5"]), ("atlas_missing", ["--atlas", "nope.nii.gz"]),
            ("atlas_is_csv", ["--atlas", "loads.csv"]), ("top_regions_huge", ["--top-regions", "100000"])]
    cases = [_loads(f"opt:{n}", None, "any" if n in ("top_regions_huge", "k_more_than_subjects", "seed_huge")
                    else "error", extra=e) for n, e in opts]
    cases += [
        _loads("bom", None, "ok", _assign, raw=lambda r, b: b"\xef\xbb\xbf" + (b / LOADS).read_bytes()),
        _loads("semicolon", None, "any", _assign, raw=lambda r, b: (b / LOADS).read_text().replace(",", ";").encode()),
        _loads("empty", None, raw=lambda r, b: b""),
        _loads("header_only", None, raw=lambda r, b: (b / LOADS).read_text().splitlines()[0].encode() + b"\n"),
        _loads("single_subject", lambda r: r[:1], "any"),
        _loads("identical_subjects", lambda r: [dict(r[0], subject=f"x{i}") for i in range(6)], "any"),
        _loads("all_zero", lambda r: [{k: ("0" if k.endswith(("_mm3", "_share", "voxels", "lesions")) else v)
                                       for k, v in x.items()} for x in r], "any"),
        _loads("negative_load", _cell(0, mm, "-50")),
        _loads("nan_load", _cell(0, mm, "nan")),
        _loads("inf_load", _cell(0, mm, "inf")),
        _loads("overflow_load", _cell(0, mm, "1e309")),
        _loads("text_load", _cell(0, mm, "abc")),
        _loads("empty_load", _cell(0, mm, "")),
        _loads("dup_subject", _cell(1, "subject", "s01")),
        _loads("dup_header", None, raw=lambda r, b: (b / LOADS).read_text().replace("subject,", "subject,subject,", 1)
               .replace("\ns0", "\nx,s0").encode()),
        _loads("missing_region_column", lambda r: [{k: v for k, v in x.items() if k != mm} for x in r]),
        _loads("formula_subject", _cell(0, "subject", "=cmd|' /C calc'!A0"), "any",
               no_cell_starts_with("assignments.csv")),
        _loads("traversal_subject", _cell(0, "subject", "../../escaped"), "any"),
        _loads("total_disagrees", _cell(0, "total_mm3", "99999"), "any"),
        _loads("huge_value", _cell(0, mm, "1e300"), "any"),
        _loads("many_rows", lambda r: [dict(r[i % len(r)], subject=f"z{i}") for i in range(3000)], "any"),
        _loads("utf16", None, "ok", _assign, raw=lambda r, b: (b / LOADS).read_text().encode("utf-16")),
        _loads("lesions_csv_instead", None, raw=lambda r, b: (b / "loc/lesions.csv").read_bytes()),
        _loads("json_instead", None, raw=lambda r, b: b'{"subject": 1}'),
    ]

    def out_is_input(w, base):
        shutil.copy2(base / LOADS, w / "loads.csv")
        return [w / "loads.csv", "-o", w / "loads.csv"]

    def out_is_parent(w, base):
        (w / "d").mkdir()
        shutil.copy2(base / LOADS, w / "d" / "loads.csv")
        return [w / "d" / "loads.csv", "-o", w / "d", "--overwrite"]

    def out_is_file(w, base):
        shutil.copy2(base / LOADS, w / "loads.csv")
        (w / "out").write_text("user data")
        return [w / "loads.csv", "-o", w / "out", "--overwrite"]

    def loads_is_dir(w, base):
        (w / "d.csv").mkdir()
        return [w / "d.csv", "-o", w / "out"]

    cases += [C("out:is_input", "wmhloc_cluster", out_is_input), C("out:is_parent", "wmhloc_cluster", out_is_parent),
              C("out:is_user_file", "wmhloc_cluster", out_is_file), C("loads:is_dir", "wmhloc_cluster", loads_is_dir)]
    return cases


# --------------------------------------------------------------------------------------- evaluate
def _eval(name, edit, expect="error", check=None, extra=()):
    def setup(w, base):
        copy(base, w, "seg/lesions", "seg/ref")
        for d in ("lesions", "ref"):
            for f in sorted((w / d).iterdir())[3:]:
                f.unlink()
        more = extra_args(edit(w, base)) if edit else []
        return ["--pred", w / "lesions", "--ref", w / "ref", "--task", "lesion", "-o", w / "out", *extra, *more]
    return C(f"eval:{name}", "wmhloc_evaluate", setup, expect, check)


def _write(rel, arr_fn, **kw):
    def edit(w, base):
        p = w / rel
        if p.exists():
            p.unlink()
        F.write_sitk(p, arr_fn(), **kw)
    return edit


def _sites(text):
    def edit(w, base):
        (w / "sites.csv").write_text(text)
        return ["--sites", w / "sites.csv"]
    return edit


def evaluate_cases() -> list[Case]:
    big = lambda: np.zeros((6, 12, 13), np.uint8)  # noqa: E731
    return [
        _eval("grid_shape", _write("lesions/s01.nii.gz", big)),
        _eval("grid_spacing", _write("lesions/s01.nii.gz", F.lesion_arr, spacing=(1.0, 1.0, 3.0))),
        _eval("grid_origin", _write("lesions/s01.nii.gz", F.lesion_arr, origin=(5.0, 0.0, 0.0))),
        _eval("label_out_of_range", _write("lesions/s01.nii.gz", lambda: F.lesion_arr() * 7)),
        _eval("ref_label_out_of_range", _write("ref/s01.nii.gz", lambda: F.lesion_arr() * 9)),
        _eval("empty_masks", lambda w, b: [_write(f"{d}/s01.nii.gz", lambda: np.zeros(F.SHAPE, np.uint8))(w, b)
                                           for d in ("lesions", "ref")] and None, "any",
              rows_have("cases.csv", "subject", {"s01"})),
        _eval("pred_extra_subject", _write("lesions/s09.nii.gz", F.lesion_arr), "any"),
        _eval("ref_extra_subject", _write("ref/s09.nii.gz", F.lesion_arr), "any"),
        _eval("pred_empty_folder", lambda w, b: [p.unlink() for p in (w / "lesions").iterdir()] and None),
        _eval("junk_files_beside", lambda w, b: (w / "lesions" / "notes.txt").write_text("x") and None, "ok",
              rows_have("cases.csv", "subject", {"s01", "s02", "s03"})),
        _eval("region_task_on_lesions", None, "any", extra=("--task", "region")),
        _eval("sites_missing_column", _sites("subject,scanner\ns01,a\n")),
        _eval("sites_dup_subject", _sites("subject,site\ns01,a\ns01,b\ns02,a\ns03,b\n")),
        _eval("sites_unknown_subjects", _sites("subject,site\nq1,a\n"), "any"),
        _eval("sites_formula", _sites("subject,site\ns01,=1+2\ns02,@SUM(1)\ns03,+x\n"), "any",
              no_cell_starts_with("cases.csv")),
        _eval("sites_missing", lambda w, b: ["--sites", w / "nope.csv"]),
        _eval("site_column_unknown", _sites("subject,site\ns01,a\ns02,a\ns03,b\n"), extra=("--site-column", "nope")),
        _eval("include_no_match", None, extra=("--include", "zzz*")),
        _eval("include_bad_glob", None, "any", extra=("--include", "[")),
        _eval("include_traversal", None, "any", extra=("--include", "../*")),
        C("eval:out_inside_pred", "wmhloc_evaluate", lambda w, b: (copy(b, w, "seg/lesions", "seg/ref") or
                                                                  ["--pred", w / "lesions", "--ref", w / "ref", "--task",
                                                                   "lesion", "-o", w / "lesions" / "ev"]), out="lesions/ev"),
        C("eval:pred_is_file", "wmhloc_evaluate", lambda w, b: (copy(b, w, "seg/ref") or
                                                               ["--pred", w / "ref" / "s01.nii.gz", "--ref", w / "ref",
                                                                "--task", "lesion", "-o", w / "out"])),
    ]


def more_cases() -> list[Case]:
    from hostile_cases_c import archive_cases, fuse_cases, predict_paths
    from hostile_cases_d import d_cases

    return (cohort_cases() + cluster_cases() + evaluate_cases() + fuse_cases() + archive_cases() + predict_paths()
            + d_cases())
