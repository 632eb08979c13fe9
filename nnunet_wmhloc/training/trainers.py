"""nnU-Net trainers of the plugin (class names are public API; nnU-Net finds them through `nnUNet_extTrainer`,
which `eval "$(wmhloc_env)"` sets).

- nnUNetTrainerWMHLoc:     CE + Dice + skeleton recall (equal weights) and the MRI augmentation.
- nnUNetTrainerWMHLocCEDC: the same augmentation, CE + Dice only (the ablation).
- *_1epoch, *_5epochs, *_10epochs: shorter schedules; *_smoke: 2 epochs x 3 iterations, no test-time
  mirroring, for CPU CI.

Datasets declaring left/right label pairs (dataset.json "wmhloc_lr_pairs", the region dataset) get
hemisphere-aware mirroring, capped rotation and a left-right symmetric network (laterality.py); others train
exactly as before. Everything else (SGD + Nesterov, poly LR, 1000 x 250 iterations, deep supervision, ...)
is nnU-Net's default.
Every __init__ keeps nnUNetTrainer's exact signature: nnU-Net records the arguments through inspect.signature
to rebuild the trainer from a checkpoint.
"""
from __future__ import annotations

from typing import List, Tuple, Union

import numpy as np
import torch
from batchgeneratorsv2.helpers.scalar_type import RandomScalar
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from nnunetv2.training.data_augmentation.compute_initial_patch_size import get_patch_size
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import get_tp_fp_fn_tn
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast, nn
from torch._dynamo import OptimizedModule

from nnunet_wmhloc.training.device_aug import DeviceAugmentation
from nnunet_wmhloc.training.laterality import (MAX_ROTATION_DEG, lr_pairs, lr_patch_axis, make_lr_symmetric,
                                               rotation_capped, set_lr_symmetry)
from nnunet_wmhloc.training.loss import DC_CE_SR_loss, SkeletonRecallLoss
from nnunet_wmhloc.training.transforms import ON_DEVICE_PROBABILITIES, training_transforms, validation_transforms

__all__ = [
    "nnUNetTrainerWMHLoc", "nnUNetTrainerWMHLocCEDC",
    "nnUNetTrainerWMHLoc_1epoch", "nnUNetTrainerWMHLoc_5epochs", "nnUNetTrainerWMHLoc_10epochs",
    "nnUNetTrainerWMHLoc_smoke",
    "nnUNetTrainerWMHLocCEDC_1epoch", "nnUNetTrainerWMHLocCEDC_5epochs", "nnUNetTrainerWMHLocCEDC_10epochs",
    "nnUNetTrainerWMHLocCEDC_smoke",
]


