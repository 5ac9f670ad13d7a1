"""The network's MNI-aligned box and the moves onto it and back.

The box is deep-T1-WMH's: 184 x 202 x 72 voxels of 1 x 1 x 1.5 mm covering the
cerebrum from x = -93 to 90, y = -117 to 84 and z = -33 to 73.5 mm (here in
RAS voxel order). A subject enters it through its affine map to MNI space and
leaves it through the exact inverse of the same map.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from mrinets.data.templates import load_mni
from mrinets.physics.sampling import affine_resample

__all__ = ["GRID_SHAPE", "GRID_AFFINE", "SURFACE_MM", "to_grid", "from_grid", "grid_brain", "grid_search",
           "grid_masks", "grid_wm", "grid_ventricles", "normalise", "wm_reference", "csf_reference"]

GRID_SHAPE = (184, 202, 72)
GRID_AFFINE = np.array([[1.0, 0.0, 0.0, -93.0], [0.0, 1.0, 0.0, -117.0], [0.0, 0.0, 1.5, -33.0], [0.0, 0.0, 0.0, 1.0]])
SURFACE_MM = 3.0


def to_grid(data: np.ndarray, affine: np.ndarray, to_mni: np.ndarray, *, order: int = 1) -> np.ndarray:
    """Resample subject data (grid ``affine``) into the box, ``to_mni`` mapping subject to MNI world."""
    return affine_resample(data, to_mni @ affine, GRID_AFFINE, GRID_SHAPE, order=order)


def from_grid(data: np.ndarray, affine: np.ndarray, shape, to_mni: np.ndarray, *, order: int = 1,
              cval: float = 0.0) -> np.ndarray:
    """Box data back onto the subject grid (``affine``, ``shape``) through the inverse map (``cval`` outside)."""
    return affine_resample(data, GRID_AFFINE, to_mni @ affine, shape, order=order, cval=cval)


@functools.lru_cache(maxsize=1)
def grid_brain() -> np.ndarray:
    """The template's brain mask in the box: lesions are looked for only there."""
    mni = load_mni()
    return affine_resample(mni.mask.data, mni.affine, GRID_AFFINE, GRID_SHAPE, order=1) > 0.5


@functools.lru_cache(maxsize=1)
def grid_search() -> np.ndarray:
    """Where lesions are looked for: the template brain without its outer ``SURFACE_MM`` (cortex and pia).

    White-matter lesions do not reach the brain's surface (FSL BIANCA's
    lesion mask leaves out the cortex for the same reason); there a real T1's
    skull and sulcal CSF, which the phantoms lack, are the network's false
    positives.
    """
    return _grid_depth() >= SURFACE_MM


@functools.lru_cache(maxsize=1)
def _grid_depth() -> np.ndarray:
    """Distance in mm from every voxel of the template brain to its surface, in the box."""
    return ndimage.distance_transform_edt(grid_brain(), sampling=np.diag(GRID_AFFINE)[:3])


@functools.lru_cache(maxsize=1)
def grid_wm() -> np.ndarray:
    """The template's white-matter probability in the box."""
    mni = load_mni()
    return affine_resample(mni.wm.data, mni.affine, GRID_AFFINE, GRID_SHAPE, order=1)


@functools.lru_cache(maxsize=1)
def grid_ventricles() -> np.ndarray:
    """The template's deep CSF in the box (CSF probability > 0.9, over 20 mm inside the brain), eroded one voxel.

    That is the ventricles' CSF (3084 voxels, 4.6 mL); the erosion keeps
    their walls and an affine registration's error out.
    """
    mni = load_mni()
    csf = affine_resample(mni.csf.data, mni.affine, GRID_AFFINE, GRID_SHAPE, order=1) > 0.9
    return ndimage.binary_erosion(csf & (_grid_depth() > 20.0))


@functools.lru_cache(maxsize=1)
def grid_masks() -> tuple[np.ndarray, np.ndarray]:
    """The template's brain (dilated 3 mm, as the input mask) and core white matter in the box."""
    return ndimage.binary_dilation(grid_brain(), iterations=3), grid_wm() > 0.95


def wm_reference(t1_grid: np.ndarray) -> float:
    """Median T1 signal in the template's core white matter (box data in the scanner's units).

    The median is robust to lesions (a minority of those voxels) and to the
    bias left inside the box, and puts every scanner on one scale.
    """
    values = t1_grid[grid_masks()[1]]
    reference = float(np.median(values[values > 0])) if np.any(values > 0) else 0.0
    if reference <= 0:
        raise ValueError("no signal in the template white matter")
    return reference


def normalise(t1_grid: np.ndarray) -> np.ndarray:
    """Scale so that the template's core white matter has median 1 (:func:`wm_reference`), mask, clip to [0, 2]."""
    return (np.clip(t1_grid / wm_reference(t1_grid), 0.0, 2.0) * grid_masks()[0]).astype(np.float32)


def csf_reference(t1_grid: np.ndarray) -> float:
    """Median T1 signal in the template's ventricles (:func:`grid_ventricles`), in the units of ``t1_grid``."""
    return float(np.median(t1_grid[grid_ventricles()]))
