"""TKD and TV dipole inversion on a small phantom of spheres and ellipsoids."""

from __future__ import annotations

import numpy as np
import pytest

from mrinets.physics.dipole import forward_field
from mrinets.physics.inversion import (
    QsmReconstructor,
    gradient_weights,
    tkd,
    tkd_correction_factor,
    tv_inversion,
)

B0_OBLIQUE = (0.2, -0.15, 0.97)


def _phantom(b0_dir=(0.0, 0.0, 1.0), n=64):
    """chi (ppm) of four inclusions in an ellipsoidal brain, its mask, field and magnitude."""
    x, y, z = np.meshgrid(*[np.arange(n) - (n - 1) / 2] * 3, indexing="ij")
    mask = (x / 26) ** 2 + (y / 24) ** 2 + (z / 22) ** 2 <= 1
    chi = np.zeros((n, n, n), np.float32)
    chi[((x - 6) ** 2 + (y - 3) ** 2 + z**2) < 6**2] = 0.15
    chi[((x + 9) / 7) ** 2 + ((y + 6) / 4) ** 2 + ((z - 4) / 5) ** 2 < 1] = -0.08
    chi[(x**2 + (y + 12) ** 2 + (z + 8) ** 2) < 4**2] = 0.25
    chi[((x - 10) / 3) ** 2 + ((y - 12) / 6) ** 2 + ((z - 6) / 3) ** 2 < 1] = 0.1
    chi *= mask
    magnitude = np.where(mask, np.where(chi != 0, 0.7, 1.0), 0.0).astype(np.float32)
    return chi, mask, forward_field(chi, b0_dir=b0_dir), magnitude


def _nrmse(estimate, truth, mask):
    return float(np.linalg.norm((estimate - truth)[mask]) / np.linalg.norm(truth[mask]))


@pytest.fixture(scope="module")
def phantom():
    return _phantom()


def test_tkd_recovers_phantom(phantom):
    chi, mask, field, _ = phantom
    estimate = tkd(field, mask)
    assert estimate.dtype == np.float32 and np.all(estimate[~mask] == 0)
    assert _nrmse(estimate, chi, mask) < 0.45  # measured 0.35


def test_tkd_with_oblique_b0():
    chi, mask, field, _ = _phantom(B0_OBLIQUE)
    assert _nrmse(tkd(field, mask, b0_dir=B0_OBLIQUE), chi, mask) < 0.45
    # assuming the wrong direction is clearly worse
    assert _nrmse(tkd(field, mask), chi, mask) > _nrmse(tkd(field, mask, b0_dir=B0_OBLIQUE), chi, mask) + 0.05


def test_tkd_correction_undoes_underestimation():
    c = tkd_correction_factor((64, 64, 64), threshold=0.19)
    assert 0.7 < c < 0.9
    assert tkd_correction_factor((64, 64, 64), threshold=0.1) > c  # smaller threshold, less loss
    # a large uniform sphere: the corrected core value is close to the truth, the raw one low by ~c
    x, y, z = np.meshgrid(*[np.arange(64) - 31.5] * 3, indexing="ij")
    r = np.sqrt(x**2 + y**2 + z**2)
    chi = (r < 14).astype(np.float32) * 0.1
    mask = r < 28
    field = forward_field(chi)
    core = r < 7
    corrected = tkd(field, mask)[core].mean() - tkd(field, mask)[(r > 20) & mask].mean()
    raw = tkd(field, mask, correct=False)[core].mean() - tkd(field, mask, correct=False)[(r > 20) & mask].mean()
    assert corrected == pytest.approx(0.1, rel=0.1)
    assert raw == pytest.approx(0.1 * c, rel=0.1)


def test_tv_recovers_phantom(phantom):
    chi, mask, field, magnitude = phantom
    plain = tv_inversion(field, mask)
    weighted = tv_inversion(field, mask, magnitude=magnitude)
    assert plain.dtype == np.float32 and np.all(plain[~mask] == 0)
    assert _nrmse(plain, chi, mask) < 0.15  # measured 0.09
    assert _nrmse(weighted, chi, mask) < 0.15  # measured 0.06


def test_tv_beats_tkd_with_noise(phantom):
    chi, mask, field, magnitude = phantom
    rng = np.random.default_rng(7)
    noisy = field + rng.normal(0.0, 0.003, field.shape).astype(np.float32)  # 3 ppb, SNR ~ 35 on the peak field
    error_tkd = _nrmse(tkd(noisy, mask), chi, mask)
    error_tv = _nrmse(tv_inversion(noisy, mask, magnitude=magnitude), chi, mask)
    assert error_tv < 0.2  # measured ~0.06
    assert error_tv < 0.5 * error_tkd  # TKD measured ~0.7


def test_gradient_weights_mark_edges(phantom):
    chi, mask, _, magnitude = phantom
    weights = gradient_weights(magnitude, mask, edge_fraction=0.3)
    assert weights.shape == (3, *mask.shape) and weights.dtype == np.float32
    assert set(np.unique(weights)) <= {0.0, 1.0}
    edges = weights[:, mask] == 0
    assert 0.0 < edges.mean() <= 0.3
    # the magnitude edges are the inclusion borders and the mask border
    inclusion_border = np.abs(np.diff(chi, axis=0, append=0)) > 0
    assert np.all(weights[0][inclusion_border & mask] == 0)


def test_reconstructor_builds_once_and_matches_functions(phantom):
    chi, mask, field, magnitude = phantom
    model = QsmReconstructor("tkd", threshold=0.19)
    first = model.run(field, mask, voxel_size=(1, 1, 1), b0_dir=(0, 0, 1))
    kernel = model._grid
    second = model.run(field * 2, mask, voxel_size=(1, 1, 1), b0_dir=(0, 0, 1))
    assert model._grid is kernel  # the dipole kernel was reused
    np.testing.assert_array_equal(first, tkd(field, mask))
    np.testing.assert_allclose(second, 2 * first, rtol=1e-5, atol=1e-7)
    model.run(field, mask, voxel_size=(1, 1, 1.1), b0_dir=(0, 0, 1))
    assert model._grid is not kernel  # a new geometry gets its own kernel
    tv = QsmReconstructor("tv", max_iter=20)
    np.testing.assert_array_equal(
        tv.run(field, mask, voxel_size=(1, 1, 1), b0_dir=(0, 0, 1), magnitude=magnitude),
        tv_inversion(field, mask, magnitude=magnitude, max_iter=20),
    )


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda f, m: tkd(f, m, threshold=0.8), "threshold"),
        (lambda f, m: tkd(f, m[:-1]), "mask"),
        (lambda f, m: tkd(f, m, b0_dir=(0, 0, 0)), "b0_dir"),
        (lambda f, m: tv_inversion(f, m, lam=0), "lam"),
        (lambda f, m: tv_inversion(f, m, max_iter=0), "max_iter"),
        (lambda f, m: tv_inversion(f, m, magnitude=np.ones((4, 4, 4))), "magnitude"),
        (lambda f, m: QsmReconstructor("medi"), "method"),
        (lambda f, m: QsmReconstructor("tkd", lam=1.0), "lam"),
        (lambda f, m: QsmReconstructor("tv", lam=-1.0), "lam"),
    ],
)
def test_bad_arguments(call, match):
    field = np.zeros((16, 16, 16), np.float32)
    with pytest.raises(ValueError, match=match):
        call(field, np.ones((16, 16, 16), bool))
