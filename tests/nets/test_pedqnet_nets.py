"""PedQ-NET's networks: shapes, scaling and rebuilding from their configs."""

from __future__ import annotations

import pytest
import torch

from mrinets.nets.pedqnet import N_GEOMETRY_CHANNELS, FieldToChiNet, NucleiNet


def test_dynunet_forward_shapes_and_rebuild():
    net = FieldToChiNet(filters=(4, 8, 16)).eval()
    x = torch.randn(2, 2 + N_GEOMETRY_CHANNELS, 16, 24, 16)
    out = net(x)
    assert out.shape == (2, 1, 16, 24, 16)
    again = FieldToChiNet(**net.config()).eval()
    again.load_state_dict(net.state_dict())
    torch.testing.assert_close(again(x), out)
    assert net.divisor == 4


def test_untrained_network_returns_its_tkd_input_and_corrections_are_in_ppm_scale():
    net = FieldToChiNet(filters=(4, 8, 16), chi_scale=0.1).eval()
    x = torch.randn(1, 2 + N_GEOMETRY_CHANNELS, 8, 8, 8)
    torch.testing.assert_close(net(x), x[:, 1:2])
    torch.nn.init.constant_(net.net.output_block.conv.conv.bias, 1.0)
    big = FieldToChiNet(filters=(4, 8, 16), chi_scale=1.0).eval()
    big.load_state_dict(net.state_dict())
    torch.testing.assert_close(net(x) - x[:, 1:2], torch.full_like(net(x), 0.1))
    torch.testing.assert_close(big(x) - x[:, 1:2], torch.full_like(net(x), 1.0))


def test_unetr_segmenter_shapes():
    net = NucleiNet(n_classes=9, img_size=16, feature_size=4, hidden_size=32, mlp_dim=64, num_heads=2).eval()
    assert net(torch.randn(1, 1, 16, 16, 16)).shape == (1, 9, 16, 16, 16)


def test_bad_filters_are_refused():
    with pytest.raises(ValueError, match="filters"):
        FieldToChiNet(filters=(8,))
