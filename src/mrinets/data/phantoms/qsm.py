"""Susceptibility head phantom: chi map, GRE magnitude and wrapped phase with ground truth.

The head is built on the real MNI152 2009a tissue maps: white and grey matter
and CSF from their probabilities, iron-rich deep grey nuclei as smooth
ellipsoids at their MNI positions, veins as tubes, one calcification, and
outside the brain a skull, scalp, an air-filled sinus and the air around the
head, whose susceptibility differences make the strong background field of real
scans. The field is the dipole model's (:func:`mrinets.physics.dipole.forward_field`),
the signal is multi-echo complex GRE with T2* decay, a smooth receive phase
offset and complex Gaussian noise, so magnitude is Rician.

Susceptibility values (ppm, relative to water/CSF) follow the ranges reported in
the QSM literature, e.g. Deistung A, et al. Neuroimage 2013;65:299 and the 2016/
2019 QSM challenge head models (Marques JP, et al. Magn Reson Med 2021;86:526).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from mrinets.data.phantoms.head import rotation_matrix
from mrinets.io import OutputStage, write_json
from mrinets.io.nifti import from_array, save
from mrinets.physics.dipole import (
    b0_direction_in_voxels,
    forward_field,
    point_dipole_field,
)
from mrinets.physics.echoes import GAMMA, GreAcquisition

__all__ = ["NUCLEI", "ORIENTATIONS", "QsmPhantom", "make_qsm_head", "make_qsm_scan", "scan_affine"]

# name: (label, MNI centre of the right-hemisphere copy (mm), semi-axes (mm), chi ppm)
NUCLEI: dict[str, tuple[int, tuple[float, float, float], tuple[float, float, float], float]] = {
    "caudate": (1, (13.0, 13.0, 10.0), (4.5, 8.0, 7.0), 0.07),
    "putamen": (2, (25.0, 2.0, 1.0), (5.0, 12.0, 8.0), 0.06),
    "globus_pallidus": (3, (19.0, -3.0, -1.0), (3.0, 6.0, 4.0), 0.17),
    "thalamus": (4, (11.0, -18.0, 7.0), (6.5, 11.0, 7.0), 0.02),
    "red_nucleus": (5, (5.0, -20.0, -9.0), (2.8, 3.2, 3.0), 0.13),
    "substantia_nigra": (6, (10.0, -17.0, -13.0), (2.5, 6.0, 2.5), 0.16),
}
CHI = {"wm": -0.03, "gm": 0.015, "csf": 0.0, "vein": 0.35, "calcification": -0.25,
       "skull": -2.0, "scalp": -0.05, "air": 9.4}
# labels_lr: nucleus label n is 2n - 1 on the right (x > 0 in RAS) and 2n on the left.
LR_ROWS = [f"{2 * lab - 1 + k}\t{name}_{side}" for name, (lab, *_r) in NUCLEI.items() for k, side in enumerate("RL")]
R2STAR = {"wm": 21.0, "gm": 15.0, "csf": 3.0, "nucleus_per_ppm": 150.0, "vein": 45.0, "calcification": 60.0}
PD = {"wm": 0.70, "gm": 0.85, "csf": 1.0, "skull": 0.05, "scalp": 0.6, "air": 0.0}


@dataclass
class QsmPhantom:
    """A simulated GRE scan and its ground truth (RAS arrays on one grid).

    ``labels`` numbers each nucleus as :data:`NUCLEI` does, both sides alike;
    ``labels_lr`` tells right from left (:data:`LR_ROWS`).
    """

    chi: np.ndarray
    local_field: np.ndarray
    total_field: np.ndarray
    magnitude: np.ndarray
    phase: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    echo_times: tuple[float, ...]
    b0: float
    b0_dir: tuple[float, float, float]
    meta: dict = field(default_factory=dict)
    labels_lr: np.ndarray | None = None

    def save(self, outdir: str | Path) -> list[Path]:
        """Write the scan, the truth, labels with a BIDS-style TSV, and phantom.json."""
        ref = from_array(self.chi, self.affine)
        with OutputStage(outdir) as stage:
            save(self.magnitude, stage.path("mag.nii.gz"), like=ref)
            save(self.phase, stage.path("phase.nii.gz"), like=ref)
            save(self.chi, stage.path("chi.nii.gz"), like=ref)
            save(self.local_field, stage.path("local_field.nii.gz"), like=ref)
            save(self.total_field, stage.path("total_field.nii.gz"), like=ref)
            save(self.mask.astype(np.uint8), stage.path("mask.nii.gz"), like=ref, dtype=np.uint8)
            save(self.labels, stage.path("labels.nii.gz"), like=ref, dtype=np.uint8)
            rows = ["index\tname"] + [f"{lab}\t{name}" for name, (lab, *_rest) in NUCLEI.items()]
            stage.path("labels.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
            if self.labels_lr is not None:
                save(self.labels_lr, stage.path("labels_lr.nii.gz"), like=ref, dtype=np.uint8)
                stage.path("labels_lr.tsv").write_text("\n".join(["index\tname", *LR_ROWS]) + "\n", encoding="utf-8")
            write_json(
                stage.path("phantom.json"),
                {"echo_times": list(self.echo_times), "b0": self.b0, "b0_dir": list(self.b0_dir), **self.meta},
            )
            return [stage.final(n) for n in stage.names]


def _near(world: np.ndarray, lo, hi) -> tuple[slice, ...]:
    """Index box of an axis-aligned world grid (3, X, Y, Z) that holds the world box [lo, hi]."""
    box = []
    for axis in range(3):
        coord = world[(axis,) + tuple(0 if a != axis else slice(None) for a in range(3))]
        inside = np.nonzero((coord >= lo[axis]) & (coord <= hi[axis]))[0]
        box.append(slice(int(inside[0]), int(inside[-1]) + 1) if inside.size else slice(0, 0))
    return tuple(box)


def _ellipsoid(world: np.ndarray, centre, axes, rotation: np.ndarray) -> np.ndarray:
    """Soft ellipsoid (1 inside, 0 outside, ~1 mm edge) on world coordinates (3, X, Y, Z) of an axis-aligned grid."""
    centre = np.asarray(centre, float)
    edge = 1.0 / min(axes)
    reach = max(axes) * (1.0 + edge) + 1.0
    box = _near(world, centre - reach, centre + reach)
    out = np.zeros(world.shape[1:], np.float32)
    sub = world[(slice(None),) + box]
    d = np.tensordot(rotation.T, sub - centre[:, None, None, None], axes=1)
    r = np.sqrt(sum((d[i] / axes[i]) ** 2 for i in range(3)))
    out[box] = np.clip((1.0 - r) / edge + 0.5, 0.0, 1.0)
    return out


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    return rotation_matrix(np.deg2rad(rng.uniform(-max_deg, max_deg, 3)))


def _tissue_on_grid(voxel_size: float):
    """MNI tissue probabilities resampled to an isotropic grid (copies: the caller may change them)."""
    maps, affine = _tissue_on_grid_cached(float(voxel_size))
    return {name: data.copy() for name, data in maps.items()}, affine.copy()


@functools.lru_cache(maxsize=4)
def _tissue_on_grid_cached(voxel_size: float):
    # The same four zooms of the template for every phantom of a voxel size (a cohort, a test session).
    from mrinets.data.templates import load_mni

    mni = load_mni()
    step = float(voxel_size)
    affine = mni.affine.copy()
    zoom = 1.0 / step
    maps = {}
    for name in ("gm", "wm", "csf", "mask"):
        data = getattr(mni, name).data
        maps[name] = ndimage.zoom(data, zoom, order=1) if step != 1.0 else data.copy()
        maps[name].setflags(write=False)
    affine[:3, :3] = np.diag([step] * 3)
    affine.setflags(write=False)
    return maps, affine


def _check_head_args(snr: float, iron_scale: float, myelin_scale: float) -> None:
    if not snr > 0:
        raise ValueError(f"snr must be positive, got {snr!r}")
    for name, value in (("iron_scale", iron_scale), ("myelin_scale", myelin_scale)):
        if not 0 <= value <= 10:
            raise ValueError(f"{name} must be a scale from 0 to 10, got {value!r}")


def _head_model(
    rng: np.random.Generator,
    *,
    voxel_size: float,
    b0_dir: tuple[float, float, float],
    iron_scale: float,
    myelin_scale: float,
    air_smooth_mm: float = 0.0,
    skull_pd: float = PD["skull"],
) -> dict:
    """Noise-free head on an isotropic RAS grid: chi, fields, proton density, R2*, receive phase, labels."""
    maps, affine = _tissue_on_grid(voxel_size)
    gm, wm, csf = maps["gm"], maps["wm"], maps["csf"]
    brain = maps["mask"] > 0.5
    shape = gm.shape
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
    world = (affine[:3, :3] @ ijk + affine[:3, 3:4]).reshape(3, *shape).astype(np.float32)

    scale = {k: v * rng.uniform(0.85, 1.15) for k, v in CHI.items()}
    chi = scale["wm"] * myelin_scale * wm + scale["gm"] * gm + scale["csf"] * csf
    labels = np.zeros(shape, np.uint8)
    labels_lr = np.zeros(shape, np.uint8)
    r2s = R2STAR["wm"] * wm + R2STAR["gm"] * gm + R2STAR["csf"] * csf
    nucleus_chi = {}
    for name, (lab, centre, axes, value) in NUCLEI.items():
        v = value * rng.uniform(0.8, 1.2) * iron_scale
        nucleus_chi[name] = v
        for side in (1.0, -1.0):
            c = (side * centre[0] + rng.normal(0, 0.5), centre[1] + rng.normal(0, 0.5), centre[2])
            w = _ellipsoid(world, c, axes, _rotation(rng, 5.0)) * brain
            chi = chi * (1 - w) + v * w
            r2s = r2s * (1 - w) + (R2STAR["gm"] + R2STAR["nucleus_per_ppm"] * v) * w
            labels[w > 0.5] = lab
            labels_lr[w > 0.5] = 2 * lab - 1 if side > 0 else 2 * lab

    veins = np.zeros(shape, np.float32)
    for _ in range(6):
        start = rng.uniform([-50, -70, -10], [50, 50, 40])
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        ends = np.stack([start - 25 * direction, start + 25 * direction])
        box = _near(world, ends.min(0) - 2 * voxel_size, ends.max(0) + 2 * voxel_size)
        sub = world[(slice(None),) + box]
        t = np.clip(np.tensordot(direction, sub - start[:, None, None, None], axes=1), -25, 25)
        closest = start[:, None, None, None] + direction[:, None, None, None] * t
        dist = np.sqrt(((sub - closest) ** 2).sum(0))
        veins[box] = np.maximum(veins[box], np.clip(1.5 - dist / voxel_size, 0, 1))
    veins *= brain & (labels == 0)
    chi = chi * (1 - veins) + scale["vein"] * veins
    r2s = r2s * (1 - veins) + R2STAR["vein"] * veins

    calc_centre = rng.uniform([-40, -40, 10], [40, 30, 35])
    calc = _ellipsoid(world, calc_centre, (2.0, 2.0, 2.0), np.eye(3)) * brain * (labels == 0)
    chi = chi * (1 - calc) + scale["calcification"] * calc
    r2s = r2s * (1 - calc) + R2STAR["calcification"] * calc
    brain_chi = np.where(brain, chi, 0.0).astype(np.float32)

    dist_out = ndimage.distance_transform_edt(~brain, sampling=[voxel_size] * 3)
    skull = (dist_out > 3) & (dist_out <= 9)
    scalp = (dist_out > 9) & (dist_out <= 14)
    head = dist_out <= 14
    sinus = _ellipsoid(world, (0.0, 55.0, -35.0), (14.0, 9.0, 9.0), np.eye(3)) * ~brain
    outside = np.zeros(shape, np.float32)
    outside[skull] = scale["skull"]
    outside[scalp] = scale["scalp"]
    outside[~head] = scale["air"]
    outside = outside * (1 - sinus) + scale["air"] * sinus
    if air_smooth_mm > 0:
        outside = ndimage.gaussian_filter(outside, air_smooth_mm / voxel_size).astype(np.float32)
    outside[brain] = 0.0
    # Tissue between brain and skull is CSF-like (chi 0) and keeps the outside map's zeros.

    vox_b0 = b0_direction_in_voxels(b0_dir, affine)
    local = forward_field(brain_chi, voxel_size=(voxel_size,) * 3, b0_dir=vox_b0)
    # Point dipoles for the sources outside the brain: their field is harmonic inside it for any B0
    # direction, as a real background field is (the k-space kernel's is not under an oblique B0).
    background = point_dipole_field(outside, voxel_size=(voxel_size,) * 3, b0_dir=vox_b0)

    pd = PD["wm"] * wm + PD["gm"] * gm + PD["csf"] * csf
    pd = np.where(brain, pd, 0.0) + skull_pd * skull + PD["scalp"] * scalp
    pd = pd * (1 - 0.9 * sinus)
    r2s = np.where(brain, r2s, 30.0)
    phi0 = 0.8 * np.sin(world[0] / 60 + rng.uniform(0, 6)) + 0.6 * np.cos(world[1] / 80 + rng.uniform(0, 6))
    return {
        "affine": affine, "brain": brain, "head": head, "chi": brain_chi,
        "local": np.where(brain, local, 0).astype(np.float32),
        "total": (local + background).astype(np.float32), "pd": pd.astype(np.float32),
        "r2s": r2s.astype(np.float32), "phi0": phi0.astype(np.float32), "labels": labels, "labels_lr": labels_lr,
        "scale": scale, "nucleus_chi": nucleus_chi, "calc_centre": calc_centre,
    }


def _signal(model: dict, echo_times, b0: float) -> np.ndarray:
    """Noise-free complex multi-echo GRE signal (X, Y, Z, E) of a head model."""
    te = np.asarray(echo_times, np.float32)
    omega_per_ppm = np.float32(GAMMA * b0 * 1e-6)
    return (model["pd"][..., None] * np.exp(-model["r2s"][..., None] * te) * np.exp(
        1j * (model["phi0"][..., None] + omega_per_ppm * model["total"][..., None] * te))).astype(np.complex64)


def make_qsm_head(
    seed: int,
    *,
    voxel_size: float = 1.0,
    echo_times: tuple[float, ...] = (0.004, 0.012, 0.020, 0.028),
    b0: float = 3.0,
    b0_dir: tuple[float, float, float] = (0.0, 0.0, 1.0),
    snr: float = 100.0,
    crop_mm: float | None = None,
    iron_scale: float = 1.0,
    myelin_scale: float = 1.0,
) -> QsmPhantom:
    """Simulate a multi-echo GRE scan of a susceptibility head.

    Parameters
    ----------
    seed : int
        Everything random (chi values, vein paths, calcification, receive
        phase, noise) follows from it.
    voxel_size : float
        Isotropic voxel size in mm.
    echo_times : tuple of float
        Echo times in seconds.
    b0 : float
        Field strength in tesla.
    b0_dir : tuple of float
        B0 direction in world coordinates.
    snr : float
        White-matter magnitude at the first echo divided by the noise standard
        deviation of each of the real and imaginary channels.
    crop_mm : float, optional
        Side of a cube around the deep grey nuclei, for fast tests; the
        background field is still made by the whole head.
    iron_scale : float
        Multiplies the deep grey nuclei's susceptibility (and their R2*):
        about 0.2-0.4 gives the low-iron nuclei of an infant brain.
    myelin_scale : float
        Multiplies white matter's (negative) susceptibility; low in an
        unmyelinated infant brain, whose grey-white contrast is weak.

    Returns
    -------
    QsmPhantom

    See Also
    --------
    make_qsm_scan : the same head acquired on another grid (voxel size, storage
        orientation, oblique slices) with intravoxel dephasing.
    """
    if not voxel_size > 0:
        raise ValueError(f"voxel_size must be positive, got {voxel_size!r}")
    _check_head_args(snr, iron_scale, myelin_scale)
    GreAcquisition(echo_times=echo_times, b0=b0, b0_dir=b0_dir)  # the acquisition's own checks
    from mrinets.data.phantoms.budget import check_grid_memory
    from mrinets.data.templates import MNI_SHAPE

    # Measured: about 200 bytes per voxel plus 16 per echo (complex signals) at 2 mm.
    check_grid_memory([n / voxel_size for n in MNI_SHAPE], bytes_per_voxel=200 + 16 * len(echo_times),
                      name="voxel_size", value=f"{voxel_size:g} mm")
    rng = np.random.default_rng(seed)
    model = _head_model(rng, voxel_size=voxel_size, b0_dir=b0_dir, iron_scale=iron_scale, myelin_scale=myelin_scale)
    affine, shape = model["affine"], model["chi"].shape
    signal = _signal(model, echo_times, b0)
    sigma = PD["wm"] * np.exp(-R2STAR["wm"] * echo_times[0]) / snr
    noise = rng.normal(0, sigma, signal.shape) + 1j * rng.normal(0, sigma, signal.shape)
    signal = (signal + noise).astype(np.complex64)
    mask = model["brain"]

    box = (slice(None),) * 3
    if crop_mm is not None:
        half = int(round(crop_mm / (2 * voxel_size)))
        centre = np.round(np.linalg.solve(affine, [0.0, -8.0, 0.0, 1.0])[:3]).astype(int)
        lo = np.maximum(centre - half, 0)
        hi = np.minimum(centre + half, shape)
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        affine = affine.copy()
        affine[:3, 3] = affine[:3, 3] + affine[:3, :3] @ lo
    return QsmPhantom(
        chi=model["chi"][box],
        local_field=model["local"][box],
        total_field=model["total"][box],
        magnitude=np.abs(signal)[box],
        phase=np.angle(signal)[box].astype(np.float32),
        mask=mask[box],
        labels=model["labels"][box],
        labels_lr=model["labels_lr"][box],
        affine=affine,
        echo_times=tuple(float(t) for t in echo_times),
        b0=float(b0),
        b0_dir=tuple(float(v) for v in b0_dir),
        meta={
            "seed": seed,
            "voxel_size_mm": voxel_size,
            "snr": snr,
            "crop_mm": crop_mm,
            "chi_ppm": model["scale"],
            "nucleus_chi_ppm": model["nucleus_chi"],
            "calcification_centre_mm": model["calc_centre"].tolist(),
            "noise_sigma": float(sigma),
            "iron_scale": float(iron_scale),
            "myelin_scale": float(myelin_scale),
        },
    )


ORIENTATIONS = ("RAS", "LAS", "LPS")


def scan_affine(
    voxel_size: tuple[float, float, float],
    *,
    orientation: str = "RAS",
    oblique_deg: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """3x3 voxel-to-world block of a scan grid: axis flips of ``orientation``, then a rotation (x, y, z degrees)."""
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation must be one of {', '.join(ORIENTATIONS)}, got {orientation!r}")
    size = np.asarray(voxel_size, dtype=np.float64)
    if size.shape != (3,) or not np.all(size > 0):
        raise ValueError(f"voxel_size must be three positive lengths in mm, got {voxel_size!r}")
    flips = np.diag([1.0 if code == ras else -1.0 for code, ras in zip(orientation, "RAS")])
    return rotation_matrix(np.deg2rad(oblique_deg)) @ flips @ np.diag(size)


def make_qsm_scan(
    seed: int,
    *,
    voxel_size: tuple[float, float, float] = (1.5, 1.5, 1.5),
    orientation: str = "LAS",
    oblique_deg: tuple[float, float, float] = (0.0, 0.0, 0.0),
    b0_dir: tuple[float, float, float] = (0.0, 0.0, 1.0),
    echo_times: tuple[float, ...] = (0.004, 0.012, 0.020, 0.028),
    b0: float = 3.0,
    snr: float = 100.0,
    skull_pd: float = 0.0,
    air_smooth_mm: float = 2.0,
    iron_scale: float = 1.0,
    myelin_scale: float = 1.0,
    fine_mm: float = 1.0,
) -> QsmPhantom:
    """A head simulated on a fine grid and acquired on a scanner's grid, as real scans vary.

    The head of :func:`make_qsm_head` (B0 ``b0_dir`` in world coordinates) is
    simulated noise-free on an isotropic ``fine_mm`` RAS grid; the scan grid
    has its own voxel size (anisotropic allowed), storage ``orientation``
    (axis flips: ``LAS`` is how many scanners write) and a rotation
    ``oblique_deg`` about world x, y, z (oblique slices). Each scan voxel's
    complex signal is the mean of the fine signal over the voxel's extent
    (intravoxel dephasing: phase that varies inside a voxel lowers its
    magnitude), then noise is added. Truths on the scan grid are the same
    voxel means (chi, local and total field, brain fraction > 0.5 for the mask).

    Arrays are in the scan's storage order with its affine, so
    :meth:`QsmPhantom.save` writes an ``orientation``-stored, possibly oblique
    NIfTI, and ``meta["b0_dir_voxels"]`` holds B0 in the scan's voxel axes
    computed from the known rotation (not from the affine), to check the
    pipeline's own conversion against.

    ``skull_pd`` (proton density of bone; 0 = dark skull) and
    ``air_smooth_mm`` (Gaussian width of the air and bone borders) vary the
    outside of the head.
    """
    _check_head_args(snr, iron_scale, myelin_scale)
    GreAcquisition(echo_times=echo_times, b0=b0, b0_dir=b0_dir)
    block = scan_affine(tuple(voxel_size), orientation=orientation, oblique_deg=oblique_deg)
    if not 0.5 <= fine_mm <= min(voxel_size):
        raise ValueError(f"fine_mm must lie in [0.5, smallest voxel edge {min(voxel_size):g}], got {fine_mm!r}")
    if not 0 <= skull_pd <= 1:
        raise ValueError(f"skull_pd must lie in [0, 1], got {skull_pd!r}")
    if not 0 <= air_smooth_mm <= 20:
        raise ValueError(f"air_smooth_mm must lie in [0, 20] mm, got {air_smooth_mm!r}")
    from mrinets.data.phantoms.budget import check_grid_memory
    from mrinets.data.templates import MNI_SHAPE

    # Measured: about 300 bytes per fine voxel at 2 mm (fine head, doubled FFT grids, resampling).
    check_grid_memory([n / fine_mm for n in MNI_SHAPE], bytes_per_voxel=320 + 16 * len(echo_times),
                      name="fine_mm", value=f"{fine_mm:g} mm")
    rng = np.random.default_rng(seed)
    model = _head_model(rng, voxel_size=fine_mm, b0_dir=b0_dir, iron_scale=iron_scale, myelin_scale=myelin_scale,
                        air_smooth_mm=air_smooth_mm, skull_pd=skull_pd)
    fine = model["affine"]
    signal = _signal(model, echo_times, b0)

    # Scan grid: the box, in scan voxel axes, that holds the head and 10 mm of air around it.
    hits = np.nonzero(model["head"])
    margin = int(np.ceil(10.0 / fine_mm))
    span = [[max(int(h.min()) - margin, 0), min(int(h.max()) + margin, n - 1)]
            for h, n in zip(hits, model["head"].shape)]
    corners = np.array(np.meshgrid(*span, indexing="ij")).reshape(3, -1)
    world = fine[:3, :3] @ corners + fine[:3, 3:4]
    inv = np.linalg.inv(block)
    ijk = inv @ world
    lo, hi = np.floor(ijk.min(1)), np.ceil(ijk.max(1))
    shape = tuple(int(v) for v in hi - lo + 1)
    affine = np.eye(4)
    affine[:3, :3] = block
    affine[:3, 3] = block @ lo
    # Sub-voxel samples on a regular grid inside each scan voxel, at most fine_mm apart.
    counts = [max(1, int(np.ceil(h / fine_mm))) for h in voxel_size]
    offsets = [(np.arange(c) + 0.5) / c - 0.5 for c in counts]
    to_fine = np.linalg.inv(fine)
    grid = np.indices(shape, dtype=np.float32).reshape(3, -1)
    fields = {"chi": model["chi"], "local": model["local"], "total": model["total"],
              "brain": model["brain"].astype(np.float32)}
    sums = {k: np.zeros(grid.shape[1], np.float64) for k in fields}
    complex_sum = np.zeros((grid.shape[1], len(echo_times)), np.complex128)
    n_samples = 0
    for du in offsets[0]:
        for dv in offsets[1]:
            for dw in offsets[2]:
                pts = grid + np.array([[du], [dv], [dw]], np.float32)
                coords = to_fine[:3, :3] @ (affine[:3, :3] @ pts + affine[:3, 3:4]) + to_fine[:3, 3:4]
                for k, vol in fields.items():
                    sums[k] += ndimage.map_coordinates(vol, coords, order=1, mode="constant", cval=0.0)
                for e in range(len(echo_times)):
                    re = ndimage.map_coordinates(signal[..., e].real, coords, order=1, mode="constant", cval=0.0)
                    im = ndimage.map_coordinates(signal[..., e].imag, coords, order=1, mode="constant", cval=0.0)
                    complex_sum[:, e] += re + 1j * im
                n_samples += 1
    centre = to_fine[:3, :3] @ (affine[:3, :3] @ grid + affine[:3, 3:4]) + to_fine[:3, 3:4]
    labels = ndimage.map_coordinates(model["labels"], centre, order=0, mode="constant").reshape(shape)
    labels_lr = ndimage.map_coordinates(model["labels_lr"], centre, order=0, mode="constant").reshape(shape)
    mean = {k: (v / n_samples).reshape(shape).astype(np.float32) for k, v in sums.items()}
    mask = mean["brain"] > 0.5
    scan = (complex_sum / n_samples).reshape(*shape, len(echo_times))
    sigma = PD["wm"] * np.exp(-R2STAR["wm"] * echo_times[0]) / snr
    scan = (scan + rng.normal(0, sigma, scan.shape) + 1j * rng.normal(0, sigma, scan.shape)).astype(np.complex64)
    b0_world = np.asarray(b0_dir, float) / np.linalg.norm(b0_dir)
    # B0 in scan voxel axes from the construction: undo the rotation, then the flips.
    flips = np.array([1.0 if code == ras else -1.0 for code, ras in zip(orientation, "RAS")])
    b0_voxels = flips * (rotation_matrix(np.deg2rad(oblique_deg)).T @ b0_world)
    return QsmPhantom(
        chi=np.where(mask, mean["chi"], 0).astype(np.float32),
        local_field=np.where(mask, mean["local"], 0).astype(np.float32),
        total_field=mean["total"],
        magnitude=np.abs(scan),
        phase=np.angle(scan).astype(np.float32),
        mask=mask,
        labels=np.where(mask, labels, 0).astype(np.uint8),
        labels_lr=np.where(mask, labels_lr, 0).astype(np.uint8),
        affine=affine,
        echo_times=tuple(float(t) for t in echo_times),
        b0=float(b0),
        b0_dir=tuple(float(v) for v in b0_dir),
        meta={
            "seed": seed,
            "voxel_size_mm": [float(v) for v in voxel_size],
            "orientation": orientation,
            "oblique_deg": [float(v) for v in oblique_deg],
            "b0_dir_voxels": b0_voxels.tolist(),
            "fine_mm": fine_mm,
            "samples_per_voxel": n_samples,
            "snr": snr,
            "skull_pd": skull_pd,
            "air_smooth_mm": air_smooth_mm,
            "chi_ppm": model["scale"],
            "nucleus_chi_ppm": model["nucleus_chi"],
            "noise_sigma": float(sigma),
            "iron_scale": float(iron_scale),
            "myelin_scale": float(myelin_scale),
        },
    )
