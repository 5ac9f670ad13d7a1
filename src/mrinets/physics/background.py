"""Background field removal by spherical mean value filtering (SHARP, V-SHARP).

Inside the brain the measured field is the sum of a *local* field, from
sources inside the brain, and a *background* field, from sources outside it
(air, bone, the shim). The background field is harmonic inside the brain, so
it equals its own average over any sphere that lies inside the brain; the
spherical mean value (SMV) filter ``delta - s`` removes it, and deconvolving
that filter gives back the local field.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.fft as sfft
from numpy.typing import ArrayLike

from mrinets.physics.dipole import _as_mask, _as_volume, _as_voxel_size, _embed, _fft_shape

__all__ = ["sharp", "vsharp", "default_vsharp_radii", "check_max_radius", "restore_harmonic_loss"]

# Largest SMV radius of V-SHARP (mm): the radius that Wu et al. and common
# pipelines start from; background fields are flat enough at that scale.
MAX_RADIUS_MM = 12.0


def default_vsharp_radii(
    voxel_size: ArrayLike = (1.0, 1.0, 1.0), *, max_radius_mm: float = MAX_RADIUS_MM
) -> tuple[float, ...]:
    """SMV radii (mm) for :func:`vsharp`: ``max_radius_mm`` (12) down to one (largest) voxel edge.

    The step is one largest voxel edge, so consecutive spheres differ by at
    least one voxel along every axis; 12 radii for 1 mm voxels.
    """
    if not max_radius_mm > 0:
        raise ValueError(f"max_radius_mm must be positive, got {max_radius_mm!r}")
    step = max(_as_voxel_size(voxel_size))
    count = max(int(math.floor(max_radius_mm / step + 1e-6)), 1)
    return tuple(float(max_radius_mm - i * step) for i in range(count))


def check_max_radius(max_radius_mm: float, voxel_size: ArrayLike, shape: Sequence[int]) -> float:
    """Check the largest V-SHARP radius against the grid: at least one voxel, at most the field of view.

    Raises
    ------
    ValueError
        Naming the radius and the bound it breaks.
    """
    voxel_size = _as_voxel_size(voxel_size)
    radius = float(max_radius_mm)
    if not math.isfinite(radius) or radius < min(voxel_size):
        raise ValueError(f"the largest radius must be at least the smallest voxel edge ({min(voxel_size):g} mm), "
                         f"got {radius:g} mm")
    extent = max(n * h for n, h in zip(shape, voxel_size))
    if radius > extent:
        raise ValueError(f"a sphere of radius {radius:g} mm is larger than the field of view ({extent:g} mm across "
                         "at most)")
    return radius


def _ball_spectrum(
    shape: tuple[int, ...], radius: float, voxel_size: tuple[float, float, float]
) -> tuple[np.ndarray, int]:
    """rfftn of the normalised SMV ball of ``radius`` mm at the origin (real, even), and its voxel count."""
    reach = [int(math.floor(radius / h + 1e-6)) for h in voxel_size]
    offsets = [np.arange(-r, r + 1) for r in reach]
    grid = np.meshgrid(*[o * h for o, h in zip(offsets, voxel_size)], indexing="ij", sparse=True)
    ball = (grid[0] ** 2 + grid[1] ** 2 + grid[2] ** 2) <= radius * radius * (1 + 1e-6)
    kernel = np.zeros(shape, dtype=np.float32)
    # wrapped indices put the ball's centre on voxel (0, 0, 0) of the periodic grid
    kernel[np.ix_(*[o % n for o, n in zip(offsets, shape)])] = ball / np.float32(ball.sum())
    return sfft.rfftn(kernel, workers=-1).real.astype(np.float32), int(ball.sum())


def _check_radii(radii: Sequence[float], voxel_size: tuple[float, float, float]) -> list[float]:
    values = np.asarray(radii, dtype=np.float64).reshape(-1)
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError(f"radii must be one or more finite lengths in mm, got {radii!r}")
    if values.min() < min(voxel_size):
        raise ValueError(
            f"radii must be at least the smallest voxel edge ({min(voxel_size):g} mm): a smaller "
            f"sphere holds a single voxel and removes nothing; got {values.min():g} mm"
        )
    return sorted({float(v) for v in values}, reverse=True)


def _smv_removal(
    field: ArrayLike,
    mask: ArrayLike,
    voxel_size: ArrayLike,
    radii: Sequence[float],
    threshold: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Shared SHARP/V-SHARP: variable-radius SMV filter, then TSVD deconvolution."""
    field = _as_volume(field, "field")
    inside = _as_mask(mask, field.shape)
    voxel_size = _as_voxel_size(voxel_size)
    radii = _check_radii(radii, voxel_size)
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold!r}")

    # Work on the mask's bounding box, padded by the largest radius so that the
    # periodic FFT convolution of every kept voxel never wraps around.
    hits = np.nonzero(inside)
    low = [int(h.min()) for h in hits]
    high = [int(h.max()) + 1 for h in hits]
    margin = [int(math.ceil(radii[0] / h)) + 1 for h in voxel_size]
    box = tuple(slice(lo, hi) for lo, hi in zip(low, high))
    grid = _fft_shape([hi - lo + 2 * m for lo, hi, m in zip(low, high, margin)])
    crop = tuple(slice(m, m + hi - lo) for m, lo, hi in zip(margin, low, high))

    box_mask = inside[box]
    field_spectrum = sfft.rfftn(_embed(np.where(box_mask, field[box], 0), grid, margin), workers=-1)
    mask_spectrum = sfft.rfftn(_embed(box_mask.astype(np.float32), grid, margin), workers=-1)

    filtered = np.zeros(grid, dtype=np.float32)
    kept = np.zeros(grid, dtype=bool)
    inverse = None
    for radius in radii:
        smv, n_ball = _ball_spectrum(grid, radius, voxel_size)
        # a voxel is kept for this radius when its whole sphere lies in the mask;
        # half a voxel of tolerance absorbs float32 FFT round-off
        eroded = sfft.irfftn(mask_spectrum * smv, s=grid, workers=-1) > np.float32(1.0 - 0.5 / n_ball)
        np.subtract(np.float32(1.0), smv, out=smv)  # now the high-pass delta - s
        if inverse is None:
            # deconvolve with the largest kernel, truncated (TSVD) below threshold
            inverse = np.where(np.abs(smv) < threshold, np.float32(0.0), 1.0 / np.where(smv == 0, 1, smv))
            inverse = inverse.astype(np.float32)
        high_pass = sfft.irfftn(field_spectrum * smv, s=grid, workers=-1)
        np.copyto(filtered, high_pass, where=eroded & ~kept)
        kept |= eroded

    local = sfft.irfftn(sfft.rfftn(filtered, workers=-1) * inverse, s=grid, workers=-1)
    local *= kept
    out = np.zeros(field.shape, dtype=np.float32)
    out_mask = np.zeros(field.shape, dtype=bool)
    out[box] = local[crop]
    out_mask[box] = kept[crop]
    return out, out_mask


