"""The NODDI signal model against numerical integration and its known limits; gradient schemes."""

import numpy as np
import pytest
from scipy.special import erf

from mrinets.physics.diffusion import (
    D_ISO,
    D_PAR,
    GradientScheme,
    ball_signal,
    kappa_from_odi,
    noddi_signal,
    odi_from_kappa,
    stick_signal,
    watson_tau,
    zeppelin_signal,
)


def _sphere_integral(b, theta, kappa, n=300):
    """Watson-weighted stick signal by brute force: Gauss-Legendre in cos(polar) x uniform azimuth."""
    t, w = np.polynomial.legendre.leggauss(n)
    phi = np.linspace(0, 2 * np.pi, 2 * n, endpoint=False)
    gn = np.sin(theta) * np.sqrt(1 - t**2)[:, None] * np.cos(phi)[None] + np.cos(theta) * t[:, None]
    density = np.exp(kappa * (t**2 - 1))
    density /= 2 * np.pi * np.sum(w * density)
    return np.sum(w[:, None] * (2 * np.pi / phi.size) * density[:, None] * np.exp(-b * D_PAR * gn**2))


@pytest.mark.parametrize("b", [700.0, 2000.0, 5000.0])
@pytest.mark.parametrize("kappa", [0.0, 1.0, 8.0, 64.0])
def test_stick_signal_matches_sphere_integral(b, kappa):
    thetas = np.array([0.0, 0.4, 1.0, np.pi / 2])
    ours = stick_signal(b, np.cos(thetas), kappa)
    brute = np.array([_sphere_integral(b, th, kappa) for th in thetas])
    np.testing.assert_allclose(ours, brute, atol=1e-4)
    assert np.max(np.abs(ours - brute)) < 1e-8  # in fact exact to quadrature precision


def test_stick_limits():
    b = np.array([1000.0, 3000.0])
    x = b * D_PAR
    powder = np.sqrt(np.pi) / (2 * np.sqrt(x)) * erf(np.sqrt(x))
    np.testing.assert_allclose(stick_signal(b, 0.3, 0.0), powder, rtol=1e-10)
    c = np.array([1.0, 0.5, 0.0])
    # Very concentrated sticks: the undispersed stick exp(-b d c^2), approached as 1/kappa.
    np.testing.assert_allclose(stick_signal(1000.0, c, 1e4), np.exp(-1000.0 * D_PAR * c**2), atol=2e-3)


def test_zeppelin_and_ball():
    assert watson_tau(0.0) == pytest.approx(1 / 3, abs=1e-12)
    assert 0.99 < watson_tau(200.0) < 1.0
    # The closed form against the moment of the density, across the series switch.
    t, w = np.polynomial.legendre.leggauss(400)
    for kappa in (5e-4, 0.09, 0.11, 1.0, 30.0):
        density = np.exp(kappa * (t**2 - 1))
        assert watson_tau(kappa) == pytest.approx(np.sum(w * density * t**2) / np.sum(w * density), abs=1e-9)
    # Without dispersion the zeppelin is a tensor with d_par along mu, d_par (1 - icvf) across.
    c = np.array([1.0, 0.0])
    tau = watson_tau(1e6)
    s = zeppelin_signal(1000.0, c, 1e6, 0.6)
    expected = np.exp(-1000 * np.array([D_PAR * 0.4 + D_PAR * 0.6 * tau, D_PAR * 0.4 + D_PAR * 0.6 * 0.5 * (1 - tau)]))
    np.testing.assert_allclose(s, expected, rtol=1e-6)
    # Full dispersion: isotropic, equal in every direction.
    s = zeppelin_signal(1000.0, np.array([1.0, 0.3, 0.0]), 0.0, 0.5)
    np.testing.assert_allclose(s, s[0])
    assert ball_signal(1000.0) == pytest.approx(np.exp(-1000 * D_ISO))


def test_odi_kappa_round_trip():
    odi = np.array([0.02, 0.1, 0.5, 0.9, 1.0])
    np.testing.assert_allclose(odi_from_kappa(kappa_from_odi(odi)), odi, atol=1e-12)
    assert kappa_from_odi(0.0) == 128.0


