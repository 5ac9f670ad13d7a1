"""Real brain data that ships inside installed PyPI packages.

- nilearn's MNI152 2009a symmetric template (1 mm, skull-stripped T1 and GM/WM
  probability maps). No CSF map or brain mask ships, so both are derived here:
  the mask is the filled support of the T1, and CSF is what the mask holds
  beyond GM and WM.
- DIPY's small real diffusion scans and gradient tables.

Nothing is downloaded: files are found through the installed packages.

References
----------
Fonov V, et al. Unbiased average age-appropriate atlases for pediatric studies.
NeuroImage 2011;54:313-327 (MNI152 2009a).
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from mrinets.io import Image, load
from mrinets.io.gradients import read_bvals_bvecs

__all__ = ["MniTemplate", "MNI_SHAPE", "load_mni", "dipy_file", "load_dipy_dwi", "load_dipy_scheme", "DIPY_SCHEMES"]

_MNI = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
MNI_SHAPE = (197, 233, 189)
"""Voxels of the MNI152 2009a grid (1 mm): phantoms size their memory from it before loading it."""
DIPY_SCHEMES = ("gtab_isbi2013_2shell", "gtab_3shell")


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"the '{package}' package is needed for its shipped data: pip install {package}")
    return Path(spec.origin).parent


@dataclass(frozen=True)
class MniTemplate:
    """MNI152 2009a on its 1 mm grid (197 x 233 x 189, RAS), maps in [0, 1]."""

    t1: Image
    gm: Image
    wm: Image
    csf: Image
    mask: Image

    @property
    def affine(self) -> np.ndarray:
        return self.t1.affine


@functools.lru_cache(maxsize=1)
def load_mni() -> MniTemplate:
    """The MNI152 2009a T1, GM, WM, derived CSF and brain mask (cached).

    Notes
    -----
    The T1 is skull-stripped, so its support, with holes filled and only the
    largest component kept, is the brain mask. CSF is
    ``clip(mask - GM - WM, 0, 1)`` restricted to voxels darker than the grey
    matter mean, so that the ventricles and sulci come out as CSF while the
    partial-volume fringe of the probability maps does not.
    """
    folder = _package_dir("nilearn") / "datasets" / "data"
    t1 = load(folder / _MNI.format("t1"))
    gm = load(folder / _MNI.format("gm"))
    wm = load(folder / _MNI.format("wm"))
    gm_p = np.clip(gm.data / 255.0 if gm.data.max() > 1.5 else gm.data, 0, 1).astype(np.float32)
    wm_p = np.clip(wm.data / 255.0 if wm.data.max() > 1.5 else wm.data, 0, 1).astype(np.float32)
    support = t1.data > 0.05 * float(t1.data.max())
    labels, n = ndimage.label(support)
    if n > 1:
        support = labels == int(np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    brain = ndimage.binary_fill_holes(support)
    gm_mean = float(t1.data[gm_p > 0.9].mean())
    csf = np.clip(1.0 - gm_p - wm_p, 0, 1) * brain * (t1.data < gm_mean)
    return MniTemplate(
        t1=t1,
        gm=t1.with_data(gm_p),
        wm=t1.with_data(wm_p),
        csf=t1.with_data(csf.astype(np.float32)),
        mask=t1.with_data(brain.astype(np.float32)),
    )


def dipy_file(name: str) -> Path:
    """Path of a file shipped in ``dipy/data/files`` (e.g. ``small_101D.bval``)."""
    path = _package_dir("dipy") / "data" / "files" / name
    if not path.exists():
        raise FileNotFoundError(f"DIPY does not ship {name} (looked in {path.parent})")
    return path


def load_dipy_dwi(name: str = "small_101D") -> tuple[Image, np.ndarray, np.ndarray]:
    """A real diffusion scan shipped with DIPY: (image, bvals, unit bvecs)."""
    folder = _package_dir("dipy") / "data" / "files"
    nifti = folder / f"{name}.nii.gz"
    image = load(nifti if nifti.exists() else dipy_file(f"{name}.nii"), ndim=4)
    bvals, bvecs = read_bvals_bvecs(dipy_file(f"{name}.bval"), dipy_file(f"{name}.bvec"), n_volumes=image.shape[3])
    return image, bvals, bvecs


def load_dipy_scheme(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A gradient table shipped with DIPY: (bvals, unit bvecs).

    The ``gtab_*.txt`` files are comma-separated rows ``gx, gy, gz`` scaled by
    the b-value, so the b-value is the row's norm; b=0 rows are zeros.
    """
    if name not in DIPY_SCHEMES:
        raise ValueError(f"name must be one of {DIPY_SCHEMES}, got {name!r}")
    table = np.loadtxt(dipy_file(f"{name}.txt"), delimiter=",", ndmin=2)
    bvals = np.linalg.norm(table, axis=1)
    unit = table / np.where(bvals > 0, bvals, 1.0)[:, None]
    return np.round(bvals, 1), unit
