"""Laplacian unwrapping: smooth phases with many wraps, masks, a sphere's field, a second unwrapper."""

from __future__ import annotations

import numpy as np
import pytest

from mrinets.physics.dipole import forward_field
from mrinets.physics.unwrap import unwrap_laplacian, wrap


def _grid(shape, voxel_size=(1.0, 1.0, 1.0)):
    axes = [(np.arange(n) - (n - 1) / 2) * h for n, h in zip(shape, voxel_size)]
    return np.meshgrid(*axes, indexing="ij")


def _smooth_phase(shape=(64, 64, 48), voxel_size=(1.0, 1.0, 1.0)):
    """About 10 wraps (a Gaussian bump plus tilts), under 3 rad between neighbours."""
    x, y, z = _grid(shape, voxel_size)
    phase = 60 * np.exp(-(x**2 + (y - 5) ** 2 + z**2) / (2 * 15**2)) + 0.4 * x + 0.2 * z
    mask = (x / 28) ** 2 + (y / 28) ** 2 + (z / 21) ** 2 <= 1
    return phase.astype(np.float32), mask


def _fraction_recovered(unwrapped, true, mask):
    """Share of mask voxels whose 2 pi offset to the truth is the most common one."""
    turns = np.rint((unwrapped - true) / (2 * np.pi))[mask]
    _, counts = np.unique(turns, return_counts=True)
    return counts.max() / mask.sum()


def test_wrap_range_and_congruence():
    values = np.array([-3 * np.pi, -np.pi, -1.0, 0.0, np.pi, 7.5, 100.0])
    wrapped = wrap(values)
    assert wrapped.dtype == np.float32
    assert np.all(wrapped > -np.pi) and np.all(wrapped <= np.float32(np.pi))
    np.testing.assert_allclose(np.cos(wrapped), np.cos(values), atol=1e-5)
    np.testing.assert_allclose(np.sin(wrapped), np.sin(values), atol=1e-5)


@pytest.mark.parametrize("voxel_size", [(1.0, 1.0, 1.0), (0.5, 0.5, 1.5)])
def test_smooth_phase_with_many_wraps(voxel_size):
    true, mask = _smooth_phase()
    assert np.ptp(true[mask]) > 8 * 2 * np.pi
    unwrapped = unwrap_laplacian(wrap(true), voxel_size=voxel_size, congruent=True)
    assert unwrapped.dtype == np.float32
    assert _fraction_recovered(unwrapped, true, mask) >= 0.99
    # the smooth (non-congruent) solution is the truth up to a constant
    raw = unwrap_laplacian(wrap(true), voxel_size=voxel_size)
    gap = (raw - true)[mask]
    assert np.abs(gap - gap.mean()).max() < 0.05


def test_masked_unwrapping_ignores_noise_outside():
    true, mask = _smooth_phase()
    noisy = wrap(true)
    rng = np.random.default_rng(1)
    noisy[~mask] = rng.uniform(-np.pi, np.pi, int((~mask).sum()))
    unwrapped = unwrap_laplacian(noisy, mask=mask, congruent=True)
    assert _fraction_recovered(unwrapped, true, mask) >= 0.99
    assert np.all(unwrapped[~mask] == 0)


def test_sphere_field_phase():
    """Phase of a sphere's dipole field (about 4 wraps), unwrapped around the sphere."""
    x, y, z = _grid((64, 64, 64))
    r = np.sqrt(x**2 + y**2 + z**2)
    field = forward_field((r <= 8).astype(np.float32) * 3.0)
    true = field * np.float32(20.0)  # ppm -> rad at e.g. 7 T and a short TE
    mask = (r > 10.5) & (r < 30)
    assert np.ptp(true[mask]) > 4 * 2 * np.pi
    unwrapped = unwrap_laplacian(wrap(true), mask=mask, congruent=True)
    assert _fraction_recovered(unwrapped, true, mask) >= 0.99


def test_agrees_with_path_following_unwrapper():
    """scikit-image's quality-guided unwrapper (Herraez et al.) gives the same phase up to 2 pi n."""
    from skimage.restoration import unwrap_phase

    true, mask = _smooth_phase((48, 48, 40))
    wrapped = wrap(true)
    ours = unwrap_laplacian(wrapped, congruent=True)
    theirs = unwrap_phase(wrapped.astype(np.float64))
    assert _fraction_recovered(ours, theirs, np.ones_like(mask)) >= 0.999


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"phase": np.zeros((8, 8))}, "phase"),
        ({"phase": np.zeros((8, 8, 8)), "mask": np.ones((8, 8, 7))}, "mask"),
        ({"phase": np.zeros((8, 8, 8)), "mask": np.zeros((8, 8, 8))}, "mask"),
        ({"phase": np.zeros((8, 8, 8)), "voxel_size": (1, 1)}, "voxel_size"),
        ({"phase": np.zeros((8, 8, 8)), "tol": 0}, "tol"),
    ],
)
def test_bad_arguments(kwargs, match):
    phase = kwargs.pop("phase")
    with pytest.raises(ValueError, match=match):
        unwrap_laplacian(phase, **kwargs)
