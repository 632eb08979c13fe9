"""wmhloc_compare's figures: violins per site (paper Fig. 2) and per region (paper Fig. 3), PNG and SVG."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from nnunet_wmhloc.evaluation import metrics as M
from nnunet_wmhloc.evaluation.statistics import num as _num
from nnunet_wmhloc.pipeline.figtext import HALF_PX, PAGE_PX, save_figure
from nnunet_wmhloc.vocab import LEFT_REGIONS, REGION_NAMES, REST_REGIONS, RIGHT_REGIONS, region_column


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.spines.top": False,
                         "axes.spines.right": False})
    return plt


COLORS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"]


def _violin(ax, values, pos, width, color):
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return
    if v.size >= 2 and np.ptp(v) > 0:  # a KDE needs spread
        parts = ax.violinplot([v], positions=[pos], widths=width, showextrema=False)
        for b in parts["bodies"]:
            b.set_facecolor(color)
            b.set_edgecolor("black")
            b.set_linewidth(0.5)
            b.set_alpha(0.55)
    jitter = (np.random.default_rng(0).random(v.size) - 0.5) * width * 0.35
    ax.scatter(pos + jitter, v, s=6, color=color, edgecolors="none", zorder=3)
    ax.hlines(np.median(v), pos - width * 0.3, pos + width * 0.3, color="black", linewidth=1.2, zorder=4)


def _save(fig, stem: Path, width_px: int) -> list[Path]:
    """PNG and SVG drawn at the width the report shows them (text >= 9 pt there)."""
    save_figure(fig, stem.with_suffix(".png"), width_px, svg=True)
    return [stem.with_suffix(".png"), stem.with_suffix(".svg")]


def violin_sites(data: dict[str, list[dict]], metric: str, stem: Path) -> list[Path]:
    """Violins of `metric` per site (all subjects first), one per setting."""
    plt = _plt()
    settings = list(data)
    sites = sorted({r["site"] for rows in data.values() for r in rows if r["site"]})
    groups = ["all"] + sites if sites else ["all"]
    k = len(settings)
    width = 0.8 / k
    fig, ax = plt.subplots(figsize=(HALF_PX / 96, 3.6))
    for gi, g in enumerate(groups):
        for si, s in enumerate(settings):
            vals = [_num(r[metric]) for r in data[s] if g == "all" or r["site"] == g]
            _violin(ax, vals, gi + (si - (k - 1) / 2) * width, width * 0.9, COLORS[si % len(COLORS)])
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{g}\n(n={sum(1 for r in next(iter(data.values())) if g == 'all' or r['site'] == g)})"
                        for g in groups])
    ax.set_ylabel(M.METRIC_LABELS.get(metric, metric))
    if metric in ("dice", "lesion_recall", "lesion_f1", "mean_dice_wm", "mean_dice_rest"):
        ax.set_ylim(-0.02, 1.02)
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLORS[i % len(COLORS)], alpha=0.6) for i in range(k)]
    ax.legend(handles, settings, frameon=False, ncol=min(k, 4), loc="lower center", bbox_to_anchor=(0.5, 1.0))
    return _save(fig, stem, HALF_PX)


def violin_regions(data: dict[str, list[dict]], stem: Path) -> list[Path]:
    """Dice per region, one violin per setting: left hemisphere (1-17, then 35 apart) above, right
    (18-34, then 36) below."""
    plt = _plt()
    settings = list(data)
    k = len(settings)
    width = 0.8 / k
    panels = [("Left hemisphere", tuple(LEFT_REGIONS), REST_REGIONS[0]),
              ("Right hemisphere", tuple(RIGHT_REGIONS), REST_REGIONS[1])]
    fig, axes = plt.subplots(2, 1, figsize=(PAGE_PX / 96, 9.0), sharey=True,
                             layout="constrained")
    for ax, (title, wm, rest) in zip(axes, panels):
        labels = list(wm) + [rest]
        pos_of = {l: i for i, l in enumerate(wm)}
        pos_of[rest] = len(wm) + 1  # gap: 35/36 are not WM regions, reported apart
        for l in labels:
            col = region_column(l)
            for si, s in enumerate(settings):
                _violin(ax, [_num(r.get(col)) for r in data[s]], pos_of[l] + (si - (k - 1) / 2) * width,
                        width * 0.9, COLORS[si % len(COLORS)])
        ax.axvline(len(wm), color="grey", linestyle=":", linewidth=0.8)
        ax.set_xticks([pos_of[l] for l in labels])
        ax.set_xticklabels([f"{REGION_NAMES[l][2:]} ({l})" if l != rest else f"other ({l})" for l in labels],
                           rotation=40, ha="right", fontsize=9)
        ax.set_ylabel("Dice")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlim(-0.6, pos_of[rest] + 0.6)
        ax.set_title(title, fontsize=9, loc="left")
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLORS[i % len(COLORS)], alpha=0.6) for i in range(k)]
    fig.legend(handles, settings, frameon=False, ncol=min(k, 4), loc="outside upper center")
    return _save(fig, stem, PAGE_PX)
