"""PatchGAN discriminator (Isola et al. 2017): a score per overlapping image patch, not one per image.

With ``n_layers=3`` each output sees a 70 x 70 input patch; fewer layers see
less (2: 34 x 34), which suits images of 96-128 pixels.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["PatchDiscriminator"]


class PatchDiscriminator(nn.Module):
    """(N, in_channels, H, W) -> (N, 1, H', W') real/fake logits per patch.

    Parameters
    ----------
    in_channels : int
        Channels of what is judged: the image alone (GAN, CycleGAN) or the
        condition and the image stacked (pix2pix, LoHiResGAN).
    features : int
        Feature maps of the first layer (doubling per layer up to 8x).
    n_layers : int
        Stride-2 layers.
    """

    def __init__(self, in_channels: int = 2, features: int = 16, n_layers: int = 3) -> None:
        super().__init__()
        if min(in_channels, features, n_layers) < 1:
            raise ValueError("in_channels, features and n_layers must be positive")
        self._config = {"in_channels": int(in_channels), "features": int(features), "n_layers": int(n_layers)}
        layers: list[nn.Module] = [nn.Conv2d(in_channels, features, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(features * prev, features * mult, 4, stride=stride, padding=1),
                       nn.InstanceNorm2d(features * mult), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(features * mult, 1, 4, stride=1, padding=1)]
        self.net = nn.Sequential(*layers)

    def config(self) -> dict[str, Any]:
        """Constructor arguments: ``PatchDiscriminator(**model.config())`` rebuilds the network."""
        return dict(self._config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
