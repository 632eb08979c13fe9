"""Location classes: per lesion (LST-AI's priority order) and per subject (distance and continuity rules).

Per lesion (26-connected components, as LST-AI's annotate.py): the lesion dilated by one voxel (3x3x3)
- touches the ventricles: periventricular;
- else touches the cortex: juxtacortical;
- else lies in the infratentorial compartment (at least half of its voxels): infratentorial;
- else deep (LST-AI's "subcortical").
LST-AI tests "touches" for infratentorial too; a majority rule keeps a deep lesion that merely abuts the
cerebral peduncle supratentorial, and makes the subject's supratentorial/infratentorial split per lesion.

Per subject (supratentorial lesions = lesions not infratentorial by the rule above, so
periventricular + deep + infratentorial = the lesion volume under either rule):
- distance rule (BIANCA's bianca_perivent_deep, "DM10"): a lesion voxel within `pv_distance_mm` (10) of
  the ventricles is periventricular, the rest deep; voxel by voxel, a lesion may be split;
- continuity rule: a whole lesion touching the ventricles is periventricular, the rest deep;
- juxtacortical_mm3: the lesions classed juxtacortical (part of deep_cc_mm3 under the continuity rule).
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from nnunet_wmhloc import io
from nnunet_wmhloc.location.context import LocationContext
from nnunet_wmhloc.vocab import LEFT_REGIONS

PV_DISTANCE_MM = 10.0
LOCATIONS = ("periventricular", "juxtacortical", "infratentorial", "deep")
LOCATION_CODES = {"periventricular": 1, "juxtacortical": 2, "deep": 3, "infratentorial": 4}  # LST-AI's codes
CONN26 = np.ones((3, 3, 3), bool)

# lobe of each left WM region 1..17 (right = left + 17): the lobe holding most of the Eve WM of the type-II
# labels merged into the region (README "Where the lesions are" lists them)
LOBE_OF_LEFT = {1: "parietal", 2: "limbic_insular", 3: "frontal", 4: "frontal", 5: "frontal", 6: "frontal",
                7: "occipital", 8: "temporal", 9: "occipital", 10: "temporal", 11: "frontal",
                12: "deep_central", 13: "deep_central", 14: "deep_central", 15: "limbic_insular",
                16: "deep_central", 17: "deep_central"}
LOBES = ("frontal", "parietal", "temporal", "occipital", "limbic_insular", "deep_central")


def lobe_of(region: int) -> str | None:
    """The lobe of one of the 34 WM regions (None for 0, 35, 36)."""
    if region in LEFT_REGIONS:
        return LOBE_OF_LEFT[region]
    if region - 17 in LEFT_REGIONS:
        return LOBE_OF_LEFT[region - 17]
    return None


def components(lesion: np.ndarray) -> tuple[np.ndarray, int]:
    return ndi.label(np.asarray(lesion, bool), CONN26)


def classify_lesions(lesion: np.ndarray, ctx: LocationContext, *, labels: tuple[np.ndarray, int] | None = None
                     ) -> list[dict]:
    """One row per lesion: lesion (component id), voxels, volume_mm3, location, ventricle_distance_mm,
    infratentorial_share, centroid (x, y, z: subject mm) and, when ctx has a transform, its atlas-space
    centroid (atlas_x, atlas_y, atlas_z: the atlas's physical mm)."""
    lab, n = labels if labels is not None else components(lesion)
    dist = ctx.ventricle_distance()
    grid = ctx.grid
    rows = []
    for i, sl in enumerate(ndi.find_objects(lab), start=1):
        if sl is None:
            continue
        big = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in sl)
        comp = lab[big] == i
        ring = ndi.binary_dilation(comp, CONN26)
        vent, cortex, infra = ctx.ventricles[big], ctx.cortex[big], ctx.infratentorial[big]
        share = float(infra[comp].mean())
        if (ring & vent).any():
            loc = "periventricular"
        elif (ring & cortex).any():
            loc = "juxtacortical"
        elif share >= 0.5:
            loc = "infratentorial"
        else:
            loc = "deep"
        idx = np.argwhere(comp).mean(0) + [s.start for s in big]  # z, y, x
        centre = grid.TransformContinuousIndexToPhysicalPoint([float(v) for v in idx[::-1]])
        d = float(dist[big][comp].min())
        row = {"lesion": i, "voxels": int(comp.sum()), "volume_mm3": float(comp.sum()) * ctx.voxel_mm3,
               "location": loc, "ventricle_distance_mm": round(d, 2) if np.isfinite(d) else None,
               "infratentorial_share": round(share, 3),
               "x": round(centre[0], 2), "y": round(centre[1], 2), "z": round(centre[2], 2)}
        if ctx.transform is not None:
            a = ctx.transform.TransformPoint(centre)
            row.update(atlas_x=round(a[0], 2), atlas_y=round(a[1], 2), atlas_z=round(a[2], 2))
        rows.append(row)
    return rows


def location_map(lab: np.ndarray, rows: list[dict], grid: sitk.Image) -> sitk.Image:
    """Lesion-location label map (uint8): 1 periventricular, 2 juxtacortical, 3 deep, 4 infratentorial."""
    lut = np.zeros(int(lab.max()) + 1, np.uint8)
    for r in rows:
        lut[r["lesion"]] = LOCATION_CODES[r["location"]]
    return io.array_to_image(lut[lab], grid)


def subject_loads(lesion: np.ndarray, ctx: LocationContext, rows: list[dict], *, regions: np.ndarray | None = None,
                  pv_distance_mm: float = PV_DISTANCE_MM, labels: tuple[np.ndarray, int] | None = None) -> dict:
    """A subject's location loads in mm3 (see the module doc); lobar loads when `regions` (labels 0..36
    on the grid) is given; icv_mm3 and the lesion load as a fraction of it."""
    lab, n = labels if labels is not None else components(lesion)
    v = ctx.voxel_mm3
    infra_ids = [r["lesion"] for r in rows if r["infratentorial_share"] >= 0.5]
    pv_ids = [r["lesion"] for r in rows if r["location"] == "periventricular" and r["lesion"] not in infra_ids]
    les = lab > 0
    supra = les & ~np.isin(lab, infra_ids)
    near = ctx.ventricle_distance() <= pv_distance_mm
    total = float(les.sum()) * v
    out = {"lesion_mm3": total, "pv_distance_mm": pv_distance_mm,
           "periventricular_mm3": float((supra & near).sum()) * v,
           "deep_mm3": float((supra & ~near).sum()) * v,
           "periventricular_cc_mm3": float(np.isin(lab, pv_ids).sum()) * v,
           "infratentorial_mm3": float((les & ~supra).sum()) * v,
           "juxtacortical_mm3": sum(r["volume_mm3"] for r in rows if r["location"] == "juxtacortical")}
    out["deep_cc_mm3"] = float(supra.sum()) * v - out["periventricular_cc_mm3"]
    if regions is not None:
        counts = np.bincount(np.asarray(regions)[les].astype(np.int64), minlength=37)
        for lobe in LOBES:
            out[f"{lobe}_mm3"] = 0.0
        for reg in range(1, 35):
            out[f"{lobe_of(reg)}_mm3"] += float(counts[reg]) * v
    out["icv_mm3"] = ctx.icv_mm3
    out["lesion_icv_fraction"] = total / out["icv_mm3"] if out["icv_mm3"] > 0 else None
    return out
