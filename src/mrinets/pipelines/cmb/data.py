"""Inputs of the CMB networks: the working grid, intensity standardisation and the two input channels.

Every contrast is turned into one *lesion-positive* map before the networks
see it, so one set of weights reads SWI, GRE magnitude and QSM alike: SWI and
GRE are divided by their smooth local level (which removes the receive bias
and the scanner's arbitrary scale) and turned over (``1 - I / level``: a
signal void is bright); QSM keeps its sign (paramagnetic is bright). Both are
then divided by the robust spread (1.4826 MAD) of the brain, so noise and
texture have unit scale whatever the scanner. The second channel is the
radial symmetry transform of that map (:mod:`mrinets.preprocess.radial_symmetry`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from mrinets.physics.sampling import affine_resample
from mrinets.preprocess.radial_symmetry import radial_symmetry

__all__ = ["CONTRASTS", "WORK_MM", "Subject", "standardise", "input_channels", "working_grid", "auto_mask",
           "intensity_stats", "to_working_grid"]

CONTRASTS = ("swi", "gre", "qsm")
WORK_MM = 1.0
# Local level of SWI/GRE: a Gaussian of this sigma (mm), wider than any microbleed's bloom.
LEVEL_SIGMA_MM = 8.0
Z_CLIP = (-8.0, 24.0)
Z_SCALE = 8.0
RST_RADII_MM = (1.0, 2.0, 3.0)
RST_SCALE = 4.0


def _check_contrast(contrast: str) -> str:
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast must be one of {', '.join(CONTRASTS)}, got {contrast!r}")
    return contrast


def standardise(image: np.ndarray, contrast: str, mask: np.ndarray, *, voxel_size=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Lesion-positive map in robust standard units (microbleeds bright in every contrast).

    Parameters
    ----------
    image : ndarray (X, Y, Z)
    contrast : {"swi", "gre", "qsm"}
    mask : ndarray of bool
        Brain voxels; the map is 0 outside.
    voxel_size : 3 floats
        mm, for the size of the local-level filter.
    """
    _check_contrast(contrast)
    vol = np.asarray(image, dtype=np.float32)
    inside = np.asarray(mask, bool)
    if not inside.any():
        raise ValueError("mask is empty (no voxel is set)")
    size = np.asarray(voxel_size, float)
    if contrast == "qsm":
        values = vol - float(np.median(vol[inside]))
    else:
        sigma = LEVEL_SIGMA_MM / size
        weight = ndimage.gaussian_filter(inside.astype(np.float32), sigma)
        level = ndimage.gaussian_filter(np.where(inside, vol, 0).astype(np.float32), sigma) / np.maximum(weight, 1e-3)
        scale = float(np.median(vol[inside]))
        level = np.maximum(level, 0.05 * max(scale, 1e-12))
        values = 1.0 - vol / level
        values -= float(np.median(values[inside]))
    spread = 1.4826 * float(np.median(np.abs(values[inside])))
    if not spread > 0:
        spread = float(np.std(values[inside])) or 1.0
    z = np.clip(values / spread, *Z_CLIP) / Z_SCALE
    return np.where(inside, z, 0).astype(np.float32)


def input_channels(z: np.ndarray, mask: np.ndarray, *, voxel_size=(1.0, 1.0, 1.0)) -> np.ndarray:
    """The networks' input (2, X, Y, Z): the standardised map and its radial symmetry transform."""
    rst = radial_symmetry(np.maximum(z, 0), radii_mm=RST_RADII_MM, voxel_size=voxel_size, mask=mask)
    return np.stack([z, np.minimum(rst * RST_SCALE, 4.0)]).astype(np.float32)


def intensity_stats(image: np.ndarray, contrast: str, mask: np.ndarray) -> dict[str, float]:
    """Scanner-level descriptor checked against the training range: the brain's robust spread.

    ``cov`` is the robust coefficient of variation (1.4826 MAD / median) of
    SWI/GRE, which grows with noise and contrast between tissues, or the robust
    spread of QSM in its own units (ppm expected). Lesion load barely moves it.
    """
    vol = np.asarray(image, np.float64)[np.asarray(mask, bool)]
    median = float(np.median(vol))
    mad = 1.4826 * float(np.median(np.abs(vol - median)))
    if contrast == "qsm":
        return {"cov": mad}
    return {"cov": mad / median if median > 0 else float("inf")}


def auto_mask(image: np.ndarray, contrast: str, voxel_size) -> np.ndarray:
    """A brain mask when none is given: the non-zero support of QSM, the GRE mask of SWI/GRE magnitude."""
    from mrinets.preprocess.mask import gre_brain_mask

    vol = np.asarray(image, np.float32)
    if contrast == "qsm":
        support = vol != 0
        return ndimage.binary_fill_holes(support) if support.mean() < 0.98 else np.ones(vol.shape, bool)
    return gre_brain_mask(vol, voxel_size=voxel_size)


def working_grid(affine: np.ndarray, shape) -> tuple[np.ndarray, tuple[int, int, int]]:
    """An isotropic :data:`WORK_MM` grid covering the same field of view, axes along the input's."""
    size = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    n = np.maximum(np.round(np.asarray(shape[:3]) * size / WORK_MM).astype(int), 1)
    work = np.array(affine, dtype=float)
    work[:3, :3] = work[:3, :3] / size * WORK_MM
    # Keep the field of view's first corner: voxel centres shift by half the size difference.
    work[:3, 3] = affine[:3, 3] + affine[:3, :3] @ ((WORK_MM / size - 1) / 2)
    return work, tuple(int(v) for v in n)  # type: ignore[return-value]


def to_working_grid(data: np.ndarray, affine: np.ndarray, *, order: int = 1):
    """``data`` resampled onto :func:`working_grid` (no resampling when already 1 mm): (data, affine)."""
    size = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    if np.allclose(size, WORK_MM, rtol=0.02):
        return np.asarray(data, np.float32), np.asarray(affine, float)
    work, shape = working_grid(affine, data.shape)
    return affine_resample(np.asarray(data, np.float32), affine, work, shape, order=order), work


@dataclass
class Subject:
    """One training or validation volume on the working grid, with its truth."""

    name: str
    contrast: str
    channels: np.ndarray
    mask: np.ndarray
    cmb: np.ndarray
    mimic: np.ndarray
    raw: np.ndarray
    affine: np.ndarray
    stats: dict = field(default_factory=dict)
