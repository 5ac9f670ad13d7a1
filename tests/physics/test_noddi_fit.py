"""The AMICO-style NODDI fit: recovery of known parameters, the batched solver against scipy, inputs, real data.

Tolerances are set a little above the errors measured with these seeds (in
brackets); the limits come from the 12 x 12 atom grid, the 500 directions
and, with noise, the tensor direction.
"""

import numpy as np
import pytest
from scipy.optimize import nnls
from scipy.stats import spearmanr

from mrinets.physics.diffusion import GradientScheme, noddi_signal
from mrinets.physics.diffusion.amico import NoddiFit, NoddiModel, hemisphere_directions

S0 = 500.0


@pytest.fixture(scope="module")
def scheme():
    return GradientScheme.from_dipy("gtab_3shell")


@pytest.fixture(scope="module")
def model(scheme):
    return NoddiModel(scheme)


def _voxels(scheme, n, seed):
    """Random NODDI voxels inside the dictionary's range, random directions: (truth dict, signal)."""
    rng = np.random.default_rng(seed)
    truth = {
        "icvf": rng.uniform(0.15, 0.9, n),
        "odi": rng.uniform(0.05, 0.8, n),
        "isovf": rng.uniform(0.0, 0.4, n),
    }
    direction = rng.normal(size=(n, 3))
    truth["direction"] = direction / np.linalg.norm(direction, axis=1, keepdims=True)
    signal = S0 * noddi_signal(scheme, truth["icvf"], truth["isovf"], truth["odi"], truth["direction"])
    return truth, signal, rng


def _rician(signal, snr, rng):
    sigma = S0 / snr
    return np.abs(signal + rng.normal(0, sigma, signal.shape) + 1j * rng.normal(0, sigma, signal.shape))


def _angle_deg(a, b):
    return np.degrees(np.arccos(np.clip(np.abs(np.sum(a * b, axis=-1)), 0.0, 1.0)))


def test_hemisphere_directions_cover_the_sphere():
    directions = hemisphere_directions(500)
    probe = np.random.default_rng(0).normal(size=(20000, 3))
    probe /= np.linalg.norm(probe, axis=1, keepdims=True)
    nearest = _angle_deg(probe[:, None, :], directions[None]).min(axis=1)
    assert nearest.max() < 4.7  # [4.5]; AMICO's 500 directions: 4.6
    assert nearest.mean() < 2.5  # [2.45]


def test_cached_directions_are_handed_out_as_copies():
    first = hemisphere_directions(60)
    first[:] = 0.0
    again = hemisphere_directions(60)
    assert np.allclose(np.linalg.norm(again, axis=1), 1.0) and again.flags.writeable


def test_noiseless_recovery(model, scheme):
    truth, signal, _ = _voxels(scheme, 300, seed=0)
    fit = model.fit(signal)
    assert isinstance(fit, NoddiFit) and fit.icvf.dtype == np.float32 and fit.icvf.shape == (300,)
    for name, mean_tol, max_tol in [("icvf", 0.002, 0.02), ("isovf", 0.003, 0.035), ("odi", 0.005, 0.03)]:
        error = np.abs(getattr(fit, name) - truth[name])
        assert error.mean() < mean_tol, name  # [0.0008, 0.0018, 0.0028]
        assert error.max() < max_tol, name  # [0.013, 0.023, 0.021]
    assert _angle_deg(fit.direction, truth["direction"]).max() < 0.5  # [0.08]: the tensor axis is the fibre axis
    # the dictionary direction each voxel was fitted with
    used = model.directions[model.nearest_direction(fit.direction)]
    assert _angle_deg(used, truth["direction"]).max() < 4.7
    np.testing.assert_allclose(fit.odi, 2 / np.pi * np.arctan(1 / fit.kappa), atol=1e-6)


