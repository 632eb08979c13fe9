"""The refined 36-label WM atlas and its transfer into subject space.

build.py (wmhloc_build_atlas: `build_atlas`) makes the atlas folder; region labels are subject_labels.py
(`label_subject`: one subject, nothing written), label_outputs.py (`region_labels_subject`: the label map and
its sidecars written as one unit), cohort_labels.py (`region_labels_cohort`: a cohort through the converters'
walker, local processes or Dask) and region_labels.py (the wmhloc_region_labels command)."""
