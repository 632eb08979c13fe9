"""Prediction folders, model archives, releases, options and output paths of the hostile pass."""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np

import hostile_files as F
from hostile_cases import extra_args, Case, copy, rows_have, write_rows

C = Case
MANIFEST = "wmhloc_manifest.json"


# ------------------------------------------------------------------------------------------- fuse
def _fuse(name, edit=None, expect="error", check=None, extra=()):
    def setup(w, base):
        copy(base, w, "preds/pred_flair", "preds/pred_t1")
        more = extra_args(edit(w)) if edit else []
        return [w / "pred_flair", w / "pred_t1", "-o", w / "out", *extra, *more]
    return C(f"fuse:{name}", "wmhloc_fuse", setup, expect, check)


def _npz(case="wmh001_flair", **arrays):
    def edit(w):
        np.savez_compressed(w / "pred_flair" / f"{case}.npz", **arrays)
    return edit


def _replace(rel, data: bytes):
    def edit(w):
        (w / rel).write_bytes(data)
    return edit


def _two_fused(w):
    got = sorted(p.name for p in (w / "out").glob("*.nii.gz"))
    return None if len(got) == 2 else f"fused maps: {got}"


def fuse_cases() -> list[Case]:
    shape = (2, 9, 26, 30)
    nanp = np.full(shape, 0.5, np.float32)
    nanp[0, 0, 0, 0] = np.nan
    return [
        _fuse("plain", None, "ok", _two_fused),
        _fuse("npz_no_key", _npz(other=np.zeros(shape, np.float32))),
        _fuse("npz_2d", _npz(probabilities=np.zeros((2, 26), np.float32))),
        _fuse("npz_wrong_shape", _npz(probabilities=np.full((2, 9, 26, 31), 0.5, np.float32))),
        _fuse("npz_nan", _npz(probabilities=nanp)),
        _fuse("npz_negative", _npz(probabilities=np.full(shape, -0.5, np.float32)), extra=("--no-check",)),
        _fuse("npz_object_array", _npz(probabilities=np.array([{"a": 1}], dtype=object))),
        _fuse("npz_three_classes", _npz(probabilities=np.full((3, 9, 26, 30), 1 / 3, np.float32))),
        _fuse("npz_int", _npz(probabilities=np.ones(shape, np.int64)), extra=("--no-check",)),
        _fuse("npz_truncated", lambda w: (w / "pred_flair/wmh001_flair.npz").write_bytes(
            (w / "pred_flair/wmh001_flair.npz").read_bytes()[:200])),
        _fuse("npz_not_zip", _replace("pred_flair/wmh001_flair.npz", os.urandom(500))),
        _fuse("npz_is_dir", lambda w: ((w / "pred_flair/wmh001_flair.npz").unlink(),
                                        (w / "pred_flair/wmh001_flair.npz").mkdir()) and None),
        _fuse("pkl_random", _replace("pred_flair/wmh001_flair.pkl", os.urandom(300))),
        _fuse("pkl_empty", _replace("pred_flair/wmh001_flair.pkl", b"")),
        _fuse("pkl_list", _replace("pred_flair/wmh001_flair.pkl", pickle.dumps([1, 2, 3]))),
        _fuse("pkl_deep", _replace("pred_flair/wmh001_flair.pkl", b"(" * 200000 + b"t.")),
        _fuse("pkl_missing", lambda w: (w / "pred_flair/wmh001_flair.pkl").unlink(), "any"),
        _fuse("seg_missing", lambda w: (w / "pred_flair/wmh001_flair.nii.gz").unlink(), "any"),
        _fuse("empty_inputs", lambda w: [shutil.rmtree(w / d) or (w / d).mkdir() for d in ("pred_flair", "pred_t1")]
              and None),
        _fuse("weights_negative", None, extra=("--weights", "-1", "1")),
        _fuse("weights_nan", None, extra=("--weights", "nan", "1")),
        _fuse("weights_inf", None, extra=("--weights", "inf", "1")),
        _fuse("weights_zero", None, extra=("--weights", "0", "0")),
        _fuse("weights_count", None, extra=("--weights", "1")),
        _fuse("modalities_empty", None, extra=("--modalities", "")),
        _fuse("modalities_dup", None, "any", extra=("--modalities", "flair", "flair")),
        _fuse("probability_label_99", None, extra=("--probability-label", "99")),
        _fuse("probability_label_neg", None, extra=("--probability-label", "-1")),
        C("fuse:same_input_twice", "wmhloc_fuse", lambda w, b: copy(b, w, "preds/pred_flair") or
          [w / "pred_flair", w / "pred_flair", "-o", w / "out"], "any"),
        C("fuse:out_is_input", "wmhloc_fuse", lambda w, b: copy(b, w, "preds/pred_flair") or
          [w / "pred_flair", "-o", w / "pred_flair", "--overwrite"]),
        C("fuse:out_inside_input", "wmhloc_fuse", lambda w, b: copy(b, w, "preds/pred_flair") or
          [w / "pred_flair", "-o", w / "pred_flair" / "fused"], out="pred_flair/fused"),
    ]


