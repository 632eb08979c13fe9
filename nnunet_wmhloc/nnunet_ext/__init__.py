"""Folder for nnU-Net's `nnUNet_extTrainer`.

nnU-Net imports every module of that folder as a top-level module, so it holds exactly one small module,
`nnunet_wmhloc_trainers`, that re-exports our trainers (`wmhloc_env` prints the export line)."""
from pathlib import Path

EXT_TRAINER_DIR = str(Path(__file__).resolve().parent)
