"""Cerebral microbleed phantom: GRE magnitude, SWI and QSM of a brain region with CMBs and their mimics.

A box of the real MNI152 2009a anatomy (grey and white matter, CSF, the iron-rich
deep grey nuclei of :data:`mrinets.data.phantoms.qsm.NUCLEI`) is simulated on a
grid twice as fine as the output. Microbleeds are small paramagnetic spheres;
the mimics a detector must reject are drawn beside them: veins (paramagnetic
tubes), calcifications (diamagnetic spheres of low proton density), sulcal flow
voids (signal voids in CSF without susceptibility) and the partial volume of the
cortex and of the brain edge that the anatomy itself brings.

The physics is that of a gradient echo: the susceptibility map gives the field
through the dipole model (:func:`mrinets.physics.dipole.forward_field`, B0 tilted
at random), the fine-grid complex signal
``PD exp(-R2* TE) exp(i gamma B0 TE dB)`` is averaged into each output voxel, so
intravoxel dephasing makes the blooming of a microbleed grow with its
susceptibility, the echo time and the field strength; noise is complex Gaussian.
From that one acquisition come three contrasts:

- ``gre``: the magnitude;
- ``swi``: magnitude times the fourth power of the phase mask that darkens
  positive (paramagnetic) phase, as Haacke's SWI does with high-pass phase
  (the field here holds only local sources, as high-pass phase does);
- ``qsm``: thresholded k-space division of the voxel-averaged local field with
  noise (the phase is taken as unwrapped and background-free).

The truth label of a microbleed is its apparent (blooming) extent: a ball of
radius ``a (k / 3 / phi_t)^(1/3)``, the distance at which the dipole field of a
sphere of radius ``a`` and susceptibility ``chi`` dephases by ``phi_t = pi``
(``k = gamma B0 TE chi``), at least the sphere itself and one voxel.

References
----------
Sundaresan V, Arthofer C, Zamboni G, et al. Automated detection of cerebral
microbleeds on MR images using knowledge distillation framework. Front
Neuroinform 2023;17:1204186.
Haacke EM, Xu Y, Cheng YC, Reichenbach JR. Susceptibility weighted imaging
(SWI). Magn Reson Med 2004;52:612-618.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from mrinets.data.phantoms.qsm import NUCLEI
from mrinets.io import OutputStage, write_json
from mrinets.io.nifti import from_array, save
from mrinets.physics.dipole import b0_direction_in_voxels, forward_field
from mrinets.physics.echoes import GAMMA
from mrinets.physics.inversion import tkd

__all__ = ["CMB_CONTRASTS", "MIMIC_NAMES", "CmbPhantom", "make_cmb_subject", "apparent_radius", "swi_from_complex"]

CMB_CONTRASTS = ("swi", "gre", "qsm")
MIMIC_NAMES = {1: "vein", 2: "calcification", 3: "flow_void", 4: "deep_nucleus"}
# Tissue susceptibility (ppm), proton density and R2* (1/s) at 3 T.
CHI = {"wm": -0.03, "gm": 0.015, "csf": 0.0}
PD = {"wm": 0.70, "gm": 0.85, "csf": 1.0, "outside": 0.05}
R2S = {"wm": 21.0, "gm": 15.0, "csf": 3.0, "cmb": 250.0, "calcification": 120.0, "vein": 45.0}
# Dephasing (rad) at the edge of a microbleed's apparent extent.
BLOOM_PHASE = math.pi
SUPERSAMPLE = 2


@dataclass
class CmbPhantom:
    """One simulated subject on its output grid (RAS arrays, 1 affine)."""

    images: dict[str, np.ndarray]
    cmb_labels: np.ndarray
    mimic_labels: np.ndarray
    mask: np.ndarray
    chi: np.ndarray
    affine: np.ndarray
    cmbs: list[dict]
    meta: dict = field(default_factory=dict)

    def save(self, outdir: str | Path) -> list[Path]:
        """Write ``swi``/``gre``/``qsm`` images, the truth maps and ``phantom.json``."""
        ref = from_array(self.chi, self.affine)
        with OutputStage(outdir) as stage:
            for name, data in self.images.items():
                save(data, stage.path(f"{name}.nii.gz"), like=ref)
            save(self.chi, stage.path("chi.nii.gz"), like=ref)
            save(self.cmb_labels, stage.path("cmb_labels.nii.gz"), like=ref, dtype=np.int16)
            save(self.mimic_labels, stage.path("mimic_labels.nii.gz"), like=ref, dtype=np.uint8)
            save(self.mask.astype(np.uint8), stage.path("mask.nii.gz"), like=ref, dtype=np.uint8)
            rows = ["index\tname"] + [f"{k}\t{v}" for k, v in MIMIC_NAMES.items()]
            stage.path("mimic_labels.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
            write_json(stage.path("phantom.json"), {**self.meta, "cmbs": self.cmbs})
            return [stage.final(n) for n in stage.names]


def apparent_radius(radius_mm: float, chi_ppm: float, *, b0: float, te: float) -> float:
    """Radius (mm) at which a sphere's dipole field dephases by :data:`BLOOM_PHASE` at ``te``.

    Outside a sphere of radius ``a`` the field is ``chi/3 (a/r)^3 (3 cos^2 - 1)``
    (relative units); with the angular factor at its mean magnitude (about 1)
    the phase ``gamma B0 TE chi/3 (a/r)^3`` equals ``phi_t`` at
    ``r = a (gamma B0 TE chi / (3 phi_t))^(1/3)``; never less than ``a``.
    """
    k = GAMMA * b0 * te * chi_ppm * 1e-6
    return float(radius_mm * max(1.0, (k / (3.0 * BLOOM_PHASE)) ** (1.0 / 3.0)))


def swi_from_complex(signal: np.ndarray, *, power: int = 4) -> np.ndarray:
    """SWI magnitude: ``|s| * m^power`` with the mask ``m = 1 - phase/pi`` on positive phase (1 elsewhere).

    Positive phase is paramagnetic here (``phase = +gamma dB TE``), so veins
    and microbleeds darken and calcifications (negative phase) do not.
    """
    phase = np.angle(signal)
    weight = np.where(phase > 0, 1.0 - phase / np.pi, 1.0)
    return (np.abs(signal) * weight**power).astype(np.float32)


def _segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of each point (N, 3) to the segment ``a``-``b``."""
    ab = b - a
    t = np.clip(((points - a) @ ab) / max(float(ab @ ab), 1e-9), 0.0, 1.0)
    return np.linalg.norm(points - (a + t[:, None] * ab), axis=1)


