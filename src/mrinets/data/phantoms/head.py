"""The base synthetic subject: a deformed MNI152 head with several contrasts and known tissue.

Every pipeline's phantom starts here. A subject is drawn from a seed: a random
affine (rotation, scaling, translation) and a smooth nonlinear deformation move
the real MNI152 tissue maps; contrasts are mixed from tissue fractions with
per-subject random tissue intensities and the template's own texture; a smooth
multiplicative bias field, the acquisition's resolution and slice profile, and
Rician noise make the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from mrinets.io import OutputStage, write_json
from mrinets.io.nifti import from_array, save
from mrinets.physics.sampling import resample_to_voxel_size, thick_slices

__all__ = ["CONTRASTS", "HeadSubject", "make_head", "random_warp", "rician", "rotation_matrix"]

# Relative signal of (WM, GM, CSF) per contrast at 3 T; GRE is PD-weighted and
# decays with T2* (R2* WM 21/s, GM 15/s, CSF 3/s) at the echo time.
CONTRASTS = {
    "t1w": (1.00, 0.62, 0.22),
    "t2w": (0.45, 0.62, 1.00),
    "flair": (0.55, 0.75, 0.06),
    "gre": (0.70, 0.85, 1.00),
}
_R2STAR = (21.0, 15.0, 3.0)


@dataclass
class HeadSubject:
    """One synthetic subject: images and tissue truth on one grid (RAS arrays)."""

    images: dict[str, np.ndarray]
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    meta: dict = field(default_factory=dict)

    def save(self, outdir: str | Path) -> list[Path]:
        """Write every image, the tissue maps, the mask and ``phantom.json``."""
        ref = from_array(self.gm, self.affine)
        with OutputStage(outdir) as stage:
            for name, data in self.images.items():
                save(data, stage.path(f"{name}.nii.gz"), like=ref)
            for name in ("gm", "wm", "csf"):
                save(getattr(self, name), stage.path(f"truth_{name}.nii.gz"), like=ref)
            save(self.mask.astype(np.uint8), stage.path("truth_mask.nii.gz"), like=ref, dtype=np.uint8)
            write_json(stage.path("phantom.json"), self.meta)
            return [stage.final(n) for n in stage.names]


def rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of ``signal`` plus complex Gaussian noise of std ``sigma`` per channel."""
    real = signal + rng.normal(0.0, sigma, signal.shape)
    imag = rng.normal(0.0, sigma, signal.shape)
    return np.sqrt(real * real + imag * imag).astype(np.float32)


def rotation_matrix(angles_rad: Sequence[float]) -> np.ndarray:
    """Rotation about x, then y, then z by the given angles (radians)."""
    cx, cy, cz = np.cos(angles_rad)
    sx, sy, sz = np.sin(angles_rad)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _cubic_zoom(field: np.ndarray, zoom: Sequence[float]) -> np.ndarray:
    """``ndimage.zoom(field, zoom, order=3)`` axis by axis: the cubic spline is separable, so one small
    interpolation matrix per axis (each column a zoomed unit vector) gives the same values to rounding,
    in a fortieth of the time on a 1 mm head."""
    out = field
    for axis, factor in enumerate(zoom):
        weights = np.stack([ndimage.zoom(unit, factor, order=3) for unit in np.eye(field.shape[axis])], axis=1)
        out = np.moveaxis(np.tensordot(weights, out, axes=([1], [axis])), 0, axis)
    return out


