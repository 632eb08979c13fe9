"""wmhloc_predict's deliverables in <output>/results/, per subject on its native FLAIR grid:

flat layout                                             BIDS derivative (--layout bids)
<subject>/<subject>_lesion_mask.nii.gz  uint8 0/1       sub-X[/ses-Y]/anat/sub-X[_ses-Y]_space-FLAIR_desc-lesion_mask.nii.gz
<subject>/<subject>_lesion_prob.nii.gz  float32 0-1     ..._space-FLAIR_desc-lesion_probseg.nii.gz
<subject>/<subject>_regions.nii.gz      uint8 0-36      ..._space-FLAIR_desc-regions_dseg.nii.gz (+ _dseg.tsv)
<subject>/<subject>_regional_lesions.nii.gz             ..._space-FLAIR_desc-regionallesions_dseg.nii.gz (+ .tsv)
regional_loads.csv, lesions.csv, subjects.csv           phenotype/wmhloc_{regional_loads,subjects}.tsv,
                                                        lesions.tsv (in .bidsignore: one row per lesion),
                                                        participants.tsv, dataset_description.json
<subject>/<subject>_{ventricles,lesion_location,space-atlas_lesion_mask}.nii.gz, lesion_frequency_atlas.nii.gz:
the location outputs (pipeline/location_outputs.py) when the atlas registration ran

The probability map thresholded at 0.5 (p > 0.5) is the lesion mask (see wmhloc_fuse --probability-label).
regional_loads: wmhloc_localize's table (lesion volume in mm³ per region and its share of the subject's
lesion load); lesions:
the 26-connected lesion census of wmhloc_localize. subjects: which modalities each task used, and whether a
subject fell back from the chosen modality to the one it has, and its review warnings (pipeline.review: load
far from the reference, much lesion volume outside WM, stage warnings). lesions' centroids are world mm in LPS.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from nnunet_wmhloc.io import WMHLocError, atomic_dir, formula_safe, read_csv, write_csv, write_json
from nnunet_wmhloc.layout import RunLayout
from nnunet_wmhloc.pipeline.models import describe_fusion
from nnunet_wmhloc.pipeline.review import subject_warnings
from nnunet_wmhloc.pipeline.location_outputs import frequency_file
from nnunet_wmhloc.pipeline.location_outputs import result_files as location_files
from nnunet_wmhloc.postprocessing.localize import LESION_COLUMNS, LOAD_COLUMNS
from nnunet_wmhloc.vocab import REGION_NAMES

BIDS_VERSION = "1.10.0"


def bids_entities(subject, used: set[str]) -> tuple[str, str | None]:
    """(sub label, ses label or None): from the FLAIR's BIDS path when it has one, else the subject id
    without the characters BIDS labels may not hold; unique across the cohort."""
    flair = Path(subject.images["flair"])
    sub = re.search(r"(?:^|[/_])sub-([A-Za-z0-9]+)", flair.as_posix())
    ses = re.search(r"(?:^|[/_])ses-([A-Za-z0-9]+)", flair.as_posix())
    label = sub.group(1) if sub else re.sub(r"[^A-Za-z0-9]", "", subject.subject)
    key = (label, ses.group(1) if ses else None)
    if not label or key in used:
        raise WMHLocError(f"{flair}: subject {subject.subject} gives BIDS label sub-{label}, not unique in the cohort")
    used.add(key)
    return key


def _fusion_rows(layout: RunLayout, task: str) -> dict[str, dict]:
    p = layout.fusion_log(task)
    return {r["subject"]: r for r in read_csv(p)} if p.is_file() else {}


def _copy(src: Path, dst: Path) -> None:
    if not src.is_file():
        raise WMHLocError(f"{src}: missing (an earlier stage did not write it)")
    shutil.copyfile(src, dst)


def _reference(s, bids_root: Path | None) -> str:
    """SpatialReference/Sources of a subject's outputs: a BIDS URI into the input dataset, else the FLAIR's URI."""
    flair = Path(s.images["flair"]).resolve()
    if bids_root is not None and bids_root.resolve() in flair.parents:
        return "bids:raw:" + flair.relative_to(bids_root.resolve()).as_posix()
    return flair.as_uri()


def write_results(output: Path, subjects: list, tables, *, layout: str, fusion: dict, source: str,
                  bids_root: Path | None = None, say=print) -> dict:
    """results/ of `subjects` (cohort order) from the localize stage's `tables` (.loads, .lesions rows):
    regional_loads and lesions are those tables' rows for these subjects, in localize's columns."""
    from nnunet_wmhloc import __version__

    run = RunLayout(output)
    loads = {r["subject"]: r for r in tables.loads}
    logs = {t: _fusion_rows(run, t) for t in ("lesion", "region")}
    warnings = subject_warnings(run, tables.loads)
    subjects = [s for s in subjects if s.subject in loads]
    used: set = set()
    rows, load_table, lesion_table = [], [], []
    with atomic_dir(run.results, overwrite=True) as out:
        for s in subjects:
            files = {"mask": run.segmentations("lesion") / f"{s.subject}.nii.gz",
                     "prob": run.segmentations("lesion") / "probabilities" / f"{s.subject}.nii.gz",
                     "regions": run.segmentations("region") / f"{s.subject}.nii.gz",
                     "regional": run.regional_maps / f"{s.subject}.nii.gz"}
            info = {"subject": s.subject}
            for t in ("lesion", "region"):
                log = logs[t].get(s.subject, {})
                info[f"{t}_modalities"] = log.get("modalities_used", "")
                info[f"{t}_weights"] = log.get("weights", "")
                info[f"{t}_fallback"] = log.get("fallback", "")
            notes = [f"{t}: chosen {describe_fusion(fusion[t])}, {s.subject} has no "
                     f"{logs[t][s.subject]['missing_modalities']}: used {info[f'{t}_modalities']}"
                     for t in ("lesion", "region") if logs[t].get(s.subject, {}).get("fallback") == "yes"]
            info["note"] = "; ".join(notes)
            info["warnings"] = "; ".join(warnings.get(s.subject, []))
            if layout == "bids":
                sub, ses = bids_entities(s, used)
                d = out / f"sub-{sub}" / (f"ses-{ses}" if ses else "") / "anat"
                stem = f"sub-{sub}" + (f"_ses-{ses}" if ses else "") + "_space-FLAIR"
                names = {"mask": f"{stem}_desc-lesion_mask", "prob": f"{stem}_desc-lesion_probseg",
                         "regions": f"{stem}_desc-regions_dseg", "regional": f"{stem}_desc-regionallesions_dseg"}
                ids = {"participant_id": f"sub-{sub}"} | ({"session_id": f"ses-{ses}"} if ses else {})
            else:
                d = out / s.subject
                names = {"mask": f"{s.subject}_lesion_mask", "prob": f"{s.subject}_lesion_prob",
                         "regions": f"{s.subject}_regions", "regional": f"{s.subject}_regional_lesions"}
                ids = {"subject": s.subject}
            d.mkdir(parents=True, exist_ok=True)
            _write_mask(files["mask"], d / f"{names['mask']}.nii.gz")
            for k in ("prob", "regions", "regional"):
                if k != "prob" or files[k].is_file():  # --lesions csv with masks: no probability map
                    _copy(files[k], d / f"{names[k]}.nii.gz")
            for name, src in location_files(run, s.subject, stem if layout == "bids" else None).items():
                _copy(src, d / name)
            if layout == "bids":
                _bids_sidecars(d, names, info, _reference(s, bids_root))
            rows.append(ids | {k: v for k, v in info.items() if k != "subject"})
            load_table.append(ids | {k: v for k, v in loads[s.subject].items() if k != "subject"})
            lesion_table += [ids | {k: v for k, v in r.items() if k != "subject"} for r in tables.lesions
                             if r["subject"] == s.subject]
        if frequency_file(run) is not None:  # the cohort's lesion-frequency map on the atlas grid
            _copy(frequency_file(run), out / ("space-atlas_desc-lesionfrequency_probseg.nii.gz" if layout == "bids"
                                              else "lesion_frequency_atlas.nii.gz"))
        if layout == "bids":
            _bids_tables(out, rows, load_table, lesion_table, source, __version__, bids_root)
        else:
            write_csv(rows, out / "subjects.csv")
            write_csv(load_table, out / "regional_loads.csv", columns=LOAD_COLUMNS)
            write_csv(lesion_table, out / "lesions.csv", columns=LESION_COLUMNS)
            write_csv([{"label": k, "name": REGION_NAMES[k]} for k in range(0, 37)], out / "region_labels.csv")
    fallback = [r for r in rows if r["note"]]
    for r in fallback:
        say(f"fallback: {r['note']}")
    say(f"results ({layout}): {len(rows)} subjects -> {run.results}")
    return {"layout": layout, "subjects": len(rows), "fallback_subjects": len(fallback)}


def _write_mask(seg: Path, dst: Path) -> None:
    """Lesion label 1 as a 0/1 mask (label 2 of a 3-class lesion model is not lesion)."""
    import SimpleITK as sitk

    if not seg.is_file():
        raise WMHLocError(f"{seg}: missing (an earlier stage did not write it)")
    img = sitk.ReadImage(str(seg))
    sitk.WriteImage(sitk.Cast(img == 1, sitk.sitkUInt8), str(dst), True)


# ------------------------------------------------------------------------------------------------ BIDS
def _write_tsv(rows: list[dict], path: Path, columns: list[str] | None = None) -> None:
    import csv

    columns = columns or (list(rows[0]) if rows else [])
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns, delimiter="\t", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("n/a" if r.get(k, "") in ("", None) else formula_safe(r[k])) for k in columns})


def _bids_sidecars(d: Path, names: dict, info: dict, reference: str) -> None:
    used = {"lesion": info["lesion_modalities"], "region": info["region_modalities"]}
    meta = {
        "mask": {"Type": "Lesion", "Description": "White-matter lesion mask (nnU-Net lesion model)",
                 "ModalitiesUsed": used["lesion"], "Fallback": info["lesion_fallback"] == "yes"},
        "prob": {"Description": "Probability of white-matter lesion; > 0.5 exactly where the mask is 1",
                 "ModalitiesUsed": used["lesion"], "Fallback": info["lesion_fallback"] == "yes"},
        "regions": {"Description": "36 white-matter regions (1-17 left, 18-34 right, 35/36 rest of hemisphere)",
                    "ModalitiesUsed": used["region"], "Fallback": info["region_fallback"] == "yes"},
        "regional": {"Description": "Lesion voxels carrying their region label (0 elsewhere)",
                     "ModalitiesUsed": f"lesion: {used['lesion']}; region: {used['region']}"},
    }
    for k, m in meta.items():
        write_json({"SpatialReference": reference, "Sources": [reference]} | m, d / f"{names[k]}.json")
    lut = [{"index": k, "name": REGION_NAMES[k].replace(" ", "_")} for k in range(0, 37)]
    for k in ("regions", "regional"):
        _write_tsv(lut, d / f"{names[k]}.tsv", ["index", "name"])


def _bids_tables(out: Path, rows: list[dict], loads: list[dict], lesions: list[dict], source: str,
                 version: str, bids_root: Path | None) -> None:
    links = {"DatasetLinks": {"raw": bids_root.resolve().as_uri()}} if bids_root is not None else {}
    write_json(links | {"Name": "nnunet_wmhloc: white-matter lesions and regions", "BIDSVersion": BIDS_VERSION,
                "DatasetType": "derivative",
                "GeneratedBy": [{"Name": "nnunet_wmhloc", "Version": version,
                                 "Description": "nnU-Net lesion and white-matter region models, FLAIR/T1 fusion, "
                                                "regional lesion loads (wmhloc_predict)"}],
                "SourceDatasets": [{"URL": Path(source).as_uri()}]}, out / "dataset_description.json")
    ids = sorted({r["participant_id"] for r in rows})
    _write_tsv([{"participant_id": i} for i in ids], out / "participants.tsv")
    ph = out / "phenotype"
    ph.mkdir()
    tables = {"phenotype/wmhloc_subjects": (rows, "Modalities each model used per subject, and fallbacks"),
              "phenotype/wmhloc_regional_loads": (loads, "Lesion volume (mm3) per white-matter region and its share "
                                                         "of the subject's lesion load"),
              # one row per lesion: not a phenotype table (those have one row per participant/session), so
              # kept at the root and listed in .bidsignore, as BIDS asks for files it does not define
              "lesions": (lesions, "26-connected lesion census: volume, centroid (world mm, LPS), regions")}
    for name, (data, desc) in tables.items():
        cols = list(data[0]) if data else ["participant_id"]
        _write_tsv(data, out / f"{name}.tsv", cols)
        write_json({"MeasurementToolMetadata": {"Description": desc}}
                   | {c: {"Description": c.replace("_", " ")} for c in cols}, out / f"{name}.json")
    (out / ".bidsignore").write_text("lesions.tsv\nlesions.json\n")
    (out / "README.md").write_text("White-matter lesion masks and probability maps, 36 white-matter regions and "
                                   "regional lesion loads, written by nnunet_wmhloc's wmhloc_predict.\n")
