"""Classic GRE brain mask on a synthetic head and on the real GRE crop."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mrinets.io import load
from mrinets.preprocess.mask import ball, dilate, erode, gre_brain_mask


def _head(shape=(48, 48, 40), voxel=(1.0, 1.0, 1.0)):
    """Brain ellipsoid inside a dark skull gap and a bright scalp ring, with noise."""
    g = np.stack(np.meshgrid(*[(np.arange(s) - s / 2) * v for s, v in zip(shape, voxel)], indexing="ij"))
    r = np.sqrt((g[0] / 16) ** 2 + (g[1] / 18) ** 2 + (g[2] / 14) ** 2)
    brain = r < 1.0
    mag = np.where(brain, 1.0, 0.0) + np.where((r > 1.2) & (r < 1.3), 0.8, 0.0)
    mag[(np.abs(g[0]) < 3) & (np.abs(g[1]) < 4) & (np.abs(g[2]) < 3)] = 0.1  # dark ventricle
    rng = np.random.default_rng(1)
    mag = np.abs(mag + rng.normal(0, 0.05, shape) + 1j * rng.normal(0, 0.05, shape))
    return mag.astype(np.float32), brain


def test_gre_mask_finds_brain_and_drops_scalp():
    mag, brain = _head()
    mask = gre_brain_mask(mag, voxel_size=(1, 1, 1))
    dice = 2 * (mask & brain).sum() / (mask.sum() + brain.sum())
    assert dice > 0.9
    assert not mask[brain == 0].any() or (mask & ~brain).sum() < 0.02 * brain.sum()
    assert mask[24, 24, 20]  # the dark ventricle is filled


def test_gre_mask_4d_and_anisotropic():
    mag, brain = _head(shape=(48, 48, 20), voxel=(1.0, 1.0, 2.0))
    four = np.stack([mag, 0.7 * mag, 0.5 * mag], axis=-1)
    mask = gre_brain_mask(four, voxel_size=(1, 1, 2))
    assert 2 * (mask & brain).sum() / (mask.sum() + brain.sum()) > 0.85


def test_ball_is_physical():
    b = ball(2.0, (1.0, 1.0, 2.0))
    assert b.shape == (5, 5, 3)
    assert b[2, 2, 1] and b[0, 2, 1] and b[2, 2, 0] and not b[0, 0, 0]


@pytest.mark.parametrize(("radius", "voxel"), [(8.0, (2.0, 2.0, 2.0)), (10.0, (2.0, 2.0, 2.0)), (3.0, (1.0, 1.5, 0.7))])
def test_erode_and_dilate_match_the_ball_morphology(radius, voxel):
    """The distance-transform forms give scipy's voxels, the array's edge included."""
    rng = np.random.default_rng(3)
    mask = ndimage.gaussian_filter(rng.random((40, 36, 30)), 4.0) > 0.5
    mask[0, :, :] = True  # a face on the edge: erosion must treat outside as background
    structure = ball(radius, voxel)
    assert erode(mask, radius, voxel).any() and not dilate(mask, radius, voxel).all()
    np.testing.assert_array_equal(erode(mask, radius, voxel), ndimage.binary_erosion(mask, structure))
    np.testing.assert_array_equal(dilate(mask, radius, voxel), ndimage.binary_dilation(mask, structure))
    assert not dilate(np.zeros((4, 4, 4), bool), radius, voxel).any()


def test_bad_arguments():
    with pytest.raises(ValueError, match="must be 3D or 4D"):
        gre_brain_mask(np.ones((4, 4)), voxel_size=(1, 1))
    with pytest.raises(ValueError, match="threshold_scale"):
        gre_brain_mask(np.ones((4, 4, 4)), voxel_size=(1, 1, 1), threshold_scale=0)


def test_real_gre_crop_has_no_background(real_gre):
    """The real crop lies inside the brain: every voxel is tissue."""
    mag = load(real_gre[0], ndim=4)
    assert gre_brain_mask(mag.data, voxel_size=mag.voxel_size).all()


def test_background_is_recognised_when_present():
    mag, brain = _head()
    mask = gre_brain_mask(mag, voxel_size=(1, 1, 1))
    assert mask.mean() < 0.5
