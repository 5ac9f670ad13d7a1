"""The torch dipole kernel and PedQ-NET's model-based loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from mrinets.physics.dipole import dipole_kernel, forward_field
from mrinets.training.losses import dipole_convolve, dipole_kernel_torch, model_based_qsm_loss

OBLIQUE = np.array([0.35, -0.4, 0.85]) / np.linalg.norm([0.35, -0.4, 0.85])


@pytest.mark.parametrize("shape, voxel", [((16, 15, 12), (0.9, 1.1, 1.6)), ((20, 22, 9), (1.0, 1.0, 2.0))])
def test_torch_kernel_equals_numpy_kernel_for_oblique_b0(shape, voxel):
    expected = dipole_kernel(shape, voxel_size=voxel, b0_dir=OBLIQUE)
    got = dipole_kernel_torch(shape, voxel, OBLIQUE).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert got[0, 0, 0] == 0 and got.min() < -0.6


def _blob_chi(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    chi = ndimage.gaussian_filter(rng.standard_normal((16, 16, 16)), 2.0) * 0.5
    ball = (np.indices(chi.shape) - 7.5) ** 2
    return np.where(ball.sum(0) < 49, chi, 0).astype(np.float32)


def test_convolution_matches_numpy_forward_field():
    chi = _blob_chi()
    voxel = (1.0, 1.2, 1.5)
    expected = forward_field(chi, voxel_size=voxel, b0_dir=OBLIQUE, pad=8)
    kernel = dipole_kernel_torch((32, 32, 32), voxel, OBLIQUE)[None, None]
    got = dipole_convolve(torch.from_numpy(chi)[None, None], kernel, (8, 8, 8))[0, 0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6 * np.abs(expected).max() + 1e-7)


def test_model_loss_is_zero_for_true_chi_and_positive_otherwise():
    chi = _blob_chi(1)
    voxel = (1.0, 1.0, 1.0)
    field = forward_field(chi, voxel_size=voxel, b0_dir=OBLIQUE, pad=8)
    kernel = dipole_kernel_torch((32, 32, 32), voxel, OBLIQUE)[None, None]
    mask = torch.from_numpy((chi != 0).astype(np.float32))[None, None]
    y = torch.from_numpy(field)[None, None] * mask
    weight = mask * torch.rand(mask.shape, generator=torch.Generator().manual_seed(0))

    def loss(c):
        return float(model_based_qsm_loss(torch.from_numpy(c)[None, None], y, kernel, weight, (8, 8, 8), 16.0))

    assert loss(chi) < 1e-5
    assert loss(0.8 * chi) > 100 * max(loss(chi), 1e-7)
    assert loss(np.zeros_like(chi)) > loss(0.8 * chi)
    # a wrong B0 direction is penalised too
    wrong = dipole_kernel_torch((32, 32, 32), voxel, (0.0, 0.0, 1.0))[None, None]
    assert float(model_based_qsm_loss(torch.from_numpy(chi)[None, None], y, wrong, weight, (8, 8, 8), 16.0)) > 0.01


def test_model_loss_ignores_phase_wraps():
    chi = _blob_chi(2)
    field = forward_field(chi, voxel_size=(1.0, 1.0, 1.0), b0_dir=OBLIQUE, pad=8)
    kernel = dipole_kernel_torch((32, 32, 32), (1.0, 1.0, 1.0), OBLIQUE)[None, None]
    scale = 16.0
    wrapped = field + 2 * np.pi / scale * (np.arange(16)[:, None, None] % 3)  # whole turns of phase
    weight = torch.ones(1, 1, 16, 16, 16)
    y = torch.from_numpy(wrapped.astype(np.float32))[None, None]
    got = float(model_based_qsm_loss(torch.from_numpy(chi)[None, None], y, kernel, weight, (8, 8, 8), scale))
    assert got < 1e-4
