"""Unit dipole kernel and the forward model from susceptibility to field.

A susceptibility distribution ``chi`` perturbs the main field; for
``|chi| << 1`` the relative field change along B0 is the convolution of
``chi`` with the field of a unit magnetic dipole, which in k-space is the
product ``F(field) = D(k) F(chi)``. Everything here is in relative units:
``chi`` in ppm gives a field in ppm of B0.

Directions are unit vectors in *voxel axes*: component ``i`` is along array
axis ``i``, measured in millimetres, so oblique and anisotropic grids are
handled by :func:`b0_direction_in_voxels` and by the physical voxel size.
The functions below also hold the small helpers (argument checks, FFT grid
sizes) that the other QSM modules of :mod:`mrinets.physics` share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from numpy.typing import ArrayLike

__all__ = ["dipole_kernel", "b0_direction_in_voxels", "forward_field", "point_dipole_field"]

PadArg = int | Sequence[int] | None


def _as_voxel_size(voxel_size: ArrayLike) -> tuple[float, float, float]:
    size = np.asarray(voxel_size, dtype=np.float64).reshape(-1)
    if size.shape != (3,) or not np.all(np.isfinite(size)) or np.any(size <= 0):
        raise ValueError(f"voxel_size must be three positive lengths in mm, got {voxel_size!r}")
    return tuple(float(v) for v in size)  # type: ignore[return-value]


def _as_direction(direction: ArrayLike, name: str) -> np.ndarray:
    vec = np.asarray(direction, dtype=np.float64).reshape(-1)
    if vec.shape != (3,) or not np.all(np.isfinite(vec)):
        raise ValueError(f"{name} must be a 3-vector, got {direction!r}")
    largest = float(np.abs(vec).max())
    if largest < 1e-12:
        raise ValueError(f"{name} must be a non-zero 3-vector, got {direction!r}")
    vec = vec / largest  # so that the norm of huge components does not overflow
    return vec / np.linalg.norm(vec)


def _as_volume(array: ArrayLike, name: str) -> np.ndarray:
    """A finite 3D float32 array, or ValueError naming the argument."""
    vol = np.asarray(array)
    if vol.ndim != 3:
        raise ValueError(f"{name} must be a 3D array, got shape {vol.shape}")
    if min(vol.shape) < 2:
        raise ValueError(f"{name} must have at least 2 voxels along each axis, got shape {vol.shape}")
    vol = vol.astype(np.float32, copy=False)
    if not np.all(np.isfinite(vol)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return vol


def _as_mask(mask: ArrayLike, shape: tuple[int, ...], name: str = "mask") -> np.ndarray:
    m = np.asarray(mask)
    if m.shape != tuple(shape):
        raise ValueError(f"{name} of shape {m.shape} does not match the data shape {tuple(shape)}")
    m = m.astype(bool, copy=False)
    if not m.any():
        raise ValueError(f"{name} is empty (no voxel is set)")
    return m


def _pad_widths(pad: PadArg, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Voxels added on each side of each axis; ``None`` doubles the grid."""
    if pad is None:
        return tuple(n // 2 for n in shape)  # type: ignore[return-value]
    widths = np.asarray(pad).reshape(-1)
    if widths.size == 1:
        widths = np.repeat(widths, 3)
    if widths.shape != (3,) or widths.dtype.kind not in "iu" or np.any(widths < 0):
        raise ValueError(f"pad must be a non-negative integer or three of them, got {pad!r}")
    return tuple(int(w) for w in widths)  # type: ignore[return-value]


def _fft_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """Grid sizes that scipy's real FFTs handle fast (products of small primes)."""
    return tuple(sfft.next_fast_len(int(n), real=True) for n in shape)


def _embed(volume: np.ndarray, shape: tuple[int, ...], offset: Sequence[int]) -> np.ndarray:
    """``volume`` placed at ``offset`` in a zero float32 array of ``shape``."""
    out = np.zeros(shape, dtype=np.float32)
    out[tuple(slice(o, o + n) for o, n in zip(offset, volume.shape))] = volume
    return out


def _frequencies(shape: Sequence[int], voxel_size: Sequence[float], *, real: bool) -> list[np.ndarray]:
    """Broadcastable k-space coordinates (cycles/mm) of an FFT grid.

    With ``real`` the last axis is the half spectrum of :func:`scipy.fft.rfftn`.
    """
    axes = []
    for axis, (n, h) in enumerate(zip(shape, voxel_size)):
        last = real and axis == len(shape) - 1
        k = sfft.rfftfreq(n, d=h) if last else sfft.fftfreq(n, d=h)
        view = [1] * len(shape)
        view[axis] = k.size
        axes.append(k.astype(np.float32).reshape(view))
    return axes


def dipole_kernel(
    shape: Sequence[int],
    *,
    voxel_size: ArrayLike = (1.0, 1.0, 1.0),
    b0_dir: ArrayLike = (0.0, 0.0, 1.0),
    real: bool = False,
) -> np.ndarray:
    """Unit dipole kernel on the k-space grid of an FFT of ``shape``.

    Parameters
    ----------
    shape : sequence of int
        Grid (X, Y, Z) of the volume the kernel will multiply in k-space.
    voxel_size : array_like
        Voxel edge lengths in mm along the array axes.
    b0_dir : array_like
        Direction of B0 in voxel axes (see :func:`b0_direction_in_voxels`);
        normalised here.
    real : bool
        Return the half spectrum that matches :func:`scipy.fft.rfftn` (last
        axis ``Z // 2 + 1``) instead of the full :func:`scipy.fft.fftn` grid.

    Returns
    -------
    ndarray
        float32 kernel in FFT order (zero frequency at index 0), values in
        ``[-2/3, 1/3]``.

    Notes
    -----
    .. math:: D(\\mathbf{k}) = \\frac{1}{3} - \\frac{(\\mathbf{k}\\cdot\\hat{b})^2}{|\\mathbf{k}|^2}

    with ``k`` the physical frequency (``fftfreq`` with the voxel size), so
    anisotropic voxels are exact. At the Nyquist frequency of an even axis,
    ``(k.b)^2`` is averaged over ``+k`` and ``-k`` so that the kernel is even.
    ``D(0)`` is undefined (its limit depends on the direction); by convention
    it is set to 0 here, so a field computed with this kernel has zero mean
    over the FFT grid and susceptibility is only known up to a constant.

    References
    ----------
    Salomir R, de Senneville BD, Moonen CTW. A fast calculation method for
    magnetic field inhomogeneity due to an arbitrary distribution of bulk
    susceptibility. Concepts Magn Reson B 2003;19B:26-34.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be three positive sizes, got {shape!r}")
    voxel_size = _as_voxel_size(voxel_size)
    b = _as_direction(b0_dir, "b0_dir").astype(np.float32)
    freqs = _frequencies(shape, voxel_size, real=real)
    k2 = freqs[0] ** 2 + freqs[1] ** 2 + freqs[2] ** 2
    # On an even axis the Nyquist frequency stands for both +k and -k. With an
    # oblique b0_dir the two give different kernels, so (k.b)^2 is averaged
    # over both signs of every Nyquist component (the cross terms of those
    # components cancel): the kernel stays even, so a real chi gives a real
    # field, and is the same on full and half (rfft) grids.
    kb = np.float32(0.0)
    aliased = np.float32(0.0)
    for k, n, bi in zip(freqs, shape, b):
        at_nyquist = np.zeros(k.shape, dtype=bool)
        if n % 2 == 0:  # fftfreq and rfftfreq both hold it at index n // 2
            at_nyquist.reshape(-1)[n // 2] = True
        kb = kb + np.where(at_nyquist, 0, k * bi)
        aliased = aliased + np.where(at_nyquist, (k * bi) ** 2, 0)
    kb2 = kb * kb + aliased
    k2[0, 0, 0] = 1.0  # the origin is set to 0 below; avoid 0/0
    kernel = np.float32(1.0 / 3.0) - kb2 / k2
    kernel[0, 0, 0] = 0.0
    return kernel.astype(np.float32, copy=False)


def b0_direction_in_voxels(
    b0_dir_world: ArrayLike = (0.0, 0.0, 1.0),
    affine: ArrayLike | None = None,
) -> np.ndarray:
    """Carry a world (scanner) B0 direction into the voxel axes of an image.

    Parameters
    ----------
    b0_dir_world : array_like
        B0 direction in world coordinates (NIfTI RAS mm; the scanner bore is
        the z axis, so the default ``(0, 0, 1)`` fits a head in a
        conventional scanner). The sign does not matter to the dipole kernel.
    affine : array_like, optional
        4x4 voxel-to-world matrix of the image (its upper 3x3 block is used);
        identity when omitted.

    Returns
    -------
    ndarray
        Unit 3-vector (float64): component ``i`` along array axis ``i``, as
        :func:`dipole_kernel` and :func:`forward_field` expect.

    Notes
    -----
    The columns of the affine's 3x3 block are the world vectors of one voxel
    step; scaled to unit length, ``A_n``, they are the world directions of the
    voxel axes (flips included). The voxel-axis components ``b`` of the world
    direction ``w`` solve ``A_n b = w``, i.e. ``b = A_n^T w`` for the usual
    orthogonal grids; a sheared affine is handled by the solve, although the
    k-space kernel itself assumes orthogonal axes.

    Examples
    --------
    >>> import numpy as np
    >>> flip_x = np.diag([-2.0, 1.0, 1.0, 1.0])
    >>> b0_direction_in_voxels((1.0, 0.0, 1.0), flip_x).round(3)
    array([-0.707,  0.   ,  0.707])
    """
    world = _as_direction(b0_dir_world, "b0_dir_world")
    matrix = np.eye(3) if affine is None else np.asarray(affine, dtype=np.float64)
    if matrix.shape == (4, 4):
        matrix = matrix[:3, :3]
    if matrix.shape != (3, 3) or not np.all(np.isfinite(matrix)):
        raise ValueError(f"affine must be a 4x4 (or 3x3) finite matrix, got shape {matrix.shape}")
    lengths = np.linalg.norm(matrix, axis=0)
    if np.any(lengths < 1e-9) or abs(np.linalg.det(matrix / lengths)) < 1e-6:
        raise ValueError("affine is singular: its voxel axes do not span 3D space")
    voxel = np.linalg.solve(matrix / lengths, world)
    return voxel / np.linalg.norm(voxel)


@dataclass(frozen=True)
class _DipoleGrid:
    """The padded FFT grid of a volume and its dipole kernel (half spectrum)."""

    shape: tuple[int, int, int]
    widths: tuple[int, int, int]
    grid: tuple[int, ...]
    voxel_size: tuple[float, float, float]
    kernel: np.ndarray

    @classmethod
    def build(cls, shape: tuple[int, ...], voxel_size: ArrayLike, b0_dir: ArrayLike, pad: PadArg) -> _DipoleGrid:
        voxel_size = _as_voxel_size(voxel_size)
        widths = _pad_widths(pad, shape)
        grid = _fft_shape([n + 2 * w for n, w in zip(shape, widths)])
        kernel = dipole_kernel(grid, voxel_size=voxel_size, b0_dir=b0_dir, real=True)
        return cls(tuple(shape), widths, grid, voxel_size, kernel)  # type: ignore[arg-type]

    @property
    def inner(self) -> tuple[slice, ...]:
        """Where the volume sits in the padded grid."""
        return tuple(slice(w, w + n) for w, n in zip(self.widths, self.shape))

    def embed(self, volume: np.ndarray) -> np.ndarray:
        return _embed(volume, self.grid, self.widths)

    def crop(self, volume: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(volume[self.inner])

    def full_grid_mean(self, half: np.ndarray) -> float:
        """Mean over the full FFT grid of a real, even function given on the rfft half grid."""
        weights = np.full(half.shape[-1], 2.0)
        weights[0] = 1.0
        if self.grid[-1] % 2 == 0:
            weights[-1] = 1.0
        return float((half.sum(axis=(0, 1), dtype=np.float64) * weights).sum() / np.prod(self.grid))


def forward_field(
    chi: ArrayLike,
    *,
    voxel_size: ArrayLike = (1.0, 1.0, 1.0),
    b0_dir: ArrayLike = (0.0, 0.0, 1.0),
    pad: PadArg = None,
) -> np.ndarray:
    """Field perturbation (same units as ``chi``) of a susceptibility map.

    Parameters
    ----------
    chi : array_like
        3D susceptibility map, e.g. in ppm.
    voxel_size : array_like
        Voxel edge lengths in mm along the array axes.
    b0_dir : array_like
        B0 direction in voxel axes (see :func:`b0_direction_in_voxels`).
    pad : int, sequence of 3 int, or None
        Zeros added on each side of each axis before the FFT, against the
        wrap-around of the periodic convolution; the result is cropped back.
        ``None`` (default) pads each axis by half its length, which doubles
        the grid so that no source inside the volume wraps onto another;
        ``0`` computes on the volume's own (periodic) grid.

    Returns
    -------
    ndarray
        float32 field, same shape as ``chi``, in the units of ``chi`` (ppm of
        B0 for ``chi`` in ppm; multiply by ``gamma * B0 * TE`` for phase).

    Notes
    -----
    .. math:: \\Delta B / B_0 = \\mathcal{F}^{-1}\\{ D(\\mathbf{k})\\, \\mathcal{F}\\{\\chi\\} \\}

    with :func:`dipole_kernel` (Lorentz-sphere corrected: a uniform sphere has
    no field inside, ``D(0) = 0``). Real FFTs in float32 are used.

    References
    ----------
    Marques JP, Bowtell R. Application of a Fourier-based method for rapid
    calculation of field inhomogeneity due to spatial variation of magnetic
    susceptibility. Concepts Magn Reson B 2005;25B:65-78.
    """
    chi = _as_volume(chi, "chi")
    ops = _DipoleGrid.build(chi.shape, voxel_size, b0_dir, pad)
    spectrum = sfft.rfftn(ops.embed(chi), workers=-1)
    spectrum *= ops.kernel
    return ops.crop(sfft.irfftn(spectrum, s=ops.grid, workers=-1)).astype(np.float32, copy=False)


def point_dipole_field(
    chi: ArrayLike,
    *,
    voxel_size: ArrayLike = (1.0, 1.0, 1.0),
    b0_dir: ArrayLike = (0.0, 0.0, 1.0),
) -> np.ndarray:
    """Field of ``chi`` modelled as one point dipole per voxel (real-space kernel).

    Parameters
    ----------
    chi : array_like
        3D susceptibility map, e.g. in ppm.
    voxel_size : array_like
        Voxel edge lengths in mm along the array axes.
    b0_dir : array_like
        B0 direction in voxel axes (see :func:`b0_direction_in_voxels`).

    Returns
    -------
    ndarray
        float32 field, same shape and unit as ``chi``; a voxel gets no field
        from its own susceptibility (Lorentz sphere).

    Notes
    -----
    .. math:: d(\\mathbf{r}) = V\\,\\frac{3\\cos^2\\theta - 1}{4\\pi r^3}

    (``V`` the voxel volume, ``theta`` the angle between ``r`` and B0), summed
    by a linear (zero-padded) FFT convolution. Away from its sources this field
    is exactly that of point dipoles, hence harmonic, for any B0 direction.
    The k-space kernel of :func:`forward_field` is not: with an oblique B0 the
    cross terms ``k_i k_j b_i b_j`` change sign across the Nyquist boundary, so
    its real-space kernel decays only as ``1/r`` along a Nyquist-frequency
    checkerboard, and a sharp, strong source (air at 9.4 ppm) puts a
    non-harmonic field deep inside the brain that no background removal can
    take out. Use this model for sources outside the region of interest
    (background fields); the k-space model stays the right one inside it,
    where it is the model the dipole inversions assume.
    """
    chi = _as_volume(chi, "chi")
    h = np.asarray(_as_voxel_size(voxel_size))
    b = _as_direction(b0_dir, "b0_dir")
    grid = _fft_shape([2 * n for n in chi.shape])
    # offsets in mm in FFT order: 0, 1, ..., then negative ones wrapped to the end
    axes = []
    for axis, (n, step) in enumerate(zip(grid, h)):
        view = [1, 1, 1]
        view[axis] = n
        axes.append((sfft.fftfreq(n) * n * step).reshape(view))
    r2 = axes[0] ** 2 + axes[1] ** 2 + axes[2] ** 2
    r2[0, 0, 0] = 1.0
    cos2 = (axes[0] * b[0] + axes[1] * b[1] + axes[2] * b[2]) ** 2 / r2
    kernel = (np.prod(h) * (3.0 * cos2 - 1.0) / (4.0 * np.pi * r2**1.5)).astype(np.float32)
    kernel[0, 0, 0] = 0.0
    spectrum = sfft.rfftn(_embed(chi, grid, (0, 0, 0)), workers=-1)
    spectrum *= sfft.rfftn(kernel, workers=-1)
    field = sfft.irfftn(spectrum, s=grid, workers=-1)
    return np.ascontiguousarray(field[tuple(slice(0, n) for n in chi.shape)]).astype(np.float32, copy=False)
