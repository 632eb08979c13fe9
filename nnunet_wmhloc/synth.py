"""wmhloc_synth: a small synthetic cohort in the MICCAI 2017 WMH challenge's exact layout.

    <out>/training/{Utrecht,Singapore,GE3T}/<id>/{wmh.nii.gz, pre/FLAIR.nii.gz, pre/T1.nii.gz}
    <out>/test/{Utrecht,Singapore,Amsterdam/{GE3T,GE1T5,Philips_VU .PETMR_01.}}/<id>/...
    <out>/region_labels/{Train,Test}/WMH_<id>.nii.gz   (like the authors' release; one test subject has none)
    <id>/pre/T1_brain.nii.gz                            (make_cohort brain_t1: the T1 skull-stripped, for the demo)

`write_demo_atlas` writes the canonical head (no random shift or size) as an atlas folder (`--atlas-dir`).

Each site has its own matrix size, spacing and storage orientation; the heads are built in physical (LPS)
coordinates, so every site shows the same anatomy, and left regions (1-17, 35) lie on the patient's left.
Heads are not skull-stripped (T1 and FLAIR show a skull), lesions look like WMH (periventricular caps and bands,
deep punctate lesions, inside WM; bright on FLAIR, dark on T1) and some subjects carry label 2 ("other pathology", an infarct-like blob). Region maps split the WM
into the 34 regions (17 per hemisphere: 11 superficial sectors, 6 deep ones) plus 35/36 in the lower brain.
Deterministic by --seed and small enough that nnU-Net trains and predicts on a CPU in minutes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from nnunet_wmhloc import cli
from nnunet_wmhloc.io import WMHLocError, atomic_dir

# site folder (relative to the split folder) -> (size xyz, spacing xyz, direction)
_FLIP_Y = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
_IDENT = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class Site:
    split: str  # "training" | "test"
    folder: str  # path below the split folder
    size: tuple
    spacing: tuple
    direction: tuple
    first_id: int


# Small matrices so that nnU-Net trains on a CPU in minutes. Slices are the coarsest axis, as in the challenge
# (3 mm slices, ~1 mm in-plane), so nnU-Net's 2d configuration cuts axial slices, which show both hemispheres.
SITES = (
    Site("training", "Utrecht", (54, 62, 12), (3.4, 3.4, 4.0), _IDENT, 0),
    Site("training", "Singapore", (52, 64, 12), (3.5, 3.3, 4.0), _FLIP_Y, 50),
    Site("training", "GE3T", (50, 66, 13), (3.6, 3.2, 3.7), _IDENT, 100),
    Site("test", "Utrecht", (54, 62, 12), (3.4, 3.4, 4.0), _IDENT, 1),
    Site("test", "Singapore", (52, 64, 12), (3.5, 3.3, 4.0), _FLIP_Y, 51),
    Site("test", "Amsterdam/GE3T", (50, 66, 13), (3.6, 3.2, 3.7), _IDENT, 101),
    Site("test", "Amsterdam/GE1T5", (54, 62, 12), (3.4, 3.4, 4.0), _FLIP_Y, 151),
    Site("test", "Amsterdam/Philips_VU .PETMR_01.", (56, 60, 12), (3.3, 3.5, 4.0), _IDENT, 171),
)


def _coords(size, spacing, direction, rng):
    """Physical (LPS, as ITK: +x left, +y posterior, +z superior) coordinates in mm of every voxel, centred on
    the head centre (with a small random shift; none when `rng` is None), as z-y-x arrays. Physical, not
    array, coordinates: every site's head is the same anatomy whatever the orientation it is stored in."""
    nx, ny, nz = size
    sx, sy, sz = spacing
    shift = np.zeros(3) if rng is None else rng.normal(0, 2.0, 3)
    z = (np.arange(nz) - (nz - 1) / 2) * sz - shift[2]
    y = (np.arange(ny) - (ny - 1) / 2) * sy - shift[1]
    x = (np.arange(nx) - (nx - 1) / 2) * sx - shift[0]
    a = np.meshgrid(x, y, z, indexing="ij")  # along the array's own axes (i, j, k), mm
    d = np.array(direction, dtype=float).reshape(3, 3)
    phys = [sum(d[r, c] * a[c] for c in range(3)).transpose(2, 1, 0) for r in range(3)]  # -> (z, y, x) arrays
    return phys[2], phys[1], phys[0], tuple(v.transpose(2, 1, 0) for v in a[::-1])


