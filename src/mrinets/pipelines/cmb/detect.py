"""Detecting microbleeds in one scan: the three steps, the measures of each CMB, and the outputs."""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from mrinets.errors import ArgumentError
from mrinets.io import Image, OutputStage, load, load_mask, write_json, write_text
from mrinets.io.nifti import save
from mrinets.io.tables import csv_text
from mrinets.nets.patch_classifier import CandidateStudent
from mrinets.physics.sampling import affine_resample
from mrinets.pipelines.cmb.cleanup import CleanupRules, cleanup
from mrinets.pipelines.cmb.data import (CONTRASTS, WORK_MM, auto_mask, input_channels, intensity_stats, standardise,
                                        to_working_grid)
from mrinets.pipelines.cmb.model import candidate_clusters, classify_patches, step1_probability
from mrinets.training.engine import read_weights, resolve_device
from mrinets.training.patches import extract_patch

__all__ = ["DEFAULT_WEIGHTS", "CmbConfig", "CmbModel", "CmbResult", "load_model", "save_model", "detect",
           "predict", "mars_location", "LOCATIONS"]

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "cmb_detector.pt"
LOCATIONS = ("lobar", "deep", "infratentorial", "unknown")
# Voxel sizes (mm) the working grid stays faithful to: coarser loses small blooms, finer is averaged away.
VOXEL_RANGE_MM = (0.3, 1.6)
# A field of view smaller than this (mm, any axis) gives step 1 little context and the mask no brain edge.
MIN_FOV_MM = 32.0


@dataclass
class CmbConfig:
    """Options of ``mrinets cmb predict``."""

    contrast: str = "swi"
    weights: str | None = None
    device: str = "auto"
    threshold: float | None = None
    candidate_threshold: float | None = None
    cleanup: bool = True
    space: str = "native"
    to_mni: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.contrast not in CONTRASTS:
            raise ArgumentError("--contrast", f"must be one of {', '.join(CONTRASTS)}, got {self.contrast!r}")
        for flag, value in (("--threshold", self.threshold), ("--candidate-threshold", self.candidate_threshold)):
            if value is not None and not 0 < value < 1:
                raise ArgumentError(flag, f"must lie in (0, 1), got {value:g}")
        if self.space not in ("native", "mni"):
            raise ArgumentError("--space", f"must be native or mni, got {self.space!r}")


@dataclass
class CmbModel:
    """The shipped parts: candidate U-Net, distilled student, operating points and the card."""

    step1: torch.nn.Module
    student: CandidateStudent
    card: dict

    @property
    def candidate_threshold(self) -> float:
        return float(self.card["operating_point"]["candidate_threshold"])

    @property
    def threshold(self) -> float:
        return float(self.card["operating_point"]["student_threshold"])

    @property
    def patch_size(self) -> int:
        return int(self.card["config"]["patch_step2"])


