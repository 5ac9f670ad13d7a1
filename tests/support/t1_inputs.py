"""T1s shaped as open datasets ship them, made from the MNI template (no reference data needed)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from mrinets.data.templates import load_mni
from mrinets.physics.sampling import affine_resample


def stripped_mni_space_t1(path: Path, voxel_mm: float = 2.0) -> Path:
    """The template on an FSL-style MNI grid (LAS), zero outside the brain and slightly negative at its edge.

    What open datasets ship: skull-stripped, registered to MNI, interpolation leaving negative values at the edge.
    """
    mni = load_mni()
    shape = tuple(int(round(n / voxel_mm)) for n in (182, 218, 182))
    las = np.diag([-voxel_mm, voxel_mm, voxel_mm, 1.0])
    las[:3, 3] = [90.0, -126.0, -72.0]
    data = affine_resample(mni.t1.data * (mni.mask.data > 0.5), mni.affine, las, shape)
    edge = ndimage.binary_dilation(data > 0) & (data <= 0)
    data[edge] = -0.03 * data.max()
    nib.save(nib.Nifti1Image(data.astype(np.float32), las), path)
    return path