def random_warp(
    shape: Sequence[int],
    affine: np.ndarray,
    rng: np.random.Generator,
    *,
    rotation_deg: float = 8.0,
    scaling: float = 0.05,
    translation_mm: float = 4.0,
    deform_mm: float = 3.0,
    smoothness_mm: float = 15.0,
) -> tuple[np.ndarray, dict]:
    """Source voxel coordinates (3, X, Y, Z) of a random affine + smooth warp.

    The output grid is the input grid; voxel ``j`` of the subject takes the
    template value at the returned coordinates (pull-back), so every map warped
    with the same coordinates stays aligned.
    """
    angles = rng.uniform(-rotation_deg, rotation_deg, 3)
    scales = 1.0 + rng.uniform(-scaling, scaling, 3)
    shift = rng.uniform(-translation_mm, translation_mm, 3)
    centre = affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0) + affine[:3, 3]
    linear = rotation_matrix(np.deg2rad(angles)) @ np.diag(scales)
    voxel = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    world = np.stack([affine[i, 0] * grids[0] + affine[i, 1] * grids[1] + affine[i, 2] * grids[2] + affine[i, 3]
                      for i in range(3)])
    moved = np.tensordot(linear, world - centre[:, None, None, None], axes=1) + (centre + shift)[:, None, None, None]
    if deform_mm > 0:
        coarse = [max(int(np.ceil(n * v / smoothness_mm)) + 1, 2) for n, v in zip(shape, voxel)]
        for i in range(3):
            field_ = rng.normal(0.0, 1.0, coarse)
            field_ = _cubic_zoom(field_, [n / c for n, c in zip(shape, coarse)])
            field_ = field_ / (np.abs(field_).max() + 1e-6) * deform_mm
            moved[i] += field_[: shape[0], : shape[1], : shape[2]]
    coords = np.tensordot(np.linalg.inv(affine)[:3, :3], moved, axes=1) + np.linalg.inv(affine)[:3, 3][:, None, None, None]
    meta = {"rotation_deg": angles.tolist(), "scaling": scales.tolist(), "translation_mm": shift.tolist(),
            "deform_mm": deform_mm}
    return coords.astype(np.float32), meta


def _bias_field(shape: Sequence[int], rng: np.random.Generator, strength: float) -> tuple[np.ndarray, list]:
    """exp of a random second-order polynomial over the volume, ``strength`` its log range."""
    axes = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij")
    terms = [axes[0], axes[1], axes[2], axes[0] * axes[1], axes[1] * axes[2], axes[0] * axes[2],
             axes[0] ** 2, axes[1] ** 2, axes[2] ** 2]
    coefs = rng.normal(0.0, 1.0, len(terms))
    log_field = sum(c * t for c, t in zip(coefs, terms))
    spread = float(log_field.max() - log_field.min()) or 1.0
    return np.exp(strength * (log_field - log_field.mean()) / spread).astype(np.float32), coefs.tolist()


