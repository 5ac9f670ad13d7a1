"""Gradient-echo acquisitions: phase units, field units and multi-echo fits.

Phase accrues linearly with echo time, ``phi(TE) = phi0 + 2 pi f TE``, where
``f`` is the local frequency offset in Hz; in relative units (ppm of B0) the
same field is ``f / (gamma_bar B0) * 1e6``. This module keeps those
conversions in one place, fits ``f`` from several echoes, and recognises the
scale in which a scanner or a converter stored the phase.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from mrinets.physics.dipole import _as_direction, _as_voxel_size, b0_direction_in_voxels

__all__ = [
    "B0_RANGE",
    "GAMMA",
    "MIN_ECHO_TIME",
    "GreAcquisition",
    "EchoFit",
    "phase_to_hz",
    "phase_to_ppm",
    "hz_to_ppm",
    "ppm_to_hz",
    "fit_echoes",
    "detect_phase_units",
]

GAMMA = 2.0 * math.pi * 42.577478518e6
"""Proton gyromagnetic ratio in rad/s/T (CODATA 2018)."""

MIN_ECHO_TIME = 1e-5
"""Shortest echo time, and echo spacing, in seconds taken as real (ultrashort-TE scans reach about 10 us)."""

B0_RANGE = (0.05, 21.0)
"""Field strengths in tesla accepted as a scan's B0: from ultra-low-field (64 mT) to the strongest human/animal MR."""


def _positive(value: float, name: str) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return value


def _echo_times(echo_times: ArrayLike) -> np.ndarray:
    te = np.asarray(echo_times, dtype=np.float64).reshape(-1)
    if te.size == 0 or not np.all(np.isfinite(te)) or np.any(te <= 0):
        raise ValueError(f"echo_times must be one or more positive times in seconds, got {echo_times!r}")
    if te.max() > 1.0:
        raise ValueError(f"echo_times must be in seconds (all below 1 s), got {echo_times!r}")
    values, counts = np.unique(te, return_counts=True)
    if np.any(counts > 1):
        raise ValueError(f"echo_times must differ ({values[counts > 1][0]:g} s is given twice)")
    if values[0] < MIN_ECHO_TIME or np.any(np.diff(values) < MIN_ECHO_TIME):
        raise ValueError(f"echo_times and their spacing must be at least {MIN_ECHO_TIME:g} s, got {echo_times!r}")
    return te


def _field_strength(b0: float) -> float:
    b0 = _positive(b0, "b0")
    if not B0_RANGE[0] <= b0 <= B0_RANGE[1]:
        raise ValueError(f"b0 must lie between {B0_RANGE[0]:g} and {B0_RANGE[1]:g} T, got {b0:g}")
    return b0


@dataclass(frozen=True)
class GreAcquisition:
    """What the physics needs to know about a (multi-)echo gradient-echo scan.

    Parameters
    ----------
    echo_times : sequence of float
        Echo times in seconds, one per echo, in the order of the 4th axis.
    b0 : float
        Field strength in tesla.
    b0_dir : sequence of float
        B0 direction in world (scanner) coordinates; carried into voxel axes
        by :meth:`b0_dir_in_voxels`.
    voxel_size : sequence of float
        Voxel edge lengths in mm along the array axes.

    Raises
    ------
    ValueError
        Naming the argument: non-positive, non-second or repeated echo times,
        B0 outside :data:`B0_RANGE`, zero direction, non-positive voxel size.
    """

    echo_times: tuple[float, ...]
    b0: float
    b0_dir: tuple[float, float, float] = (0.0, 0.0, 1.0)
    voxel_size: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "echo_times", tuple(float(t) for t in _echo_times(self.echo_times)))
        object.__setattr__(self, "b0", _field_strength(self.b0))
        object.__setattr__(self, "b0_dir", tuple(float(v) for v in _as_direction(self.b0_dir, "b0_dir")))
        object.__setattr__(self, "voxel_size", _as_voxel_size(self.voxel_size))

    @property
    def n_echoes(self) -> int:
        return len(self.echo_times)

    def b0_dir_in_voxels(self, affine: ArrayLike) -> np.ndarray:
        """B0 direction in the voxel axes of an image with this ``affine``."""
        return b0_direction_in_voxels(self.b0_dir, affine)

    def hz_to_ppm(self, field_hz: ArrayLike) -> np.ndarray:
        """Field in Hz to ppm of this scan's B0."""
        return hz_to_ppm(field_hz, b0=self.b0)


def phase_to_hz(phase: ArrayLike, *, te: float) -> np.ndarray:
    """Frequency offset (Hz) of an unwrapped phase (rad) accrued over ``te`` seconds: ``phase / (2 pi te)``."""
    te = _positive(te, "te")
    return (np.asarray(phase, dtype=np.float32) / np.float32(2.0 * math.pi * te)).astype(np.float32)


