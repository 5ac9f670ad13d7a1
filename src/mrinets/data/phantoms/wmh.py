"""White-matter lesion phantom: 3D T1 with known lesions, and a thick-slice 2D FLAIR labelled imperfectly.

A subject is the MNI152 tissue maps under a smooth random deformation (what
remains after affine registration), with lesions drawn in the template:
periventricular caps and bands grown from the lateral ventricles, and deep
punctate to confluent blobs. The T1 (1 mm) shows them hypointense with partial
volume; the FLAIR (default 0.9 x 0.9 x 5 mm, Gaussian slice profile) shows
them bright, acquired in a slightly different pose than the header says
(residual misregistration). Its label is what a hurried rater draws on the
FLAIR slices: the slice-averaged lesion fraction above a per-subject
threshold, with small lesions missed, a random in-plane dilation or erosion,
and, for a few subjects, a grossly wrong label (shifted, with false blobs).
The high-resolution truth is kept for evaluation only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from mrinets.data.phantoms.head import CONTRASTS, _bias_field, _cubic_zoom, random_warp, rician, rotation_matrix
from mrinets.io import OutputStage, write_json
from mrinets.io.nifti import from_array, save
from mrinets.physics.sampling import affine_resample, thick_slices

__all__ = ["WmhPhantom", "make_wmh_subject", "insert_wmh", "GROSS_LABEL_RATE", "LESION_MODELS"]

GROSS_LABEL_RATE = 0.15
# "wmh": small-vessel lesions, a hypointense level per subject; "ms": lesions as the real MS patient's
# consensus shows them on T1 (docs/wmh.md, "Real lesions beside the phantom's"); "ms-flair": the "ms" lesions
# labelled as a rater outlines them on FLAIR (a rim beyond the T1 change), with confluent lesions and the
# patient's grey-white contrast.
LESION_MODELS = ("wmh", "ms", "ms-flair")
# The "ms" model's sites (template masks in _ms_lesions) and the share of lesions drawn at each.
_MS_SITES = ("horn cap", "periventricular", "deep", "juxtacortical")
_MS_SHARES = (0.25, 0.35, 0.32, 0.08)
_FLAIR_LEVELS = (0.55, 0.75, 0.06)
# "ms-flair": FLAIR rim width (mm) and its T1 level over white matter, per lesion; grey matter over white matter.
_RIM_MM = (0.5, 1.5)
_RIM_LEVEL = (0.85, 1.0)
_MS_FLAIR_GM = (0.72, 0.80)


@dataclass
class WmhPhantom:
    """T1 and truth on the T1 grid; FLAIR and its label on the FLAIR grid (RAS arrays).

    ``t1_affine`` and ``flair_affine`` are the header affines; ``to_mni`` maps
    their world coordinates to MNI world coordinates (the registration a
    perfect aligner would find, up to the nonlinear part).
    """

    t1: np.ndarray
    lesion: np.ndarray
    t1_affine: np.ndarray
    flair: np.ndarray | None
    flair_label: np.ndarray
    flair_affine: np.ndarray
    to_mni: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def truth_mask(self) -> np.ndarray:
        return self.lesion >= 0.5

    def save(self, outdir: str | Path) -> list[Path]:
        """Write ``t1``, ``flair`` (when simulated), ``flair_label``, the truth maps and ``phantom.json``."""
        t1_ref = from_array(self.lesion, self.t1_affine)
        flair_ref = from_array(self.flair_label.astype(np.float32), self.flair_affine)
        with OutputStage(outdir) as stage:
            save(self.t1, stage.path("t1.nii.gz"), like=t1_ref)
            if self.flair is not None:
                save(self.flair, stage.path("flair.nii.gz"), like=flair_ref)
            save(self.flair_label.astype(np.uint8), stage.path("flair_label.nii.gz"), like=flair_ref, dtype=np.uint8)
            save(self.lesion, stage.path("truth_lesion_fraction.nii.gz"), like=t1_ref)
            save(self.truth_mask.astype(np.uint8), stage.path("truth_lesion_mask.nii.gz"), like=t1_ref, dtype=np.uint8)
            write_json(stage.path("phantom.json"), {**self.meta, "to_mni": self.to_mni.tolist()})
            return [stage.final(n) for n in stage.names]


def _smooth_noise(shape: Sequence[int], rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Zero-mean, unit-peak smooth random field (drawn coarse, then zoomed)."""
    coarse = [max(int(n / sigma) + 2, 2) for n in shape]
    noise = _cubic_zoom(rng.normal(0.0, 1.0, coarse), [n / c for n, c in zip(shape, coarse)])
    noise = noise[: shape[0], : shape[1], : shape[2]]
    return (noise / (np.abs(noise).max() + 1e-6)).astype(np.float32)


