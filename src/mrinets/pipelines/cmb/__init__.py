"""Cerebral microbleeds on SWI, GRE magnitude or QSM: candidates, distilled classifier, rule-based clean-up.

Faces: :func:`predict` (one image -> :class:`CmbResult`), :func:`train`
(phantoms -> candidate U-Net, teacher, distilled student and its ablation,
operating points) and :func:`evaluate_phantoms` (held-out phantoms, cluster-wise
TPR, FP per subject, precision, F1, calcification rejection).

References
----------
Sundaresan V, Arthofer C, Zamboni G, et al. Automated detection of cerebral
microbleeds on MR images using knowledge distillation framework. Front
Neuroinform 2023;17:1204186.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from mrinets.metrics.detection import cluster_detection, pooled_detection
from mrinets.pipelines.cmb.cleanup import CleanupRules, cleanup
from mrinets.pipelines.cmb.data import CONTRASTS, Subject, input_channels, intensity_stats, standardise
from mrinets.pipelines.cmb.detect import (DEFAULT_WEIGHTS, LOCATIONS, CmbConfig, CmbModel, CmbResult, detect,
                                          load_model, mars_location, predict, predict_and_save, save_model,
                                          table_csv)
from mrinets.pipelines.cmb.model import (CmbTrainConfig, candidate_patches, choose_sensitivity_threshold,
                                         config_dict, step1_probability, train_step1, train_student, train_teacher)

__all__ = ["CONTRASTS", "CmbConfig", "CmbModel", "CmbResult", "CmbTrainConfig", "CleanupRules", "DEFAULT_WEIGHTS",
           "LOCATIONS", "predict", "predict_and_save", "load_model", "save_model", "train", "evaluate",
           "evaluate_phantoms", "phantom_subjects", "mars_location", "table_csv", "TEST_SEED_START", "VAL_SEED_START",
           "cleanup"]

log = logging.getLogger(__name__)

VAL_SEED_START = 800_000
TEST_SEED_START = 900_000


def _subjects_of_seed(seed: int, contrasts: Sequence[str] = CONTRASTS, crop_mm: float = 48.0) -> list[Subject]:
    from mrinets.data.phantoms.cmb import make_cmb_subject

    p = make_cmb_subject(seed, crop_mm=crop_mm)
    out = []
    for contrast in contrasts:
        raw = p.images[contrast]
        z = standardise(raw, contrast, p.mask)
        out.append(Subject(name=f"phantom-{seed}-{contrast}", contrast=contrast, channels=input_channels(z, p.mask),
                           mask=p.mask, cmb=p.cmb_labels, mimic=p.mimic_labels, raw=raw, affine=p.affine,
                           stats=intensity_stats(raw, contrast, p.mask)))
    return out


def _make(args: tuple) -> list[Subject]:
    return _subjects_of_seed(*args)


def phantom_subjects(seeds: Sequence[int], contrasts: Sequence[str] = CONTRASTS, *, workers: int = 1,
                     quiet: bool = False, crop_mm: float = 48.0) -> list[Subject]:
    """Standardised volumes of each phantom seed and contrast (in ``workers`` processes)."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from rich.progress import track

    jobs = [(s, tuple(contrasts), crop_mm) for s in seeds]
    if workers <= 1 or len(jobs) < 2:
        groups = [_make(j) for j in track(jobs, description="phantoms", disable=quiet)]
    else:
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=get_context("spawn")) as pool:
            groups = list(track(pool.map(_make, jobs), total=len(jobs), description="phantoms", disable=quiet))
    return [s for g in groups for s in g]


def _training_range(subjects: Sequence[Subject]) -> dict:
    out: dict[str, dict] = {}
    for s in subjects:
        entry = out.setdefault(s.contrast, {})
        for k, v in s.stats.items():
            lo, hi = entry.get(k, (v, v))
            entry[k] = (min(lo, v), max(hi, v))
    return {c: {k: [float(a), float(b)] for k, (a, b) in e.items()} for c, e in out.items()}


def choose_student_threshold(model: CmbModel, subjects: Sequence[Subject], *, device="cpu") -> dict:
    """Student threshold of best pooled F1 on validation volumes (after step 3)."""
    sweeps = [_sweep_rows(model, s, device=device) for s in subjects]
    table = []
    for t in np.round(np.arange(0.05, 0.96, 0.05), 2):
        pooled = pooled_detection([_score_at(rows, s, float(t)) for rows, s in zip(sweeps, subjects)])
        table.append({"threshold": float(t), **{k: pooled[k] for k in ("tpr", "fp_per_subject", "precision", "f1")}})
    best = max(table, key=lambda r: (r["f1"], r["threshold"]))
    return {"threshold": best["threshold"], "validation": best, "table": table}


def _sweep_rows(model: CmbModel, s: Subject, *, student=None, device="cpu", rules=CleanupRules()):
    found = detect(s.channels, s.mask, s.raw, s.contrast, model, student=student, threshold=0.0, rules=rules,
                   device=device)
    return found


def _kept(found, threshold: float) -> list[int]:
    """Ids of the candidates the student accepts at ``threshold`` and step 3 keeps."""
    return [i + 1 for i, (p, r) in enumerate(zip(found.student_prob, found.reasons)) if p >= threshold and r is None]


def _score_at(found, s: Subject, threshold: float) -> dict:
    kept_ids = _kept(found, threshold)
    pred = np.isin(found.candidates, kept_ids) * found.candidates
    return cluster_detection(pred, s.cmb)


