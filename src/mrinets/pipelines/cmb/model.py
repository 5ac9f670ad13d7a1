"""Training the three learned parts of the CMB detector: candidate U-Net, teacher, students.

Step 1 is a small 3D U-Net on 32^3 patches (standardised map + radial symmetry)
trained with weighted cross-entropy + Dice; its operating point is the highest
probability threshold whose cluster-wise sensitivity on validation volumes
reaches the target (95 %). Step 2 cuts a patch around every candidate of the
training volumes (plus every true microbleed and mimic, so both classes are
well represented), trains the multi-task teacher (classification +
segmentation), then two students on the same patches and seed: one distilled
from the teacher (response-based, temperature ``T`` and weight ``w``), one from
the labels alone (the ablation).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch.utils.data import Dataset

from mrinets.nets.patch_classifier import CandidateStudent, CandidateTeacher
from mrinets.nets.unet3d import UNet3D
from mrinets.pipelines.cmb.data import CONTRASTS, Subject
from mrinets.training.engine import TrainConfig, Trainer, resolve_device, seed_everything
from mrinets.training.inference import predict_volume
from mrinets.training.losses import distillation_loss, soft_dice_loss, weighted_ce_dice_loss
from mrinets.training.patches import PatchDataset, extract_patch

__all__ = ["CmbTrainConfig", "build_step1", "step1_probability", "candidate_clusters", "symmetry_peaks",
           "candidate_centres", "train_step1",
           "choose_sensitivity_threshold", "CandidatePatches", "candidate_patches", "train_teacher",
           "train_student", "classify_patches", "config_dict"]

log = logging.getLogger(__name__)

_FULL = np.ones((3, 3, 3), bool)
THRESHOLD_GRID = (0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.15, 0.1, 0.05, 0.02, 0.01)
STEP1_ROI = 64
# Depth (probability) of the dip between two maxima of one cluster that makes them two candidates.
SPLIT_DEPTH = 0.05
# Extra candidates (symmetry_peaks): standardised level (4 robust SD) and radial symmetry of a bright round spot.
PEAK_LEVEL = 0.5
PEAK_SYMMETRY = 0.5


@dataclass
class CmbTrainConfig:
    """Options of ``mrinets cmb train`` (stored on the model card)."""

    contrasts: tuple[str, ...] = CONTRASTS
    epochs_step1: int = 5
    epochs_step2: int = 6
    epochs_teacher: int | None = None
    samples_per_volume: int = 6
    patch_step1: int = 32
    patch_step2: int = 16
    batch_size: int = 8
    batch_size_step2: int = 16
    lr: float = 2e-3
    foreground_weight: float = 10.0
    channels: tuple[int, ...] = (16, 32, 64)
    teacher_width: int = 12
    student_width: int = 8
    kd_temperature: float = 4.0
    kd_weight: float = 0.4
    target_sensitivity: float = 0.95
    max_fp_per_subject: float = 1.0
    seed: int = 0
    device: str = "auto"
    quiet: bool = False

    def __post_init__(self) -> None:
        self.contrasts = tuple(self.contrasts)
        self.channels = tuple(int(c) for c in self.channels)
        bad = sorted(set(self.contrasts) - set(CONTRASTS))
        if bad or not self.contrasts:
            raise ValueError(f"contrasts must be among {', '.join(CONTRASTS)}, got {', '.join(self.contrasts)}")
        for name in ("epochs_step1", "epochs_step2", "samples_per_volume", "batch_size", "batch_size_step2",
                     "teacher_width",
                     "student_width"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.epochs_teacher is not None and int(self.epochs_teacher) < 1:
            raise ValueError(f"epochs_teacher must be at least 1, got {self.epochs_teacher}")
        if self.patch_step1 % 4 or self.patch_step2 % 4 or self.patch_step1 < 8 or self.patch_step2 < 8:
            raise ValueError("patch sizes must be multiples of 4, at least 8")
        if not self.kd_temperature > 0 or not 0 <= self.kd_weight <= 1:
            raise ValueError(f"kd_temperature must be positive and kd_weight in [0, 1], got "
                             f"{self.kd_temperature}, {self.kd_weight}")
        if not 0 < self.target_sensitivity <= 1:
            raise ValueError(f"target_sensitivity must be in (0, 1], got {self.target_sensitivity}")


def build_step1(channels: Sequence[int] = (16, 32, 64)) -> UNet3D:
    """The candidate U-Net: 2 input channels, 2 classes."""
    return UNet3D(in_channels=2, out_channels=2, channels=tuple(channels), strides=(2,) * (len(channels) - 1),
                  num_res_units=1, norm="instance")


def _augment(patch: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random flips and axis order (cubic patches), the same for every array of the patch."""
    order = rng.permutation(3)
    flips = [1 + a for a in range(3) if rng.random() < 0.5]
    out = {}
    for k, v in patch.items():
        v = np.transpose(v, (0, *(1 + order)))
        out[k] = np.flip(v, axis=flips).copy() if flips else v
    return out


