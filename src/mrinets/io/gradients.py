"""Diffusion gradient tables (FSL bval/bvec files), checked against the image."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mrinets.errors import ArgumentError, DimensionError, UnreadableFileError
from mrinets.io.output import note_input

__all__ = ["read_bvals_bvecs", "fsl_to_array_frame", "array_frame_to_fsl"]

B0_THRESHOLD = 50.0  # s/mm^2: volumes at or below count as b=0, as in DIPY and FSL


def _read_table(path: Path) -> np.ndarray:
    if not path.exists():
        raise UnreadableFileError(path, "file not found")
    if path.is_dir():
        raise UnreadableFileError(path, "is a folder, not a table of numbers")
    note_input(path)
    try:
        if not path.read_bytes().strip():
            raise UnreadableFileError(path, "is empty")
        return np.atleast_1d(np.loadtxt(path, dtype=np.float64))
    except (OSError, ValueError) as exc:
        raise UnreadableFileError(path, f"not a table of numbers ({str(exc).splitlines()[0]})") from None


def read_bvals_bvecs(
    bval: str | os.PathLike, bvec: str | os.PathLike, *, n_volumes: int | None = None, unit_tol: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """Read FSL-style b-values and b-vectors and check them.

    Parameters
    ----------
    bval, bvec : path-like
        One row of b-values (s/mm^2); three rows (or three columns) of b-vectors.
    n_volumes : int, optional
        Number of volumes of the diffusion image they must describe.
    unit_tol : float
        Allowed deviation of a diffusion-weighted b-vector's length from 1.

    Returns
    -------
    bvals : ndarray, shape (N,)
    bvecs : ndarray, shape (N, 3), unit length for b > 0, zero for b = 0

    Raises
    ------
    UnreadableFileError, DimensionError, ArgumentError
        Naming the file: unreadable, wrong count, negative b-values, b-vectors
        that are not unit length, no b=0 volume.
    """
    bval, bvec = Path(bval), Path(bvec)
    bvals = _read_table(bval).reshape(-1)
    vecs = _read_table(bvec)
    if vecs.ndim != 2 or 3 not in vecs.shape:
        raise DimensionError(bvec, f"expected 3 rows of b-vectors, got a table of shape {vecs.shape}")
    # FSL stores 3 rows; some tools write 3 columns. A 3x3 table is read as FSL rows.
    vecs = vecs.T if vecs.shape[0] == 3 else vecs
    if not np.all(np.isfinite(bvals)) or np.any(bvals < 0):
        raise ArgumentError(bval, "b-values must be finite and non-negative")
    if vecs.shape[0] != bvals.size:
        raise DimensionError(bvec, f"has {vecs.shape[0]} b-vectors but {bval.name} has {bvals.size} b-values")
    if n_volumes is not None and bvals.size != n_volumes:
        raise DimensionError(bval, f"has {bvals.size} b-values but the image has {n_volumes} volumes")
    if 0 < bvals.max() <= 10:
        raise ArgumentError(bval, f"b-values reach only {bvals.max():g}: give them in s/mm^2 (e.g. 1000), not "
                                  "ms/um^2")
    weighted = bvals > B0_THRESHOLD
    # Converters write NaN as the direction of b=0 volumes (DIPY's small_64D does); only weighted ones need one.
    bad_rows = weighted & ~np.all(np.isfinite(vecs), axis=1)
    if np.any(bad_rows):
        i = int(np.flatnonzero(bad_rows)[0])
        raise ArgumentError(bvec, f"b-vector {i} is not finite ({int(bad_rows.sum())} such vectors)")
    vecs = np.where(weighted[:, None], vecs, 0.0)
    norms = np.linalg.norm(vecs, axis=1)
    bad = weighted & (np.abs(norms - 1) > unit_tol)
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise ArgumentError(bvec, f"b-vector {i} has length {norms[i]:.3g}, not 1 ({int(bad.sum())} such vectors)")
    if not np.any(~weighted):
        raise ArgumentError(bval, f"no b=0 volume (every b-value is above {B0_THRESHOLD:g} s/mm^2)")
    unit = np.zeros_like(vecs)
    unit[weighted] = vecs[weighted] / norms[weighted, None]
    return bvals, unit


def fsl_to_array_frame(bvecs: np.ndarray, source_affine: np.ndarray, to_ras: np.ndarray) -> np.ndarray:
    """FSL b-vectors of a file carried into the frame of its array as :func:`mrinets.io.load` returns it (RAS+).

    FSL stores b-vectors along the file's voxel axes, with x negated when the
    affine's determinant is positive (radiological storage assumed by FSL);
    the array is then reoriented to RAS+ by ``to_ras`` (a nibabel orientation),
    whose axis permutation and flips the vectors must follow.
    """
    vox = np.array(bvecs, dtype=np.float64)
    if np.linalg.det(source_affine[:3, :3]) > 0:
        vox[:, 0] = -vox[:, 0]
    out = np.zeros_like(vox)
    for axis, (new_axis, flip) in enumerate(np.asarray(to_ras)):
        out[:, int(new_axis)] = flip * vox[:, axis]
    return out


def array_frame_to_fsl(bvecs: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """B-vectors along the axes of an array written with ``affine`` as FSL expects them (inverse of the above)."""
    out = np.array(bvecs, dtype=np.float64)
    if np.linalg.det(affine[:3, :3]) > 0:
        out[:, 0] = -out[:, 0]
    return out
