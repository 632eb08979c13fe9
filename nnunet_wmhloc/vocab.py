"""The project's vocabulary, one definition each, used by every stage:

- region labels of the refined atlas (names, columns, hemispheres, left/right pairs);
- lesion labels (the challenge's 0/1/2, 2 being nnU-Net's ignore label);
- modalities and case names (`<subject>_<modality>`);
- the one subject-id rule, for ids read from folders, CSVs and file names alike;
- nnU-Net dataset folders (`Dataset<id:03d>_<name>`).

Region labels: 34 WM regions (paper Tables A.1/A.2) plus 35/36, the rest of the left/right hemisphere's
type-II labels (kept, but reported apart from the 34). Short names are for tables and figures; full names
are the authors' (refined_atlas_labels.txt).
"""
from __future__ import annotations

import re
from pathlib import Path

from nnunet_wmhloc.io.paths import WMHLocError, is_number, strip_nifti

# ----------------------------------------------------------------------------------------- regions
# label: (short name, authors' full name)
_LEFT = [
    ("parietal", "SUPERIOR_PARIETAL_LOBULE/ANGULAR_GYRUS/SUPRAMARGINAL_GYRUS"),
    ("cingulate", "CINGULATE_GYRUS/Cingulum_(cingulate_gyrus)"),
    ("superior frontal", "SUPERIOR_FRONTAL_GYRUS"),
    ("middle frontal", "MIDDLE_FRONTAL_GYRUS"),
    ("inferior frontal", "INFERIOR_FRONTAL_GYRUS"),
    ("pre/postcentral", "PRECENTRAL_GYRUS/POSTCENTRAL_GYRUS"),
    ("precuneus/cuneus/lingual", "PRE-CUNEUS/CUNEUS/LINGUAL_GYRUS"),
    ("fusiform/parahippocampal", "FUSIFORM_GYRUS/PARAHIPPOCAMPAL_GYRUS/ENTORHINAL_AREA/Cingulum_(hippocampus)"),
    ("occipital", "SUPERIOR_OCCIPITAL_GYRUS/INFERIOR_OCCIPITAL_GYRUS/MIDDLE_OCCIPITAL_GYRUS"),
    ("temporal", "SUPERIOR_TEMPORAL_GYRUS/INFERIOR_TEMPORAL_GYRUS/MIDDLE_TEMPORAL_GYRUS"),
    ("orbitofrontal", "LATERAL_FRONTO-ORBITAL_GYRUS/MIDDLE_FRONTO-ORBITAL_GYRUS/GYRUS_RECTUS"),
    ("sup. corona radiata/SLF", "Superior_corona_radiata/Superior_longitudinal_fasciculus"),
    ("post. thalamic rad./post. corona radiata",
     "Posterior_thalamic_radiation/Posterior_corona_radiata/Retrolenticular_part_of_internal_capsule/Tapatum"),
    ("ant. internal capsule/ant. corona radiata",
     "Anterior_limb_of_internal_capsule/Anterior_corona_radiata/Superior_fronto-occipital_fasciculus"),
    ("IFOF/external capsule/uncinate", "Inferior_fronto-occipital_fasciculus/External_capsule/Uncinate_fasciculus"),
    ("cerebral peduncle/post. internal capsule",
     "Cerebral_peduncle/Posterior_limb_of_internal_capsule/Fornix(cres)_Stria_terminalis/Sagittal_stratum"),
    ("corpus callosum/fornix",
     "Fornix_(column_and_body)/Genu_of_corpus_callosum/Body_of_corpus_callosum/Splenium_of_corpus_callosum"),
]

N_WM_REGIONS = 34
LEFT_REGIONS = tuple(range(1, 18))
RIGHT_REGIONS = tuple(range(18, 35))
WM_REGIONS = tuple(range(1, N_WM_REGIONS + 1))
REST_LEFT, REST_RIGHT = 35, 36
REST_REGIONS = (REST_LEFT, REST_RIGHT)
ALL_LABELS = tuple(range(0, 37))

REGION_NAMES: dict[int, str] = {0: "background"}
REGION_FULL_NAMES: dict[int, str] = {0: "Background"}
for _i, (_short, _full) in enumerate(_LEFT):
    REGION_NAMES[1 + _i] = f"L {_short}"
    REGION_NAMES[18 + _i] = f"R {_short}"
    REGION_FULL_NAMES[1 + _i] = f"{_full} (left)"
    REGION_FULL_NAMES[18 + _i] = f"{_full} (right)"
REGION_NAMES[REST_LEFT] = "L other (deep GM, cerebellum, brainstem)"
REGION_NAMES[REST_RIGHT] = "R other (deep GM, cerebellum, brainstem)"
REGION_FULL_NAMES[REST_LEFT] = "rest_of_left_hemisphere_type-II_labels"
REGION_FULL_NAMES[REST_RIGHT] = "rest_of_right_hemisphere_type-II_labels"


def region_column(label: int) -> str:
    """Stable machine-readable column name for a region, e.g. 'r01_L_parietal'."""
    name = REGION_NAMES[label].replace("/", "_").replace(".", "").replace(" ", "_").replace("(", "").replace(")", "")
    name = name.replace(",", "")
    return f"r{label:02d}_{name}"


