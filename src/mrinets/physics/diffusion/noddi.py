"""NODDI signal model: Watson-dispersed sticks, a tortuous zeppelin and free water.

The normalised signal of a voxel with neurite density ``icvf``, free-water
fraction ``isovf``, orientation dispersion ``odi`` and mean direction ``mu`` is

    S/S0 = (1 - isovf) [icvf S_ic + (1 - icvf) S_ec] + isovf exp(-b d_iso)

S_ic: sticks of diffusivity d_par, oriented by a Watson density of
concentration kappa = 1 / tan(pi/2 odi) about mu. S_ec: a zeppelin with the
same dispersion, parallel diffusivity d_par and perpendicular diffusivity
d_par (1 - icvf) (tortuosity), averaged over the Watson density.

S_ic is computed exactly through the Funk-Hecke theorem: the Legendre
coefficients of the stick signal exp(-b d t^2) and of the Watson density, both
1D integrals done by Gauss-Legendre quadrature, combine term by term. The
series is truncated where both sets of coefficients are below double
precision for the b-values and concentrations of brain imaging (tested against
a 2D numerical integral over the sphere).

References
----------
Zhang H, Schneider T, Wheeler-Kingshott CA, Alexander DC. NODDI: practical in
vivo neurite orientation dispersion and density imaging of the human brain.
NeuroImage 61 (2012) 1000-1016.
"""

from __future__ import annotations

import numpy as np
from scipy.special import dawsn

from mrinets.physics.diffusion.scheme import GradientScheme

__all__ = [
    "D_PAR",
    "D_ISO",
    "KAPPA_MAX",
    "kappa_from_odi",
    "odi_from_kappa",
    "watson_tau",
    "stick_signal",
    "zeppelin_signal",
    "ball_signal",
    "noddi_signal",
]

D_PAR = 1.7e-3  # mm^2/s, intrinsic neurite diffusivity (NODDI's fixed value)
D_ISO = 3.0e-3  # mm^2/s, free water at body temperature
KAPPA_MAX = 128.0  # odi ~ 0.005: beyond this the sticks are parallel for any b-value used in vivo
_L_MAX = 60  # highest Legendre degree of the series (even degrees only)
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(400)


