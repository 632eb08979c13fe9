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

`compare()` does the work (numbers in ``statistics.py``, figures in ``figures.py``, the published table in
``published.py``) and returns a `Comparison`; `main` only parses and prints.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from nnunet_wmhloc import cli, io
from nnunet_wmhloc.evaluation.figures import violin_regions, violin_sites
from nnunet_wmhloc.evaluation.published import published_comparison, published_rows
from nnunet_wmhloc.evaluation.statistics import (MAIN_METRICS, REGION_LABELS, describe_table, load_settings,
                                                 markdown_table, pair_by_subject, region_rows, wilcoxon_rows)
from nnunet_wmhloc.io import WMHLocError
from nnunet_wmhloc.vocab import region_column

WILCOXON_COLUMNS = ["metric", "setting_a", "setting_b", "n_pairs", "mean_a", "mean_b", "median_diff", "statistic",
                    "p", "p_holm"]
TABLE_COLUMNS = ["setting", "group", "metric", "n", "n_nan", "mean", "sd", "median", "min", "max"]


@dataclass
class Comparison:
    task: str
    output: Path
    settings: dict[str, Path]
    subjects: list[str]                    # in every setting: the ones every number is on
    left_out: dict[str, list[str]]         # per setting: its subjects missing from another setting
    table: list[dict]                      # table.csv
    stats: dict[str, dict[str, dict]]      # {setting: {metric: describe()}} over all subjects
    tests: list[dict]                      # wilcoxon.csv
    markdown: str                          # table.md
    regions: list[dict] = field(default_factory=list)      # regions.csv (region task)
    published: list[dict] = field(default_factory=list)    # published_comparison.csv
    published_text: str = ""
    figures: list[Path] = field(default_factory=list)

    def lines(self) -> list[str]:
        """What wmhloc_compare prints: the table, the tests of the main metrics, the published results."""
        out = [f"{len(self.subjects)} subject(s), task {self.task}, {len(self.settings)} setting(s) → {self.output}",
               self.markdown.split("\n\n")[0]]
        out += [f"  {t['metric']}: {t['setting_a']} vs {t['setting_b']}: n={t['n_pairs']} p={t['p']:.4g} "
                f"(Holm {t['p_holm']:.4g})" for t in self.tests if t["metric"] in MAIN_METRICS[self.task]]
        if self.published_text:
            out += ["\nPublished results beside ours:", self.published_text]
        return out

    def notes(self) -> list[str]:
        return [f"{n}: {len(lo)} subject(s) not in every setting, left out: {', '.join(lo[:10])}"
                for n, lo in self.left_out.items() if lo]


def compare(settings: dict[str, Path], output: Path, *, published: bool = False,
            overwrite: bool = False) -> Comparison:
    """Set the wmhloc_evaluate folders `settings` ({name: folder}, one task) side by side on the subjects in
    all of them; write table.csv/.md, wilcoxon.csv, the violins, regions.csv (region task), compare.json and
    with `published` published_comparison.csv into `output` (atomically)."""
    settings, output = {n: Path(p) for n, p in settings.items()}, Path(output)
    if len(settings) < 2 and not published:
        first = next((f"{n}={p}" for n, p in settings.items()), "--results")
        raise WMHLocError(f"{first}: need two or more --results to compare (or --published)")
    io.check_output(output, overwrite=overwrite, inputs=list(settings.values()))
    task, loaded = load_settings(settings)
    order, left_out, data = pair_by_subject(loaded, next(iter(settings.values())))
    metrics = MAIN_METRICS[task]
    table, stats = describe_table(data, metrics)
    tests = wilcoxon_rows(data, metrics + ([region_column(l) for l in REGION_LABELS] if task == "region" else []))
    res = Comparison(task, output, settings, order, left_out, table, stats, tests, markdown_table(stats, metrics,
                                                                                                  len(order)))
    if published:
        res.published, res.published_text = published_comparison(task, stats, published_rows())
    with io.atomic_dir(output, overwrite=overwrite) as tmp:
        io.write_csv(table, tmp / "table.csv", columns=TABLE_COLUMNS)
        io.write_text(res.markdown, tmp / "table.md")
        if tests:
            io.write_csv(tests, tmp / "wilcoxon.csv", columns=WILCOXON_COLUMNS)
        figures = []
        for m in metrics:
            figures += violin_sites(data, m, tmp / f"violin_sites_{m}")
        if task == "region":
            res.regions = region_rows(data)
            io.write_csv(res.regions, tmp / "regions.csv")
            figures += violin_regions(data, tmp / "violin_regions")
        if res.published:
            io.write_csv(res.published, tmp / "published_comparison.csv")
        io.write_json({"task": task, "settings": {n: str(p.resolve()) for n, p in settings.items()},
                       "n_subjects": len(order), "subjects": order, "left_out": left_out,
                       "figures": [f.name for f in figures]}, tmp / "compare.json")
    res.figures = [output / f.name for f in figures]
    return res


# ----------------------------------------------------------------------------------------- CLI
def parse_results(items: list[str]) -> dict[str, Path]:
    """{name: folder} of NAME=DIR items (a WMHLocError, not argparse's usage text, names the bad one)."""
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
    a = build_parser().parse_args(argv)
    res = compare(parse_results(a.results), a.output, published=a.published, overwrite=a.overwrite)
    cli.print_result(res.lines(), res.notes())
    return 0


main = cli.entry(_main)


if __name__ == "__main__":
    sys.exit(main())
