"""Fusion of T1/FLAIR predictions, regional lesion loads, lesion census and subject clustering."""
