"""wmhloc_cluster: group subjects by where their lesions are (k-means on regional lesion loads + silhouette).

Input: regional_loads.csv from wmhloc_localize (needs `subject` and the 34 WM region columns
`region_column(1..34)` in mm³; `total_mm3` is used for the load columns of the group table when present,
otherwise the WM load). Only the 34 WM regions are clustered; 35/36 (rest of hemisphere) are not.

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
(paper Table D.1: subjects, mean/min/max load, main regions, subjects with mostly left/right WM lesions),
group_profiles.csv + heatmap.png/.svg (paper Figure 5: mean regional lesion share per group), with --atlas
atlas_maps.png/.svg (axial and coronal slices of the atlas coloured by each group's regional share), and
cluster_log.json.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from nnunet_wmhloc import cli
from nnunet_wmhloc.vocab import LEFT_REGIONS, REGION_NAMES, RIGHT_REGIONS, WM_REGIONS, region_column
from nnunet_wmhloc.io import WMHLocError, atomic_dir, check_output, check_path, read_csv, write_csv, write_json

NORMALISATIONS = ("fraction", "fraction-zscore", "log", "zscore", "raw")
DEFAULT_NORMALISATION = "fraction"
REGION_COLUMNS = [region_column(r) for r in WM_REGIONS]
MAX_MM3 = 1e9  # a cubic metre: anything larger is a unit or export error
_LEFT = np.array([r in LEFT_REGIONS for r in WM_REGIONS])
_RIGHT = np.array([r in RIGHT_REGIONS for r in WM_REGIONS])


# ----------------------------------------------------------------------------------------- data
def load_table(path: Path) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """(subjects, loads (n, 34) mm³, total_mm3 or None) with every value checked."""
    rows = read_csv(path, required=["subject"] + REGION_COLUMNS)
    if not rows:
        raise WMHLocError(f"{path}: no subject rows")
    subjects, loads, totals = [], [], []
    has_total = "total_mm3" in rows[0]
    seen = set()
    for i, row in enumerate(rows, start=2):  # line 1 is the header
        s = (row.get("subject") or "").strip()
        if not s:
            raise WMHLocError(f"{path}: line {i}: empty subject")
        if s in seen:
            raise WMHLocError(f"{path}: line {i}: subject {s} appears twice")
        seen.add(s)
        vals = []
        for c in REGION_COLUMNS + (["total_mm3"] if has_total else []):
            try:
                v = float(row[c])
            except (TypeError, ValueError):
                raise WMHLocError(f"{path}: line {i}: {c} = {row[c]!r} is not a number") from None
            if not math.isfinite(v) or v < 0:
                raise WMHLocError(f"{path}: line {i}: {c} = {row[c]} (volumes must be finite and >= 0)")
            if v > MAX_MM3:  # sums of such values overflow to inf and every profile to NaN
                raise WMHLocError(f"{path}: line {i}: {c} = {row[c]} mm³ is not a plausible lesion volume "
                                  f"(at most {MAX_MM3:.0e} mm³)")
            vals.append(v)
        subjects.append(s)
        loads.append(vals[:len(REGION_COLUMNS)])
        if has_total:
            totals.append(vals[-1])
    return subjects, np.asarray(loads, float), (np.asarray(totals, float) if has_total else None)


def _zscore(x: np.ndarray) -> np.ndarray:
    sd = x.std(0)
    return np.where(sd > 0, (x - x.mean(0)) / np.where(sd > 0, sd, 1.0), 0.0)


def fractions(loads: np.ndarray) -> np.ndarray:
    """Regional share of WM lesion volume; callers pass only subjects with a positive WM load."""
    wm = loads.sum(1, keepdims=True)
    if (wm <= 0).any():
        raise ValueError("fractions() needs positive WM loads")  # programming error, not user input
    return loads / wm


def normalise(loads: np.ndarray, method: str) -> np.ndarray:
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


def cluster(x: np.ndarray, ks: list[int], *, seed: int, n_init: int, source) -> tuple[list[dict], dict]:
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


# ----------------------------------------------------------------------------------------- figures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path, stem: str) -> list[str]:
    names = []
    for ext in ("png", "svg"):
        fig.savefig(out / f"{stem}.{ext}", dpi=200, bbox_inches="tight")
        names.append(f"{stem}.{ext}")
    _plt().close(fig)
    return names


def plot_silhouette(scores, best_k, out: Path, norm: str):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    ks = [s["k"] for s in scores]
    ax.plot(ks, [s["silhouette"] for s in scores], "o-", color="#1f4e79")
    b = next(s for s in scores if s["k"] == best_k)
    ax.plot([best_k], [b["silhouette"]], "o", ms=11, mfc="none", mec="#c0392b", mew=2, label=f"best K = {best_k}")
    ax.set_xlabel("number of groups K")
    ax.set_ylabel("mean silhouette")
    ax.set_xticks(ks)
    ax.set_title(f"k-means on regional loads ({norm})", fontsize=9)
    ax.legend(frameon=False, fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, out, "silhouette")


def plot_heatmap(profiles: np.ndarray, group_labels: list[str], out: Path):
    plt = _plt()
    k = profiles.shape[0]
    fig, ax = plt.subplots(figsize=(2.8 + 0.75 * k, 9.0))
    im = ax.imshow(profiles.T * 100, aspect="auto", cmap="YlOrRd", vmin=0)
    ax.set_yticks(range(len(WM_REGIONS)))
    ax.set_yticklabels([f"{r:2d} {REGION_NAMES[r]}" for r in WM_REGIONS], fontsize=7)
    ax.set_xticks(range(k))
    ax.set_xticklabels(group_labels, fontsize=8, rotation=30, ha="right")
    if k <= 10:
        vmax = profiles.max() * 100
        for g in range(k):
            for j in range(len(WM_REGIONS)):
                v = profiles[g, j] * 100
                ax.text(g, j, f"{v:.0f}", ha="center", va="center", fontsize=6,
                        color="white" if v > 0.6 * vmax else "black")
    ax.axhline(len(LEFT_REGIONS) - 0.5, color="k", lw=0.8)
    cb = fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
    cb.set_label("share of WM lesion volume (%)")
    ax.set_title("regional lesion frequency per group", fontsize=10)
    return _save(fig, out, "heatmap")


def plot_atlas(atlas_path: Path, profiles: np.ndarray, group_labels: list[str], out: Path, top: int):
    """Axial and coronal atlas slices coloured by each group's mean regional share (radiological view)."""
    import SimpleITK as sitk

    from nnunet_wmhloc.io import read_image

    src = read_image(atlas_path, what="atlas")
    arr = sitk.GetArrayFromImage(src)
    if arr.dtype.kind == "f":
        arr = np.rint(arr)
    if arr.min() < 0 or arr.max() > 36:
        raise WMHLocError(f"{atlas_path}: atlas labels must be 0..36 (refined 36-label atlas), found "
                          f"{int(arr.min())}..{int(arr.max())}")
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
    fig, axes = plt.subplots(k, 2, figsize=(8.0, 3.0 * k + 0.8), squeeze=False)
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
        axes[g, 1].text(1.04, 0.5, names, transform=axes[g, 1].transAxes, fontsize=7, va="center")
    fig.colorbar(im, ax=axes.ravel().tolist(), orientation="horizontal", fraction=0.03, pad=0.03,
                 shrink=0.6, label="share of WM lesion volume (%)")
    fig.text(0.01, 0.005, "radiological view: patient's left on the right", fontsize=7)
    return _save(fig, out, "atlas_maps")