def test_noisy_recovery(model, scheme):
    truth, signal, rng = _voxels(scheme, 300, seed=0)
    fit = model.fit(_rician(signal, 30, rng))
    for name, mean_tol in [("icvf", 0.045), ("isovf", 0.06), ("odi", 0.05)]:
        assert np.abs(getattr(fit, name) - truth[name]).mean() < mean_tol, name  # [0.033, 0.042, 0.035]
    assert np.corrcoef(fit.icvf, truth["icvf"])[0, 1] > 0.975  # [0.988]
    assert np.corrcoef(fit.odi, truth["odi"])[0, 1] > 0.94  # [0.970]
    assert np.corrcoef(fit.isovf, truth["isovf"])[0, 1] > 0.85  # [0.900]
    coherent = truth["odi"] < 0.5
    assert np.median(_angle_deg(fit.direction, truth["direction"])[coherent]) < 5.0  # [3.1]


def _amico_steps_with_scipy(model, y, which):
    """AMICO's three solves for one normalised voxel with scipy's NNLS; (icvf, isovf, odi)."""
    a = model.dictionary[which].astype(np.float64)
    weighted = ~model.scheme.b0_mask
    n_tissue = a.shape[1] - 1
    iso = nnls(a, y)[0][-1]
    atoms = a[weighted, :n_tissue]
    atoms = atoms / np.linalg.norm(atoms, axis=0)
    tissue = np.maximum(y[weighted] - iso * a[weighted, -1], 0.0)
    # The positive elastic net 1/2||Ax - y||^2 + l1 sum(x) + l2/2 ||x||^2 is, up to a constant,
    # the NNLS 1/2||[A; sqrt(l2) I] x - [y; -l1/sqrt(l2)]||^2.
    root = np.sqrt(model.l2)
    stacked = np.vstack([atoms, root * np.eye(n_tissue)])
    picked = nnls(stacked, np.concatenate([tissue, np.full(n_tissue, -model.l1 / root)]))[0] > 0
    support = np.flatnonzero(np.append(picked, True))
    x = np.zeros(n_tissue + 1)
    x[support] = nnls(a[:, support], y)[0]
    wm = x[:-1]
    if wm.sum() == 0:  # free water only
        return 0.0, 1.0, 1.0
    kappa = wm @ model.atom_kappa / wm.sum()
    return wm @ model.atom_icvf / wm.sum(), x[-1] / x.sum(), 2 / np.pi * np.arctan(1 / kappa)


@pytest.fixture(scope="module")
def subset_model():
    """31 volumes, fewer than the 145 atoms: NNLS solutions need not be unique there."""
    return NoddiModel(GradientScheme.from_dipy("gtab_isbi2013_2shell").spread_subset({1500.0: 12, 2500.0: 18}))


@pytest.mark.parametrize("which_model", ["model", "subset_model"])
def test_batched_solve_matches_scipy_per_voxel(which_model, request):
    model = request.getfixturevalue(which_model)
    scheme = model.scheme
    _, signal, rng = _voxels(scheme, 12, seed=3)
    signal = _rician(signal, 30, rng)
    fit = model.fit(signal)
    y = np.maximum(signal / signal[:, scheme.b0_mask].mean(axis=1, keepdims=True), 0.0)
    which = model.nearest_direction(fit.direction)
    expected = np.array([_amico_steps_with_scipy(model, y[v], which[v]) for v in range(len(y))])
    np.testing.assert_allclose(np.stack([fit.icvf, fit.isovf, fit.odi], axis=1), expected, atol=1e-6)  # [3e-8]


