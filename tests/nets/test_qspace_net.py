"""The microstructure estimator network: shapes, ranges, argument checks, learning a simple mapping."""

import pytest
import torch

from mrinets.nets.qspace import MescNet


def test_shapes_and_range():
    net = MescNet(30)
    out = net(torch.rand(5, 27, 30))
    assert out.shape == (5, 3)
    assert torch.all((out >= 0) & (out <= 1))
    assert sum(p.numel() for p in net.parameters()) < 200_000  # small enough to ship


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="code_size"):
        MescNet(30, code_size=0)
    with pytest.raises(ValueError, match=r"\(B, 27, 30\)"):
        MescNet(30)(torch.rand(5, 30))


def test_learns_a_signal_to_parameter_mapping():
    # Mono-exponential decays: the network must read the decay rate off the signals.
    torch.manual_seed(0)
    b = torch.linspace(0.2, 2.0, 12)
    rate = torch.rand(512, 1)
    signals = torch.exp(-b * (0.5 + rate))[:, None, :].expand(-1, 8, -1).contiguous()
    net = MescNet(12, n_voxels=8, n_outputs=1)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(200):
        opt.zero_grad()
        loss = torch.mean((net(signals) - rate) ** 2)
        loss.backward()
        opt.step()
    with torch.no_grad():
        err = float(torch.mean(torch.abs(net(signals) - rate)))
    assert err < 0.03, err