# the subjects' field of view along z is 48 mm at every site; the head's height is set relative to it
SUBJECT_FOV_Z_MM = 48.0
# the canonical head (rng None: demo_atlas's): no shift, the middle of the subjects' head scales
# and ventricle sizes
CANONICAL = {"scale": 0.975, "vsize": 1.1}


def _phantom(size, spacing, direction, rng):
    """Tissue classes (0 air, 1 skull/scalp, 2 CSF, 3 GM, 4 WM, 5 ventricle) and the WM region map."""
    cls, reg, geo = _anatomy(size, spacing, direction, rng)
    return cls, np.where(cls == 4, reg, 0).astype(np.uint8), geo


def _anatomy(size, spacing, direction, rng):
    """Tissue classes and the region labels 1..36 at every voxel (where WM would be); `rng` None gives the
    canonical head (CANONICAL) with the subjects' head height whatever the grid's z extent."""
    Z, Y, X, array_zyx = _coords(size, spacing, direction, rng)
    scale = CANONICAL["scale"] if rng is None else rng.uniform(0.9, 1.05)
    fov_z = SUBJECT_FOV_Z_MM if rng is None else size[2] * spacing[2]
    # head radii in mm (x: right-left, y: anterior-posterior, z: inferior-superior)
    hx, hy, hz = 78 * scale, 94 * scale, 26 * scale * fov_z / 48.0
    # egg-shaped like a real head: wider at the back and at the base, so orientation is well defined and an
    # axial slice tells how high it lies (a 2d model needs that for the regions' height bands)
    egg = (1.0 + 0.12 * Y / hy) * (1.0 - 0.15 * Z / hz)
    r_head = np.sqrt((X / (hx * egg)) ** 2 + (Y / hy) ** 2 + (Z / hz) ** 2)
    r_brain = np.sqrt((X / ((hx - 9) * egg)) ** 2 + (Y / (hy - 9)) ** 2 + (Z / (hz * 0.92)) ** 2)
    cls = np.zeros(Z.shape, np.uint8)
    cls[r_head < 1] = 1
    cls[r_brain < 1] = 2
    cls[r_brain < 0.95] = 3
    cls[r_brain < 0.80] = 4
    # lateral ventricles: two elongated ellipsoids either side of the midline, larger in older brains
    vsize = CANONICAL["vsize"] if rng is None else rng.uniform(0.8, 1.4)
    vent = np.zeros(Z.shape, bool)
    for side in (-1, 1):
        # frontal horns close to the midline, occipital horns spread apart (a V seen from above)
        rv = np.sqrt(((X - side * (11 + 0.12 * Y)) / (6 * vsize)) ** 2 + (Y / (34 * vsize)) ** 2
                     + ((Z - 0.15 * hz) / (hz * 0.3)) ** 2)
        vent |= rv < 1
    cls[vent & (cls >= 3)] = 5

    # regions (the subjects' maps keep them inside WM): hemisphere, depth (deep = close to the ventricles),
    # z band and y band
    depth = r_brain / 0.80
    left = X > 0  # LPS: +x is the patient's left
    zb3 = np.clip(((Z / hz + 1) / 2 * 3).astype(int), 0, 2)
    yb4 = np.clip(((Y / hy + 1) / 2 * 4).astype(int), 0, 3)
    zb2 = (Z > 0).astype(int)
    yb3 = np.clip(((Y / hy + 1) / 2 * 3).astype(int), 0, 2)
    sup = np.minimum(zb3 * 4 + yb4, 10) + 1  # 11 superficial sectors: 1..11
    deep = 12 + zb2 * 3 + yb3  # 6 deep sectors: 12..17
    reg = np.where(depth < 0.55, deep, sup)
    reg = np.where(left, reg, reg + 17)
    lower = (Z < -0.5 * hz) & (np.abs(X) < 25) & (np.abs(Y) < 40)  # brainstem-ish: the "rest" labels 35/36
    reg = np.where(lower, np.where(left, 35, 36), reg).astype(np.uint8)
    return cls, reg, (Z, Y, X, hz, vent, array_zyx)


