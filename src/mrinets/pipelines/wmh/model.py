"""Training the WMH network: the super-resolution loss, the naive ablation and the two-step procedure."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from scipy import ndimage, optimize

from mrinets.data.phantoms.head import rotation_matrix
from mrinets.errors import ConfigError
from mrinets.metrics.segmentation import dice
from mrinets.nets.unet3d import UNet3D
from mrinets.pipelines.wmh.data import (NaiveLabelPatches, SliceLabelPatches, TrainingSubject,
                                        label_voxels_in_brain)
from mrinets.pipelines.wmh.grid import GRID_AFFINE
from mrinets.pipelines.wmh.network import build_network, predict_grid, predict_logits
from mrinets.pipelines.wmh.segment import WmhModel, box_mask
from mrinets.training.engine import TrainConfig, Trainer
from mrinets.training.losses import segmentation_loss, super_resolution_loss

__all__ = ["WmhTrainConfig", "build_network", "train_network", "train_two_step", "predict_grid",
           "predict_logits", "acquire_label", "label_agreement", "recalibrate_label", "mask_threshold",
           "centre_thresholds", "unmarked_lesions", "LOSSES", "THRESHOLD_RANGE"]

log = logging.getLogger(__name__)
LOSSES = ("super-resolution", "naive")
# The rater thresholds the label fit chooses from.
THRESHOLD_RANGE = (0.15, 0.75)


@dataclass
class WmhTrainConfig:
    """Everything that decides the trained weights (stored in the model card)."""

    loss: str = "super-resolution"
    channels: tuple[int, ...] = (16, 32, 64, 128)
    patch_size: tuple[int, int, int] = (64, 64, 40)
    block: tuple[int, int, int] = (38, 38, 13)
    samples_per_subject: int = 48
    epochs: int = 8
    batch_size: int = 4
    lr: float = 3e-3
    seed: int = 0
    sr_threshold: float = 0.45
    temperature: float = 0.1
    second_temperature: float | None = None
    two_step: bool = True
    recalibrate: bool = True
    drop_ratio: float = 0.25
    dense_weight: float = 0.0
    unscore_unmarked: bool = False
    centre_thresholds: bool = False
    mask_thresholds: bool = False
    tilt: float = 0.0
    device: str = "auto"
    quiet: bool = False
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError("loss", f"must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if any(p % 8 for p in self.patch_size):
            raise ConfigError("patch_size", f"must be multiples of 8 (three 2x poolings), got {self.patch_size}")
        self.channels = tuple(int(c) for c in self.channels)
        self.patch_size = tuple(int(p) for p in self.patch_size)
        self.block = tuple(int(b) for b in self.block)
        if min(self.channels) < 1:
            raise ConfigError("channels", f"must be positive, got {' '.join(map(str, self.channels))}")
        if not 0.0 <= self.tilt <= 1.0:
            raise ConfigError("tilt", f"must be a share between 0 and 1, got {self.tilt}")
        if self.tilt and self.loss == "naive":
            raise ConfigError("tilt", "needs the super-resolution loss (the naive labels are not carried along)")
        if not self.dense_weight >= 0:
            raise ConfigError("dense_weight", f"must not be negative, got {self.dense_weight}")
        for name, used in (("dense_weight", self.dense_weight), ("unscore_unmarked", self.unscore_unmarked),
                           ("centre_thresholds", self.centre_thresholds), ("mask_thresholds", self.mask_thresholds)):
            if used and (self.loss == "naive" or not self.two_step):
                raise ConfigError(name, "needs the super-resolution loss and the second step")
        for name, used in (("centre_thresholds", self.centre_thresholds), ("mask_thresholds", self.mask_thresholds)):
            if used and not self.recalibrate:
                raise ConfigError(name, "needs the label fit (drop --no-recalibrate)")
        if not self.temperature > 0:
            raise ConfigError("temperature", f"must be positive, got {self.temperature}")
        if self.second_temperature is not None and not self.second_temperature > 0:
            raise ConfigError("second_temperature", f"must be positive, got {self.second_temperature}")


def acquire_label(prob: np.ndarray, subject: TrainingSubject, idx: np.ndarray,
                   label_to_grid: np.ndarray | None = None) -> np.ndarray:
    """Slice-profile average of the box map ``prob`` at the label voxels ``idx``."""
    m = subject.label_to_grid if label_to_grid is None else label_to_grid
    offsets, weights = subject.profile()
    acquired = np.zeros(len(idx), np.float32)
    for off, w in zip(offsets, weights):
        pts = idx.astype(np.float32)
        pts[:, subject.slice_axis] += off
        box = pts @ m[:3, :3].T + m[:3, 3]
        acquired += w * ndimage.map_coordinates(prob, box.T, order=1, mode="constant")
    return acquired


def label_agreement(prob: np.ndarray, subject: TrainingSubject, threshold: float | None = None) -> float:
    """Dice between a subject's thick-slice label and the box prediction carried through its acquisition.

    Only label voxels inside the template brain count: outside it both are
    empty. The acquired prediction is thresholded at ``threshold``, else the
    subject's own rater threshold, else 0.5.
    """
    idx = label_voxels_in_brain(subject)
    threshold = threshold if threshold is not None else (subject.threshold or 0.5)
    return dice(acquire_label(prob, subject, idx) > threshold, subject.label[tuple(idx.T)] > 0)


def recalibrate_label(prob: np.ndarray, subject: TrainingSubject, *, max_shift_mm: float = 3.0,
                      max_angle_deg: float = 3.0) -> tuple[TrainingSubject, dict]:
    """Fit a label's residual pose and its rater's threshold against a model's box prediction.

    Two flaws of a thick-slice label are properties of the whole label and
    can be read off by comparing it with a model taught by all the others:
    its pose error relative to the T1 (a rigid move within ``max_shift_mm``
    and ``max_angle_deg``, about the lesions' centre, found by maximising the
    soft Dice of the label with the prediction seen through the corrected
    acquisition) and how much of a thick voxel its rater needed to mark it
    (the threshold on the acquired prediction that reproduces the label
    best; dilated labels get low ones, eroded labels high ones). Larger
    offsets are left alone: such a label is wrong, not misplaced, and the
    agreement test drops it.

    Returns the subject with ``label_to_grid`` and ``threshold`` replaced, and
    what was fitted.
    """
    idx = label_voxels_in_brain(subject)
    label_all = subject.label[tuple(idx.T)] > 0
    before = acquire_label(prob, subject, idx)
    near = np.zeros(subject.label.shape, bool)
    near[tuple(idx[label_all | (before > 0.1)].T)] = True
    near = ndimage.binary_dilation(near, iterations=2)
    keep = near[tuple(idx.T)]
    idx, label = idx[keep], label_all[keep].astype(np.float32)
    if not label.any():
        return subject, {"shift_mm": [0.0, 0.0, 0.0], "angles_deg": [0.0, 0.0, 0.0], "threshold": subject.threshold}
    centre = (GRID_AFFINE @ subject.label_to_grid @ np.append(idx.mean(0), 1.0))[:3]

    def corrected(params: np.ndarray) -> np.ndarray:
        move = np.eye(4)
        move[:3, :3] = rotation_matrix(np.deg2rad(params[:3]))
        move[:3, 3] = centre - move[:3, :3] @ centre + params[3:]
        return np.linalg.solve(GRID_AFFINE, move @ GRID_AFFINE @ subject.label_to_grid)

    def cost(params: np.ndarray) -> float:
        acquired = acquire_label(prob, subject, idx, corrected(params))
        return -2.0 * float((acquired * label).sum()) / float(acquired.sum() + label.sum() + 1e-6)

    bounds = [(-max_angle_deg, max_angle_deg)] * 3 + [(-max_shift_mm, max_shift_mm)] * 3
    fit = optimize.minimize(cost, np.zeros(6), method="Powell", bounds=bounds,
                            options={"xtol": 0.05, "ftol": 1e-4, "maxfev": 400})
    matrix = corrected(fit.x)
    threshold = _best_threshold(acquire_label(prob, subject, idx, matrix), label > 0)
    report = {"shift_mm": np.round(fit.x[3:], 2).tolist(), "angles_deg": np.round(fit.x[:3], 2).tolist(),
              "threshold": threshold}
    return TrainingSubject(**{**subject.__dict__, "label_to_grid": matrix, "threshold": threshold}), report


def _best_threshold(acquired: np.ndarray, label: np.ndarray) -> float:
    """The threshold of ``THRESHOLD_RANGE``'s grid (steps of 0.05) at which ``acquired`` best reproduces ``label``."""
    candidates = np.round(np.arange(THRESHOLD_RANGE[0], THRESHOLD_RANGE[1] + 0.025, 0.05), 2)
    return float(candidates[int(np.argmax([dice(acquired > t, label) for t in candidates]))])


