"""wmhloc_cluster: group subjects by where their lesions are (k-means on regional lesion loads + silhouette).

Input: regional_loads.csv from wmhloc_localize or wmhloc_predict's results/ (the layout of
postprocessing/loads.py; needs `subject` and the 34 WM region columns `<region>_mm3`, e.g. r01_L_parietal_mm3;
`total_mm3` is used for the load columns of the group table when present, otherwise the WM load). Only the
34 WM regions are clustered; 35/36 (rest of hemisphere) are not.

Normalisation (--normalise), applied per subject over regions 1-34:
- fraction (default): each region's share of the subject's WM lesion volume (a lesion distribution
  profile summing to 1). Groups are then about *where* lesions are, not how much: a subject with 2 mL and
  one with 40 mL in the same regions fall together, as in the paper's regional frequency analysis.
- fraction-zscore: fraction, then each region z-scored across subjects, so rarely affected regions weigh
  as much as the periventricular ones that dominate every profile.
- log: log(1 + mm³): where *and* how much, large loads damped.
- zscore: mm³ z-scored per region across subjects.
- raw: mm³ as is (dominated by the largest regions).
Subjects with no lesion volume in regions 1-34 have no profile: by default they form their own group 0
'no WM lesions' (--zero-load group), or are left out (--zero-load exclude); either way they are listed on
stderr and in cluster_log.json, and never divided by. A region with zero spread has z-score 0.

k-means: scikit-learn KMeans with --seed and --n-init restarts; for each K in --k-range (default 2..8) or
the single --k, the mean silhouette is computed and the best K (highest, ties to the smaller K) is kept.
Groups are numbered 1..K by size (largest first), then by mean load. K must be smaller than the number of
clusterable subjects (the silhouette needs K+1): otherwise a clear error.

Outputs (folder created atomically): assignments.csv, silhouette.csv + silhouette.png/.svg, groups.csv
(paper Table D.1: subjects, mean/min/max load, main regions, subjects with mostly left/right WM lesions:
>= SIDE_SHARE of the WM load in one hemisphere, else balanced),
group_profiles.csv + heatmap.png/.svg (paper Figure 5: mean regional lesion share per group), with --atlas
atlas_maps.png/.svg (axial and coronal slices of the atlas coloured by each group's regional share), and
cluster_log.json.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from nnunet_wmhloc import cli
from nnunet_wmhloc.io import WMHLocError, atomic_dir, check_output, check_path, write_csv, write_json
from nnunet_wmhloc.postprocessing.cluster_figures import plot_atlas, plot_heatmap, plot_silhouette
from nnunet_wmhloc.postprocessing.loads import WM_MM3_COLUMNS, read_loads
from nnunet_wmhloc.vocab import LEFT_REGIONS, REGION_NAMES, RIGHT_REGIONS, WM_REGIONS

NORMALISATIONS = ("fraction", "fraction-zscore", "log", "zscore", "raw")
DEFAULT_NORMALISATION = "fraction"
REGION_COLUMNS = WM_MM3_COLUMNS  # the 34 WM regions, mm³
REQUIRED = ["subject"] + REGION_COLUMNS
_LEFT = np.array([r in LEFT_REGIONS for r in WM_REGIONS])
_RIGHT = np.array([r in RIGHT_REGIONS for r in WM_REGIONS])


# ----------------------------------------------------------------------------------------- data
@dataclass
class ClusterPlan:
    """The clusterable data and the Ks to try, worked out once (the pipeline decides from it whether to cluster)."""
    source: str               # where the loads came from (for messages and cluster_log.json)
    subjects: list[str]
    loads: np.ndarray         # (n, 34) WM region loads, mm³
    total: np.ndarray         # total_mm3, else the WM load
    has: np.ndarray           # subjects with WM lesion volume (the clustered ones)
    x: np.ndarray             # their normalised profiles
    normalise: str
    ks: list[int]             # the Ks to fit (a fixed K even when infeasible: the fit says why)
    feasible: bool            # at least one K these data support
    n_distinct: int
    fixed_k: bool
    notes: list[str] = field(default_factory=list)

    @property
    def clustered(self) -> int:
        return int(self.has.sum())


@dataclass
class ClusterResult:
    """What wmhloc_cluster made: the rows of its CSVs (strings, as they read back), K and its silhouette,
    the figure files, the output folder and cluster_log.json."""
    assignments: list[dict]
    groups: list[dict]
    profiles: list[dict]
    silhouette: list[dict]
    k: int
    best_silhouette: float
    figures: list[str]
    output: Path
    log: dict


def _ks(k: int | None, k_range) -> list[int] | range:
    if k is not None:
        return [k]
    kmin, kmax = k_range or (2, 8)
    if kmin > kmax:
        raise WMHLocError(f"--k-range {kmin} {kmax}: KMIN must not exceed KMAX")
    if kmin < 2:
        raise WMHLocError(f"--k-range {kmin} {kmax}: K must be at least 2")
    return range(kmin, kmax + 1)  # a range, not a list: --k-range 2 2000000000 must not allocate


def plan_clustering(loads, *, k: int | None = None, k_range: tuple[int, int] | None = None,
                    normalise: str = DEFAULT_NORMALISATION, source: str | None = None) -> ClusterPlan:
    """`loads`: a regional_loads.csv path or its rows (read_loads). One fixed `k`, or `k_range` (default 2..8)
    cut to the Ks the data support (K < subjects with WM lesions, K <= distinct profiles)."""
    if k is not None and k_range is not None:
        raise WMHLocError("--k and --k-range: give one of them")
    ks = _ks(k, k_range)
    if isinstance(loads, (str, Path)):
        source = str(loads) if source is None else source
        loads = read_loads(loads, required=REQUIRED)
    source = source or "regional loads"
    if not loads:
        raise WMHLocError(f"{source}: no subject rows")
    subjects = [r["subject"].strip() for r in loads]
    mat = np.array([[float(r[c]) for c in REGION_COLUMNS] for r in loads], float).reshape(len(loads), -1)
    wm = mat.sum(1)
    total = np.array([float(r["total_mm3"]) for r in loads]) if "total_mm3" in loads[0] else wm
    has = wm > 0
    x = normalise_loads(mat[has], normalise)
    feasible, n_distinct = feasible_ks(x, ks)
    notes = []
    if k is None:
        # a range is a search: drop the Ks these data cannot support (kmeans_scores still refuses a lone K)
        if feasible and len(feasible) < len(ks):
            skipped = [j for j in ks[:len(feasible) + 10] if j not in feasible]
            shown = ", ".join(map(str, skipped)) + (f" ... {ks[-1]}" if len(ks) > len(feasible) + 10 else "")
            notes.append(f"note: K={shown} skipped: {len(x)} subjects with WM lesions, {n_distinct} distinct "
                         "load profiles")
            ks = feasible
        ks = list(ks[:max(1, len(x))])  # Ks of at least the number of subjects fail in kmeans_scores anyway
    return ClusterPlan(source, subjects, mat, total, has, x, normalise, list(ks), bool(feasible), n_distinct,
                       k is not None, notes)


def _zscore(x: np.ndarray) -> np.ndarray:
    sd = x.std(0)
    return np.where(sd > 0, (x - x.mean(0)) / np.where(sd > 0, sd, 1.0), 0.0)


def fractions(loads: np.ndarray) -> np.ndarray:
    """Regional share of WM lesion volume; callers pass only subjects with a positive WM load."""
    wm = loads.sum(1, keepdims=True)
    if (wm <= 0).any():
        raise ValueError("fractions() needs positive WM loads")  # programming error, not user input
    return loads / wm


def normalise_loads(loads: np.ndarray, method: str) -> np.ndarray:
    if method == "fraction":
        return fractions(loads)
    if method == "fraction-zscore":
        return _zscore(fractions(loads))
    if method == "log":
        return np.log1p(loads)
    if method == "zscore":
        return _zscore(loads)
    if method == "raw":
        return loads.copy()
    raise WMHLocError(f"--normalise: unknown method {method}")


# ----------------------------------------------------------------------------------------- k-means
def n_profiles(x: np.ndarray) -> int:
    """How many distinct (normalised) load profiles: k-means cannot form more groups than that."""
    return len(np.unique(np.round(x, 12), axis=0))


def feasible_ks(x: np.ndarray, ks) -> tuple[list[int], int]:
    """The Ks of `ks` these data support (K < subjects, K <= distinct profiles), and the distinct profiles."""
    n_distinct = n_profiles(x)
    limit = min(len(x) - 1, n_distinct)  # stops early: ks may be range(2, 2_000_000_001)
    return [k for k in ks if k <= limit] if not isinstance(ks, range) else \
        list(ks[:max(0, limit - ks.start + 1)]), n_distinct


def kmeans_scores(x: np.ndarray, ks: list[int], *, seed: int, n_init: int, source) -> tuple[list[dict], dict]:
    """Fit k-means for each K; return per-K scores and the fitted labels of every K."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    n = len(x)
    n_distinct = n_profiles(x)
    scores, labels = [], {}
    for k in ks:
        if k < 2:
            raise WMHLocError(f"{source}: K={k}; K must be at least 2")
        if n <= k:
            raise WMHLocError(f"{source}: {n} subjects with WM lesions, fewer than K+1={k + 1} "
                              f"(K={k} groups and a silhouette need more subjects)")
        if n_distinct < k:
            raise WMHLocError(f"{source}: only {n_distinct} distinct load profiles, cannot form K={k} groups")
        km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(x)
        sil = float(silhouette_score(x, km.labels_))
        scores.append({"k": k, "silhouette": sil, "inertia": float(km.inertia_)})
        labels[k] = km.labels_
    return scores, labels