def test_4d_and_2d_inputs_agree_and_mask(model, scheme):
    _, signal, rng = _voxels(scheme, 24, seed=4)
    signal = _rician(signal, 50, rng)
    flat = model.fit(signal)
    volume = model.fit(signal.reshape(2, 3, 4, -1))
    assert volume.icvf.shape == (2, 3, 4) and volume.direction.shape == (2, 3, 4, 3)
    for name in ("icvf", "isovf", "odi", "kappa", "fa"):
        np.testing.assert_array_equal(getattr(volume, name).reshape(-1), getattr(flat, name))

    mask = np.zeros((2, 3, 4), dtype=bool)
    mask[0, 1:, :2] = True
    masked = model.fit(signal.reshape(2, 3, 4, -1), mask=mask)
    np.testing.assert_allclose(masked.icvf[mask], volume.icvf[mask], atol=1e-6)
    assert np.all(masked.icvf[~mask] == 0) and np.all(masked.direction[~mask] == 0)


def test_unusable_voxels_are_nan_and_do_not_disturb_the_others(model, scheme):
    _, signal, rng = _voxels(scheme, 6, seed=5)
    signal = _rician(signal, 50, rng)
    reference = model.fit(signal)
    bad = signal.copy()
    bad[1, scheme.b0_mask] = 0.0  # S0 = 0
    bad[2] = 0.0  # an empty voxel
    bad[3, 5] = np.nan
    bad[4, scheme.b0_mask] = -10.0  # S0 < 0
    fit = model.fit(bad)
    for name in ("icvf", "isovf", "odi", "kappa", "fa"):
        assert np.all(np.isnan(getattr(fit, name)[1:5])), name
        np.testing.assert_allclose(getattr(fit, name)[[0, 5]], getattr(reference, name)[[0, 5]], atol=1e-6)
    assert np.all(np.isnan(fit.direction[1:5]))
    empty = model.fit(signal, mask=np.zeros(6, dtype=bool))
    assert np.all(empty.odi == 0)


def test_degenerate_dictionary_does_not_crash(subset_model):
    # Two shells leave three independent isotropic signals, so four nearly isotropic atoms
    # (odi 0.99) are dependent: some passive systems are exactly singular (17 batches here).
    scheme = subset_model.scheme
    rng = np.random.default_rng(8)
    n = 500
    icvf, odi, isovf = rng.uniform(0.1, 0.99, n), rng.uniform(0.03, 0.99, n), rng.uniform(0.0, 1.0, n)
    signal = S0 * noddi_signal(scheme, icvf, isovf, odi, rng.normal(size=(n, 3)))
    fit = subset_model.fit(signal)
    for name in ("icvf", "isovf", "odi"):
        values = getattr(fit, name)
        assert np.all(np.isfinite(values)) and values.min() >= 0 and values.max() <= 1, name


def test_input_errors_name_the_argument(model, scheme):
    signal = np.ones((2, 3, 4, scheme.n))
    with pytest.raises(ValueError, match="mask must have the spatial shape of dwi"):
        model.fit(signal, mask=np.ones((2, 3, 5), dtype=bool))
    with pytest.raises(ValueError, match="dwi must have shape"):
        model.fit(np.ones((2, 3, 4, scheme.n - 1)))
    with pytest.raises(ValueError, match="dwi must have shape"):
        model.fit(np.ones((2, 3, scheme.n)))
    weighted_only = scheme.subset(~scheme.b0_mask)
    with pytest.raises(ValueError, match="scheme has no b=0 volume"):
        NoddiModel(weighted_only)
    with pytest.raises(ValueError, match="odi_grid"):
        NoddiModel(scheme, odi_grid=[0.0, 0.5], n_directions=10)


def test_real_scan_odi_falls_where_fa_rises():
    from mrinets.data.templates import load_dipy_dwi

    image, bvals, bvecs = load_dipy_dwi("small_101D")
    fit = NoddiModel(GradientScheme(bvals, bvecs)).fit(image.data)
    assert fit.icvf.shape == image.spatial_shape
    for name in ("icvf", "isovf", "odi", "fa"):
        values = getattr(fit, name)
        assert np.all(np.isfinite(values)) and values.min() >= 0 and values.max() <= 1, name
    rho = spearmanr(fit.odi.ravel(), fit.fa.ravel()).statistic
    assert rho < -0.85  # [-0.935 over the 600 voxels]
