"""wmhloc_compare's numbers: the settings loaded and paired by subject, mean ± SD tables, paired Wilcoxon
signed-rank tests with Holm correction, per-region rows."""
from __future__ import annotations

import itertools
import json
import warnings
from pathlib import Path

import numpy as np

from nnunet_wmhloc import io
from nnunet_wmhloc.evaluation import metrics as M
from nnunet_wmhloc.evaluation.evaluate import describe, fmt_mean_sd
from nnunet_wmhloc.io import WMHLocError
from nnunet_wmhloc.vocab import REGION_NAMES, REST_REGIONS, WM_REGIONS, region_column

MAIN_METRICS = {"lesion": ["dice", "hd95_mm", "avd_pct", "lesion_recall", "lesion_f1", "log_vd"],
                "region": ["mean_dice_wm", "mean_dice_rest", "wrong_hemisphere"]}
REGION_LABELS = tuple(WM_REGIONS) + tuple(REST_REGIONS)


# ----------------------------------------------------------------------------------------- loading
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


def num(x) -> float:
    try:
        return float(x) if x not in ("", None) else np.nan
    except ValueError:
        return np.nan


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


# ----------------------------------------------------------------------------------------- tables
def load_settings(settings: dict[str, Path]) -> tuple[str, dict[str, list[dict]]]:
    """(task, {setting: cases.csv rows}) of wmhloc_evaluate folders that must all be of one task."""
    loaded, tasks = {}, {}
    for name, folder in settings.items():
        tasks[name], loaded[name] = load_setting(folder)
    names = list(settings)
    if len(set(tasks.values())) > 1:
        raise WMHLocError(f"{settings[names[1]]}: task {tasks[names[1]]} differs from "
                          f"{settings[names[0]]} ({tasks[names[0]]})")
    return tasks[names[0]], loaded


def pair_by_subject(loaded: dict[str, list[dict]], first: Path) -> tuple[list[str], dict[str, list[str]],
                                                                          dict[str, list[dict]]]:
    """(subjects in every setting, {setting: subjects left out}, {setting: rows in that subject order}); each
    row's site is the one of the first setting that knows it."""
    common = set.intersection(*[{r["subject"] for r in rows} for rows in loaded.values()])
    if not common:
        raise WMHLocError(f"{first}: no subject in common with the other settings")
    left_out = {n: sorted({r["subject"] for r in rows} - common) for n, rows in loaded.items()}
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
    return order, left_out, data


def describe_table(data: dict[str, list[dict]], metrics: list[str]) -> tuple[list[dict], dict[str, dict[str, dict]]]:
    """table.csv rows (setting × group × metric) and {setting: {metric: describe()}} over all subjects."""
    sites = sorted({r["site"] for rows in data.values() for r in rows if r["site"]})
    table, stats = [], {}
    for n, rows in data.items():
        stats[n] = {}
        for g in ["all"] + sites:
            sub = [r for r in rows if g == "all" or r["site"] == g]
            for m in metrics:
                d = describe(num(r[m]) for r in sub)
                if g == "all":
                    stats[n][m] = d
                table.append({"setting": n, "group": g, "metric": m, **d})
    return table, stats


def wilcoxon_rows(data: dict[str, list[dict]], metrics: list[str]) -> list[dict]:
    """wilcoxon.csv: every pair of settings per metric, p_holm over the pairs of one metric."""
    tests = []
    for m in metrics:
        block = []
        for a, b in itertools.combinations(data, 2):
            r = paired_wilcoxon([num(x.get(m)) for x in data[a]], [num(x.get(m)) for x in data[b]])
            block.append({"metric": m, "setting_a": a, "setting_b": b, **r})
        for row, ph in zip(block, holm([r["p"] for r in block])):
            row["p_holm"] = ph
        tests.extend(block)
    return tests


def region_rows(data: dict[str, list[dict]]) -> list[dict]:
    """regions.csv: describe() of the Dice of every region per setting."""
    reg = []
    for n, rows in data.items():
        for l in REGION_LABELS:
            col = region_column(l)
            reg.append({"setting": n, "label": l, "region": REGION_NAMES[l], "column": col,
                        **describe(num(r.get(col)) for r in rows)})
    return reg


def markdown_table(stats: dict[str, dict[str, dict]], metrics: list[str], n_subjects: int) -> str:
    """table.md: mean ± SD per setting, like the paper's Table 2."""
    md = ["| setting | n | " + " | ".join(M.METRIC_LABELS.get(m, m) for m in metrics) + " |",
          "|---|---|" + "---|" * len(metrics)]
    for n in stats:
        md.append(f"| {n} | {n_subjects} | " + " | ".join(fmt_mean_sd(stats[n][m]) for m in metrics) + " |")
    return "\n".join(md) + "\n\nmean ± SD over the subjects present in every setting; paired two-sided " \
                           "Wilcoxon signed-rank tests in wilcoxon.csv.\n"
