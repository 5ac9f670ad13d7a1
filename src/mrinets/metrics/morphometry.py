"""Morphometry of real and synthetic images with one tissue classifier, and its agreement measures.

The classifier is a three-class Gaussian mixture of intensities inside a brain
mask (EM on the 1D histogram, initialised at intensity quantiles), the
textbook approach of FSL FAST without its Markov field or bias correction:
the same method is applied to the 3 T scan, the synthetic image and the raw
low-field scan, so their volume differences come from the images, not the method.

Regions are hemispheres (split at the mask's centroid along the first, left-right
axis of RAS arrays) and a central box around the centroid that holds the
lateral ventricles, so that ``csf_central`` tracks ventricular volume.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["TISSUE_ORDER", "abs_percent_difference", "brain_mask", "classify_tissue", "icc", "tissue_volumes"]

# Brightness order of CSF, GM, WM per contrast (index of the darkest class first).
TISSUE_ORDER = {"t1": ("csf", "gm", "wm"), "t2": ("wm", "gm", "csf")}
LABELS = {"csf": 1, "gm": 2, "wm": 3}


def _otsu(values: np.ndarray) -> float:
    hist, edges = np.histogram(values, bins=256)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(hist)
    mean = np.cumsum(hist * centres)
    total_w, total_m = weight[-1], mean[-1]
    w1 = total_w - weight
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean / weight - (total_m - mean) / w1) ** 2 * weight * w1
    return float(centres[int(np.nanargmax(between[:-1]))])


def brain_mask(volume: np.ndarray, voxel_size=(1.0, 1.0, 1.0), *, fraction: float = 0.5) -> np.ndarray:
    """Foreground of a skull-stripped or brain-dominated image: smoothed, above ``fraction`` x Otsu, largest
    component, holes filled."""
    vol = np.asarray(volume, np.float32)
    smooth = ndimage.gaussian_filter(vol, 1.0 / np.asarray(voxel_size, float))
    positive = smooth[smooth > 0]
    if positive.size == 0:
        return np.zeros(vol.shape, bool)
    fg = smooth > fraction * _otsu(positive)
    labels, n = ndimage.label(fg)
    if n > 1:
        fg = labels == int(np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    # Axial filling too: dark CSF open to the top or bottom slice is not a 3D hole.
    fg = np.stack([ndimage.binary_fill_holes(fg[..., k]) for k in range(fg.shape[2])], axis=-1)
    return ndimage.binary_fill_holes(fg)


def classify_tissue(volume: np.ndarray, mask: np.ndarray, contrast: str = "t1", *,
                    iterations: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Three-class Gaussian mixture of the intensities in ``mask``.

    Returns
    -------
    labels : int8 array, 0 outside, 1 CSF, 2 GM, 3 WM
    posteriors : float32 (3, X, Y, Z) for (CSF, GM, WM), zero outside
    """
    if contrast not in TISSUE_ORDER:
        raise ValueError(f"contrast must be t1 or t2, got {contrast!r}")
    inside = np.asarray(mask, bool)
    x = np.asarray(volume, np.float64)[inside]
    if x.size < 10:
        raise ValueError("the mask holds fewer than 10 voxels")
    mu = np.quantile(x, [0.15, 0.5, 0.85])
    sd = np.full(3, x.std() / 3 + 1e-6)
    w = np.full(3, 1 / 3)
    for _ in range(iterations):
        log_p = np.log(w) - np.log(sd) - 0.5 * ((x[:, None] - mu) / sd) ** 2
        log_p -= log_p.max(axis=1, keepdims=True)
        resp = np.exp(log_p)
        resp /= resp.sum(axis=1, keepdims=True)
        n = resp.sum(axis=0) + 1e-9
        w = n / n.sum()
        mu = (resp * x[:, None]).sum(axis=0) / n
        sd = np.sqrt((resp * (x[:, None] - mu) ** 2).sum(axis=0) / n) + 1e-6
    order = np.argsort(mu)
    posteriors = np.zeros((3, *inside.shape), np.float32)
    labels = np.zeros(inside.shape, np.int8)
    names = TISSUE_ORDER[contrast]
    hard = np.argmax(resp, axis=1)
    for rank, cls in enumerate(order):
        tissue = names[rank]
        posteriors[LABELS[tissue] - 1][inside] = resp[:, cls]
        labels[inside] = np.where(hard == cls, LABELS[tissue], labels[inside])
    return labels, posteriors


def tissue_volumes(labels: np.ndarray, voxel_size) -> dict[str, float]:
    """Volumes (ml) of CSF, GM and WM and of the regions: GM/WM per hemisphere and central CSF."""
    voxel_ml = float(np.prod(voxel_size)) / 1000.0
    inside = labels > 0
    if not inside.any():
        raise ValueError("no tissue is labelled")
    centre = np.array(ndimage.center_of_mass(inside))
    out = {t: float((labels == v).sum() * voxel_ml) for t, v in LABELS.items()}
    xs = np.arange(labels.shape[0])[:, None, None]
    right = np.broadcast_to(xs >= centre[0], labels.shape)  # RAS arrays: a higher first index lies to the right
    for t in ("gm", "wm"):
        out[f"{t}_left"] = float(((labels == LABELS[t]) & ~right).sum() * voxel_ml)
        out[f"{t}_right"] = float(((labels == LABELS[t]) & right).sum() * voxel_ml)
    half = 25.0 / np.asarray(voxel_size, float)  # a 50 mm box around the centroid holds the lateral ventricles
    lo = np.maximum(np.floor(centre - half).astype(int), 0)
    hi = np.ceil(centre + half).astype(int) + 1
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    out["csf_central"] = float((labels[box] == LABELS["csf"]).sum() * voxel_ml)
    return out


def abs_percent_difference(value: float, reference: float) -> float:
    """``100 |value - reference| / reference``."""
    return float(100.0 * abs(value - reference) / reference) if reference else float("nan")


def icc(a, b) -> float:
    """ICC(A,1): two-way random effects, absolute agreement, single measurement (McGraw & Wong 1996)."""
    data = np.column_stack([np.asarray(a, float), np.asarray(b, float)])
    n, k = data.shape
    if n < 2:
        return float("nan")
    grand = data.mean()
    ms_rows = k * ((data.mean(axis=1) - grand) ** 2).sum() / (n - 1)
    ms_cols = n * ((data.mean(axis=0) - grand) ** 2).sum() / (k - 1)
    resid = data - data.mean(axis=1, keepdims=True) - data.mean(axis=0, keepdims=True) + grand
    ms_err = (resid**2).sum() / ((n - 1) * (k - 1))
    denom = ms_rows + (k - 1) * ms_err + k * (ms_cols - ms_err) / n
    return float((ms_rows - ms_err) / denom) if denom else float("nan")
