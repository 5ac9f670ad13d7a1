"""Signals to network samples: normalisation, spatial downsampling, patches, training sets."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mrinets.data.phantoms.head import rician
from mrinets.data.phantoms.microstructure import FULL_TARGET_SCHEME, target_indices, target_scheme
from mrinets.physics.diffusion import GradientScheme
from mrinets.physics.diffusion.qspace import QSpaceInterpolator

# The target schemes are defined with the phantom that simulates them; re-exported for the pipeline.
__all__ = ["PARAMETERS", "FULL_TARGET_SCHEME", "target_indices", "target_scheme", "normalise_dwi", "interpolate_ratios",
           "reacquire", "block_average", "fill_outside", "extract_patches", "TrainingSet", "training_set",
           "concatenate"]

PARAMETERS = ("icvf", "isovf", "odi")
_MAX_RATIO = 1.5  # S/S0 above this is noise or artefact, not diffusion


def normalise_dwi(dwi: np.ndarray, scheme: GradientScheme, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """S/S0 of the diffusion-weighted volumes, S0 the mean of the b=0 volumes.

    Returns the (X, Y, Z, M) float32 ratios, clipped to [0, 1.5], and the mask
    restricted to voxels whose S0 is positive and whose signals are finite.
    """
    dwi = np.asarray(dwi, dtype=np.float32)
    inside = dwi[mask]  # only brain voxels are divided: a fraction of the volume
    s0 = inside[:, scheme.b0_mask].mean(axis=-1)
    weighted = inside[:, ~scheme.b0_mask]
    good = (s0 > 0) & np.all(np.isfinite(weighted), axis=-1)
    usable = np.zeros(mask.shape, dtype=bool)
    usable[mask] = good
    ratio = np.zeros((*mask.shape, weighted.shape[-1]), dtype=np.float32)
    ratio[usable] = np.clip(weighted[good] / s0[good, None], 0.0, _MAX_RATIO)
    return ratio, usable


def interpolate_ratios(ratio: np.ndarray, usable: np.ndarray, source: GradientScheme, target: GradientScheme
                       ) -> np.ndarray:
    """S/S0 volumes (X, Y, Z, M_source) of ``source`` interpolated in q-space onto ``target``'s weighted volumes.

    The dictionary method of :class:`~mrinets.physics.diffusion.qspace.QSpaceInterpolator`,
    run on the ``usable`` voxels only; zero elsewhere.
    """
    full = np.ones((int(usable.sum()), source.n), np.float32)
    full[:, ~source.b0_mask] = ratio[usable]
    moved = QSpaceInterpolator(source, target)(full)
    out = np.zeros((*usable.shape, int((~target.b0_mask).sum())), np.float32)
    out[usable] = moved[:, ~target.b0_mask]
    return out


def reacquire(ratio: np.ndarray, usable: np.ndarray, s0: np.ndarray, scheme: GradientScheme, sigma: float,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """S/S0 on ``scheme``'s weighted volumes as a scan with Rician noise of ``sigma`` would give them.

    The signals ``s0 * ratio`` (and ``s0`` on the b=0 volumes) get complex
    Gaussian noise and are normalised again by :func:`normalise_dwi`, so the
    noise also reaches S0: the inputs the network meets on a real scan.
    """
    dwi = np.zeros((*usable.shape, scheme.n), np.float32)
    dwi[..., scheme.b0_mask] = 1.0
    dwi[..., ~scheme.b0_mask] = ratio
    dwi *= np.where(usable, s0, 0.0)[..., None]
    dwi[usable] = rician(dwi[usable], sigma, rng)
    return normalise_dwi(dwi, scheme, usable)


def block_average(volume: np.ndarray, factor: int) -> np.ndarray:
    """Average blocks of ``factor``^3 voxels (a lower-resolution acquisition); trailing voxels are dropped."""
    if factor == 1:
        return np.asarray(volume)
    shape = [s // factor for s in volume.shape[:3]]
    trimmed = volume[: shape[0] * factor, : shape[1] * factor, : shape[2] * factor]
    blocks = trimmed.reshape(shape[0], factor, shape[1], factor, shape[2], factor, *volume.shape[3:])
    return blocks.mean(axis=(1, 3, 5))


def fill_outside(ratio: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Every voxel outside ``mask`` takes the signals of its nearest mask voxel.

    The network never sees background: a patch at the brain's edge looks like
    brain continued outwards, not like brain beside an empty space, and the
    rule is the same whether patches are cut one by one or convolved.
    """
    if mask.all():
        return ratio
    nearest = ndimage.distance_transform_edt(~mask, return_distances=False, return_indices=True)
    return ratio[tuple(nearest)]


def extract_patches(ratio: np.ndarray, mask: np.ndarray, *, patch: int = 3, centres: np.ndarray | None = None
                    ) -> np.ndarray:
    """Patches of S/S0 around every mask voxel (or ``centres``), shape (V, patch^3, M), float32.

    Outside the mask the signals are those of :func:`fill_outside`; beyond the
    array's edge, of the edge voxel.
    """
    if patch % 2 != 1:
        raise ValueError(f"patch must be odd, got {patch}")
    half = patch // 2
    if centres is None:
        centres = np.argwhere(mask)
    padded = np.pad(fill_outside(ratio, mask), ((half, half),) * 3 + ((0, 0),), mode="edge")
    offsets = np.stack(np.meshgrid(*(np.arange(patch),) * 3, indexing="ij"), -1).reshape(-1, 3)
    out = np.empty((len(centres), patch**3, ratio.shape[-1]), dtype=np.float32)
    for k, off in enumerate(offsets):
        out[:, k] = padded[tuple((centres + off).T)]
    return out


@dataclass
class TrainingSet:
    """Patches on one scheme and the targets of their centre voxels (``PARAMETERS`` order)."""

    patches: np.ndarray
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)

    def split(self, fraction: float, *, seed: int) -> tuple[TrainingSet, TrainingSet]:
        """A random ``fraction`` of the samples held out (validation), and the rest."""
        order = np.random.default_rng(seed).permutation(len(self))
        n_out = max(1, int(round(fraction * len(self))))
        out, keep = order[:n_out], order[n_out:]
        return (TrainingSet(self.patches[keep], self.targets[keep]),
                TrainingSet(self.patches[out], self.targets[out]))


def training_set(ratio: np.ndarray, mask: np.ndarray, targets: dict[str, np.ndarray], *, patch: int = 3
                 ) -> TrainingSet:
    """Samples of every mask voxel whose targets are finite."""
    stacked = np.stack([np.asarray(targets[p], dtype=np.float32) for p in PARAMETERS], axis=-1)
    keep = mask & np.all(np.isfinite(stacked), axis=-1)
    return TrainingSet(extract_patches(ratio, keep, patch=patch), np.clip(stacked[keep], 0.0, 1.0))


def concatenate(sets: list[TrainingSet]) -> TrainingSet:
    return TrainingSet(np.concatenate([s.patches for s in sets]), np.concatenate([s.targets for s in sets]))


def mix_in(data: TrainingSet, extra: TrainingSet, share: float, *, seed: int) -> TrainingSet:
    """``data`` plus a random draw of ``extra`` making up ``share`` of the result (all of ``extra`` at most)."""
    if not 0 <= share < 1:
        raise ValueError(f"share must be in [0, 1), got {share}")
    n = min(len(extra), int(round(share / (1 - share) * len(data))))
    pick = np.sort(np.random.default_rng([seed, 23]).choice(len(extra), size=n, replace=False))
    return concatenate([data, TrainingSet(extra.patches[pick], extra.targets[pick])])