def _tube(world: np.ndarray, path: np.ndarray, radius: float, h: float) -> np.ndarray:
    """Soft occupancy (0..1, edge one fine voxel wide) of a tube of ``radius`` along a polyline."""
    lo = path.min(0) - radius - 2 * h
    hi = path.max(0) + radius + 2 * h
    inside = np.all((world >= lo) & (world <= hi), axis=-1)
    out = np.zeros(world.shape[:-1], np.float32)
    if not inside.any():
        return out
    pts = world[inside]
    dist = np.full(len(pts), np.inf)
    for a, b in zip(path[:-1], path[1:]):
        dist = np.minimum(dist, _segment_distance(pts, a, b))
    out[inside] = np.clip((radius - dist) / h + 0.5, 0.0, 1.0)
    return out


def _near(world: np.ndarray, centre: np.ndarray, reach: np.ndarray | float) -> tuple[slice, ...]:
    """Index box of the regular grid ``world`` (X, Y, Z, 3) within ``reach`` mm of ``centre``."""
    origin = world[0, 0, 0]
    h = float(world[1, 0, 0, 0] - origin[0]) if world.shape[0] > 1 else 1.0
    lo = np.floor((centre - reach - origin) / h).astype(int)
    hi = np.ceil((centre + reach - origin) / h).astype(int) + 1
    return tuple(slice(int(max(a, 0)), int(max(min(b, n), 0))) for a, b, n in zip(lo, hi, world.shape[:3]))


def _ball(world: np.ndarray, centre: np.ndarray, radius: float, h: float) -> np.ndarray:
    out = np.zeros(world.shape[:-1], np.float32)
    box = _near(world, centre, radius + 2 * h)
    dist = np.linalg.norm(world[box] - centre, axis=-1)
    out[box] = np.clip((radius - dist) / h + 0.5, 0.0, 1.0)
    return out


