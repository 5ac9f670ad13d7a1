"""NODDI microstructure phantom: ICVF, ISOVF, ODI and fibre directions on the MNI152 anatomy, and its dMRI.

A subject is the MNI152 grey matter, white matter and CSF probability maps
under a random affine and smooth deformation (:func:`~mrinets.data.phantoms.head.random_warp`),
box-averaged onto a ``voxel_mm`` grid (exact partial volume of 1 mm voxels).
Each voxel mixes three compartments by its tissue fractions ``f``:

- white matter: ICVF 0.55-0.80, higher in the deep core (far from the cortex,
  where the WM probability is highest), ODI 0.05-0.09 in that core rising to
  0.18-0.25 under the cortex, ISOVF 0.02-0.05;
- grey matter: ICVF 0.33-0.41, ODI 0.45-0.60, ISOVF 0.02-0.05; the deep nuclei
  (thalamus, basal ganglia: crossed by myelinated fibres) have ICVF +0.12 and
  ODI -0.15;
- CSF: ISOVF 0.94-1, ICVF 0 in what tissue remains.

The voxel's ISOVF is ``sum f_k isovf_k`` (partial-volume CSF adds free water),
its ICVF and ODI the averages over the non-free-water tissue volume
``f_k (1 - isovf_k)`` (ODI takes the grey-matter value where there is no
tissue). Healthy adult values follow the NODDI literature (WM ICVF 0.6-0.8, cortex 0.3-0.45, CC ODI below 0.1, cortex
0.4-0.7). Low-frequency random fields (about 20 mm) vary every map within each
tissue, and per-subject shifts set the population (:data:`POPULATIONS`): the
``auxiliary`` population is healthy adults whose subjects differ little, the
``target`` population a clinical one whose subjects differ widely (lower
neurite density, more free water, more dispersion).

Fibre directions follow tracts defined in MNI coordinates: left-right in a
corpus-callosum box near the midline, superior-inferior in a corticospinal
band (internal capsule, corona radiata, brainstem), anterior-posterior
elsewhere, blended through smooth (3 mm) box edges, carried into the subject
by the local Jacobian of the deformation and perturbed by a smooth random
vector field. In the cortex and the white matter just beneath it they turn
radial: the principal direction of ``(1 - w) d d^T + w r r^T``, with ``r`` the
gradient of the smoothed ``WM + GM/2`` (normal to the cortical layers) and
``w`` the grey-matter fraction plus a share of the white matter within a few
mm of the cortex. Directions are in the voxel-axis frame, which
for these RAS grids is the world (and b-vector) frame.

The dMRI is the NODDI signal (:func:`mrinets.physics.diffusion.noddi_signal`)
times a T2-weighted S0 (free water 2.5 times brighter than white matter,
grey matter about 1.2 times), optionally box-averaged into coarser voxels
before Rician noise of sigma ``s0 / snr`` (``snr`` is the b=0 SNR of healthy white
matter, ICVF 0.7 and no free water).

References
----------
Zhang H, Schneider T, Wheeler-Kingshott CA, Alexander DC. NODDI: practical in
vivo neurite orientation dispersion and density imaging of the human brain.
NeuroImage 61 (2012) 1000-1016.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.special import expit

from mrinets.data.phantoms.head import random_warp, rician
from mrinets.data.phantoms.wmh import _smooth_noise
from mrinets.io import OutputStage, write_json
from mrinets.io.gradients import array_frame_to_fsl
from mrinets.io.nifti import from_array, save
from mrinets.physics.diffusion import GradientScheme, noddi_signal

__all__ = ["POPULATIONS", "Population", "MicrostructureTruth", "MicrostructurePhantom", "make_truth", "b0_level",
           "simulate_dwi", "downsample_affine", "make_microstructure_subject", "FULL_TARGET_SCHEME", "target_indices",
           "target_scheme"]


FULL_TARGET_SCHEME = "gtab_isbi2013_2shell"  # the target dataset's full acquisition: b 1500 x 27, 2500 x 36
_TARGET_SHELLS = {1500.0: 12, 2500.0: 18}


def target_indices() -> np.ndarray:
    """Volumes of the full target scheme that a low-quality target scan keeps (one b=0, 12 + 18 directions)."""
    return GradientScheme.from_dipy(FULL_TARGET_SCHEME).spread_indices(_TARGET_SHELLS, n_b0=1)


def target_scheme() -> GradientScheme:
    """The 31-volume low-quality target scheme (the one the shipped microstructure network reads)."""
    return GradientScheme.from_dipy(FULL_TARGET_SCHEME).subset(target_indices())


@dataclass(frozen=True)
class Population:
    """Ranges of the subject-level shifts of a population, each drawn uniformly per subject."""

    wm_icvf_offset: tuple[float, float]
    gm_icvf_offset: tuple[float, float]
    isovf_offset: tuple[float, float]
    odi_scale: tuple[float, float]


POPULATIONS = {
    "auxiliary": Population(wm_icvf_offset=(-0.03, 0.03), gm_icvf_offset=(-0.02, 0.02), isovf_offset=(0.0, 0.02),
                            odi_scale=(0.92, 1.08)),
    "target": Population(wm_icvf_offset=(-0.15, 0.05), gm_icvf_offset=(-0.08, 0.03), isovf_offset=(0.0, 0.10),
                         odi_scale=(0.8, 1.3)),
}
# Healthy per-subject levels, drawn for every population before its shifts.
_HEALTHY = {"wm_icvf": (0.64, 0.70), "gm_icvf": (0.33, 0.41), "tissue_isovf": (0.02, 0.05), "csf_isovf": (0.94, 1.0),
            "wm_odi_core": (0.05, 0.09), "wm_odi_edge": (0.18, 0.25), "gm_odi": (0.45, 0.60)}
_FIELD_MM = 20.0  # scale of the smooth within-tissue variation
_S0_FREE_WATER = 2.5  # b=0 signal of CSF over white matter at a typical TE of 80-100 ms
_CHUNK = 20000  # voxels per noddi_signal call


@dataclass
class MicrostructureTruth:
    """NODDI maps of one subject on one grid (RAS arrays, float32 in [0, 1]).

    ``direction`` (X, Y, Z, 3) holds unit vectors in the voxel-axis frame;
    ``tissue`` labels 0 background, 1 CSF, 2 GM, 3 WM (the largest fraction).
    """

    icvf: np.ndarray
    isovf: np.ndarray
    odi: np.ndarray
    direction: np.ndarray
    mask: np.ndarray
    tissue: np.ndarray
    affine: np.ndarray
    meta: dict = field(default_factory=dict)


@dataclass
class MicrostructurePhantom:
    """A subject's truth and its simulated dMRI (on ``dwi_affine``, coarser when downsampled)."""

    truth: MicrostructureTruth
    dwi: np.ndarray
    scheme: GradientScheme
    dwi_affine: np.ndarray
    meta: dict = field(default_factory=dict)

    def save(self, outdir: str | Path) -> list[Path]:
        """Write ``dwi.nii.gz``/``.bval``/``.bvec`` (FSL rows), the truth maps and ``phantom.json``."""
        ref = from_array(self.truth.icvf, self.truth.affine)
        with OutputStage(outdir) as stage:
            save(self.dwi, stage.path("dwi.nii.gz"), like=from_array(self.dwi, self.dwi_affine))
            np.savetxt(stage.path("dwi.bval"), self.scheme.bvals[None], fmt="%g")
            # FSL convention: x negated for these positive-determinant (RAS) grids.
            np.savetxt(stage.path("dwi.bvec"), array_frame_to_fsl(self.scheme.bvecs, self.dwi_affine).T, fmt="%.6f")
            for name in ("icvf", "isovf", "odi", "direction"):
                save(getattr(self.truth, name), stage.path(f"{name}.nii.gz"), like=ref)
            save(self.truth.mask.astype(np.uint8), stage.path("mask.nii.gz"), like=ref, dtype=np.uint8)
            save(self.truth.tissue, stage.path("tissue.nii.gz"), like=ref, dtype=np.uint8)
            write_json(stage.path("phantom.json"), self.meta)
            return [stage.final(n) for n in stage.names]