def make_head(
    seed: int,
    *,
    voxel_size: Sequence[float] = (1.0, 1.0, 1.0),
    slice_thickness: float | None = None,
    contrasts: Sequence[str] = ("t1w", "t2w", "flair", "gre"),
    snr: float = 30.0,
    bias: float = 0.3,
    deform_mm: float = 3.0,
    te: float = 0.02,
    crop: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None = None,
) -> HeadSubject:
    """Draw one synthetic subject from the MNI152 tissue maps.

    Parameters
    ----------
    seed : int
        Every random choice follows from it; ``meta`` records them.
    voxel_size : sequence of 3 float
        Output voxel size in mm.
    slice_thickness : float, optional
        Thick axial slices (FWHM of a Gaussian slice profile, contiguous): the
        z spacing becomes the thickness, e.g. 5 mm for a clinical 2D FLAIR.
    contrasts : sequence of str
        Any of ``"t1w"``, ``"t2w"``, ``"flair"``, ``"gre"``.
    snr : float
        White-matter signal over the noise standard deviation (per channel).
    bias : float
        Log range of the multiplicative bias field (0 disables it).
    deform_mm : float
        Peak amplitude of the smooth nonlinear deformation.
    te : float
        GRE echo time in seconds.
    crop : ((x0, x1), (y0, y1), (z0, z1)), optional
        Box in MNI voxels built instead of the whole template (fast tests).

    Returns
    -------
    HeadSubject
    """
    from mrinets.data.templates import load_mni

    unknown = sorted(set(contrasts) - set(CONTRASTS))
    if unknown:
        raise ValueError(f"contrasts must be among {sorted(CONTRASTS)}, got {unknown}")
    if not snr > 0:
        raise ValueError(f"snr must be positive, got {snr}")
    size = np.asarray(voxel_size, dtype=np.float64)
    if size.shape != (3,) or not np.all(np.isfinite(size) & (size > 0)):
        raise ValueError(f"voxel_size must be three positive lengths in mm, got {tuple(voxel_size)}")
    from mrinets.data.phantoms.budget import check_grid_memory
    from mrinets.data.templates import MNI_SHAPE

    extent = MNI_SHAPE if crop is None else [b - a for a, b in crop]
    # Measured about 34 bytes per output voxel for two contrasts; 8 per array (image, truth maps, resampling).
    check_grid_memory([n / v for n, v in zip(extent, size)], bytes_per_voxel=8 * (len(contrasts) + 4),
                      name="voxel_size", value=" x ".join(f"{v:g}" for v in size) + " mm")
    rng = np.random.default_rng(seed)
    mni = load_mni()
    affine = mni.affine.copy()
    box = tuple(slice(None) for _ in range(3)) if crop is None else tuple(slice(a, b) for a, b in crop)
    if crop is not None:
        affine[:3, 3] += affine[:3, :3] @ np.array([b.start for b in box])
    t1 = mni.t1.data[box] / float(mni.t1.data.max())
    maps = {name: getattr(mni, name).data[box] for name in ("gm", "wm", "csf", "mask")}
    coords, warp_meta = random_warp(t1.shape, affine, rng, deform_mm=deform_mm)
    warped = {k: ndimage.map_coordinates(v, coords, order=1, mode="constant") for k, v in maps.items()}
    texture = ndimage.map_coordinates(t1, coords, order=1, mode="constant")
    # Template texture (high-pass of the T1) gives anatomical detail beyond three flat tissue levels.
    detail = texture - ndimage.gaussian_filter(texture, 2.0)
    detail /= float(np.abs(detail).max()) + 1e-6

    tissue = np.stack([warped["wm"], warped["gm"], warped["csf"]])
    tissue = np.clip(tissue, 0, 1)
    bias_field, bias_coefs = _bias_field(t1.shape, rng, bias) if bias > 0 else (np.ones(t1.shape, np.float32), [])
    images_hr: dict[str, np.ndarray] = {}
    levels_meta = {}
    for name in contrasts:
        levels = np.asarray(CONTRASTS[name]) * rng.uniform(0.9, 1.1, 3)
        if name == "gre":
            levels = levels * np.exp(-np.asarray(_R2STAR) * te)
        levels_meta[name] = levels.tolist()
        signal = np.tensordot(levels, tissue, axes=1) * (1.0 + 0.15 * detail)
        images_hr[name] = (np.clip(signal, 0, None) * bias_field).astype(np.float32)

    def acquire(volume: np.ndarray, order: int = 1) -> tuple[np.ndarray, np.ndarray]:
        grid_mm = (voxel_size[0], voxel_size[1], 1.0 if slice_thickness else voxel_size[2])
        data, aff = resample_to_voxel_size(volume, affine, grid_mm, order=order)
        if slice_thickness:
            data, aff = thick_slices(data, aff, slice_thickness=slice_thickness, axis=2)
        return data, aff

    images = {}
    out_affine = affine
    for name, volume in images_hr.items():
        data, out_affine = acquire(volume)
        sigma = CONTRASTS[name][0] / snr
        images[name] = rician(data, sigma, rng)
    truth = {k: acquire(warped[k])[0] for k in ("gm", "wm", "csf")}
    mask_lr, out_affine = acquire(warped["mask"])
    meta = {
        "seed": seed,
        "voxel_size_mm": list(map(float, voxel_size)),
        "slice_thickness_mm": slice_thickness,
        "snr": snr,
        "te_s": te,
        "bias_strength": bias,
        "bias_coefficients": bias_coefs,
        "tissue_levels_wm_gm_csf": levels_meta,
        "warp": warp_meta,
        "crop_mni_voxels": None if crop is None else [list(c) for c in crop],
    }
    return HeadSubject(images=images, gm=truth["gm"], wm=truth["wm"], csf=truth["csf"], mask=mask_lr > 0.5,
                       affine=out_affine, meta=meta)
