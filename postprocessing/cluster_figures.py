"""wmhloc_cluster's figures: silhouette per K, regional share per group (paper Figure 5), group profiles on
the atlas. Each writes <stem>.png and <stem>.svg into the output folder and returns their names."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from nnunet_wmhloc.io import WMHLocError
from nnunet_wmhloc.pipeline.figtext import HALF_PX, PAGE_PX, save_figure
from nnunet_wmhloc.vocab import LEFT_REGIONS, REGION_NAMES, WM_REGIONS


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9})
    return plt


def _save(fig, out: Path, stem: str, width_px: int = PAGE_PX) -> list[str]:
    """PNG and SVG drawn at the width the report shows them (text >= 9 pt there)."""
    save_figure(fig, out / f"{stem}.png", width_px, svg=True)
    return [f"{stem}.png", f"{stem}.svg"]


def plot_silhouette(scores, best_k, out: Path, norm: str):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(HALF_PX / 96, 3.4))
    ks = [s["k"] for s in scores]
    ax.plot(ks, [s["silhouette"] for s in scores], "o-", color="#1f4e79")
    b = next(s for s in scores if s["k"] == best_k)
    ax.plot([best_k], [b["silhouette"]], "o", ms=11, mfc="none", mec="#c0392b", mew=2, label=f"best K = {best_k}")
    ax.set_xlabel("number of groups K")
    ax.set_ylabel("mean silhouette")
    ax.set_xticks(ks)
    ax.set_title(f"k-means on regional loads ({norm})", fontsize=9)
    ax.legend(frameon=False, fontsize=9)
    ax.grid(alpha=0.3)
    return _save(fig, out, "silhouette", HALF_PX)


def plot_heatmap(profiles: np.ndarray, group_labels: list[str], out: Path):
    plt = _plt()
    k = profiles.shape[0]
    fig, ax = plt.subplots(figsize=(HALF_PX / 96, 10.0))
    im = ax.imshow(profiles.T * 100, aspect="auto", cmap="YlOrRd", vmin=0)
    ax.set_yticks(range(len(WM_REGIONS)))
    ax.set_yticklabels([f"{r:2d} {REGION_NAMES[r]}" for r in WM_REGIONS], fontsize=9)
    ax.set_xticks(range(k))
    ax.set_xticklabels(group_labels, fontsize=9, rotation=30, ha="right")
    if k <= 10:
        vmax = profiles.max() * 100
        for g in range(k):
            for j in range(len(WM_REGIONS)):
                v = profiles[g, j] * 100
                ax.text(g, j, f"{v:.0f}", ha="center", va="center", fontsize=9,
                        color="white" if v > 0.6 * vmax else "black")
    ax.axhline(len(LEFT_REGIONS) - 0.5, color="k", lw=0.8)
    cb = fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
    cb.set_label("share of WM lesion volume (%)")
    ax.set_title("share of WM lesion volume per region (%)", fontsize=10)
    return _save(fig, out, "heatmap", HALF_PX)


def plot_atlas(atlas_path: Path, profiles: np.ndarray, group_labels: list[str], out: Path, top: int):
    """Axial and coronal atlas slices coloured by each group's mean regional share (radiological view)."""
    import SimpleITK as sitk

    from nnunet_wmhloc.io import read_labels

    arr, src = read_labels(atlas_path, allowed=range(37), what="atlas (refined 36-label atlas, labels 0..36)")
    if not np.isin(np.arange(1, 35), np.unique(arr)).any():
        raise WMHLocError(f"{atlas_path}: atlas has none of the WM labels 1..34")
    img = sitk.GetImageFromArray(arr.astype(np.int16))
    img.CopyInformation(src)
    img = sitk.DICOMOrient(img, "LPS")  # array (z, y, x): x -> left, y -> posterior, z -> superior
    a = sitk.GetArrayFromImage(img)
    sx, sy, sz = img.GetSpacing()
    lut = np.zeros((len(profiles), 37))
    lut[:, 1:35] = profiles
    tot = lut.sum(0)[a]                               # all groups' shares painted on the atlas
    z_ax = int(np.argmax(tot.sum((1, 2))))            # slices with the most group-weighted load
    y_co = int(np.argmax(tot.sum((0, 2))))
    del tot
    vmax = float(profiles.max()) or 1.0
    plt = _plt()
    k = len(profiles)
    fig, axes = plt.subplots(k, 2, figsize=(PAGE_PX / 96, 3.6 * k + 0.8), squeeze=False,
                             layout="constrained")
    brain = a > 0
    for g in range(k):
        for col, (v, b, asp, org, name) in enumerate(
                [(lut[g][a[z_ax]], brain[z_ax], sy / sx, "upper", "axial"),
                 (lut[g][a[:, y_co, :]], brain[:, y_co, :], sz / sx, "lower", "coronal")]):
            ax = axes[g, col]
            ax.imshow(np.where(b, 0.85, 1.0), cmap="gray", vmin=0, vmax=1, aspect=asp, origin=org)
            im = ax.imshow(np.ma.masked_where(v <= 0, v * 100), cmap="YlOrRd", vmin=0, vmax=vmax * 100,
                           aspect=asp, origin=org)
            ax.set_xticks([])
            ax.set_yticks([])
            if g == 0:
                ax.set_title(name, fontsize=9)
        best = np.argsort(-profiles[g])[:top]
        names = "\n".join(f"{REGION_NAMES[WM_REGIONS[j]]} {profiles[g, j] * 100:.0f}%" for j in best)
        axes[g, 0].set_ylabel(group_labels[g], fontsize=9)
        axes[g, 1].text(1.04, 0.5, names, transform=axes[g, 1].transAxes, fontsize=9, va="center")
    fig.colorbar(im, ax=axes.ravel().tolist(), orientation="horizontal", fraction=0.03, pad=0.03,
                 shrink=0.6, label="share of WM lesion volume (%)")
    fig.text(0.01, 0.005, "radiological view: patient's left on the right", fontsize=9)
    return _save(fig, out, "atlas_maps")