def test_noddi_signal_mixture_and_shapes():
    scheme = GradientScheme.from_dipy("gtab_3shell")
    rng = np.random.default_rng(0)
    icvf, isovf, odi = rng.uniform(0, 1, (3, 4, 5))
    direction = rng.normal(size=(4, 5, 3))
    s = noddi_signal(scheme, icvf, isovf, odi, direction)
    assert s.shape == (4, 5, scheme.n)
    np.testing.assert_allclose(s[..., scheme.b0_mask], 1.0)
    assert np.all((s > 0) & (s <= 1 + 1e-12))
    # Pure free water is the ball whatever the tissue parameters.
    water = noddi_signal(scheme, icvf, 1.0, odi, direction)
    np.testing.assert_allclose(water, np.broadcast_to(ball_signal(scheme.bvals), water.shape), rtol=1e-12)
    # Sign of the direction does not matter (antipodal symmetry).
    np.testing.assert_allclose(noddi_signal(scheme, icvf, isovf, odi, -direction), s, atol=1e-12)


def test_noddi_signal_by_hand():
    scheme = GradientScheme([0, 2000, 2000], [[0, 0, 0], [0, 0, 1], [1, 0, 0]])
    icvf, isovf, odi = 0.6, 0.2, 0.3
    kappa = kappa_from_odi(odi)
    c = np.array([1.0, 0.0])
    tissue = icvf * stick_signal(2000.0, c, kappa) + (1 - icvf) * zeppelin_signal(2000.0, c, kappa, icvf)
    expected = (1 - isovf) * tissue + isovf * np.exp(-2000 * D_ISO)
    s = noddi_signal(scheme, icvf, isovf, odi, [0, 0, 2.0])
    np.testing.assert_allclose(s[1:], expected, rtol=1e-12)
    assert s[1] < s[2]  # along the fibres the signal decays most


def test_scheme_shells_and_subsets():
    scheme = GradientScheme.from_dipy("gtab_3shell")
    assert scheme.shells == (1000.0, 2000.0, 3500.0)
    assert scheme.b0_mask.sum() == 1
    sub = scheme.spread_subset({1000.0: 10, 3500.0: 20}, n_b0=1)
    assert sub.n == 31 and sub.shells == (1000.0, 3500.0)
    # Greedy spreading: the closest pair in the 20-direction shell is far apart.
    v = sub.bvecs[sub.shell_values == 3500.0]
    cos = np.abs(v @ v.T) - 2 * np.eye(len(v))
    assert np.degrees(np.arccos(cos.max())) > 20
    assert scheme.with_b0(3).n == scheme.n + 2
    assert scheme.same_as(GradientScheme(scheme.bvals, -scheme.bvecs))
    assert not scheme.same_as(sub)
    again = GradientScheme.from_dict(scheme.to_dict())
    assert again.same_as(scheme)
    with pytest.raises(ValueError, match="asked"):
        scheme.spread_subset(100)


def test_scheme_rejects_bad_tables():
    with pytest.raises(ValueError, match="shape"):
        GradientScheme([0, 1000], [[0, 0, 1]])
    with pytest.raises(ValueError, match="unit"):
        GradientScheme([0, 1000], [[0, 0, 0], [0, 0, 2]])
    with pytest.raises(ValueError, match="non-negative"):
        GradientScheme([-5, 1000], [[0, 0, 0], [0, 0, 1]])


def test_scheme_from_files(tmp_path):
    np.savetxt(tmp_path / "b.bval", [[0, 1000, 1000]])
    np.savetxt(tmp_path / "b.bvec", [[0, 1, 0], [0, 0, 1], [0, 0, 0]])
    scheme = GradientScheme.from_files(tmp_path / "b.bval", tmp_path / "b.bvec", n_volumes=3)
    assert scheme.n == 3 and scheme.shells == (1000.0,)
    np.testing.assert_allclose(scheme.bvecs[1], [1, 0, 0])
