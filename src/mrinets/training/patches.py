"""Patch sampling from 3D volumes, with foreground oversampling as in nnU-Net."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["PatchDataset", "sample_centres", "extract_patch"]


def _with_channels(volume: np.ndarray) -> np.ndarray:
    return volume[None] if volume.ndim == 3 else volume


def sample_centres(
    shape: Sequence[int],
    n: int,
    *,
    rng: np.random.Generator,
    foreground: np.ndarray | None = None,
    foreground_fraction: float = 0.33,
) -> np.ndarray:
    """``n`` patch centres (n, 3): a share on foreground voxels, the rest uniform.

    With ``foreground`` given and non-empty, ``round(n * foreground_fraction)``
    centres are foreground voxels drawn uniformly; this keeps rare lesions in
    the training batches.
    """
    if not 0 <= foreground_fraction <= 1:
        raise ValueError(f"foreground_fraction must be in [0, 1], got {foreground_fraction}")
    shape = np.asarray(shape[-3:])
    n_fg = 0
    if foreground is not None and foreground.any():
        n_fg = int(round(n * foreground_fraction))
    centres = rng.integers(0, shape, size=(n - n_fg, 3))
    if n_fg:
        fg = np.argwhere(foreground)
        centres = np.vstack([centres, fg[rng.integers(0, len(fg), n_fg)]])
    return centres[rng.permutation(n)]


def extract_patch(volume: np.ndarray, centre: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """Patch of ``size`` centred on ``centre`` from (C, X, Y, Z), zero-padded where it leaves the volume."""
    vol = _with_channels(volume)
    size = np.asarray(size)
    start = np.asarray(centre) - size // 2
    out = np.zeros((vol.shape[0], *size), dtype=vol.dtype)
    src_lo = np.maximum(start, 0)
    src_hi = np.minimum(start + size, vol.shape[1:])
    dst_lo = src_lo - start
    dst_hi = dst_lo + (src_hi - src_lo)
    out[(slice(None), *[slice(a, b) for a, b in zip(dst_lo, dst_hi)])] = \
        vol[(slice(None), *[slice(a, b) for a, b in zip(src_lo, src_hi)])]
    return out


class PatchDataset(Dataset):
    """Aligned random patches of every array of each subject.

    Parameters
    ----------
    subjects : list of dict
        Each maps names to arrays (X, Y, Z) or (C, X, Y, Z) sharing one grid.
    patch_size : sequence of 3 int
    samples_per_subject : int
    foreground_key : str, optional
        Array whose non-zero voxels get ``foreground_fraction`` of the centres.
    seed : int
        Patch ``i`` is the same on every pass and every machine.
    transform : callable, optional
        ``transform(patch_dict, rng) -> patch_dict`` (augmentation), given a
        generator seeded per item so that it is reproducible.
    """

    def __init__(
        self,
        subjects: list[dict[str, np.ndarray]],
        patch_size: Sequence[int],
        samples_per_subject: int,
        *,
        foreground_key: str | None = None,
        foreground_fraction: float = 0.33,
        seed: int = 0,
        transform: Callable[[dict[str, np.ndarray], np.random.Generator], dict[str, np.ndarray]] | None = None,
    ) -> None:
        if not subjects:
            raise ValueError("subjects must not be empty")
        if samples_per_subject < 1:
            raise ValueError(f"samples_per_subject must be at least 1, got {samples_per_subject}")
        self.subjects = subjects
        self.patch_size = tuple(int(s) for s in patch_size)
        self.transform = transform
        self.seed = seed
        self.index: list[tuple[int, np.ndarray]] = []
        rng = np.random.default_rng(seed)
        for i, subject in enumerate(subjects):
            grid = _with_channels(next(iter(subject.values()))).shape[1:]
            fg = None if foreground_key is None else _with_channels(subject[foreground_key]).any(axis=0)
            for c in sample_centres(grid, samples_per_subject, rng=rng, foreground=fg,
                                    foreground_fraction=foreground_fraction):
                self.index.append((i, c))

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        i, centre = self.index[item]
        patch = {k: extract_patch(v, centre, self.patch_size).astype(np.float32) for k, v in self.subjects[i].items()}
        if self.transform is not None:
            patch = self.transform(patch, np.random.default_rng([self.seed, item]))
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in patch.items()}
