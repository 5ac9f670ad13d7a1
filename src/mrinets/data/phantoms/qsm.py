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

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from mrinets.data.phantoms.head import rotation_matrix
from mrinets.io import OutputStage, write_json
from mrinets.io.nifti import from_array, save
from mrinets.physics.dipole import b0_direction_in_voxels, forward_field
from mrinets.physics.echoes import GAMMA, GreAcquisition

__all__ = ["NUCLEI", "QsmPhantom", "make_qsm_head"]

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


def _ellipsoid(world: np.ndarray, centre, axes, rotation: np.ndarray) -> np.ndarray:
    """Soft ellipsoid (1 inside, 0 outside, ~1 mm edge) on world coordinates (3, X, Y, Z)."""
    d = np.tensordot(rotation.T, world - np.asarray(centre, float)[:, None, None, None], axes=1)
    r = np.sqrt(sum((d[i] / axes[i]) ** 2 for i in range(3)))
    edge = 1.0 / min(axes)
    return np.clip((1.0 - r) / edge + 0.5, 0.0, 1.0)


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    return rotation_matrix(np.deg2rad(rng.uniform(-max_deg, max_deg, 3)))


def _tissue_on_grid(voxel_size: float):
    """MNI tissue probabilities resampled to an isotropic grid."""
    from mrinets.data.templates import load_mni

    mni = load_mni()
    step = float(voxel_size)
    affine = mni.affine.copy()
    zoom = 1.0 / step
    maps = {}
    for name in ("gm", "wm", "csf", "mask"):
        data = getattr(mni, name).data
        maps[name] = ndimage.zoom(data, zoom, order=1) if step != 1.0 else data.copy()
    affine[:3, :3] = np.diag([step] * 3)
    return maps, affine


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
    """
    if not voxel_size > 0:
        raise ValueError(f"voxel_size must be positive, got {voxel_size!r}")
    if not snr > 0:
        raise ValueError(f"snr must be positive, got {snr!r}")
    for name, value in (("iron_scale", iron_scale), ("myelin_scale", myelin_scale)):
        if not 0 <= value <= 10:
            raise ValueError(f"{name} must be a scale from 0 to 10, got {value!r}")
    GreAcquisition(echo_times=echo_times, b0=b0, b0_dir=b0_dir)  # the acquisition's own checks
    from mrinets.data.phantoms.budget import check_grid_memory
    from mrinets.data.templates import MNI_SHAPE

    # Measured: about 200 bytes per voxel plus 16 per echo (complex signals) at 2 mm.
    check_grid_memory([n / voxel_size for n in MNI_SHAPE], bytes_per_voxel=200 + 16 * len(echo_times),
                      name="voxel_size", value=f"{voxel_size:g} mm")
    rng = np.random.default_rng(seed)
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
        t = np.clip(np.tensordot(direction, world - start[:, None, None, None], axes=1), -25, 25)
        closest = start[:, None, None, None] + direction[:, None, None, None] * t
        dist = np.sqrt(((world - closest) ** 2).sum(0))
        veins = np.maximum(veins, np.clip(1.5 - dist / voxel_size, 0, 1))
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
    outside[brain] = 0.0
    # Tissue between brain and skull is CSF-like (chi 0) and keeps the outside map's zeros.

    vox_b0 = b0_direction_in_voxels(b0_dir, affine)
    local = forward_field(brain_chi, voxel_size=(voxel_size,) * 3, b0_dir=vox_b0)
    background = forward_field(outside, voxel_size=(voxel_size,) * 3, b0_dir=vox_b0)
    total = (local + background).astype(np.float32)

    pd = PD["wm"] * wm + PD["gm"] * gm + PD["csf"] * csf
    pd = np.where(brain, pd, 0.0) + PD["skull"] * skull + PD["scalp"] * scalp
    pd = pd * (1 - 0.9 * sinus)
    r2s = np.where(brain, r2s, 30.0)
    phi0 = 0.8 * np.sin(world[0] / 60 + rng.uniform(0, 6)) + 0.6 * np.cos(world[1] / 80 + rng.uniform(0, 6))
    sigma = PD["wm"] * np.exp(-R2STAR["wm"] * echo_times[0]) / snr
    te = np.asarray(echo_times, np.float32)
    omega_per_ppm = GAMMA * b0 * 1e-6
    signal = pd[..., None] * np.exp(-r2s[..., None] * te) * np.exp(
        1j * (phi0[..., None] + omega_per_ppm * total[..., None] * te)
    )
    noise = rng.normal(0, sigma, signal.shape) + 1j * rng.normal(0, sigma, signal.shape)
    signal = (signal + noise).astype(np.complex64)
    mask = brain

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
        chi=brain_chi[box],
        local_field=np.where(mask, local, 0)[box].astype(np.float32),
        total_field=total[box],
        magnitude=np.abs(signal)[box],
        phase=np.angle(signal)[box].astype(np.float32),
        mask=mask[box],
        labels=labels[box],
        labels_lr=labels_lr[box],
        affine=affine,
        echo_times=tuple(float(t) for t in echo_times),
        b0=float(b0),
        b0_dir=tuple(float(v) for v in b0_dir),
        meta={
            "seed": seed,
            "voxel_size_mm": voxel_size,
            "snr": snr,
            "crop_mm": crop_mm,
            "chi_ppm": scale,
            "nucleus_chi_ppm": nucleus_chi,
            "calcification_centre_mm": calc_centre.tolist(),
            "noise_sigma": float(sigma),
            "iron_scale": float(iron_scale),
            "myelin_scale": float(myelin_scale),
        },
    )