def _trainer_config(config: CmbTrainConfig, epochs: int, seed_offset: int) -> TrainConfig:
    batch = config.batch_size if seed_offset == 0 else config.batch_size_step2
    return TrainConfig(max_epochs=epochs, batch_size=batch, lr=config.lr, seed=config.seed + seed_offset,
                       device=config.device, quiet=config.quiet, weight_decay=1e-4)


def train_step1(subjects: Sequence[Subject], config: CmbTrainConfig) -> tuple[UNet3D, list[float]]:
    """Train the candidate U-Net on random patches (half of them centred on microbleeds)."""
    seed_everything(config.seed)
    model = build_step1(config.channels)
    volumes = [{"x": s.channels, "y": (s.cmb > 0).astype(np.float32)[None], "m": s.mask.astype(np.float32)[None]}
               for s in subjects]
    data = PatchDataset(volumes, (config.patch_step1,) * 3, config.samples_per_volume, foreground_key="y",
                        foreground_fraction=0.5, seed=config.seed, transform=_augment)
    weights = torch.tensor([1.0, config.foreground_weight])

    def loss_fn(net, batch):
        return weighted_ce_dice_loss(net(batch["x"]), batch["y"], weights.to(batch["x"].device))

    history = Trainer(model, loss_fn, _trainer_config(config, config.epochs_step1, 0)).fit(data)
    return model.eval(), history.train_loss


def step1_probability(model: torch.nn.Module, channels: np.ndarray, *,
                      device: str | torch.device = "cpu") -> np.ndarray:
    """Microbleed probability of every voxel (sliding 64^3 windows)."""
    logits = predict_volume(model, channels, roi_size=(STEP1_ROI,) * 3, overlap=0.25, sw_batch_size=1, device=device)
    return torch.softmax(torch.from_numpy(logits), dim=0)[1].numpy()


