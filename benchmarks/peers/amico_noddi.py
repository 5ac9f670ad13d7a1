"""AMICO's NODDI fit (``dmri-amico``, import name ``amico``) on in-memory arrays.

A benchmark-only peer: the linear, dictionary-based NODDI fit that other
groups run, so our fitters can be compared with it on the same voxels for
accuracy and speed. AMICO only reads NIfTI and scheme files and caches its
kernels and rotation matrices on disk (``<study>/kernels`` and ``~/.dipy``),
so every file it needs or makes is kept in one working directory, by default
a temporary one removed on return.

Run from the repository root: ``from benchmarks.peers.amico_noddi import amico_noddi``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import tempfile
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = ["amico_noddi"]

B0_THRESHOLD = 50.0  # s/mm^2, as in mrinets.io.gradients; AMICO's own default (0) misses b=5..50 "b0" volumes
LMAX, NDIRS = 12, 500  # AMICO's defaults for kernel rotation: SH order and directions on the hemisphere


def amico_noddi(
    dwi: np.ndarray,
    mask: np.ndarray,
    bvals: np.ndarray,
    bvecs: np.ndarray,
    *,
    workdir: str | None = None,
    n_threads: int = 2,
    voxel_size: float | tuple[float, float, float] = 2.0,
    b0_threshold: float = B0_THRESHOLD,
) -> dict[str, np.ndarray | float]:
    """Fit NODDI with AMICO (default dictionary and solver) inside ``mask``.

    Parameters
    ----------
    dwi : ndarray, shape (X, Y, Z, N)
        Diffusion-weighted signal, not normalised (AMICO divides by the mean b=0).
    mask : ndarray, shape (X, Y, Z)
        Voxels to fit (non-zero).
    bvals : ndarray, shape (N,)
        b-values in s/mm^2. AMICO makes one shell per distinct value, so
        round noisy b-values first if one kernel set per shell is wanted.
    bvecs : ndarray, shape (N, 3)
        Unit b-vectors in the frame of the array axes (FSL convention); signs do not matter.
    workdir : str, optional
        Folder for AMICO's files. Default: a temporary folder deleted on
        return. A kept folder reuses its kernels when the shells repeat.
    n_threads : int
        Threads of AMICO's per-voxel fit (capped at the number of voxels).
    voxel_size : float or 3 floats
        Voxel edges (mm) written in the NIfTI header; AMICO does not use them.
    b0_threshold : float
        Volumes with b <= this are b=0 for normalisation and the dictionary.

    Returns
    -------
    dict
        ``icvf``, ``odi``, ``isovf`` (X, Y, Z) float32 maps (AMICO's NDI, ODI,
        FWF; 0 outside the mask), ``dir`` (X, Y, Z, 3) the DTI principal
        direction each voxel was fitted along (in the b-vector frame, sign
        arbitrary), ``fit_seconds`` (AMICO's ``fit()``: DTI directions plus
        the NODDI solve), ``dirs_seconds`` (its DTI part) and ``lut_seconds``
        (rotation matrices, kernel generation and resampling to this scheme).

    Raises
    ------
    RuntimeError
        If AMICO stops with an error (it calls ``sys.exit``); the message
        carries AMICO's own output.
    """
    import amico  # an optional extra: only the peer benchmarks need it
    import amico.lut

    dwi = np.asarray(dwi, dtype=np.float32)
    mask = np.asarray(mask) > 0
    bvals = np.asarray(bvals, dtype=np.float64).reshape(-1)
    bvecs = np.asarray(bvecs, dtype=np.float64)
    if dwi.ndim != 4 or mask.shape != dwi.shape[:3]:
        raise ValueError(f"dwi must be 4D and mask its 3D grid, got {dwi.shape} and {mask.shape}")
    if bvals.shape != (dwi.shape[3],) or bvecs.shape != (dwi.shape[3], 3):
        raise ValueError(f"bvals (N,) and bvecs (N, 3) must match N={dwi.shape[3]} volumes")
    n_voxels = int(mask.sum())
    if n_voxels < 2:
        raise ValueError("AMICO needs at least 2 voxels in the mask")  # its DTI step squeezes one voxel away

    # AMICO splits the voxels into n_threads chunks of len // n_threads and fails on empty chunks
    n_threads = max(1, min(int(n_threads), n_voxels))
    # kernels depend only on the shells (b-values in order of first appearance), not on the directions
    shells_key = hashlib.sha1(np.where(bvals <= b0_threshold, 0.0, bvals).round(3).tobytes()).hexdigest()[:12]

    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="amico_"))
        root = Path(workdir)
        root.mkdir(parents=True, exist_ok=True)
        affine = np.diag([*np.broadcast_to(np.asarray(voxel_size, dtype=np.float64), (3,)), 1.0])
        nib.save(nib.Nifti1Image(dwi, affine), root / "dwi.nii")
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), root / "mask.nii")
        # AMICO's 4-column scheme (as its fsl2scheme writes it): gx gy gz b
        table = np.c_[bvecs, bvals]
        np.savetxt(root / "dwi.scheme", table, fmt="%.6f", delimiter="\t", header="VERSION: BVECTOR", comments="")

        chatter = io.StringIO()
        old_verbose, old_home = amico.get_verbose(), amico.lut.dipy_home
        try:
            amico.set_verbose(1)  # warnings and errors only, no progress bars; captured below
            amico.lut.dipy_home = str(root)  # rotation matrices would otherwise be cached in ~/.dipy
            with contextlib.redirect_stdout(chatter), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ae = amico.Evaluation(study_path=str(root), subject=".", output_path=str(root / "out"))
                ae.set_config("nthreads", n_threads)
                ae.load_data("dwi.nii", "dwi.scheme", mask_filename="mask.nii", b0_thr=b0_threshold)
                ae.set_model("NODDI")
                ae.set_config("ATOMS_path", str(root / "kernels" / f"NODDI_{shells_key}"))

                tic = time.perf_counter()
                amico.lut.precompute_rotation_matrices(LMAX, NDIRS)  # amico.setup() would do all 22 ndirs
                ae.generate_kernels(regenerate=False, lmax=LMAX, ndirs=NDIRS)
                ae.load_kernels()
                lut_seconds = time.perf_counter() - tic

                tic = time.perf_counter()
                ae.fit()
                fit_seconds = time.perf_counter() - tic
        except SystemExit as exc:
            message = re.sub(r"\x1b\[[0-9;]*m", "", chatter.getvalue()).strip()
            raise RuntimeError(f"AMICO stopped: {message or exc}") from None
        finally:
            amico.set_verbose(old_verbose)
            amico.lut.dipy_home = old_home

    maps = dict(zip(ae.model.maps_name, np.moveaxis(ae.RESULTS["MAPs"], -1, 0)))
    return {
        "icvf": maps["NDI"].copy(),
        "odi": maps["ODI"].copy(),
        "isovf": maps["FWF"].copy(),
        "dir": ae.RESULTS["DIRs"].copy(),
        "fit_seconds": fit_seconds,
        "dirs_seconds": float(ae.get_config("dirs_precomputing_time")),
        "lut_seconds": lut_seconds,
    }
