"""Location outputs of a wmhloc_predict run (issue 20; rules in nnunet_wmhloc.location and the README's
"Where the lesions are"): per subject with a T1 and --atlas-dir, the atlas registration, the location context
and classes on the lesion map's grid, written under RunLayout.location (<output>/location/):

    <subject>_ventricles.nii.gz, <subject>_lesion_location.nii.gz (1 periventricular, 2 juxtacortical,
    3 deep, 4 infratentorial), <subject>_space-atlas_lesion_mask.nii.gz (atlas grid),
    lesion_frequency_atlas.nii.gz, location_loads.csv, location_lesions.csv

and, once clustering ran, cluster/lesion_frequency_atlas_group-<g>.nii.gz (`group_frequency_maps`).

The results stage merges the tables into regional_loads.csv / lesions.csv (`merged`) and copies the images
(`result_files`); a subject without them gets empty location cells and the reason in location_note."""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_wmhloc import io
from nnunet_wmhloc.io import WMHLocError, atomic_dir, read_csv, write_csv, write_json
from nnunet_wmhloc.location.rows import IMAGES, locate_files
from nnunet_wmhloc.postprocessing.loads import LESION_LOCATION_COLUMNS, LOCATION_COLUMNS

LOADS, LESIONS, FREQUENCY = "location_loads.csv", "location_lesions.csv", "lesion_frequency_atlas.nii.gz"
GROUP_FREQUENCY = "lesion_frequency_atlas_group-{group}.nii.gz"  # in cluster/, one per k-means group
SETTINGS = "location.json"  # the atlas folder (the report's underlay) and the rule's distance
NO_ATLAS = "no --atlas-dir: location classes need the atlas registration"
NO_T1 = "no T1: location classes need the atlas registration of a T1"


def _t1(layout, s) -> Path | None:
    """The converted T1 (on the FLAIR grid, registered with --register-t1), else the cohort's."""
    p = layout.images / f"{s.subject}_t1_0000.nii.gz"
    return p if p.is_file() else (Path(s.images["t1"]) if s.images.get("t1") else None)


