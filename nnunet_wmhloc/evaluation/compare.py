"""wmhloc_compare: set evaluation results of the same subjects side by side (e.g. T1, FLAIR, fused).

Input: two or more folders written by wmhloc_evaluate (``--results NAME=DIR``), all of one task.
Cases are paired by subject id; only subjects present in every setting are used (the others are
listed), so every mean, SD and test is on the same subjects.

Outputs in --output:
- ``table.csv`` (setting × group × metric: n, mean, SD, median, min, max; group = all and each site) and
  ``table.md`` (mean ± SD per setting, like the paper's Table 2);
- ``wilcoxon.csv``: paired two-sided Wilcoxon signed-rank test (scipy, zero differences dropped) for
  every pair of settings and metric, on the subjects where both values are finite; p_holm = Holm
  correction over the setting pairs of one metric;
- ``violin_sites_<metric>.png/.svg``: per site, one violin per setting (paper Fig. 2);
- region task: ``regions.csv`` (mean ± SD per region and setting) and ``violin_regions.png/.svg``
  (Dice per region 1-34, then 35/36 apart; paper Fig. 3);
- ``compare.json``: inputs, subjects used and left out;
- with ``--published``: ``published_comparison.csv`` and the table printed beside the published
  results shipped in ``published.csv`` (with citations).
"""
from __future__ import annotations

import itertools
import json
import sys
import warnings
from importlib import resources
from pathlib import Path

import numpy as np

from nnunet_wmhloc import cli, io
from nnunet_wmhloc.vocab import (LEFT_REGIONS, REGION_NAMES, REST_REGIONS, RIGHT_REGIONS, WM_REGIONS,
                                         region_column)
from nnunet_wmhloc.evaluation import metrics as M
from nnunet_wmhloc.evaluation.evaluate import describe, fmt_mean_sd
from nnunet_wmhloc.io import WMHLocError

MAIN_METRICS = {"lesion": ["dice", "hd95_mm", "avd_pct", "lesion_recall", "lesion_f1", "log_vd"],
                "region": ["mean_dice_wm", "mean_dice_rest", "wrong_hemisphere"]}
REGION_LABELS = tuple(WM_REGIONS) + tuple(REST_REGIONS)
PUBLISHED_COLUMNS = ("source", "setting", "task", "metric", "value", "unit", "citation", "url", "notes")