def hz_to_ppm(field_hz: ArrayLike, *, b0: float) -> np.ndarray:
    """Frequency offset (Hz) to relative field (ppm): ``f / (gamma / 2 pi * B0) * 1e6``."""
    b0 = _positive(b0, "b0")
    return (np.asarray(field_hz, dtype=np.float32) * np.float32(2.0 * math.pi * 1e6 / (GAMMA * b0))).astype(
        np.float32
    )


def ppm_to_hz(field_ppm: ArrayLike, *, b0: float) -> np.ndarray:
    """Relative field (ppm) to frequency offset (Hz), the inverse of :func:`hz_to_ppm`."""
    b0 = _positive(b0, "b0")
    return (np.asarray(field_ppm, dtype=np.float32) * np.float32(GAMMA * b0 * 1e-6 / (2.0 * math.pi))).astype(
        np.float32
    )


def phase_to_ppm(phase: ArrayLike, *, te: float, b0: float) -> np.ndarray:
    """Unwrapped phase (rad) at echo time ``te`` (s) to field in ppm.

    Notes
    -----
    .. math:: \\Delta B / B_0 = \\frac{\\varphi}{\\gamma B_0 T_E} \\cdot 10^6,
        \\qquad \\gamma = 2\\pi \\cdot 42.577478518\\ \\mathrm{MHz/T}

    The sign follows ``phi = +gamma dB TE``; scanners that store the
    conjugate phase need ``-phase``.
    """
    return hz_to_ppm(phase_to_hz(phase, te=te), b0=b0)


@dataclass(frozen=True)
class EchoFit:
    """Result of :func:`fit_echoes` (float32 maps on the image grid).

    Attributes
    ----------
    field_hz : ndarray
        Frequency offset in Hz (multiply by ``2 pi`` for rad/s).
    offset : ndarray
        Phase at TE = 0 in rad (zeros for a fit through the origin).
    residual : ndarray
        Weighted root-mean-square phase residual of the fit, in rad.
    """

    field_hz: np.ndarray
    offset: np.ndarray
    residual: np.ndarray


def fit_echoes(
    phase: ArrayLike,
    *,
    echo_times: Sequence[float],
    magnitude: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    offset: bool = False,
) -> EchoFit:
    """Weighted linear fit of unwrapped phase over echo times.

    Parameters
    ----------
    phase : array_like
        Unwrapped phase in radians, shape (X, Y, Z, E), or (X, Y, Z) for one
        echo; consistent across echoes (no 2 pi jump between echoes).
    echo_times : sequence of float
        Echo times in seconds, ``E`` of them.
    magnitude : array_like, optional
        Magnitudes of the same shape; weights ``magnitude ** 2``. Without it
        all echoes weigh the same.
    mask : array_like, optional
        3D mask; the maps are 0 outside.
    offset : bool
        Fit ``phi0 + 2 pi f TE`` (needs two echoes or more) instead of a line
        through the origin.

    Returns
    -------
    EchoFit
        ``field_hz``, ``offset`` and ``residual`` maps.

    Notes
    -----
    Phase noise has variance ``~ 1 / magnitude^2``, so the inverse-variance
    weights are ``w_n = m_n^2``. Through the origin,

    .. math:: \\omega = \\frac{\\sum_n w_n T_n \\varphi_n}{\\sum_n w_n T_n^2}
        = \\frac{\\sum_n (m_n^2 T_n^2)\\, (\\varphi_n / T_n)}{\\sum_n m_n^2 T_n^2}

    i.e. the per-echo frequencies averaged with the ``magnitude^2 * TE^2``
    weights common in QSM pipelines; with ``offset`` it is the weighted
    least-squares line. ``f = omega / 2 pi``. One echo gives ``phi / (2 pi TE)``.

    References
    ----------
    Wu B, Li W, Avram AV, Gho SM, Liu C. Fast and tissue-optimized mapping of
    magnetic susceptibility and T2* with multi-echo and multi-shot spirals.
    NeuroImage 2012;59:297-305.
    """
    te = _echo_times(echo_times)
    phi = np.asarray(phase, dtype=np.float32)
    if phi.ndim == 3:
        phi = phi[..., None]
    if phi.ndim != 4 or phi.shape[-1] != te.size:
        raise ValueError(
            f"phase must have shape (X, Y, Z, E) with E = {te.size} echoes (one per echo time), got {np.shape(phase)}"
        )
    if offset and te.size < 2:
        raise ValueError("offset fit needs at least two echo_times")
    if magnitude is None:
        weights = np.ones_like(phi)
    else:
        mag = np.asarray(magnitude, dtype=np.float32)
        mag = mag[..., None] if mag.ndim == 3 else mag
        if mag.shape != phi.shape:
            raise ValueError(f"magnitude of shape {np.shape(magnitude)} does not match phase shape {np.shape(phase)}")
        weights = mag * mag
    times = te.astype(np.float32)
    sw = weights.sum(axis=-1)
    st = (weights * times).sum(axis=-1)
    stt = (weights * times * times).sum(axis=-1)
    stp = (weights * times * phi).sum(axis=-1)
    if offset:
        sp = (weights * phi).sum(axis=-1)
        det = sw * stt - st * st
        safe = np.where(det > 0, det, 1)
        omega = np.where(det > 0, (sw * stp - st * sp) / safe, 0)
        phi0 = np.where(det > 0, (stt * sp - st * stp) / safe, 0)
    else:
        omega = np.where(stt > 0, stp / np.where(stt > 0, stt, 1), 0)
        phi0 = np.zeros_like(omega)
    misfit = phi - phi0[..., None] - omega[..., None] * times
    residual = np.sqrt((weights * misfit * misfit).sum(axis=-1) / np.where(sw > 0, sw, 1))
    maps = [omega / np.float32(2.0 * math.pi), phi0, residual]
    if mask is not None:
        inside = np.asarray(mask, dtype=bool)
        if inside.shape != phi.shape[:3]:
            raise ValueError(f"mask of shape {inside.shape} does not match the image grid {phi.shape[:3]}")
        maps = [np.where(inside, m, 0) for m in maps]
    return EchoFit(*(m.astype(np.float32) for m in maps))


