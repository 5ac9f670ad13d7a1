"""QSM pipeline: GRE magnitude + phase -> susceptibility map (ppm).

Steps: phase units -> brain mask -> echo combination with Laplacian and
temporal unwrapping -> total field (ppm) -> V-SHARP -> dipole inversion
(TKD or magnitude-weighted TV).

References
----------
Schofield MA, Zhu Y. Opt Lett 2003;28:1194 (Laplacian unwrapping).
Wu B, et al. Magn Reson Med 2012;67:137 (V-SHARP).
Shmueli K, et al. Magn Reson Med 2009;62:1510; Schweser F, et al. Magn Reson
Med 2013;69:1581 (TKD and its correction).
Bilgic B, et al. Magn Reson Med 2014;72:1444 (TV-regularised QSM by ADMM).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from mrinets.errors import ConfigError, DimensionError, EmptyImageError, InputError
from mrinets.io import Image, OutputStage, check_same_grid, load, load_labels, load_mask, load_stack, save, write_json
from mrinets.io.nifti import nifti_stem
from mrinets.io.tables import read_tsv
from mrinets.metrics.qsm import qsm_scores, roi_means
from mrinets.physics.background import check_max_radius, default_vsharp_radii, restore_harmonic_loss, vsharp
from mrinets.physics.dipole import b0_direction_in_voxels
from mrinets.physics.echoes import B0_RANGE, MIN_ECHO_TIME, GreAcquisition, detect_phase_units, fit_echoes, hz_to_ppm
from mrinets.physics.inversion import QsmReconstructor
from mrinets.physics.unwrap import unwrap_laplacian, wrap
from mrinets.preprocess.mask import gre_brain_mask, largest_component

__all__ = [
    "OUTPUT_NAMES",
    "QsmConfig",
    "QsmResult",
    "bids_output_names",
    "predict_and_save",
    "combine_echoes",
    "evaluate",
    "invert",
    "invert_local_field",
    "predict",
    "train",
    "read_labels",
    "reconstruct",
]

log = logging.getLogger(__name__)

METHODS = ("tkd", "tv", "pedqnet")
# Brain mask when none is given: threshold + morphology, or the network of mrinets.pipelines.qsm_mask.
MASKERS = ("classic", "net")
# Gaussian width (mm) of the receive phase smoothing: far below the scale over which coil phases vary.
PHASE_OFFSET_SIGMA_MM = 4.0
FIELD_UNITS = ("ppm", "hz")
OUTPUT_NAMES = {
    "chi": "chi.nii.gz",
    "local_field": "local_field.nii.gz",
    "total_field": "total_field.nii.gz",
    "unwrapped_phase": "unwrapped_phase.nii.gz",
    "mask": "mask.nii.gz",
    "measures": "measures.json",
    "qc": "qc_chi.png",
    "nuclei": "nuclei.nii.gz",
}


def bids_output_names(prefix: str) -> dict[str, str]:
    """Output names of a BIDS derivative, as QSMxT names them (``<prefix>_Chimap.nii.gz``)."""
    return {
        "chi": f"{prefix}_Chimap.nii.gz",
        "local_field": f"{prefix}_desc-local_fieldmap.nii.gz",
        "total_field": f"{prefix}_desc-total_fieldmap.nii.gz",
        "unwrapped_phase": f"{prefix}_desc-unwrapped_phase.nii.gz",
        "mask": f"{prefix}_desc-brain_mask.nii.gz",
        "measures": f"{prefix}_desc-qsm_measures.json",
        "qc": f"{prefix}_desc-qc_Chimap.png",
        "nuclei": f"{prefix}_desc-nuclei_dseg.nii.gz",
    }


@dataclass
class QsmConfig:
    """Parameters of a QSM reconstruction (every field is recorded in measures.json).

    Parameters
    ----------
    echo_times : tuple of float
        Echo times in seconds, one per phase volume.
    b0 : float
        Field strength in tesla.
    b0_dir : tuple of float
        B0 direction in world (scanner) coordinates; the image affine carries it
        into voxel axes.
    method : {"tkd", "tv", "pedqnet"}
        Dipole inversion (``pedqnet``: the unsupervised deep network of
        :mod:`mrinets.pipelines.pedqnet`).
    vsharp_max_radius_mm : float
        Largest V-SHARP kernel; kernels go down to one voxel.
    vsharp_threshold : float
        Truncation of V-SHARP's deconvolution.
    harmonic_iterations : int
        Steps of :func:`~mrinets.physics.background.restore_harmonic_loss`,
        which gives back the local field V-SHARP removes with the background
        (0: plain V-SHARP).
    tkd_threshold : float
        TKD truncation of the dipole kernel.
    tv_lambda, tv_max_iter : float, int
        TV regularisation weight (field in ppm) and ADMM iterations.
    weights : str, optional
        PedQ-NET weights file (default: the shipped ``qsm_pedqnet.pt``).
    finetune_steps : int
        PedQ-NET self-supervised steps on this scan's field before predicting.
    device : str
        ``auto``, ``cpu`` or ``cuda`` for PedQ-NET and the masking network.
    masker : {"classic", "net"}
        Brain mask when none is given: :func:`~mrinets.preprocess.mask.gre_brain_mask`
        or the network of :mod:`mrinets.pipelines.qsm_mask`.
    mask_weights : str, optional
        Masking network weights (default: the shipped ``qsm_brainmask.pt``).
    nuclei : bool
        PedQ-NET: also segment the deep grey nuclei (its UNETR; False saves its run time).
    """

    echo_times: tuple[float, ...]
    b0: float
    b0_dir: tuple[float, float, float] = (0.0, 0.0, 1.0)
    method: str = "tkd"
    vsharp_max_radius_mm: float = 12.0
    vsharp_threshold: float = 0.05
    harmonic_iterations: int = 3
    tkd_threshold: float = 0.19
    tv_lambda: float = 1e-3
    tv_max_iter: int = 100
    weights: str | None = None
    finetune_steps: int = 0
    device: str = "auto"
    masker: str = "classic"
    mask_weights: str | None = None
    nuclei: bool = True

    def __post_init__(self) -> None:
        self.echo_times = tuple(float(t) for t in np.atleast_1d(self.echo_times))
        if not self.echo_times:
            raise ConfigError("echo_times", "give at least one echo time (seconds)")
        for te in self.echo_times:
            if not math.isfinite(te) or te <= 0:
                raise ConfigError("echo_times", f"echo times must be positive seconds, got {te:g}")
            if te > 1.0:
                raise ConfigError("echo_times", f"echo time {te:g} s is implausible: give seconds (e.g. 0.02), not ms")
        repeated = sorted({te for te in self.echo_times if self.echo_times.count(te) > 1})
        if repeated:
            raise ConfigError("echo_times", f"echo times must differ ({repeated[0]:g} s is given twice)")
        ordered = sorted(self.echo_times)
        if ordered[0] < MIN_ECHO_TIME or any(b - a < MIN_ECHO_TIME for a, b in zip(ordered, ordered[1:])):
            raise ConfigError("echo_times", f"echo times and their spacing must be at least {MIN_ECHO_TIME:g} s, got "
                                        f"{' '.join(f'{t:g}' for t in self.echo_times)}")
        if not math.isfinite(self.b0) or self.b0 <= 0:
            raise ConfigError("b0", f"field strength must be positive tesla, got {self.b0:g}")
        if not B0_RANGE[0] <= self.b0 <= B0_RANGE[1]:
            raise ConfigError("b0", f"field strength must be {B0_RANGE[0]:g} to {B0_RANGE[1]:g} T (tesla), "
                                        f"got {self.b0:g}")
        self.b0_dir = tuple(float(v) for v in self.b0_dir)  # type: ignore[assignment]
        if len(self.b0_dir) != 3 or not np.all(np.isfinite(self.b0_dir)) or not np.any(self.b0_dir):
            raise ConfigError("b0_dir", f"B0 direction must be 3 finite numbers, not all zero, got {self.b0_dir}")
        if self.method not in METHODS:
            raise ConfigError("method", f"must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.vsharp_max_radius_mm <= 0:
            raise ConfigError("vsharp_max_radius_mm", f"must be positive mm, got {self.vsharp_max_radius_mm:g}")
        if not 0 < self.vsharp_threshold < 1:
            raise ConfigError("vsharp_threshold", f"must lie in (0, 1), got {self.vsharp_threshold:g}")
        if not 0 <= self.harmonic_iterations <= 20:
            raise ConfigError("harmonic_iterations", f"must be 0 to 20, got {self.harmonic_iterations}")
        if not 0 < self.tkd_threshold < 2 / 3:
            raise ConfigError("tkd_threshold", f"must lie in (0, 2/3), got {self.tkd_threshold:g}")
        if self.tv_lambda <= 0 or self.tv_max_iter < 1:
            raise ConfigError("tv_lambda", "TV lambda must be positive and iterations at least 1")
        if self.finetune_steps < 0:
            raise ConfigError("finetune_steps", f"must not be negative, got {self.finetune_steps}")
        if self.masker not in MASKERS:
            raise ConfigError("masker", f"must be one of {', '.join(MASKERS)}, got {self.masker!r}")
        if self.mask_weights and self.masker != "net":
            raise ConfigError("mask_weights", "only applies to masker net")
        if self.method != "pedqnet" and (self.finetune_steps or self.weights):
            raise ConfigError("finetune_steps" if self.finetune_steps else "weights",
                                "only applies to method pedqnet")


@dataclass
class QsmResult:
    """Maps (RAS arrays on the input grid) and measures of one reconstruction."""

    chi: np.ndarray
    local_field: np.ndarray
    total_field: np.ndarray | None
    unwrapped_phase: np.ndarray | None
    mask: np.ndarray
    measures: dict
    reference: Image = field(repr=False)
    nuclei: np.ndarray | None = None

    def save(self, outdir: str | Path, *, qc: bool = True, names: dict[str, str] | None = None) -> list[Path]:
        """Write chi, fields, phase, mask, measures and a QC PNG, all or nothing.

        ``names`` maps each output (keys of :data:`OUTPUT_NAMES`) to a file name,
        e.g. :func:`bids_output_names` for a BIDS derivative.
        """
        names = OUTPUT_NAMES if names is None else names
        with OutputStage(outdir) as stage:
            ref = self.reference
            save(self.chi, stage.path(names["chi"]), like=ref)
            save(self.local_field, stage.path(names["local_field"]), like=ref)
            if self.total_field is not None:
                save(self.total_field, stage.path(names["total_field"]), like=ref)
            if self.unwrapped_phase is not None:
                save(self.unwrapped_phase, stage.path(names["unwrapped_phase"]), like=ref)
            if self.nuclei is not None:
                from mrinets.pipelines.pedqnet import NUCLEI_CLASSES

                nuclei_name = names.get("nuclei", OUTPUT_NAMES["nuclei"])
                save(self.nuclei, stage.path(nuclei_name), like=ref, dtype=np.uint8)
                rows = ["index\tname", *[f"{i}\t{n}" for i, n in enumerate(NUCLEI_CLASSES) if i]]
                tsv = nuclei_name.replace(".nii.gz", ".tsv")
                stage.path(tsv).write_text("\n".join(rows) + "\n", encoding="utf-8")
            save(self.mask.astype(np.uint8), stage.path(names["mask"]), like=ref, dtype=np.uint8)
            write_json(stage.path(names["measures"]), self.measures)
            if qc:
                from mrinets.report import qc_png

                qc_png(
                    Image(self.chi, ref.affine),
                    stage.path(names["qc"]),
                    contours=self.mask,
                    title=f"QSM ({self.measures['method']}) chi [ppm]",
                    vmin=-0.15,
                    vmax=0.25,
                    colorbar_label="ppm",
                )
            return [stage.final(n) for n in stage.names]


def read_labels(path: str | Path, *, like: Image) -> tuple[np.ndarray, dict[int, str]]:
    """Label map on ``like``'s grid and names from a BIDS-style ``.tsv`` beside it.

    The TSV (``<stem>.tsv``, columns ``index`` and ``name``) is optional; without
    it labels are named by their number.
    """
    labels = load_labels(path, like=like)
    tsv = Path(path).with_name(f"{nifti_stem(path)}.tsv")
    names: dict[int, str] = {}
    if tsv.exists():
        for row in read_tsv(tsv, required=("index", "name")):
            try:
                names[int(row["index"])] = row["name"]
            except ValueError:
                raise InputError(f"{tsv}:{row.line}", f"index {row['index']!r} is not a whole number") from None
    return labels, names


def phase_reliability(phase: np.ndarray, mask: np.ndarray, *, max_step: float = np.pi / 2) -> np.ndarray:
    """Voxels of ``mask`` whose phase is sampled finely enough to unwrap.

    A voxel is unreliable when its wrapped phase differs from a neighbour inside
    the mask by more than ``max_step`` rad: there (next to air-tissue borders,
    or where noise dominates) the field changes faster than the grid samples it
    and no spatial unwrapper can recover it, so the voxel is left out of the
    field rather than let a 2 pi error spread through the dipole inversion.
    """
    worst = np.zeros(phase.shape, np.float32)
    for axis in range(3):
        step = np.abs(np.angle(np.exp(1j * np.diff(phase, axis=axis)))).astype(np.float32)
        both = np.logical_and(np.take(mask, range(phase.shape[axis] - 1), axis=axis),
                              np.take(mask, range(1, phase.shape[axis]), axis=axis))
        step = np.where(both, step, 0)
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis] = slice(0, -1)
        hi[axis] = slice(1, None)
        worst[tuple(lo)] = np.maximum(worst[tuple(lo)], step)
        worst[tuple(hi)] = np.maximum(worst[tuple(hi)], step)
    return mask & (worst <= max_step)


def combine_echoes(
    phase: np.ndarray,
    magnitude: np.ndarray,
    *,
    echo_times: tuple[float, ...],
    mask: np.ndarray,
    voxel_size: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unwrap multi-echo phase and fit one frequency map.

    Returns ``(unwrapped_phase (X, Y, Z, E), field_hz (X, Y, Z), reliable)``,
    ``reliable`` the voxels of ``mask`` kept by :func:`phase_reliability`.

    Notes
    -----
    One echo: Laplacian unwrapping, then ``f = phi / (2 pi TE)``. Several echoes:
    the complex ratio of consecutive echoes has a small phase (``2 pi f dTE``);
    it is unwrapped spatially once (Laplacian, congruent), giving a coarse
    frequency and the TE = 0 phase ``phi0``. Each echo is then unwrapped in time
    by adding the multiple of 2 pi that brings it nearest to
    ``phi0 + 2 pi f TE_n``, which is exact where the coarse prediction is within
    pi, and the magnitude-weighted line with offset is fitted to those phases.
    Unlike per-echo spatial unwrapping, this leaves no per-echo constant or
    harmonic term that would differ between echoes.
    """
    te = np.asarray(echo_times, dtype=np.float64)
    if te.size == 1:
        mask = largest_component(phase_reliability(phase[..., 0], mask))
        unwrapped = unwrap_laplacian(phase[..., 0], mask=mask, voxel_size=voxel_size, congruent=True)[..., None]
        fit = fit_echoes(unwrapped, echo_times=echo_times, mask=mask)
        return unwrapped, fit.field_hz, mask
    z = magnitude * np.exp(1j * phase)
    steps = np.diff(te)
    uniform = np.allclose(steps, steps[0], rtol=1e-3)
    pairs = range(te.size - 1) if uniform else range(1)
    ratio = sum(z[..., n + 1] * np.conj(z[..., n]) for n in pairs)
    dte = float(steps[0])
    mask = largest_component(phase_reliability(np.angle(ratio), mask))
    dphi = unwrap_laplacian(np.angle(ratio), mask=mask, voxel_size=voxel_size, congruent=True)
    omega = dphi / dte
    phi0 = np.angle(z[..., 0] * np.exp(-1j * omega * te[0]))
    predicted = phi0[..., None] + omega[..., None] * te
    unwrapped = phase + 2 * np.pi * np.round((predicted - phase) / (2 * np.pi))
    unwrapped = np.where(mask[..., None], unwrapped, 0).astype(np.float32)
    fit = fit_echoes(unwrapped, echo_times=echo_times, magnitude=magnitude, mask=mask, offset=True)
    # The phase at TE = 0 (receive phase) is smooth; fitting it voxel by voxel costs most of the
    # frequency's noise (MCPC-3D-S, Eckstein 2018): smooth it, then fit the frequency through it.
    phi0 = smooth_phase_offset(fit.offset, magnitude[..., 0], mask, voxel_size=voxel_size)
    phi0 = fit.offset - np.angle(np.exp(1j * (fit.offset - phi0)))
    fit = fit_echoes(unwrapped - phi0[..., None], echo_times=echo_times, magnitude=magnitude, mask=mask)
    return unwrapped, fit.field_hz, mask


