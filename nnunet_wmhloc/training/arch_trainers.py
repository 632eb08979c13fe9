"""The paper's architectures as nnU-Net trainers: everything of nnUNetTrainerWMHLoc / nnUNetTrainerWMHLocCEDC
(loss, augmentation, schedule), only the network differs (networks in nnunet_wmhloc.training.architectures).

    nnUNetTrainerWMHLoc_UNETR,        nnUNetTrainerWMHLocCEDC_UNETR         MONAI UNETR, no deep supervision
    nnUNetTrainerWMHLoc_MultiResUNet, nnUNetTrainerWMHLocCEDC_MultiResUNet  MultiResUNet, deep supervision
    nnUNetTrainerWMHLoc_MedNeXt,      nnUNetTrainerWMHLocCEDC_MedNeXt       MONAI MedNeXt-B, deep supervision
    nnUNetTrainerWMHLoc_<arch>_smoke                                        2 epochs x 3 iterations (CPU checks)

The U-Net is nnU-Net's own network: nnUNetTrainerWMHLoc / nnUNetTrainerWMHLocCEDC themselves.

Only `build_network_architecture` (static: nnUNetv2_predict calls it on the class named in the checkpoint,
with enable_deep_supervision=False; the network gets laterality.py's left-right symmetry, switched on for
datasets with left/right label pairs) and the deep-supervision plumbing change. Deep supervision: the scales given
to the target downsampling and to the loss weights (1, 1/2, 1/4, ..., last 0, normalised: nnU-Net's rule) are
the network's own (MedNeXt: 1 .. 1/16 isotropic, not the plan's pooling). UNETR has none:
enable_deep_supervision is False, targets are not downsampled, and the loss (CE + Dice [+ skeleton recall]) is
computed once, on the full-resolution output, without nnU-Net's DeepSupervisionWrapper.
"""
from __future__ import annotations

import torch
from torch import nn
from torch._dynamo import OptimizedModule

from nnunet_wmhloc.training import architectures
from nnunet_wmhloc.training.laterality import make_lr_symmetric
from nnunet_wmhloc.training.trainers import (nnUNetTrainerWMHLoc, nnUNetTrainerWMHLoc_smoke,
                                             nnUNetTrainerWMHLocCEDC)

__all__ = [
    "nnUNetTrainerWMHLoc_UNETR", "nnUNetTrainerWMHLoc_MultiResUNet", "nnUNetTrainerWMHLoc_MedNeXt",
    "nnUNetTrainerWMHLocCEDC_UNETR", "nnUNetTrainerWMHLocCEDC_MultiResUNet", "nnUNetTrainerWMHLocCEDC_MedNeXt",
    "nnUNetTrainerWMHLoc_UNETR_smoke", "nnUNetTrainerWMHLoc_MultiResUNet_smoke", "nnUNetTrainerWMHLoc_MedNeXt_smoke",
]


class _ArchitectureMixin:
    """Deep-supervision plumbing for a network from architectures.build_network (put first in the bases)."""
    network_arch: str = None

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if not architectures.has_deep_supervision(self.network_arch):
            self.enable_deep_supervision = False

    def _get_deep_supervision_scales(self):
        if not self.enable_deep_supervision:
            return None
        return architectures.deep_supervision_scales(self.network_arch, self.configuration_manager)

    def set_deep_supervision_enabled(self, enabled: bool):
        # nnU-Net switches it off for validation and back on afterwards, whatever the network
        mod = self.network.module if self.is_ddp else self.network
        if isinstance(mod, OptimizedModule):
            mod = mod._orig_mod
        architectures.set_deep_supervision(mod, bool(enabled) and self.enable_deep_supervision)


class _UNETR(_ArchitectureMixin):
    network_arch = "UNETR"

    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> nn.Module:
        return make_lr_symmetric(architectures.build_network(
            "UNETR", plans_manager, configuration_manager, num_input_channels, num_output_channels,
            enable_deep_supervision), num_output_channels)


class _MultiResUNet(_ArchitectureMixin):
    network_arch = "MultiResUNet"

    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> nn.Module:
        return make_lr_symmetric(architectures.build_network(
            "MultiResUNet", plans_manager, configuration_manager, num_input_channels, num_output_channels,
            enable_deep_supervision), num_output_channels)


class _MedNeXt(_ArchitectureMixin):
    network_arch = "MedNeXt"

    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> nn.Module:
        return make_lr_symmetric(architectures.build_network(
            "MedNeXt", plans_manager, configuration_manager, num_input_channels, num_output_channels,
            enable_deep_supervision), num_output_channels)


class nnUNetTrainerWMHLoc_UNETR(_UNETR, nnUNetTrainerWMHLoc):
    """nnUNetTrainerWMHLoc with MONAI's UNETR (ViT-B/16 encoder); no deep supervision."""


class nnUNetTrainerWMHLoc_MultiResUNet(_MultiResUNet, nnUNetTrainerWMHLoc):
    """nnUNetTrainerWMHLoc with MultiResUNet on the plan's stages; deep supervision at the plan's scales."""


class nnUNetTrainerWMHLoc_MedNeXt(_MedNeXt, nnUNetTrainerWMHLoc):
    """nnUNetTrainerWMHLoc with MONAI's MedNeXt-B (kernel 3); deep supervision at 1 .. 1/16."""


class nnUNetTrainerWMHLocCEDC_UNETR(_UNETR, nnUNetTrainerWMHLocCEDC):
    """nnUNetTrainerWMHLocCEDC (CE + Dice) with MONAI's UNETR; no deep supervision."""


class nnUNetTrainerWMHLocCEDC_MultiResUNet(_MultiResUNet, nnUNetTrainerWMHLocCEDC):
    """nnUNetTrainerWMHLocCEDC (CE + Dice) with MultiResUNet; deep supervision at the plan's scales."""


class nnUNetTrainerWMHLocCEDC_MedNeXt(_MedNeXt, nnUNetTrainerWMHLocCEDC):
    """nnUNetTrainerWMHLocCEDC (CE + Dice) with MONAI's MedNeXt-B; deep supervision at 1 .. 1/16."""


class nnUNetTrainerWMHLoc_UNETR_smoke(_UNETR, nnUNetTrainerWMHLoc_smoke):
    """nnUNetTrainerWMHLoc_smoke (2 epochs x 3 iterations, no test-time mirroring) with UNETR."""


class nnUNetTrainerWMHLoc_MultiResUNet_smoke(_MultiResUNet, nnUNetTrainerWMHLoc_smoke):
    """nnUNetTrainerWMHLoc_smoke (2 epochs x 3 iterations, no test-time mirroring) with MultiResUNet."""


class nnUNetTrainerWMHLoc_MedNeXt_smoke(_MedNeXt, nnUNetTrainerWMHLoc_smoke):
    """nnUNetTrainerWMHLoc_smoke (2 epochs x 3 iterations, no test-time mirroring) with MedNeXt."""
