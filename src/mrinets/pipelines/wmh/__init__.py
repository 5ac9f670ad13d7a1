"""White-matter hypointensities on 3D T1, taught from thick-slice 2D FLAIR labels (deep-T1-WMH).

Faces: :func:`predict` (one T1, an Image or a path -> :class:`Result` with
``.save(outdir)``), :func:`train` (prepared subjects -> network and report),
:func:`train_and_save` (what ``mrinets wmh train`` runs: phantoms and/or user
T1 + FLAIR-label pairs -> weights file, model card and report; a
:class:`WmhTrainRun` says which subjects and where) and :func:`evaluate`
(predicted masks against true ones, or held-out phantoms scored at 1 mm
against their high-resolution truth, network beside the classic intensity
baseline: :func:`evaluate_phantoms`).

References
----------
Thyreau B, et al. Higher-resolution quantification of white matter
hypointensities by large-scale transfer learning from 2D images on the JPSC-AD
cohort. Human Brain Mapping 2022;43(13):3998-4012.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from mrinets.io.nifti import from_array, load
from mrinets.metrics.segmentation import ERROR_KINDS, dice, lesion_detection, volume_agreement
from mrinets.pipelines.wmh.data import TrainingSubject, prepare_subject
from mrinets.pipelines.wmh.model import LOSSES, WmhTrainConfig, train_two_step
from mrinets.pipelines.wmh.segment import (DEFAULT_WEIGHTS, OUTPUT_SUFFIXES, PREDICT_OVERLAP, ConfigError, WmhConfig,
                                           WmhModel, WmhResult, bids_output_names, load_model, measures_table,
                                           output_names, predict)
from mrinets.pipelines.wmh.tune import tune_growth
from mrinets.pipelines.wmh.workflow import WmhTrainRun, train_and_save, train_command

__all__ = ["WmhConfig", "ConfigError", "Result", "WmhResult", "WmhModel", "WmhTrainConfig", "LOSSES", "predict",
           "predict_and_save", "load_model", "train", "evaluate", "phantom_subject", "phantom_subjects",
           "pair_subject", "WmhTrainRun", "train_and_save", "train_command", "evaluate_phantoms", "score_masks",
           "summarise", "tune_growth", "save_weights", "measures_table",
           "output_names", "bids_output_names", "DEFAULT_WEIGHTS", "OUTPUT_SUFFIXES", "TRAIN_CROP",
           "TEST_SEED_START"]

log = logging.getLogger(__name__)

Result = WmhResult

# MNI voxels around the network box (plus the warp's reach): training phantoms need nothing else.
TRAIN_CROP = ((0, 197), (10, 225), (30, 160))
TEST_SEED_START = 900_000


@functools.lru_cache(maxsize=2)
def _cached_model(weights: str | None) -> WmhModel:
    return load_model(weights)


def predict_and_save(t1_path: str | Path, outdir: str | Path, *, config: WmhConfig, qc: bool = True,
                     names: dict[str, str] | None = None) -> list[Path]:
    """Load one T1, :func:`predict`, :meth:`WmhResult.save`: one subject of a batch (model loaded once per process)."""
    t1 = load(t1_path, ndim=3)
    model = _cached_model(config.weights) if config.method == "network" else None
    return predict(t1, config, model=model).save(outdir, qc=qc, names=names)


def phantom_subject(seed: int, lesions: str = "wmh") -> TrainingSubject:
    """A training subject from the WMH phantom of ``seed`` (its known MNI map stands for registration).

    ``lesions`` is the phantom's lesion model (:data:`mrinets.data.phantoms.wmh.LESION_MODELS`).
    """
    from mrinets.data.phantoms.wmh import make_wmh_subject

    p = make_wmh_subject(seed, crop=TRAIN_CROP, lesions=lesions)
    subject = prepare_subject(f"phantom-{seed}", p.t1, p.t1_affine, p.flair_label, p.flair_affine, p.to_mni,
                              truth=p.lesion)
    subject.meta = dict(p.meta["label"])
    return subject


def phantom_subjects(seeds: Sequence[int], *, workers: int = 1, quiet: bool = False,
                     make=phantom_subject) -> list:
    """:func:`phantom_subject` of every seed, in order, in ``workers`` processes (1: in this one).

    Each phantom is a single-threaded simulation of about 16 s; 80 of them
    would leave all but one core idle for 20 minutes. ``make`` is any
    picklable function of a seed.
    """
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from rich.progress import track

    seeds = list(seeds)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if workers == 1 or len(seeds) < 2:
        return [make(s) for s in track(seeds, description="phantoms", disable=quiet)]
    # Spawned, not forked: the parent may already hold torch's thread pools.
    with ProcessPoolExecutor(min(workers, len(seeds)), mp_context=get_context("spawn")) as pool:
        return list(track(pool.map(make, seeds), total=len(seeds), description="phantoms", disable=quiet))


def pair_subject(t1_path: str | Path, label_path: str | Path) -> TrainingSubject:
    """A training subject from a user's T1 and a FLAIR lesion label sharing its scanner space."""
    from mrinets.preprocess.register import register_to_mni

    t1 = load(t1_path, ndim=3)
    label = load(label_path, ndim=3, allow_empty=True)
    registration = register_to_mni(t1)
    return prepare_subject(t1.name, t1.data, t1.affine, label.data > 0.5, label.affine, registration.matrix)


