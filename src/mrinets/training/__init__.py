"""Training engine, patch sampling and sliding-window inference."""

from __future__ import annotations

from mrinets.training.engine import History, TrainConfig, Trainer, load_checkpoint, resolve_device, seed_everything
from mrinets.training.inference import predict_volume
from mrinets.training.patches import PatchDataset, extract_patch, sample_centres

__all__ = [
    "History",
    "PatchDataset",
    "TrainConfig",
    "Trainer",
    "extract_patch",
    "load_checkpoint",
    "predict_volume",
    "resolve_device",
    "sample_centres",
    "seed_everything",
]