def _renumber(lab: np.ndarray, load: np.ndarray) -> np.ndarray:
    """Groups 1..K: largest first, then by mean load, so numbering does not depend on k-means' order."""
    ids = np.unique(lab)
    order = sorted(ids, key=lambda g: (-(lab == g).sum(), -load[lab == g].mean(), g))
    new = np.empty_like(lab)
    for i, g in enumerate(order, start=1):
        new[lab == g] = i
    return new


# ----------------------------------------------------------------------------------------- tables
def _main_regions(profile: np.ndarray, top: int) -> str:
    best = [j for j in np.argsort(-profile, kind="stable")[:top] if profile[j] > 0]
    return "; ".join(f"{REGION_NAMES[WM_REGIONS[j]]} ({profile[j] * 100:.0f}%)" for j in best)


SIDE_SHARE = 0.6  # a subject is "mostly left/right" when that hemisphere holds at least this share of its WM load


def _side(loads: np.ndarray) -> np.ndarray:
    left, right = loads[:, _LEFT].sum(1), loads[:, _RIGHT].sum(1)
    share = left / np.maximum(left + right, np.finfo(float).tiny)
    return np.where(share >= SIDE_SHARE, "left", np.where(1 - share >= SIDE_SHARE, "right", "balanced"))


def _fmt(v) -> str:
    """A float as write_csv writes it (6 significant digits, '' for NaN)."""
    return f"{float(v):.6g}" if np.isfinite(v) else ""