def save_weights(model: torch.nn.Module, config: WmhTrainConfig, path: str | Path, card: dict) -> Path:
    """Write the state dict with what rebuilds the network (plain types, for ``weights_only`` loading)."""
    from mrinets.io.output import atomic_path

    state = {"state_dict": model.state_dict(), "channels": list(config.channels),
             "patch_size": list(config.patch_size), "card": card}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def train(subjects: Sequence[TrainingSubject], config: WmhTrainConfig, *,
          first: torch.nn.Module | None = None, on_first=None,
          init: dict | None = None) -> tuple[torch.nn.Module, dict, torch.nn.Module]:
    """Train on prepared subjects (two-step when ``config.two_step``).

    Returns the final network, a report, and the first-step network;
    ``first`` reuses a first step trained on the same subjects and settings;
    ``on_first(model)`` is called as soon as the first step exists; ``init``
    (a state dict) starts each step from those weights (fine-tuning).
    """
    start = time.perf_counter()
    model, report, first = train_two_step(list(subjects), config, first=first, on_first=on_first, init=init)
    report["train_seconds"] = round(time.perf_counter() - start, 1)
    report["config"] = asdict(config)
    return model, report, first


def score_masks(pred: np.ndarray, truth: np.ndarray, voxel_ml: float) -> dict:
    """Dice, lesion-wise detection, volumes, and the volume of each error kind (``*_ml``) of one subject.

    The error kinds are :func:`~mrinets.metrics.segmentation.lesion_detection`'s:
    voxels of lesions missed entirely, false negatives at the edges of lesions
    found, voxels of false-positive lesions and false positives at the edges.
    """
    detection = lesion_detection(pred, truth)
    errors = {f"{kind}_ml": detection.pop(f"{kind}_voxels") * voxel_ml for kind in ERROR_KINDS}
    return {"dice": dice(pred, truth), **detection, **errors,
            "pred_ml": float(pred.sum()) * voxel_ml, "true_ml": float(truth.sum()) * voxel_ml}


def summarise(rows: Sequence[dict]) -> dict:
    """Mean Dice (and SD), lesion TPR and FPR, error volumes and volume agreement of :func:`score_masks` rows."""
    return {
        "dice_mean": float(np.mean([r["dice"] for r in rows])),
        "dice_sd": float(np.std([r["dice"] for r in rows])),
        "lesion_tpr_mean": float(np.mean([r["tpr"] for r in rows])),
        "lesion_fpr_mean": float(np.mean([r["fpr"] for r in rows])),
        **{f"{kind}_ml_mean": float(np.mean([r[f"{kind}_ml"] for r in rows])) for kind in ERROR_KINDS},
        **{f"volume_{k}": v for k, v in volume_agreement([r["pred_ml"] for r in rows],
                                                         [r["true_ml"] for r in rows]).items()},
    }


