"""Whole-volume prediction in bounded memory with MONAI's sliding-window inference."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from mrinets.training.engine import resolve_device

__all__ = ["predict_volume"]


def predict_volume(
    model: nn.Module,
    volume: np.ndarray,
    *,
    roi_size: Sequence[int],
    overlap: float | Sequence[float] = 0.5,
    sw_batch_size: int = 2,
    device: str | torch.device = "cpu",
    mode: str = "gaussian",
) -> np.ndarray:
    """Apply ``model`` to a volume of any size, window by window.

    Parameters
    ----------
    model : nn.Module
        Maps (N, C, *roi_size) to (N, C_out, *roi_size).
    volume : ndarray
        (X, Y, Z) or (C, X, Y, Z).
    roi_size : sequence of 3 int
        Window size; volumes smaller than it are padded and cropped back.
    overlap, sw_batch_size, mode
        As in :func:`monai.inferers.sliding_window_inference` (``overlap`` for
        all axes or one per axis).

    Returns
    -------
    ndarray
        float32 (C_out, X, Y, Z).
    """
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    vol = np.asarray(volume, dtype=np.float32)
    vol = vol[None] if vol.ndim == 3 else vol
    if vol.ndim != 4:
        raise ValueError(f"volume must be (X, Y, Z) or (C, X, Y, Z), got shape {np.shape(volume)}")
    shape = vol.shape[1:]
    pad = [max(int(r) - s, 0) for r, s in zip(roi_size, shape)]
    if any(pad):
        vol = np.pad(vol, [(0, 0)] + [(0, p) for p in pad], mode="edge")
    model = model.to(dev).eval()
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(vol))[None].to(dev)
        y = sliding_window_inference(x, tuple(int(r) for r in roi_size), sw_batch_size, model, overlap=overlap,
                                     mode=mode)
    out = y[0].float().cpu().numpy()
    return np.ascontiguousarray(out[:, : shape[0], : shape[1], : shape[2]])
