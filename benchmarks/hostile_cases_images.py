"""Image cases of the hostile pass: every odd NIfTI of hostile_files.variants() in the image slots of the
commands that read images (localize lesions/regions, evaluate predictions, convert_cohort FLAIR, cluster's
atlas)."""
from __future__ import annotations

import shutil
from pathlib import Path

import hostile_files as F
from hostile_cases import Case, copy, loads_equal_base, rows_have

# variants that keep the voxel values and grid: a command may read them, and must give the plain result
SAME_DATA = {"int64", "big_endian", "uncompressed_named_gz", "trailing_junk", "dim0_seven"}
# variants a reader may read or refuse (the file is legal NIfTI; its values differ from the plain map)
EITHER = SAME_DATA | {"sform_qform_mismatch", "slope_two", "inter_offset", "int8_negative_region"}


def _expect(variant: str, slot: str = "") -> str:
    if variant in EITHER or f"{variant}_{slot}" in EITHER:
        return "any"
    return "error"


def _seg_two(w: Path, base: Path, n=2) -> None:
    for d in ("lesions", "regions"):
        (w / d).mkdir()
        for i in range(1, n + 1):
            shutil.copy2(base / "seg" / d / f"s0{i}.nii.gz", w / d)
    shutil.copy2(base / "loc" / "regional_loads.csv", w / "base_loads.csv")


def _localize(variant: str, slot: str) -> Case:
    def setup(w, base):
        _seg_two(w, base)
        target = w / slot / "s01.nii.gz"
        arr = F.lesion_arr() if slot == "lesions" else F.region_arr()
        if slot == "lesions":
            arr[0, 0:1, 0:1] = 1
        target.unlink()
        F.variants()[variant](target, arr)
        return ["--lesions", w / "lesions", "--regions", w / "regions", "-o", w / "out"]
    check = loads_equal_base() if variant in SAME_DATA else None
    return Case(f"image:{slot}:{variant}", "wmhloc_localize", setup, _expect(variant, slot[:-1]), check,
                names=("s01",))


def _evaluate(variant: str) -> Case:
    def setup(w, base):
        copy(base, w, "seg/lesions", "seg/ref")
        for d in ("lesions", "ref"):
            for f in sorted((w / d).iterdir())[2:]:
                f.unlink()
        target = w / "lesions" / "s01.nii.gz"
        target.unlink()
        a = F.lesion_arr()
        a[0, 0:1, 0:1] = 1
        F.variants()[variant](target, a)
        return ["--pred", w / "lesions", "--ref", w / "ref", "--task", "lesion", "-o", w / "out"]
    check = rows_have("cases.csv", "subject", {"s01", "s02"}) if variant in SAME_DATA else None
    return Case(f"image:pred:{variant}", "wmhloc_evaluate", setup, _expect(variant), check, names=("s01",))


def _convert(variant: str) -> Case:
    def setup(w, base):
        (w / "co").mkdir()
        for s in ("s01", "s02"):
            shutil.copy2(base / "seg" / "flair" / f"{s}.nii.gz", w / "co" / f"{s}_flair.nii.gz")
        target = w / "co" / "s01_flair.nii.gz"
        target.unlink()
        F.variants()[variant](target, F.flair_arr(1))
        return [w / "co", "--mode", "predict", "-o", w / "out"]
    # intensities, not labels: scaled, fractional or negative values are legal; a bigger header is legal NIfTI
    legal = ("float_fraction", "int8_negative", "slope_half", "sizeof_hdr_lie", "int64_wraps")
    expect = "any" if variant in EITHER or variant in legal else "error"
    return Case(f"image:flair:{variant}", "wmhloc_convert_cohort", setup, expect, names=("s01",))


def _atlas(variant: str) -> Case:
    def setup(w, base):
        shutil.copy2(base / "loc" / "regional_loads.csv", w / "loads.csv")
        F.variants()[variant](w / "atlas.nii.gz", F.region_arr())
        return [w / "loads.csv", "-o", w / "out", "--k", "2", "--atlas", w / "atlas.nii.gz"]
    return Case(f"image:atlas:{variant}", "wmhloc_cluster", setup, _expect(variant), names=("atlas",))


ATLAS_VARIANTS = ("four_d", "truncated", "huge_claim", "nan_affine", "rgb", "float_nan", "directory",
                  "fifo", "complex64", "slope_half")
EVAL_VARIANTS = ("four_d", "two_d", "truncated", "gz_garbage", "nan_affine", "sform_qform_mismatch", "int64",
                 "rgb", "float_fraction", "huge_claim", "negative_dim", "slope_half", "nan_pixdim",
                 "bitpix_lie", "huge_vox_offset", "directory", "dangling_link", "fifo", "complex64", "big_endian")


def image_cases() -> list[Case]:
    vs = list(F.variants())
    cases = [_localize(v, "lesions") for v in vs] + [_localize(v, "regions") for v in vs]
    cases += [_evaluate(v) for v in EVAL_VARIANTS]
    cases += [_convert(v) for v in vs]
    cases += [_atlas(v) for v in ATLAS_VARIANTS]
    return cases
