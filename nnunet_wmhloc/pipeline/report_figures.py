"""The report's figures: a subject's FLAIR with lesions coloured by region, and the cohort's loads heatmap."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_wmhloc.io import WMHLocError
from nnunet_wmhloc.pipeline.figtext import PAGE_PX, save_figure
from nnunet_wmhloc.postprocessing.loads import mm3_column
from nnunet_wmhloc.vocab import REGION_NAMES, REST_REGIONS, WM_REGIONS

N_LABELS = 37
REPORT_REGIONS = list(WM_REGIONS) + list(REST_REGIONS)


def region_mm3(row: dict, label: int) -> float:
    """A region's lesion volume in a localize row (the one regional_loads layout)."""
    return float(row.get(mm3_column(label)) or 0)


# ----------------------------------------------------------------------------------------- colours
def region_colors() -> np.ndarray:
    """RGBA per label 0..36: homologous left/right regions share a hue (the hemisphere is plain from the
    position), 35/36 grey, 0 transparent."""
    import matplotlib

    tab = matplotlib.colormaps["tab20"].colors
    extra = matplotlib.colormaps["tab20b"].colors
    base = [tab[i] for i in range(0, 20, 2)] + [tab[i] for i in range(1, 20, 2)] + list(extra)
    lut = np.zeros((N_LABELS, 4))
    for k in range(17):
        lut[1 + k, :3] = lut[18 + k, :3] = base[k][:3]
    for r in REST_REGIONS:
        lut[r, :3] = (0.55, 0.55, 0.55)
    lut[1:, 3] = 1.0
    return lut


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False})
    return plt


# ----------------------------------------------------------------------------------------- figures
def _lps(img: sitk.Image) -> np.ndarray:
    """Array (z, y, x) with x -> patient's left, y -> posterior, z -> superior."""
    return sitk.GetArrayFromImage(sitk.DICOMOrient(img, "LPS"))


def subject_figure(flair: Path, regional_map: Path, lesion: Path | None, row: dict, out_png: Path,
                   subject: str) -> None:
    """FLAIR in three planes through the slices with most lesion voxels, lesions coloured by region (white:
    lesion outside every region), and a bar chart of the subject's regional loads."""
    plt = _plt()
    fimg = sitk.ReadImage(str(flair))
    rimg = sitk.ReadImage(str(regional_map))
    f = _lps(fimg).astype(np.float32)
    r = _lps(rimg).astype(np.int64)
    les = (_lps(sitk.ReadImage(str(lesion))) == 1) if lesion is not None else r > 0
    if f.shape != r.shape:
        raise WMHLocError(f"{regional_map}: grid {r.shape} differs from the image {flair} {f.shape}")
    sx, sy, sz = sitk.DICOMOrient(fimg, "LPS").GetSpacing()
    lo, hi = np.percentile(f, [1, 99.5])
    lut = region_colors()
    overlay = lut[np.clip(r, 0, N_LABELS - 1)]
    overlay[les & (r == 0)] = (1, 1, 1, 1)

    def best(axis):
        counts = les.sum(axis=tuple(a for a in range(3) if a != axis))
        return int(np.argmax(counts)) if counts.any() else les.shape[axis] // 2

    z, y, x = best(0), best(1), best(2)
    planes = [("axial", f[z], overlay[z], sy / sx, "upper"),
              ("coronal", f[:, y, :], overlay[:, y, :], sz / sx, "lower"),
              ("sagittal", f[:, :, x], overlay[:, :, x], sz / sy, "lower")]
    fig = plt.figure(figsize=(PAGE_PX / 96, 7.4), layout="constrained")
    gs = fig.add_gridspec(2, 3, height_ratios=[1.15, 1.0])
    for i, (name, img, ov, asp, org) in enumerate(planes):
        ax = fig.add_subplot(gs[0, i])
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, aspect=asp, origin=org, interpolation="nearest")
        ov = ov.copy()
        ov[..., 3] *= 0.85
        ax.imshow(ov, aspect=asp, origin=org, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        for s in ax.spines.values():
            s.set_visible(False)
    fig.suptitle(f"{subject}: FLAIR with lesions coloured by region (radiological view: patient's left "
                 "on the right; white = outside all regions)", fontsize=9)
    ax = fig.add_subplot(gs[1, :])
    labels = [lab for lab in REPORT_REGIONS if region_mm3(row, lab) > 0]
    if labels:
        vals = [region_mm3(row, lab) for lab in labels]
        ax.bar(range(len(labels)), vals, color=[lut[lab][:3] for lab in labels], edgecolor="black", linewidth=0.4)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels([f"{lab} {REGION_NAMES[lab]}" for lab in labels], rotation=40, ha="right", fontsize=9)
        ax.set_ylabel("lesion volume (mm³)")
    else:
        ax.text(0.5, 0.5, "no lesion voxels in any region", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_title(f"regional lesion load: total {float(row.get('total_mm3') or 0):.0f} mm³, WM (1-34) "
                 f"{float(row.get('wm_mm3') or 0):.0f} mm³, {row.get('n_lesions', '?')} lesions", fontsize=9)
    save_figure(fig, out_png, PAGE_PX)


def cohort_figure(rows: list[dict], out_png: Path) -> None:
    """Subjects x regions heatmap of lesion volume (log scale)."""
    plt = _plt()
    labels = REPORT_REGIONS
    m = np.array([[region_mm3(r, lab) for lab in labels] for r in rows])
    fig, ax = plt.subplots(figsize=(PAGE_PX / 96, 1.6 + 0.22 * len(rows)))
    im = ax.imshow(np.log10(1 + m), aspect="auto", cmap="magma_r")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r["subject"] for r in rows], fontsize=9)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels([str(lab) for lab in labels], fontsize=9)
    ax.set_xlabel("region (1-17 left, 18-34 right, 35/36 rest of hemisphere)")
    cb = fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01)
    cb.set_label("log10(1 + mm³)")
    ax.set_title("lesion volume per region and subject (mm³, log scale)", fontsize=9)
    save_figure(fig, out_png, PAGE_PX)