def _stderr(text: str) -> None:
    print(text, file=sys.stderr)


def cluster(loads, output, *, k: int | None = None, k_range: tuple[int, int] | None = None,
            normalise: str = DEFAULT_NORMALISATION, zero_load: str = "group", seed: int = 0, n_init: int = 20,
            top_regions: int = 3, atlas=None, overwrite: bool = False,
            say: Callable[[str], None] = _stderr) -> ClusterResult:
    """k-means on regional loads, K by silhouette; tables, figures and cluster_log.json written to `output`
    atomically. `loads`: a regional_loads.csv path, its rows, or a ClusterPlan (whose Ks and normalisation
    are then used as they are)."""
    if zero_load not in ("group", "exclude"):
        raise WMHLocError(f"--zero-load {zero_load}: must be 'group' or 'exclude'")
    if n_init < 1 or top_regions < 1:
        raise WMHLocError("--n-init and --top-regions must be at least 1")
    if atlas:
        check_path(atlas, what="atlas")
    src = loads if isinstance(loads, (str, Path)) else getattr(loads, "source", None)
    check_output(output, overwrite=overwrite, inputs=[src, atlas])
    plan = loads if isinstance(loads, ClusterPlan) else plan_clustering(loads, k=k, k_range=k_range,
                                                                          normalise=normalise)
    subjects, has, x = plan.subjects, plan.has, plan.x
    wm = plan.loads.sum(1)
    zero = [s for s, h in zip(subjects, has) if not h]
    if zero:
        what = "group 0 'no WM lesions'" if zero_load == "group" else "excluded"
        say(f"note: {len(zero)} subject(s) without WM lesion volume: {what} ({', '.join(zero[:5])}"
            f"{', ...' if len(zero) > 5 else ''})")
    for n in plan.notes:
        say(n)
    scores, labels = kmeans_scores(x, plan.ks, seed=seed, n_init=n_init, source=plan.source)
    best = max(scores, key=lambda s: (s["silhouette"], -s["k"]))
    k = best["k"]
    lab = _renumber(labels[k], wm[has])
    tables = _tables(plan, lab, k, zero_load=zero_load, top=top_regions)
    sil_rows = [{"k": str(s["k"]), "silhouette": _fmt(s["silhouette"]), "inertia": _fmt(s["inertia"]),
                 "chosen": "yes" if s["k"] == k else ""} for s in scores]
    output = Path(output)
    with atomic_dir(output, overwrite=overwrite) as out:
        write_csv(tables["assignments"], out / "assignments.csv")
        write_csv(sil_rows, out / "silhouette.csv")
        write_csv(tables["groups"], out / "groups.csv")
        write_csv(tables["profiles"], out / "group_profiles.csv")
        figures = plot_silhouette(scores, k, out, plan.normalise)
        figures += plot_heatmap(tables["profile_matrix"], tables["group_labels"], out)
        if atlas:
            figures += plot_atlas(Path(atlas), tables["profile_matrix"], tables["group_labels"], out, top_regions)
        log = {"input": plan.source, "normalise": plan.normalise, "k_tried": plan.ks, "k_chosen": k,
               "silhouette": scores, "seed": seed, "n_init": n_init, "subjects": len(subjects),
               "clustered": plan.clustered, "zero_load": {"policy": zero_load, "subjects": zero},
               "figures": figures}
        write_json(log, out / "cluster_log.json")
    return ClusterResult(tables["assignments"], tables["groups"], tables["profiles"], sil_rows, k,
                         best["silhouette"], figures, output, log)