def hemisphere(label: int) -> str | None:
    if label in LEFT_REGIONS or label == REST_LEFT:
        return "left"
    if label in RIGHT_REGIONS or label == REST_RIGHT:
        return "right"
    return None


# the left/right partner of every lateral label: a left-right mirror swaps them (1<->18 ... 17<->34, 35<->36)
LR_PAIRS: tuple[tuple[int, int], ...] = tuple(zip(LEFT_REGIONS, RIGHT_REGIONS)) + (REST_REGIONS,)
LR_PAIRS_KEY = "wmhloc_lr_pairs"  # the region dataset.json's entry that declares LR_PAIRS to the trainers

# ----------------------------------------------------------------------------------------- lesions
LESION_LABELS = {"background": 0, "WMH": 1, "ignore": 2}  # nnU-Net's ignore label must be the highest
LESION_ALLOWED = (0, 1, 2)
WMH, OTHER_PATHOLOGY = 1, 2

# ----------------------------------------------------------------------------------------- cases
MODALITIES = ("flair", "t1")


def case_name(subject: str, modality: str) -> str:
    """A subject gives cases `<subject>_<modality>` (wmh012_flair, wmh012_t1); fused outputs are `<subject>`."""
    return f"{subject}_{modality}"


def split_case(stem: str, modalities=MODALITIES) -> tuple[str, str | None]:
    """(subject, modality) of a case name; modality None when the name carries no known suffix
    (matched case-insensitively, the first of `modalities` that fits)."""
    low = stem.lower()
    for m in modalities:
        suffix = "_" + m.lower()
        if low.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)], m
    return stem, None


# ----------------------------------------------------------------------------------------- subject ids
AUTHORS_PREFIX = "WMH_"  # the authors' region maps are WMH_<challenge id>.nii.gz
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")


MAX_ID_LENGTH = 100


def subject_id(raw: str, where: str = "") -> str:
    """The one subject-id rule: a challenge number ('12', or the authors' 'WMH_12') -> 'wmh012'; other ids
    are kept if nnU-Net-safe (ASCII letters, digits, '-': '_' separates a case's modality), else refused.
    `where` (e.g. 'cohort.csv: line 3') leads the error message."""
    raw = raw.strip() if isinstance(raw, str) else ""
    if len(raw) > MAX_ID_LENGTH:  # ids name files and folders (with suffixes): the 255-byte name limit
        lead = f"{where}: " if where else ""
        raise WMHLocError(f"{lead}subject id {raw[:20]!r}... is {len(raw)} characters long (at most {MAX_ID_LENGTH})")
    if raw.startswith(AUTHORS_PREFIX) and is_number(raw[len(AUTHORS_PREFIX):]):
        raw = raw[len(AUTHORS_PREFIX):]
    if is_number(raw):
        return f"wmh{int(raw):03d}"
    if not _ID.fullmatch(raw):
        lead = f"{where}: " if where else ""
        raise WMHLocError(f"{lead}subject id {raw!r} must be ASCII letters, digits and '-' only "
                          "(no '_', spaces, slashes or dots)")
    return raw


def subject_of_file(path: str | Path) -> str | None:
    """The subject id a file of one subject is named by: `<id>.nii.gz`, `WMH_<id>.nii.gz` (the authors),
    `<subject>_<modality>[_0000].nii.gz` (cases); None when the name follows no such rule."""
    stem = strip_nifti(path)
    if stem.endswith("_0000"):
        stem = stem[:-len("_0000")]
    stem = split_case(stem)[0]
    try:
        return subject_id(stem)
    except WMHLocError:
        return None


# ----------------------------------------------------------------------------------------- datasets
DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """nnU-Net's raw/preprocessed/results folder of a dataset: Dataset<id:03d>_<name>."""
    if not 1 <= dataset_id <= 999:
        raise WMHLocError(f"dataset id {dataset_id}: must be between 1 and 999")
    if not DATASET_NAME.fullmatch(name or ""):
        raise WMHLocError(f"dataset name {name!r}: must be ASCII letters, digits and '-' only (it names the "
                          f"folder Dataset{dataset_id:03d}_<name>)")
    return f"Dataset{dataset_id:03d}_{name}"


def dataset_folders(root: Path, dataset_id: int) -> list[Path]:
    """Every Dataset<id:03d>_* folder below `root` (nnU-Net resolves ids by this prefix)."""
    root = Path(root)
    return sorted(root.glob(f"Dataset{int(dataset_id):03d}_*")) if root.is_dir() else []


def find_dataset(root: Path, dataset_id: int, *, what: str = "dataset") -> Path:
    """The one Dataset<id:03d>_* folder below `root`; none or several is a one-line error."""
    hits = dataset_folders(root, dataset_id)
    if len(hits) != 1:
        raise WMHLocError(f"{root}: expected one Dataset{int(dataset_id):03d}_* folder for the {what}, found "
                          f"{len(hits)}")
    return hits[0]