# -------------------------------------------------------------------------------------- archives
def _members(base: Path) -> dict:
    return {k: bytes.fromhex(v) for k, v in json.loads((base / "archive_members.json").read_text()).items()}


def _archive(name, make, expect="error", extra=()):
    def setup(w, base):
        copy(base, w, "cohort.csv")
        path = make(w, base)
        return [w / "cohort.csv", "--models", path, "-o", w / "out", "--device", "cpu", *extra]
    return C(f"archive:{name}", "wmhloc_predict", setup, expect, timeout=300)


def _zip(edit):
    def make(w, base):
        with zipfile.ZipFile(base / "models.zip") as z:
            members = {i.filename: z.read(i) for i in z.infolist()}
        members = edit(members, base) or members
        p = w / "m.zip"
        with zipfile.ZipFile(p, "w") as z:
            for k, v in members.items():
                if isinstance(v, tuple):  # (ZipInfo, bytes)
                    z.writestr(v[0], v[1])
                else:
                    z.writestr(k, v)
        return p
    return make


def _link_member(m, base):
    info = zipfile.ZipInfo("Dataset601_WMHLesion/link")
    info.external_attr = 0o120777 << 16
    m["Dataset601_WMHLesion/link"] = (info, b"/etc/passwd")


def _manifest_edit(fn):
    def edit(m, base):
        man = json.loads(m[MANIFEST])
        fn(man)
        m[MANIFEST] = json.dumps(man).encode()
    return edit