def _lesions(cls, geo, spacing, rng, load):
    """WMH-like lesions inside WM: periventricular caps/bands and deep punctate lesions."""
    Z, Y, X, hz, vent, _ = geo
    wm = cls == 4
    dist_vent = ndimage.distance_transform_edt(~vent, sampling=spacing[::-1])
    les = np.zeros(cls.shape, bool)
    # periventricular band: WM within a rim of the ventricles, thicker at the frontal/occipital horns (caps)
    rim = rng.uniform(1.0, 3.0) * load
    horn = np.abs(Y) > 22  # caps at the frontal and occipital horns
    band = (dist_vent > 0) & (dist_vent < rim + 4.0 * horn * load)
    if rng.uniform() < 0.85 or load > 1:
        patchy = ndimage.gaussian_filter(rng.normal(size=cls.shape), 1.5)
        les |= band & wm & (patchy > 0.1 - 0.1 * load)
    # deep punctate lesions
    n_deep = rng.poisson(3 * load + 1)
    wm_idx = np.argwhere(wm & (dist_vent > 8))
    for _ in range(n_deep):
        if not len(wm_idx):
            break
        c = wm_idx[rng.integers(len(wm_idx))]
        r = rng.uniform(2.0, 4.5)
        d = np.sqrt(((Z - Z[tuple(c)]) / 1.0) ** 2 + (Y - Y[tuple(c)]) ** 2 + (X - X[tuple(c)]) ** 2)
        les |= d < r
    return les & wm


T1_TISSUE = np.array([0.0, 0.7, 0.15, 0.5, 0.85, 0.12])  # T1 intensity per tissue class (before noise)


def _subject(site: Site, rng) -> dict:
    cls, regions, geo = _phantom(site.size, site.spacing, site.direction, rng)
    load = rng.choice([0.4, 1.0, 1.8], p=[0.35, 0.4, 0.25])
    les = _lesions(cls, geo, site.spacing, rng, load)
    wmh = les.astype(np.uint8)
    if rng.uniform() < 0.4:  # "other pathology": an infarct-like blob in GM/WM, scored by nobody
        Z, Y, X = geo[:3]
        cand = np.argwhere((cls == 3) | (cls == 4))
        c = cand[rng.integers(len(cand))]
        blob = np.sqrt((Z - Z[tuple(c)]) ** 2 + (Y - Y[tuple(c)]) ** 2 + (X - X[tuple(c)]) ** 2) < rng.uniform(4, 7)
        wmh[blob & (cls >= 2) & (cls != 5)] = 2

    # tissue intensities: FLAIR (CSF dark, lesions bright), T1 (WM bright, lesions dark)
    flair_t = np.array([0.0, 0.45, 0.08, 0.55, 0.42, 0.05])
    t1_t = T1_TISSUE
    flair = flair_t[cls]
    t1 = t1_t[cls]
    flair[wmh == 1] = rng.uniform(0.85, 1.0)
    t1[wmh == 1] = rng.uniform(0.35, 0.45)
    flair[wmh == 2] = 0.15  # infarct: dark cavity with a bright rim is too fancy; dark core suffices
    t1[wmh == 2] = 0.2
    out = {}
    for name, img in (("FLAIR", flair), ("T1", t1)):
        img = ndimage.gaussian_filter(img, (0.4, 0.7, 0.7))
        # smooth multiplicative bias field (the scanner's: along the array's axes) and Rician-like noise,
        # different per modality
        Z, Y, X = geo[5]
        a = rng.normal(0, 0.004, 3)
        bias = np.exp(a[0] * X + a[1] * Y + a[2] * Z)
        img = img * bias
        noise = rng.normal(0, 0.03, img.shape) + 1j * rng.normal(0, 0.03, img.shape)
        img = np.abs(img + noise) * rng.uniform(300, 1200)
        out[name] = img.astype(np.float32)
    return {"FLAIR": out["FLAIR"], "T1": out["T1"], "wmh": wmh, "regions": regions, "brain": cls >= 2}