def _regions_on(path: Path, grid: sitk.Image) -> np.ndarray:
    img = io.read_image(path, what="region map")
    if io.geometry(img) != io.geometry(grid):  # the model's FLAIR grid vs a lesion map stored otherwise
        img = sitk.Resample(img, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return sitk.GetArrayFromImage(img).astype(np.int16)


def locate_subject(s, lay, atlas, priors, *, t1: Path, atlas_regions: bool, pv_distance: float, tmp: Path,
                   rtmp: Path | None) -> tuple[dict, list[dict], sitk.Image]:
    """One subject: registration, region map when `atlas_regions` (into `rtmp`), location images (into
    `tmp`); returns its location_loads row, its location_lesions rows and its atlas-space mask."""
    from nnunet_wmhloc.pipeline.model_free import atlas_regions as carry_regions

    lesion = io.read_image(lay.segmentations("lesion") / f"{s.subject}.nii.gz", what="lesion map")
    mask = sitk.GetArrayFromImage(lesion) == 1

    def regions(reg) -> np.ndarray:
        if not atlas_regions:
            return _regions_on(lay.segmentations("region") / f"{s.subject}.nii.gz", lesion)
        img = carry_regions(reg, atlas, lesion, mask)
        io.write_image(img, rtmp / f"{s.subject}.nii.gz")
        return sitk.GetArrayFromImage(img)

    return locate_files(s.subject, lesion, mask, t1, atlas, priors, regions=regions, pv_distance=pv_distance,
                        out=tmp)


def locate_cohort(ctx, subjects: list, a, *, atlas_regions_too: bool, t1_of=None) -> dict:
    """location/ for every subject (and segmentations/region/ with --regions atlas). A failed registration
    stops the run with --regions atlas (no region map); else it is the subject's location_note.
    `t1_of(subject)`: its T1 path or None (default: wmhloc_predict's converted or cohort T1)."""
    from nnunet_wmhloc.pipeline.model_free import load_atlas

    lay = ctx.layout
    t1_of = t1_of or (lambda s: _t1(lay, s))
    atlas, priors = load_atlas(a.atlas_dir) if a.atlas_dir is not None else (None, None)
    loads, lesions, masks = [], [], {}
    regions_dir = atomic_dir(lay.segmentations("region"), overwrite=True) if atlas_regions_too else nullcontext()
    with atomic_dir(lay.location, overwrite=True) as tmp, regions_dir as rtmp:
        for s in subjects:
            if not (lay.segmentations("lesion") / f"{s.subject}.nii.gz").is_file():
                continue  # not predicted: localize has no row for it either
            t1 = t1_of(s)
            if atlas is None or t1 is None:
                loads.append({"subject": s.subject, "location_note": NO_ATLAS if atlas is None else NO_T1})
                continue
            try:
                row, rows, masks[s.subject] = locate_subject(
                    s, lay, atlas, priors, t1=t1, atlas_regions=atlas_regions_too, pv_distance=a.pv_distance,
                    tmp=tmp, rtmp=rtmp)
            except WMHLocError as e:
                if atlas_regions_too:
                    raise
                loads.append({"subject": s.subject, "location_note": str(e)})
                continue
            loads.append(row)
            lesions += rows
            ctx.log(f"{s.subject}: located {len(rows)} lesions")
        if masks:
            from nnunet_wmhloc.location import frequency_map
            io.write_image(frequency_map(masks.values()), tmp / FREQUENCY)
        write_csv(loads, tmp / LOADS, columns=["subject", *LOCATION_COLUMNS])
        write_json({"atlas_dir": str(Path(a.atlas_dir).resolve()) if a.atlas_dir is not None else None,
                    "pv_distance_mm": a.pv_distance}, tmp / SETTINGS)
        write_csv(lesions, tmp / LESIONS, columns=["subject", "lesion_id", *LESION_LOCATION_COLUMNS])
    ctx.say(f"location classes: {len(masks)} of {len(loads)} subjects -> {lay.location}")
    return {"located": len(masks), "not_located": len(loads) - len(masks)}


def run_stage(ctx, images: Path, a, t1_of=None) -> dict:
    """wmhloc_run's location stage: every subject with a fused lesion map and a T1 among the test cases
    (`images`; `t1_of(subject)` instead when given); with no --atlas-dir one line and nothing written (an
    earlier run's location/ is removed)."""
    from types import SimpleNamespace

    if a.atlas_dir is None:
        io.remove_owned(ctx.layout.location)
        ctx.say(f"location classes skipped: {NO_ATLAS} (wmhloc_run --atlas-dir ATLAS)")
        return {"skipped": NO_ATLAS}
    subjects = [SimpleNamespace(subject=p.name[:-len(".nii.gz")], images={})
                for p in sorted(ctx.layout.segmentations("lesion").glob("*.nii.gz"))]

    def test_t1(s) -> Path | None:
        t1 = images / f"{s.subject}_t1_0000.nii.gz"
        return t1 if t1.is_file() else None
    t1_of = t1_of or test_t1

    return locate_cohort(ctx, subjects, a, atlas_regions_too=False, t1_of=t1_of)


@dataclass
class Tables:
    loads: list
    lesions: list


def merged(layout, tables) -> Tables:
    """The localize stage's `tables` with the location columns of location/ (empty cells and a note when a
    subject has none)."""
    d = layout.location
    loc = {r["subject"]: r for r in read_csv(d / LOADS)} if (d / LOADS).is_file() else {}
    les = {(r["subject"], r["lesion_id"]): r for r in read_csv(d / LESIONS)} if (d / LESIONS).is_file() else {}
    gone = {"location_note": "location stage did not run"}
    loads = [r | {c: loc.get(r["subject"], gone).get(c, "") for c in LOCATION_COLUMNS} for r in tables.loads]
    lesions = [r | {c: les.get((r["subject"], r["lesion_id"]), {}).get(c, "") for c in LESION_LOCATION_COLUMNS}
               for r in tables.lesions]
    return Tables(loads=loads, lesions=lesions)


def result_files(layout, subject: str, bids_stem: str | None = None) -> dict[str, Path]:
    """{file name in results/<subject>/: source} of the subject's location images that exist."""
    d = layout.location
    bids = {"ventricles": "desc-ventricles_mask", "lesion_location": "desc-lesionlocation_dseg",
            "space-atlas_lesion_mask": "desc-lesion_mask"}
    out = {}
    for name in IMAGES:
        src = d / f"{subject}_{name}.nii.gz"
        if src.is_file():
            if bids_stem is None:
                out[f"{subject}_{name}.nii.gz"] = src
            else:  # the atlas mask is in the atlas's space, the others in the FLAIR's (the stem's)
                stem = bids_stem.replace("_space-FLAIR", "_space-atlas") if name.startswith("space-") else bids_stem
                out[f"{stem}_{bids[name]}.nii.gz"] = src
    return out


def group_frequency_maps(layout, assignments: list[dict]) -> list[Path]:
    """cluster/lesion_frequency_atlas_group-<g>.nii.gz: the lesion-frequency map of each cluster group (its
    subjects with an atlas-space mask in location/), on the atlas grid; none when location did not run."""
    from nnunet_wmhloc.location import frequency_maps

    groups = {r["subject"]: str(r["group"]) for r in assignments if str(r.get("group", "")).isdigit()}
    masks = {s: io.read_image(p, what="atlas-space lesion mask") for s in groups
             if (p := layout.location / f"{s}_space-atlas_lesion_mask.nii.gz").is_file()}
    if not masks:
        return []
    maps = frequency_maps(masks, {s: groups[s] for s in masks})
    maps.pop("all")  # the cohort's own map is location/'s
    return [io.write_image(img, layout.cluster / GROUP_FREQUENCY.format(group=g), overwrite=True)
            for g, img in maps.items()]


def frequency_file(layout) -> Path | None:
    p = layout.location / FREQUENCY
    return p if p.is_file() else None
