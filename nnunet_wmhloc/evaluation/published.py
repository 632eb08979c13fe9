"""The published results shipped in published.csv (with citations), set beside ours."""
from __future__ import annotations

from importlib import resources

import numpy as np

from nnunet_wmhloc import io
from nnunet_wmhloc.evaluation import metrics as M
from nnunet_wmhloc.evaluation.evaluate import fmt_mean_sd
from nnunet_wmhloc.evaluation.statistics import MAIN_METRICS
from nnunet_wmhloc.evaluation.statistics import num as _num

PUBLISHED_COLUMNS = ("source", "setting", "task", "metric", "value", "unit", "citation", "url", "notes")


def published_rows() -> list[dict]:
    """The shipped table of published results (package data published.csv)."""
    ref = resources.files("nnunet_wmhloc.evaluation") / "published.csv"
    with resources.as_file(ref) as p:
        return io.read_csv(p, required=PUBLISHED_COLUMNS)


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