def archive_cases() -> list[Case]:
    def tar(w, base):
        p = w / "m.zip"
        with tarfile.open(p, "w:gz") as t:
            t.add(base / "cohort.csv", arcname="x.csv")
        return p

    def nested(w, base):
        p = w / "m.zip"
        with zipfile.ZipFile(p, "w") as z:
            z.write(base / "models.zip", "models.zip")
        return p

    def empty_zip(w, base):
        p = w / "m.zip"
        zipfile.ZipFile(p, "w").close()
        return p

    def truncated(w, base):
        p = w / "m.zip"
        b = (base / "models.zip").read_bytes()
        p.write_bytes(b[: len(b) // 2])
        return p

    def raw(data):
        def make(w, base):
            p = w / "m.zip"
            p.write_bytes(data)
            return p
        return make

    def is_dir(w, base):
        (w / "m.zip").mkdir()
        return w / "m.zip"

    def rm(key_end):
        return lambda m, b: {k: v for k, v in m.items() if not k.endswith(key_end)}

    def man(fn):
        return _zip(_manifest_edit(fn))

    def swap_labels(man):
        man["models"]["lesion"]["labels"] = {"background": 0, "x": 1}

    return [
        _archive("tar_gz", tar), _archive("nested_zip", nested), _archive("empty_zip", empty_zip),
        _archive("truncated", truncated), _archive("zero_bytes", raw(b"")), _archive("random_bytes", raw(os.urandom(4000))),
        _archive("is_dir", is_dir), _archive("missing", lambda w, b: w / "nope.zip"),
        _archive("symlink_member", _zip(_link_member)),
        _archive("absolute_member", _zip(lambda m, b: m.update({"/tmp/evil.txt": b"x"}))),
        _archive("dotdot_member", _zip(lambda m, b: m.update({"../evil.txt": b"x"}))),
        _archive("no_manifest", _zip(rm(MANIFEST))),
        _archive("no_checkpoint", _zip(rm("fold_0/checkpoint_final.pth"))),
        _archive("no_dataset_json", _zip(rm("Dataset601_WMHLesion/nnUNetTrainer__nnUNetPlans__2d/dataset.json"))),
        _archive("manifest_labels_lie", man(swap_labels)),
        _archive("manifest_path_traversal", man(lambda x: x["models"]["lesion"].update(path="../../etc"))),
        _archive("manifest_folds_traversal", man(lambda x: x["models"]["lesion"].update(folds=["../0"]))),
        _archive("manifest_unknown_format", man(lambda x: x.update(format_version=999))),
        _archive("manifest_fusion_weight_nan", man(lambda x: x["fusion"]["region"]["weights"].update(flair=float("nan")))),
        _archive("manifest_id_formula", man(lambda x: x.update(id="=cmd|' /C calc'!A0")), "any"),
        _archive("extra_member_text", _zip(lambda m, b: m.update({"README.txt": b"hi"}))),
        _archive("plans_not_json", _zip(lambda m, b: m.update(
            {"Dataset601_WMHLesion/nnUNetTrainer__nnUNetPlans__2d/plans.json": b"{not json"}))),
        _archive("both_models_and_folder", lambda w, b: b / "models.zip", extra=("--lesion-model", "x")),
        _archive("fusion_garbage", lambda w, b: b / "models.zip", extra=("--fusion", "fused:7")),
        _archive("fusion_nan", lambda w, b: b / "models.zip", extra=("--fusion", "fused:nan")),
        _archive("fusion_task_unknown", lambda w, b: b / "models.zip", extra=("--fusion", "brain=flair")),
        _archive("threshold_nan", lambda w, b: b / "models.zip", extra=("--lesion-threshold", "nan")),
        _archive("threshold_neg", lambda w, b: b / "models.zip", extra=("--lesion-threshold", "-1")),
        _archive("pv_distance_neg", lambda w, b: b / "models.zip", extra=("--pv-distance", "-3")),
        _archive("pv_distance_inf", lambda w, b: b / "models.zip", extra=("--pv-distance", "inf")),
        _archive("k_max_zero", lambda w, b: b / "models.zip", extra=("--k-max", "0")),
        _archive("folds_unknown", lambda w, b: b / "models.zip", extra=("-f", "7")),
        _archive("device_cuda_absent", lambda w, b: b / "models.zip", extra=("--device", "cuda")),
    ]


def predict_paths() -> list[Case]:
    def out_is_csv(w, base):
        copy(base, w, "cohort.csv")
        return [w / "cohort.csv", "--models", base / "models.zip", "-o", w / "cohort.csv"]

    def out_is_models(w, base):
        copy(base, w, "cohort.csv", "models.zip")
        return [w / "cohort.csv", "--models", w / "models.zip", "-o", w / "models.zip"]

    def cohort_bad(w, base):
        write_rows(w / "c.csv", [{"subject": "../x", "flair": str(base / "seg/flair/s01.nii.gz")}])
        return [w / "c.csv", "--models", base / "models.zip", "-o", w / "out"]

    def cohort_empty_dir(w, base):
        (w / "c").mkdir()
        return [w / "c", "--models", base / "models.zip", "-o", w / "out"]

    def out_in_cohort(w, base):
        (w / "co").mkdir()
        shutil.copy2(base / "seg/flair/s01.nii.gz", w / "co" / "s01_flair.nii.gz")
        return [w / "co", "--models", base / "models.zip", "-o", w / "co" / "out"]

    return [C("path:out_is_cohort_csv", "wmhloc_predict", out_is_csv, out="cohort.csv"),
            C("path:out_is_models", "wmhloc_predict", out_is_models, out="models.zip"),
            C("path:cohort_traversal_id", "wmhloc_predict", cohort_bad),
            C("path:cohort_empty_dir", "wmhloc_predict", cohort_empty_dir),
            C("path:out_inside_cohort", "wmhloc_predict", out_in_cohort, out="co/out")]


def _pyobj(o):
    return pickle.dumps(o)


__all__ = ["fuse_cases", "archive_cases", "predict_paths", "io", "F", "rows_have"]
