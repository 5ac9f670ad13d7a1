"""A configurable 3D U-Net on MONAI's residual U-Net."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.nets import UNet
from torch import nn

__all__ = ["UNet3D"]


class UNet3D(nn.Module):
    """3D U-Net (MONAI ``UNet`` with residual units), rebuilt from :meth:`config`.

    Parameters
    ----------
    in_channels, out_channels : int
    channels : sequence of int
        Feature maps per level, coarsest last.
    strides : sequence of int
        Downsampling between levels; one fewer than ``channels``.
    num_res_units : int
    norm : str
        ``"instance"``, ``"batch"`` or ``"none"``.
    dropout : float
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: Sequence[int] = (8, 16, 32, 64),
        strides: Sequence[int] = (2, 2, 2),
        num_res_units: int = 1,
        norm: str = "instance",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be positive, got {in_channels}, {out_channels}")
        if len(channels) < 2 or any(int(c) < 1 for c in channels):
            raise ValueError(f"channels must hold at least two positive ints, got {tuple(channels)}")
        if len(strides) != len(channels) - 1 or any(int(s) < 1 for s in strides):
            raise ValueError(f"strides must hold len(channels) - 1 = {len(channels) - 1} positive ints, got {tuple(strides)}")
        if norm not in ("instance", "batch", "none"):
            raise ValueError(f"norm must be 'instance', 'batch' or 'none', got {norm!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self._config = {
            "in_channels": int(in_channels), "out_channels": int(out_channels),
            "channels": [int(c) for c in channels], "strides": [int(s) for s in strides],
            "num_res_units": int(num_res_units), "norm": norm, "dropout": float(dropout),
        }
        self.net = UNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, channels=tuple(channels),
                        strides=tuple(strides), num_res_units=num_res_units,
                        norm=None if norm == "none" else norm, dropout=dropout)

    def config(self) -> dict[str, Any]:
        """Constructor arguments: ``UNet3D(**model.config())`` rebuilds the network."""
        return dict(self._config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
