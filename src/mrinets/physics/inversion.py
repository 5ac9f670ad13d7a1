"""Dipole inversion: from a local field map to susceptibility.

The local field is ``f = D * chi`` (see :mod:`mrinets.physics.dipole`), but
the dipole kernel ``D(k)`` vanishes on a double cone in k-space, so ``chi``
cannot be obtained by plain division. Two classic answers live here: a
one-shot thresholded division (TKD) and an iterative, magnitude-weighted
total-variation reconstruction solved by ADMM. Both return ``chi`` in the unit
of the field (ppm in, ppm out), float32, zero outside the mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.fft as sfft
from numpy.typing import ArrayLike

from mrinets.physics.dipole import (
    PadArg,
    _as_direction,
    _as_mask,
    _as_volume,
    _as_voxel_size,
    _DipoleGrid,
    _frequencies,
)

__all__ = ["tkd", "tkd_correction_factor", "tv_inversion", "gradient_weights", "QsmReconstructor"]


def _tkd_inverse(kernel: np.ndarray, threshold: float) -> np.ndarray:
    """``1/D`` where ``|D| >= threshold``, else ``sign(D)/threshold`` (0 where D = 0)."""
    safe = np.where(np.abs(kernel) < threshold, np.sign(kernel) * np.float32(threshold), kernel)
    inverse = np.zeros_like(kernel)
    np.divide(1.0, safe, out=inverse, where=safe != 0)
    return inverse


def _check_threshold(threshold: float) -> float:
    if not 0.0 < threshold < 2.0 / 3.0:
        raise ValueError(f"threshold must lie in (0, 2/3), the range of |D|, got {threshold!r}")
    return float(threshold)


def tkd_correction_factor(
    shape: Sequence[int],
    *,
    voxel_size: ArrayLike = (1.0, 1.0, 1.0),
    b0_dir: ArrayLike = (0.0, 0.0, 1.0),
    threshold: float = 0.19,
    pad: PadArg = 0,
) -> float:
    """Fraction of a uniform susceptibility that TKD recovers (Schweser 2013).

    The origin value of TKD's point spread function, ``c = mean_k D D_t^{-1}``
    over the FFT grid :func:`tkd` uses for ``shape``: about 0.77 for threshold
    0.19 and cubic voxels (0.83 for uniformly spread k-space directions).
    """
    ops = _DipoleGrid.build(tuple(int(n) for n in shape), voxel_size, b0_dir, pad)
    return ops.full_grid_mean(ops.kernel * _tkd_inverse(ops.kernel, _check_threshold(threshold)))


def _tkd(field: np.ndarray, inside: np.ndarray, ops: _DipoleGrid, threshold: float, correct: bool) -> np.ndarray:
    inverse = _tkd_inverse(ops.kernel, threshold)
    if correct:
        inverse /= np.float32(ops.full_grid_mean(ops.kernel * inverse))
    spectrum = sfft.rfftn(ops.embed(np.where(inside, field, 0)), workers=-1)
    spectrum *= inverse
    chi = ops.crop(sfft.irfftn(spectrum, s=ops.grid, workers=-1))
    chi *= inside
    return chi.astype(np.float32, copy=False)


def tkd(
    field: ArrayLike,
    mask: ArrayLike,
    *,
    voxel_size: ArrayLike = (1.0, 1.0, 1.0),
    b0_dir: ArrayLike = (0.0, 0.0, 1.0),
    threshold: float = 0.19,
    correct: bool = True,
    pad: PadArg = 0,
) -> np.ndarray:
    """Susceptibility by thresholded k-space division (TKD).

    Parameters
    ----------
    field : array_like
        3D local field (after background removal), e.g. in ppm.
    mask : array_like
        Voxels where the field is known; field and result are 0 outside.
    voxel_size, b0_dir : array_like
        Voxel edge lengths in mm; B0 direction in voxel axes
        (:func:`~mrinets.physics.dipole.b0_direction_in_voxels`).
    threshold : float
        Kernel values with ``|D| < threshold`` are replaced by
        ``sign(D) * threshold`` before dividing.
    correct : bool
        Divide by :func:`tkd_correction_factor`, which undoes the
        underestimation caused by the threshold.
    pad : int, sequence of 3 int, or None
        Zeros added on each side of each axis (``None``: half the size).

    Returns
    -------
    ndarray
        float32 susceptibility map in the unit of ``field``, zero outside ``mask``.

    Notes
    -----
    .. math::

        \\chi = \\frac{1}{c}\\, \\mathcal{F}^{-1}\\{ D_t^{-1}(\\mathbf{k})\\, \\mathcal{F}\\{f\\} \\},
        \\quad D_t^{-1} = \\begin{cases} 1/D & |D| \\ge t \\\\ \\operatorname{sign}(D)/t & |D| < t \\end{cases}

    Replacing ``D`` by ``t`` near the magic-angle cone damps those
    frequencies, which underestimates susceptibility; Schweser et al. showed
    that the underestimation of extended structures is the value at the
    origin of the point spread function ``F^{-1}{D D_t^{-1}}``, i.e. the
    k-space mean ``c = mean(D D_t^{-1})`` (about 0.77 for t = 0.19), and
    correct by dividing by ``c``. ``D_t^{-1}(0) = 0``: the mean of ``chi`` is
    not determined.

    References
    ----------
    Shmueli K, de Zwart JA, van Gelderen P, Li TQ, Dodd SJ, Duyn JH. Magnetic
    susceptibility mapping of brain tissue in vivo using MRI phase data. Magn
    Reson Med 2009;62:1510-1522.

    Schweser F, Deistung A, Sommer K, Reichenbach JR. Toward online
    reconstruction of quantitative susceptibility maps: superfast dipole
    inversion. Magn Reson Med 2013;69:1582-1594.
    """
    field = _as_volume(field, "field")
    inside = _as_mask(mask, field.shape)
    ops = _DipoleGrid.build(field.shape, voxel_size, b0_dir, pad)
    return _tkd(field, inside, ops, _check_threshold(threshold), correct)


def _along(axis: int, start: int | None, stop: int | None) -> tuple[slice, ...]:
    return (slice(None),) * axis + (slice(start, stop),)


def _forward_difference(volume: np.ndarray, axis: int, h: float, out: np.ndarray) -> np.ndarray:
    """Periodic ``(x[j+1] - x[j]) / h`` along ``axis`` into ``out`` (no temporaries)."""
    np.subtract(volume[_along(axis, 1, None)], volume[_along(axis, None, -1)], out=out[_along(axis, None, -1)])
    np.subtract(volume[_along(axis, None, 1)], volume[_along(axis, -1, None)], out=out[_along(axis, -1, None)])
    out *= np.float32(1.0 / h)
    return out


def _add_backward_difference(part: np.ndarray, axis: int, h: float, out: np.ndarray, work: np.ndarray) -> None:
    """``out += (p[j-1] - p[j]) / h``, the adjoint of :func:`_forward_difference`."""
    np.subtract(part[_along(axis, None, -1)], part[_along(axis, 1, None)], out=work[_along(axis, 1, None)])
    np.subtract(part[_along(axis, -1, None)], part[_along(axis, None, 1)], out=work[_along(axis, None, 1)])
    work *= np.float32(1.0 / h)
    out += work


def _gradient_symbol(grid: Sequence[int], voxel_size: Sequence[float]) -> np.ndarray:
    """Half-spectrum of ``grad^T grad``: sum over axes of ``(2 - 2 cos(2 pi k h)) / h^2``."""
    total = np.float32(0.0)
    for k, h in zip(_frequencies(grid, voxel_size, real=True), voxel_size):
        total = total + (2.0 - 2.0 * np.cos(2.0 * np.pi * k * h)).astype(np.float32) / np.float32(h * h)
    return total


def gradient_weights(
    magnitude: ArrayLike,
    mask: ArrayLike,
    *,
    voxel_size: ArrayLike = (1.0, 1.0, 1.0),
    edge_fraction: float = 0.3,
) -> np.ndarray:
    """Binary edge mask of the magnitude image for morphology-enabled TV (MEDI).

    Parameters
    ----------
    magnitude : array_like
        3D magnitude image on the grid of the field.
    mask : array_like
        Brain mask; the edge threshold is taken over its voxels.
    voxel_size : array_like
        Voxel edge lengths in mm.
    edge_fraction : float
        Fraction of gradient components (3 per voxel in ``mask``) counted as
        edges; MEDI's default ``percentage = 0.9`` of voxels equals 0.3 of
        components.

    Returns
    -------
    ndarray
        float32, shape (3, X, Y, Z): 0 where the magnitude gradient along that
        axis is among the ``edge_fraction`` largest (an anatomical edge, where
        susceptibility may jump), 1 elsewhere.

    References
    ----------
    Liu T, Liu J, de Rochefort L, et al. Morphology enabled dipole inversion
    (MEDI) from a single-angle acquisition. Magn Reson Med 2011;66:777-783.
    """
    mag = _as_volume(magnitude, "magnitude")
    inside = _as_mask(mask, mag.shape)
    if not 0.0 <= edge_fraction < 1.0:
        raise ValueError(f"edge_fraction must lie in [0, 1), got {edge_fraction!r}")
    masked = mag * inside
    parts = np.empty((3, *mag.shape), dtype=np.float32)
    for axis, h in enumerate(_as_voxel_size(voxel_size)):
        np.abs(_forward_difference(masked, axis, h, parts[axis]), out=parts[axis])
    level = np.quantile(parts[:, inside], 1.0 - edge_fraction) if edge_fraction > 0 else np.inf
    return (parts <= level).astype(np.float32)


def _data_weights(magnitude: ArrayLike | None, inside: np.ndarray) -> np.ndarray:
    """Data-fidelity weights: magnitude (proportional to phase SNR), mean 1 in the mask, 0 outside."""
    if magnitude is None:
        return inside.astype(np.float32)
    mag = np.abs(_as_volume(magnitude, "magnitude"))
    if mag.shape != inside.shape:
        raise ValueError(f"magnitude of shape {mag.shape} does not match the field shape {inside.shape}")
    scale = float(mag[inside].mean())
    if scale <= 0:
        raise ValueError("magnitude is zero everywhere inside the mask")
    return np.where(inside, mag / np.float32(scale), 0).astype(np.float32)


def _tv_admm(
    field: np.ndarray,
    inside: np.ndarray,
    ops: _DipoleGrid,
    magnitude: ArrayLike | None,
    lam: float,
    mu: float | None,
    max_iter: int,
    tol: float,
) -> np.ndarray:
    vs, grid, kernel = ops.voxel_size, ops.grid, ops.kernel
    # ADMM penalties: 1 for the field split (the data weights have mean 1) and
    # mu for the gradient split, which FANSI ties to lam (mu = 100 lam)
    mu_grad = np.float32(100.0 * lam if mu is None else mu)
    weights2 = ops.embed(_data_weights(magnitude, inside)) ** 2
    weighted_field = weights2 * ops.embed(np.where(inside, field, 0))
    inv_v = (1.0 / (weights2 + 1.0)).astype(np.float32)
    del weights2
    # soft-threshold levels lam M / mu per gradient component (M = 1: plain TV)
    if magnitude is None:
        levels = [np.float32(lam / mu_grad)] * 3
    else:
        edges = np.ones((3, *grid), dtype=np.float32)
        edges[(slice(None), *ops.inner)] = gradient_weights(magnitude, inside, voxel_size=vs)
        levels = list(edges * np.float32(lam / mu_grad))
    denom = mu_grad * _gradient_symbol(grid, vs) + kernel * kernel
    denom[0, 0, 0] = 1.0  # chi's mean is free (D(0) = 0); the numerator is 0 there
    inv_denom = (1.0 / denom).astype(np.float32)
    del denom

    chi = np.zeros(grid, dtype=np.float32)
    dual = [np.zeros(grid, dtype=np.float32) for _ in range(3)]  # s, scaled dual of z = grad chi
    split_gap = [np.zeros(grid, dtype=np.float32) for _ in range(3)]  # z - s
    v = ops.embed(np.where(inside, field, 0))
    t = np.zeros(grid, dtype=np.float32)
    work, grad = np.empty(grid, dtype=np.float32), np.empty(grid, dtype=np.float32)
    for _ in range(max_iter):
        rhs = np.zeros(grid, dtype=np.float32)
        for axis, h in enumerate(vs):
            _add_backward_difference(split_gap[axis], axis, h, rhs, work)
        rhs *= mu_grad
        np.subtract(v, t, out=work)
        spectrum = sfft.rfftn(work, workers=-1)
        spectrum *= kernel
        spectrum += sfft.rfftn(rhs, workers=-1)
        spectrum *= inv_denom
        new_chi = sfft.irfftn(spectrum, s=grid, workers=-1)
        spectrum *= kernel
        dchi = sfft.irfftn(spectrum, s=grid, workers=-1)
        for axis, h in enumerate(vs):
            _forward_difference(new_chi, axis, h, grad)
            grad += dual[axis]  # grad chi + s
            np.clip(grad, -levels[axis], levels[axis], out=dual[axis])  # s + grad chi - z
            np.subtract(grad, dual[axis], out=split_gap[axis])  # z: soft threshold of grad
            split_gap[axis] -= dual[axis]
        dchi += t  # D chi + t
        np.add(weighted_field, dchi, out=v)  # v = (W^2 f + D chi + t) / (W^2 + 1)
        v *= inv_v
        np.subtract(dchi, v, out=t)  # t + D chi - v
        np.subtract(new_chi, chi, out=work)
        change = float(np.linalg.norm(work)) / max(float(np.linalg.norm(new_chi)), 1e-30)
        chi = new_chi
        if change < tol:
            break
    out = ops.crop(chi)
    out *= inside
    return out.astype(np.float32, copy=False)


def _check_tv(lam: float, mu: float | None, max_iter: int, tol: float) -> None:
    if not lam > 0:
        raise ValueError(f"lam must be positive, got {lam!r}")
    if mu is not None and not mu > 0:
        raise ValueError(f"mu must be positive, got {mu!r}")
    if int(max_iter) < 1:
        raise ValueError(f"max_iter must be at least 1, got {max_iter!r}")
    if not tol >= 0:
        raise ValueError(f"tol must be non-negative, got {tol!r}")


def tv_inversion(
    field: ArrayLike,
    mask: ArrayLike,
    *,
    voxel_size: ArrayLike = (1.0, 1.0, 1.0),
    b0_dir: ArrayLike = (0.0, 0.0, 1.0),
    magnitude: ArrayLike | None = None,
    lam: float = 1e-3,
    mu: float | None = None,
    max_iter: int = 100,
    tol: float = 1e-3,
    pad: PadArg = 0,
) -> np.ndarray:
    """Susceptibility by magnitude-weighted total-variation inversion (ADMM).

    Parameters
    ----------
    field : array_like
        3D local field, in ppm for the default ``lam``.
    mask : array_like
        Voxels where the field is known; data outside get zero weight and the
        result is 0 there.
    voxel_size, b0_dir : array_like
        Voxel edge lengths in mm; B0 direction in voxel axes.
    magnitude : array_like, optional
        Magnitude image (e.g. the echo-combined magnitude). It weights the
        data term (phase noise falls as the magnitude rises) and, through
        :func:`gradient_weights`, frees the TV penalty on anatomical edges.
        Without it the weights are 1 in the mask and the TV is plain.
    lam : float
        TV weight, in the unit of the field times mm (the default suits
        fields in ppm with noise of a few ppb; scale it with the field's unit).
    mu : float, optional
        ADMM penalty of the gradient split; default ``100 * lam``.
    max_iter : int
        Maximum number of ADMM iterations (each costs four real FFTs).
    tol : float
        Stop when the relative change of ``chi`` between iterations is below.
    pad : int, sequence of 3 int, or None
        Zeros added on each side of each axis (``None``: half the size).

    Returns
    -------
    ndarray
        float32 susceptibility in the unit of ``field``, zero outside ``mask``.

    Notes
    -----
    Solves

    .. math:: \\min_\\chi \\tfrac12 \\| W (D\\chi - f) \\|_2^2 + \\lambda \\| M \\nabla\\chi \\|_1

    with ``W`` the normalised magnitude in the mask (0 outside) and ``M``
    the binary non-edge mask, by ADMM on the splits ``z = grad chi`` and
    ``v = D chi`` (linear, weighted FANSI). Every sub-problem is closed-form:
    ``chi`` by one division in k-space (``grad`` is a periodic forward
    difference, diagonal in k-space), ``z`` by soft thresholding with
    ``lam M / mu``, ``v`` by a voxel-wise weighted average. Float32 throughout.

    References
    ----------
    Milovic C, Bilgic B, Zhao B, Acosta-Cabronero J, Tejos C. Fast nonlinear
    susceptibility inversion with variational regularization. Magn Reson Med
    2018;80:814-821.

    Liu T, Liu J, de Rochefort L, et al. Morphology enabled dipole inversion
    (MEDI) from a single-angle acquisition. Magn Reson Med 2011;66:777-783.
    """
    field = _as_volume(field, "field")
    inside = _as_mask(mask, field.shape)
    _check_tv(lam, mu, max_iter, tol)
    ops = _DipoleGrid.build(field.shape, voxel_size, b0_dir, pad)
    return _tv_admm(field, inside, ops, magnitude, float(lam), mu, int(max_iter), float(tol))


class QsmReconstructor:
    """Dipole inversion model, built once and run on many field maps.

    Parameters
    ----------
    method : {"tkd", "tv"}
        :func:`tkd` or :func:`tv_inversion`.
    **params
        Options of that function, checked here: ``threshold``, ``correct``,
        ``pad`` for TKD; ``lam``, ``mu``, ``max_iter``, ``tol``, ``pad`` for TV.

    Notes
    -----
    The padded FFT grid and dipole kernel depend only on the grid, voxel
    size, B0 direction and padding: they are computed on the first
    :meth:`run` and reused while later volumes share that geometry.

    Examples
    --------
    >>> model = QsmReconstructor("tkd", threshold=0.19)
    >>> field = np.zeros((16, 16, 16), np.float32)
    >>> chi = model.run(field, field == 0, voxel_size=(1, 1, 1), b0_dir=(0, 0, 1))
    >>> chi.shape, chi.dtype
    ((16, 16, 16), dtype('float32'))
    """

    _DEFAULTS: dict[str, dict[str, object]] = {
        "tkd": {"threshold": 0.19, "correct": True, "pad": 0},
        "tv": {"lam": 1e-3, "mu": None, "max_iter": 100, "tol": 1e-3, "pad": 0},
    }

    def __init__(self, method: str = "tkd", **params: object) -> None:
        if method not in self._DEFAULTS:
            raise ValueError(f"method must be one of {sorted(self._DEFAULTS)}, got {method!r}")
        unknown = sorted(set(params) - set(self._DEFAULTS[method]))
        if unknown:
            raise ValueError(f"unknown option(s) for method {method!r}: {', '.join(unknown)}")
        self.method = method
        self.params = {**self._DEFAULTS[method], **params}
        p = self.params
        if method == "tkd":
            _check_threshold(p["threshold"])  # type: ignore[arg-type]
        else:
            _check_tv(p["lam"], p["mu"], p["max_iter"], p["tol"])  # type: ignore[arg-type]
        self._key: tuple | None = None
        self._grid: _DipoleGrid | None = None

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"QsmReconstructor({self.method!r}, {options})"

    def run(
        self,
        field: ArrayLike,
        mask: ArrayLike,
        *,
        voxel_size: ArrayLike,
        b0_dir: ArrayLike,
        magnitude: ArrayLike | None = None,
    ) -> np.ndarray:
        """Susceptibility map (unit of ``field``) of one local field map.

        ``voxel_size`` in mm and ``b0_dir`` in voxel axes, as for :func:`tkd`;
        ``magnitude`` is used by the TV method only.
        """
        field = _as_volume(field, "field")
        inside = _as_mask(mask, field.shape)
        p = self.params
        key = (field.shape, _as_voxel_size(voxel_size), tuple(_as_direction(b0_dir, "b0_dir")), repr(p["pad"]))
        if key != self._key:
            self._grid = _DipoleGrid.build(field.shape, voxel_size, b0_dir, p["pad"])  # type: ignore[arg-type]
            self._key = key
        ops = self._grid
        if self.method == "tkd":
            return _tkd(field, inside, ops, float(p["threshold"]), bool(p["correct"]))  # type: ignore[arg-type]
        lam, mu, max_iter, tol = p["lam"], p["mu"], p["max_iter"], p["tol"]
        return _tv_admm(field, inside, ops, magnitude, lam, mu, max_iter, tol)  # type: ignore[arg-type]
