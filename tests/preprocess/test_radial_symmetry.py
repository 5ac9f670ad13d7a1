"""Radial symmetry transform: peaks at the centre of bright balls, weak along tubes, blind to dark balls."""

from __future__ import annotations

import numpy as np
import pytest

from mrinets.preprocess.radial_symmetry import radial_symmetry


def _grid(shape=(40, 40, 40)):
    return np.indices(shape).astype(float)


def _ball(centre, radius, shape=(40, 40, 40)):
    g = _grid(shape)
    return ((((g - np.reshape(centre, (3, 1, 1, 1))) ** 2).sum(0)) <= radius**2).astype(np.float32)


def test_peak_at_the_centre_of_a_ball_and_tube_is_weaker():
    tube = np.zeros((40, 40, 40), np.float32)
    g = _grid()
    tube[((g[0] - 28) ** 2 + (g[1] - 20) ** 2) <= 2.5**2] = 1.0
    image = _ball((12, 20, 20), 2.5) + tube + 0.02 * np.random.default_rng(0).standard_normal((40, 40, 40))
    s = radial_symmetry(image)
    assert np.unravel_index(s.argmax(), s.shape) == (12, 20, 20)
    assert s[12, 20, 20] > 2.5 * s[28, 20, 20]


def test_dark_ball_gives_no_central_peak():
    image = 1.0 - _ball((20, 20, 20), 3)
    s = radial_symmetry(image)
    assert s[20, 20, 20] < 0.1 * radial_symmetry(1.0 - image)[20, 20, 20]


def test_anisotropic_voxels_keep_the_peak():
    # A 3 mm ball on 1 x 1 x 2 mm voxels: 3 voxels in x and y, 1.5 in z.
    g = _grid((40, 40, 20))
    image = (((g[0] - 20) ** 2 + (g[1] - 20) ** 2 + (2 * (g[2] - 10)) ** 2) <= 9).astype(np.float32)
    s = radial_symmetry(image, voxel_size=(1, 1, 2))
    assert np.unravel_index(s.argmax(), s.shape) == (20, 20, 10)


def test_mask_zeroes_outside():
    image = _ball((20, 20, 20), 3)
    mask = np.zeros(image.shape, bool)
    mask[:, :, :20] = True
    s = radial_symmetry(image, mask=mask)
    assert np.all(s[:, :, 20:] == 0)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="image must be 3D"):
        radial_symmetry(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="radii_mm"):
        radial_symmetry(np.zeros((4, 4, 4)), radii_mm=(0,))
    with pytest.raises(ValueError, match="voxel_size"):
        radial_symmetry(np.zeros((4, 4, 4)), voxel_size=(1, 0, 1))