def downsample_affine(affine: np.ndarray, factor: float) -> np.ndarray:
    """Affine of the grid whose voxels are blocks of ``factor`` voxels along each axis.

    Voxel ``j`` of the new grid is centred on the block of old voxels
    ``[factor j - 1/2, factor (j + 1) - 1/2]``, i.e. on old voxel
    ``factor j + (factor - 1) / 2``.
    """
    if factor < 1:
        raise ValueError(f"factor must be at least 1, got {factor}")
    affine = np.asarray(affine, dtype=np.float64)
    out = affine.copy()
    out[:3, :3] = affine[:3, :3] * factor
    out[:3, 3] = affine[:3, :3] @ np.full(3, (factor - 1) / 2.0) + affine[:3, 3]
    return out


def _box_average(data: np.ndarray, factor: float) -> np.ndarray:
    """Mean of ``data`` over the blocks of :func:`downsample_affine` along the first three axes.

    Voxels are integrated as constant cells, so any factor (2.5 as well as 2)
    gives the exact partial volume; trailing voxels that fill no block are dropped.
    """
    out = np.asarray(data, dtype=np.float64)
    if factor == 1:
        return out.astype(np.float32)
    for axis in range(3):
        n = out.shape[axis]
        edges = np.arange(int(np.floor(n / factor + 1e-9)) + 1) * factor
        cum = np.concatenate([np.zeros_like(np.take(out, [0], axis=axis)), np.cumsum(out, axis=axis)], axis=axis)
        lo = np.minimum(np.floor(edges).astype(int), n)
        hi = np.minimum(lo + 1, n)
        frac = (edges - lo).reshape([-1 if a == axis else 1 for a in range(out.ndim)])
        # The running integral of constant cells is linear between voxel edges.
        at_edges = np.take(cum, lo, axis=axis) * (1 - frac) + np.take(cum, hi, axis=axis) * frac
        out = np.diff(at_edges, axis=axis) / factor
    return out.astype(np.float32)


