"""Where the lesions are: clinical location classes and atlas-space maps (issue 20).

- `priors`: atlas-space ventricles, infratentorial compartment and deep grey matter from the Eve type-II
  labels and FSL tissue classes;
- `context`: per subject, those priors carried by the atlas registration and refined by the subject's
  tissue classes (ventricles, cortex, infratentorial) on the lesion map's grid;
- `classes`: per-lesion location (LST-AI's priority order), per-subject periventricular/deep loads by the
  distance and continuity rules, juxtacortical, infratentorial and lobar loads, ICV;
- `space`: lesion masks on the atlas grid and the cohort's lesion-frequency map;
- `subject`: the model-free path for one subject (segmentation, registration, context, classes).
"""
from nnunet_wmhloc.location.classes import (LOBES, LOCATION_CODES, LOCATIONS, PV_DISTANCE_MM, classify_lesions,
                                            components, lobe_of, location_map, subject_loads)
from nnunet_wmhloc.location.context import LocationContext, location_context, ventricle_mask
from nnunet_wmhloc.location.priors import AtlasPriors, atlas_priors
from nnunet_wmhloc.location.space import atlas_point, frequency_map, frequency_maps, inverse, to_atlas
from nnunet_wmhloc.location.subject import Located, Registered, locate, register_subject

__all__ = ["LOBES", "LOCATION_CODES", "LOCATIONS", "PV_DISTANCE_MM", "classify_lesions", "components", "lobe_of",
           "location_map", "subject_loads", "LocationContext", "location_context", "ventricle_mask",
           "AtlasPriors", "atlas_priors", "atlas_point", "frequency_map", "frequency_maps", "inverse", "to_atlas",
           "Located", "Registered", "locate", "register_subject"]