def mask_threshold(mask: np.ndarray, subject: TrainingSubject) -> float:
    """The rater threshold that best reproduces a label from a binary box ``mask`` seen through its acquisition.

    A model's raw probability is wider than the lesions (its edges blur
    over the 5 mm it was taught through), so thresholds read off it come
    out high; its mask as ``predict`` makes it, trimmed and grown by the
    T1, places edges much as the truth does, so thresholds fitted on it
    follow those fitted on the 1 mm truth more closely (measured in
    docs/wmh-history.md). The label's pose is taken as it is.
    """
    idx = label_voxels_in_brain(subject)
    return _best_threshold(acquire_label(mask.astype(np.float32), subject, idx), subject.label[tuple(idx.T)] > 0)


def centre_thresholds(subjects: list[TrainingSubject], centre: float) -> tuple[list[TrainingSubject], float]:
    """Shift the fitted rater thresholds of the kept subjects so that their median is ``centre``.

    The fit reads each threshold off the first model, so the model's own
    width bias moves them all together: a first step that draws lesions a
    voxel too wide needs high thresholds to reproduce clean labels, and a
    second step taught with them may keep that rim. The shift keeps what the
    fit says about one rater against the others and takes the common level
    from the training default. Clipped to the fit's own range; returns the
    subjects and the shift (measured in docs/wmh-history.md).
    """
    fitted = [s.threshold for s in subjects if s.weight > 0 and s.threshold is not None]
    if not fitted:
        return subjects, 0.0
    shift = round(float(centre - np.median(fitted)), 4)
    return [s if s.threshold is None else
            TrainingSubject(**{**s.__dict__, "threshold": float(np.clip(s.threshold + shift, *THRESHOLD_RANGE))})
            for s in subjects], shift


