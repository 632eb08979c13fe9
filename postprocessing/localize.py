"""wmhloc_localize: where each subject's lesions are and how much: regional loads and a lesion census.

Inputs: a folder of lesion segmentations (label 1 = lesion; 0 background; 2 = the challenge's 'other
pathology'/ignore label, accepted but never counted) and a folder of region segmentations (labels 0..36:
1-17 left and 18-34 right WM regions, 35/36 rest of the left/right hemisphere, 0 outside). Files are matched
by subject (postprocessing/_match.py): `wmh012.nii.gz`, `wmh012_flair.nii.gz` and `wmh012_t1.nii.gz` all
mean subject wmh012; within a folder a bare name beats `_flair`, which beats `_t1` (--modality-priority).
Every lesion file needs a region map on the same grid; region maps without a lesion file are only reported.

Outputs (folder created atomically; nothing is left behind on error):
- `regional_maps/<subject>.nii.gz`: uint8, each lesion voxel carries its region label, 0 elsewhere
  (so lesion voxels outside every region are 0 too; they are counted in `outside_*`);
- `regional_loads.csv`, one row per subject, volumes in mm³ = voxels × the product of the image spacing, in
  the one layout of postprocessing/loads.py (LOAD_COLUMNS): total_mm3, per region 1-36 `<region>_mm3` and
  `<region>_share` (e.g. r01_L_parietal_mm3, r01_L_parietal_share: share of the total lesion volume), wm_mm3
  (regions 1-34), left_wm_mm3 / right_wm_mm3 (1-17 / 18-34), left_mm3 / right_mm3 (with 35 / 36),
  outside_voxels / outside_mm3 (lesion voxels in region 0), n_lesions;
- `lesions.csv`, one row per 26-connected lesion: subject, lesion_id (scipy.ndimage.label raster order),
  voxels, volume_mm3, centroid_lps_{x,y,z}_mm: centroid in world mm (SimpleITK/ITK physical space, LPS: +x is
  the patient's left, +y posterior, +z superior; RAS/MNI tools negate x and y; direction honoured),
  main_region (label with most of its voxels; 0 = outside all regions) and name, main_share,
  outside_share, n_regions and `regions`, e.g. 'r12:0.800;r13:0.200' (share of its voxels per region);
- `localize_log.json`: which files were paired, files passed over, region maps without lesions.
With --reference-lesions the same is written under `reference/` for the reference labels (e.g. the
challenge's ground truth), to compare predicted and true loads.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from nnunet_wmhloc import cli
from nnunet_wmhloc.io import WMHLocError, atomic_dir, check_output, check_same_geometry, read_image, write_csv, \
    write_json
from nnunet_wmhloc.location.rows import add_pv_distance_option
from nnunet_wmhloc.postprocessing import _location
from nnunet_wmhloc.postprocessing._match import index_folder
from nnunet_wmhloc.postprocessing.loads import (LESION_COLUMNS, LESION_LOCATION_COLUMNS, LESIONS, LOAD_COLUMNS,
                                                LOCATION_COLUMNS, NO_LOCATION, REGION_LABELS,
                                                REGIONAL_LOADS, LocalizeResult, mm3_column, read_loads,
                                                read_localize, share_column)
from nnunet_wmhloc.vocab import LEFT_REGIONS, REGION_NAMES, REST_LEFT, REST_RIGHT, RIGHT_REGIONS, WM_REGIONS

__all__ = ["LESION_COLUMNS", "LOAD_COLUMNS", "LocalizeResult", "localize", "localize_arrays", "read_loads",
           "read_localize", "main"]

N_LABELS = 37  # 0..36
STRUCTURE_26 = np.ones((3, 3, 3), dtype=bool)


def _num(v: float) -> str:
    """Volumes keep full precision (write_csv would round floats to 6 significant digits)."""
    return f"{v:.10g}"


def read_label_array(path: Path, *, max_label: int, what: str) -> tuple[np.ndarray, sitk.Image]:
    """Read an integer label map with values in 0..max_label (stored as int or whole floats).

    Faster than a full np.unique on every volume: min/max first, details only when out of range."""
    img = read_image(path, what=what)
    arr = sitk.GetArrayFromImage(img)
    if arr.dtype.kind == "f":
        r = np.rint(arr)
        if np.abs(arr - r).max(initial=0) > 1e-3:
            raise WMHLocError(f"{path}: {what} holds non-integer values")
        arr = r
    lo, hi = arr.min(initial=0), arr.max(initial=0)
    if lo < 0 or hi > max_label:
        bad = np.unique(arr[(arr < 0) | (arr > max_label)])[:10]
        raise WMHLocError(f"{path}: {what} has unexpected label values {[int(b) for b in bad]} "
                          f"(allowed: 0..{max_label})")
    return arr.astype(np.uint8, copy=False), img


def localize_arrays(lesion: np.ndarray, regions: np.ndarray, img: sitk.Image) -> dict:
    """Core computation on (z, y, x) arrays: lesion boolean mask, regions 0..36, geometry from `img`.

    Returns region voxel counts, per-lesion voxel counts by region, world centroids and the regional map.
    Work is proportional to the lesion voxels plus one labelling of their bounding box."""
    shape = lesion.shape
    idx = np.flatnonzero(lesion)
    out_map = np.zeros(shape, dtype=np.uint8)
    if idx.size == 0:
        return {"region_voxels": np.zeros(N_LABELS, np.int64),
                "lesion_region_voxels": np.zeros((0, N_LABELS), np.int64),
                "centroids": np.zeros((0, 3)), "map": out_map}
    reg_at = regions.ravel()[idx].astype(np.int64)
    out_map.ravel()[idx] = reg_at
    zyx = np.unravel_index(idx, shape)
    lo = [int(c.min()) for c in zyx]
    hi = [int(c.max()) + 1 for c in zyx]
    sub = lesion[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    comp, n = ndimage.label(sub, structure=STRUCTURE_26)
    lab_at = comp[zyx[0] - lo[0], zyx[1] - lo[1], zyx[2] - lo[2]].astype(np.int64)
    lesion_region = np.bincount(lab_at * N_LABELS + reg_at, minlength=(n + 1) * N_LABELS)
    lesion_region = lesion_region.reshape(n + 1, N_LABELS)[1:]
    vox = lesion_region.sum(1).astype(np.float64)
    # mean continuous index (x, y, z) per lesion, then ITK's index -> physical map (linear, so exact)
    mean_xyz = np.stack([np.bincount(lab_at, weights=zyx[a], minlength=n + 1)[1:] / vox for a in (2, 1, 0)], 1)
    d = np.asarray(img.GetDirection()).reshape(3, 3)
    centroids = np.asarray(img.GetOrigin()) + (mean_xyz * np.asarray(img.GetSpacing())) @ d.T
    return {"region_voxels": np.bincount(reg_at, minlength=N_LABELS), "lesion_region_voxels": lesion_region,
            "centroids": centroids, "map": out_map}


def subject_rows(subject: str, res: dict, vvol: float, lesion_file: Path, region_file: Path
                 ) -> tuple[dict, list[dict]]:
    """The subject's regional_loads row and lesions rows, every value a string as the CSV reads back."""
    rv = res["region_voxels"].astype(np.float64)
    mm = rv * vvol
    total = rv.sum()
    row = {"subject": subject, "n_lesions": str(len(res["centroids"])), "total_voxels": str(int(total)),
           "total_mm3": _num(total * vvol)}
    total_mm3 = float(row["total_mm3"])
    for r in REGION_LABELS:
        row[mm3_column(r)] = _num(mm[r])
        # from the written values, as results/regional_loads.csv computed it
        row[share_column(r)] = f"{float(row[mm3_column(r)]) / total_mm3:.6g}" if total_mm3 > 0 else "0"
    row.update({"wm_mm3": _num(mm[list(WM_REGIONS)].sum()),
                "left_wm_mm3": _num(mm[list(LEFT_REGIONS)].sum()),
                "right_wm_mm3": _num(mm[list(RIGHT_REGIONS)].sum()),
                "left_mm3": _num(mm[list(LEFT_REGIONS) + [REST_LEFT]].sum()),
                "right_mm3": _num(mm[list(RIGHT_REGIONS) + [REST_RIGHT]].sum()),
                "outside_voxels": str(int(rv[0])), "outside_mm3": _num(mm[0]), "voxel_volume_mm3": _num(vvol),
                "lesion_file": str(lesion_file), "region_file": str(region_file)})
    row.update(dict.fromkeys(LOCATION_COLUMNS, "") | {"location_note": NO_LOCATION})  # wmhloc_predict fills them
    lesions = []
    for i, (counts, c) in enumerate(zip(res["lesion_region_voxels"], res["centroids"]), start=1):
        n = counts.sum()
        share = counts / n
        main = int(np.argmax(counts))
        touched = [r for r in np.argsort(-counts[1:], kind="stable") + 1 if counts[r] > 0]
        lesions.append({"subject": subject, "lesion_id": str(i), "voxels": str(int(n)), "volume_mm3": _num(n * vvol),
                        "centroid_lps_x_mm": f"{c[0]:.3f}", "centroid_lps_y_mm": f"{c[1]:.3f}",
                        "centroid_lps_z_mm": f"{c[2]:.3f}", "main_region": str(main),
                        "main_region_name": REGION_NAMES[main] if main else "outside regions",
                        "main_share": f"{share[main]:.4f}", "outside_share": f"{share[0]:.4f}",
                        "n_regions": str(len(touched)),
                        "regions": ";".join(f"r{r:02d}:{share[r]:.3f}" for r in touched)}
                       | dict.fromkeys(LESION_LOCATION_COLUMNS, ""))
    return row, lesions