def kappa_from_odi(odi: np.ndarray) -> np.ndarray:
    """Watson concentration of an orientation dispersion index: kappa = 1/tan(pi/2 odi), capped at KAPPA_MAX."""
    odi = np.clip(np.asarray(odi, dtype=np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore"):
        kappa = 1.0 / np.tan(0.5 * np.pi * odi)
    return np.minimum(kappa, KAPPA_MAX)


def odi_from_kappa(kappa: np.ndarray) -> np.ndarray:
    """Orientation dispersion index of a Watson concentration: odi = 2/pi arctan(1/kappa)."""
    kappa = np.asarray(kappa, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return 2.0 / np.pi * np.arctan(1.0 / kappa)


def _legendre_table(t: np.ndarray) -> np.ndarray:
    """P_l(t) for l = 0, 2, ..., _L_MAX, shape (L, *t.shape)."""
    out = np.empty((_L_MAX // 2 + 1, *t.shape))
    p_prev, p = np.ones_like(t), t
    out[0] = p_prev
    for l in range(1, _L_MAX):
        p_prev, p = p, ((2 * l + 1) * t * p - l * p_prev) / (l + 1)
        if (l + 1) % 2 == 0:
            out[(l + 1) // 2] = p
    return out


_P_NODES = _legendre_table(_NODES)  # (L, Q)
_DEGREES = np.arange(0, _L_MAX + 1, 2)


def _watson_density(kappa: np.ndarray) -> np.ndarray:
    """Watson density on the quadrature nodes, per unit solid angle, shape (K, Q)."""
    unnorm = np.exp(np.asarray(kappa, dtype=np.float64)[:, None] * (_NODES**2 - 1.0))
    return unnorm / (2.0 * np.pi * (unnorm @ _WEIGHTS))[:, None]


def watson_tau(kappa: np.ndarray) -> np.ndarray:
    """<(n . mu)^2> under a Watson density: 1/3 for kappa = 0, towards 1 as kappa grows.

    Closed form 1 / (2 sqrt(kappa) F(sqrt(kappa))) - 1 / (2 kappa), F the Dawson
    integral; where the two terms would cancel, the ratio of the moments' power
    series sum_n kappa^n / n! * 2 / (2n+3) and 2 / (2n+1).
    """
    kappa = np.asarray(kappa, dtype=np.float64)
    small = kappa < 0.1
    k = np.where(small, 1.0, kappa)
    root = np.sqrt(k)
    closed = 1.0 / (2.0 * root * dawsn(root)) - 1.0 / (2.0 * k)
    n = np.arange(8)
    powers = kappa[..., None] ** n / np.cumprod(np.maximum(n, 1))
    series = np.sum(powers / (2 * n + 3), axis=-1) / np.sum(powers / (2 * n + 1), axis=-1)
    return np.where(small, series, closed)


def _legendre_factors(
    b: np.ndarray, kappa: np.ndarray, d_par: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Legendre coefficients of the stick signal per b-value and of the Watson density per kappa.

    Returned as small (L, unique values) tables with the index of each
    element's value (on the arrays as given, before any broadcasting), and
    4 pi / (2l+1) folded into the first, so that S_ic = sum_l f_l w_l P_l(c).
    """
    ub, ib = np.unique(b.reshape(-1), return_inverse=True)
    uk, ik = np.unique(kappa.reshape(-1), return_inverse=True)
    half = (2 * _DEGREES + 1) / 2.0
    f = half * ((np.exp(-np.outer(ub * d_par, _NODES**2)) * _WEIGHTS) @ _P_NODES.T)  # (Ub, L)
    w = half * ((_watson_density(uk) * _WEIGHTS) @ _P_NODES.T)  # (Uk, L)
    f *= 4.0 * np.pi / (2 * _DEGREES + 1)
    # Degrees whose products are below double precision everywhere add nothing.
    used = np.flatnonzero(np.max(np.abs(f), axis=0) * np.max(np.abs(w), axis=0) > 1e-17)
    n_used = int(used.max()) + 1 if used.size else 1
    return f[:, :n_used].T.copy(), ib.reshape(b.shape), w[:, :n_used].T.copy(), ik.reshape(kappa.shape)


def stick_signal(b: np.ndarray, cos_theta: np.ndarray, kappa: np.ndarray, *, d_par: float = D_PAR) -> np.ndarray:
    """Signal of Watson-dispersed sticks; ``b``, ``cos_theta`` (gradient . mean direction), ``kappa`` broadcast."""
    b, c, kappa = (np.asarray(a, dtype=np.float64) for a in (b, cos_theta, kappa))
    f, ib, w, ik = _legendre_factors(b, kappa, d_par)
    shape = np.broadcast_shapes(b.shape, c.shape, kappa.shape)
    c = np.broadcast_to(c, shape)
    out = np.broadcast_to(f[0][ib] * w[0][ik], shape).copy()
    p_prev, p = np.ones(shape), c
    for l in range(1, 2 * (f.shape[0] - 1)):
        p_prev, p = p, ((2 * l + 1) * c * p - l * p_prev) / (l + 1)
        if (l + 1) % 2 == 0:
            out += f[(l + 1) // 2][ib] * w[(l + 1) // 2][ik] * p
    return out


def zeppelin_signal(
    b: np.ndarray, cos_theta: np.ndarray, kappa: np.ndarray, icvf: np.ndarray, *, d_par: float = D_PAR
) -> np.ndarray:
    """Extra-neurite signal: a zeppelin with tortuous d_perp = d_par (1 - icvf), Watson-averaged."""
    b, c, kappa, icvf = (np.asarray(a, dtype=np.float64) for a in (b, cos_theta, kappa, icvf))
    d_perp = d_par * (1.0 - icvf)
    tau = watson_tau(kappa)  # before broadcasting: one value per voxel, not per measurement
    along = tau * c**2 + 0.5 * (1.0 - tau) * (1.0 - c**2)
    return np.exp(-b * (d_perp + (d_par - d_perp) * along))


def ball_signal(b: np.ndarray, *, d_iso: float = D_ISO) -> np.ndarray:
    """Free-water signal exp(-b d_iso)."""
    return np.exp(-np.asarray(b, dtype=np.float64) * d_iso)


def noddi_signal(
    scheme: GradientScheme,
    icvf: np.ndarray,
    isovf: np.ndarray,
    odi: np.ndarray,
    direction: np.ndarray,
    *,
    d_par: float = D_PAR,
    d_iso: float = D_ISO,
) -> np.ndarray:
    """Normalised NODDI signal S/S0 of every voxel on ``scheme``.

    Parameters
    ----------
    scheme : GradientScheme
    icvf, isovf, odi : array_like, shape (...)
        Neurite density, free-water fraction and orientation dispersion, in [0, 1].
    direction : array_like, shape (..., 3)
        Mean neurite direction (normalised here).

    Returns
    -------
    ndarray, shape (..., N)
        1 at b=0.

    Examples
    --------
    >>> s = GradientScheme([0, 1000], [[0, 0, 0], [0, 0, 1]])
    >>> sig = noddi_signal(s, 0.5, 0.0, 0.2, [0, 0, 1])
    >>> bool(sig[0] == 1.0 and 0 < sig[1] < 1)
    True
    """
    icvf, isovf, odi = (np.asarray(a, dtype=np.float64) for a in (icvf, isovf, odi))
    direction = np.asarray(direction, dtype=np.float64)
    shape = np.broadcast_shapes(icvf.shape, isovf.shape, odi.shape, direction.shape[:-1])
    unit = direction / np.maximum(np.linalg.norm(direction, axis=-1, keepdims=True), 1e-12)
    c = np.broadcast_to(unit, (*shape, 3)) @ scheme.bvecs.T  # (..., N)
    b = scheme.bvals
    kappa = kappa_from_odi(odi)[..., None]
    icvf_ = np.broadcast_to(icvf, shape)[..., None]
    isovf_ = np.broadcast_to(isovf, shape)[..., None]
    tissue = icvf_ * stick_signal(b, c, kappa, d_par=d_par) + (1.0 - icvf_) * zeppelin_signal(
        b, c, kappa, icvf_, d_par=d_par
    )
    return (1.0 - isovf_) * tissue + isovf_ * ball_signal(b, d_iso=d_iso)