def unmarked_lesions(prob: np.ndarray, subject: TrainingSubject, *, apart: int = 2) -> np.ndarray:
    """Thick voxels of what a model sees as lesion, through the label's acquisition, far from anything marked.

    A rater who misses a small lesion leaves its thick voxels unmarked, and
    the loss then teaches that it is not lesion. Where the box prediction
    ``prob``, carried through the label's acquisition, reaches the label's
    threshold (else 0.5) in a piece lying more than ``apart`` label voxels from
    every marked one, the label says nothing the model can trust either way
    (phantoms 1000-1019 against a first step: 90 such pieces held lesion, 55
    did not). Returns a boolean map on the label's grid.
    """
    idx = label_voxels_in_brain(subject)
    acquired = np.zeros(subject.label.shape, np.float32)
    acquired[tuple(idx.T)] = acquire_label(prob, subject, idx)
    near = ndimage.binary_dilation(subject.label > 0, iterations=apart)
    return (acquired > (subject.threshold or 0.5)) & ~near


def _loss_fn(config: WmhTrainConfig):
    if config.loss == "naive":
        def naive(model, batch):
            return segmentation_loss(model(batch["image"]), batch["target"], batch["weight"])
        return naive

    def sr(model, batch):
        logits = model(batch["image"])
        loss = super_resolution_loss(logits, batch["grid"], batch["profile"], batch["label"], batch["valid"],
                                     threshold=batch["threshold"], temperature=config.temperature,
                                     sample_weight=batch["weight"])
        if "dense" in batch:
            loss = loss + config.dense_weight * segmentation_loss(logits, batch["dense"], batch["weight"])
        return loss
    return sr