# ----------------------------------------------------------------------------------------- loading
def parse_results(items: list[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for it in items:
        name, sep, path = it.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise WMHLocError(f"{it}: expected NAME=DIR (e.g. FLAIR=eval_flair)")
        name = name.strip()
        if name in out:
            raise WMHLocError(f"{it}: setting name {name!r} given twice")
        out[name] = Path(path.strip())
    return out


def load_setting(folder: Path) -> tuple[str, list[dict]]:
    """(task, rows) of one wmhloc_evaluate output folder."""
    io.check_path(folder, what="evaluation folder", kind="dir")
    sj = folder / "summary.json"
    if not sj.is_file():
        raise WMHLocError(f"{sj}: not found (is {folder} a wmhloc_evaluate output folder?)")
    try:
        task = json.loads(sj.read_text(encoding="utf-8"))["task"]
    except (ValueError, KeyError, TypeError):
        raise WMHLocError(f"{sj}: not a wmhloc_evaluate summary (no task)") from None
    if task not in MAIN_METRICS:
        raise WMHLocError(f"{sj}: unknown task {task!r}")
    cases = folder / "cases.csv"
    rows = io.read_csv(cases, required=["case", "subject", "site"] + MAIN_METRICS[task])
    if not rows:
        raise WMHLocError(f"{cases}: no cases")
    seen: dict[str, str] = {}
    for r in rows:
        if r["subject"] in seen:
            raise WMHLocError(f"{cases}: subject {r['subject']} appears twice ({seen[r['subject']]}, {r['case']}); "
                              "evaluate one modality per folder (wmhloc_evaluate --include '*_t1')")
        seen[r["subject"]] = r["case"]
    return task, rows


def _num(x) -> float:
    try:
        return float(x) if x not in ("", None) else np.nan
    except ValueError:
        return np.nan


def published_rows() -> list[dict]:
    """The shipped table of published results (package data published.csv)."""
    ref = resources.files("nnunet_wmhloc.evaluation") / "published.csv"
    with resources.as_file(ref) as p:
        return io.read_csv(p, required=PUBLISHED_COLUMNS)


# ----------------------------------------------------------------------------------------- statistics
def holm(pvalues: list[float]) -> list[float]:
    """Holm step-down adjusted p-values (NaNs kept, not counted)."""
    p = np.asarray(pvalues, dtype=float)
    ok = np.flatnonzero(np.isfinite(p))
    out = np.full(p.shape, np.nan)
    m = ok.size
    running = 0.0
    for rank, i in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def paired_wilcoxon(a, b) -> dict:
    """Two-sided Wilcoxon signed-rank test on the pairs where both values are finite."""
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    d = a - b
    res = {"n_pairs": int(a.size), "mean_a": float(a.mean()) if a.size else np.nan,
           "mean_b": float(b.mean()) if b.size else np.nan,
           "median_diff": float(np.median(d)) if d.size else np.nan, "statistic": np.nan, "p": np.nan}
    if d.size == 0:
        return res
    if np.all(d == 0):  # identical settings: no evidence of a difference
        res.update(statistic=0.0, p=1.0)
        return res
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = stats.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided")
    res.update(statistic=float(t.statistic), p=float(t.pvalue))
    return res


# ----------------------------------------------------------------------------------------- plots
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


def _save(fig, stem: Path) -> list[Path]:
    out = []
    for ext in (".png", ".svg"):
        p = stem.with_suffix(ext)
        fig.savefig(p, dpi=200, bbox_inches="tight")
        out.append(p)
    return out


def violin_sites(data: dict[str, list[dict]], metric: str, stem: Path) -> list[Path]:
    """Violins of `metric` per site (all subjects first), one per setting."""
    plt = _plt()
    settings = list(data)
    sites = sorted({r["site"] for rows in data.values() for r in rows if r["site"]})
    groups = ["all"] + sites if sites else ["all"]
    k = len(settings)
    width = 0.8 / k
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(groups) * max(k, 2) * 0.6), 3.4))
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
    ax.legend(handles, settings, frameon=False, ncol=min(k, 4), loc="upper center", bbox_to_anchor=(0.5, 1.15))
    fig.tight_layout()
    out = _save(fig, stem)
    plt.close(fig)
    return out


def violin_regions(data: dict[str, list[dict]], stem: Path) -> list[Path]:
    """Dice per region, one violin per setting: left hemisphere (1-17, then 35 apart) above, right
    (18-34, then 36) below."""
    plt = _plt()
    settings = list(data)
    k = len(settings)
    width = 0.8 / k
    panels = [("Left hemisphere", tuple(LEFT_REGIONS), REST_REGIONS[0]),
              ("Right hemisphere", tuple(RIGHT_REGIONS), REST_REGIONS[1])]
    n_pos = len(LEFT_REGIONS) + 2
    fig, axes = plt.subplots(2, 1, figsize=(max(8.0, 0.3 * n_pos * max(k, 2) + 1.5), 7.5), sharey=True)
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
                           rotation=40, ha="right", fontsize=7)
        ax.set_ylabel("Dice")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlim(-0.6, pos_of[rest] + 0.6)
        ax.set_title(title, fontsize=9, loc="left")
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLORS[i % len(COLORS)], alpha=0.6) for i in range(k)]
    fig.legend(handles, settings, frameon=False, ncol=min(k, 4), loc="upper center")
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    out = _save(fig, stem)
    plt.close(fig)
    return out


