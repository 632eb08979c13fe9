"""nnunet_wmhloc: white-matter lesion and region segmentation with nnU-Net v2, regional lesion loads and
patient clustering."""
__version__ = "0.1.0"