def candidate_clusters(prob: np.ndarray, threshold: float, mask: np.ndarray | None = None, *,
                       split: float | None = SPLIT_DEPTH, channels: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Candidates: 26-connected clusters of ``prob > threshold`` (inside ``mask``), split at probability maxima.

    With ``channels`` (standardised map, radial symmetry), every bright round
    spot the U-Net left out becomes a candidate too (:func:`symmetry_peaks`).

    With ``split``, a cluster holding several maxima of the (lightly smoothed)
    probability whose dips between them are at least ``split`` deep is cut
    into one candidate per maximum by a watershed, so that a microbleed merged
    with a neighbouring vein or a second microbleed becomes its own candidate.
    """
    above = prob > threshold
    if mask is not None:
        above &= mask
    labels, n = ndimage.label(above, _FULL)
    if split and n:
        labels, n = _split(labels, n, prob, above, split)
    if channels is not None:
        labels, n = symmetry_peaks(labels, n, channels, mask)
    return labels, n


def symmetry_peaks(labels: np.ndarray, n: int, channels: np.ndarray, mask: np.ndarray | None = None, *,
                   level: float = PEAK_LEVEL, symmetry: float = PEAK_SYMMETRY) -> tuple[np.ndarray, int]:
    """Add a candidate at every local maximum of the standardised map above ``level`` whose radial symmetry
    reaches ``symmetry``, two voxels or more from any existing candidate.

    The U-Net misses some blooms of a few voxels that are plainly visible;
    these few extra candidates per volume go to step 2 like the others. Each
    is the peak's 3x3x3 neighbourhood brighter than half the peak.
    """
    z, rs = channels[0], channels[1]
    inside = np.ones(z.shape, bool) if mask is None else np.asarray(mask, bool)
    near = ndimage.binary_dilation(labels > 0, _FULL, iterations=2)
    peaks = (z == ndimage.maximum_filter(z, 3)) & (z >= level) & (rs >= symmetry) & inside & ~near
    if not peaks.any():
        return labels, n
    peak_level = ndimage.maximum_filter(np.where(peaks, z, 0.0), 3)
    grown = ndimage.binary_dilation(peaks, _FULL) & (z >= 0.5 * peak_level) & inside & (labels == 0)
    extra, m = ndimage.label(grown, _FULL)
    out = labels.astype(np.int32, copy=True)
    out[extra > 0] = extra[extra > 0] + n
    return out, n + m


def _split(labels: np.ndarray, n: int, prob: np.ndarray, above: np.ndarray, split: float) -> tuple[np.ndarray, int]:
    """Watershed of the clusters from their maxima of dynamic ``split`` or more (see :func:`candidate_clusters`).

    Cluster by cluster in its bounding box: on a whole-brain grid this is
    about a hundred times faster than one pass over the volume.
    """
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    smooth = ndimage.gaussian_filter(prob.astype(np.float32), 0.7)
    out = np.zeros(labels.shape, np.int32)
    count = 0
    for i, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        region = labels[box] == i
        local = np.where(region, smooth[box], 0.0)
        markers, m = ndimage.label(h_maxima(local, split).astype(bool) & region, _FULL) if region.sum() > 1 else (0, 1)
        view = out[box]
        if m <= 1:
            view[region] = count + 1
            count += 1
            continue
        cut = watershed(-local, markers, mask=region, connectivity=2)
        view[region] = cut[region] + count
        count += m
    return out, count


def candidate_centres(labels: np.ndarray, n: int) -> list[np.ndarray]:
    """Voxel of each candidate's centre of mass (the centre of its step-2 patch, in training and in predict)."""
    return [np.round(c).astype(int) for c in ndimage.center_of_mass(labels > 0, labels, range(1, n + 1))]


def _relabel(labels: np.ndarray) -> tuple[np.ndarray, int]:
    ids = np.unique(labels[labels > 0])
    lut = np.zeros(int(labels.max()) + 1, np.int32)
    lut[ids] = np.arange(1, ids.size + 1)
    return lut[labels], int(ids.size)


def choose_sensitivity_threshold(probs: Sequence[np.ndarray], truths: Sequence[np.ndarray],
                                 masks: Sequence[np.ndarray], target: float,
                                 channels: Sequence[np.ndarray] | None = None) -> dict:
    """Highest threshold of :data:`THRESHOLD_GRID` whose pooled cluster-wise sensitivity reaches ``target``.

    Falls back to the lowest threshold of the grid when none does; the
    returned dict holds the sensitivity and candidates per volume at each threshold.
    """
    from mrinets.metrics.detection import cluster_detection, pooled_detection

    table = []
    for t in THRESHOLD_GRID:
        chans = channels if channels is not None else [None] * len(probs)
        rows = [cluster_detection(candidate_clusters(p, t, m, split=None, channels=c)[0], tr)
                for p, tr, m, c in zip(probs, truths, masks, chans)]
        pooled = pooled_detection(rows)
        table.append({"threshold": t, "sensitivity": pooled["tpr"], "candidates_per_volume":
                      pooled["n_pred"] / len(rows)})
    ok = [row for row in table if row["sensitivity"] >= target]
    chosen = ok[0] if ok else table[-1]
    return {"threshold": chosen["threshold"], "sensitivity": chosen["sensitivity"],
            "candidates_per_volume": chosen["candidates_per_volume"], "target": target, "table": table}


@dataclass
class CandidatePatches:
    """Patches around candidates: inputs (N, 2, P, P, P), labels (N,), segmentation targets (N, 1, P, P, P)."""

    x: np.ndarray
    y: np.ndarray
    seg: np.ndarray
    source: list[str]


def candidate_patches(subjects: Sequence[Subject], probs: Sequence[np.ndarray], threshold: float, size: int, *,
                      rng: np.random.Generator, extra: bool = True) -> CandidatePatches:
    """Patches centred on every step-1 candidate; with ``extra``, also on true microbleeds and on mimics.

    A candidate is positive when it touches a true microbleed.
    """
    xs, ys, segs, source = [], [], [], []

    def add(subject: Subject, centre, label: int, kind: str) -> None:
        xs.append(extract_patch(subject.channels, centre, (size,) * 3))
        segs.append(extract_patch((subject.cmb > 0).astype(np.float32), centre, (size,) * 3))
        ys.append(label)
        source.append(kind)

    for subject, prob in zip(subjects, probs):
        labels, n = candidate_clusters(prob, threshold, subject.mask, channels=subject.channels)
        for i, centre in enumerate(candidate_centres(labels, n), start=1):
            hit = bool((subject.cmb[labels == i] > 0).any())
            add(subject, centre, int(hit), "candidate")
        if not extra:
            continue
        n_cmb = int(subject.cmb.max())
        for i in range(1, n_cmb + 1):
            where = np.argwhere(subject.cmb == i)
            if len(where):
                add(subject, np.round(where.mean(0)).astype(int) + rng.integers(-1, 2, 3), 1, "cmb")
        mimics, m = ndimage.label(subject.mimic > 0, _FULL)
        for i in range(1, m + 1):
            where = np.argwhere(mimics == i)
            add(subject, where[rng.integers(len(where))], 0, "mimic")
    if not xs:
        raise ValueError("no candidate patches: the training volumes hold no candidates, microbleeds or mimics")
    return CandidatePatches(np.stack(xs).astype(np.float32), np.asarray(ys, np.int64),
                            np.stack(segs).astype(np.float32), source)


class _PatchSet(Dataset):
    def __init__(self, patches: CandidatePatches, seed: int) -> None:
        self.p = patches
        self.seed = seed

    def __len__(self) -> int:
        return len(self.p.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, i, int(torch.randint(0, 2**31 - 1, (1,)))])
        aug = _augment({"x": self.p.x[i], "seg": self.p.seg[i]}, rng)
        return {"x": torch.from_numpy(aug["x"]), "seg": torch.from_numpy(aug["seg"]),
                "y": torch.tensor(self.p.y[i])}