def train_network(subjects: list[TrainingSubject], config: WmhTrainConfig, *, samples_per_subject: int | None = None,
                  seed_offset: int = 0, init: dict | None = None) -> UNet3D:
    """One training run on ``subjects`` (those with weight 0 are left out), from ``init`` (a state dict) if given."""
    torch.manual_seed(config.seed + seed_offset)
    model = build_network(config.channels)
    if init is not None:
        model.load_state_dict(init)
    per_subject = samples_per_subject or config.samples_per_subject
    kwargs = dict(samples_per_subject=per_subject, seed=config.seed + seed_offset)
    if config.loss == "naive":
        data = NaiveLabelPatches(subjects, config.patch_size, **kwargs)
    else:
        data = SliceLabelPatches(subjects, config.patch_size, block=config.block, threshold=config.sr_threshold,
                                 tilt=config.tilt, **kwargs)
    steps = config.epochs * int(np.ceil(len(data) / config.batch_size))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=steps)
    trainer = Trainer(model, _loss_fn(config), TrainConfig(max_epochs=config.epochs, batch_size=config.batch_size,
                                                           lr=config.lr, seed=config.seed + seed_offset,
                                                           device=config.device, quiet=config.quiet),
                      optimizer=optimizer, scheduler=scheduler, scheduler_per_step=True)
    history = trainer.fit(data)
    log.info("trained %s: loss per epoch %s", config.loss, ", ".join(f"{v:.4f}" for v in history.train_loss))
    return model.cpu().eval()


def _first_masks(first: UNet3D, subjects: list[TrainingSubject], config: WmhTrainConfig) -> list[np.ndarray | None]:
    """The first model's mask as ``predict`` makes it, one per subject (None for dropped subjects, never trained on)."""
    from rich.progress import track

    model = WmhModel(first, config.patch_size, {})
    return [box_mask(model, s.image) if s.weight > 0 else None
            for s in track(subjects, description="first-step masks", disable=config.quiet)]


def _with_dense_labels(subjects: list[TrainingSubject],
                       masks: list[np.ndarray | None]) -> tuple[list[TrainingSubject], dict]:
    """The subjects with the first model's masks as their dense labels, and each mask's Dice with a phantom's truth."""
    out, scores = [], {}
    for s, mask in zip(subjects, masks):
        if mask is not None:
            s = TrainingSubject(**{**s.__dict__, "dense": mask.astype(np.uint8)})
            if s.truth is not None:
                scores[s.name] = round(dice(mask, s.truth > 0.5), 4)
        out.append(s)
    return out, scores


def _with_mask_thresholds(subjects: list[TrainingSubject],
                          masks: list[np.ndarray | None]) -> tuple[list[TrainingSubject], dict]:
    """The subjects with their rater thresholds refitted on the first model's masks (:func:`mask_threshold`)."""
    out, thresholds = [], {}
    for s, mask in zip(subjects, masks):
        if mask is not None:
            thresholds[s.name] = mask_threshold(mask, s)
            s = TrainingSubject(**{**s.__dict__, "threshold": thresholds[s.name]})
        out.append(s)
    return out, thresholds


