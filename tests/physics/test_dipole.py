"""Dipole kernel and forward field: analytic sphere, kernel properties, B0 through affines, qsm-forward."""

from __future__ import annotations

import numpy as np
import pytest

from mrinets.physics.dipole import (
    b0_direction_in_voxels,
    dipole_kernel,
    forward_field,
    point_dipole_field,
)


def _centred_positions(shape, voxel_size):
    """Voxel centre positions (mm) relative to the grid centre, shape (X, Y, Z, 3)."""
    axes = [(np.arange(n) - (n - 1) / 2) * h for n, h in zip(shape, voxel_size)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def _analytic(pos, b0_dir, chi0, radius):
    """Field (ppm) outside a uniform sphere: chi/3 (a/r)^3 (3 cos^2 theta - 1)."""
    b = np.asarray(b0_dir, float) / np.linalg.norm(b0_dir)
    r = np.maximum(np.linalg.norm(pos, axis=-1), 1e-9)
    cos = (pos @ b) / r
    return chi0 / 3 * (radius / r) ** 3 * (3 * cos**2 - 1)


def test_sharp_sphere_field_matches_closed_form():
    """Partial-volume sphere, B0 along z: outside to 2% of chi/3, zero inside (Lorentz corrected)."""
    chi0, radius, s = 0.5, 8.0, 4
    shape = (64, 64, 52)
    fine = [(np.arange(n * s) + 0.5) / s - 0.5 - (n - 1) / 2 for n in shape]
    x, y, z = np.meshgrid(*fine, indexing="ij", sparse=True)
    frac = (x * x + y * y + z * z <= radius**2).reshape(64, s, 64, s, 52, s).mean(axis=(1, 3, 5))
    field = forward_field(chi0 * frac)
    assert field.dtype == np.float32 and field.shape == shape
    pos = _centred_positions(shape, (1, 1, 1))
    r = np.linalg.norm(pos, axis=-1)
    outside = (r > 1.3 * radius) & (r < 2.5 * radius)
    assert np.abs(field - _analytic(pos, (0, 0, 1), chi0, radius))[outside].max() < 0.02 * chi0 / 3
    assert np.abs(field[r < 0.7 * radius]).max() < 0.02 * chi0 / 3


@pytest.mark.parametrize("voxel_size", [(1.0, 1.0, 1.0), (0.8, 0.8, 1.25)])
@pytest.mark.parametrize("b0_dir", [(0.0, 0.0, 1.0), (0.3, -0.2, 0.93), (0.0, 0.6, 0.8)])
def test_smooth_sphere_field_matches_closed_form(voxel_size, b0_dir):
    """Any B0 direction and voxel shape, on a sphere whose edge is smoothed over 1.5 mm.

    A radially symmetric chi has, outside its support, the field of a uniform
    sphere of the same total moment, and no field in its uniform core. The
    smooth edge keeps the object band-limited: a sharp voxelised sphere aliases
    beyond the cubic k-space grid, which with an oblique B0 puts up to ~5% of
    chi/3 into its interior (the same with qsm-forward's kernel).
    """
    from scipy.special import erfc

    chi0, radius, width = 0.5, 8.0, 1.5
    pos = _centred_positions((64, 64, 52), voxel_size)
    r = np.linalg.norm(pos, axis=-1)
    chi = (chi0 * 0.5 * erfc((r - radius) / width)).astype(np.float32)
    equivalent = (3 * chi.sum() / chi0 * np.prod(voxel_size) / (4 * np.pi)) ** (1 / 3)
    field = forward_field(chi, voxel_size=voxel_size, b0_dir=b0_dir)
    outside = (r > radius + 3 * width) & (r < 2.5 * radius)
    core = r < radius - 3 * width
    assert np.abs(field - _analytic(pos, b0_dir, chi0, equivalent))[outside].max() < 0.01 * chi0 / 3
    assert np.abs(field[core]).max() < 0.01 * chi0 / 3


def test_kernel_properties():
    kernel = dipole_kernel((24, 20, 16), voxel_size=(1.0, 1.2, 2.0), b0_dir=(0.2, 0.5, 1.0))
    assert kernel.dtype == np.float32
    assert kernel[0, 0, 0] == 0.0  # convention: D(0) = 0
    assert kernel.min() >= -2 / 3 - 1e-6 and kernel.max() <= 1 / 3 + 1e-6
    # even in k (real chi -> real field), also at the Nyquist planes
    mirrored = np.roll(np.flip(kernel), 1, axis=(0, 1, 2))
    np.testing.assert_array_equal(kernel, mirrored)
    half = dipole_kernel((24, 20, 16), voxel_size=(1.0, 1.2, 2.0), b0_dir=(0.2, 0.5, 1.0), real=True)
    np.testing.assert_array_equal(half, kernel[:, :, :9])


def test_kernel_rotates_with_b0():
    along_z = dipole_kernel((16, 16, 16), b0_dir=(0, 0, 1))
    along_x = dipole_kernel((16, 16, 16), b0_dir=(1, 0, 0))
    np.testing.assert_allclose(along_x, np.transpose(along_z, (2, 1, 0)), atol=1e-7)
    # the direction's sign and length do not matter
    np.testing.assert_allclose(dipole_kernel((16, 16, 16), b0_dir=(0, 0, -3)), along_z, atol=1e-7)
    # on the k_z axis D = 1/3 - 1 = -2/3, in the k_x-k_y plane D = 1/3
    assert along_z[0, 0, 3] == pytest.approx(-2 / 3) and along_z[3, 5, 0] == pytest.approx(1 / 3)


def _rotation(axis, degrees):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    a = np.radians(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


def test_b0_direction_through_oblique_flipped_affine():
    rotation = _rotation((1, 0.3, 0), 25)
    flip = np.diag([-1.0, 1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ flip @ np.diag([0.5, 0.5, 2.0])
    affine[:3, 3] = (-60, 20, 7)
    voxel = b0_direction_in_voxels((0, 0, 1), affine)
    assert np.linalg.norm(voxel) == pytest.approx(1.0)
    # the voxel axes (unit columns of the affine) combined with those weights point along world z
    np.testing.assert_allclose((rotation @ flip) @ voxel, (0, 0, 1), atol=1e-12)
    # a flip alone changes the sign of that component
    flipped = b0_direction_in_voxels((1, 0, 1), np.diag([-2.0, 1.0, 1.0, 1.0]))
    np.testing.assert_allclose(flipped, np.array([-1, 0, 1]) / np.sqrt(2))
    # an axial slab stored with world z along voxel axis 0
    swapped = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1.0]])
    np.testing.assert_allclose(b0_direction_in_voxels((0, 0, 1), swapped), (1, 0, 0), atol=1e-12)
    np.testing.assert_allclose(b0_direction_in_voxels(), (0, 0, 1))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: b0_direction_in_voxels((0, 0, 0), np.eye(4)), "b0_dir"),
        (lambda: b0_direction_in_voxels((0, 0, 1), np.zeros((4, 4))), "affine"),
        (lambda: dipole_kernel((8, 8, 8), b0_dir=(0, 0, 0)), "b0_dir"),
        (lambda: dipole_kernel((8, 8, 8), voxel_size=(1, 0, 1)), "voxel_size"),
        (lambda: forward_field(np.zeros((8, 8))), "chi"),
        (lambda: forward_field(np.zeros((8, 8, 8)), pad=-1), "pad"),
        (lambda: forward_field(np.full((8, 8, 8), np.nan)), "chi"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_forward_field_agrees_with_qsm_forward():
    qsm_forward = pytest.importorskip("qsm_forward")
    from scipy import ndimage

    rng = np.random.default_rng(3)
    chi = np.zeros((32, 40, 24), np.float32)
    chi[6:26, 8:30, 4:20] = rng.normal(0.0, 0.1, (20, 22, 16))
    chi = ndimage.gaussian_filter(chi, 1.0).astype(np.float32)
    # qsm-forward pairs voxel_size[0] with array axis 1 and [1] with axis 0,
    # so the two in-plane sizes are kept equal; it pads by doubling the grid
    # (our default) and sets D(0) = 1/3, a constant we remove from both.
    voxel_size = (0.9, 0.9, 1.5)
    b0_dir = np.array([0.25, -0.3, 0.92])
    b0_dir /= np.linalg.norm(b0_dir)
    theirs = qsm_forward.generate_field(chi.astype(np.float64), voxel_size=list(voxel_size), B0_dir=b0_dir)
    ours = forward_field(chi, voxel_size=voxel_size, b0_dir=b0_dir)
    theirs = theirs - theirs.mean()
    ours = ours - ours.mean()
    # float32 FFTs against float64 ones: 1e-4 of the peak field
    assert np.abs(ours - theirs).max() < 1e-4 * np.abs(theirs).max()


def test_point_dipole_field_matches_sphere_outside():
    """Point dipoles of a voxelised sphere: the uniform sphere's field outside it, any B0 direction."""
    chi0, radius = 0.5, 6.0
    shape, voxel_size = (40, 40, 36), (1.0, 1.0, 1.25)
    pos = _centred_positions(shape, voxel_size)
    r = np.linalg.norm(pos, axis=-1)
    chi = np.where(r <= radius, chi0, 0.0).astype(np.float32)
    equivalent = (3 * chi.sum() / chi0 * np.prod(voxel_size) / (4 * np.pi)) ** (1 / 3)
    b0_dir = (0.3, -0.2, 0.93)
    field = point_dipole_field(chi, voxel_size=voxel_size, b0_dir=b0_dir)
    # from 1.8 radii out the voxelised sphere's staircase (higher multipoles) has decayed
    outside = (r > 1.8 * radius) & (r < 3 * radius)
    assert np.abs(field - _analytic(pos, b0_dir, chi0, equivalent))[outside].max() < 0.02 * chi0 / 3


def test_point_dipole_background_is_harmonic_under_oblique_b0():
    """Air around a source-free cavity: V-SHARP removes its point-dipole field, not the k-space model's.

    The regression behind issue 38's 286 % NRMSE: with an oblique B0 the
    k-space kernel's Nyquist discontinuity spreads a sharp 9.4 ppm air border's
    field as a 1/r checkerboard through the brain, which no background removal
    can take out; a real background field is harmonic there.
    """
    from mrinets.physics.background import vsharp

    voxel_size = (1.8, 1.8, 1.8)
    pos = _centred_positions((48, 48, 48), voxel_size)
    r = np.linalg.norm(pos, axis=-1)
    air = np.where(r > 30.0, 9.4, 0.0).astype(np.float32)
    cavity = r < 24.0
    b0_dir = (np.sin(np.deg2rad(20)), 0.0, np.cos(np.deg2rad(20)))
    residual = {}
    for name, model in (("point", point_dipole_field), ("kspace", forward_field)):
        background = model(air, voxel_size=voxel_size, b0_dir=b0_dir)
        left, kept = vsharp(background, cavity, voxel_size=voxel_size, radii=(9.0, 5.4, 1.8))
        residual[name] = np.sqrt((left[kept] ** 2).mean())
    assert residual["point"] < 1e-3  # ppm; the cavity's local fields are of order 1e-2
    assert residual["kspace"] > 10 * residual["point"]