def _window(v: np.ndarray, lo: float, hi: float, width: float = 3.0) -> np.ndarray:
    """Smooth indicator of ``lo < v < hi`` with edges of ``width`` mm."""
    return expit((v - lo) / width) * expit((hi - v) / width)


def _tract_field(world: np.ndarray) -> np.ndarray:
    """Unit fibre directions (..., 3) in the MNI frame of tracts at MNI points ``world`` (3, ...)."""
    x, y, z = np.abs(world[0]), world[1], world[2]
    callosum = expit((16.0 - x) / 3.0) * _window(y, -46.0, 38.0) * _window(z, 2.0, 30.0)
    spinal = (_window(x, 14.0, 32.0) * _window(y, -32.0, -4.0) * _window(z, -8.0, 70.0)
              + _window(x, -14.0, 14.0) * _window(y, -42.0, -12.0) * _window(z, -60.0, -8.0))
    along = np.clip(1.0 - callosum - spinal, 0.02, None)
    d = np.stack([callosum, along, spinal], axis=-1)
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def _directions(coords: np.ndarray, mni_affine: np.ndarray, affine: np.ndarray, gm: np.ndarray, wm: np.ndarray,
                cortex_mm: np.ndarray, rng: np.random.Generator, sigma_vox: float) -> np.ndarray:
    """Unit directions (X, Y, Z, 3): template tracts pushed into the subject, radial in the cortex."""
    voxel_mm = float(np.linalg.norm(affine[:3, 0]))
    world = np.tensordot(mni_affine[:3, :3], coords, axes=1) + mni_affine[:3, 3][:, None, None, None]
    tract = _tract_field(world) @ np.linalg.inv(mni_affine[:3, :3]).T  # template voxel frame
    # Push forward through the warp: subject voxel step = J^-1 template voxel step.
    jac = np.stack(np.gradient(coords, axis=(1, 2, 3)), axis=-1).transpose(1, 2, 3, 0, 4)
    d = np.linalg.solve(jac, tract[..., None])[..., 0] @ affine[:3, :3].T
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    d += 0.3 * np.stack([_smooth_noise(gm.shape, rng, sigma_vox) for _ in range(3)], axis=-1)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)

    depth = ndimage.gaussian_filter(wm + 0.5 * gm, max(2.0 / voxel_mm, 0.7))
    r = np.stack(np.gradient(depth), axis=-1) @ np.linalg.inv(affine[:3, :3])
    strength = np.linalg.norm(r, axis=-1)
    # Radial where the layers are well defined (|grad| ~ 0.05/mm or more): the cortex and the WM just under it.
    w = np.clip(gm + 0.5 * wm * np.exp(-cortex_mm / 2.0), 0, 1) * np.clip(strength / 0.05, 0, 1)
    r /= np.maximum(strength, 1e-9)[..., None]
    mixed = w > 1e-3
    tensor = ((1 - w[mixed])[:, None, None] * d[mixed][:, :, None] * d[mixed][:, None, :]
              + w[mixed][:, None, None] * r[mixed][:, :, None] * r[mixed][:, None, :])
    principal = np.linalg.eigh(tensor)[1][..., -1]
    # Keep the sign of the tract field so that the map is smooth as a vector field too.
    d[mixed] = principal * np.sign(np.sum(principal * d[mixed], axis=-1) + 1e-12)[:, None]
    return d.astype(np.float32)


