"""The 3D U-Net builds from its config and checks its arguments."""

from __future__ import annotations

import pytest
import torch

from mrinets.nets.unet3d import UNet3D


def test_forward_shape_and_rebuild():
    net = UNet3D(in_channels=2, out_channels=3, channels=(4, 8, 16), strides=(2, 2))
    x = torch.randn(1, 2, 16, 16, 16)
    assert net(x).shape == (1, 3, 16, 16, 16)
    again = UNet3D(**net.config())
    again.load_state_dict(net.state_dict())
    torch.testing.assert_close(again.eval()(x), net.eval()(x))
    n_params = sum(p.numel() for p in UNet3D().parameters())
    assert n_params * 4 < 5e6  # default weights stay a few MB at most


@pytest.mark.parametrize("kwargs, match", [
    ({"strides": (2, 2)}, "strides"),
    ({"channels": (8,)}, "channels"),
    ({"norm": "layer"}, "norm"),
    ({"dropout": 1.5}, "dropout"),
    ({"in_channels": 0}, "in_channels"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UNet3D(**kwargs)
