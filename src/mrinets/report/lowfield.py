"""Side-by-side pictures of low-field, synthetic and 3 T images (axial, coronal, sagittal)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["side_by_side"]


def side_by_side(images: dict[str, np.ndarray], path: str | os.PathLike, *, voxel_mm: float = 1.0,
                 title: str | None = None) -> Path:
    """One column per image, one row per plane through the centre of the first image's foreground.

    Each image is windowed to its own 0.5-99.5th percentiles of the foreground, so that
    contrast (not scale) is compared. Written atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mrinets.io.output import atomic_path

    first = np.asarray(next(iter(images.values())), np.float32)
    fg = first > 0.1 * float(np.percentile(first, 99)) if first.any() else np.ones(first.shape, bool)
    centre = np.round(np.argwhere(fg).mean(axis=0)).astype(int) if fg.any() else np.array(first.shape) // 2
    fig, axes = plt.subplots(3, len(images), figsize=(3.2 * len(images), 9), squeeze=False)
    for col, (name, volume) in enumerate(images.items()):
        vol = np.asarray(volume, np.float32)
        inside = vol[fg] if vol.shape == fg.shape and fg.any() else vol.ravel()
        lo, hi = np.percentile(inside, [0.5, 99.5]) if inside.size else (0.0, 1.0)
        planes = (vol[:, :, centre[2]], vol[:, centre[1], :], vol[centre[0], :, :])
        for row, (plane, label) in enumerate(zip(planes, ("axial", "coronal", "sagittal"))):
            ax = axes[row, col]
            ax.imshow(plane.T, origin="lower", cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=10)
            if col == 0:
                ax.set_ylabel(label)
    if title:
        fig.suptitle(f"{title}  ({voxel_mm:g} mm grid)", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return Path(path)
