"""Cluster-wise detection measures against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from mrinets.metrics.detection import cluster_detection, clusters, pooled_detection


def _volume():
    return np.zeros((20, 20, 20), np.int16)


def test_two_of_three_found_and_one_false_positive():
    truth, pred = _volume(), _volume()
    truth[2:4, 2:4, 2:4] = 1
    truth[10:12, 10:12, 10:12] = 2
    truth[16, 16, 16] = 3
    pred[3, 3, 3] = 1          # touches truth 1
    pred[11:13, 11, 11] = 1    # touches truth 2 (overlaps only partly)
    pred[6, 16, 2] = 1         # touches nothing
    r = cluster_detection(pred, truth)
    assert (r["n_true"], r["n_pred"], r["tp"], r["fp"]) == (3, 3, 2, 1)
    assert r["tpr"] == pytest.approx(2 / 3)
    assert r["precision"] == pytest.approx(2 / 3)
    assert r["f1"] == pytest.approx(2 / 3)


def test_instance_labels_are_kept_apart_even_when_touching():
    truth = _volume()
    truth[5, 5, 5], truth[5, 5, 6] = 1, 2  # two touching microbleeds
    pred = _volume()
    pred[5, 5, 5] = 1
    r = cluster_detection(pred, truth)
    assert (r["n_true"], r["tp"]) == (2, 1)


def test_one_prediction_over_two_truths_counts_both_and_no_fp():
    truth, pred = _volume(), _volume()
    truth[5, 5, 5], truth[5, 5, 8] = 1, 2
    pred[5, 5, 4:10] = 1
    r = cluster_detection(pred, truth)
    assert (r["tp"], r["fp"], r["n_pred"]) == (2, 0, 1)


def test_empty_cases():
    empty = _volume()
    r = cluster_detection(empty, empty)
    assert (r["tpr"], r["precision"], r["fp"]) == (1.0, 1.0, 0)
    truth = _volume()
    truth[1, 1, 1] = 1
    assert cluster_detection(empty, truth)["tpr"] == 0.0


def test_pooled_sums_counts_over_subjects():
    rows = [{"tp": 3, "n_true": 4, "fp": 1, "n_pred": 4}, {"tp": 0, "n_true": 1, "fp": 2, "n_pred": 2}]
    p = pooled_detection(rows)
    assert p["tpr"] == pytest.approx(3 / 5)
    assert p["fp_per_subject"] == pytest.approx(1.5)
    assert p["precision"] == pytest.approx(3 / 6)
    assert p["f1"] == pytest.approx(2 * 0.6 * 0.5 / 1.1)
    with pytest.raises(ValueError):
        pooled_detection([])


def test_binary_mask_uses_26_connectivity():
    mask = np.zeros((5, 5, 5), bool)
    mask[1, 1, 1] = mask[2, 2, 2] = True  # corner neighbours: one cluster
    assert clusters(mask)[1] == 1


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="shapes differ"):
        cluster_detection(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)))