def smooth_phase_offset(offset: np.ndarray, weight: np.ndarray, mask: np.ndarray, *, voxel_size,
                        sigma_mm: float = PHASE_OFFSET_SIGMA_MM) -> np.ndarray:
    """Smooth version of a phase map (rad) inside ``mask``, unbiased at the mask's border.

    The map is unwrapped (Laplacian), a ``weight``-weighted quadratic trend is
    fitted over the mask and only the rest is Gaussian-smoothed (normalised
    by the smoothed weights): smoothing the trend itself would bias the border,
    where the Gaussian sees one side only.
    """
    from scipy import ndimage

    phi = unwrap_laplacian(offset, mask=mask, voxel_size=voxel_size, congruent=True)
    pos = np.nonzero(mask)
    xyz = [(p - p.mean()) / max(float(np.ptp(p)), 1.0) for p in (np.asarray(q, np.float64) for q in pos)]
    terms = [np.ones_like(xyz[0]), *xyz, *(xyz[i] * xyz[j] for i in range(3) for j in range(i, 3))]
    design = np.stack(terms, axis=1)
    w = np.sqrt(np.maximum(weight[pos], 0)).astype(np.float64)
    coef = np.linalg.lstsq(design * w[:, None], phi[pos] * w, rcond=None)[0]
    trend = np.zeros(offset.shape, np.float64)
    trend[pos] = design @ coef
    sigma = [sigma_mm / float(h) for h in voxel_size]
    wmap = np.where(mask, weight, 0).astype(np.float64)
    rest = ndimage.gaussian_filter(wmap * (phi - trend), sigma)
    norm = ndimage.gaussian_filter(wmap, sigma)
    smooth = trend + rest / np.where(norm > 0, norm, 1)
    return np.where(mask, smooth, 0).astype(np.float32)


