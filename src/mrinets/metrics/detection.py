"""Cluster-wise detection measures for small lesions (microbleeds): TPR, FP per subject, precision, F1.

A cluster is an instance label (or, for a binary map, a 26-connected
component). A true cluster is detected when any predicted voxel touches it; a
predicted cluster is a false positive when it touches no true cluster. Scores
over a set of subjects pool the counts (Sundaresan et al. 2023 report
cluster-wise TPR and FP per subject this way).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["clusters", "cluster_detection", "pooled_detection"]

_FULL = np.ones((3, 3, 3), bool)


def clusters(volume: np.ndarray) -> tuple[np.ndarray, int]:
    """Instance labels of ``volume``: its own labels when it holds several, else its connected components."""
    vol = np.asarray(volume)
    if vol.dtype == bool or np.unique(vol).size <= 2:
        return ndimage.label(vol != 0, _FULL)
    values = np.unique(vol[vol != 0])
    out = np.zeros(vol.shape, np.int32)
    for i, v in enumerate(values, start=1):
        out[vol == v] = i
    return out, int(len(values))


def cluster_detection(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Detection counts and rates of one subject.

    Parameters
    ----------
    pred, truth : ndarray
        Label maps (instances) or binary masks of the same shape.

    Returns
    -------
    dict
        ``n_true``, ``n_pred``, ``tp`` (true clusters touched), ``fp``
        (predicted clusters touching no true one), ``tpr`` (1.0 without true
        clusters), ``precision`` (1.0 without predictions) and ``f1``.
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"shapes differ: {pred.shape} and {truth.shape}")
    true_lab, n_true = clusters(truth)
    pred_lab, n_pred = clusters(pred)
    tp = int(np.unique(true_lab[(pred_lab > 0) & (true_lab > 0)]).size)
    matched = int(np.unique(pred_lab[(pred_lab > 0) & (true_lab > 0)]).size)
    fp = n_pred - matched
    return {"n_true": int(n_true), "n_pred": int(n_pred), "tp": tp, "fp": int(fp), **_rates(tp, n_true, fp, n_pred)}


def _rates(tp: int, n_true: int, fp: int, n_pred: int) -> dict[str, float]:
    tpr = tp / n_true if n_true else 1.0
    precision = (n_pred - fp) / n_pred if n_pred else 1.0
    f1 = 0.0 if tpr + precision == 0 else 2 * tpr * precision / (tpr + precision)
    return {"tpr": float(tpr), "precision": float(precision), "f1": float(f1)}


def pooled_detection(rows: Sequence[dict]) -> dict[str, float]:
    """Pool :func:`cluster_detection` rows over subjects: TPR, precision and F1 of the summed counts, FP/subject."""
    if not rows:
        raise ValueError("rows must not be empty")
    tp, n_true = sum(r["tp"] for r in rows), sum(r["n_true"] for r in rows)
    fp, n_pred = sum(r["fp"] for r in rows), sum(r["n_pred"] for r in rows)
    return {"subjects": len(rows), "n_true": int(n_true), "n_pred": int(n_pred), "tp": int(tp), "fp": int(fp),
            "fp_per_subject": fp / len(rows), **_rates(tp, n_true, fp, n_pred)}