class nnUNetTrainerWMHLocCEDC(nnUNetTrainer):
    """nnU-Net's CE + Dice with the extra MRI augmentation (elastic, bias field, ghosting, motion,
    multiplicative noise) on top of nnU-Net's default augmentation."""

    skeleton_channel = False  # nnUNetTrainerWMHLoc: the SR target travels as an extra segmentation channel
    lr_max_rotation_deg = MAX_ROTATION_DEG  # datasets with left/right pairs: rotations turning the LR axis
    # elastic + MRI intensity augmentation, nnU-Net's Gaussian blur and gamma, and the deep-supervision downsampling
    # batched on the training device in train_step (device_aug.py), off the data-loader workers; False keeps
    # all of it in the worker pipeline
    intensity_on_device = True
    device_augmentation: DeviceAugmentation | None = None

    def laterality(self) -> tuple[int | None, list | None]:
        """(left-right axis of the patch, label pairs) when the dataset declares left/right pairs and the
        patch has that axis, else (None, None): then everything is nnU-Net's usual."""
        if getattr(self, "_lr", None) is None:
            pairs = lr_pairs(self.dataset_json)
            axis = None
            if pairs:
                axis = lr_patch_axis(self.plans_manager.plans.get("image_reader_writer", "SimpleITKIO"),
                                     self.plans_manager.transpose_forward,
                                     len(self.configuration_manager.patch_size))
            self._lr = (axis, pairs) if axis is not None else (None, None)
        return self._lr

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch_size, mirror_axes = \
            super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        axis, _ = self.laterality()
        if axis is None:
            return rotation, dummy_2d, initial_patch_size, mirror_axes
        patch = self.configuration_manager.patch_size
        dim = len(patch)
        if not (dummy_2d and axis == 0):  # rotations turn the left-right axis: keep left on the left
            rotation = rotation_capped(rotation, self.lr_max_rotation_deg)
            initial_patch_size = get_patch_size(patch[-dim:], rotation, rotation, rotation, (0.85, 1.25))
            if dummy_2d:
                initial_patch_size[0] = patch[0]
        # nnU-Net's test-time mirroring flips back without swapping channels; the network is symmetric instead
        self.inference_allowed_mirroring_axes = tuple(a for a in mirror_axes if a != axis) or None
        self.print_to_log_file(f"left/right label pairs: left-right axis {axis} of the patch; mirrors along it "
                               f"swap the pairs; rotation at most {np.rad2deg(np.abs(rotation).max()):.0f} deg; "
                               f"test-time mirror axes {self.inference_allowed_mirroring_axes} + symmetric network")
        return rotation, dummy_2d, initial_patch_size, mirror_axes

    def initialize(self):
        super().initialize()
        axis, pairs = self.laterality()
        net = self.network.module if self.is_ddp else self.network
        if isinstance(net, OptimizedModule):
            net = net._orig_mod
        set_lr_symmetry(net, axis, pairs)

    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> nn.Module:
        # nnUNetv2_predict builds through this too: the symmetry's switch and pairs come with the checkpoint
        net = nnUNetTrainer.build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                       num_output_channels, enable_deep_supervision)
        return make_lr_symmetric(net, num_output_channels)

    def get_training_transforms(
            self,
            patch_size: Union[np.ndarray, Tuple[int]],
            rotation_for_DA: RandomScalar,
            deep_supervision_scales: Union[List, Tuple, None],
            mirror_axes: Tuple[int, ...],
            do_dummy_2d_data_aug: bool,
            use_mask_for_norm: List[bool] = None,
            is_cascaded: bool = False,
            foreground_labels: Union[Tuple[int, ...], List[int]] = None,
            regions: List[Union[List[int], Tuple[int, ...], int]] = None,
            ignore_label: int = None,
    ) -> BasicTransform:
        axis, pairs = self.laterality()
        on_device = bool(self.intensity_on_device)
        if on_device:
            # the deep-supervision downsampling moves to the device too (after the deformation there)
            masked = [i for i, m in enumerate(use_mask_for_norm or []) if m]
            self.device_augmentation = DeviceAugmentation(ON_DEVICE_PROBABILITIES, pseudo_2d=do_dummy_2d_data_aug,
                                                          mask_channels=masked, ds_scales=deep_supervision_scales)
            deep_supervision_scales = None
        return training_transforms(patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes,
                                   do_dummy_2d_data_aug, use_mask_for_norm, is_cascaded, foreground_labels,
                                   regions, ignore_label, skeleton=self.skeleton_channel, lr_axis=axis,
                                   lr_pairs=pairs, on_device=on_device)

    def on_device(self, batch: dict) -> dict:
        """A training batch from the workers moved to the device, augmented there and, with deep supervision,
        given its list of downsampled targets: what nnU-Net's train_step then trains on."""
        if self.device_augmentation is None:
            return batch
        target = batch['target']
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) else \
            target.to(self.device, non_blocking=True)
        data, target = self.device_augmentation(batch['data'].to(self.device, non_blocking=True), target)
        return dict(batch, data=data, target=target)

    def train_step(self, batch: dict) -> dict:
        # nnU-Net's train_step on the device-side batch (its .to() is then a no-op)
        return super().train_step(self.on_device(batch))