def _random_path(rng: np.random.Generator, start: np.ndarray, length: float, step: float = 3.0) -> np.ndarray:
    """A gently curving polyline from ``start``."""
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    points = [start]
    for _ in range(max(int(length / step), 1)):
        direction = direction + rng.normal(0, 0.25, 3)
        direction /= np.linalg.norm(direction)
        points.append(points[-1] + step * direction)
    return np.asarray(points)


def _pick(rng: np.random.Generator, candidates: np.ndarray, taken: list[tuple[np.ndarray, float]],
          radius: float, gap: float) -> np.ndarray | None:
    """A candidate point (mm) at least ``radius + r_i + gap`` from every taken ball."""
    for _ in range(60):
        p = candidates[rng.integers(len(candidates))] + rng.uniform(-0.5, 0.5, 3)
        if all(np.linalg.norm(p - c) >= radius + r + gap for c, r in taken):
            return p
    return None


def _crop_centre(rng: np.random.Generator, mask: np.ndarray, half: np.ndarray) -> np.ndarray:
    """A centre (MNI voxel) whose box lies mostly in the brain; lobar, deep and infratentorial alike."""
    inside = np.argwhere(mask)
    lo, hi = inside.min(0) + half * 0.6, inside.max(0) - half * 0.6
    for _ in range(100):
        c = rng.uniform(lo, hi)
        box = tuple(slice(int(max(a, 0)), int(b)) for a, b in zip(c - half, c + half))
        if mask[box].mean() > 0.55:
            return c
    return (lo + hi) / 2