def _run_set(pairs, out: Path, *, lesion_label: int, max_lesion_label: int, write_maps: bool, desc: str,
             progress: bool):
    rows, lesions = [], []
    if write_maps:
        (out / "regional_maps").mkdir(parents=True, exist_ok=True)
    for subject, les_path, reg_path in cli.progress(pairs, desc=desc, total=len(pairs),
                                                    disable=None if progress else True):
        les, les_img = read_label_array(les_path, max_label=max_lesion_label, what="lesion segmentation")
        reg, reg_img = read_label_array(reg_path, max_label=N_LABELS - 1, what="region segmentation")
        check_same_geometry(reg_img, reg_path, les_img, les_path)
        res = localize_arrays(les == lesion_label, reg, reg_img)
        row, les_rows = subject_rows(subject, res, float(np.prod(reg_img.GetSpacing())), les_path, reg_path)
        rows.append(row)
        lesions.extend(les_rows)
        if write_maps:
            m = sitk.GetImageFromArray(res["map"])
            m.CopyInformation(reg_img)
            sitk.WriteImage(m, str(out / "regional_maps" / f"{subject}.nii.gz"), True)
    return rows, lesions


def _write_tables(rows: list[dict], lesions: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / REGIONAL_LOADS, columns=LOAD_COLUMNS)
    write_csv(lesions, out / LESIONS, columns=LESION_COLUMNS)


