"""ResNet-block image-to-image generator (Johnson et al. 2016), the generator of CycleGAN and LoHiResGAN.

Layout: a 7x7 stem, two stride-2 downsamplings, ``n_blocks`` residual blocks
at a quarter of the resolution, two transposed-convolution upsamplings and a
7x7 head with tanh (images in [-1, 1]). Reflection padding and instance norm
as in the CycleGAN reference; sizes must be multiples of 4.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["ResnetGenerator"]


class _ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """2D ResNet generator: (N, in_channels, H, W) -> (N, out_channels, H, W) in [-1, 1].

    Parameters
    ----------
    in_channels, out_channels : int
        ``in_channels`` > 1 carries neighbouring slices (2.5D).
    features : int
        Feature maps of the stem (x2, x4 after each downsampling).
    n_blocks : int
        Residual blocks at the coarsest level.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 1, features: int = 16, n_blocks: int = 6) -> None:
        super().__init__()
        if min(in_channels, out_channels, features, n_blocks) < 1:
            raise ValueError("in_channels, out_channels, features and n_blocks must be positive")
        self._config = {"in_channels": int(in_channels), "out_channels": int(out_channels),
                        "features": int(features), "n_blocks": int(n_blocks)}
        f = features
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, f, 7), nn.InstanceNorm2d(f),
                                   nn.ReLU(True)]
        for mult in (1, 2):
            layers += [nn.Conv2d(f * mult, f * mult * 2, 3, stride=2, padding=1), nn.InstanceNorm2d(f * mult * 2),
                       nn.ReLU(True)]
        layers += [_ResBlock(f * 4) for _ in range(n_blocks)]
        for mult in (4, 2):
            layers += [nn.ConvTranspose2d(f * mult, f * mult // 2, 3, stride=2, padding=1, output_padding=1),
                       nn.InstanceNorm2d(f * mult // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(f, out_channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def config(self) -> dict[str, Any]:
        """Constructor arguments: ``ResnetGenerator(**model.config())`` rebuilds the network."""
        return dict(self._config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"height and width must be multiples of 4, got {tuple(x.shape[-2:])}")
        return self.net(x)
