"""Paired 64 mT / 3 T subjects: a varied 3 T-like head and what a 64 mT scanner makes of it.

Each seed draws a different subject from the MNI152 2009a template (random
affine and smooth nonlinear warp, per-subject tissue relaxation), so pairs
held out by seed are different anatomy from the training pairs. The 3 T side is
the warped real template T1 (T1w) or a spin-echo T2w synthesised from its
tissue maps with 3 T relaxation times and the template's own texture; the
64 mT side comes from :func:`mrinets.physics.lowfield.degrade` (64 mT contrast,
1.6 x 1.6 x 5 mm, bias, Rician noise, slight misregistration). A real 3 T T1
gives a pair too (:func:`pair_from_t1`): its tissue fractions come from the
same mixture classifier as the morphometry.

Both sides are also given on the working grid of the networks (2 mm,
the 3 T scan's axes), the low-field scan resampled onto it as a co-registered
pair would be.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from mrinets.io import OutputStage, write_json
from mrinets.io.nifti import from_array, save
from mrinets.physics.lowfield import LowFieldConfig, contrast_levels, degrade, rician
from mrinets.physics.sampling import affine_resample, resample_to_voxel_size

__all__ = ["CONTRASTS", "WORK_MM", "LowFieldPair", "make_lowfield_pair", "pair_from_t1"]

WORK_MM = 2.0
FINE_MM = 1.5
CONTRASTS = ("t1", "t2")
HELD_OUT_SEED = 900_000
"""Evaluation pairs use seeds from here; training seeds stay below it."""


@dataclass
class LowFieldPair:
    """One subject: the 64 mT scan on its own grid, and both scans plus truth on the working grid."""

    lowfield: np.ndarray
    lowfield_affine: np.ndarray
    lf_work: np.ndarray
    hf_work: np.ndarray
    mask_work: np.ndarray
    tissue_work: np.ndarray
    work_affine: np.ndarray
    contrast: str
    meta: dict = field(default_factory=dict)

    def save(self, outdir: str | Path) -> list[Path]:
        """Write ``lowfield.nii.gz`` (own grid), ``lowfield_work``, ``highfield``, ``truth_mask`` and tissue maps
        (working grid) and ``phantom.json``."""
        work = from_array(self.hf_work, self.work_affine)
        with OutputStage(outdir) as stage:
            save(self.lowfield, stage.path("lowfield.nii.gz"), like=from_array(self.lowfield, self.lowfield_affine))
            save(self.lf_work, stage.path("lowfield_work.nii.gz"), like=work)
            save(self.hf_work, stage.path("highfield.nii.gz"), like=work)
            save(self.mask_work.astype(np.uint8), stage.path("truth_mask.nii.gz"), like=work, dtype=np.uint8)
            for i, name in enumerate(("wm", "gm", "csf")):
                save(self.tissue_work[i], stage.path(f"truth_{name}.nii.gz"), like=work)
            write_json(stage.path("phantom.json"), self.meta)
            return [stage.final(n) for n in stage.names]


def _normalise(volume: np.ndarray, mask: np.ndarray) -> np.ndarray:
    scale = float(np.percentile(volume[mask], 99.5)) if mask.any() else float(volume.max() or 1.0)
    return (volume / (scale or 1.0)).astype(np.float32)


def _to_work(volume: np.ndarray, affine: np.ndarray, work_mm: float) -> tuple[np.ndarray, np.ndarray]:
    voxel = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    sigma = np.sqrt(np.clip((work_mm / voxel) ** 2 - 1.0, 0, None)) / 2.3548
    return resample_to_voxel_size(ndimage.gaussian_filter(volume, sigma), affine, (work_mm,) * 3, order=1)


def _finish(hf: np.ndarray, tissue: np.ndarray, detail: np.ndarray, mask: np.ndarray, affine: np.ndarray,
            contrast: str, rng: np.random.Generator, config: LowFieldConfig, work_mm: float,
            meta: dict) -> LowFieldPair:
    lf, lf_affine, lf_meta = degrade(tissue, detail, affine, contrast, rng, config)
    hf_work, work_affine = _to_work(hf, affine, work_mm)
    tissue_work = np.stack([_to_work(t, affine, work_mm)[0] for t in tissue])
    mask_work = _to_work(mask.astype(np.float32), affine, work_mm)[0] > 0.5
    lf_work = affine_resample(lf, lf_affine, work_affine, hf_work.shape, order=1)
    return LowFieldPair(
        lowfield=lf, lowfield_affine=lf_affine, lf_work=_normalise(lf_work, mask_work),
        hf_work=_normalise(hf_work, mask_work), mask_work=mask_work, tissue_work=tissue_work.astype(np.float32),
        work_affine=work_affine, contrast=contrast, meta={**meta, "lowfield": lf_meta, "work_mm": work_mm})


def _check_memory(config: LowFieldConfig) -> None:
    from mrinets.data.phantoms.budget import check_grid_memory

    # The low-field grid spans a head of about 240 mm; float32 arrays, a few alive at once.
    check_grid_memory([240.0 / v for v in config.voxel_mm], bytes_per_voxel=16, name="voxel_size",
                      value=" x ".join(f"{v:g}" for v in config.voxel_mm) + " mm")


def _brain_box(mask: np.ndarray, margin: int = 6) -> tuple[slice, ...]:
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + margin + 1, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def make_lowfield_pair(seed: int, contrast: str = "t1", *, config: LowFieldConfig = LowFieldConfig(),
                       work_mm: float = WORK_MM, deform_mm: float = 3.0, hf_snr: float = 60.0) -> LowFieldPair:
    """Draw subject ``seed`` from the template and scan it at 3 T and at 64 mT."""
    from mrinets.data.phantoms.head import random_warp
    from mrinets.data.templates import load_mni

    if contrast not in CONTRASTS:
        raise ValueError(f"contrast must be t1 or t2, got {contrast!r}")
    _check_memory(config)
    if not (np.isfinite(work_mm) and 0.5 <= work_mm <= 4.0):
        raise ValueError(f"work_mm must lie between 0.5 and 4 mm, got {work_mm}")
    rng = np.random.default_rng(seed)
    mni = load_mni()
    box = _brain_box(mni.mask.data > 0.5)
    affine = mni.affine.copy()
    affine[:3, 3] += affine[:3, :3] @ np.array([b.start for b in box])
    # Subjects are drawn on a 1.5 mm grid: fine beside the 2 mm working grid and 5 mm slices, 3x faster than 1 mm.
    affine[:3, :3] *= FINE_MM

    def fine(volume: np.ndarray) -> np.ndarray:
        return ndimage.zoom(volume[box].astype(np.float32), 1.0 / FINE_MM, order=1)

    t1 = fine(mni.t1.data) / float(mni.t1.data.max())
    coords, warp_meta = random_warp(t1.shape, affine, rng, deform_mm=deform_mm, rotation_deg=5.0)

    def warp(volume: np.ndarray) -> np.ndarray:
        return ndimage.map_coordinates(volume, coords, order=1, mode="constant").astype(np.float32)

    texture = warp(t1)
    mask = warp(fine(mni.mask.data)) > 0.5
    tissue = np.clip(np.stack([warp(fine(mni.wm.data)), warp(fine(mni.gm.data)), warp(fine(mni.csf.data))]), 0, 1)
    detail = texture - ndimage.gaussian_filter(texture, 2.0)
    detail /= float(np.abs(detail).max()) + 1e-6
    if contrast == "t1":
        hf = texture * mask
        hf_levels = None
    else:
        hf_levels = contrast_levels("3T", "t2", rng.uniform(0.9, 1.1, 3))
        hf = np.tensordot(hf_levels.astype(np.float32), tissue, axes=1) * (1.0 - 0.15 * detail)
    hf = rician(np.clip(hf, 0, None), float(np.percentile(hf[mask], 90)) / hf_snr, rng)
    meta = {"seed": seed, "source": "MNI152 2009a, warped", "warp": warp_meta, "hf_snr": hf_snr,
            "hf_levels_wm_gm_csf": None if hf_levels is None else hf_levels.tolist()}
    return _finish(hf, tissue * mask, detail * mask, mask, affine, contrast, rng, config, work_mm, meta)


def pair_from_t1(t1: np.ndarray, affine: np.ndarray, seed: int, *, config: LowFieldConfig = LowFieldConfig(),
                 work_mm: float = WORK_MM) -> LowFieldPair:
    """Scan a real 3 T T1 (RAS array) at 64 mT: the brain from the MNI brain mapped back by an affine registration,
    tissue fractions in it from the mixture classifier, detail from the T1."""
    from mrinets.data.templates import load_mni
    from mrinets.io.nifti import from_array
    from mrinets.metrics.morphometry import classify_tissue
    from mrinets.preprocess.register import register_to_mni

    _check_memory(config)
    rng = np.random.default_rng(seed)
    voxel = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    vol = np.clip(np.asarray(t1, np.float32), 0, None)
    registration = register_to_mni(from_array(vol, affine))
    mni = load_mni()
    mask = registration.from_grid(mni.mask.data, mni.affine, affine, vol.shape) > 0.5
    vol = _normalise(vol, mask)
    _, post = classify_tissue(vol, mask, "t1")
    tissue = np.stack([post[2], post[1], post[0]])  # (WM, GM, CSF)
    smooth = ndimage.gaussian_filter(vol, 2.0 / voxel)
    detail = vol - smooth
    detail /= float(np.abs(detail[mask]).max()) + 1e-6
    meta = {"seed": seed, "source": "real 3 T T1", "voxel_mm": voxel.tolist()}
    return _finish(vol * mask, tissue, detail * mask, mask, affine, "t1", rng, config, work_mm, meta)