def reconstruct(
    magnitude: np.ndarray,
    phase: np.ndarray,
    *,
    affine: np.ndarray,
    config: QsmConfig,
    mask: np.ndarray | None = None,
    model=None,
    mask_model=None,
) -> dict[str, np.ndarray | dict]:
    """Run the QSM chain on RAS arrays (phase in radians, echoes on the last axis).

    Returns a dict with ``chi`` (ppm), ``local_field`` and ``total_field`` (ppm),
    ``unwrapped_phase`` (rad), ``mask`` (eroded by V-SHARP) and ``timings`` (s).
    """
    mag = magnitude if magnitude.ndim == 4 else magnitude[..., None]
    phs = phase if phase.ndim == 4 else phase[..., None]
    voxel_size = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    timings: dict[str, float] = {}
    tic = time.perf_counter()
    if mask is not None:
        brain = mask.astype(bool)
    elif config.masker == "net":
        from mrinets.pipelines.qsm_mask import net_brain_mask

        brain = net_brain_mask(mag, voxel_size=voxel_size, model=mask_model, device=config.device)
    else:
        brain = gre_brain_mask(mag, voxel_size=voxel_size)
    timings["mask"] = time.perf_counter() - tic

    tic = time.perf_counter()
    unwrapped, field_hz, brain = combine_echoes(
        phs, mag, echo_times=config.echo_times, mask=brain, voxel_size=voxel_size
    )
    total_ppm = hz_to_ppm(field_hz, b0=config.b0).astype(np.float32)
    timings["unwrap"] = time.perf_counter() - tic

    acq = GreAcquisition(echo_times=config.echo_times, b0=config.b0, b0_dir=config.b0_dir, voxel_size=voxel_size)
    b0_vox = acq.b0_dir_in_voxels(affine)
    tic = time.perf_counter()
    radii = default_vsharp_radii(voxel_size, max_radius_mm=config.vsharp_max_radius_mm)
    local, eroded = vsharp(total_ppm, brain, voxel_size=voxel_size, radii=radii, threshold=config.vsharp_threshold)
    if not eroded.any():
        raise EmptyImageError("mask", "no voxel is left after V-SHARP erosion: the brain mask is too small")
    local = restore_harmonic_loss(total_ppm, brain, local, eroded, voxel_size=voxel_size, b0_dir=b0_vox, radii=radii,
                                  threshold=config.vsharp_threshold, iterations=config.harmonic_iterations,
                                  tkd_threshold=config.tkd_threshold)
    timings["vsharp"] = time.perf_counter() - tic

    tic = time.perf_counter()
    weight = np.sqrt((mag**2).mean(axis=-1))
    chi, nuclei = invert_local_field(local, eroded, voxel_size=voxel_size, b0_vox=b0_vox, config=config,
                                     magnitude=weight, te=max(config.echo_times), model=model)
    timings["inversion"] = time.perf_counter() - tic
    return {
        "chi": chi.astype(np.float32),
        "nuclei": nuclei,
        "local_field": local.astype(np.float32),
        "total_field": np.where(brain, total_ppm, 0).astype(np.float32),
        "unwrapped_phase": unwrapped,
        "mask": eroded,
        "b0_dir_voxels": b0_vox,
        "timings": timings,
    }


