"""Classic brain masks for images that have no mask yet.

Notes
-----
The GRE mask follows the recipe most QSM pipelines use before any network: a
smoothed root-sum-of-squares magnitude is thresholded (Otsu), bridges to the
scalp are cut by an opening, the largest connected component is kept, holes
(ventricles, dark iron-rich nuclei, veins) are filled, and the result is eroded
so that the unreliable phase at the brain edge stays out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from mrinets.errors import EmptyImageError, InputError
from mrinets.io.nifti import Image, check_same_grid

__all__ = ["ball", "erode", "dilate", "gre_brain_mask", "largest_component", "fill_holes", "user_brain_mask"]

# Otsu's darker class is background only if it is much darker than the brighter one:
# noise sits at signal / SNR, while tissue contrasts in GRE magnitude stay within a factor of 3.
BACKGROUND_RATIO = 0.3


def ball(radius_mm: float, voxel_size: Sequence[float]) -> np.ndarray:
    """Ellipsoidal structuring element of a physical radius on an anisotropic grid."""
    voxel_size = np.asarray(voxel_size, dtype=float)
    half = np.floor(radius_mm / voxel_size + 1e-6).astype(int)
    grids = np.meshgrid(*[np.arange(-h, h + 1) * v for h, v in zip(half, voxel_size)], indexing="ij")
    return sum(g**2 for g in grids) <= radius_mm**2 + 1e-6


def erode(mask: np.ndarray, radius_mm: float, voxel_size: Sequence[float]) -> np.ndarray:
    """``binary_erosion`` of ``mask`` by ``ball(radius_mm, voxel_size)``, outside the array counting as background.

    The same voxels through a distance transform, whose cost does not grow
    with the ball (several times faster from a radius of a few voxels on).
    """
    depth = ndimage.distance_transform_edt(np.pad(mask, 1), sampling=voxel_size)[(slice(1, -1),) * mask.ndim]
    return depth**2 > radius_mm**2 + 1e-6


def dilate(mask: np.ndarray, radius_mm: float, voxel_size: Sequence[float]) -> np.ndarray:
    """``binary_dilation`` of ``mask`` by ``ball(radius_mm, voxel_size)``, through a distance transform."""
    if not mask.any():
        return np.zeros(mask.shape, bool)
    return ndimage.distance_transform_edt(~mask, sampling=voxel_size) ** 2 <= radius_mm**2 + 1e-6


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 6-connected component of a binary mask."""
    labels, n = ndimage.label(mask)
    if n <= 1:
        return labels > 0
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed holes (ventricles, dark nuclei, veins) of a 3D mask.

    Background components that do not touch the volume's border are holes;
    labelling them is several times faster than ``binary_fill_holes``'s
    iterated dilation from the border.
    """
    labels, _ = ndimage.label(~mask)
    border = np.concatenate(
        [np.unique(np.take(labels, idx, axis=a)) for a in range(mask.ndim) for idx in (0, -1)]
    )
    outside = np.isin(labels, border[border > 0])
    return ~outside


def _block_mean(volume: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Mean over non-overlapping blocks (trailing voxels that do not fill a block are dropped)."""
    fx, fy, fz = (int(f) for f in factors)
    nx, ny, nz = (max(n // f, 1) * f for n, f in zip(volume.shape, (fx, fy, fz)))
    v = volume[:nx, :ny, :nz]
    return v.reshape(nx // fx, fx, ny // fy, fy, nz // fz, fz).mean(axis=(1, 3, 5))


def gre_brain_mask(
    magnitude: np.ndarray,
    *,
    voxel_size: Sequence[float],
    threshold_scale: float = 1.0,
    opening_mm: float = 2.0,
    erosion_mm: float = 1.0,
    smoothing_mm: float = 1.0,
    coarse_mm: float = 2.0,
) -> np.ndarray:
    """Brain mask from GRE magnitude (3D, or 4D with echoes on the last axis).

    Parameters
    ----------
    magnitude : ndarray
        Magnitude, 3D or 4D (echoes combined by root sum of squares).
    voxel_size : sequence of float
        Voxel size in mm, so that the morphology has physical size.
    threshold_scale : float
        Multiplies the Otsu threshold; below 1 keeps more tissue.
    opening_mm, erosion_mm : float
        Radius of the opening that cuts the brain from the scalp, and of the
        final erosion.
    smoothing_mm : float
        Gaussian smoothing (sigma) of the coarse grid before thresholding.
    coarse_mm : float
        Grid on which the shape is decided (see Notes).

    Returns
    -------
    ndarray of bool

    Notes
    -----
    When Otsu's two classes differ by less than ``1 / BACKGROUND_RATIO`` in mean
    intensity, both are tissue (a field of view inside the head) and the whole
    volume is returned. The shape decisions (threshold, opening, largest component, hole filling)
    are made on block means over about ``coarse_mm`` (which also average the
    noise, as a smoothing would); only the one-block band along the border is
    then decided voxel by voxel at full resolution. This costs a fraction of the
    same morphology on the full grid.
    """
    mag = np.asarray(magnitude, dtype=np.float32)
    if mag.ndim == 4:
        mag = np.sqrt((mag**2).sum(axis=-1))
    if mag.ndim != 3:
        raise ValueError(f"magnitude must be 3D or 4D, got shape {mag.shape}")
    if threshold_scale <= 0:
        raise ValueError(f"threshold_scale must be positive, got {threshold_scale}")
    voxel_size = np.asarray(voxel_size, dtype=float)
    # Small fields of view keep at least 32 blocks per axis, so the morphology stays meaningful.
    factors = np.floor(coarse_mm / voxel_size + 1e-6).astype(int)
    factors = np.maximum(np.minimum(factors, np.array(mag.shape) // 32), 1)
    low = _block_mean(mag, factors)
    if smoothing_mm > 0:
        low = ndimage.gaussian_filter(low, smoothing_mm / (voxel_size * factors), truncate=2.0)
    threshold = threshold_otsu(low)
    below, above = low[low <= threshold], low[low > threshold]
    if below.size and above.size and below.mean() > BACKGROUND_RATIO * above.mean():
        # Both classes are tissue (a crop inside the head): there is no background to remove.
        return np.ones(mag.shape, bool)
    threshold *= threshold_scale
    coarse = low > threshold
    if not coarse.any():
        return np.zeros(mag.shape, bool)
    if opening_mm > 0:
        coarse = ndimage.binary_opening(coarse, ball(opening_mm, voxel_size * factors))
    coarse = fill_holes(largest_component(coarse))
    band = ndimage.binary_dilation(coarse)
    core = ndimage.binary_erosion(coarse)
    # Full-resolution work is limited to the bounding box of the dilated coarse mask.
    lo = np.min(np.nonzero(band), axis=1)
    hi = np.max(np.nonzero(band), axis=1) + 1
    full_lo = lo * factors
    full_hi = np.where(hi == np.array(coarse.shape), np.array(mag.shape), hi * factors)
    box = tuple(slice(int(a), int(b)) for a, b in zip(full_lo, full_hi))
    index = np.ix_(*[np.minimum(np.arange(a, b) // f, c - 1) for a, b, f, c in
                     zip(full_lo, full_hi, factors, coarse.shape)])
    sub = core[index] | (band[index] & (mag[box] > threshold))
    if erosion_mm > 0:
        sub = ndimage.binary_erosion(sub, ball(erosion_mm, voxel_size))
    mask = np.zeros(mag.shape, bool)
    mask[box] = largest_component(sub)
    return mask


def user_brain_mask(mask: Image, like: Image) -> np.ndarray:
    """A user's own brain mask as booleans, checked: ``like``'s grid and affine, 0 and 1 only, not empty.

    A probability map or a label map given by mistake would otherwise be cut
    at some threshold without a word; the user's skull stripping is taken as
    it is or refused.
    """
    where = mask.path or "brain mask"
    check_same_grid(like, mask)
    data = np.asarray(mask.data)
    values = np.unique(data)
    if not np.isin(values, (0, 1)).all():
        odd = values[~np.isin(values, (0, 1))]
        raise InputError(where, f"brain mask is not binary: it holds {odd.size} value(s) other than 0 and 1 "
                                f"(e.g. {float(odd[0]):g}); give 1 inside the brain, 0 outside")
    inside = data == 1
    if not inside.any():
        raise EmptyImageError(where, "brain mask is empty (no voxel is 1)")
    return inside
