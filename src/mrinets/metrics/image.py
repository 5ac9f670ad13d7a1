"""Image-similarity and no-reference quality measures: SSIM, PSNR, NRMSE, PIQE.

SSIM, PSNR and NRMSE follow scikit-image's definitions (``structural_similarity``
with its defaults: 7-voxel uniform window, K1 0.01, K2 0.03, sample covariance,
mean over the volume less a half-window border), so numbers compare with papers
that used it; each also takes a mask. PIQE follows Venkatanath et al. (2015)
and MATLAB's ``piqe`` (16 x 16 blocks of the MSCN image; a block counts when
its variance exceeds 0.1, scores blockiness (an edge segment of 6 flat pixels)
and noise (centre/surround deviation)); 0 is best, 100 worst.

References
----------
Wang Z, et al. Image quality assessment: from error visibility to structural
similarity. IEEE Trans Image Process 2004;13:600-612.
Venkatanath N, et al. Blind image quality evaluation using perception based
features. Proc. 21st National Conference on Communications (NCC), 2015.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["nrmse", "piqe", "piqe_volume", "psnr", "ssim"]


def _pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, np.float64)
    truth = np.asarray(truth, np.float64)
    if pred.shape != truth.shape:
        raise ValueError(f"pred shape {pred.shape} differs from truth shape {truth.shape}")
    return pred, truth


def ssim(pred: np.ndarray, truth: np.ndarray, *, data_range: float | None = None, mask: np.ndarray | None = None,
         win_size: int = 7) -> float:
    """Mean structural similarity (scikit-image's definition); within ``mask`` when given.

    ``data_range`` defaults to the truth's max - min.
    """
    pred, truth = _pair(pred, truth)
    if data_range is None:
        data_range = float(truth.max() - truth.min())
    if not data_range > 0:
        raise ValueError("data_range must be positive (the truth is constant)")
    if min(truth.shape) < win_size:
        raise ValueError(f"every side must be at least win_size={win_size}, got shape {truth.shape}")
    ndim = truth.ndim
    n_points = win_size**ndim
    cov_norm = n_points / (n_points - 1)

    def mean(x):
        return ndimage.uniform_filter(x, size=win_size, mode="reflect")

    ux, uy = mean(pred), mean(truth)
    vx = cov_norm * (mean(pred * pred) - ux * ux)
    vy = cov_norm * (mean(truth * truth) - uy * uy)
    vxy = cov_norm * (mean(pred * truth) - ux * uy)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    smap = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    pad = (win_size - 1) // 2
    inner = tuple(slice(pad, n - pad) for n in truth.shape)
    if mask is None:
        return float(smap[inner].mean())
    inside = np.asarray(mask, bool)
    if inside.shape != truth.shape:
        raise ValueError(f"mask shape {inside.shape} differs from image shape {truth.shape}")
    if not inside.any():
        raise ValueError("mask is empty")
    return float(smap[inside].mean())


def psnr(pred: np.ndarray, truth: np.ndarray, *, data_range: float | None = None,
         mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(data_range^2 / MSE)``."""
    pred, truth = _pair(pred, truth)
    if data_range is None:
        data_range = float(truth.max() - truth.min())
    err = (pred - truth) ** 2
    mse = float(err.mean() if mask is None else err[np.asarray(mask, bool)].mean())
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))


def nrmse(pred: np.ndarray, truth: np.ndarray, *, normalization: str = "euclidean",
          mask: np.ndarray | None = None) -> float:
    """Root-mean-square error normalised as scikit-image does (``euclidean``, ``min-max`` or ``mean``)."""
    pred, truth = _pair(pred, truth)
    if mask is not None:
        inside = np.asarray(mask, bool)
        pred, truth = pred[inside], truth[inside]
    rmse = np.sqrt(np.mean((pred - truth) ** 2))
    if normalization == "euclidean":
        denom = np.sqrt(np.mean(truth * truth))
    elif normalization == "min-max":
        denom = truth.max() - truth.min()
    elif normalization == "mean":
        denom = truth.mean()
    else:
        raise ValueError(f"normalization must be euclidean, min-max or mean, got {normalization!r}")
    return float(rmse / denom)


_BLOCK = 16
_SEGMENT = 6


def piqe(image: np.ndarray) -> float:
    """PIQE score (0 best, 100 worst) of a 2D greyscale image."""
    img = np.asarray(image, np.float64)
    if img.ndim != 2:
        raise ValueError(f"PIQE needs a 2D image, got shape {img.shape}")
    if not np.all(np.isfinite(img)):
        raise ValueError("image has NaN or infinite values")
    top = float(img.max())
    if top <= 0:
        return 100.0
    rows, cols = img.shape
    img = np.pad(img, ((0, -rows % _BLOCK), (0, -cols % _BLOCK)), mode="symmetric")
    img = np.round(255 * img / top)
    sigma_g = 7 / 6
    blur = {"sigma": sigma_g, "mode": "nearest", "truncate": 3 / sigma_g}  # the 7 x 7 kernel of MATLAB and OpenCV
    mu = ndimage.gaussian_filter(img, **blur)
    sd = np.sqrt(np.abs(ndimage.gaussian_filter(img * img, **blur) - mu * mu))
    mscn = (img - mu) / (sd + 1)
    nb_r, nb_c = mscn.shape[0] // _BLOCK, mscn.shape[1] // _BLOCK
    blocks = mscn.reshape(nb_r, _BLOCK, nb_c, _BLOCK).transpose(0, 2, 1, 3).reshape(-1, _BLOCK, _BLOCK)
    var = blocks.reshape(len(blocks), -1).var(axis=1, ddof=1)
    active = var > 0.1
    blocks, var = blocks[active], var[active]
    if not len(blocks):
        return 100.0
    # Noticeable artifacts: any 6-pixel segment of an edge of the block is nearly flat.
    edges = np.stack([blocks[:, 0, :], blocks[:, :, -1], blocks[:, -1, :], blocks[:, :, 0]], axis=1)
    windows = np.lib.stride_tricks.sliding_window_view(edges, _SEGMENT, axis=2)
    impaired = (windows.std(axis=-1, ddof=1) < 0.1).any(axis=(1, 2))
    # Noise: the deviation of the two central columns against the rest (MATLAB removes columns 8, then 10).
    centre = np.concatenate([blocks[:, :, 7], blocks[:, :, 8]], axis=1).std(axis=1, ddof=1)
    surround = np.delete(blocks, [7, 9], axis=2).reshape(len(blocks), -1).std(axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.nan_to_num(centre / surround, nan=0.0)
        sigma = np.sqrt(var)
        beta = np.abs(sigma - ratio) / np.maximum(sigma, ratio)
    noisy = sigma > 2 * beta
    score = np.sum(impaired * (1 - var) + noisy * var)
    return float((score + 1) / (1 + len(blocks)) * 100)


def piqe_volume(volume: np.ndarray, mask: np.ndarray | None = None, *, min_fraction: float = 0.1) -> float:
    """Mean PIQE of the axial slices (last axis) in which ``mask`` covers at least ``min_fraction`` of the slice."""
    vol = np.asarray(volume, np.float64)
    if vol.ndim != 3:
        raise ValueError(f"volume must be 3D, got shape {vol.shape}")
    inside = np.ones(vol.shape, bool) if mask is None else np.asarray(mask, bool)
    keep = [k for k in range(vol.shape[2]) if inside[..., k].mean() >= min_fraction]
    if not keep:
        raise ValueError("no slice holds enough of the mask")
    return float(np.mean([piqe(np.clip(vol[..., k], 0, None)) for k in keep]))