def _lesions(anatomy, wm: np.ndarray, severity: float, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Lesion fraction on the template grid: periventricular caps/bands and deep blobs."""
    shape = wm.shape
    vent = anatomy.ventricles
    dist = anatomy.ventricle_distance_mm
    y = np.arange(shape[1], dtype=np.float32)[None, :, None]
    ys = np.flatnonzero(vent.any(axis=(0, 2)))
    front, back = float(ys.max()), float(ys.min())
    # Caps at the frontal and occipital horns are thicker than the band along the bodies.
    caps = np.exp(-(((y - front) / 12.0) ** 2)) + np.exp(-(((y - back) / 15.0) ** 2))
    band = 1.0 + 6.0 * severity * rng.uniform(0.3, 1.0)
    thickness = band * (0.5 + rng.uniform(0.2, 1.0) * caps) + 2.0 * _smooth_noise(shape, rng, 12.0)
    pv = np.clip(thickness - dist + 0.5, 0.0, 1.0) * (thickness > 1.5) * ~vent

    deep = np.zeros(shape, np.float32)
    candidates = np.argwhere((wm > 0.9) & (dist > 6) & (anatomy.cortex_distance_mm > 3))
    n_blobs = int(rng.poisson(2 + 30 * severity))
    radii = np.exp(rng.uniform(np.log(1.2), np.log(2.0 + 5.0 * severity), n_blobs))
    for centre, radius in zip(candidates[rng.integers(0, len(candidates), n_blobs)], radii):
        axes = radius * rng.uniform(0.7, 1.3, 3)
        half = np.ceil(axes).astype(int) + 2
        lo = np.maximum(centre - half, 0)
        hi = np.minimum(centre + half + 1, shape)
        grids = np.meshgrid(*[np.arange(a, b) - c for a, b, c in zip(lo, hi, centre)], indexing="ij")
        r = np.sqrt(sum((g / a) ** 2 for g, a in zip(grids, axes))) * radius
        blob = np.clip(radius - r + 0.5, 0.0, 1.0)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        deep[box] = np.maximum(deep[box], blob)
    lesion = np.maximum(pv, deep) * (wm > 0.3)
    return lesion.astype(np.float32), {"severity": severity, "pv_band_mm": band, "deep_blobs": n_blobs}


def _draw_lesions(model: str, anatomy, wm: np.ndarray, severity: float, rng: np.random.Generator,
                  extra_rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Lesion fraction, T1 level map over white matter (None: one level per subject) and meta of ``model``.

    ``extra_rng`` draws what "ms-flair" adds to "ms", so that ``rng`` is consumed as under "ms".
    """
    if model in ("ms", "ms-flair"):
        return _ms_lesions(anatomy, wm, severity, rng, flair_rng=extra_rng if model == "ms-flair" else None)
    lesion, meta = _lesions(anatomy, wm, severity, rng)
    return lesion, None, meta


def _ovoid(lesion: np.ndarray, level: np.ndarray, centre: np.ndarray, axis: np.ndarray, along: float, across: float,
           radius: float, edge_level: float, rng: np.random.Generator, rim: float = 0.0,
           rim_level: float = 1.0) -> None:
    """Draw one ovoid lesion into ``lesion`` (fraction) and ``level`` (T1 over white matter), in place.

    ``along`` is its semi-axis along ``axis``, ``across`` the other two; ``radius`` scales its depth. Its T1 level
    is ``edge_level`` at the edge, 0.1 darker per mm of depth beyond the first (down to 0.4). A ``rim`` (mm) widens
    the lesion fraction beyond that edge at the T1 level ``rim_level``: the FLAIR lesion outside the T1 change.
    """
    shape = lesion.shape
    half = int(np.ceil(max(along, across))) + 3
    lo, hi = np.maximum(centre - half, 0), np.minimum(centre + half + 1, shape)
    # An irregular edge: the radius wobbles by up to a quarter, smoothly. Drawn on the box without the rim, so that
    # "ms" lesions stay the same to the bit, and carried flat over the rim's margin.
    wobble = _smooth_noise(tuple(hi - lo), rng, 3.0)
    pad = int(np.ceil(rim))
    if pad:
        lo_rim, hi_rim = np.maximum(centre - half - pad, 0), np.minimum(centre + half + pad + 1, shape)
        wobble = np.pad(wobble, [(a - b, d - c) for a, b, c, d in zip(lo, lo_rim, hi, hi_rim)], mode="edge")
        lo, hi = lo_rim, hi_rim
    grids = np.stack(np.meshgrid(*[np.arange(a, b) - c for a, b, c in zip(lo, hi, centre)], indexing="ij"), -1)
    t = grids @ axis
    perp = np.linalg.norm(grids - t[..., None] * axis, axis=-1)
    r = np.sqrt((t / along) ** 2 + (perp / across) ** 2)
    r = r * (1.0 + 0.25 * wobble)
    depth = (1.0 - r) * radius
    blob = np.clip(depth + rim + 0.5, 0.0, 1.0)
    blob_level = np.clip(edge_level - 0.1 * np.clip(np.clip(depth, 0.0, None) - 1.0, 0.0, 3.0), 0.4, 1.0)
    if pad:
        # Partial volume across the T1 lesion's edge, between it and the rim.
        blob_level = rim_level + (blob_level - rim_level) * np.clip(depth + 0.5, 0.0, 1.0)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    # Where lesions overlap the darker one shows.
    level[box] = np.where(blob > 0, np.minimum(level[box], blob_level), level[box])
    lesion[box] = np.maximum(lesion[box], blob)


def _ms_lesions(anatomy, wm: np.ndarray, severity: float, rng: np.random.Generator,
                flair_rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """MS-like lesion fraction and T1 level (over white matter) on the template grid, and what was drawn.

    Ovoid lesions, elongated across the ventricle wall (Dawson's fingers) near the ventricles, at four sites:
    caps at the frontal and occipital horns, elsewhere within 10 mm of the ventricles, deep white matter, and
    1-4 mm below the cortex. Each lesion has its own T1 level over white matter, mild at the edge, darker
    with depth inside it (large lesions have dark cores, small ones are barely hypointense).

    With ``flair_rng`` (the "ms-flair" model, which draws its additions from it and consumes ``rng`` as "ms"
    does) the lesion fraction is the FLAIR lesion a rater outlines: each lesion extends beyond its T1
    hypointensity by a rim of its own width (``_RIM_MM``) where T1 is only faintly reduced (``_RIM_LEVEL``), and
    confluent lesions (overlapping ovoids along the ventricle wall, darker) are added, more at higher severity.
    """
    shape = wm.shape
    vent_d, cortex_d = anatomy.ventricle_distance_mm, anatomy.cortex_distance_mm
    ys = np.flatnonzero(anatomy.ventricles.any(axis=(0, 2)))
    third = (ys.max() - ys.min()) / 3.0
    y = np.arange(shape[1])[None, :, None]
    horn = (y < ys.min() + third) | (y > ys.max() - third)
    sites = [(wm > 0.5) & (vent_d >= 1) & (vent_d <= 5) & horn, (wm > 0.7) & (vent_d > 2) & (vent_d <= 10),
             (wm > 0.9) & (vent_d > 10) & (cortex_d > 4), (wm > 0.5) & (cortex_d > 1) & (cortex_d <= 4)]
    n = int(rng.poisson(5 + 30 * severity))
    kinds = rng.choice(len(_MS_SITES), n, p=_MS_SHARES)
    radii = np.exp(rng.uniform(np.log(1.5), np.log(3.0 + 6.0 * severity), n))
    levels = rng.uniform(0.62, 0.97, n)
    rims = flair_rng.uniform(*_RIM_MM, n) if flair_rng is not None else np.zeros(n)
    rim_levels = flair_rng.uniform(*_RIM_LEVEL, n) if flair_rng is not None else np.ones(n)
    grad = np.stack(np.gradient(vent_d), -1)
    lesion = np.zeros(shape, np.float32)
    level = np.ones(shape, np.float32)
    where = [np.argwhere(site) for site in sites]
    for kind, radius, edge_level, rim, rim_level in zip(kinds, radii, levels, rims, rim_levels):
        centre = where[kind][rng.integers(0, len(where[kind]))]
        if kind == 0:
            radius *= 1.3
        # Axis along the ventricle-distance gradient: long (fingers) near the ventricles, short (caps) at horns.
        axis = grad[tuple(centre)]
        axis = axis / np.linalg.norm(axis) if np.linalg.norm(axis) > 0 and kind < 2 else rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        along = radius * (rng.uniform(0.5, 0.8) if kind == 0 else rng.uniform(1.0, 1.8) if kind == 1 else 1.0)
        across = radius * rng.uniform(0.8, 1.2)
        _ovoid(lesion, level, centre, axis, along, across, radius, edge_level, rng, rim, rim_level)
    meta = {"model": "ms", "severity": severity, "lesions": n,
            "sites": {name: int((kinds == i).sum()) for i, name in enumerate(_MS_SITES)},
            "edge_levels": [round(float(v), 3) for v in levels]}
    if flair_rng is not None:
        confluent = _confluent_lesions(lesion, level, (wm > 0.7) & (vent_d > 2) & (vent_d <= 8), grad, severity,
                                       flair_rng)
        meta.update({"model": "ms-flair", "rim_mm": [round(float(v), 2) for v in rims],
                     "rim_levels": [round(float(v), 3) for v in rim_levels], "confluent": confluent})
    lesion *= wm > 0.3
    return lesion.astype(np.float32), level, meta


def _confluent_lesions(lesion: np.ndarray, level: np.ndarray, site: np.ndarray, grad: np.ndarray, severity: float,
                       rng: np.random.Generator) -> int:
    """Confluent periventricular lesions (3-6 ovoids merged along the ventricle wall, a few mL each), in place."""
    n = int(rng.poisson(4.0 * max(severity - 0.3, 0.0)))
    where = np.argwhere(site)
    for _ in range(n):
        centre = where[rng.integers(0, len(where))]
        normal = grad[tuple(centre)]
        normal = normal / np.linalg.norm(normal) if np.linalg.norm(normal) > 0 else rng.normal(size=3)
        normal /= np.linalg.norm(normal)
        tangent = np.cross(normal, rng.normal(size=3))
        tangent /= np.linalg.norm(tangent)
        edge_level, rim, rim_level = rng.uniform(0.6, 0.8), rng.uniform(*_RIM_MM), rng.uniform(*_RIM_LEVEL)
        for _ in range(int(rng.integers(3, 7))):
            offset = tangent * rng.uniform(-10.0, 10.0) + normal * rng.uniform(-2.0, 2.0)
            part = np.clip(np.round(centre + offset).astype(int), 0, np.asarray(lesion.shape) - 1)
            radius = rng.uniform(3.5, 5.5)
            _ovoid(lesion, level, part, tangent, radius * rng.uniform(1.2, 2.0), radius * rng.uniform(0.8, 1.1),
                   radius, edge_level, rng, rim, rim_level)
    return n


def _flair_grid(affine: np.ndarray, shape: Sequence[int], in_plane: float, thickness: float,
                rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Axial FLAIR grid over the same field of view, slice positions drawn at random."""
    extent = np.asarray(shape) * np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    n = (int(extent[0] / in_plane), int(extent[1] / in_plane), int(extent[2] / thickness))
    grid = np.diag([in_plane, in_plane, thickness, 1.0])
    grid[:3, 3] = affine[:3, 3] + np.array([0.0, 0.0, rng.uniform(0, thickness)])
    return grid, n


def _misregistration(rng: np.random.Generator) -> np.ndarray:
    """The small rigid pose error of a FLAIR relative to its header (up to 1.5 degrees and 1.5 mm)."""
    error = np.eye(4)
    error[:3, :3] = rotation_matrix(np.deg2rad(rng.uniform(-1.5, 1.5, 3)))
    error[:3, 3] = rng.uniform(-1.5, 1.5, 3)
    return error


def _acquire_thick(volume: np.ndarray, affine: np.ndarray, nominal: np.ndarray, n_flair: Sequence[int],
                   thickness: float, error: np.ndarray) -> np.ndarray:
    """Thick slices of ``volume`` on the ``nominal`` grid, really acquired in the pose ``error @ nominal``."""
    fine = nominal.copy()
    fine[:3, 2] = nominal[:3, 2] / thickness
    fine_shape = (n_flair[0], n_flair[1], n_flair[2] * int(round(thickness)))
    data = affine_resample(volume, affine, error @ fine, fine_shape, order=1)
    return thick_slices(data, fine, slice_thickness=thickness, slice_spacing=thickness)[0]


def _imperfect_label(fraction: np.ndarray, spacing: Sequence[float], gross: bool,
                     rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """What a rater draws on the FLAIR slices, with the flaws recorded."""
    threshold = rng.uniform(0.3, 0.6)
    label = fraction > threshold
    labels, n = ndimage.label(label)
    sizes = np.bincount(labels.ravel()) * float(np.prod(spacing))
    p_miss = rng.uniform(0.3, 0.8)
    small = np.flatnonzero((sizes < 30.0) & (np.arange(len(sizes)) > 0))
    missed = small[rng.random(len(small)) < p_miss]
    label[np.isin(labels, missed)] = False
    in_plane = np.zeros((3, 3, 1), bool)
    in_plane[1, :, 0] = in_plane[:, 1, 0] = True
    morph = rng.choice(["none", "dilate", "erode"], p=[0.5, 0.3, 0.2])
    if morph == "dilate":
        label = ndimage.binary_dilation(label, in_plane)
    elif morph == "erode":
        label = ndimage.binary_erosion(label, in_plane)
    meta = {"threshold": threshold, "small_lesions": int(len(small)), "missed": int(len(missed)),
            "morphology": str(morph), "gross": gross}
    if gross:
        shift = rng.choice([-1, 1], 2) * rng.uniform(6.0, 12.0, 2) / np.asarray(spacing[:2])
        label = ndimage.shift(label.astype(np.float32), (*shift, 0), order=0) > 0.5
        centres = np.argwhere(fraction >= 0)[rng.integers(0, fraction.size, 6)]
        for c in centres:
            box = tuple(slice(max(int(v) - 4, 0), int(v) + 4) for v in c[:2]) + (slice(int(c[2]), int(c[2]) + 1),)
            label[box] = True
        meta["gross_shift_voxels"] = shift.tolist()
    return label, meta


def _check_flair_voxel(flair_voxel: tuple[float, float], extent_mm) -> None:
    """Two positive lengths, on a FLAIR grid over ``extent_mm`` that fits in memory."""
    from mrinets.data.phantoms.budget import check_grid_memory

    sizes = np.asarray(flair_voxel, dtype=np.float64).reshape(-1)
    if sizes.shape != (2,) or not np.all(np.isfinite(sizes) & (sizes > 0)):
        raise ValueError(f"flair_voxel must be two positive lengths in mm (in-plane, slice), got {tuple(flair_voxel)}")
    in_plane, thickness = sizes
    check_grid_memory([extent_mm[0] / in_plane, extent_mm[1] / in_plane, extent_mm[2] / thickness],
                      bytes_per_voxel=16, name="flair_voxel", value=f"{in_plane:g} x {thickness:g} mm")


def make_wmh_subject(
    seed: int,
    *,
    severity: float | None = None,
    snr: float | None = None,
    flair_voxel: tuple[float, float] = (0.9, 5.0),
    gross: bool | None = None,
    pose: bool = False,
    deform_mm: float = 2.5,
    crop: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None = None,
    lesions: str = "wmh",
) -> WmhPhantom:
    """Draw one subject with white-matter lesions, a 1 mm T1 and a labelled thick-slice FLAIR.

    Parameters
    ----------
    seed : int
        Every random choice follows from it; ``meta`` records them.
    severity : float, optional
        Lesion load in [0, 1] (drawn uniformly in [0.2, 1] when None: about 2 to 40 mL).
    snr : float, optional
        White-matter signal over noise std of both images (drawn in [15, 40]).
    flair_voxel : (in-plane mm, slice thickness mm)
    gross : bool, optional
        Force or forbid a grossly wrong label; drawn with probability
        ``GROSS_LABEL_RATE`` when None.
    pose : bool
        Put the head in a random scanner pose (rotation up to 10 degrees,
        shift up to 15 mm) through the headers of both images, so that
        registration has work to do; the voxels stay on the template grid.
    deform_mm : float
        Peak smooth deformation of the anatomy.
    crop : ((x0, x1), (y0, y1), (z0, z1)), optional
        Box in MNI voxels built instead of the whole template (fast tests).
    lesions : {"wmh", "ms", "ms-flair"}
        The lesion model (``LESION_MODELS``): "wmh" draws periventricular
        bands and deep blobs at one T1 level per subject (0.45-0.7 of white
        matter); "ms" draws lesions as a real MS patient's look on T1 (one
        level per lesion, 0.62-0.97 at the edge and darker inside; caps at
        the horns, across the ventricle wall, deep and juxtacortical);
        "ms-flair" the "ms" lesions as a rater outlines them on FLAIR: each
        with a rim of 0.5-1.5 mm beyond its T1 hypointensity at only 0.85-1.0
        of white matter on T1 (the truth and the FLAIR show the whole
        lesion), plus confluent periventricular lesions at higher severity,
        and grey matter at 0.72-0.80 of white matter on T1. The same seed
        gives the same anatomy, noise and label flaws under "wmh" and "ms",
        and the same T1 lesion cores under "ms" and "ms-flair".
    """
    from mrinets.data.atlas import mni_anatomy
    from mrinets.data.templates import MNI_SHAPE, load_mni

    if lesions not in LESION_MODELS:
        raise ValueError(f"lesions must be one of {LESION_MODELS}, got {lesions!r}")

    rng = np.random.default_rng([seed, 4])
    severity = float(rng.uniform(0.2, 1.0)) if severity is None else float(severity)
    snr = float(rng.uniform(15.0, 40.0)) if snr is None else float(snr)
    gross = bool(rng.random() < GROSS_LABEL_RATE) if gross is None else bool(gross)
    if not 0 <= severity <= 1:
        raise ValueError(f"severity must be in [0, 1], got {severity}")
    if not snr > 0:
        raise ValueError(f"snr must be positive, got {snr}")
    _check_flair_voxel(flair_voxel, MNI_SHAPE)
    mni, anatomy = load_mni(), mni_anatomy()
    box = tuple(slice(None) for _ in range(3)) if crop is None else tuple(slice(a, b) for a, b in crop)
    affine = mni.affine.copy()
    if crop is not None:
        affine[:3, 3] += affine[:3, :3] @ np.array([b.start or 0 for b in box])

    extra_rng = np.random.default_rng([seed, 4, 1])
    lesion_mni, level_mni, lesion_meta = _draw_lesions(lesions, anatomy, mni.wm.data, severity, rng, extra_rng)
    shape = mni.t1.data[box].shape
    coords, warp_meta = random_warp(shape, affine, rng, rotation_deg=2.0, scaling=0.02, translation_mm=1.5,
                                    deform_mm=deform_mm)
    maps = {"wm": mni.wm.data[box], "gm": mni.gm.data[box], "csf": mni.csf.data[box], "lesion": lesion_mni[box],
            "t1": mni.t1.data[box] / float(mni.t1.data.max())}
    if level_mni is not None:
        maps["level"] = level_mni[box]
    warped = {k: ndimage.map_coordinates(v, coords, order=1, mode="constant") for k, v in maps.items()}
    lesion = np.minimum(warped["lesion"], warped["wm"])
    wm = warped["wm"] - lesion
    detail = warped["t1"] - ndimage.gaussian_filter(warped["t1"], 2.0)
    detail /= float(np.abs(detail).max()) + 1e-6

    def image(levels: np.ndarray, lesion_level: float) -> np.ndarray:
        signal = levels[0] * wm + levels[1] * warped["gm"] + levels[2] * warped["csf"] + lesion_level * lesion
        return np.clip(signal * (1.0 + 0.15 * detail), 0, None).astype(np.float32)

    t1_levels = np.asarray(CONTRASTS["t1w"]) * rng.uniform(0.9, 1.1, 3)
    if lesions == "ms-flair":
        # The real MS patient's grey matter is at 0.76 of its white matter (docs/wmh.md), brighter than CONTRASTS'.
        t1_levels[1] = t1_levels[0] * extra_rng.uniform(*_MS_FLAIR_GM)
    t1_lesion = float(t1_levels[0] * rng.uniform(0.45, 0.7))
    if "level" in warped:
        t1_lesion = t1_levels[0] * warped["level"]
    bias, _ = _bias_field(shape, rng, 0.3)
    t1 = rician(image(t1_levels, t1_lesion) * bias, t1_levels[0] / snr, rng)

    flair_levels = np.asarray(_FLAIR_LEVELS) * rng.uniform(0.9, 1.1, 3)
    flair_hr = image(flair_levels, float(flair_levels[0] * rng.uniform(1.8, 2.4)))
    in_plane, thickness = flair_voxel
    nominal, n_flair = _flair_grid(affine, shape, in_plane, thickness, rng)
    error = _misregistration(rng)
    acquired = {name: _acquire_thick(hr, affine, nominal, n_flair, thickness, error)
                for name, hr in (("flair", flair_hr), ("lesion", lesion))}
    flair = rician(acquired["flair"], flair_levels[0] / snr, rng)
    label, label_meta = _imperfect_label(acquired["lesion"], (in_plane, in_plane, thickness), gross, rng)

    t1_affine, flair_affine, to_mni = affine, nominal, np.eye(4)
    if pose:
        head = np.eye(4)
        head[:3, :3] = rotation_matrix(np.deg2rad(rng.uniform(-10, 10, 3)))
        head[:3, 3] = rng.uniform(-15, 15, 3)
        t1_affine, flair_affine, to_mni = head @ affine, head @ nominal, np.linalg.inv(head)
    meta = {
        "seed": seed, "snr": snr, "lesions": lesion_meta, "label": label_meta, "warp": warp_meta,
        "t1_levels_wm_gm_csf": t1_levels.tolist(),
        "t1_lesion_level": float(np.median(t1_lesion[lesion >= 0.5])) if np.ndim(t1_lesion) and (lesion >= 0.5).any()
        else float(np.mean(t1_lesion)),
        "flair_voxel_mm": [in_plane, in_plane, thickness], "flair_misregistration": error.tolist(),
        "lesion_volume_ml": float(lesion.sum()) / 1000.0,
        "crop_mni_voxels": None if crop is None else [list(c) for c in crop],
    }
    return WmhPhantom(t1=t1, lesion=lesion.astype(np.float32), t1_affine=t1_affine, flair=flair,
                      flair_label=label, flair_affine=flair_affine, to_mni=to_mni, meta=meta)


def insert_wmh(t1: np.ndarray, affine: np.ndarray, to_mni: np.ndarray, seed: int, *, severity: float | None = None,
               flair_voxel: tuple[float, float] = (0.9, 5.0), gross: bool | None = None,
               lesions: str = "wmh") -> WmhPhantom:
    """Lesions drawn in MNI space, carried onto a user's real T1 through its registration and darkened in place.

    ``to_mni`` maps the T1's world to MNI world (e.g. from
    :func:`mrinets.preprocess.register.register_to_mni`). The registration is
    affine only, so lesions are kept to voxels as bright as this subject's
    white matter. Each voxel's local signal (the T1 smoothed by one voxel) is
    darkened, by its lesion fraction, towards the drawn level; what the
    smoothing leaves out (noise, fine texture) stays. The label is acquired
    as for :func:`make_wmh_subject` on an axial thick-slice grid over the
    T1's field of view (no FLAIR image is simulated: its contrast cannot be
    made from a T1). ``lesions`` is the lesion model, as for :func:`make_wmh_subject` ("ms-flair" keeps
    the scan's own grey matter).
    """
    from mrinets.data.atlas import mni_anatomy
    from mrinets.data.templates import load_mni

    rng = np.random.default_rng([seed, 5])
    severity = float(rng.uniform(0.2, 1.0)) if severity is None else float(severity)
    gross = bool(rng.random() < GROSS_LABEL_RATE) if gross is None else bool(gross)
    if not 0 <= severity <= 1:
        raise ValueError(f"severity must be in [0, 1], got {severity}")
    _check_flair_voxel(flair_voxel, np.asarray(t1.shape[:3]) * np.linalg.norm(affine[:3, :3], axis=0))
    if lesions not in LESION_MODELS:
        raise ValueError(f"lesions must be one of {LESION_MODELS}, got {lesions!r}")
    mni, anatomy = load_mni(), mni_anatomy()
    lesion_mni, level_mni, lesion_meta = _draw_lesions(lesions, anatomy, mni.wm.data, severity, rng,
                                                       np.random.default_rng([seed, 5, 1]))
    in_mni = to_mni @ affine
    lesion = affine_resample(lesion_mni, mni.affine, in_mni, t1.shape, order=1)
    core = affine_resample(mni.wm.data, mni.affine, in_mni, t1.shape, order=1) > 0.95
    if not core.any():
        raise ValueError("the registration puts no template white matter inside this T1")
    wm_level = float(np.median(t1[core]))
    signal = ndimage.gaussian_filter(t1.astype(np.float32), 1.0)
    lesion = (lesion * (signal > 0.85 * wm_level)).astype(np.float32)
    level = wm_level * float(rng.uniform(0.45, 0.7))
    if level_mni is not None:
        level = wm_level * affine_resample(level_mni, mni.affine, in_mni, t1.shape, order=1, cval=1.0)
    # Darken the local signal, not the voxel: a lesion keeps the scan's noise, texture and bias field, where a flat
    # level would leave its core noise-free, a cue no real lesion gives.
    out = (t1 - lesion * (1.0 - level / wm_level) * signal).astype(np.float32)

    in_plane, thickness = flair_voxel
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in t1.shape], indexing="ij")).reshape(3, -1).T
    world = corners @ affine[:3, :3].T + affine[:3, 3]
    lo, hi = world.min(axis=0), world.max(axis=0)
    n_flair = tuple(int(v) for v in ((hi - lo) / np.array([in_plane, in_plane, thickness])))
    nominal = np.diag([in_plane, in_plane, thickness, 1.0])
    nominal[:3, 3] = lo + np.array([0.0, 0.0, rng.uniform(0, thickness)])
    error = _misregistration(rng)
    fraction = _acquire_thick(lesion, affine, nominal, n_flair, thickness, error)
    label, label_meta = _imperfect_label(fraction, (in_plane, in_plane, thickness), gross, rng)
    meta = {"seed": seed, "source": "real T1 with inserted lesions", "lesions": lesion_meta, "label": label_meta,
            "t1_lesion_level": float(np.median(level[lesion >= 0.5])) if np.ndim(level) and (lesion >= 0.5).any()
            else float(np.mean(level)), "flair_voxel_mm": [in_plane, in_plane, thickness],
            "flair_misregistration": error.tolist(), "lesion_volume_ml": float(lesion.sum()) *
            abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0}
    return WmhPhantom(t1=out, lesion=lesion, t1_affine=affine, flair=None, flair_label=label, flair_affine=nominal,
                      to_mni=to_mni, meta=meta)

