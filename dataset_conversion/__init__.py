"""Converters from the WMH 2017 challenge release and new cohorts to nnU-Net v2 raw datasets."""