# ----------------------------------------------------------------------------------------- published
def published_comparison(task: str, stats: dict[str, dict[str, dict]], published: list[dict]) -> tuple[list[dict], str]:
    """Rows for published_comparison.csv and a printable table (ours mean ± SD beside published values)."""
    pub = [r for r in published if r["task"] == task]
    metrics = [m for m in MAIN_METRICS[task] if any(r["metric"] == m for r in pub)] or MAIN_METRICS[task][:1]
    pub_cols = []
    for r in pub:
        key = (r["source"], r["setting"])
        if key not in pub_cols:
            pub_cols.append(key)
    rows = []
    for s, md in stats.items():
        for m in metrics:
            d = md[m]
            rows.append({"kind": "ours", "source": "this run", "setting": s, "metric": m, "value": d["mean"],
                         "sd": d["sd"], "n": d["n"], "citation": "", "url": ""})
    for r in pub:
        rows.append({"kind": "published", "source": r["source"], "setting": r["setting"], "metric": r["metric"],
                     "value": _num(r["value"]), "sd": np.nan, "n": "", "citation": r["citation"], "url": r["url"]})
    header = ["metric"] + [f"ours: {s}" for s in stats] + [f"{src}: {st}" for src, st in pub_cols]
    lines = [header]
    for m in metrics:
        line = [M.METRIC_LABELS.get(m, m)] + [fmt_mean_sd(stats[s][m]) for s in stats]
        for src, st in pub_cols:
            v = [r["value"] for r in pub if r["source"] == src and r["setting"] == st and r["metric"] == m]
            line.append(v[0] if v else "-")
        lines.append(line)
    widths = [max(len(str(l[i])) for l in lines) for i in range(len(header))]
    text = "\n".join("  ".join(str(c).ljust(w) for c, w in zip(l, widths)).rstrip() for l in lines)
    cites = {}
    for r in pub:
        cites.setdefault(r["source"], (r["citation"], r["url"]))
    text += "\n" + "\n".join(f"  [{k}] {c} {u}" for k, (c, u) in cites.items())
    return rows, text


# ----------------------------------------------------------------------------------------- CLI
def build_parser():
    p = cli.parser("wmhloc_compare", "Compare wmhloc_evaluate results of the same subjects across settings "
                   "(e.g. T1, FLAIR, fused): mean ± SD table, paired Wilcoxon signed-rank tests, violin plots "
                   "per site and per region, and the published results beside ours.")
    p.add_argument("--results", nargs="+", required=True, metavar="NAME=DIR",
                   help="evaluation output folders, e.g. FLAIR=eval_flair T1=eval_t1 fused=eval_fused")
    p.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    p.add_argument("--published", action="store_true", help="print our results beside the published ones "
                   "(paper and the challenge's top entry) and write published_comparison.csv")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    return p