def make_truth(
    seed: int,
    *,
    voxel_mm: float = 2.0,
    population: str = "target",
    crop: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None = None,
) -> MicrostructureTruth:
    """Draw one subject's NODDI maps and fibre directions from the MNI152 tissue maps.

    Parameters
    ----------
    seed : int
        Every random choice follows from it; ``meta`` records the subject's levels.
    voxel_mm : float
        Isotropic voxel size (at least the template's 1 mm); tissue fractions
        are the exact averages of the 1 mm maps over each voxel.
    population : {"auxiliary", "target"}
        Which :data:`POPULATIONS` entry the subject's shifts come from.
    crop : ((x0, x1), (y0, y1), (z0, z1)), optional
        Box in MNI voxels built instead of the whole template (fast tests);
        the warp still reads the template outside it.

    Returns
    -------
    MicrostructureTruth
    """
    from mrinets.data.atlas import mni_anatomy
    from mrinets.data.templates import load_mni

    if population not in POPULATIONS:
        raise ValueError(f"population must be one of {sorted(POPULATIONS)}, got {population!r}")
    mni, anatomy = load_mni(), mni_anatomy()
    template_mm = float(np.linalg.norm(mni.affine[:3, 0]))
    if voxel_mm < template_mm:
        raise ValueError(f"voxel_mm must be at least the template's {template_mm:g} mm, got {voxel_mm}")
    rng = np.random.default_rng([seed, 6])
    start = np.zeros(3) if crop is None else np.array([c[0] for c in crop], float)
    shape = mni.gm.shape if crop is None else tuple(int(b - a) for a, b in crop)
    fine_affine = mni.affine.copy()
    fine_affine[:3, 3] += mni.affine[:3, :3] @ start
    factor = voxel_mm / template_mm
    if min(int(np.floor(n / factor + 1e-9)) for n in shape) < 3:
        raise ValueError(f"crop {crop} holds fewer than 3 voxels of {voxel_mm} mm along an axis")
    coords, warp_meta = random_warp(shape, fine_affine, rng, rotation_deg=5.0, scaling=0.05, translation_mm=3.0,
                                    deform_mm=3.0)
    coords += start[:, None, None, None].astype(np.float32)
    maps = {"wm": mni.wm.data, "gm": mni.gm.data, "csf": mni.csf.data, "mask": mni.mask.data,
            "deep_grey": (anatomy.regions == 4).astype(np.float32), "cortex_mm": anatomy.cortex_distance_mm}
    fine = {k: ndimage.map_coordinates(v, coords, order=1, mode="nearest") for k, v in maps.items()}
    # Core of the big tracts: far from the cortex where the template is surest of white matter.
    far, sure = np.clip((fine["cortex_mm"] - 2.0) / 10.0, 0, 1), np.clip((fine["wm"] - 0.3) / 0.6, 0, 1)
    fine["wm_core"] = fine["wm"] * far * far * (3 - 2 * far) * sure * sure * (3 - 2 * sure)
    avg = {k: _box_average(v, factor) for k, v in fine.items()}
    del fine, far, sure
    coords = np.stack([_box_average(c, factor) for c in coords])
    affine = downsample_affine(fine_affine, factor)

    mask = avg["mask"] > 0.5
    total = np.maximum(avg["wm"] + avg["gm"] + avg["csf"], 1e-6)
    wm, gm, csf = (np.where(mask, avg[k] / total, 0.0) for k in ("wm", "gm", "csf"))
    tissue = np.where(mask, np.argmax(np.stack([csf, gm, wm]), axis=0) + 1, 0).astype(np.uint8)

    s = {k: float(rng.uniform(*v)) for k, v in _HEALTHY.items()}
    s |= {k: float(rng.uniform(*v)) for k, v in asdict(POPULATIONS[population]).items()}
    sigma_vox = _FIELD_MM / voxel_mm
    noise = [_smooth_noise(mask.shape, rng, sigma_vox) for _ in range(6)]
    core = avg["wm_core"] / np.maximum(avg["wm"], 1e-6)  # mean over the voxel's white matter
    deep = avg["deep_grey"]
    icvf_wm = s["wm_icvf"] + s["wm_icvf_offset"] + 0.10 * (core - 0.5) + 0.04 * noise[0]
    icvf_gm = s["gm_icvf"] + s["gm_icvf_offset"] + 0.12 * deep + 0.04 * noise[1]
    iso_tissue = np.clip(s["tissue_isovf"] + s["isovf_offset"] + 0.015 * noise[2], 0, 1)
    iso_csf = np.clip(s["csf_isovf"] + 0.02 * noise[3], 0, 1)
    odi_wm = (s["wm_odi_edge"] + (s["wm_odi_core"] - s["wm_odi_edge"]) * core) * (1 + 0.2 * noise[4])
    odi_gm = (s["gm_odi"] - 0.15 * deep) * (1 + 0.1 * noise[5])
    odi_wm, odi_gm = (np.clip(o * s["odi_scale"], 0.02, 0.95) for o in (odi_wm, odi_gm))
    icvf_wm, icvf_gm = (np.clip(v, 0.05, 0.95) for v in (icvf_wm, icvf_gm))

    isovf = (wm + gm) * iso_tissue + csf * iso_csf
    vol_wm, vol_gm, vol_csf = wm * (1 - iso_tissue), gm * (1 - iso_tissue), csf * (1 - iso_csf)
    vol = vol_wm + vol_gm + vol_csf
    icvf = np.divide(vol_wm * icvf_wm + vol_gm * icvf_gm, vol, out=np.zeros_like(wm), where=vol > 1e-6)
    vol = vol_wm + vol_gm
    odi = np.divide(vol_wm * odi_wm + vol_gm * odi_gm, vol, out=odi_gm.copy(), where=vol > 1e-6)
    direction = _directions(coords, mni.affine, affine, gm, wm, avg["cortex_mm"], rng, sigma_vox)

    meta = {"seed": seed, "population": population, "voxel_mm": float(voxel_mm), "subject": s,
            "warp": warp_meta, "crop_mni_voxels": None if crop is None else [list(c) for c in crop]}
    maps_out = [np.where(mask, np.clip(m, 0, 1), 0).astype(np.float32) for m in (icvf, isovf, odi)]
    return MicrostructureTruth(*maps_out, direction=direction, mask=mask, tissue=tissue, affine=affine, meta=meta)


