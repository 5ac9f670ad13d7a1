"""QSM challenge measures on known cases."""

from __future__ import annotations

import numpy as np
import pytest

from mrinets.metrics.qsm import hfen, nrmse, qsm_scores, roi_means, ssim


@pytest.fixture
def maps():
    rng = np.random.default_rng(0)
    x, y, z = np.mgrid[:24, :24, :24]
    truth = 0.1 * np.sin(x / 3.0) * np.cos(y / 4.0) + 0.05 * (z > 12)
    mask = (x - 12) ** 2 + (y - 12) ** 2 + (z - 12) ** 2 < 10**2
    noisy = truth + rng.normal(0, 0.01, truth.shape)
    return truth, noisy, mask


def test_perfect_prediction_scores(maps):
    truth, _, mask = maps
    assert nrmse(truth, truth, mask=mask) == 0.0
    assert hfen(truth, truth, mask=mask) == 0.0
    assert ssim(truth, truth, mask=mask) == pytest.approx(1.0)


def test_nrmse_matches_definition_and_ignores_offset(maps):
    truth, noisy, mask = maps
    t = truth[mask] - truth[mask].mean()
    p = noisy[mask] - noisy[mask].mean()
    expected = 100 * np.linalg.norm(p - t) / np.linalg.norm(t)
    assert nrmse(noisy, truth, mask=mask) == pytest.approx(expected, rel=1e-10)
    assert nrmse(noisy + 3.0, truth, mask=mask) == pytest.approx(expected, rel=1e-10)
    assert nrmse(noisy + 3.0, truth, mask=mask, demean=False) > 100


def test_scores_worsen_with_noise(maps):
    truth, noisy, mask = maps
    worse = truth + 3 * (noisy - truth)
    assert nrmse(worse, truth, mask=mask) > nrmse(noisy, truth, mask=mask)
    assert hfen(worse, truth, mask=mask) > hfen(noisy, truth, mask=mask)
    assert ssim(worse, truth, mask=mask) < ssim(noisy, truth, mask=mask) < 1


def test_roi_means_and_scores(maps):
    truth, noisy, mask = maps
    labels = np.zeros(truth.shape, int)
    labels[5:10, 5:10, 5:10] = 1
    labels[14:18, 14:18, 14:18] = 2
    means = roi_means(truth, labels, {1: "a", 2: "b"})
    assert means["a"] == pytest.approx(truth[5:10, 5:10, 5:10].mean())
    scores = qsm_scores(noisy, truth, mask=mask, labels=labels, names={1: "a", 2: "b"})
    assert set(scores["roi"]) == {"a", "b"}
    assert abs(scores["roi"]["a"]["error_ppm"]) < 0.01


def test_shape_errors():
    with pytest.raises(ValueError, match="does not match truth shape"):
        nrmse(np.zeros((3, 3, 3)), np.zeros((3, 3, 4)))
    with pytest.raises(ValueError, match="mask is empty"):
        nrmse(np.ones((3, 3, 3)), np.ones((3, 3, 3)), mask=np.zeros((3, 3, 3)))


def test_edge_sharpness_drops_when_nuclei_are_blurred():
    from scipy import ndimage

    from mrinets.metrics.qsm import edge_sharpness

    labels = np.zeros((32, 32, 32), np.uint8)
    labels[8:18, 8:18, 8:18] = 1
    labels[20:28, 18:28, 10:20] = 2
    chi = np.where(labels == 1, 0.15, np.where(labels == 2, 0.05, 0.0))
    sharp = edge_sharpness(chi, labels)
    assert edge_sharpness(ndimage.gaussian_filter(chi, 1.5), labels) < 0.9 * sharp
    assert edge_sharpness(3 * chi, labels) == pytest.approx(sharp)  # contrast-free
    assert np.isnan(edge_sharpness(chi, np.zeros_like(labels)))


def test_backward_kernel_recovers_the_oblique_b0_direction():
    from scipy import ndimage

    from mrinets.metrics.qsm import estimate_dipole_kernel
    from mrinets.physics.dipole import forward_field

    rng = np.random.default_rng(3)
    chi = ndimage.gaussian_filter(rng.standard_normal((32, 30, 24)), 1.5)
    b = np.array([0.3, 0.2, 0.9]) / np.linalg.norm([0.3, 0.2, 0.9])
    field = forward_field(chi, voxel_size=(1.0, 1.0, 1.5), b0_dir=b, pad=0)
    exact = estimate_dipole_kernel(field, chi, voxel_size=(1.0, 1.0, 1.5), b0_dir=b)
    assert exact["kernel_rel_error"] < 1e-3 and exact["b0_angle_error_deg"] < 0.1
    blurred = estimate_dipole_kernel(field, ndimage.gaussian_filter(chi, 1.0), voxel_size=(1.0, 1.0, 1.5), b0_dir=b)
    assert blurred["kernel_rel_error"] > 10 * exact["kernel_rel_error"]
