"""SSIM, PSNR, NRMSE against scikit-image; PIQE against the pypiqe reference implementation."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import normalized_root_mse, peak_signal_noise_ratio, structural_similarity

from mrinets.metrics.image import nrmse, piqe, piqe_volume, psnr, ssim


@pytest.fixture(scope="module")
def pair():
    from mrinets.data.templates import load_mni

    truth = load_mni().t1.data[50:130, 60:150, 70:110].astype(np.float64)
    rng = np.random.default_rng(0)
    return truth + rng.normal(0, 8, truth.shape), truth


def test_ssim_psnr_nrmse_match_skimage(pair):
    pred, truth = pair
    rng_ = truth.max() - truth.min()
    assert ssim(pred, truth) == pytest.approx(structural_similarity(pred, truth, data_range=rng_), rel=1e-9)
    assert ssim(pred[..., 5], truth[..., 5], data_range=255) == pytest.approx(
        structural_similarity(pred[..., 5], truth[..., 5], data_range=255), rel=1e-9)
    assert psnr(pred, truth) == pytest.approx(peak_signal_noise_ratio(truth, pred, data_range=rng_), rel=1e-9)
    for norm in ("euclidean", "min-max", "mean"):
        assert nrmse(pred, truth, normalization=norm) == pytest.approx(
            normalized_root_mse(truth, pred, normalization=norm), rel=1e-9)


def test_masked_scores_and_errors(pair):
    pred, truth = pair
    mask = truth > 60
    assert ssim(truth, truth, mask=mask) == pytest.approx(1.0)
    assert psnr(pred, truth, mask=mask, data_range=255) < psnr(truth + 0.1, truth, mask=mask, data_range=255)
    with pytest.raises(ValueError, match="shape"):
        ssim(pred[:-1], truth)
    with pytest.raises(ValueError, match="empty"):
        ssim(pred, truth, mask=np.zeros(truth.shape, bool))


def test_piqe_matches_reference_implementation(pair):
    pypiqe = pytest.importorskip("pypiqe", reason="pypiqe (bench/test extra) is not installed")
    pred, truth = pair
    rng = np.random.default_rng(1)
    for image in (truth[..., 10], pred[..., 20], np.clip(truth[..., 30] + rng.normal(0, 25, truth.shape[:2]), 0, None),
                  truth[3:70, 5:61, 15]):  # sizes that are not multiples of 16 are padded symmetrically
        assert piqe(image) == pytest.approx(pypiqe.piqe(np.ascontiguousarray(image))[0], abs=1e-6)


def test_piqe_worsens_with_noise_and_blocks_and_flat_image_is_worst(pair):
    _, truth = pair
    rng = np.random.default_rng(2)
    clean = truth[..., 20]
    scores = [piqe(np.clip(clean + rng.normal(0, s, clean.shape), 0, None)) for s in (5, 20, 80)]
    assert scores[0] < scores[1] < scores[2]
    blocky = np.kron(clean[::8, ::8], np.ones((8, 8)))[: clean.shape[0], : clean.shape[1]]
    assert piqe(blocky) > scores[0]
    assert piqe(np.zeros((32, 32))) == 100.0
    assert piqe_volume(truth) == pytest.approx(np.mean([piqe(truth[..., k]) for k in range(truth.shape[2])]))
