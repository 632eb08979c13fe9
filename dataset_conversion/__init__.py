"""Converters from the WMH 2017 challenge release and new cohorts to nnU-Net v2 raw datasets.

subjects.py is the one cohort walker (CSV, BIDS, subject folders, flat files; also used by region labelling);
common.py checks subjects and writes datasets and folds; wmh2017.py (`convert`), cohort.py (`convert_cohort`)
and splits.py (`make_splits`) are the commands' functions, each with its thin `main`."""