def _tables(plan: ClusterPlan, lab: np.ndarray, k: int, *, zero_load: str, top: int) -> dict:
    """assignments.csv, groups.csv (paper Table D.1) and group_profiles.csv rows for the chosen K."""
    from sklearn.metrics import silhouette_samples

    subjects, loads, total, has, x = plan.subjects, plan.loads, plan.total, plan.has, plan.x
    wm = loads.sum(1)
    sil = silhouette_samples(x, lab)
    frac = fractions(loads[has])
    group = np.zeros(len(subjects), int)
    group[has] = lab
    sample_sil = np.full(len(subjects), np.nan)
    sample_sil[has] = sil
    side = _side(loads)
    frac_all = np.zeros_like(loads)
    frac_all[has] = frac
    keep = np.ones(len(subjects), bool) if zero_load == "group" else has
    assignments = [{"subject": subjects[i], "group": str(group[i]),
                    "group_name": f"group {group[i]}" if has[i] else "no WM lesions",
                    "total_mm3": f"{total[i]:.6g}", "wm_mm3": f"{wm[i]:.6g}",
                    "side": side[i] if has[i] else "", "silhouette": _fmt(sample_sil[i]),
                    "main_regions": _main_regions(frac_all[i], top) if has[i] else ""}
                   for i in np.flatnonzero(keep)]
    profiles = np.stack([frac[lab == g].mean(0) for g in range(1, k + 1)])
    groups = []
    zero = not has.all()
    for g in list(range(1, k + 1)) + ([0] if zero and zero_load == "group" else []):
        m = (group == g) & (has if g else ~has)
        t = total[m]
        groups.append({"group": str(g), "name": f"group {g}" if g else "no WM lesions", "n_subjects": str(m.sum()),
                       "mean_total_mm3": f"{t.mean():.6g}", "min_total_mm3": f"{t.min():.6g}",
                       "max_total_mm3": f"{t.max():.6g}", "mean_wm_mm3": f"{wm[m].mean():.6g}",
                       "main_regions": _main_regions(profiles[g - 1], top) if g else "",
                       "n_mostly_left": str((side[m] == "left").sum()) if g else "0",
                       "n_mostly_right": str((side[m] == "right").sum()) if g else "0",
                       "n_balanced": str((side[m] == "balanced").sum()) if g else "0",
                       "mean_silhouette": _fmt(sil[lab == g].mean()) if g else ""})
    prof_rows = [{"region": str(r), "name": REGION_NAMES[r],
                  **{f"group_{g}": f"{profiles[g - 1, j]:.6f}" for g in range(1, k + 1)}}
                 for j, r in enumerate(WM_REGIONS)]
    return {"assignments": assignments, "groups": groups, "profiles": prof_rows, "profile_matrix": profiles,
            "group_labels": [f"G{g} (n={int((lab == g).sum())})" for g in range(1, k + 1)]}


