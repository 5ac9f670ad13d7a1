"""Training subjects in the network box, and the patch sets of both losses.

A training subject is a normalised T1 in the box plus its thick-slice label on
the label's own grid, tied by the voxel map label -> box. The super-resolution
patches carry, for a block of label voxels, the sample points of their slice
profiles inside a box patch; the naive patches carry the label upsampled to the
box (nearest neighbour), as the ablation trains on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial.transform import Rotation
from torch.utils.data import Dataset

from mrinets.physics.sampling import affine_resample
from mrinets.pipelines.wmh.grid import GRID_AFFINE, GRID_SHAPE, grid_masks, normalise, to_grid
from mrinets.training.patches import extract_patch

__all__ = ["TrainingSubject", "prepare_subject", "SliceLabelPatches", "NaiveLabelPatches", "PROFILE_POINTS",
           "label_voxels_in_brain"]

PROFILE_POINTS = 11
MAX_TILT_DEG = 90.0
_FWHM_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


@dataclass
class TrainingSubject:
    """One subject ready for training (arrays in RAS voxel order).

    ``label_to_grid`` maps label voxel indices to box voxel indices; the label's
    slice axis is its coarsest one; ``threshold`` is the share of a thick
    voxel its rater needs to mark it (None: the training default; the
    two-step procedure fits one per label); ``dense`` is an optional 1 mm label
    in the box (the second step's refined label, from the first model);
    ``unscored`` marks thick voxels the loss leaves out (on the label's grid;
    the second step's lesions a rater likely missed);
    ``truth`` (box grid) and ``meta`` (how a phantom's label was flawed) are
    for evaluation only.
    """

    name: str
    image: np.ndarray
    label: np.ndarray
    label_to_grid: np.ndarray
    slice_axis: int
    thickness_mm: float
    naive: np.ndarray
    truth: np.ndarray | None = None
    weight: float = 1.0
    threshold: float | None = None
    dense: np.ndarray | None = None
    unscored: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def profile(self) -> tuple[np.ndarray, np.ndarray]:
        """Offsets (in label voxels along the slice axis) and weights of the Gaussian slice profile."""
        sigma = self.thickness_mm / _FWHM_SIGMA
        offsets_mm = np.linspace(-3 * sigma, 3 * sigma, PROFILE_POINTS)
        weights = np.exp(-0.5 * (offsets_mm / sigma) ** 2)
        return offsets_mm / self.thickness_mm, (weights / weights.sum()).astype(np.float32)


def prepare_subject(name: str, t1: np.ndarray, t1_affine: np.ndarray, label: np.ndarray, label_affine: np.ndarray,
                    to_mni: np.ndarray, truth: np.ndarray | None = None) -> TrainingSubject:
    """Move a T1 into the box, normalise it, and tie its thick-slice label to the box.

    ``to_mni`` maps the shared scanner world of both images to MNI world.
    """
    image = normalise(to_grid(t1, t1_affine, to_mni))
    spacing = np.sqrt((label_affine[:3, :3] ** 2).sum(axis=0))
    slice_axis = int(np.argmax(spacing))
    label_to_grid = np.linalg.solve(GRID_AFFINE, to_mni @ label_affine)
    naive = affine_resample(label.astype(np.float32), to_mni @ label_affine, GRID_AFFINE, GRID_SHAPE, order=0)
    truth_grid = None if truth is None else to_grid(truth, t1_affine, to_mni)
    return TrainingSubject(name=name, image=image, label=(label > 0).astype(np.uint8), label_to_grid=label_to_grid,
                           slice_axis=slice_axis, thickness_mm=float(spacing[slice_axis]),
                           naive=(naive > 0.5).astype(np.float32), truth=truth_grid)


def label_voxels_in_brain(subject: TrainingSubject) -> np.ndarray:
    """Label voxels whose centre falls inside the box's brain mask, (M, 3)."""
    brain, _ = grid_masks()
    idx = np.argwhere(np.ones(subject.label.shape, bool))
    pos = np.rint(idx @ subject.label_to_grid[:3, :3].T + subject.label_to_grid[:3, 3]).astype(int)
    inside = np.all((pos >= 0) & (pos < np.asarray(GRID_SHAPE)), axis=1)
    keep = np.zeros(len(idx), bool)
    keep[inside] = brain[tuple(pos[inside].T)]
    return idx[keep].astype(np.int32)


class _Patches(Dataset):
    """Shared sampling: centres on label voxels (a share on positive ones), reproducible per item."""

    def __init__(self, subjects: list[TrainingSubject], patch_size, samples_per_subject: int, *,
                 foreground_fraction: float = 0.5, seed: int = 0, augment: bool = True) -> None:
        self.subjects = [s for s in subjects if s.weight > 0]
        if not self.subjects:
            raise ValueError("no training subject has a positive weight")
        self.patch_size = tuple(int(p) for p in patch_size)
        self.samples = int(samples_per_subject)
        self.fg = float(foreground_fraction)
        self.seed = int(seed)
        self.augment = augment
        self.candidates = [label_voxels_in_brain(s) for s in self.subjects]
        self.positives = [np.argwhere(s.label > 0).astype(np.int32) for s in self.subjects]

    def __len__(self) -> int:
        return len(self.subjects) * self.samples

    def _draw(self, item: int) -> tuple[TrainingSubject, np.ndarray, np.random.Generator]:
        rng = np.random.default_rng([self.seed, item])
        k = item // self.samples
        pool = self.positives[k] if (len(self.positives[k]) and rng.random() < self.fg) else self.candidates[k]
        return self.subjects[k], pool[rng.integers(0, len(pool))], rng

    def _image(self, subject: TrainingSubject, corner: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        centre = corner + np.asarray(self.patch_size) // 2
        return self._jitter(extract_patch(subject.image, centre, self.patch_size), rng)

    def _jitter(self, patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.augment:
            # Contrast and brightness jitter: scanners differ in how dark lesions and grey matter look.
            patch = np.clip(patch, 0, None) ** rng.uniform(0.8, 1.25) * rng.uniform(0.9, 1.1)
            patch = patch + rng.normal(0.0, rng.uniform(0.0, 0.03), patch.shape)
        return patch.astype(np.float32)


class SliceLabelPatches(_Patches):
    """Box patches with the slice-profile sample points of the label voxels covering them.

    The block of label voxels is chosen larger than the patch, so that every
    part of the patch is held by some label; voxels whose centre falls outside
    the patch are marked invalid.

    Items: ``image`` (1, X, Y, Z), ``grid`` (A, B, C*K, 3), ``profile`` (K,),
    ``label`` and ``valid`` (A, B, C; a subject's ``unscored`` voxels are
    invalid), ``weight`` () and ``threshold`` () (the subject's own, else
    ``threshold``); when the subjects carry a dense label,
    ``dense`` (1, X, Y, Z), sampled as the image is.
    """

    def __init__(self, subjects, patch_size=(64, 64, 40), samples_per_subject: int = 50, *,
                 block=(38, 38, 13), in_plane_step: int = 2, threshold: float = 0.45, tilt: float = 0.0,
                 **kwargs) -> None:
        super().__init__(subjects, patch_size, samples_per_subject, **kwargs)
        if not 0.0 <= tilt <= 1.0:
            raise ValueError(f"tilt must be a share between 0 and 1, got {tilt}")
        self.block = tuple(int(b) for b in block)
        self.step = int(in_plane_step)
        self.threshold = float(threshold)
        self.tilt = float(tilt)
        with_dense = [s.dense is not None for s in self.subjects]
        if any(with_dense) and not all(with_dense):
            raise ValueError("either every subject has a dense label or none has")
        self.dense = all(with_dense)

    def _tilted(self, subject: TrainingSubject, centre: np.ndarray, box: np.ndarray,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """A patch whose axes are tilted about a random horizontal axis, ``box`` in its voxels, its dense label.

        A thick axial label can only mark a thin lesion that crosses its
        slices; one lying along them (a band on a ventricle's roof) stays
        under the rater's threshold. Tilting the patch together with the
        label's sample points shows the network such bands at every
        orientation, so it cannot learn that horizontal ones are not lesion.
        """
        spacing = np.diag(GRID_AFFINE)[:3]
        heading = rng.uniform(0.0, 2.0 * np.pi)
        angle = np.deg2rad(rng.uniform(-MAX_TILT_DEG, MAX_TILT_DEG))
        rotation = Rotation.from_rotvec(angle * np.array([np.cos(heading), np.sin(heading), 0.0])).as_matrix()
        move = rotation * spacing[None, :] / spacing[:, None]
        half = (np.asarray(self.patch_size) - 1) / 2.0
        voxels = np.indices(self.patch_size, dtype=np.float32).reshape(3, -1) - half[:, None]
        coords = centre[:, None] + move @ voxels
        image = ndimage.map_coordinates(subject.image, coords, order=1, mode="constant")
        dense = None
        if self.dense:
            dense = ndimage.map_coordinates(subject.dense, coords, output=np.float32, order=1, mode="constant")
            dense = dense.reshape(1, *self.patch_size)
        local = (box - centre) @ np.linalg.inv(move).T.astype(np.float32) + half
        return self._jitter(image.reshape(1, *self.patch_size), rng), local.astype(np.float32), dense

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        subject, centre, rng = self._draw(item)
        block = np.asarray(self.block)
        # The block's own axes, with the slice axis last, so every item has the same layout; in-plane, every
        # ``step``-th label voxel is scored, which covers the patch at a quarter of the cost.
        order = [a for a in range(3) if a != subject.slice_axis] + [subject.slice_axis]
        count, step = np.empty(3, int), np.empty(3, int)
        count[order] = block
        step[order] = (self.step, self.step, 1)
        start = centre - count * step // 2
        idx = np.stack(np.meshgrid(*[s + np.arange(n) * d for s, n, d in zip(start, count, step)], indexing="ij"), -1)
        inside = np.all((idx >= 0) & (idx < np.asarray(subject.label.shape)), axis=-1)
        label = np.zeros(idx.shape[:3], np.float32)
        label[inside] = subject.label[tuple(idx[inside].T)]
        if subject.unscored is not None:
            inside[inside] = ~subject.unscored[tuple(idx[inside].T)]
        offsets, weights = subject.profile()
        points = np.repeat(idx[..., None, :].astype(np.float32), len(offsets), axis=-2)
        points[..., subject.slice_axis] += offsets.astype(np.float32)
        box = points @ subject.label_to_grid[:3, :3].T.astype(np.float32) + subject.label_to_grid[:3, 3]
        lo_box = np.floor(box.reshape(-1, 3).min(0))
        hi_box = np.ceil(box.reshape(-1, 3).max(0))
        # No draw without tilt: the untilted patch stream, and so the untilted runs' weights, stay reproducible.
        if self.tilt > 0 and rng.random() < self.tilt:
            image, local, dense = self._tilted(subject, (lo_box + hi_box) / 2, box, rng)
        else:
            corner = ((lo_box + hi_box) / 2 - np.asarray(self.patch_size) // 2).astype(int)
            image, local = self._image(subject, corner, rng), box - corner
            dense = None
            if self.dense:
                dense = extract_patch(subject.dense, corner + np.asarray(self.patch_size) // 2, self.patch_size)
        limit = np.asarray(self.patch_size) - 1
        # A thick voxel counts when its centre lies in the patch; profile tails beyond the edge read the edge.
        centre_point = local[..., len(offsets) // 2, :]
        valid = inside & np.all((centre_point >= 0) & (centre_point <= limit), axis=-1)
        norm = 2.0 * local / limit - 1.0
        label, valid, norm = (np.transpose(a, order + list(range(3, a.ndim))) for a in (label, valid, norm))
        grid = norm[..., ::-1].reshape(block[0], block[1], block[2] * len(offsets), 3)
        item = {
            "image": torch.from_numpy(image),
            "grid": torch.from_numpy(np.ascontiguousarray(grid, dtype=np.float32)),
            "profile": torch.from_numpy(weights),
            "label": torch.from_numpy(np.ascontiguousarray(label)),
            "valid": torch.from_numpy(np.ascontiguousarray(valid, dtype=np.float32)),
            "weight": torch.tensor(subject.weight, dtype=torch.float32),
            "threshold": torch.tensor(self.threshold if subject.threshold is None else subject.threshold,
                                      dtype=torch.float32),
        }
        if dense is not None:
            item["dense"] = torch.from_numpy(dense.astype(np.float32))
        return item


class NaiveLabelPatches(_Patches):
    """Box patches with the label upsampled to the box (the ablation's target)."""

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        subject, centre, rng = self._draw(item)
        pos = subject.label_to_grid[:3, :3] @ centre + subject.label_to_grid[:3, 3]
        corner = np.rint(pos).astype(int) - np.asarray(self.patch_size) // 2
        target = extract_patch(subject.naive, corner + np.asarray(self.patch_size) // 2, self.patch_size)
        return {
            "image": torch.from_numpy(self._image(subject, corner, rng)),
            "target": torch.from_numpy(target.astype(np.float32)),
            "weight": torch.tensor(subject.weight, dtype=torch.float32),
        }
