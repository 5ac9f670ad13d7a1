"""Signals to samples: normalisation, block averaging, patches at the brain's edge, splits."""

import numpy as np
import pytest

from mrinets.physics.diffusion import GradientScheme
from mrinets.pipelines.microstructure.data import (PARAMETERS, TrainingSet, block_average, extract_patches,
                                                   fill_outside, mix_in, normalise_dwi, reacquire, training_set)


def _scheme():
    return GradientScheme([0, 0, 1000, 1000, 2000], [[0, 0, 0], [0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])


def test_normalise_divides_by_mean_b0_and_drops_bad_voxels():
    dwi = np.ones((4, 4, 4, 5), np.float32)
    dwi[..., 0], dwi[..., 1] = 90.0, 110.0
    dwi[..., 2:] = [50.0, 25.0, 10.0]
    dwi[0, 0, 0, :2] = 0.0  # no signal at b=0
    dwi[1, 0, 0, 2] = 1000.0  # a spike far above S0
    mask = np.ones((4, 4, 4), bool)
    ratio, usable = normalise_dwi(dwi, _scheme(), mask)
    assert ratio.shape == (4, 4, 4, 3)
    np.testing.assert_allclose(ratio[2, 2, 2], [0.5, 0.25, 0.1], rtol=1e-6)
    assert not usable[0, 0, 0] and usable.sum() == 63
    assert ratio[1, 0, 0, 0] == pytest.approx(1.5)


def test_reacquire_gives_the_scan_noise_of_s_over_s0():
    scheme = _scheme()
    usable = np.ones((40, 40, 40), bool)
    usable[0] = False
    ratio = np.zeros((40, 40, 40, 3), np.float32)
    ratio[usable] = [0.6, 0.4, 0.2]
    s0 = np.full(usable.shape, 1000.0, np.float32)
    same, kept = reacquire(ratio, usable, s0, scheme, 0.0, np.random.default_rng(0))
    np.testing.assert_allclose(same, ratio, rtol=1e-6)
    assert np.array_equal(kept, usable)
    noisy, kept = reacquire(ratio, usable, s0, scheme, 50.0, np.random.default_rng(0))
    assert np.array_equal(kept, usable) and np.all(noisy[~usable] == 0)
    # Noise on S and on the mean of two b=0 volumes: var(S/S0) ~ (sigma/S0)^2 (1 + r^2 / 2).
    expected = 0.05 * np.sqrt(1 + np.array([0.6, 0.4, 0.2]) ** 2 / 2)
    np.testing.assert_allclose(noisy[usable].std(axis=0), expected, rtol=0.05)
    np.testing.assert_allclose(noisy[usable].mean(axis=0), [0.6, 0.4, 0.2], atol=0.01)


def test_auxiliary_noise_brings_the_downsampled_signals_to_the_target_snr():
    from mrinets.pipelines.microstructure import experiment as ex

    added = ex.auxiliary_noise(ex.TARGET_SNR)
    left = (ex.S0 / ex.AUX_SNR) ** 2 / 8  # 2x2x2 averaging of the 1.5 mm voxels
    assert added**2 + left == pytest.approx((ex.S0 / ex.TARGET_SNR) ** 2)
    assert ex.auxiliary_noise(500.0) == 0.0  # a target cleaner than the auxiliary data: nothing to add


def test_block_average():
    v = np.arange(4 * 4 * 2, dtype=np.float32).reshape(4, 4, 2)
    out = block_average(v, 2)
    assert out.shape == (2, 2, 1)
    assert out[0, 0, 0] == pytest.approx(v[:2, :2, :2].mean())
    assert block_average(np.ones((5, 5, 5, 3)), 2).shape == (2, 2, 2, 3)


def test_patches_take_the_nearest_brain_signal_outside_the_mask():
    ratio = np.random.default_rng(0).random((5, 5, 5, 2)).astype(np.float32)
    mask = np.zeros((5, 5, 5), bool)
    mask[1:4, 1:4, 1:4] = True
    mask[0, 2, 2] = True  # at the array's edge: neighbours fall beyond it
    patches = extract_patches(ratio, mask)
    centres = np.argwhere(mask)
    assert patches.shape == (mask.sum(), 27, 2)
    inner = int(np.flatnonzero((centres == [2, 2, 2]).all(1))[0])
    np.testing.assert_array_equal(patches[inner].reshape(3, 3, 3, 2), ratio[1:4, 1:4, 1:4])
    edge = int(np.flatnonzero((centres == [0, 2, 2]).all(1))[0])
    grid = patches[edge].reshape(3, 3, 3, 2)
    np.testing.assert_array_equal(grid[0, 1, 1], ratio[0, 2, 2])  # beyond the array -> the edge voxel
    np.testing.assert_array_equal(grid[2, 1, 1], ratio[1, 2, 2])  # in the mask -> itself
    # Outside the mask -> one of its nearest mask voxels, (0, 2, 2) or (1, 1, 2).
    assert any(np.array_equal(grid[1, 0, 1], ratio[v]) for v in [(0, 2, 2), (1, 1, 2)])
    filled = fill_outside(ratio, mask)
    np.testing.assert_array_equal(filled[mask], ratio[mask])
    np.testing.assert_array_equal(filled[4, 4, 4], ratio[3, 3, 3])
    with pytest.raises(ValueError, match="odd"):
        extract_patches(ratio, mask, patch=2)


def test_training_set_skips_unfitted_voxels_and_splits():
    ratio = np.random.default_rng(1).random((4, 4, 4, 3)).astype(np.float32)
    mask = np.ones((4, 4, 4), bool)
    targets = {p: np.full((4, 4, 4), 0.5, np.float32) for p in PARAMETERS}
    targets["odi"][0, 0, 0] = np.nan
    data = training_set(ratio, mask, targets)
    assert len(data) == 63 and data.targets.shape == (63, 3)
    train, val = data.split(0.2, seed=0)
    assert len(train) + len(val) == 63 and len(val) == 13


def test_mix_in_draws_the_asked_share_of_distinct_extra_samples():
    data = TrainingSet(np.zeros((300, 27, 4), np.float32), np.zeros((300, 3), np.float32))
    extra = TrainingSet(np.ones((1000, 27, 4), np.float32), np.arange(3000, dtype=np.float32).reshape(1000, 3))
    mixed = mix_in(data, extra, 0.25, seed=0)
    assert len(mixed) == 400 and np.count_nonzero(mixed.patches[:, 0, 0]) == 100
    assert len(np.unique(mixed.targets[300:, 0])) == 100
    # More than the extra set holds: all of it, once.
    assert len(mix_in(data, extra, 0.9, seed=0)) == 1300
    assert len(mix_in(data, extra, 0.0, seed=0)) == 300
    with pytest.raises(ValueError, match="share"):
        mix_in(data, extra, 1.0, seed=0)


def test_volume_inference_equals_patch_by_patch():
    import torch

    from mrinets.nets.qspace import MescNet
    from mrinets.pipelines.microstructure.model import predict_ratios

    rng = np.random.default_rng(0)
    ratio = rng.random((14, 12, 10, 31)).astype(np.float32)
    mask = np.zeros((14, 12, 10), bool)
    mask[2:13, 0:11, 3:9] = True
    mask[5, 5, 5] = False
    torch.manual_seed(0)
    net = MescNet(31).eval()
    maps = predict_ratios(net, ratio, mask, device="cpu", chunk=100)
    with torch.no_grad():
        expected = net(torch.from_numpy(extract_patches(ratio, mask))).numpy()
    for k, p in enumerate(PARAMETERS):
        np.testing.assert_allclose(maps[p][mask], expected[:, k], atol=1e-5)
        assert np.all(maps[p][~mask] == 0)