def _pair(lesion_dir, regions: dict, priority, what: str):
    lesions, notes = index_folder(lesion_dir, priority, what=what)
    pairs = []
    for subject in sorted(lesions):
        if subject not in regions:
            raise WMHLocError(f"{lesions[subject]}: no region map for subject '{subject}' "
                              f"(expected {subject}.nii.gz, {subject}_flair.nii.gz or similar in the regions folder)")
        pairs.append((subject, lesions[subject], regions[subject]))
    return pairs, notes


def _pairs_log(pairs) -> list[dict]:
    return [{"subject": s, "lesion_file": str(a), "region_file": str(b)} for s, a, b in pairs]


def _stderr(text: str) -> None:
    print(text, file=sys.stderr)


def localize(lesions, regions, output, *, reference_lesions=None, lesion_label: int = 1,
             max_lesion_label: int = 2, modality_priority=("flair", "t1"), write_maps: bool = True,
             overwrite: bool = False, say: Callable[[str], None] = _stderr, progress: bool = True,
             t1=None, atlas_dir=None, pv_distance: float = 10.0) -> LocalizeResult:
    """Regional loads, lesion census and regional maps of every lesion file in `lesions` (and of
    `reference_lesions`, under reference/) over its region map in `regions`, written to the folder `output`
    atomically. Notes (files passed over, unused region maps) go to `say`. With a folder of T1 images `t1`
    and `atlas_dir`: the location columns too (postprocessing/_location.py)."""
    if not 1 <= lesion_label <= max_lesion_label <= 255:
        raise WMHLocError(f"--lesion-label {lesion_label}: must be in 1..--max-lesion-label "
                          f"({max_lesion_label}, at most 255)")
    check_output(output, overwrite=overwrite, inputs=[lesions, regions, reference_lesions, t1, atlas_dir])
    priority = list(modality_priority)
    t1s = _location.check(t1, atlas_dir, pv_distance, priority)
    region_files, reg_notes = index_folder(regions, priority, what="regions")
    pairs, notes = _pair(lesions, region_files, priority, "lesions")
    ref_pairs, ref_notes = ([], [])
    if reference_lesions:
        ref_pairs, ref_notes = _pair(reference_lesions, region_files, priority, "reference lesions")
    for n in reg_notes + notes + ref_notes:
        say(f"note: {n}")
    used = {s for s, _, _ in pairs} | {s for s, _, _ in ref_pairs}
    unused = sorted(set(region_files) - used)
    if unused:
        say(f"note: {len(unused)} region map(s) without lesion file, not used (e.g. {unused[0]})")
    kw = {"lesion_label": lesion_label, "max_lesion_label": max_lesion_label, "write_maps": write_maps,
          "progress": progress}
    output = Path(output)
    with atomic_dir(output, overwrite=overwrite) as out:
        rows, found = _run_set(pairs, out, desc="localize", **kw)
        if t1s:
            located = _location.add_location(pairs, rows, found, t1s, atlas_dir, lesion_label=lesion_label,
                                             pv_distance=pv_distance, out=out, progress=progress)
            say(f"location classes: {located} of {len(rows)} subjects -> {out.name}/location")
        _write_tables(rows, found, out)  # once, with the location cells when --t1 filled them
        log = {"lesions": str(lesions), "regions": str(regions), "lesion_label": lesion_label,
               "subjects": len(rows), "lesions_found": len(found), "pairs": _pairs_log(pairs),
               "notes": reg_notes + notes, "region_maps_without_lesions": unused,
               "location": {"t1": str(t1), "atlas_dir": str(atlas_dir), "pv_distance_mm": pv_distance} if t1s else None}
        ref = None
        if ref_pairs:
            ref_rows, ref_found = _run_set(ref_pairs, out / "reference", desc="reference", **kw)
            _write_tables(ref_rows, ref_found, out / "reference")
            log["reference"] = {"folder": str(reference_lesions), "subjects": len(ref_rows),
                                "lesions_found": len(ref_found), "notes": ref_notes, "pairs": _pairs_log(ref_pairs)}
            ref = LocalizeResult(ref_rows, ref_found, output / "reference", log=log["reference"])
        write_json(log, out / "localize_log.json")
    return LocalizeResult(rows, found, output, reference=ref, log=log)


