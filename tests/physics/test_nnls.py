"""The batch NNLS solver against scipy's active-set NNLS, voxel by voxel."""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls

from mrinets.physics.diffusion.nnls import nnls_batch


def test_batch_solution_is_scipys_for_every_row():
    rng = np.random.default_rng(0)
    a = rng.random((30, 12))
    truth = np.maximum(rng.normal(0.0, 1.0, (50, 12)), 0.0)
    y = truth @ a.T + rng.normal(0.0, 0.01, (50, 30))
    ours = nnls_batch(a, y, max_iter=20000, tol=1e-12)
    theirs = np.stack([nnls(a, row)[0] for row in y])
    assert ours.min() >= 0.0
    assert np.abs(ours - theirs).max() < 1e-6  # measured 3e-11


def test_tolerance_stops_early_and_a_fixed_count_runs_every_iteration():
    rng = np.random.default_rng(1)
    a = rng.random((30, 12))
    y = np.maximum(rng.normal(0.0, 1.0, (5, 12)), 0.0) @ a.T
    loose = nnls_batch(a, y, max_iter=5000, tol=1e-3)
    fixed = nnls_batch(a, y, max_iter=5000, tol=0.0)
    assert not np.array_equal(loose, fixed)
    assert np.abs(loose - fixed).max() < 0.05 * fixed.max()