def _build_parser():
    p = cli.parser("wmhloc_cluster", __doc__.split("\n\n")[0])
    p.add_argument("loads", help="regional_loads.csv written by wmhloc_localize")
    p.add_argument("-o", "--output", required=True, help="output folder (must not exist unless --overwrite)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--k", type=int, default=None, help="fixed number of groups")
    g.add_argument("--k-range", type=int, nargs=2, metavar=("KMIN", "KMAX"), default=None,
                   help="try K = KMIN..KMAX and keep the best silhouette "
                        "(2 8 when neither --k nor --k-range is given)")
    p.add_argument("--normalise", choices=NORMALISATIONS, default=DEFAULT_NORMALISATION,
                   help="fraction: each region's share of the subject's WM lesion volume (where, not how much); "
                        "fraction-zscore: fraction, then z-scored per region; log: log(1 + mm³); "
                        "zscore: mm³ z-scored per region; raw: mm³")
    p.add_argument("--zero-load", choices=("group", "exclude"), default="group",
                   help="subjects without WM lesion volume: own group 0, or left out of the outputs")
    p.add_argument("--seed", type=cli.seed_int, default=0, help="k-means random state (0 .. 2**32-1)")
    p.add_argument("--n-init", type=cli.int_range(1, 1000), default=20, help="k-means restarts per K (1..1000)")
    p.add_argument("--top-regions", type=cli.positive_int, default=3, help="regions named per group in tables/maps")
    p.add_argument("--atlas", default=None,
                   help="refined 36-label atlas NIfTI (e.g. 36_labels_merged.nii.gz) for atlas_maps.png")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    return p


def _main(argv=None) -> int:
    a = _build_parser().parse_args(argv)
    res = cluster(a.loads, a.output, k=a.k, k_range=a.k_range, normalise=a.normalise, zero_load=a.zero_load,
                  seed=a.seed, n_init=a.n_init, top_regions=a.top_regions, atlas=a.atlas, overwrite=a.overwrite)
    print(f"K={res.k} (silhouette {res.best_silhouette:.3f}) for {res.log['clustered']} subjects -> {a.output}",
          file=sys.stderr)
    return 0


main = cli.entry(_main)


if __name__ == "__main__":
    sys.exit(main())
