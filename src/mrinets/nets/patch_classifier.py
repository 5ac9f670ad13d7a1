"""Candidate patch networks of the CMB pipeline's second step: a multi-task teacher and a small student.

Both start with a feature extractor (two 3D convolution blocks, each halving
the grid); the teacher adds a voxel-wise segmentor (a decoder back to the patch
grid) beside its patch classifier, the student has the classifier alone and
learns from the teacher's softened answers (Sundaresan et al. 2023).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["FeatureExtractor", "CandidateTeacher", "CandidateStudent"]


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, padding=1), nn.InstanceNorm3d(cout, affine=True), nn.LeakyReLU(0.1, inplace=True),
        nn.Conv3d(cout, cout, 3, padding=1), nn.InstanceNorm3d(cout, affine=True), nn.LeakyReLU(0.1, inplace=True),
    )


def _check(in_channels: int, width: int, dropout: float) -> None:
    if in_channels < 1 or width < 1:
        raise ValueError(f"in_channels and width must be positive, got {in_channels}, {width}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


class FeatureExtractor(nn.Module):
    """Three convolution blocks (``width``, ``2 width``, ``4 width`` maps), pooling by 2 between them."""

    def __init__(self, in_channels: int = 2, width: int = 8) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([_block(in_channels, width), _block(width, 2 * width),
                                     _block(2 * width, 4 * width)])
        self.pool = nn.MaxPool3d(2)
        self.out_channels = 4 * width

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps at full, half and quarter resolution."""
        feats = [self.blocks[0](x)]
        feats.append(self.blocks[1](self.pool(feats[-1])))
        feats.append(self.blocks[2](self.pool(feats[-1])))
        return feats


class _Classifier(nn.Module):
    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(channels, channels), nn.LeakyReLU(0.1, inplace=True),
                                  nn.Linear(channels, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


class CandidateTeacher(nn.Module):
    """Feature extractor + voxel-wise segmentor + patch classifier (multi-task).

    Parameters
    ----------
    in_channels : int
    width : int
        Maps of the first block (then 2x and 4x).
    dropout : float
        Before the classifier's layers.

    ``forward`` returns ``(class_logits (N, 2), seg_logits (N, 1, *patch))``;
    patch sides must be multiples of 4.
    """

    def __init__(self, in_channels: int = 2, width: int = 16, dropout: float = 0.2) -> None:
        super().__init__()
        _check(in_channels, width, dropout)
        self._config = {"in_channels": int(in_channels), "width": int(width), "dropout": float(dropout)}
        self.features = FeatureExtractor(in_channels, width)
        self.up2 = nn.ConvTranspose3d(4 * width, 2 * width, 2, stride=2)
        self.dec2 = _block(4 * width, 2 * width)
        self.up1 = nn.ConvTranspose3d(2 * width, width, 2, stride=2)
        self.dec1 = _block(2 * width, width)
        self.seg = nn.Conv3d(width, 1, 1)
        self.classifier = _Classifier(4 * width, dropout)

    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f1, f2, f3 = self.features(x)
        d2 = self.dec2(torch.cat([self.up2(f3), f2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), f1], dim=1))
        return self.classifier(f3), self.seg(d1)


class CandidateStudent(nn.Module):
    """Feature extractor + patch classifier; ``forward`` returns class logits (N, 2)."""

    def __init__(self, in_channels: int = 2, width: int = 8, dropout: float = 0.2) -> None:
        super().__init__()
        _check(in_channels, width, dropout)
        self._config = {"in_channels": int(in_channels), "width": int(width), "dropout": float(dropout)}
        self.features = FeatureExtractor(in_channels, width)
        self.classifier = _Classifier(4 * width, dropout)

    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x)[-1])
