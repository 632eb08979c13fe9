"""Loaded by nnU-Net as a top-level module when `nnUNet_extTrainer` names this folder (see `wmhloc_env`).

Keep it a bare re-export: nnU-Net imports every module of the folder and drops them from sys.modules
afterwards, so the trainers live in nnunet_wmhloc.training.trainers (a stable, picklable home)."""
from nnunet_wmhloc.training.trainers import *  # noqa: F401,F403
from nnunet_wmhloc.training.trainers import __all__  # noqa: F401
from nnunet_wmhloc.training.arch_trainers import *  # noqa: F401,F403,E402
from nnunet_wmhloc.training.arch_trainers import __all__ as _arch_all  # noqa: E402

__all__ = list(__all__) + list(_arch_all)
