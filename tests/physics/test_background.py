"""SHARP and V-SHARP on fields from sources outside and inside a brain-like mask."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mrinets.physics.background import default_vsharp_radii, sharp, vsharp
from mrinets.physics.dipole import forward_field


@pytest.fixture(scope="module")
def head():
    """Ellipsoidal 'brain' mask, a background field from air/bone-like sources
    outside it, and a local field from three small sources inside (ppm)."""
    n = 64
    x, y, z = np.meshgrid(*[np.arange(n) - (n - 1) / 2] * 3, indexing="ij")
    mask = (x / 26) ** 2 + (y / 24) ** 2 + (z / 22) ** 2 <= 1
    outer = np.zeros((n, n, n), np.float32)
    outer[(x**2 + (y - 30) ** 2 + (z + 10) ** 2) < 8**2] = 9.0  # sinus air
    outer[((x + 28) ** 2 + (y + 5) ** 2 + (z - 20) ** 2) < 6**2] = -9.0
    outer[:, :, :4] = 2.0  # a slab below the head
    outer[mask] = 0.0
    inner = np.zeros((n, n, n), np.float32)
    inner[((x - 6) ** 2 + (y - 3) ** 2 + z**2) < 5**2] = 0.2
    inner[((x + 8) ** 2 + (y + 6) ** 2 + (z - 4) ** 2) < 4**2] = -0.1
    inner[(x**2 + (y + 10) ** 2 + (z + 8) ** 2) < 3**2] = 0.15
    return mask, forward_field(outer), forward_field(inner)


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [(vsharp, {}), (vsharp, {"radii": (6, 4, 2, 1)}), (sharp, {}), (sharp, {"radius": 4.0})],
)
def test_background_removed_local_kept(head, method, kwargs):
    mask, background, local = head
    removed, eroded = method(background, mask, **kwargs)
    assert removed.dtype == np.float32 and eroded.dtype == bool
    assert eroded.sum() > 0.3 * mask.sum() and not np.any(eroded & ~mask)
    assert np.all(removed[~eroded] == 0)
    # >= 95% of the background field energy inside the eroded mask is gone
    energy_left = np.sum(removed[eroded] ** 2) / np.sum(background[eroded] ** 2)
    assert energy_left <= 0.05
    # the local field of the inner sources survives
    result, _ = method(background + local, mask, **kwargs)
    assert np.corrcoef(result[eroded], local[eroded])[0, 1] > 0.9


def test_vsharp_keeps_more_of_the_mask_than_sharp(head):
    mask, background, _ = head
    _, eroded_v = vsharp(background, mask, radii=(8, 6, 4, 2, 1))
    _, eroded_s = sharp(background, mask, radius=8.0)
    assert eroded_s.sum() < eroded_v.sum()
    # the smallest sphere (1 mm: the voxel and its 6 neighbours) fits everywhere but the border
    assert np.array_equal(eroded_v, ndimage.binary_erosion(mask, ndimage.generate_binary_structure(3, 1)))


@pytest.mark.parametrize("voxel_size", [(1.0, 1.0, 1.0), (0.5, 0.5, 2.0)])
def test_eroded_mask_is_sphere_erosion(voxel_size):
    """The kept voxels are those whose whole sphere (in mm) lies in the mask (cf. scipy erosion)."""
    rng = np.random.default_rng(0)
    mask = ndimage.gaussian_filter(rng.normal(size=(40, 36, 30)), 4) > -0.02
    radius = 3.0
    reach = [int(radius // h) for h in voxel_size]
    offsets = np.meshgrid(*[np.arange(-r, r + 1) * h for r, h in zip(reach, voxel_size)], indexing="ij")
    ball = sum(o**2 for o in offsets) <= radius**2
    # voxels beyond the array count as outside the mask
    expected = ndimage.binary_erosion(mask, ball, border_value=0)
    _, eroded = sharp(rng.normal(size=mask.shape), mask, voxel_size=voxel_size, radius=radius)
    assert np.array_equal(eroded, expected)


def test_default_radii():
    assert default_vsharp_radii((1, 1, 1)) == tuple(float(r) for r in range(12, 0, -1))
    assert default_vsharp_radii((0.47, 0.47, 1.0))[-1] == pytest.approx(1.0)
    assert default_vsharp_radii((2, 2, 2)) == (12.0, 10.0, 8.0, 6.0, 4.0, 2.0)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda f, m: vsharp(f, m, radii=(4, 0.5)), "radii"),
        (lambda f, m: vsharp(f, m, radii=()), "radii"),
        (lambda f, m: sharp(f, m, threshold=1.5), "threshold"),
        (lambda f, m: sharp(f, m[:, :, :-1]), "mask"),
        (lambda f, m: sharp(f[..., 0], m), "field"),
        (lambda f, m: sharp(f, m, voxel_size=(1, 1, -1)), "voxel_size"),
    ],
)
def test_bad_arguments(call, match):
    field = np.zeros((16, 16, 16), np.float32)
    with pytest.raises(ValueError, match=match):
        call(field, np.ones((16, 16, 16), bool))


def test_restore_harmonic_loss_gives_back_local_field_not_background(head):
    """V-SHARP drops part of a brain-like local field; the dipole-consistent fixed point returns part of it.

    Brain-like: a smooth random texture (grey/white matter scale) everywhere in
    the mask plus the three compact sources. On compact sources alone, whose
    field V-SHARP already keeps, the step adds TKD's own errors instead
    (docs/qsm.md).
    """
    from mrinets.physics.background import restore_harmonic_loss

    mask, background, blobs = head
    rng = np.random.default_rng(0)
    texture = ndimage.gaussian_filter(rng.normal(size=mask.shape), 3).astype(np.float32)
    texture = np.where(mask, texture * np.float32(0.03 / texture[mask].std()), 0).astype(np.float32)
    local = blobs + forward_field(texture)
    radii = (6, 4, 2, 1)
    plain, eroded = vsharp(background + local, mask, radii=radii)
    restored = restore_harmonic_loss(background + local, mask, plain, eroded, voxel_size=(1, 1, 1),
                                     b0_dir=(0, 0, 1), radii=radii, iterations=3)
    assert restored.dtype == np.float32 and np.all(restored[~eroded] == 0)

    def error(estimate):
        diff = estimate[eroded] - local[eroded]
        diff -= diff.mean()
        return np.linalg.norm(diff) / np.linalg.norm(local[eroded] - local[eroded].mean())

    assert error(restored) < 0.8 * error(plain)
    # a background alone stays removed: nothing local to restore
    alone, _ = vsharp(background, mask, radii=radii)
    back = restore_harmonic_loss(background, mask, alone, eroded, voxel_size=(1, 1, 1), b0_dir=(0, 0, 1),
                                 radii=radii, iterations=3)
    assert np.sqrt(np.mean(back[eroded] ** 2)) < 0.05 * np.sqrt(np.mean(background[eroded] ** 2))
    with pytest.raises(ValueError, match="iterations"):
        restore_harmonic_loss(background, mask, alone, eroded, voxel_size=(1, 1, 1), b0_dir=(0, 0, 1), iterations=-1)
