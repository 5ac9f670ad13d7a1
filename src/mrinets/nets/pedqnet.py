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

# The field carries no sign of which way B0 points in the voxel grid, so the
# network is told: the six distinct entries of b b^T (sign-free), one channel each.
N_GEOMETRY_CHANNELS = 6


class FieldToChiNet(nn.Module):
    """Local field (+ B0 geometry channels) -> susceptibility, a MONAI DynUNet.

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
        self.net = DynUNet(spatial_dims=3, in_channels=1 + N_GEOMETRY_CHANNELS, out_channels=1,
                           kernel_size=[3] * n, strides=[1] + [2] * (n - 1), upsample_kernel_size=[2] * (n - 1),
                           filters=filters, norm_name="instance", res_block=True)
        self.field_scale = float(field_scale)
        self.chi_scale = float(chi_scale)

    @property
    def divisor(self) -> int:
        """Input sizes must be multiples of this."""
        return 2 ** (len(self._config["filters"]) - 1)

    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (N, 7, X, Y, Z): field in ppm, then the geometry channels; returns chi (N, 1, X, Y, Z) in ppm."""
        x = torch.cat([x[:, :1] * self.field_scale, x[:, 1:]], dim=1)
        return self.net(x) * self.chi_scale


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
