"""Segmentation measures: voxel overlap, lesion-wise detection, volume agreement.

Lesions are 3D connected components (26-connectivity). A true lesion is
detected when any predicted voxel touches it; a predicted lesion is a false
positive when it touches no true lesion (as in the WMH segmentation challenge,
Kuijf et al., IEEE TMI 2019).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["ERROR_KINDS", "dice", "lesion_detection", "volume_agreement"]

# The voxel errors lesion_detection splits out (``<kind>_voxels``).
ERROR_KINDS = ("missed", "edge_fn", "fp_lesion", "edge_fp")

_FULL = np.ones((3, 3, 3), bool)


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice overlap of two masks; 1.0 when both are empty."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if pred.shape != truth.shape:
        raise ValueError(f"shapes differ: {pred.shape} and {truth.shape}")
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int((pred & truth).sum()) / total


def lesion_detection(pred: np.ndarray, truth: np.ndarray, *, min_voxels: int = 1) -> dict[str, float]:
    """Lesion-wise true-positive rate, false-positive share and F1, and where the voxel errors lie.

    Returns
    -------
    dict
        ``tpr`` (detected true lesions / true lesions), ``fpr`` (predicted
        lesions touching no true lesion / predicted lesions), ``f1``, and the
        counts ``n_true`` and ``n_pred``. Components smaller than
        ``min_voxels`` are ignored on both sides. The voxel errors, split
        by whether the lesion was found (every component counts here):
        ``missed_voxels`` (in true lesions the prediction never touches),
        ``edge_fn_voxels`` (the rest of the false negatives),
        ``fp_lesion_voxels`` (in predicted lesions touching no true lesion)
        and ``edge_fp_voxels`` (the rest of the false positives).
    """
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if pred.shape != truth.shape:
        raise ValueError(f"shapes differ: {pred.shape} and {truth.shape}")
    true_lab, n_true = ndimage.label(truth, _FULL)
    pred_lab, n_pred = ndimage.label(pred, _FULL)
    true_sizes = np.bincount(true_lab.ravel(), minlength=n_true + 1)
    pred_sizes = np.bincount(pred_lab.ravel(), minlength=n_pred + 1)
    true_ids = np.flatnonzero(true_sizes[1:] >= min_voxels) + 1
    pred_ids = np.flatnonzero(pred_sizes[1:] >= min_voxels) + 1
    hit_true = np.unique(true_lab[pred & (true_lab > 0)])
    hit_pred = np.unique(pred_lab[truth & (pred_lab > 0)])
    tp = int(np.isin(true_ids, hit_true).sum())
    fp = int((~np.isin(pred_ids, hit_pred)).sum())
    tpr = tp / len(true_ids) if len(true_ids) else 1.0
    fpr = fp / len(pred_ids) if len(pred_ids) else 0.0
    precision = 1.0 - fpr
    f1 = 0.0 if tpr + precision == 0 else 2 * tpr * precision / (tpr + precision)
    missed = int((np.isin(true_lab, hit_true, invert=True) & truth).sum())
    fp_lesion = int((np.isin(pred_lab, hit_pred, invert=True) & pred).sum())
    return {"tpr": tpr, "fpr": fpr, "f1": f1, "n_true": int(len(true_ids)), "n_pred": int(len(pred_ids)),
            "missed_voxels": missed, "edge_fn_voxels": int((truth & ~pred).sum()) - missed,
            "fp_lesion_voxels": fp_lesion, "edge_fp_voxels": int((pred & ~truth).sum()) - fp_lesion}


def volume_agreement(pred_ml: Sequence[float], true_ml: Sequence[float]) -> dict[str, float]:
    """Pearson correlation, mean bias (pred - true) and limits of agreement over subjects (mL)."""
    pred_ml, true_ml = np.asarray(pred_ml, float), np.asarray(true_ml, float)
    if pred_ml.shape != true_ml.shape or pred_ml.ndim != 1:
        raise ValueError("pred_ml and true_ml must be 1D and of equal length")
    diff = pred_ml - true_ml
    varied = len(diff) > 1 and pred_ml.std() > 0 and true_ml.std() > 0
    corr = float(np.corrcoef(pred_ml, true_ml)[0, 1]) if varied else float("nan")
    sd = float(diff.std(ddof=1)) if len(diff) > 1 else float("nan")
    return {"pearson_r": corr, "bias_ml": float(diff.mean()), "loa_low_ml": float(diff.mean() - 1.96 * sd),
            "loa_high_ml": float(diff.mean() + 1.96 * sd), "n": int(len(diff))}
