"""PedQ-NET networks: a small nnU-Net-style 3D U-Net (field -> chi) and a small UNETR (chi -> nuclei).

Both come from MONAI (``DynUNet``, the nnU-Net architecture, and ``UNETR``)
and are rebuilt from a plain config dict stored beside the weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.nets import UNETR, DynUNet
from torch import nn

__all__ = ["FieldToChiNet", "NucleiNet", "N_GEOMETRY_CHANNELS"]

# Input channels: field, its TKD inversion, then geometry. The field carries no sign of which way B0 points in the voxel grid, so the
# network is told: the six distinct entries of b b^T (sign-free), one channel each.
N_GEOMETRY_CHANNELS = 6


class FieldToChiNet(nn.Module):
    """Local field (+ its TKD inversion and B0 geometry channels) -> susceptibility, a MONAI DynUNet.

    The network predicts a correction to the TKD estimate that it is given
    (its output layer starts at zero, so an untrained network returns TKD):
    TKD is a fixed linear map of the field that a U-Net would otherwise have
    to learn from scratch, which a CPU training budget cannot afford; what is
    left to learn is what TKD gets wrong (streaks along the magic-angle cone,
    underestimation, noise).

    Parameters
    ----------
    filters : sequence of int
        Feature maps per level (len(filters) - 1 stride-2 downsamplings).
    field_scale, chi_scale : float
        The input field (ppm) is multiplied by ``field_scale`` and the output
        by ``chi_scale`` (ppm), so that the network works on values near 1.
    """

    def __init__(self, filters: Sequence[int] = (16, 32, 64, 128), field_scale: float = 20.0,
                 chi_scale: float = 0.1) -> None:
        super().__init__()
        filters = [int(f) for f in filters]
        if len(filters) < 2 or min(filters) < 1:
            raise ValueError(f"filters must hold at least two positive ints, got {filters}")
        self._config = {"filters": filters, "field_scale": float(field_scale), "chi_scale": float(chi_scale)}
        n = len(filters)
        self.net = DynUNet(spatial_dims=3, in_channels=2 + N_GEOMETRY_CHANNELS, out_channels=1,
                           kernel_size=[3] * n, strides=[1] + [2] * (n - 1), upsample_kernel_size=[2] * (n - 1),
                           filters=filters, norm_name="instance", res_block=True)
        nn.init.zeros_(self.net.output_block.conv.conv.weight)
        nn.init.zeros_(self.net.output_block.conv.conv.bias)
        self.field_scale = float(field_scale)
        self.chi_scale = float(chi_scale)

    @property
    def divisor(self) -> int:
        """Input sizes must be multiples of this."""
        return 2 ** (len(self._config["filters"]) - 1)

    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (N, 8, X, Y, Z): field (ppm), TKD chi (ppm), geometry channels; returns chi (N, 1, X, Y, Z) in ppm."""
        tkd = x[:, 1:2]
        x = torch.cat([x[:, :1] * self.field_scale, tkd / self.chi_scale, x[:, 2:]], dim=1)
        return tkd + self.net(x) * self.chi_scale


class NucleiNet(nn.Module):
    """Susceptibility -> deep grey nuclei logits (background + left/right nuclei), a small MONAI UNETR."""

    def __init__(self, n_classes: int = 9, img_size: int = 48, feature_size: int = 8, hidden_size: int = 96,
                 mlp_dim: int = 192, num_heads: int = 4, chi_scale: float = 0.1) -> None:
        super().__init__()
        self._config = {"n_classes": int(n_classes), "img_size": int(img_size), "feature_size": int(feature_size),
                        "hidden_size": int(hidden_size), "mlp_dim": int(mlp_dim), "num_heads": int(num_heads),
                        "chi_scale": float(chi_scale)}
        self.net = UNETR(in_channels=1, out_channels=n_classes, img_size=(img_size,) * 3, feature_size=feature_size,
                         hidden_size=hidden_size, mlp_dim=mlp_dim, num_heads=num_heads, norm_name="instance",
                         res_block=True, dropout_rate=0.0)
        self.chi_scale = float(chi_scale)

    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def forward(self, chi: torch.Tensor) -> torch.Tensor:
        return self.net(chi / self.chi_scale)