def evaluate_phantoms(models: dict[str, WmhModel], seeds: Sequence[int], *, baseline_k: float | None = 3.0,
                      register: bool = True, device: str = "auto", flip: bool = True,
                      pv_trim: bool = True, grow: bool | None = None, lesions: str = "wmh") -> dict:
    """Score networks (and the baseline) on posed, held-out phantoms at 1 mm against the truth.

    Each phantom sits in a random scanner pose; with ``register`` the pipeline
    registers it as it would a user's T1 (once, shared by every method), so
    the scores include registration error. ``flip`` is ``predict``'s mirror
    pass, ``pv_trim`` its partial-volume trim of the mask and ``grow`` its
    growth of that mask (None: as ``predict``, whenever trimmed; each network
    grows with the floor on its card); the result records them and the
    sliding windows' overlap. ``lesions`` is the phantoms' lesion model
    (:data:`mrinets.data.phantoms.wmh.LESION_MODELS`).
    """
    from mrinets.data.phantoms.wmh import make_wmh_subject
    from mrinets.preprocess.register import register_to_mni

    # A card that chose no growth (`mrinets wmh tune`) is not grown by predict.
    grow = WmhConfig(pv_trim=pv_trim, grow=grow).grow and all(m.grows for m in models.values())
    methods = list(models) + (["baseline"] if baseline_k is not None else [])
    per_subject: dict[str, list[dict]] = {m: [] for m in methods}
    for seed in seeds:
        phantom = make_wmh_subject(seed, pose=True, lesions=lesions)
        t1 = from_array(phantom.t1, phantom.t1_affine)
        to_mni = register_to_mni(t1).matrix if register else phantom.to_mni
        truth = phantom.truth_mask
        voxel_ml = float(np.prod(t1.voxel_size)) / 1000.0
        for name in methods:
            config = WmhConfig(method="baseline" if name == "baseline" else "network",
                               baseline_k=baseline_k or 3.0, device=device, flip=flip, pv_trim=pv_trim, grow=grow)
            result = predict(t1, config, model=models.get(name), to_mni=to_mni)
            row = {"seed": seed, **score_masks(result.mask, truth, voxel_ml)}
            per_subject[name].append(row)
            log.info("seed %d %s: Dice %.3f", seed, name, row["dice"])
    summary = {name: summarise(rows) for name, rows in per_subject.items()}
    return {"seeds": list(seeds), "lesions": lesions, "mirror_pass": flip, "window_overlap": list(PREDICT_OVERLAP),
            "pv_trim": pv_trim, "grow": grow, "summary": summary, "subjects": per_subject}


def evaluate(pred=None, truth=None, *, phantoms: Sequence[int] | None = None,
             models: dict[str, WmhModel] | None = None, **phantom_options) -> dict:
    """Score lesion masks against the truth: given ones, or this pipeline's on held-out phantoms.

    With ``pred`` and ``truth`` (a mask or a sequence of them, each an Image
    or a NIfTI path, pairs on one grid): each pair's :func:`score_masks`, the
    mean Dice and the volume agreement (what ``mrinets wmh evaluate`` prints).
    With ``phantoms`` (seeds): :func:`evaluate_phantoms` of ``models``
    (default: the shipped network) with ``phantom_options``.
    """
    from mrinets.io.nifti import Image, check_same_grid

    if phantoms is not None:
        if pred is not None or truth is not None:
            raise ValueError("give either pred and truth, or phantoms")
        return evaluate_phantoms(models or {"network": load_model()}, phantoms, **phantom_options)
    if pred is None or truth is None:
        raise ValueError("give pred and truth (masks), or phantoms (seeds)")
    preds = [pred] if isinstance(pred, (str, Path, Image)) else list(pred)
    truths = [truth] if isinstance(truth, (str, Path, Image)) else list(truth)
    if len(preds) != len(truths):
        raise ValueError(f"truth: {len(preds)} predictions but {len(truths)} truths")
    rows = []
    for p, t in zip(preds, truths):
        p_img = p if isinstance(p, Image) else load(p, ndim=3, allow_empty=True)
        t_img = t if isinstance(t, Image) else load(t, ndim=3, allow_empty=True)
        check_same_grid(p_img, t_img)
        voxel_ml = float(np.prod(p_img.voxel_size)) / 1000.0
        name = str(p_img.path) if p_img.path is not None else p_img.name
        rows.append({"pred": name, **score_masks(p_img.data > 0.5, t_img.data > 0.5, voxel_ml)})
    return {"subjects": rows, "dice_mean": float(np.mean([r["dice"] for r in rows])),
            "volume": volume_agreement([r["pred_ml"] for r in rows], [r["true_ml"] for r in rows])}
