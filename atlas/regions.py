"""The 36 labels of the refined atlas: 34 WM regions (paper Tables A.1/A.2) plus 35/36, the rest of the
left/right hemisphere's type-II labels (kept, but reported apart from the 34).

Short names are for tables and figures; full names are the authors' (refined_atlas_labels.txt)."""
from __future__ import annotations

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
