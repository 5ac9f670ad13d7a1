"""Field-strength degradation: what a 64 mT scanner makes of the anatomy a 3 T scanner sees.

The model has five parts, each a function here so tests can check it alone:

1. contrast: tissue signal from relaxation times at the field strength
   (:data:`RELAXATION`) through the sequence's signal equation
   (:func:`tissue_signal`): T1 shortens several-fold from 3 T to 64 mT while
   T2 barely changes, so grey/white T1 contrast shrinks;
2. resolution: an in-plane point spread of the coarse voxel and thick axial
   slices (default 1.6 x 1.6 x 5 mm, the Hyperfine Swoop's clinical protocols);
3. a smooth multiplicative receive-bias field;
4. Rician noise at low-field SNR (signal grows about as B0^1.5, so the
   white-matter SNR of a minutes-long 64 mT scan is near 10-15);
5. a slight rigid misregistration of the low-field scan against the 3 T one
   (the paired scans of Islam et al. were co-registered, not identical).

References
----------
O'Reilly T, Webb AG. In vivo T1 and T2 relaxation time maps of healthy human
brain tissue, skull, and scalp at 50 mT. Magn Reson Med 2022;87:884-895.
Stanisz GJ, et al. T1, T2 relaxation and magnetization transfer in tissue at
3T. Magn Reson Med 2005;54:507-512.
Islam KT, et al. Improving portable low-field MRI image quality through image-
to-image translation using paired low- and high-field images. Sci Rep
2023;13:21183.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from mrinets.physics.sampling import affine_resample, thick_slices

__all__ = [
    "RELAXATION",
    "SEQUENCES",
    "LowFieldConfig",
    "bias_field",
    "contrast_levels",
    "degrade",
    "rician",
    "rigid_matrix",
    "tissue_signal",
]

TISSUES = ("wm", "gm", "csf")
# (T1 ms, T2 ms) of white matter, grey matter and CSF; proton density is field-independent.
RELAXATION = {
    "3T": {"wm": (1084.0, 69.0), "gm": (1820.0, 99.0), "csf": (4160.0, 1800.0)},  # Stanisz 2005 (CSF: water)
    "64mT": {"wm": (275.0, 102.0), "gm": (327.0, 111.0), "csf": (3695.0, 1800.0)},  # O'Reilly & Webb 2022 (50 mT)
}
PROTON_DENSITY = {"wm": 0.69, "gm": 0.80, "csf": 1.00}
# Sequence timings in ms. 64 mT: the Swoop's T1 (inversion-recovery FSE) and T2 (FSE) protocols; 3 T: FSE T2.
SEQUENCES = {
    ("64mT", "t1"): {"kind": "ir", "tr": 1500.0, "ti": 300.0, "te": 6.0},
    ("64mT", "t2"): {"kind": "se", "tr": 2500.0, "te": 180.0},
    ("3T", "t2"): {"kind": "se", "tr": 4000.0, "te": 100.0},
}


def tissue_signal(t1_ms: float, t2_ms: float, pd: float, sequence: dict) -> float:
    """Signal of one tissue: spin echo ``PD (1 - e^-TR/T1) e^-TE/T2`` or phase-sensitive inversion recovery
    ``PD max(1 - 2 e^-TI/T1 + e^-TR/T1, 0) e^-TE/T2``."""
    tr, te = sequence["tr"], sequence["te"]
    if sequence["kind"] == "ir":
        # Phase-sensitive reconstruction: tissue not yet through its null (CSF) stays dark, not mirrored bright.
        longitudinal = max(1.0 - 2.0 * np.exp(-sequence["ti"] / t1_ms) + np.exp(-tr / t1_ms), 0.0)
    elif sequence["kind"] == "se":
        longitudinal = 1.0 - np.exp(-tr / t1_ms)
    else:
        raise ValueError(f"sequence kind must be 'ir' or 'se', got {sequence['kind']!r}")
    return float(pd * longitudinal * np.exp(-te / t2_ms))


def contrast_levels(field: str, contrast: str, jitter: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Signal of (WM, GM, CSF) at ``field`` for ``contrast``, scaled so that the brightest is 1.

    ``jitter`` multiplies each tissue's T1 (subjects differ by about 10 %).
    """
    sequence = SEQUENCES[field, contrast]
    levels = np.array([tissue_signal(RELAXATION[field][t][0] * j, RELAXATION[field][t][1], PROTON_DENSITY[t],
                                     sequence) for t, j in zip(TISSUES, jitter)])
    return levels / levels.max()


def rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of ``signal`` plus complex Gaussian noise of std ``sigma`` per channel."""
    real = signal + rng.normal(0.0, sigma, signal.shape)
    imag = rng.normal(0.0, sigma, signal.shape)
    return np.sqrt(real * real + imag * imag).astype(np.float32)


def bias_field(shape: Sequence[int], rng: np.random.Generator, strength: float) -> np.ndarray:
    """exp of a random smooth (second-order) field whose log spans ``strength``."""
    axes = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij")
    terms = [axes[0], axes[1], axes[2], axes[0] * axes[1], axes[1] * axes[2], axes[0] * axes[2],
             axes[0] ** 2, axes[1] ** 2, axes[2] ** 2]
    log_field = sum(c * t for c, t in zip(rng.normal(0.0, 1.0, len(terms)), terms))
    spread = float(log_field.max() - log_field.min()) or 1.0
    return np.exp(strength * (log_field - log_field.mean()) / spread).astype(np.float32)


def rigid_matrix(angles_deg: Sequence[float], shift_mm: Sequence[float], centre: Sequence[float]) -> np.ndarray:
    """4x4 world transform: rotation (x, then y, then z) about ``centre`` and a shift."""
    cx, cy, cz = np.cos(np.deg2rad(angles_deg))
    sx, sy, sz = np.sin(np.deg2rad(angles_deg))
    rot = (np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
           @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]))
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = np.asarray(centre) - rot @ np.asarray(centre) + np.asarray(shift_mm)
    return out


@dataclass(frozen=True)
class LowFieldConfig:
    """Acquisition of the simulated 64 mT scan.

    Parameters
    ----------
    voxel_mm : (float, float, float)
        Acquired voxel; the last is the axial slice thickness (contiguous slices).
    snr : float
        White-matter signal over the noise std per channel (Rician magnitude).
    bias : float
        Log range of the receive-bias field.
    misregistration_deg, misregistration_mm : float
        Largest rotation about each axis and shift along each axis of the
        low-field scan against the 3 T one.
    """

    voxel_mm: tuple[float, float, float] = (1.6, 1.6, 5.0)
    snr: float = 12.0
    bias: float = 0.4
    misregistration_deg: float = 1.5
    misregistration_mm: float = 1.5

    def __post_init__(self) -> None:
        if len(self.voxel_mm) != 3 or not all(np.isfinite(v) and v > 0 for v in self.voxel_mm):
            raise ValueError(f"voxel_size must be three positive lengths in mm, got {self.voxel_mm}")
        if not (np.isfinite(self.snr) and self.snr > 0):
            raise ValueError(f"snr must be positive, got {self.snr}")
        for name in ("bias", "misregistration_deg", "misregistration_mm"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must not be negative, got {value}")

    def as_dict(self) -> dict:
        return asdict(self)


def degrade(
    tissue: np.ndarray,
    detail: np.ndarray,
    affine: np.ndarray,
    contrast: str,
    rng: np.random.Generator,
    config: LowFieldConfig = LowFieldConfig(),
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Simulate a 64 mT scan of a subject given on a fine grid.

    Parameters
    ----------
    tissue : ndarray (3, X, Y, Z)
        WM, GM and CSF fractions on the fine grid.
    detail : ndarray (X, Y, Z)
        High-pass anatomical texture in [-1, 1] (from the subject's 3 T image),
        carried into the low-field image at 15 % so it holds more than three flat tissue levels.
    affine : ndarray
        The fine grid's affine.
    contrast : {"t1", "t2"}
    rng : numpy Generator
    config : LowFieldConfig

    Returns
    -------
    image, lf_affine, meta
        The low-field magnitude image on its own (coarse, thick-slice) grid,
        that grid's affine, and every random choice made.
    """
    jitter = rng.uniform(0.9, 1.1, 3)
    levels = contrast_levels("64mT", contrast, jitter)
    signal = np.tensordot(levels.astype(np.float32), tissue.astype(np.float32), axes=1) * (1.0 + 0.15 * detail)
    signal = np.clip(signal, 0, None) * bias_field(signal.shape, rng, config.bias) if config.bias > 0 else signal
    voxel = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    centre = affine[:3, :3] @ ((np.asarray(signal.shape) - 1) / 2.0) + affine[:3, 3]
    angles = rng.uniform(-config.misregistration_deg, config.misregistration_deg, 3)
    shift = rng.uniform(-config.misregistration_mm, config.misregistration_mm, 3)
    moved = rigid_matrix(angles, shift, centre)
    # In-plane point spread of the coarse voxel (Gaussian of FWHM = voxel), then thick slices along z.
    fwhm = np.array([config.voxel_mm[0], config.voxel_mm[1], 0.0]) / voxel
    blurred = ndimage.gaussian_filter(signal, np.sqrt(np.clip(fwhm**2 - 1.0, 0, None)) / 2.3548)
    lf_affine = np.array(affine, float)
    lf_affine[:3, :3] = affine[:3, :3] * (np.array([config.voxel_mm[0], config.voxel_mm[1], voxel[2]]) / voxel)
    shape = np.maximum(np.floor((np.array(signal.shape) - 1) * voxel / np.array([*config.voxel_mm[:2], voxel[2]]))
                       .astype(int) + 1, 1)
    # The scanner's grid sits in the moved head: sampling the subject at moved grid points.
    inplane = affine_resample(blurred, affine, moved @ lf_affine, tuple(shape), order=1)
    image, lf_affine = thick_slices(inplane, lf_affine, slice_thickness=config.voxel_mm[2], axis=2)
    image = rician(image, float(levels[0]) / config.snr, rng)
    meta = {"contrast": contrast, "field": "64mT", "levels_wm_gm_csf": levels.tolist(),
            "t1_jitter": jitter.tolist(), "rotation_deg": angles.tolist(),
            "shift_mm": shift.tolist(), "config": config.as_dict()}
    return image, lf_affine, meta
