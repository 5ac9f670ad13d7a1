"""Dice, lesion-wise detection and volume agreement."""

from __future__ import annotations

import numpy as np
import pytest

from mrinets.metrics.segmentation import ERROR_KINDS, dice, lesion_detection, volume_agreement


def _blobs(shape, centres, radius):
    grid = np.indices(shape).transpose(1, 2, 3, 0)
    out = np.zeros(shape, bool)
    for c in centres:
        out |= ((grid - np.asarray(c)) ** 2).sum(-1) <= radius ** 2
    return out


def test_dice_values():
    a = np.zeros((10, 10, 10), bool)
    a[2:6, 2:6, 2:6] = True
    b = np.zeros_like(a)
    b[4:8, 2:6, 2:6] = True
    assert dice(a, a) == 1.0
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(np.zeros_like(a), np.zeros_like(a)) == 1.0
    assert dice(a, np.zeros_like(a)) == 0.0
    with pytest.raises(ValueError):
        dice(a, a[:5])


def test_lesion_detection_counts_touching_components():
    truth = _blobs((40, 40, 40), [(8, 8, 8), (30, 30, 30), (8, 30, 20)], 3)
    pred = _blobs((40, 40, 40), [(9, 8, 8), (30, 8, 30)], 2)
    scores = lesion_detection(pred, truth)
    assert scores["n_true"] == 3 and scores["n_pred"] == 2
    assert scores["tpr"] == pytest.approx(1 / 3)
    assert scores["fpr"] == pytest.approx(1 / 2)
    assert lesion_detection(truth, truth)["f1"] == 1.0


def test_lesion_detection_splits_voxel_errors_by_whether_the_lesion_was_found():
    truth = np.zeros((20, 20, 20), bool)
    truth[2:6, 2:6, 2:6] = True  # found, but the prediction sits one voxel off along x
    truth[10:12, 10:12, 10:12] = True  # missed entirely
    pred = np.zeros_like(truth)
    pred[3:7, 2:6, 2:6] = True
    pred[14:16, 14:16, 14:16] = True  # a false-positive lesion
    scores = lesion_detection(pred, truth)
    assert (scores["missed_voxels"], scores["edge_fn_voxels"]) == (8, 16)
    assert (scores["fp_lesion_voxels"], scores["edge_fp_voxels"]) == (8, 16)
    perfect = lesion_detection(truth, truth)
    assert sum(perfect[f"{k}_voxels"] for k in ERROR_KINDS) == 0


def test_volume_agreement_bias_and_correlation():
    true = np.array([1.0, 5.0, 10.0, 20.0])
    out = volume_agreement(true + 2.0, true)
    assert out["bias_ml"] == pytest.approx(2.0)
    assert out["pearson_r"] == pytest.approx(1.0)
    assert out["loa_low_ml"] == pytest.approx(2.0) and out["loa_high_ml"] == pytest.approx(2.0)
    assert np.isnan(volume_agreement([1.0, 1.0], [2.0, 3.0])["pearson_r"])