def train(subjects: Sequence[Subject], validation: Sequence[Subject], config: CmbTrainConfig) -> dict:
    """Train every part; returns the networks, operating points and a report.

    Keys: ``step1``, ``teacher``, ``student``, ``student_alone``, ``model``
    (:class:`CmbModel` of step 1 + distilled student), ``report``.
    """
    start = time.perf_counter()
    device = config.device
    step1, loss1 = train_step1(subjects, config)
    probs_val = [step1_probability(step1, s.channels, device=device) for s in validation]
    op1 = choose_sensitivity_threshold(probs_val, [s.cmb for s in validation], [s.mask for s in validation],
                                       config.target_sensitivity)
    log.info("step 1: threshold %.2f gives sensitivity %.3f, %.1f candidates per volume", op1["threshold"],
             op1["sensitivity"], op1["candidates_per_volume"])
    probs = [step1_probability(step1, s.channels, device=device) for s in subjects]
    rng = np.random.default_rng(config.seed)
    patches = candidate_patches(subjects, probs, op1["threshold"], config.patch_step2, rng=rng)
    teacher, loss_t = train_teacher(patches, config)
    student, loss_s = train_student(patches, config, teacher)
    alone, loss_a = train_student(patches, config, None)
    card = {"config": config_dict(config), "operating_point": {"candidate_threshold": op1["threshold"],
                                                               "student_threshold": 0.5}}
    model = CmbModel(step1, student, card)
    op2 = choose_student_threshold(model, validation, device=device)
    card["operating_point"]["student_threshold"] = op2["threshold"]
    card["training_range"] = _training_range(subjects)
    n_pos = int(patches.y.sum())
    report = {"train_seconds": round(time.perf_counter() - start, 1), "step1": op1, "step2": op2,
              "patches": {"total": int(len(patches.y)), "positive": n_pos,
                          "candidates": int(sum(s == "candidate" for s in patches.source))},
              "losses": {"step1": loss1, "teacher": loss_t, "student": loss_s, "student_alone": loss_a}}
    return {"step1": step1, "teacher": teacher, "student": student, "student_alone": alone, "model": model,
            "card": card, "report": report}


def _calcification_rejection(found, s: Subject, threshold: float) -> tuple[int, int]:
    """(calcifications not detected, calcifications) of one volume."""
    calc, n = ndimage.label(s.mimic == 2, np.ones((3, 3, 3), bool))
    kept_ids = _kept(found, threshold)
    pred = np.isin(found.candidates, kept_ids)
    hit = np.unique(calc[pred & (calc > 0)]).size
    return n - hit, n


def evaluate_phantoms(models: dict[str, tuple[CmbModel, torch.nn.Module | None]], seeds: Sequence[int],
                      contrasts: Sequence[str] = CONTRASTS, *, device: str = "auto", quiet: bool = True,
                      subjects: Sequence[Subject] | None = None, crop_mm: float = 48.0) -> dict:
    """Cluster-wise scores of each model on held-out phantoms, per contrast.

    ``models`` maps a name to (model, student or None for the model's own).
    Each model is scored at its card's threshold; ``sweep`` holds TPR and FP
    per subject over student thresholds (for comparisons at equal FP rate).
    """
    subjects = list(subjects) if subjects is not None else phantom_subjects(seeds, contrasts, quiet=quiet,
                                                                            crop_mm=crop_mm)
    out: dict[str, dict] = {}
    for name, (model, student) in models.items():
        per: dict[str, dict] = {}
        for contrast in contrasts:
            subs = [s for s in subjects if s.contrast == contrast]
            t0 = time.perf_counter()
            founds = [_sweep_rows(model, s, student=student, device=device) for s in subs]
            seconds = (time.perf_counter() - t0) / max(len(subs), 1)
            rows = [_score_at(f, s, model.threshold) for f, s in zip(founds, subs)]
            calc = [_calcification_rejection(f, s, model.threshold) for f, s in zip(founds, subs)]
            cand = [cluster_detection(f.candidates, s.cmb) for f, s in zip(founds, subs)]
            sweep = []
            for t in np.round(np.arange(0.05, 0.96, 0.05), 2):
                pooled = pooled_detection([_score_at(f, s, float(t)) for f, s in zip(founds, subs)])
                sweep.append({"threshold": float(t), "tpr": pooled["tpr"], "fp_per_subject": pooled["fp_per_subject"]})
            per[contrast] = {**pooled_detection(rows), "candidates": pooled_detection(cand),
                             "calcification_rejection": (sum(c[0] for c in calc) / max(sum(c[1] for c in calc), 1)),
                             "calcifications": sum(c[1] for c in calc), "seconds_per_volume": seconds,
                             "sweep": sweep}
        out[name] = per
    return {"seeds": list(seeds), "contrasts": list(contrasts), "crop_mm": crop_mm, "models": out}


def evaluate(pred_paths: Sequence[str], truth_paths: Sequence[str]) -> dict:
    """Cluster-wise detection of predicted label maps against true ones (NIfTI paths, same grids)."""
    from mrinets.io.nifti import check_same_grid, load

    if len(pred_paths) != len(truth_paths):
        raise ValueError(f"{len(pred_paths)} predictions but {len(truth_paths)} truths")
    rows = []
    for p, t in zip(pred_paths, truth_paths):
        pred, truth = load(p, ndim=3, allow_empty=True), load(t, ndim=3, allow_empty=True)
        check_same_grid(pred, truth)
        rows.append({"pred": str(p), "truth": str(t),
                     **cluster_detection(np.rint(pred.data).astype(np.int32), np.rint(truth.data).astype(np.int32))})
    return {"subjects": rows, "pooled": pooled_detection(rows)}
