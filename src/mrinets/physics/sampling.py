"""Image formation on a grid: slice profiles, thick-slice sampling, resampling.

Every phantom goes through these functions to become an acquisition at a given
resolution, and pipelines use :func:`affine_resample` to move images between
grids.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["slice_profile", "thick_slices", "affine_resample", "resample_to_voxel_size"]

PROFILES = ("gaussian", "rect")


def slice_profile(thickness_mm: float, step_mm: float, *, profile: str = "gaussian") -> np.ndarray:
    """Normalised slice sensitivity profile sampled every ``step_mm``.

    Parameters
    ----------
    thickness_mm : float
        Slice thickness: the FWHM of the Gaussian profile, or the width of the
        rectangular one.
    step_mm : float
        Spacing of the high-resolution grid the profile is applied on.
    profile : {"gaussian", "rect"}

    Returns
    -------
    ndarray
        Odd-length weights summing to 1.

    Notes
    -----
    Gaussian: :math:`w(z) \\propto \\exp(-z^2 / 2\\sigma^2)`, with
    :math:`\\sigma = \\mathrm{FWHM} / (2\\sqrt{2\\ln 2})`, truncated at 3 sigma.
    Rectangular: the fraction of each high-resolution voxel ``[z - h/2, z + h/2]``
    covered by ``[-T/2, T/2]``.
    """
    if thickness_mm <= 0 or step_mm <= 0:
        raise ValueError(f"thickness_mm and step_mm must be positive, got {thickness_mm}, {step_mm}")
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    if profile == "gaussian":
        sigma = thickness_mm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
        half = int(np.ceil(3.0 * sigma / step_mm))
        z = np.arange(-half, half + 1) * step_mm
        w = np.exp(-0.5 * (z / sigma) ** 2)
    else:
        half = int(np.ceil(thickness_mm / (2.0 * step_mm) + 0.5))
        z = np.arange(-half, half + 1) * step_mm
        lo = np.maximum(z - step_mm / 2, -thickness_mm / 2)
        hi = np.minimum(z + step_mm / 2, thickness_mm / 2)
        w = np.clip(hi - lo, 0, None)
    return (w / w.sum()).astype(np.float64)


def thick_slices(
    volume: np.ndarray,
    affine: np.ndarray,
    *,
    slice_thickness: float,
    slice_spacing: float | None = None,
    axis: int = 2,
    profile: str = "gaussian",
) -> tuple[np.ndarray, np.ndarray]:
    """Acquire thick slices along ``axis`` from a high-resolution volume.

    The volume is convolved along ``axis`` with the slice profile, then sampled
    every ``slice_spacing`` mm (default: the thickness, contiguous slices),
    with the first slice centred on the first voxel.

    Returns
    -------
    data : ndarray
        float32 low-resolution volume.
    affine : ndarray
        Its 4x4 affine (same origin, spacing scaled along ``axis``).
    """
    step = float(np.linalg.norm(affine[:3, axis]))
    spacing = slice_thickness if slice_spacing is None else slice_spacing
    if spacing < step - 1e-6:
        raise ValueError(f"slice_spacing {spacing} mm is finer than the grid's {step} mm")
    weights = slice_profile(slice_thickness, step, profile=profile)
    blurred = ndimage.convolve1d(np.asarray(volume, np.float32), weights.astype(np.float32), axis=axis, mode="nearest")
    ratio = spacing / step
    n = int(np.floor((volume.shape[axis] - 1) / ratio)) + 1
    positions = np.arange(n) * ratio
    lo = np.minimum(np.floor(positions).astype(int), volume.shape[axis] - 1)
    hi = np.minimum(lo + 1, volume.shape[axis] - 1)
    frac = (positions - lo).astype(np.float32)
    frac_shape = [1] * blurred.ndim
    frac_shape[axis] = n
    frac = frac.reshape(frac_shape)
    out = np.take(blurred, lo, axis=axis) * (1 - frac) + np.take(blurred, hi, axis=axis) * frac
    new_affine = np.array(affine, dtype=np.float64)
    new_affine[:3, axis] = affine[:3, axis] * ratio
    return out.astype(np.float32), new_affine


def affine_resample(
    data: np.ndarray,
    src_affine: np.ndarray,
    dst_affine: np.ndarray,
    dst_shape: Sequence[int],
    *,
    order: int = 1,
    cval: float = 0.0,
) -> np.ndarray:
    """Resample ``data`` (3D, or 4D with volumes last) onto another voxel grid.

    Each destination voxel ``j`` takes the value at source voxel
    ``inv(src_affine) @ dst_affine @ j`` (spline interpolation of ``order``).
    """
    mapping = np.linalg.solve(np.asarray(src_affine, float), np.asarray(dst_affine, float))
    matrix, offset = mapping[:3, :3], mapping[:3, 3]
    data = np.asarray(data, dtype=np.float32)
    shape = tuple(int(s) for s in dst_shape[:3])
    # Destination voxels that map outside the source take cval: only the block that reaches it is interpolated
    # (a head's grid around a brain-sized source: about half the work).
    reach = _reach(mapping, data.shape[:3], shape)
    start = np.array([r.start for r in reach])
    volumes = [data] if data.ndim == 3 else [data[..., i] for i in range(data.shape[-1])]
    out = np.full(shape + data.shape[3:], cval, dtype=np.float32)
    if all(r.stop > r.start for r in reach):
        for i, volume in enumerate(volumes):
            block = ndimage.affine_transform(volume, matrix, offset + matrix @ start,
                                             output_shape=tuple(r.stop - r.start for r in reach), order=order,
                                             cval=cval)
            out[reach + (i,) * (data.ndim - 3)] = block
    return out


def _reach(mapping: np.ndarray, src_shape: Sequence[int], dst_shape: Sequence[int],
           margin: float = 2.0) -> tuple[slice, ...]:
    """The destination block outside which every voxel maps ``margin`` voxels or more beyond the source."""
    corners = np.array(np.meshgrid(*[(-margin, n - 1 + margin) for n in src_shape], indexing="ij")).reshape(3, -1)
    inverse = np.linalg.inv(mapping)
    where = inverse[:3, :3] @ corners + inverse[:3, 3:]
    start = np.clip(np.floor(where.min(axis=1)).astype(int), 0, dst_shape)
    stop = np.clip(np.ceil(where.max(axis=1)).astype(int) + 1, 0, dst_shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(start, stop))


def resample_to_voxel_size(
    data: np.ndarray, affine: np.ndarray, voxel_size: Sequence[float], *, order: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Resample onto a grid of ``voxel_size`` covering the same field of view.

    Voxel centres of the new grid start at the old grid's first voxel centre.
    """
    old = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    new = np.asarray(voxel_size, dtype=float)
    if new.shape != (3,) or np.any(new <= 0):
        raise ValueError(f"voxel_size must be 3 positive numbers, got {voxel_size}")
    shape = np.maximum(np.floor((np.array(data.shape[:3]) - 1) * old / new).astype(int) + 1, 1)
    dst = np.array(affine, dtype=float)
    dst[:3, :3] = affine[:3, :3] * (new / old)
    return affine_resample(data, affine, dst, tuple(shape), order=order), dst
