"""Generators and the PatchGAN: shapes, output range, rebuild from config."""

from __future__ import annotations

import pytest
import torch

from mrinets.nets.patch_discriminator import PatchDiscriminator
from mrinets.nets.resnet_generator import ResnetGenerator
from mrinets.nets.unet2d import UNet2D


@pytest.mark.parametrize("cls, kwargs", [(ResnetGenerator, {"features": 4, "n_blocks": 2}),
                                         (UNet2D, {"channels": (4, 8, 16, 32)})])
def test_generator_shape_range_and_rebuild(cls, kwargs):
    torch.manual_seed(0)
    net = cls(in_channels=3, out_channels=1, **kwargs)
    x = torch.randn(2, 3, 48, 32)
    y = net(x)
    assert y.shape == (2, 1, 48, 32)
    assert y.abs().max() <= 1.0
    clone = cls(**net.config())
    clone.load_state_dict(net.state_dict())
    assert torch.allclose(clone(x), y)


def test_resnet_generator_refuses_odd_sizes():
    with pytest.raises(ValueError, match="multiples of 4"):
        ResnetGenerator(1, 1, 4, 1)(torch.zeros(1, 1, 30, 32))


def test_patch_discriminator_scores_patches():
    d = PatchDiscriminator(in_channels=4, features=4, n_layers=3)
    out = d(torch.randn(2, 4, 96, 96))
    assert out.shape == (2, 1, 10, 10)  # 70 x 70 receptive field, one score per patch
    assert PatchDiscriminator(**d.config()).config() == d.config()