def _image(arr, site: Site, dtype=None) -> sitk.Image:
    img = sitk.GetImageFromArray(arr if dtype is None else arr.astype(dtype))
    img.SetSpacing(site.spacing)
    img.SetDirection(site.direction)
    # origin like a scanner's: the centre of the volume near world zero
    d = np.array(site.direction).reshape(3, 3)
    half = (np.array(site.size) - 1) / 2 * np.array(site.spacing)
    img.SetOrigin(tuple(float(v) for v in -(d @ half)))
    return img


# Sites' ids are first_id + 2k, as in the challenge (Utrecht 0.., Singapore 50.., ...): these bounds keep
# them unique (a larger count would reuse the next site's ids and overwrite its region maps)
MAX_PER_SITE = 25
MAX_TEST_PER_SITE = 10


T1_BRAIN = "T1_brain.nii.gz"  # beside pre/T1.nii.gz with brain_t1=True


def make_cohort(output: str | Path, *, seed: int = 0, per_site: int = 2, test_per_site: int = 1,
                overwrite: bool = False, show_progress: bool = True, brain_t1: bool = False) -> list[dict]:
    """Write the cohort; returns one dict per subject (id, split, site, path, lesion voxels). `brain_t1`: also
    pre/T1_brain.nii.gz, the T1 skull-stripped by the phantom's brain (CSF, GM, WM, ventricles; 0 outside), for
    the model-free path (wmhloc_run --demo): its brain extraction expects a dark skull between brain and scalp,
    which these heads' one bright skull/scalp layer behind one voxel of CSF does not give."""
    for name, n, hi in (("per_site", per_site, MAX_PER_SITE), ("test_per_site", test_per_site, MAX_TEST_PER_SITE)):
        if not 1 <= n <= hi:
            raise WMHLocError(f"{name}={n}: must be in 1..{hi} (subject ids are unique per site only up to {hi})")
    plan = [(site, site.first_id + 2 * k) for site in SITES
            for k in range(per_site if site.split == "training" else test_per_site)]
    ids = [(site.split, sid) for site, sid in plan]
    if len(set(ids)) != len(ids):  # the bounds above guarantee this; a new site must keep it
        raise WMHLocError(f"synthetic subject ids repeat: {sorted(i for i in ids if ids.count(i) > 1)}")
    subjects = []
    with atomic_dir(output, overwrite=overwrite) as tmp:
        for i, (site, sid) in enumerate(cli.progress(plan, desc="synthetic subjects", disable=not show_progress)):
            rng = np.random.default_rng([seed, i])
            s = _subject(site, rng)
            folder = tmp / site.split / site.folder / str(sid)
            (folder / "pre").mkdir(parents=True)
            sitk.WriteImage(_image(s["FLAIR"], site), str(folder / "pre" / "FLAIR.nii.gz"), True)
            sitk.WriteImage(_image(s["T1"], site), str(folder / "pre" / "T1.nii.gz"), True)
            if brain_t1:
                sitk.WriteImage(_image(np.where(s["brain"], s["T1"], 0).astype(np.float32), site),
                                str(folder / "pre" / T1_BRAIN), True)
            sitk.WriteImage(_image(s["wmh"], site, np.uint8), str(folder / "wmh.nii.gz"), True)
            # the authors' release lacks no subject, but real cohorts do: leave the last test subject out
            has_regions = not (site is SITES[-1] and sid == plan[-1][1])
            if has_regions:
                rdir = tmp / "region_labels" / ("Train" if site.split == "training" else "Test")
                rdir.mkdir(parents=True, exist_ok=True)
                sitk.WriteImage(_image(s["regions"], site, np.uint8), str(rdir / f"WMH_{sid}.nii.gz"), True)
            subjects.append({"id": sid, "split": site.split, "site": site.folder,
                             "lesion_voxels": int((s["wmh"] == 1).sum()), "has_regions": has_regions})
    return subjects


# the atlas grid: 2 mm (registration works at 4 and 2 mm), LPS, covering the canonical head
ATLAS_SIZE = (90, 104, 30)
ATLAS_SPACING = (2.0, 2.0, 2.0)
# type-II labels (Eve's numbering, right = left + 65) in the demo atlas: just what the location priors
# (nnunet_wmhloc.location.priors) read
TYPE2_WALL = 53  # body of the corpus callosum: a ventricle-lining structure
TYPE2_PONS = 64  # infratentorial
TYPE2_RIGHT = 65


