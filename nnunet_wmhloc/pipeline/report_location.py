"""The report's "Where the lesions are" section, when the location stage ran (<output>/location/, see
pipeline/location_outputs.py): the location classes per subject and per group (mm³ and % of the lesion
volume), and the atlas-space lesion-frequency map as axial slices over the atlas T1, for the cohort and for
each cluster group. Rules and references: README "Where the lesions are"."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_wmhloc.io import read_csv, read_json
from nnunet_wmhloc.pipeline import location_outputs as LO
from nnunet_wmhloc.pipeline.figtext import PAGE_PX, save_figure

N_SLICES = 6


def _num(v) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) else None


def class_volumes(row: dict) -> dict[str, float]:
    """mm³ per heading. The lesion classes (LST-AI's order, whole lesions) add up to the lesion volume:
    periventricular = touching the ventricles (continuity rule), juxtacortical, deep = the rest of the
    supratentorial lesions, infratentorial. The distance rule splits the supratentorial voxels again."""
    v = {c: _num(row.get(c)) or 0.0 for c in ("periventricular_cc_mm3", "deep_cc_mm3", "juxtacortical_mm3",
                                               "infratentorial_mm3", "periventricular_mm3", "deep_mm3")}
    return {"lesion": v["periventricular_mm3"] + v["deep_mm3"] + v["infratentorial_mm3"],
            "periventricular": v["periventricular_cc_mm3"], "juxtacortical": v["juxtacortical_mm3"],
            "deep": max(v["deep_cc_mm3"] - v["juxtacortical_mm3"], 0.0), "infratentorial": v["infratentorial_mm3"],
            "within": v["periventricular_mm3"], "beyond": v["deep_mm3"]}


def _class_cells(vals: dict[str, float], n: int, pv: float) -> dict:
    """mm³ per class (divided by `n`: a mean per subject) and its % of the summed lesion volume."""
    total = vals["lesion"]
    names = {"periventricular": "periventricular", "juxtacortical": "juxtacortical", "deep": "deep",
             "infratentorial": "infratentorial", "within": f"periventricular ≤ {pv:g} mm,", "beyond": f"deep > {pv:g} mm,"}
    out = {"lesion mm³": f"{total / n:.0f}"}
    for key, name in names.items():
        share = f" ({100 * vals[key] / total:.0f} %)" if total > 0 else ""
        out[f"{name} mm³ (%)"] = f"{vals[key] / n:.0f}{share}"
    return out


def groups_of(run) -> dict[str, str]:
    """subject -> its cluster group's name (empty when clustering did not run)."""
    p = run.cluster / "assignments.csv"
    return {r["subject"]: r.get("group_name") or r.get("group", "") for r in read_csv(p)} if p.is_file() else {}


def class_tables(loads: list[dict], groups: dict[str, str], pv: float) -> tuple[list[dict], list[dict]]:
    """(per subject rows, per group rows); subjects without location cells are left out of the groups and
    keep their note. A group's mm³ are means per subject, its % of the group's summed lesion volume."""
    subjects, pooled = [], {}
    for r in loads:
        g = groups.get(r["subject"], "")
        base = {"subject": r["subject"], **({"group": g} if groups else {})}
        if _num(r.get("periventricular_mm3")) is None:
            subjects.append(base | {"note": r.get("location_note", "")})
            continue
        vals = class_volumes(r)
        subjects.append(base | _class_cells(vals, 1, pv) | {"note": r.get("location_note", "")})
        for key in ["all subjects"] + ([g] if g else []):
            acc = pooled.setdefault(key, {"n": 0} | {k: 0.0 for k in vals})
            acc["n"] += 1
            for k, x in vals.items():
                acc[k] += x
    rows = [{"group": key, "subjects": acc["n"]} | _class_cells(acc, acc["n"], pv) for key, acc in pooled.items()]
    return subjects, rows


def _atlas_t1(atlas_dir: str | None) -> sitk.Image | None:
    from nnunet_wmhloc.atlas import _atlas

    if not atlas_dir:
        return None
    d = Path(atlas_dir)
    p = d / (_atlas.T1 if (d / _atlas.MANIFEST).is_file() else _atlas.EVE_T1)
    return sitk.ReadImage(str(p), sitk.sitkFloat32) if p.is_file() else None


def _lps(img: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.DICOMOrient(img, "LPS"))


def frequency_figure(maps: dict[str, sitk.Image], counts: dict[str, int], atlas_t1: sitk.Image | None,
                     out_png: Path) -> None:
    """One row of axial slices per map (the cohort's, then each group's): the share of subjects (%) with a
    lesion at each atlas voxel, over the atlas T1; the slices span the cohort map's lesion extent."""
    from nnunet_wmhloc.pipeline.report_figures import _plt

    plt = _plt()
    arrays = {k: 100 * _lps(m) for k, m in maps.items()}
    ref = next(iter(maps.values()))
    under = _lps(sitk.Resample(atlas_t1, ref)) if atlas_t1 is not None else None
    cohort = next(iter(arrays.values()))
    zs = np.flatnonzero(cohort.reshape(cohort.shape[0], -1).max(1) > 0)
    lo, hi = (zs[0], zs[-1]) if zs.size else (cohort.shape[0] // 3, 2 * cohort.shape[0] // 3)
    slices = np.unique(np.linspace(lo, hi, N_SLICES + 2)[1:-1].round().astype(int)) if hi > lo else [lo]
    sx, sy, _ = sitk.DICOMOrient(ref, "LPS").GetSpacing()
    origin_z = sitk.DICOMOrient(ref, "LPS").TransformIndexToPhysicalPoint((0, 0, 0))[2]
    sz = sitk.DICOMOrient(ref, "LPS").GetSpacing()[2]
    vmax = max(float(a.max()) for a in arrays.values()) or 100.0
    fig, axes = plt.subplots(len(arrays), len(slices), figsize=(PAGE_PX / 96, 0.4 + 2.1 * len(arrays)),
                             squeeze=False, layout="constrained")
    for i, (name, a) in enumerate(arrays.items()):
        for j, z in enumerate(slices):
            ax = axes[i, j]
            if under is not None:
                ax.imshow(under[z], cmap="gray", aspect=sy / sx, interpolation="nearest")
            im = ax.imshow(np.ma.masked_equal(a[z], 0), cmap="hot", vmin=0, vmax=vmax, aspect=sy / sx,
                           interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"z = {origin_z + z * sz:.0f} mm", fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{name} (n = {counts[name]})", fontsize=9)
    cb = fig.colorbar(im, ax=axes, fraction=0.02, pad=0.01)
    cb.set_label("subjects with a lesion (%)", fontsize=9)
    cb.ax.tick_params(labelsize=9)
    save_figure(fig, out_png, PAGE_PX)


def _masks(run, subjects) -> dict[str, sitk.Image]:
    out = {}
    for s in subjects:
        p = run.location / f"{s}_space-atlas_lesion_mask.nii.gz"
        if p.is_file():
            out[s] = sitk.ReadImage(str(p))
    return out


def location_section(rep, run, loads: list[dict], png: str = "lesion_frequency_atlas.png") -> dict | None:
    """The section's tables and figure (figures/`png`), or None when the location stage did not run."""
    from nnunet_wmhloc.location import frequency_maps
    from nnunet_wmhloc.pipeline.report import table

    if not (run.location / LO.LOADS).is_file():
        return None
    settings = read_json(run.location / LO.SETTINGS) if (run.location / LO.SETTINGS).is_file() else {}
    groups = groups_of(run)
    pv = float(settings.get("pv_distance_mm") or 10.0)
    per_subject, per_group = class_tables(loads, groups, pv)
    out = {"subjects": table(per_subject), "groups": table(per_group), "figure": None, "pv_distance": f"{pv:g}"}
    masks = _masks(run, [r["subject"] for r in loads])
    if masks:
        maps = frequency_maps(masks, {s: g for s, g in groups.items() if s in masks and g})
        named = {"all subjects": maps.pop("all"), **maps}
        counts = {"all subjects": len(masks)} | {g: sum(groups.get(s) == g for s in masks) for g in maps}
        png = rep.folder / "figures" / png
        frequency_figure(named, counts, _atlas_t1(settings.get("atlas_dir")), png)
        who = f"the {len(masks)} subjects with an atlas registration" + (
            ", then per cluster group" if len(named) > 1 else "")
        out["figure"] = rep.figure(png, png.name, (
            f"Lesion frequency in atlas space: the share (%, colour) of {who} whose lesion mask, carried onto the "
            f"atlas grid by the inverse of its registration, covers each voxel; axial slices (atlas z in mm) over "
            f"the atlas T1, radiological view (patient's left on the right)."))
    return out


def model_free_section(rep, run) -> dict | None:
    """wmhloc_run --demo's model-free run (<output>/model_free/, a run layout of its own): how long it took, the
    lesion volume per subject inside and outside the atlas regions, and its location section; None without it."""
    from nnunet_wmhloc.layout import RunLayout
    from nnunet_wmhloc.postprocessing.loads import read_localize

    if not run.model_free_summary.is_file():
        return None
    summary = read_json(run.model_free_summary)
    mf = RunLayout(run.model_free)
    loads = LO.merged(mf, read_localize(mf.localize)).loads
    rows = [{"subject": r["subject"], "lesion mm³": r["total_mm3"],
             "in regions mm³": (_num(r["total_mm3"]) or 0.0) - (_num(r["outside_mm3"]) or 0.0),
             "outside the regions mm³": r["outside_mm3"]} for r in loads]
    return {"seconds": f"{float(summary['seconds']):.1f}", "n": len(loads), "atlas_dir": summary.get("atlas_dir", ""),
            "loads": rep.csv_table(mf.regional_loads, "model_free_regional_loads.csv", rows=rows),
            "location": location_section(rep, mf, loads, png="model_free_lesion_frequency_atlas.png")}
