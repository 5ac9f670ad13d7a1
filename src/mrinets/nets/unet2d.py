"""2D U-Net generator for image translation on MONAI's ``UNet``, output in [-1, 1]."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.nets import UNet
from torch import nn

__all__ = ["UNet2D"]


class UNet2D(nn.Module):
    """(N, in_channels, H, W) -> (N, out_channels, H, W), tanh output; H and W multiples of 2^(levels-1)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 1, channels: Sequence[int] = (16, 32, 64, 128),
                 num_res_units: int = 1) -> None:
        super().__init__()
        if len(channels) < 2 or min(in_channels, out_channels, *channels) < 1:
            raise ValueError(f"need positive channels and at least two levels, got {tuple(channels)}")
        self._config = {"in_channels": int(in_channels), "out_channels": int(out_channels),
                        "channels": [int(c) for c in channels], "num_res_units": int(num_res_units)}
        self.net = UNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels, channels=tuple(channels),
                        strides=(2,) * (len(channels) - 1), num_res_units=num_res_units, norm="instance")

    def config(self) -> dict[str, Any]:
        """Constructor arguments: ``UNet2D(**model.config())`` rebuilds the network."""
        return dict(self._config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(x))