def save_model(path: str | Path, step1: torch.nn.Module, student: CandidateStudent, card: dict) -> Path:
    """State dicts and plain-typed rebuild facts (``weights_only`` loading)."""
    from mrinets.io.output import atomic_path

    state = {"step1": step1.state_dict(), "step1_config": step1.config(), "student": student.state_dict(),
             "student_config": student.config(), "card": card}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_model(path: str | Path | None = None) -> CmbModel:
    """Load a detector saved by ``mrinets cmb train`` (``torch.load(weights_only=True)``)."""
    from mrinets.nets.unet3d import UNet3D

    path = Path(path) if path else DEFAULT_WEIGHTS
    state = read_weights(path)
    try:
        step1 = UNet3D(**state["step1_config"])
        step1.load_state_dict(state["step1"])
        student = CandidateStudent(**state["student_config"])
        student.load_state_dict(state["student"])
        card = dict(state["card"])
        card["operating_point"]["candidate_threshold"], card["operating_point"]["student_threshold"]
    except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as exc:
        raise ArgumentError("--weights", f"{path} is not an mrinets CMB weights file "
                                         f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    return CmbModel(step1.eval(), student.eval(), card)


def mars_location(mni_mm: np.ndarray) -> str:
    """MARS class of a point in MNI152 space (mm), by a simple box rule.

    Infratentorial: the cerebellum (behind y = -40 mm and below z = -22 mm)
    and the brainstem (within 14 mm of the midline, y from -45 to -10 mm,
    below z = -5 mm). Deep: within 30 mm of the midline, y from -30 to 25 mm,
    z from -12 to 22 mm (basal ganglia, thalamus, internal and external
    capsule, corpus callosum and periventricular white matter). Lobar: the
    rest (cortex and subcortical white matter). The boxes follow the
    Microbleed Anatomical Rating Scale's regions (Gregoire et al., Neurology
    2009;73:1759) only coarsely: a deep CMB near a box face can be called lobar.
    """
    x, y, z = (float(v) for v in np.asarray(mni_mm, float).reshape(3))
    if (y < -40 and z < -22) or (abs(x) < 14 and -45 < y < -10 and z < -5):
        return "infratentorial"
    if abs(x) < 30 and -30 < y < 25 and -12 < z < 22:
        return "deep"
    return "lobar"


@dataclass
class CmbResult:
    """Labelled microbleeds on the input grid, their table and the run's measures."""

    name: str
    labels: np.ndarray
    probability: np.ndarray
    table: list[dict]
    measures: dict
    reference: Image = field(repr=False)
    display: np.ndarray | None = field(default=None, repr=False)

    @property
    def count(self) -> int:
        return len(self.table)

    def save_into(self, stage: OutputStage, *, qc: bool = True) -> None:
        ref = self.reference
        save(self.labels.astype(np.int16), stage.path(f"{self.name}_cmb_labels.nii.gz"), like=ref, dtype=np.int16)
        save(self.probability.astype(np.float32), stage.path(f"{self.name}_cmb_candidate_prob.nii.gz"), like=ref,
             dtype=np.float32)
        write_text(stage.path(f"{self.name}_cmb.csv"), table_csv(self.table))
        write_json(stage.path(f"{self.name}_cmb.json"), self.measures)
        if qc:
            from mrinets.report.qc import marks_png

            centres = [np.linalg.solve(ref.affine, [r["x_mm"], r["y_mm"], r["z_mm"], 1.0])[:3] for r in self.table]
            marks_png(Image(ref.data if self.display is None else self.display, ref.affine),
                      stage.path(f"{self.name}_cmb_qc.png"), centres, ids=[r["id"] for r in self.table],
                      title=f"{self.name}: {self.count} CMB ({self.measures['contrast']})")

    def save(self, outdir: str | Path, *, qc: bool = True) -> list[Path]:
        """Write the label map, candidate probability, CSV, JSON and QC picture, all or nothing."""
        with OutputStage(outdir) as stage:
            self.save_into(stage, qc=qc)
            return [stage.final(n) for n in stage.names]


COLUMNS = ("id", "x_mm", "y_mm", "z_mm", "volume_mm3", "probability", "location", "sphericity", "edge_mm")


def table_csv(rows: list[dict]) -> str:
    """CSV text of the microbleed table (header only when there is none)."""
    return csv_text(rows, fields=COLUMNS, float_format=".4g")


@dataclass
class Detection:
    """Step-by-step output on the working grid."""

    prob: np.ndarray
    candidates: np.ndarray
    n_candidates: int
    student_prob: np.ndarray
    features: list[dict]
    reasons: list[str | None]
    kept: np.ndarray


def detect(channels: np.ndarray, mask: np.ndarray, raw: np.ndarray, contrast: str, model: CmbModel, *,
           student: torch.nn.Module | None = None, candidate_threshold: float | None = None,
           threshold: float | None = None, rules: CleanupRules | None = CleanupRules(),
           device: str | torch.device = "cpu") -> Detection:
    """Run the three steps on the working grid.

    ``student`` replaces the model's own (the ablation); ``rules`` None skips
    step 3. ``threshold`` 0 keeps every candidate step 2 sees (for sweeps).
    """
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    prob = step1_probability(model.step1, channels, device=dev)
    t1 = model.candidate_threshold if candidate_threshold is None else candidate_threshold
    labels, n = candidate_clusters(prob, t1, mask)
    size = model.patch_size
    centres = [np.round(c).astype(int) for c in ndimage.center_of_mass(labels > 0, labels, range(1, n + 1))]
    patches = np.stack([extract_patch(channels, c, (size,) * 3) for c in centres]) if centres else \
        np.zeros((0, channels.shape[0], size, size, size), np.float32)
    student_prob = classify_patches(student or model.student, patches, device=dev)
    t2 = model.threshold if threshold is None else threshold
    if rules is not None:
        features, reasons = cleanup(labels, channels[0], mask, raw, contrast, voxel_mm=WORK_MM, rules=rules)
    else:
        features, reasons = [{} for _ in range(n)], [None] * n
    kept = np.array([p >= t2 and r is None for p, r in zip(student_prob, reasons)], bool)
    return Detection(prob, labels, n, student_prob, features, reasons, kept)


def _out_of_range(image: Image, contrast: str, stats: dict, model: CmbModel, mask: np.ndarray) -> list[str]:
    """Reasons this input lies outside what the networks were trained on (empty: inside)."""
    reasons = []
    trained = model.card.get("config", {}).get("contrasts", list(CONTRASTS))
    if contrast not in trained:
        reasons.append(f"contrast {contrast} was not among the training contrasts ({', '.join(trained)})")
    size = image.voxel_size
    if size.min() < VOXEL_RANGE_MM[0] or size.max() > VOXEL_RANGE_MM[1]:
        reasons.append(f"voxel size {' x '.join(f'{v:.2g}' for v in size)} mm outside {VOXEL_RANGE_MM[0]:g}-"
                       f"{VOXEL_RANGE_MM[1]:g} mm")
    fov = size * np.asarray(image.spatial_shape)
    if fov.min() < MIN_FOV_MM:
        reasons.append(f"field of view {' x '.join(f'{v:.0f}' for v in fov)} mm is smaller than {MIN_FOV_MM:g} mm")
    ranges = model.card.get("training_range", {}).get(contrast, {})
    for key, value in stats.items():
        if key in ranges:
            lo, hi = ranges[key]
            margin = 0.25 * (hi - lo) + 1e-9
            if not lo - margin <= value <= hi + margin:
                reasons.append(f"intensity {key} {value:.3g} outside the training range {lo:.3g}-{hi:.3g}")
    if mask.mean() > 0.97:
        reasons.append("no brain edge found (a crop inside the head?): the brain-edge rule cannot act")
    return reasons


def predict(image: Image, config: CmbConfig, *, mask: np.ndarray | None = None, model: CmbModel | None = None,
            name: str | None = None) -> CmbResult:
    """Detect microbleeds in one 3D SWI, GRE magnitude or QSM image.

    Parameters
    ----------
    image : Image
        3D image (RAS); any voxel size (resampled to the 1 mm working grid).
    config : CmbConfig
    mask : ndarray of bool, optional
        Brain mask on the image's grid (default: :func:`auto_mask`).
    model : CmbModel, optional
        Default: ``config.weights`` or the shipped weights.
    """
    if image.data.ndim != 3:
        raise ValueError(f"image must be 3D, got shape {image.shape}")
    model = model or load_model(config.weights)
    contrast = config.contrast
    native_mask = auto_mask(image.data, contrast, image.voxel_size) if mask is None else np.asarray(mask, bool)
    if not native_mask.any():
        raise ArgumentError("--mask", "the brain mask is empty")
    data, work_affine = to_working_grid(image.data, image.affine, order=1)
    work_mask = to_working_grid(native_mask.astype(np.float32), image.affine, order=1)[0] > 0.5
    if not work_mask.any():
        work_mask = data != 0
    z = standardise(data, contrast, work_mask)
    channels = input_channels(z, work_mask)
    stats = intensity_stats(data, contrast, work_mask)
    flags = _out_of_range(image, contrast, stats, model, native_mask)
    for reason in flags:
        warnings.warn(f"{image.name}: out of training range: {reason}", stacklevel=2)
    found = detect(channels, work_mask, data, contrast, model, candidate_threshold=config.candidate_threshold,
                   threshold=config.threshold, rules=CleanupRules() if config.cleanup else None,
                   device=config.device)
    work_labels = np.zeros(data.shape, np.int16)
    rows = []
    kept_ids = [i for i in range(1, found.n_candidates + 1) if found.kept[i - 1]]
    for new_id, i in enumerate(kept_ids, start=1):
        voxels = found.candidates == i
        work_labels[voxels] = new_id
        centre_vox = np.argwhere(voxels).mean(0)
        centre = work_affine[:3, :3] @ centre_vox + work_affine[:3, 3]
        feats = found.features[i - 1]
        rows.append({"id": new_id, "x_mm": float(centre[0]), "y_mm": float(centre[1]), "z_mm": float(centre[2]),
                     "volume_mm3": float(voxels.sum() * WORK_MM**3),
                     "probability": float(found.student_prob[i - 1]),
                     "location": _location(centre, config),
                     "sphericity": float(feats.get("sphericity", float("nan"))),
                     "edge_mm": float(feats.get("edge_mm", float("nan")))})
    same_grid = work_affine is image.affine or np.allclose(work_affine, image.affine) and data.shape == image.shape
    if same_grid:
        labels, prob = work_labels, found.prob
    else:
        labels = affine_resample(work_labels.astype(np.float32), work_affine, image.affine, image.shape,
                                 order=0).astype(np.int16)
        prob = affine_resample(found.prob, work_affine, image.affine, image.shape, order=1)
    rejected: dict[str, int] = {}
    for p, reason in zip(found.student_prob, found.reasons):
        key = reason or ("classifier" if p < (config.threshold or model.threshold) else None)
        if key:
            rejected[key] = rejected.get(key, 0) + 1
    measures = {"input": str(image.path) if image.path else image.name, "contrast": contrast, "count": len(rows),
                "count_by_location": {loc: sum(r["location"] == loc for r in rows) for loc in LOCATIONS},
                "candidates_step1": found.n_candidates, "rejected": rejected,
                "candidate_threshold": config.candidate_threshold or model.candidate_threshold,
                "student_threshold": config.threshold or model.threshold, "cleanup": config.cleanup,
                "location_rule": "MNI box rule (mars_location)" if config.space == "mni" or config.to_mni is not None
                else "unknown: native space (give --space mni or --to-mni)",
                "out_of_training_range": bool(flags), "out_of_training_range_reasons": flags,
                "intensity_stats": stats, "working_grid_mm": WORK_MM,
                "weights": str(config.weights or DEFAULT_WEIGHTS.name)}
    return CmbResult(name=name or image.name, labels=labels, probability=prob.astype(np.float32), table=rows,
                     measures=measures, reference=image)


@functools.lru_cache(maxsize=2)
def _cached_model(weights: str | None) -> CmbModel:
    return load_model(weights)


def predict_and_save(image_path: str | Path, outdir: str | Path, *, config: CmbConfig,
                     mask: str | Path | None = None, name: str | None = None, qc: bool = True) -> list[Path]:
    """Load one image (and mask), :func:`predict`, save: one subject of a batch (model loaded once per process).

    ``name`` prefixes the files (default: the image's name).
    """
    image = load(image_path, ndim=3)
    brain = load_mask(mask, like=image) if mask else None
    return predict(image, config, mask=brain, model=_cached_model(config.weights), name=name).save(outdir, qc=qc)


def _location(world: np.ndarray, config: CmbConfig) -> str:
    if config.to_mni is not None:
        return mars_location((np.asarray(config.to_mni) @ np.r_[world, 1.0])[:3])
    if config.space == "mni":
        return mars_location(world)
    return "unknown"