def make_cmb_subject(
    seed: int,
    *,
    voxel_size: float = 1.0,
    crop_mm: float | tuple[float, float, float] = 64.0,
    b0: float | None = None,
    te: float | None = None,
    snr: float | None = None,
    n_cmb: int | None = None,
    tilt_deg: float = 20.0,
    centre_mm: tuple[float, float, float] | None = None,
) -> CmbPhantom:
    """Simulate one subject: a box of brain with microbleeds and mimics, seen as GRE, SWI and QSM.

    Parameters
    ----------
    seed : int
        Every random choice follows from it (``meta`` records them).
    voxel_size : float
        Isotropic output voxel size in mm (simulation on half of it).
    crop_mm : float or 3 floats
        Side(s) of the simulated box of MNI anatomy.
    b0, te, snr : float, optional
        Field (T), echo time (s) and white-matter SNR; drawn when omitted
        (1.5 or 3 T, 15-30 ms, 15-40).
    n_cmb : int, optional
        Number of microbleeds (drawn in 0..6 when omitted).
    tilt_deg : float
        Largest tilt of B0 from the image z axis.
    centre_mm : 3 floats, optional
        MNI centre of the box (drawn in the brain when omitted).

    Returns
    -------
    CmbPhantom
    """
    from mrinets.data.phantoms.budget import check_grid_memory
    from mrinets.data.templates import load_mni

    if not 0.3 <= voxel_size <= 4.0:
        raise ValueError(f"voxel_size must lie between 0.3 and 4 mm, got {voxel_size!r}")
    sides = np.broadcast_to(np.asarray(crop_mm, dtype=float), (3,)).copy()
    if not np.all(np.isfinite(sides)) or np.any(sides < 8 * voxel_size) or np.any(sides > 240):
        raise ValueError(f"crop_mm must lie between 8 voxels and 240 mm, got {crop_mm!r}")
    fine = voxel_size / SUPERSAMPLE
    # Measured about 120 bytes per fine voxel (complex signal, padded FFT, maps).
    check_grid_memory(sides / fine, bytes_per_voxel=120, name="voxel_size", value=f"{voxel_size:g} mm")
    rng = np.random.default_rng(seed)
    b0 = float(rng.choice([1.5, 3.0], p=[0.3, 0.7])) if b0 is None else float(b0)
    te = float(rng.uniform(0.015, 0.030)) if te is None else float(te)
    snr = float(rng.uniform(15.0, 40.0)) if snr is None else float(snr)
    if not (0.05 <= b0 <= 21 and 0.001 <= te <= 0.2 and snr > 0):
        raise ValueError(f"b0 ({b0} T), te ({te} s) or snr ({snr}) out of range")
    n_cmb = int(rng.choice(7, p=[0.08, 0.17, 0.2, 0.2, 0.15, 0.1, 0.1])) if n_cmb is None else int(n_cmb)
    if n_cmb < 0:
        raise ValueError(f"n_cmb must not be negative, got {n_cmb}")

    mni = load_mni()
    n_fine = np.maximum(np.round(sides / fine).astype(int), 8)
    n_out = n_fine // SUPERSAMPLE
    n_fine = n_out * SUPERSAMPLE
    half_vox = sides / 2.0  # MNI voxels are 1 mm
    if centre_mm is None:
        centre_vox = _crop_centre(rng, mni.mask.data > 0.5, half_vox)
    else:
        centre_vox = np.linalg.solve(mni.affine, [*centre_mm, 1.0])[:3]
    flip = bool(rng.random() < 0.5)
    # Fine-grid world coordinates (MNI mm) of a box centred on the chosen point.
    start_world = mni.affine[:3, :3] @ centre_vox + mni.affine[:3, 3] - (n_fine * fine) / 2.0 + fine / 2.0
    axes = [start_world[i] + fine * np.arange(n_fine[i], dtype=np.float32) for i in range(3)]
    world = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).astype(np.float32)
    inv = np.linalg.inv(mni.affine)
    vox = world @ inv[:3, :3].T + inv[:3, 3]
    coords = np.moveaxis(vox, -1, 0)
    if flip:  # a mirrored hemisphere is a new subject for the detector
        coords[0] = (mni.t1.data.shape[0] - 1) - coords[0]
    maps = {k: ndimage.map_coordinates(getattr(mni, k).data, coords, order=1, mode="constant")
            for k in ("gm", "wm", "csf", "mask")}
    brain = maps["mask"] > 0.5
    gm, wm, csf = (np.clip(maps[k], 0, 1) for k in ("gm", "wm", "csf"))
    tissue_sum = np.maximum(gm + wm + csf, 1e-3)
    gm, wm, csf = (np.where(brain, t / np.maximum(tissue_sum, 1.0), 0) for t in (gm, wm, csf))
    csf = np.where(brain, np.maximum(csf, 1.0 - gm - wm), 0)

    scale = rng.uniform(0.85, 1.15)
    chi = scale * (CHI["wm"] * wm + CHI["gm"] * gm + CHI["csf"] * csf)
    pd = PD["wm"] * wm + PD["gm"] * gm + PD["csf"] * csf
    r2s = R2S["wm"] * wm + R2S["gm"] * gm + R2S["csf"] * csf
    mimic = np.zeros(world.shape[:-1], np.uint8)
    for _, (lab, centre, semi, value) in NUCLEI.items():
        for side in (1.0, -1.0):
            c = np.array([side * centre[0], centre[1], centre[2]], np.float32)
            if flip:
                c[0] = -c[0]
            box = _near(world, c, np.asarray(semi) + 1.0)
            if any(b.stop <= b.start for b in box):
                continue
            d = (world[box] - c) / np.asarray(semi, np.float32)
            w = np.zeros(brain.shape, np.float32)
            w[box] = np.clip((1.0 - np.sqrt((d * d).sum(-1))) * min(semi) / fine + 0.5, 0, 1) * brain[box]
            v = value * rng.uniform(0.8, 1.2)
            chi = chi * (1 - w) + v * w
            r2s = r2s * (1 - w) + (R2S["gm"] + 150.0 * v) * w
            mimic[w > 0.5] = 4

    h = fine
    tissue_pts = np.argwhere(brain & (gm + wm > 0.6))
    if len(tissue_pts) == 0:
        tissue_pts = np.argwhere(np.ones(brain.shape, bool))
    edge_dist = ndimage.distance_transform_edt(brain, sampling=h)
    deep_pts = np.argwhere(brain & (gm + wm > 0.6) & (edge_dist > 3.0))
    if len(deep_pts) == 0:
        deep_pts = tissue_pts
    csf_pts = np.argwhere(brain & (csf > 0.6) & (edge_dist > 1.0))
    to_world = lambda ij: start_world + h * ij  # noqa: E731
    taken: list[tuple[np.ndarray, float]] = []
    meta_mimics: dict[str, list] = {"veins": [], "calcifications": [], "flow_voids": []}

    for _ in range(int(rng.integers(3, 8))):
        start = to_world(tissue_pts[rng.integers(len(tissue_pts))].astype(float))
        path = _random_path(rng, start, rng.uniform(15, 50))
        radius = float(rng.uniform(0.4, 1.0))
        occ = _tube(world, path, radius, h) * brain
        value = float(rng.uniform(0.25, 0.45))
        chi = chi * (1 - occ) + value * occ
        r2s = r2s * (1 - occ) + R2S["vein"] * occ
        mimic[occ > 0.5] = 1
        meta_mimics["veins"].append({"radius_mm": radius, "chi_ppm": value, "start_mm": path[0].tolist(),
                                     "length_mm": float(np.linalg.norm(np.diff(path, axis=0), axis=1).sum())})
        taken += [(p, radius + 1.0) for p in path]

    n_calc = int(rng.choice(3, p=[0.2, 0.5, 0.3]))
    for _ in range(n_calc):
        radius = float(rng.uniform(1.0, 2.5))
        c = _pick(rng, to_world(deep_pts.astype(float)), taken, radius, 2.0)
        if c is None:
            continue
        occ = _ball(world, c, radius, h) * brain
        value = float(rng.uniform(-0.5, -0.15))
        chi = chi * (1 - occ) + value * occ
        pd = pd * (1 - 0.7 * occ)
        r2s = r2s * (1 - occ) + R2S["calcification"] * occ
        mimic[occ > 0.5] = 2
        taken.append((c, radius + 1.0))
        meta_mimics["calcifications"].append({"centre_mm": c.tolist(), "radius_mm": radius, "chi_ppm": value})

    if len(csf_pts):
        for _ in range(int(rng.integers(1, 5))):
            start = to_world(csf_pts[rng.integers(len(csf_pts))].astype(float))
            path = _random_path(rng, start, rng.uniform(2, 6), step=2.0)
            radius = float(rng.uniform(0.5, 1.2))
            occ = _tube(world, path, radius, h) * brain
            pd = pd * (1 - 0.95 * occ)
            mimic[occ > 0.5] = 3
            meta_mimics["flow_voids"].append({"start_mm": path[0].tolist(), "radius_mm": radius})

    cmb_fine = np.zeros(world.shape[:-1], np.float32)
    cmbs = []
    for _ in range(n_cmb):
        for _attempt in range(20):
            radius = float(rng.uniform(0.5, 2.5))
            value = float(rng.uniform(0.4, 1.6))
            r_app = max(apparent_radius(radius, value, b0=b0, te=te), voxel_size)
            if 1.0 <= r_app <= 5.0:
                break
        c = _pick(rng, to_world(deep_pts.astype(float)), taken, r_app, 2.0)
        if c is None:
            continue
        occ = _ball(world, c, radius, h) * brain
        chi = chi * (1 - occ) + value * occ
        r2s = r2s * (1 - occ) + R2S["cmb"] * occ
        cmb_fine = np.maximum(cmb_fine, occ)
        taken.append((c, r_app))
        cmbs.append({"centre_mm": c.tolist(), "radius_mm": radius, "chi_ppm": value, "apparent_radius_mm": r_app})

    chi = np.where(brain, chi, 0.0).astype(np.float32)
    pd = np.where(brain, pd, PD["outside"]).astype(np.float32)
    r2s = np.where(brain, r2s, 30.0).astype(np.float32)

    tilt = np.deg2rad(rng.uniform(0, tilt_deg))
    azimuth = rng.uniform(0, 2 * np.pi)
    b0_dir = np.array([np.sin(tilt) * np.cos(azimuth), np.sin(tilt) * np.sin(azimuth), np.cos(tilt)])
    out_affine = np.eye(4)
    out_affine[:3, :3] = np.diag([voxel_size] * 3)
    out_affine[:3, 3] = start_world + (voxel_size - fine) / 2.0
    vox_b0 = b0_direction_in_voxels(b0_dir, out_affine)
    dB = forward_field(chi, voxel_size=(h, h, h), b0_dir=vox_b0)
    omega = GAMMA * b0 * 1e-6
    signal_fine = pd * np.exp(-r2s * te) * np.exp(1j * omega * te * dB)
    signal = _block_mean(signal_fine, SUPERSAMPLE)
    field_1 = _block_mean(dB, SUPERSAMPLE)
    mask = _block_mean(brain.astype(np.float32), SUPERSAMPLE) > 0.5
    del signal_fine

    sigma = PD["wm"] * math.exp(-R2S["wm"] * te) / snr
    noisy = (signal + rng.normal(0, sigma, signal.shape) + 1j * rng.normal(0, sigma, signal.shape)).astype(np.complex64)
    bias = _bias(rng, signal.shape)
    gain = rng.uniform(200, 3000)  # scanners store magnitude on arbitrary scales
    gre = (np.abs(noisy) * bias * gain).astype(np.float32)
    swi = (swi_from_complex(noisy) * bias * gain).astype(np.float32)
    # Field noise of a phase measured with this magnitude: sigma / (|s| gamma B0 TE).
    field_sigma = sigma / np.maximum(np.abs(signal), 0.05) / (omega * te)
    noisy_field = field_1 + rng.normal(0, 1, field_1.shape) * np.minimum(field_sigma, 0.5)
    qsm = tkd(noisy_field.astype(np.float32), mask, voxel_size=(voxel_size,) * 3, b0_dir=vox_b0)

    cmb_labels = np.zeros(n_out, np.int16)
    grid_out = [out_affine[i, 3] + voxel_size * np.arange(n_out[i]) for i in range(3)]
    out_world = np.stack(np.meshgrid(*grid_out, indexing="ij"), axis=-1)
    for i, c in enumerate(cmbs, start=1):
        ball = np.linalg.norm(out_world - np.asarray(c["centre_mm"]), axis=-1) <= c["apparent_radius_mm"]
        ball[tuple(np.clip(np.round((np.asarray(c["centre_mm"]) - out_affine[:3, 3]) / voxel_size).astype(int),
                           0, n_out - 1))] = True
        cmb_labels[ball & (cmb_labels == 0)] = i
    mimic_out = _block_mode(mimic, SUPERSAMPLE)
    meta = {"seed": seed, "voxel_size_mm": voxel_size, "b0": b0, "te_s": te, "snr": snr, "b0_dir": b0_dir.tolist(),
            "flip_lr": flip, "centre_mni_voxel": np.asarray(centre_vox).tolist(), "gain": gain,
            "chi_scale": scale, "mimics": meta_mimics, "coordinates": "world = MNI152 mm (mirrored when flip_lr)"}
    return CmbPhantom(images={"swi": swi, "gre": gre, "qsm": qsm}, cmb_labels=cmb_labels, mimic_labels=mimic_out,
                      mask=mask, chi=_block_mean(chi, SUPERSAMPLE).real.astype(np.float32), affine=out_affine,
                      cmbs=cmbs, meta=meta)


def _block_mean(volume: np.ndarray, f: int) -> np.ndarray:
    n = [s // f for s in volume.shape]
    v = volume[: n[0] * f, : n[1] * f, : n[2] * f]
    return v.reshape(n[0], f, n[1], f, n[2], f).mean(axis=(1, 3, 5))


def _block_mode(labels: np.ndarray, f: int) -> np.ndarray:
    """Label of each block that covers at least a quarter of its fine voxels (the later label wins ties)."""
    n = [s // f for s in labels.shape]
    v = labels[: n[0] * f, : n[1] * f, : n[2] * f].reshape(n[0], f, n[1], f, n[2], f)
    out = np.zeros(n, np.uint8)
    for lab in MIMIC_NAMES:
        out[(v == lab).sum(axis=(1, 3, 5)) >= max(f**3 // 4, 1)] = lab
    return out


def _bias(rng: np.random.Generator, shape) -> np.ndarray:
    axes = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij")
    coefs = rng.normal(0, 0.15, 3)
    return np.exp(sum(c * a for c, a in zip(coefs, axes))).astype(np.float32)