def _build_parser():
    p = cli.parser("wmhloc_localize", __doc__.split("\n\n")[0] + " Writes regional_loads.csv, lesions.csv "
                   "and per-subject regional lesion maps.")
    p.add_argument("--lesions", required=True, help="folder of lesion segmentations (label 1 = lesion)")
    p.add_argument("--regions", required=True, help="folder of region segmentations (labels 0..36)")
    p.add_argument("-o", "--output", required=True, help="output folder (must not exist unless --overwrite)")
    p.add_argument("--reference-lesions", default=None,
                   help="folder of reference lesion labels: the same outputs are written under reference/")
    p.add_argument("--lesion-label", type=int, default=1, help="label value counted as lesion")
    p.add_argument("--max-lesion-label", type=int, default=2,
                   help="highest label accepted in lesion files (2 = 'other pathology', not counted)")
    p.add_argument("--modality-priority", nargs="+", default=["flair", "t1"],
                   help="file-name suffixes stripped to find the subject, in order of preference")
    p.add_argument("--no-maps", action="store_true", help="do not write the regional lesion maps")
    p.add_argument("--t1", default=None,
                   help="folder of T1 images (matched by subject; on the lesion maps' physical space): with "
                        "--atlas-dir, the location columns (periventricular/deep, juxtacortical, ...) and location/")
    p.add_argument("--atlas-dir", default=None,
                   help="atlas folder (wmhloc_build_atlas output or the Eve folder) each T1 is registered to")
    add_pv_distance_option(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    return p


def _main(argv=None) -> int:
    a = _build_parser().parse_args(argv)
    res = localize(a.lesions, a.regions, a.output, reference_lesions=a.reference_lesions,
                   lesion_label=a.lesion_label, max_lesion_label=a.max_lesion_label,
                   modality_priority=a.modality_priority, write_maps=not a.no_maps, overwrite=a.overwrite,
                   t1=a.t1, atlas_dir=a.atlas_dir, pv_distance=a.pv_distance)
    print(f"localized {len(res.lesions)} lesions in {len(res.loads)} subjects -> {a.output}", file=sys.stderr)
    return 0


main = cli.entry(_main)


if __name__ == "__main__":
    sys.exit(main())