def invert_local_field(
    local: np.ndarray,
    mask: np.ndarray,
    *,
    voxel_size,
    b0_vox,
    config: QsmConfig,
    magnitude: np.ndarray | None = None,
    te: float | None = None,
    model=None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Dipole inversion of a local field (ppm) by ``config.method``: ``(chi, nuclei or None)``.

    ``te`` (s) with ``config.b0`` sets PedQ-NET's fine-tuning phase scale
    (radians per ppm); without it the training's is used. ``model``: PedQ-NET
    already loaded (default: ``config.weights``).
    """
    if config.method == "pedqnet":
        from mrinets.pipelines.pedqnet import invert, load_model, phase_scale

        model = load_model(config.weights) if model is None else model
        scale = phase_scale(config.b0, te) if te is not None else None
        out = invert(local, mask, voxel_size=voxel_size, b0_dir=b0_vox, model=model, magnitude=magnitude,
                     scale=scale, finetune_steps=config.finetune_steps, device=config.device,
                     segment=config.nuclei)
        return out["chi"], out["nuclei"]
    if config.method == "tkd":
        model = QsmReconstructor("tkd", threshold=config.tkd_threshold)
    else:
        model = QsmReconstructor("tv", lam=config.tv_lambda, max_iter=config.tv_max_iter)
    return model.run(local, mask, voxel_size=voxel_size, b0_dir=b0_vox, magnitude=magnitude), None


def _pedqnet_model(config: QsmConfig):
    """PedQ-NET weights, read before any work so that a bad file fails first (None for other methods)."""
    if config.method != "pedqnet":
        return None
    from mrinets.pipelines.pedqnet import load_model

    return load_model(config.weights)


def _load_gre(paths: str | Path | list | tuple) -> Image:
    if isinstance(paths, (list, tuple)):
        return load_stack(paths) if len(paths) > 1 else load(paths[0], ndim=(3, 4))
    return load(paths, ndim=(3, 4))


def predict(
    magnitude: str | Path | list | tuple,
    phase: str | Path | list | tuple,
    *,
    config: QsmConfig,
    mask: str | Path | None = None,
    labels: str | Path | None = None,
) -> QsmResult:
    """Reconstruct a susceptibility map from GRE magnitude and phase files.

    ``magnitude`` and ``phase`` are each one 3D/4D file (echoes on the last
    axis) or a list of 3D files, one per echo. Every input is checked before
    anything is computed; problems raise an :class:`~mrinets.errors.InputError`
    naming the file.
    """
    mag_img = _load_gre(magnitude)
    phase_img = _load_gre(phase)
    if mag_img.path is not None and phase_img.path is not None and mag_img.path.resolve() == phase_img.path.resolve():
        raise InputError(phase_img.path, "is given as both the magnitude and the phase")
    check_same_grid(mag_img, phase_img)
    n_echoes = phase_img.shape[3] if phase_img.data.ndim == 4 else 1
    if n_echoes != len(config.echo_times):
        raise DimensionError(
            phase_img.path, f"has {n_echoes} echo(es) but {len(config.echo_times)} echo time(s) were given with --te"
        )
    if mag_img.shape != phase_img.shape:
        raise DimensionError(mag_img.path, f"shape {mag_img.shape} does not match phase shape {phase_img.shape}")
    try:
        check_max_radius(config.vsharp_max_radius_mm, mag_img.voxel_size, mag_img.spatial_shape)
    except ValueError as exc:
        raise ConfigError("vsharp_max_radius_mm", str(exc)) from None
    # Echoes given in any order are sorted with their volumes: the echo fit needs increasing times.
    order = np.argsort(config.echo_times, kind="stable")
    if np.any(order != np.arange(order.size)):
        mag_img = mag_img.with_data(mag_img.data[..., order])
        phase_img = phase_img.with_data(phase_img.data[..., order])
        config = replace(config, echo_times=tuple(config.echo_times[i] for i in order))
    try:
        scale = detect_phase_units(phase_img.data)
    except ValueError as exc:
        raise InputError(phase_img.path, f"phase is neither in radians nor in scanner units: {exc}") from None
    if scale != 1.0:
        log.info("phase rescaled to radians (x %.6g)", scale)
    phs = wrap(phase_img.data * np.float32(scale)).astype(np.float32)
    mag = np.abs(mag_img.data)

    mask_arr = None if mask is None else load_mask(mask, like=mag_img)
    label_arr, names = (None, {}) if labels is None else read_labels(labels, like=mag_img)
    model = _pedqnet_model(config)
    mask_model = None
    if mask_arr is None and config.masker == "net":
        from mrinets.pipelines.qsm_mask import load_mask_model

        mask_model = load_mask_model(config.mask_weights)

    out = reconstruct(mag, phs, affine=mag_img.affine, config=config, mask=mask_arr, model=model,
                      mask_model=mask_model)
    eroded = out["mask"]
    chi = out["chi"]
    measures: dict = {
        "method": config.method,
        "config": asdict(config),
        "phase_scale_to_radians": scale,
        "b0_dir_voxels": [float(v) for v in out["b0_dir_voxels"]],
        "voxel_size_mm": [float(v) for v in mag_img.voxel_size],
        "mask_volume_ml": float(eroded.sum() * np.prod(mag_img.voxel_size) / 1000.0),
        "mean_chi_ppm": float(chi[eroded].mean()),
        "timings_s": {k: round(v, 3) for k, v in out["timings"].items()},
        "inputs": {"magnitude": _as_text(magnitude), "phase": _as_text(phase), "mask": str(mask) if mask else None},
    }
    if order.size > 1 and np.any(order != np.arange(order.size)):
        measures["echo_order"] = [int(i) for i in order]
        measures["echo_order_note"] = ("echo volumes sorted by echo time: volume i of the output is input volume "
                                       "echo_order[i]")
    if label_arr is not None:
        inside = np.where(eroded, label_arr, 0)
        measures["roi_mean_chi_ppm"] = roi_means(chi, inside, names)
    if out["nuclei"] is not None:
        from mrinets.pipelines.pedqnet import NUCLEI_CLASSES

        measures["nuclei_mean_chi_ppm"] = roi_means(chi, out["nuclei"], dict(enumerate(NUCLEI_CLASSES)))
    return QsmResult(
        chi=chi,
        local_field=out["local_field"],
        total_field=out["total_field"],
        unwrapped_phase=out["unwrapped_phase"] if phs.ndim == 4 else out["unwrapped_phase"][..., 0],
        mask=eroded,
        measures=measures,
        reference=mag_img if mag_img.data.ndim == 3 else mag_img.with_data(mag_img.data[..., 0]),
        nuclei=out["nuclei"],
    )


def invert(
    field_path: str | Path,
    *,
    config: QsmConfig,
    mask: str | Path,
    unit: str = "ppm",
    magnitude: str | Path | None = None,
    labels: str | Path | None = None,
) -> QsmResult:
    """Dipole inversion of a local field map, as QSM challenge data come (no phase processing).

    ``unit`` is ``ppm`` (relative field) or ``hz`` (frequency, converted with
    ``config.b0``). ``config.echo_times`` (one TE) sets PedQ-NET's phase scale
    for fine-tuning; ``magnitude`` (optional) weights TV and fine-tuning.
    """
    if unit not in FIELD_UNITS:
        raise ConfigError("unit", f"must be one of {', '.join(FIELD_UNITS)}, got {unit!r}")
    field_img = load(field_path, ndim=3)
    inside = load_mask(mask, like=field_img)
    local = field_img.data.astype(np.float32)
    if unit == "hz":
        local = hz_to_ppm(local, b0=config.b0)
    if not np.isfinite(local[inside]).all():
        raise InputError(field_img.path, "has NaN or infinite values inside the mask")
    mag = None
    if magnitude is not None:
        mag_img = load(magnitude, ndim=(3, 4))
        check_same_grid(field_img, mag_img)
        mag = np.abs(mag_img.data) if mag_img.data.ndim == 3 else np.sqrt((mag_img.data**2).mean(-1))
    label_arr, names = (None, {}) if labels is None else read_labels(labels, like=field_img)
    model = _pedqnet_model(config)
    local = np.where(inside, local, 0).astype(np.float32)
    b0_vox = b0_direction_in_voxels(config.b0_dir, field_img.affine)
    tic = time.perf_counter()
    chi, nuclei = invert_local_field(local, inside, voxel_size=field_img.voxel_size, b0_vox=b0_vox, config=config,
                                     magnitude=mag, te=max(config.echo_times), model=model)
    measures: dict = {
        "method": config.method,
        "config": asdict(config),
        "field_unit": unit,
        "b0_dir_voxels": [float(v) for v in b0_vox],
        "voxel_size_mm": [float(v) for v in field_img.voxel_size],
        "mask_volume_ml": float(inside.sum() * np.prod(field_img.voxel_size) / 1000.0),
        "mean_chi_ppm": float(chi[inside].mean()),
        "timings_s": {"inversion": round(time.perf_counter() - tic, 3)},
        "inputs": {"field": str(field_path), "mask": str(mask), "magnitude": str(magnitude) if magnitude else None},
    }
    if label_arr is not None:
        measures["roi_mean_chi_ppm"] = roi_means(chi, np.where(inside, label_arr, 0), names)
    if nuclei is not None:
        from mrinets.pipelines.pedqnet import NUCLEI_CLASSES

        measures["nuclei_mean_chi_ppm"] = roi_means(chi, nuclei, dict(enumerate(NUCLEI_CLASSES)))
    return QsmResult(chi=chi.astype(np.float32), local_field=local, total_field=None, unwrapped_phase=None,
                     mask=inside, measures=measures, reference=field_img, nuclei=nuclei)


def predict_and_save(
    magnitude: str | Path | list | tuple,
    phase: str | Path | list | tuple,
    outdir: str | Path,
    *,
    config: QsmConfig,
    mask: str | Path | None = None,
    labels: str | Path | None = None,
    names: dict[str, str] | None = None,
    qc: bool = True,
) -> list[Path]:
    """:func:`predict` then :meth:`QsmResult.save`: one subject of a batch."""
    result = predict(magnitude, phase, config=config, mask=mask, labels=labels)
    return result.save(outdir, qc=qc, names=names)


def _as_text(paths: str | Path | list | tuple) -> str | list[str]:
    return [str(p) for p in paths] if isinstance(paths, (list, tuple)) else str(paths)


def evaluate(
    pred: str | Path,
    truth: str | Path,
    *,
    mask: str | Path,
    labels: str | Path | None = None,
    field: str | Path | None = None,
    b0_dir: tuple[float, float, float] = (0.0, 0.0, 1.0),
) -> dict:
    """2016-challenge scores of a susceptibility map against the truth, in a mask.

    With ``labels`` (nuclei): per-ROI errors, NRMSE/HFEN/SSIM inside the
    nuclei (dilated by one voxel, so their edges count) and the nucleus-edge
    sharpness of both maps. With ``field`` (the local field, ppm) and
    ``b0_dir`` (world): the dipole kernel estimated backward from
    (field, chi) for both maps, against the true kernel.
    """
    from scipy import ndimage

    from mrinets.metrics.qsm import edge_sharpness, estimate_dipole_kernel

    pred_img = load(pred, allow_empty=True)
    truth_img = load(truth)
    check_same_grid(truth_img, pred_img)
    inside = load_mask(mask, like=truth_img)
    label_arr, names = (None, {}) if labels is None else read_labels(labels, like=truth_img)
    scores = qsm_scores(pred_img.data, truth_img.data, mask=inside, labels=label_arr, names=names)
    if label_arr is not None and (label_arr * inside).any():
        nuclei = ndimage.binary_dilation(label_arr > 0) & inside
        scores["nuclei"] = {k: v for k, v in qsm_scores(pred_img.data, truth_img.data, mask=nuclei).items()}
        lab = np.where(inside, label_arr, 0)
        scores["edge_sharpness_per_mm"] = {
            "pred": edge_sharpness(pred_img.data, lab, voxel_size=truth_img.voxel_size),
            "truth": edge_sharpness(truth_img.data, lab, voxel_size=truth_img.voxel_size),
        }
    if field is not None:
        field_img = load(field)
        check_same_grid(truth_img, field_img)
        b = b0_direction_in_voxels(b0_dir, truth_img.affine)
        f = np.where(inside, field_img.data, 0)
        scores["dipole_kernel"] = {
            name: estimate_dipole_kernel(f, np.where(inside, img.data, 0), voxel_size=truth_img.voxel_size, b0_dir=b)
            for name, img in (("pred", pred_img), ("truth", truth_img))
        }
    return scores


def train(config, outdir: str | Path, *, test_phantoms: int = 2, command: str | None = None) -> dict:
    """Train PedQ-NET (:class:`~mrinets.pipelines.pedqnet.PedQNetTrainConfig`) and write its weights and card.

    Writes ``qsm_pedqnet.pt``, ``qsm_pedqnet.md`` (model card: ``command``,
    the config, training history, held-out scores) and ``train_report.json``
    to ``outdir``. Held-out phantoms (seeds 90000 + i, every other one low-iron)
    are inverted from their true local field with TKD and the new network.
    """
    from mrinets.pipelines import pedqnet as pq

    outdir = Path(outdir)
    model, report = pq.train(config)
    report["held_out"] = pq.held_out_scores(model, config, test_phantoms) if test_phantoms else []
    card = {"command": command, "report": report}
    with OutputStage(outdir) as stage:
        pq.save_weights(model, stage.path("qsm_pedqnet.pt"), card={"command": command,
                                                                  "held_out": report["held_out"]})
        write_json(stage.path("train_report.json"), report)
        stage.path("qsm_pedqnet.md").write_text(pq.model_card(card), encoding="utf-8")
    return report
