"""Checked input and atomic output, shared by every command, split by concern:

- `paths`: user paths (exists, kind, readable), folder listings, names used as path parts, `WMHLocError`;
- `images`: NIfTI/ITK images read with the checks ITK does not make, written atomically;
- `outputs`: checks before writing, folders we own (only those are replaced), atomic files/folders, JSON;
- `tables`: CSV and JSON tables (cells a spreadsheet would run as formulas neutralised);
- `temps`: temporaries tagged with their process (swept once it is dead), exclusive claims on outputs.

Nothing here knows the pipeline. The names below are the public ones; import them from `nnunet_wmhloc.io`.
"""
from nnunet_wmhloc.io.paths import (NIFTI_SUFFIXES, WMHLocError, check_path, few, files_by_key, is_number, list_inputs,
                                    safe_name, strip_nifti)
from nnunet_wmhloc.io.outputs import (OWNER_MARKER, atomic_dir, atomic_file, check_not_input, check_output,
                                      check_overwrite, is_owned, make_owned_dir, mark_owned, not_owned_error,
                                      remove_owned, write_json, write_text)
from nnunet_wmhloc.io.images import (array_to_image, check_same_geometry, geometry, read_array, read_image,
                                     read_labels, voxel_volume_mm3, write_image, to_float32)
from nnunet_wmhloc.io.tables import csv_cell, formula_safe, read_csv, read_json, write_csv
from nnunet_wmhloc.io.temps import claim, fit_name, new_temp_dir, sweep_stale, temp_dir

__all__ = [
    "to_float32",
    "NIFTI_SUFFIXES", "WMHLocError", "check_path", "few", "files_by_key", "is_number", "list_inputs", "safe_name", "strip_nifti",
    "OWNER_MARKER", "atomic_dir", "atomic_file", "check_not_input", "check_output", "check_overwrite", "is_owned",
    "make_owned_dir", "mark_owned", "not_owned_error", "remove_owned", "write_json", "write_text",
    "array_to_image", "check_same_geometry", "geometry", "read_array", "read_image", "read_labels",
    "voxel_volume_mm3", "write_image", "csv_cell", "formula_safe", "read_csv", "read_json", "write_csv",
    "claim", "fit_name", "new_temp_dir", "sweep_stale", "temp_dir",
]
