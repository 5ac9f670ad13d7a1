"""Slice profiles, thick-slice acquisition and resampling."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mrinets.physics.sampling import (
    affine_resample,
    resample_to_voxel_size,
    slice_profile,
    thick_slices,
)


@pytest.mark.parametrize("profile", ["gaussian", "rect"])
def test_profiles_are_normalised_and_symmetric(profile):
    w = slice_profile(5.0, 1.0, profile=profile)
    assert w.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(w, w[::-1])


def test_gaussian_profile_fwhm():
    w = slice_profile(5.0, 0.1, profile="gaussian")
    z = (np.arange(w.size) - w.size // 2) * 0.1
    above = z[w >= w.max() / 2]
    assert above.max() - above.min() == pytest.approx(5.0, abs=0.2)


def test_rect_thick_slices_are_block_averages():
    rng = np.random.default_rng(0)
    vol = rng.random((4, 4, 40)).astype(np.float32)
    affine = np.eye(4)
    low, low_affine = thick_slices(vol, affine, slice_thickness=5.0, profile="rect")
    assert low.shape == (4, 4, 8)
    np.testing.assert_allclose(low_affine[2, 2], 5.0)
    # slice k is centred on voxel 5k and averages voxels 5k-2 .. 5k+2
    np.testing.assert_allclose(low[..., 2], vol[..., 8:13].mean(-1), rtol=1e-5)
    assert low.mean() == pytest.approx(vol[..., 2:-2].mean(), rel=0.05)


def test_resample_onto_own_grid_is_identity():
    rng = np.random.default_rng(1)
    vol = rng.random((10, 12, 8)).astype(np.float32)
    affine = np.diag([1.5, 1.0, 2.0, 1.0])
    affine[:3, 3] = [3, -4, 5]
    np.testing.assert_allclose(affine_resample(vol, affine, affine, vol.shape, order=1), vol, atol=1e-6)
    four = np.stack([vol, 2 * vol], -1)
    np.testing.assert_allclose(affine_resample(four, affine, affine, vol.shape)[..., 1], 2 * vol, atol=1e-5)


@pytest.mark.parametrize("order", [0, 1, 3])
def test_resample_onto_a_larger_oblique_grid_is_scipys(order):
    """Interpolating only the block that reaches the source changes no voxel, the cval fill included."""
    rng = np.random.default_rng(2)
    vol = rng.random((14, 16, 12)).astype(np.float32)
    angle = np.deg2rad(25.0)
    src = np.eye(4)
    src[:3, :3] = np.diag([1.3, 0.9, 1.6]) @ np.array(
        [[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    src[:3, 3] = [5.0, -3.0, 8.0]
    dst = np.diag([0.8, 0.8, 0.8, 1.0])
    dst[:3, 3] = [-10.0, -12.0, -6.0]
    mapping = np.linalg.solve(src, dst)
    expected = ndimage.affine_transform(vol, mapping[:3, :3], mapping[:3, 3], output_shape=(50, 56, 44), order=order,
                                        cval=-2.0)
    out = affine_resample(vol, src, dst, (50, 56, 44), order=order, cval=-2.0)
    assert (out == -2.0).mean() > 0.5 and (out != -2.0).any()
    np.testing.assert_array_equal(out, expected)


def test_resample_to_voxel_size_keeps_linear_ramps():
    x = np.arange(20, dtype=np.float32)
    vol = np.broadcast_to(x[:, None, None], (20, 6, 6)).copy()
    out, aff = resample_to_voxel_size(vol, np.eye(4), (2.0, 1.0, 1.0))
    assert out.shape == (10, 6, 6)
    np.testing.assert_allclose(out[:, 2, 2], np.arange(10) * 2.0, atol=1e-5)
    np.testing.assert_allclose(aff[0, 0], 2.0)
    with pytest.raises(ValueError, match="voxel_size"):
        resample_to_voxel_size(vol, np.eye(4), (0, 1, 1))