def sharp(
    field: ArrayLike,
    mask: ArrayLike,
    *,
    voxel_size: ArrayLike = (1.0, 1.0, 1.0),
    radius: float = 6.0,
    threshold: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """Remove the background field with one SMV kernel (SHARP).

    Parameters
    ----------
    field : array_like
        3D unwrapped total field (any unit: ppm, Hz, radians); only voxels in
        ``mask`` are used.
    mask : array_like
        Region where the field is known and sources are local (the brain).
    voxel_size : array_like
        Voxel edge lengths in mm; the sphere is round in millimetres.
    radius : float
        SMV sphere radius in mm.
    threshold : float
        Truncation of the deconvolution: k-space values where
        ``|1 - S(k)| < threshold`` are set to zero.

    Returns
    -------
    local_field : ndarray
        float32 local field, in the unit of ``field``, zero outside ``eroded_mask``.
    eroded_mask : ndarray
        bool, the voxels whose whole sphere lies inside ``mask``.

    Notes
    -----
    With ``s`` the normalised sphere of radius ``r`` and ``M_r`` the mask
    eroded by ``r``, a harmonic background ``f_b`` satisfies
    ``(delta - s) * f_b = 0`` on ``M_r`` (mean value property), so

    .. math::

        f_L = M_r\\, \\mathcal{F}^{-1}\\Big\\{ \\frac{\\mathcal{F}\\{M_r\\,((\\delta - s) * f)\\}}
        {1 - S(\\mathbf{k})} \\Big\\}

    where the division is truncated (TSVD): ``1 / (1 - S)`` is replaced by
    0 where ``|1 - S| < threshold``. The result equals the local field up to a
    harmonic function (e.g. a constant) inside ``M_r``.

    References
    ----------
    Schweser F, Deistung A, Lehr BW, Reichenbach JR. Quantitative imaging of
    intrinsic magnetic tissue properties using MRI signal phase: an approach to
    in vivo brain iron metabolism? NeuroImage 2011;54:2789-2807.
    """
    return _smv_removal(field, mask, voxel_size, [radius], threshold)


def vsharp(
    field: ArrayLike,
    mask: ArrayLike,
    *,
    voxel_size: ArrayLike = (1.0, 1.0, 1.0),
    radii: Sequence[float] | None = None,
    threshold: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """Remove the background field with SMV kernels of decreasing radius (V-SHARP).

    Parameters
    ----------
    field : array_like
        3D unwrapped total field (any unit); only voxels in ``mask`` are used.
    mask : array_like
        Region where the field is known and sources are local (the brain).
    voxel_size : array_like
        Voxel edge lengths in mm; spheres are round in millimetres.
    radii : sequence of float, optional
        SMV radii in mm (any order); default :func:`default_vsharp_radii`,
        12 mm down to one voxel.
    threshold : float
        Truncation of the deconvolution with the largest kernel.

    Returns
    -------
    local_field : ndarray
        float32 local field, in the unit of ``field``, zero outside ``eroded_mask``.
    eroded_mask : ndarray
        bool, the voxels whose sphere of the smallest radius lies inside ``mask``.

    Notes
    -----
    Every voxel uses the largest radius whose sphere still fits in the mask:

    .. math:: g(x) = ((\\delta - s_{r(x)}) * f)(x), \\quad r(x) = \\max\\{r_i : x \\in M_{r_i}\\}

    so the centre of the brain gets the large, well-conditioned kernel and the
    border keeps its voxels with small kernels. ``g`` is then deconvolved, as
    in SHARP, with the largest kernel, truncated where
    ``|1 - S_{max}(k)| < threshold``, and masked by ``M_{r_min}``.

    References
    ----------
    Li W, Wu B, Liu C. Quantitative susceptibility mapping of human brain
    reflects spatial variation in tissue composition. NeuroImage
    2011;55:1645-1656.

    Wu B, Li W, Guidon A, Liu C. Whole brain susceptibility mapping using
    compressed sensing. Magn Reson Med 2012;67:137-147.
    """
    radii = default_vsharp_radii(voxel_size) if radii is None else radii
    return _smv_removal(field, mask, voxel_size, radii, threshold)


def restore_harmonic_loss(
    field: ArrayLike,
    mask: ArrayLike,
    local: ArrayLike,
    eroded: ArrayLike,
    *,
    voxel_size: ArrayLike,
    b0_dir: ArrayLike,
    radii: Sequence[float] | None = None,
    threshold: float = 0.05,
    iterations: int = 3,
    tkd_threshold: float = 0.19,
) -> np.ndarray:
    """Give back the part of the local field that V-SHARP removed with the background.

    Parameters
    ----------
    field, mask : array_like
        The total field and mask given to :func:`vsharp`.
    local, eroded : array_like
        Its output with the same ``radii`` and ``threshold``.
    voxel_size, b0_dir : array_like
        Voxel edge lengths in mm; B0 direction in voxel axes.
    radii, threshold : optional
        As given to :func:`vsharp`.
    iterations : int
        Fixed-point steps (0 returns ``local``); the change after 3 is small.
    tkd_threshold : float
        Truncation of the TKD that models the susceptibility.

    Returns
    -------
    ndarray
        float32 local field on ``eroded``.

    Notes
    -----
    V-SHARP also removes the part of the *local* field that is harmonic inside
    the spheres it averages over (fields of sources near the border, the
    components its truncated deconvolution drops), a large share on realistic
    heads, which leaves susceptibility underestimated (docs/qsm.md). Among the
    fields that V-SHARP maps onto its output, this picks one made by a
    susceptibility inside the brain: with ``V`` the
    V-SHARP operator and ``P`` the field of the TKD susceptibility of a field
    (``P f = D * TKD(f)``),

    .. math:: f_{n+1} = f_0 + (P f_n - V P f_n), \\quad f_0 = V f

    i.e. the field a dipole model of the current estimate predicts, minus what
    V-SHARP would keep of it, is added back: the field of a susceptibility
    inside the mask, never a background field. It relies on TKD being a fair
    model of the tissue: for a few compact sources in an otherwise empty
    region, whose field V-SHARP already keeps, it adds TKD's errors instead.
    """
    from mrinets.physics.dipole import forward_field
    from mrinets.physics.inversion import tkd

    if int(iterations) < 0:
        raise ValueError(f"iterations must not be negative, got {iterations!r}")
    inside = _as_mask(mask, np.shape(field))
    kept = _as_mask(eroded, np.shape(field), "eroded")
    radii = default_vsharp_radii(voxel_size) if radii is None else radii
    base = np.where(kept, _as_volume(local, "local"), 0).astype(np.float32)
    current = base
    for _ in range(int(iterations)):
        chi = tkd(current, kept, voxel_size=voxel_size, b0_dir=b0_dir, threshold=tkd_threshold)
        predicted = np.where(inside, forward_field(chi, voxel_size=voxel_size, b0_dir=b0_dir), 0).astype(np.float32)
        kept_part, _ = _smv_removal(predicted, inside, voxel_size, radii, threshold)
        current = np.where(kept, base + predicted - kept_part, 0).astype(np.float32)
    return current