# ----------------------------------------------------------------------------------------- tables
def _main_regions(profile: np.ndarray, top: int) -> str:
    best = [j for j in np.argsort(-profile, kind="stable")[:top] if profile[j] > 0]
    return "; ".join(f"{REGION_NAMES[WM_REGIONS[j]]} ({profile[j] * 100:.0f}%)" for j in best)


def _side(loads: np.ndarray) -> np.ndarray:
    left, right = loads[:, _LEFT].sum(1), loads[:, _RIGHT].sum(1)
    return np.where(left > right, "left", np.where(right > left, "right", "balanced"))


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
    p.add_argument("--n-init", type=cli.positive_int, default=20, help="k-means restarts per K")
    p.add_argument("--top-regions", type=cli.positive_int, default=3, help="regions named per group in tables/maps")
    p.add_argument("--atlas", default=None,
                   help="refined 36-label atlas NIfTI (e.g. 36_labels_merged.nii.gz) for atlas_maps.png")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    return p


def _main(argv=None) -> int:
    args = _build_parser().parse_args(argv)
    src = Path(args.loads)
    if args.k is not None:
        ks = [args.k]
    else:
        kmin, kmax = args.k_range or (2, 8)
        if kmin > kmax:
            raise WMHLocError(f"--k-range {kmin} {kmax}: KMIN must not exceed KMAX")
        if kmin < 2:
            raise WMHLocError(f"--k-range {kmin} {kmax}: K must be at least 2")
        ks = range(kmin, kmax + 1)  # a range, not a list: --k-range 2 2000000000 must not allocate
    if args.n_init < 1 or args.top_regions < 1:
        raise WMHLocError("--n-init and --top-regions must be at least 1")
    if args.atlas:
        check_path(args.atlas, what="atlas")
    check_output(args.output, overwrite=args.overwrite, inputs=[args.loads, args.atlas])

    subjects, loads, totals = load_table(src)
    wm = loads.sum(1)
    total = totals if totals is not None else wm
    has = wm > 0
    zero = [s for s, h in zip(subjects, has) if not h]
    if zero:
        what = "group 0 'no WM lesions'" if args.zero_load == "group" else "excluded"
        print(f"note: {len(zero)} subject(s) without WM lesion volume: {what} ({', '.join(zero[:5])}"
              f"{', ...' if len(zero) > 5 else ''})", file=sys.stderr)
    x = normalise(loads[has], args.normalise)
    if args.k is None:
        # a range is a search: drop the Ks these data cannot support (cluster() still refuses a lone K)
        feasible, n_distinct = feasible_ks(x, ks)
        if feasible and len(feasible) < len(ks):
            skipped = [k for k in ks[:len(feasible) + 10] if k not in feasible]
            shown = ", ".join(map(str, skipped)) + (f" ... {ks[-1]}" if len(ks) > len(feasible) + 10 else "")
            print(f"note: K={shown} skipped: {len(x)} subjects with "
                  f"WM lesions, {n_distinct} distinct load profiles", file=sys.stderr)
            ks = feasible
        ks = list(ks[:max(1, len(x))])  # Ks of at least the number of subjects fail in cluster() anyway
    scores, labels = cluster(x, ks, seed=args.seed, n_init=args.n_init, source=src)
    best = max(scores, key=lambda s: (s["silhouette"], -s["k"]))
    k = best["k"]
    lab = _renumber(labels[k], wm[has])

    from sklearn.metrics import silhouette_samples

    sil = silhouette_samples(x, lab)
    frac = fractions(loads[has])
    group = np.zeros(len(subjects), int)
    group[has] = lab
    sample_sil = np.full(len(subjects), np.nan)
    sample_sil[has] = sil
    side = _side(loads)
    frac_all = np.zeros_like(loads)
    frac_all[has] = frac

    keep = np.ones(len(subjects), bool) if args.zero_load == "group" else has
    assignments = []
    for i in np.flatnonzero(keep):
        assignments.append({
            "subject": subjects[i], "group": int(group[i]),
            "group_name": f"group {group[i]}" if has[i] else "no WM lesions",
            "total_mm3": f"{total[i]:.6g}", "wm_mm3": f"{wm[i]:.6g}",
            "side": side[i] if has[i] else "", "silhouette": sample_sil[i],
            "main_regions": _main_regions(frac_all[i], args.top_regions) if has[i] else ""})

    profiles = np.stack([frac[lab == g].mean(0) for g in range(1, k + 1)])
    group_labels = [f"G{g} (n={int((lab == g).sum())})" for g in range(1, k + 1)]
    table = []
    groups_present = list(range(1, k + 1)) + ([0] if zero and args.zero_load == "group" else [])
    for g in groups_present:
        m = (group == g) & (has if g else ~has)
        t = total[m]
        table.append({"group": g, "name": f"group {g}" if g else "no WM lesions", "n_subjects": int(m.sum()),
                      "mean_total_mm3": f"{t.mean():.6g}", "min_total_mm3": f"{t.min():.6g}",
                      "max_total_mm3": f"{t.max():.6g}", "mean_wm_mm3": f"{wm[m].mean():.6g}",
                      "main_regions": _main_regions(profiles[g - 1], args.top_regions) if g else "",
                      "n_mostly_left": int((side[m] == "left").sum()) if g else 0,
                      "n_mostly_right": int((side[m] == "right").sum()) if g else 0,
                      "n_balanced": int((side[m] == "balanced").sum()) if g else 0,
                      "mean_silhouette": float(sil[lab == g].mean()) if g else ""})
    prof_rows = []
    for j, r in enumerate(WM_REGIONS):
        row = {"region": r, "name": REGION_NAMES[r]}
        row.update({f"group_{g}": f"{profiles[g - 1, j]:.6f}" for g in range(1, k + 1)})
        prof_rows.append(row)

    with atomic_dir(args.output, overwrite=args.overwrite) as out:
        write_csv(assignments, out / "assignments.csv")
        write_csv([{**s, "chosen": "yes" if s["k"] == k else ""} for s in scores], out / "silhouette.csv")
        write_csv(table, out / "groups.csv")
        write_csv(prof_rows, out / "group_profiles.csv")
        figures = plot_silhouette(scores, k, out, args.normalise)
        figures += plot_heatmap(profiles, group_labels, out)
        if args.atlas:
            figures += plot_atlas(Path(args.atlas), profiles, group_labels, out, args.top_regions)
        write_json({"input": str(src), "normalise": args.normalise, "k_tried": ks, "k_chosen": k,
                    "silhouette": scores, "seed": args.seed, "n_init": args.n_init,
                    "subjects": len(subjects), "clustered": int(has.sum()),
                    "zero_load": {"policy": args.zero_load, "subjects": zero},
                    "figures": figures}, out / "cluster_log.json")
    print(f"K={k} (silhouette {best['silhouette']:.3f}) for {int(has.sum())} subjects -> {args.output}",
          file=sys.stderr)
    return 0


def main(argv=None) -> int:
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