def demo_atlas(size=ATLAS_SIZE, spacing=ATLAS_SPACING):
    """(Atlas, type-II label array z-y-x) of the canonical synthetic head, in the format of the Eve atlas:
    skull-stripped T1, brain mask, FSL-like tissue classes (1 CSF and ventricles, 2 GM, 3 WM), the 36 region
    labels over GM and WM (the subjects' region maps are these inside their WM) and type-II labels for the
    location priors (ventricle-lining WM next to the ventricles, pons in the 35/36 compartment, else 0)."""
    from nnunet_wmhloc.atlas._atlas import Atlas

    cls, reg, geo = _anatomy(size, spacing, _IDENT, None)
    X, vent = geo[2], geo[4]
    site = Site("atlas", "", tuple(size), tuple(spacing), _IDENT, 0)
    brain = cls >= 2
    tissue = np.choose(cls, [0, 0, 1, 2, 3, 1]).astype(np.uint8)
    labels = np.where((cls == 3) | (cls == 4), reg, 0).astype(np.int16)
    t1 = np.where(brain, T1_TISSUE[cls], 0.0) * 1000.0
    left = X > 0
    near_vent = ndimage.distance_transform_edt(~vent, sampling=spacing[::-1]) <= 2 * spacing[0]
    type2 = np.zeros(cls.shape, np.int16)
    type2[near_vent & (cls == 4)] = TYPE2_WALL
    type2[(reg >= 35) & (cls >= 3) & (cls != 5)] = TYPE2_PONS
    type2[(type2 > 0) & ~left] += TYPE2_RIGHT
    t1_img = _image(t1.astype(np.float32), site)
    atlas = Atlas(t1=t1_img, brain=_image(brain, site, np.uint8), tissue=_image(tissue, site, np.uint8),
                  labels=_image(labels, site, np.int16), source="nnunet_wmhloc.synth.demo_atlas")
    return atlas, type2


def write_demo_atlas(output: str | Path, *, overwrite: bool = False) -> Path:
    """An atlas folder (`--atlas-dir`, atlas._atlas.load_atlas's format) of `demo_atlas`, with its type-II
    label map under the Eve file name, so that the location priors find it in the folder itself."""
    from nnunet_wmhloc.atlas import _atlas

    atlas, type2 = demo_atlas()
    with atomic_dir(output, overwrite=overwrite) as tmp:
        _atlas.write_atlas(atlas, {"source": atlas.source, "wm_definition": f"tissue class {_atlas.WM_CLASS}",
                                   "note": "synthetic demo atlas (wmhloc_run --demo), not a human brain"}, tmp)
        t2 = sitk.GetImageFromArray(type2)
        t2.CopyInformation(atlas.t1)
        sitk.WriteImage(t2, str(tmp / _atlas.EVE_TYPE2), True)
    return Path(output)


def _main(argv=None) -> int:
    p = cli.parser("wmhloc_synth", __doc__.split("\n\n")[0])
    p.add_argument("--output", "-o", required=True, help="folder to create (the release root)")
    p.add_argument("--seed", type=cli.seed_int, default=0, help="random seed; same seed, same cohort")
    p.add_argument("--per-site", type=cli.int_range(1, MAX_PER_SITE), default=2,
                   help=f"training subjects per training site (3 sites; 1..{MAX_PER_SITE}, ids stay unique)")
    p.add_argument("--test-per-site", type=cli.int_range(1, MAX_TEST_PER_SITE), default=1,
                   help=f"test subjects per test site (5 sites; 1..{MAX_TEST_PER_SITE})")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    a = p.parse_args(argv)
    subs = make_cohort(a.output, seed=a.seed, per_site=a.per_site, test_per_site=a.test_per_site,
                       overwrite=a.overwrite)
    n_tr = sum(s["split"] == "training" for s in subs)
    print(f"wrote {len(subs)} synthetic subjects ({n_tr} training, {len(subs) - n_tr} test) to {a.output}")
    return 0


main = cli.entry(_main)
