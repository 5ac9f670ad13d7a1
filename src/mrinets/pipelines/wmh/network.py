"""The WMH network: how it is built and how it reads a box (training and prediction both use it)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mrinets.nets.unet3d import UNet3D
from mrinets.training.inference import predict_volume

__all__ = ["build_network", "predict_logits", "predict_grid"]


def build_network(channels) -> UNet3D:
    """The 3D U-Net, its output bias set to a 2 % lesion prior.

    Lesions fill about 1 % of a patch; starting from p = 0.5 everywhere the
    network spends hundreds of steps unlearning false positives before it
    looks for lesions (the prior initialisation of Lin et al., focal loss, 2017).
    """
    net = UNet3D(in_channels=1, out_channels=1, channels=tuple(channels), strides=(2,) * (len(channels) - 1),
                 num_res_units=1, norm="instance")
    last = [m for m in net.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)) and m.out_channels == 1][-1]
    nn.init.constant_(last.bias, -4.0)
    return net


def predict_logits(model: torch.nn.Module, image: np.ndarray, patch_size, device: str = "cpu",
                   overlap: float | tuple[float, float, float] = 0.25) -> np.ndarray:
    """Lesion logits in the box (sliding windows, Gaussian blending; ``overlap`` per axis or for all)."""
    return predict_volume(model, image, roi_size=patch_size, overlap=overlap, sw_batch_size=2, device=device)[0]


def predict_grid(model: torch.nn.Module, image: np.ndarray, patch_size, device: str = "cpu") -> np.ndarray:
    """Lesion probability in the box."""
    return (1.0 / (1.0 + np.exp(-predict_logits(model, image, patch_size, device)))).astype(np.float32)
