"""Brain-masking network for GRE magnitude: a small MONAI 3D U-Net (magnitude -> brain logit)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.nets import UNet
from torch import nn

__all__ = ["BrainMaskNet"]


class BrainMaskNet(nn.Module):
    """Normalised GRE magnitude (N, 1, X, Y, Z) -> brain-mask logits (N, 1, X, Y, Z).

    Parameters
    ----------
    channels : sequence of int
        Feature maps per level (len(channels) - 1 stride-2 downsamplings).
    res_units : int
        Residual units per level (MONAI ``UNet``'s ``num_res_units``).
    """

    def __init__(self, channels: Sequence[int] = (8, 16, 32, 64), res_units: int = 1) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        if len(channels) < 2 or min(channels) < 1:
            raise ValueError(f"channels must hold at least two positive ints, got {channels}")
        self._config = {"channels": channels, "res_units": int(res_units)}
        self.net = UNet(spatial_dims=3, in_channels=1, out_channels=1, channels=channels,
                        strides=[2] * (len(channels) - 1), num_res_units=int(res_units), norm="instance")

    @property
    def divisor(self) -> int:
        """Input sizes must be multiples of this."""
        return 2 ** (len(self._config["channels"]) - 1)

    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