class nnUNetTrainerWMHLoc(nnUNetTrainerWMHLocCEDC):
    """CE + Dice + skeleton recall (weights 1, 1, 1) with the MRI augmentation.

    The tubed ground-truth skeleton travels as a second segmentation channel (added by SkeletonTransform
    before deep-supervision downsampling); the loss splits it off. Label-based datasets only (including the
    ignore label), not nnU-Net region-based training.
    """
    weight_sr = 1.0
    skeleton_channel = True

    @staticmethod
    def get_validation_transforms(
            deep_supervision_scales: Union[List, Tuple, None],
            is_cascaded: bool = False,
            foreground_labels: Union[Tuple[int, ...], List[int]] = None,
            regions: List[Union[List[int], Tuple[int, ...], int]] = None,
            ignore_label: int = None,
    ) -> BasicTransform:
        return validation_transforms(deep_supervision_scales, is_cascaded, foreground_labels, regions,
                                     ignore_label, skeleton=True)

    def _build_loss(self):
        if self.label_manager.has_regions:
            raise RuntimeError(f"{self.__class__.__name__}: skeleton recall needs label-based training; this "
                               f"dataset uses nnU-Net regions. Use nnUNetTrainerWMHLocCEDC instead.")
        # nnU-Net builds CE + Dice (ignore label, compile, deep-supervision weights); we put SR beside CE + Dice
        loss = super()._build_loss()
        sr = SkeletonRecallLoss(batch_dice=self.configuration_manager.batch_dice,
                                ignore_label=self.label_manager.ignore_label)
        if isinstance(loss, DeepSupervisionWrapper):
            loss.loss = DC_CE_SR_loss(loss.loss, sr, self.weight_sr)
            return loss
        return DC_CE_SR_loss(loss, sr, self.weight_sr)

    def validation_step(self, batch: dict) -> dict:
        # nnU-Net's validation_step, except that the loss sees the skeleton channel while the pseudo Dice
        # uses the segmentation channel only
        data = batch['data'].to(self.device, non_blocking=True)
        target = batch['target']
        if isinstance(target, list):
            target = [i.to(self.device, non_blocking=True) for i in target]
        else:
            target = target.to(self.device, non_blocking=True)

        with autocast(self.device.type, enabled=True) if self.device.type == 'cuda' else dummy_context():
            output = self.network(data)
            del data
            l = self.loss(output, target)

        if self.enable_deep_supervision:
            output = output[0]
            target = target[0]
        target = target[:, :1]

        axes = [0] + list(range(2, output.ndim))
        output_seg = output.argmax(1)[:, None]
        predicted_segmentation_onehot = torch.zeros(output.shape, device=output.device, dtype=torch.float16)
        predicted_segmentation_onehot.scatter_(1, output_seg, 1)
        del output_seg

        if self.label_manager.has_ignore_label:
            mask = (target != self.label_manager.ignore_label).float()
            target = torch.where(target == self.label_manager.ignore_label, torch.zeros_like(target), target)
        else:
            mask = None

        tp, fp, fn, _ = get_tp_fp_fn_tn(predicted_segmentation_onehot, target, axes=axes, mask=mask)
        # drop the background, as nnU-Net does for softmax training
        tp_hard = tp.detach().cpu().numpy()[1:]
        fp_hard = fp.detach().cpu().numpy()[1:]
        fn_hard = fn.detach().cpu().numpy()[1:]
        return {'loss': l.detach().cpu().numpy(), 'tp_hard': tp_hard, 'fp_hard': fp_hard, 'fn_hard': fn_hard}


class _NoTestTimeMirroring:
    """Smoke runs: keep mirroring as a training augmentation but predict without mirrored test-time
    augmentation (the checkpoint records it, so nnUNetv2_predict follows), 4x (2D) / 8x (3D) less CPU."""

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        out = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return out


class _Schedule:
    """Short schedules: class attributes override nnU-Net's epochs/iterations. `__init__` keeps nnU-Net's
    exact signature, which nnUNetTrainer records through inspect.signature + locals()."""
    epochs: int | None = None
    iterations: int | None = None
    val_iterations: int | None = None

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.epochs:
            self.num_epochs = self.epochs
        if self.iterations:
            self.num_iterations_per_epoch = self.iterations
        if self.val_iterations:
            self.num_val_iterations_per_epoch = self.val_iterations


class _Smoke(_Schedule, _NoTestTimeMirroring):
    """2 epochs x 3 iterations, 2 validation iterations, no test-time mirroring: a CPU smoke run."""
    epochs, iterations, val_iterations = 2, 3, 2


class nnUNetTrainerWMHLoc_1epoch(_Schedule, nnUNetTrainerWMHLoc):
    """nnUNetTrainerWMHLoc for 1 epoch (debugging plans)."""
    epochs = 1


class nnUNetTrainerWMHLoc_5epochs(_Schedule, nnUNetTrainerWMHLoc):
    epochs = 5


class nnUNetTrainerWMHLoc_10epochs(_Schedule, nnUNetTrainerWMHLoc):
    epochs = 10


class nnUNetTrainerWMHLoc_smoke(_Smoke, nnUNetTrainerWMHLoc):
    """nnUNetTrainerWMHLoc, 2 epochs x 3 iterations, no test-time mirroring (CPU smoke runs)."""


class nnUNetTrainerWMHLocCEDC_1epoch(_Schedule, nnUNetTrainerWMHLocCEDC):
    """nnUNetTrainerWMHLocCEDC for 1 epoch (debugging plans)."""
    epochs = 1


class nnUNetTrainerWMHLocCEDC_5epochs(_Schedule, nnUNetTrainerWMHLocCEDC):
    epochs = 5


class nnUNetTrainerWMHLocCEDC_10epochs(_Schedule, nnUNetTrainerWMHLocCEDC):
    epochs = 10


class nnUNetTrainerWMHLocCEDC_smoke(_Smoke, nnUNetTrainerWMHLocCEDC):
    """nnUNetTrainerWMHLocCEDC, 2 epochs x 3 iterations, no test-time mirroring (CPU smoke runs)."""