def _class_weights(y: np.ndarray) -> torch.Tensor:
    counts = np.bincount(y, minlength=2).astype(float)
    return torch.tensor(counts.sum() / (2.0 * np.maximum(counts, 1.0)), dtype=torch.float32)


def train_teacher(patches: CandidatePatches, config: CmbTrainConfig) -> tuple[CandidateTeacher, list[float]]:
    """Multi-task teacher: class cross-entropy (balanced) + segmentation BCE and Dice."""
    seed_everything(config.seed + 1)
    model = CandidateTeacher(in_channels=2, width=config.teacher_width)
    weights = _class_weights(patches.y)

    def loss_fn(net, batch):
        logits, seg = net(batch["x"])
        ce = F.cross_entropy(logits, batch["y"], weight=weights.to(logits.device))
        seg_loss = F.binary_cross_entropy_with_logits(seg, batch["seg"]) + soft_dice_loss(torch.sigmoid(seg),
                                                                                           batch["seg"])
        return ce + seg_loss, {"ce": float(ce.detach())}

    epochs = config.epochs_teacher or config.epochs_step2
    history = Trainer(model, loss_fn, _trainer_config(config, epochs, 1)).fit(
        _PatchSet(patches, config.seed + 1))
    return model.eval(), history.train_loss


def train_student(patches: CandidatePatches, config: CmbTrainConfig, teacher: CandidateTeacher | None
                  ) -> tuple[CandidateStudent, list[float]]:
    """Student classifier: distilled from ``teacher`` (T, w of the config), or from the labels alone (None)."""
    seed_everything(config.seed + 2)
    model = CandidateStudent(in_channels=2, width=config.student_width)
    weights = _class_weights(patches.y)
    device = resolve_device(config.device)
    if teacher is not None:
        teacher = teacher.to(device).eval()

    def loss_fn(net, batch):
        logits = net(batch["x"])
        w = weights.to(logits.device)
        if teacher is None:
            return F.cross_entropy(logits, batch["y"], weight=w)
        with torch.no_grad():
            teacher_logits = teacher(batch["x"])[0]
        return distillation_loss(logits, teacher_logits, batch["y"], temperature=config.kd_temperature,
                                 weight=config.kd_weight, class_weights=w)

    # The same seed and batches for both students: only the loss differs.
    history = Trainer(model, loss_fn, _trainer_config(config, config.epochs_step2, 2)).fit(
        _PatchSet(patches, config.seed + 2))
    return model.eval(), history.train_loss


def classify_patches(model: torch.nn.Module, x: np.ndarray, *, device: str | torch.device = "cpu",
                     batch: int = 64) -> np.ndarray:
    """Microbleed probability of each patch (N, 2, P, P, P) by a student or teacher."""
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    model = model.to(dev).eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            logits = model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch])).to(dev))
            logits = logits[0] if isinstance(logits, tuple) else logits
            out.append(torch.softmax(logits.float(), dim=1)[:, 1].cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def config_dict(config: CmbTrainConfig) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()}