def b0_level(truth: MicrostructureTruth) -> np.ndarray:
    """Relative b=0 signal: 1 at ICVF 0.7 without free water, more with more extracellular or free water.

    Extracellular and free water have longer T2 than intra-axonal water, so a
    T2-weighted b=0 brightens as ICVF falls (grey matter about 1.2) and towards
    ``_S0_FREE_WATER`` as ISOVF rises; 0 outside the brain.
    """
    tissue = 1.0 + 0.6 * (0.7 - truth.icvf)
    level = (1.0 - truth.isovf) * tissue + truth.isovf * _S0_FREE_WATER
    return np.where(truth.mask, level, 0.0).astype(np.float32)


def simulate_dwi(
    truth: MicrostructureTruth,
    scheme: GradientScheme,
    *,
    snr: float,
    rng: np.random.Generator,
    s0: float = 1000.0,
    downsample: int = 1,
) -> np.ndarray:
    """Diffusion-weighted volumes (X', Y', Z', N) of ``truth`` on ``scheme``, float32.

    Parameters
    ----------
    truth : MicrostructureTruth
    scheme : GradientScheme
    snr : float
        ``s0`` over the noise standard deviation (per channel).
    rng : numpy.random.Generator
        Source of the noise.
    s0 : float
        b=0 signal of healthy white matter (ICVF 0.7, no free water); voxels
        scale it by :func:`b0_level`.
    downsample : int
        Average blocks of ``downsample**3`` noise-free voxels into one before the
        noise (a coarser acquisition, on ``downsample_affine(truth.affine, downsample)``).

    Notes
    -----
    ``S = s0 * level * noddi_signal(...)`` in the brain, 0 outside; the
    magnitude of ``S`` plus complex Gaussian noise of std ``s0 / snr`` is Rician.
    """
    _check_acquisition(snr, downsample)
    inside = np.flatnonzero(truth.mask)
    icvf, isovf, odi = (m.reshape(-1)[inside] for m in (truth.icvf, truth.isovf, truth.odi))
    direction = truth.direction.reshape(-1, 3)[inside]
    signal = np.empty((inside.size, scheme.n), np.float32)
    for a in range(0, inside.size, _CHUNK):
        part = slice(a, a + _CHUNK)
        signal[part] = noddi_signal(scheme, icvf[part], isovf[part], odi[part], direction[part])
    signal *= s0 * b0_level(truth).reshape(-1)[inside][:, None]

    out_shape = tuple(n // int(downsample) for n in truth.mask.shape)
    out = np.empty((*out_shape, scheme.n), np.float32)
    # A few volumes at a time bounds the memory of the full-grid arrays.
    step = max(1, 2**24 // truth.mask.size)
    for v in range(0, scheme.n, step):
        volumes = slice(v, v + step)
        clean = np.zeros((truth.mask.size, min(step, scheme.n - v)), np.float32)
        clean[inside] = signal[:, volumes]
        clean = _box_average(clean.reshape(*truth.mask.shape, -1), downsample)
        out[..., volumes] = rician(clean, s0 / snr, rng)
    return out


def _check_acquisition(snr: float, downsample: int) -> None:
    if not snr > 0:
        raise ValueError(f"snr must be positive, got {snr}")
    if int(downsample) != downsample or downsample < 1:
        raise ValueError(f"downsample must be a positive integer, got {downsample}")


def make_microstructure_subject(
    seed: int,
    *,
    scheme: GradientScheme | str,
    voxel_mm: float = 2.0,
    snr: float = 30.0,
    population: str = "target",
    downsample: int = 1,
    crop: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None = None,
) -> MicrostructurePhantom:
    """Draw one subject: NODDI truth at ``voxel_mm`` and its dMRI at ``voxel_mm * downsample``.

    Parameters
    ----------
    seed : int
        Anatomy, microstructure and noise all follow from it (the noise from a
        stream of its own, so the truth does not depend on the scheme).
    scheme : GradientScheme or str
        The acquisition, or the name of one of DIPY's tables
        (:meth:`GradientScheme.from_dipy`).
    voxel_mm, population, crop
        As for :func:`make_truth`.
    snr, downsample
        As for :func:`simulate_dwi`.

    Returns
    -------
    MicrostructurePhantom
    """
    _check_acquisition(snr, downsample)  # before the truth, which takes minutes
    name = scheme if isinstance(scheme, str) else None
    scheme = GradientScheme.from_dipy(scheme) if isinstance(scheme, str) else scheme
    truth = make_truth(seed, voxel_mm=voxel_mm, population=population, crop=crop)
    s0 = 1000.0
    dwi = simulate_dwi(truth, scheme, snr=snr, rng=np.random.default_rng([seed, 7]), s0=s0, downsample=downsample)
    meta = {**truth.meta, "snr": float(snr), "s0": s0, "downsample": int(downsample),
            "dwi_voxel_mm": float(voxel_mm * downsample),
            "scheme": {"name": name, "shells": list(scheme.shells), "n_volumes": scheme.n,
                       "n_b0": int(scheme.b0_mask.sum())}}
    return MicrostructurePhantom(truth=truth, dwi=dwi, scheme=scheme,
                                 dwi_affine=downsample_affine(truth.affine, downsample), meta=meta)
