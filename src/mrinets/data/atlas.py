"""White-matter anatomy on the MNI152 grid: ventricles, distances and lesion regions.

Everything is derived from the shipped template (no atlas download) and cached:
the WMH phantom places its periventricular lesions with these distances, and
the WMH pipeline reports lesion volumes in these regions. The region map is
also packaged (``mni152_wmh_regions.nii.gz``, written by
:func:`write_mni_regions`; a test checks it still equals the derivation), so
that one prediction does not spend seconds on distance transforms. It derives
from the ICBM 2009a template (Copyright (C) 1993-2009 Louis Collins, McConnell
Brain Imaging Centre, Montreal Neurological Institute, McGill University), whose
licence allows copies that carry this notice.

Regions (labels of :func:`mni_regions`)
---------------------------------------
1. periventricular: brain within ``PERIVENTRICULAR_MM`` of the lateral ventricles
   (the 10 mm rule of DeCarli et al. 2005);
2. deep white: the white matter beyond it;
3. infracortical: within ``INFRACORTICAL_MM`` of the cortical ribbon, cortex included;
4. inner grey: the deep grey nuclei (grey matter near the ventricles, in the basal ganglia's MNI box).

Lobes are split by planes in MNI space: right is ``x >= -1`` mm and frontal lies
in front of a plane tilted along the central sulcus, ``y > -18 - 0.45 z``, which
matches the frontal and right-side boxes of deep-T1-WMH inside the white matter.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from mrinets.data.templates import load_mni

__all__ = ["MniAnatomy", "mni_anatomy", "mni_regions", "write_mni_regions", "REGIONS_FILE", "REGION_NAMES",
           "QUADRANT_NAMES", "quadrants", "PERIVENTRICULAR_MM", "INFRACORTICAL_MM"]

REGION_NAMES = ("periventricular", "deep_white", "infracortical", "inner_grey")
QUADRANT_NAMES = ("left_frontal", "left_posterior", "right_frontal", "right_posterior")
PERIVENTRICULAR_MM = 10.0
INFRACORTICAL_MM = 4.0
REGIONS_FILE = Path(__file__).with_name("mni152_wmh_regions.nii.gz")


@dataclass(frozen=True)
class MniAnatomy:
    """Maps on the MNI152 1 mm grid (RAS) with its affine."""

    ventricles: np.ndarray
    ventricle_distance_mm: np.ndarray
    cortex_distance_mm: np.ndarray
    regions: np.ndarray
    affine: np.ndarray

    def region_volumes_ml(self) -> dict[str, float]:
        counts = np.bincount(self.regions.ravel(), minlength=len(REGION_NAMES) + 1)
        return {name: float(counts[i + 1]) / 1000.0 for i, name in enumerate(REGION_NAMES)}


def quadrants(world_xyz: np.ndarray) -> np.ndarray:
    """Quadrant index (0..3 in ``QUADRANT_NAMES`` order) of MNI world points (..., 3)."""
    x, y, z = world_xyz[..., 0], world_xyz[..., 1], world_xyz[..., 2]
    right = x >= -1.0
    frontal = y > -18.0 - 0.45 * z
    return (2 * right + (~frontal)).astype(np.uint8)


@functools.lru_cache(maxsize=1)
def mni_anatomy() -> MniAnatomy:
    """Ventricles, distance maps and the four WMH regions of the MNI152 2009a template."""
    mni = load_mni()
    brain = mni.mask.data > 0.5
    depth = ndimage.distance_transform_edt(brain)
    # The lateral ventricles are the largest deep CSF body once thin fissures and cisterns are opened away.
    deep_csf = (mni.csf.data > 0.5) & (depth > 12)
    opened = ndimage.binary_opening(deep_csf, structure=ndimage.generate_binary_structure(3, 1), iterations=2)
    labels, _ = ndimage.label(opened)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    ventricles = ndimage.binary_dilation(labels == int(np.argmax(sizes)), iterations=2) & deep_csf
    vent_dist = ndimage.distance_transform_edt(~ventricles).astype(np.float32)
    gm = mni.gm.data > 0.5
    cortex = gm & (depth < 15)
    cortex_dist = ndimage.distance_transform_edt(~cortex).astype(np.float32)
    # Deep nuclei (caudate, putamen, thalamus): grey matter near the ventricles inside their MNI box, which
    # keeps out the cingulate and insular cortex that are as deep from the outer surface.
    world = np.stack(np.meshgrid(*[np.arange(n) for n in brain.shape], indexing="ij"), -1) @ mni.affine[:3, :3].T
    world += mni.affine[:3, 3]
    x, y, z = np.abs(world[..., 0]), world[..., 1], world[..., 2]
    box = (x >= 6) & (x <= 34) & (y >= -38) & (y <= 28) & (z >= -12) & (z <= 24)
    inner_grey = gm & box & (vent_dist < 15)

    regions = np.zeros(brain.shape, np.uint8)
    regions[brain] = 2
    regions[brain & (cortex_dist <= INFRACORTICAL_MM)] = 3
    regions[inner_grey] = 4
    regions[brain & (vent_dist <= PERIVENTRICULAR_MM) & ~inner_grey] = 1
    regions[ventricles] = 0
    return MniAnatomy(ventricles=ventricles, ventricle_distance_mm=vent_dist, cortex_distance_mm=cortex_dist,
                      regions=regions, affine=mni.affine.copy())


@functools.lru_cache(maxsize=1)
def mni_regions() -> tuple[np.ndarray, np.ndarray]:
    """The region labels of :func:`mni_anatomy` and their affine, read from the packaged map."""
    import nibabel as nib

    img = nib.load(REGIONS_FILE)
    return np.asarray(img.dataobj, dtype=np.uint8), img.affine


def write_mni_regions(path: str | Path = REGIONS_FILE) -> Path:
    """Derive the region labels from the template and write them (after a change to :func:`mni_anatomy`)."""
    import nibabel as nib

    anatomy = mni_anatomy()
    img = nib.Nifti1Image(anatomy.regions.astype(np.uint8), anatomy.affine)
    img.header.set_data_dtype(np.uint8)
    nib.save(img, path)
    return Path(path)