def train_two_step(subjects: list[TrainingSubject], config: WmhTrainConfig, *, first: UNet3D | None = None,
                   on_first=None, init: dict | None = None) -> tuple[UNet3D, dict, UNet3D]:
    """Train; with ``config.two_step``, check every label against the first model and retrain.

    With ``config.recalibrate`` each label first gets its residual pose and
    its rater's threshold fitted against the first model
    (:func:`recalibrate_label`). A subject is then dropped when its label
    agreement (Dice of the label with the first model's prediction seen
    through the label's acquisition) is below ``drop_ratio`` times the median
    agreement: such a label misses or misplaces most of what the model, taught
    by all the others, sees. (A robust z-score does not separate them: clean
    labels of small lesion loads already spread the agreements widely.) The
    second run starts afresh with as many patches as the first, so both steps
    have the same budget. Its rater model can be sharper
    (``config.second_temperature``): once each label has its own threshold,
    a thick voxel left unmarked only says its lesion share stayed under that
    threshold, and a fuzzy rater model would keep pushing it towards zero,
    erasing thin lesions that lie along the slices (the roofs and floors of
    the ventricles). A sharp one alone marks faint spots firmly
    (docs/wmh-history.md), so the default keeps the first step's. ``first`` reuses an already trained first step; ``on_first(model)``
    is called once it exists (to save it). ``init`` (a state dict) starts
    every step from those weights instead of at random (fine-tuning).

    Returns the final network, a report (agreements, fits, dropped labels) and
    the first-step network (the final one too without ``config.two_step``).

    With ``config.dense_weight`` each label is also refined by the first
    model: its mask as ``predict`` makes it (trimmed and grown by the T1's own
    intensities, :func:`~mrinets.pipelines.wmh.segment.box_mask`) becomes a
    dense 1 mm label, taught beside the thick one with that weight. The thick
    label knows where lesions are but not where, inside 5 mm, their edges
    lie; the T1 shows those edges. With ``config.unscore_unmarked`` the
    second step's loss leaves out the thick voxels of lesions the first
    model sees far from anything a label marks (:func:`unmarked_lesions`).
    With ``config.mask_thresholds`` the kept labels' thresholds are fitted
    again, on the first model's mask as ``predict`` makes it
    (:func:`mask_threshold`), after the drop (which keeps the raw fit's).
    With ``config.centre_thresholds`` the fitted thresholds of the kept
    labels are shifted to centre on ``config.sr_threshold``
    (:func:`centre_thresholds`).
    """
    first = first if first is not None else train_network(subjects, config, init=init)
    if on_first is not None:
        on_first(first)
    report: dict = {"config": asdict(config), "subjects": [s.name for s in subjects]}
    if not config.two_step:
        return first, report, first
    from rich.progress import track

    checked, scores, fits = [], [], {}
    for s in track(subjects, description="checking labels", disable=config.quiet):
        prob = predict_grid(first, s.image, config.patch_size)
        # The naive ablation's upsampled labels have no pose or threshold to fit.
        if config.recalibrate and config.loss != "naive":
            s, fits[s.name] = recalibrate_label(prob, s)
        if config.unscore_unmarked:
            s = TrainingSubject(**{**s.__dict__, "unscored": unmarked_lesions(prob, s)})
        checked.append(s)
        scores.append(label_agreement(prob, s))
    scores = np.array(scores)
    median = float(np.median(scores))
    kept = [TrainingSubject(**{**s.__dict__, "weight": 0.0 if a < config.drop_ratio * median else s.weight})
            for s, a in zip(checked, scores)]
    n_kept = sum(s.weight > 0 for s in kept)
    report.update(agreement=dict(zip([s.name for s in subjects], scores.round(4).tolist())), agreement_median=median,
                  dropped=[s.name for s in kept if s.weight == 0])
    if fits:
        report["recalibration"] = fits
    masks = _first_masks(first, kept, config) if config.mask_thresholds or config.dense_weight else None
    if config.mask_thresholds:
        kept, report["mask_thresholds"] = _with_mask_thresholds(kept, masks)
    if config.centre_thresholds:
        kept, report["threshold_shift"] = centre_thresholds(kept, config.sr_threshold)
        log.info("two-step: fitted thresholds shifted by %+.2f to centre on %.2f", report["threshold_shift"],
                 config.sr_threshold)
    if config.unscore_unmarked:
        report["unscored_voxels"] = {s.name: int(s.unscored.sum()) for s in checked}
    log.info("two-step: %d of %d labels kept (median agreement %.3f)", n_kept, len(subjects), median)
    if config.dense_weight:
        kept, dense_dice = _with_dense_labels(kept, masks)
        if dense_dice:
            report["dense_label_dice"] = dense_dice
            log.info("two-step: dense labels' Dice with the truth, median %.3f", np.median(list(dense_dice.values())))
    per_subject = int(np.ceil(config.samples_per_subject * len(subjects) / max(n_kept, 1)))
    second_config = replace(config, temperature=config.second_temperature or config.temperature)
    second = train_network(kept, second_config, samples_per_subject=per_subject, seed_offset=1, init=init)
    return second, report, first