# Heuristics of detect_phase_units, as fractions of the observed value range.
_SYMMETRY = 0.02  # |max + min| below this fraction of the range: symmetric
_BAND = 0.01  # width of the band at each extreme
_MIN_DENSITY = 0.1  # an extreme band holds at least this fraction of a flat histogram's share
_FULL_RANGE = 0.9  # a stored range must cover this fraction of its nominal span


def detect_phase_units(phase: ArrayLike) -> float:
    """Scale that turns stored phase values into radians.

    Parameters
    ----------
    phase : array_like
        Phase as read from file, any shape (all echoes together is best:
        late echoes wrap even when early ones do not).

    Returns
    -------
    float
        Multiply the data by this to get radians: 1 for radians (within
        ``[-pi, pi]`` or ``[0, 2 pi]`` and spanning most of it), ``pi / 4096``
        for signed 12-bit scanner integers (-4096..4095), ``2 pi / 4096`` for
        unsigned ones (0..4095), and ``pi / max|phase|`` for any other scale
        whose values span a symmetric range with both extremes hit by many
        voxels, as wrapped phase does (e.g. -0.0037..0.0037 or degrees).

    Raises
    ------
    ValueError
        When none of these fits (e.g. a field map in Hz, or phase that never
        wraps), with the observed range: convert the phase to radians first.
    """
    x = np.asarray(phase, dtype=np.float64).reshape(-1)
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError("phase must be a non-empty array of finite values")
    lo, hi = float(x.min()), float(x.max())
    span = hi - lo
    if span == 0:
        raise ValueError(f"phase is constant ({lo:g}); its units cannot be recognised")
    slack = 1e-3 * math.pi
    if span >= 1.5 * math.pi and (
        (lo >= -math.pi - slack and hi <= math.pi + slack) or (lo >= -slack and hi <= 2 * math.pi + slack)
    ):
        return 1.0
    if np.all(x == np.round(x)):
        if lo >= -4096 and hi <= 4095 and lo <= -_FULL_RANGE * 4096 and hi >= _FULL_RANGE * 4095:
            return math.pi / 4096.0
        if lo >= 0 and hi <= 4095 and lo <= (1 - _FULL_RANGE) * 4095 and hi >= _FULL_RANGE * 4095:
            return 2.0 * math.pi / 4096.0
    band = _BAND * span
    expected = _MIN_DENSITY * _BAND * x.size
    n_high = int(np.count_nonzero(x >= hi - band))
    n_low = int(np.count_nonzero(x <= lo + band))
    if abs(hi + lo) <= _SYMMETRY * span and min(n_high, n_low) >= max(expected, 10):
        return math.pi / max(abs(lo), abs(hi))
    raise ValueError(
        f"phase values span {lo:g}..{hi:g} ({n_low} and {n_high} voxels within 1% of the two ends), "
        "which is neither radians (-pi..pi or 0..2pi), 12-bit scanner integers (-4096..4095 or 0..4095), "
        "nor a symmetric wrapped range whose extremes many voxels reach; convert the phase to radians first"
    )