def _main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    settings = parse_results(args.results)
    if len(settings) < 2 and not args.published:
        raise WMHLocError(f"{args.results[0]}: need two or more --results to compare (or --published)")
    io.check_output(args.output, overwrite=args.overwrite, inputs=list(settings.values()))
    loaded, tasks = {}, {}
    for name, folder in settings.items():
        tasks[name], loaded[name] = load_setting(folder)
    if len(set(tasks.values())) > 1:
        raise WMHLocError(f"{settings[list(settings)[1]]}: task {tasks[list(settings)[1]]} differs from "
                          f"{settings[list(settings)[0]]} ({tasks[list(settings)[0]]})")
    task = next(iter(tasks.values()))

    subject_sets = [{r["subject"] for r in rows} for rows in loaded.values()]
    common = set.intersection(*subject_sets)
    if not common:
        raise WMHLocError(f"{settings[list(settings)[0]]}: no subject in common with the other settings")
    left_out = {n: sorted({r["subject"] for r in rows} - common) for n, rows in loaded.items()}
    # pair by subject: same subject order in every setting; site from the first setting that knows it
    order = sorted(common)
    site_of = {}
    for rows in loaded.values():
        for r in rows:
            if r["site"] and r["subject"] in common:
                site_of.setdefault(r["subject"], r["site"])
    data = {}
    for n, rows in loaded.items():
        by = {r["subject"]: dict(r) for r in rows}
        data[n] = [dict(by[s], site=site_of.get(s, "")) for s in order]

    metrics = MAIN_METRICS[task]
    sites = sorted(set(site_of.values()))
    groups = ["all"] + sites
    table, stats = [], {}
    for n, rows in data.items():
        stats[n] = {}
        for g in groups:
            sub = [r for r in rows if g == "all" or r["site"] == g]
            for m in metrics:
                d = describe(_num(r[m]) for r in sub)
                if g == "all":
                    stats[n][m] = d
                table.append({"setting": n, "group": g, "metric": m, **d})

    test_metrics = metrics + ([region_column(l) for l in REGION_LABELS] if task == "region" else [])
    tests = []
    for m in test_metrics:
        block = []
        for a, b in itertools.combinations(data, 2):
            r = paired_wilcoxon([_num(x.get(m)) for x in data[a]], [_num(x.get(m)) for x in data[b]])
            block.append({"metric": m, "setting_a": a, "setting_b": b, **r})
        for row, ph in zip(block, holm([r["p"] for r in block])):
            row["p_holm"] = ph
        tests.extend(block)

    md = ["| setting | n | " + " | ".join(M.METRIC_LABELS.get(m, m) for m in metrics) + " |",
          "|---|---|" + "---|" * len(metrics)]
    for n in data:
        md.append(f"| {n} | {len(order)} | " + " | ".join(fmt_mean_sd(stats[n][m]) for m in metrics) + " |")
    md_text = "\n".join(md) + "\n\nmean ± SD over the subjects present in every setting; paired two-sided " \
                              "Wilcoxon signed-rank tests in wilcoxon.csv.\n"

    pub_rows, pub_text = (published_comparison(task, stats, published_rows()) if args.published else ([], ""))
    with io.atomic_dir(args.output, overwrite=args.overwrite) as tmp:
        io.write_csv(table, tmp / "table.csv",
                     columns=["setting", "group", "metric", "n", "n_nan", "mean", "sd", "median", "min", "max"])
        io.write_text(md_text, tmp / "table.md")
        if tests:
            io.write_csv(tests, tmp / "wilcoxon.csv", columns=["metric", "setting_a", "setting_b", "n_pairs",
                                                               "mean_a", "mean_b", "median_diff", "statistic",
                                                               "p", "p_holm"])
        figures = []
        for m in metrics:
            figures += violin_sites(data, m, tmp / f"violin_sites_{m}")
        if task == "region":
            reg = []
            for n, rows in data.items():
                for l in REGION_LABELS:
                    col = region_column(l)
                    reg.append({"setting": n, "label": l, "region": REGION_NAMES[l], "column": col,
                                **describe(_num(r.get(col)) for r in rows)})
            io.write_csv(reg, tmp / "regions.csv")
            figures += violin_regions(data, tmp / "violin_regions")
        if pub_rows:
            io.write_csv(pub_rows, tmp / "published_comparison.csv")
        io.write_json({"task": task, "settings": {n: str(p.resolve()) for n, p in settings.items()},
                       "n_subjects": len(order), "subjects": order, "left_out": left_out,
                       "figures": [f.name for f in figures]}, tmp / "compare.json")

    for n, lo in left_out.items():
        if lo:
            print(f"note: {n}: {len(lo)} subject(s) not in every setting, left out: {', '.join(lo[:10])}",
                  file=sys.stderr)
    print(f"{len(order)} subject(s), task {task}, {len(data)} setting(s) → {args.output}")
    print(md_text.split("\n\n")[0])
    for t in tests:
        if t["metric"] in metrics:
            print(f"  {t['metric']}: {t['setting_a']} vs {t['setting_b']}: n={t['n_pairs']} "
                  f"p={t['p']:.4g} (Holm {t['p_holm']:.4g})")
    if args.published:
        print("\nPublished results beside ours:")
        print(pub_text)
    return 0


def main(argv=None) -> int:
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
