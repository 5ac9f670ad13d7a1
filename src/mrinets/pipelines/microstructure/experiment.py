"""Pretraining, fine-tuning and evaluation on phantom cohorts (the paper's experiment, reproducible).

Two datasets, as in the paper. The *auxiliary* dataset is high quality:
healthy-adult phantoms at 1.5 mm on DIPY's 3-shell scheme (b = 1000, 2000,
3500 s/mm^2, 64 directions each). For pretraining its signals are averaged
into 3 mm voxels (spatial downsampling), fitted on their own scheme (the
high-quality targets) and interpolated in q-space onto the target scheme (the
network's inputs). The *target* dataset is a clinical population at 3 mm whose
full acquisition is DIPY's 2-shell ISBI 2013 scheme (b = 1500 x 27, 2500 x 36);
its low-quality scans keep 30 of those volumes (:func:`target_scheme`), and
the full scans of the K training subjects give their targets.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrinets.data.phantoms.microstructure import make_truth, simulate_dwi
from mrinets.errors import ArgumentError, OutputError
from mrinets.physics.diffusion import GradientScheme, QSpaceInterpolator
from mrinets.physics.diffusion.amico import NoddiModel
from mrinets.pipelines.microstructure import MicrostructureModel
from mrinets.pipelines.microstructure.data import (FULL_TARGET_SCHEME, PARAMETERS, TrainingSet, block_average,
                                                   concatenate, interpolate_ratios, normalise_dwi, reacquire,
                                                   target_indices, target_scheme, training_set)
from mrinets.pipelines.microstructure.model import FitConfig, NetConfig, predict_ratios, train_network

__all__ = ["AUX_SCHEME", "AuxiliarySubject", "auxiliary_subject", "FULL_TARGET_SCHEME", "TargetSubject",
           "auxiliary_noise", "auxiliary_set", "target_subject", "target_indices", "scheme_subject", "score",
           "fit_scores", "pretrain", "rehearsal_set", "finetune", "evaluate", "evaluate_fit", "AUX_SEED_START",
           "TRAIN_SEED_START", "TEST_SEED_START"]

log = logging.getLogger(__name__)

AUX_SCHEME = "gtab_3shell"
AUX_VOXEL_MM, TARGET_VOXEL_MM = 1.5, 3.0
AUX_SNR, TARGET_SNR = 25.0, 20.0
S0 = 1000.0  # b=0 signal of healthy white matter in the simulations: the SNRs refer to it
AUX_SEED_START, TRAIN_SEED_START, TEST_SEED_START = 100_000, 200_000, 300_000


def _fit_targets(dwi: np.ndarray, scheme: GradientScheme, mask: np.ndarray) -> dict[str, np.ndarray]:
    fit = NoddiModel(scheme).fit(dwi, mask)
    return {p: np.where(mask, getattr(fit, p), np.nan).astype(np.float32) for p in PARAMETERS}


def auxiliary_noise(target_snr: float) -> float:
    """Noise to add to the downsampled auxiliary signals so that they carry the target scans' noise.

    Averaging 2x2x2 voxels of SNR 25 leaves an SNR of ~71: a network pretrained
    on such clean inputs meets three times more noise on the target scans.
    Independent noises add in variance.
    """
    factor = int(round(TARGET_VOXEL_MM / AUX_VOXEL_MM))
    left = (S0 / AUX_SNR) ** 2 / factor**3
    return float(np.sqrt(max((S0 / target_snr) ** 2 - left, 0.0)))


@dataclass
class AuxiliarySubject:
    """One auxiliary subject at the target resolution, whatever the target scheme.

    ``coefficients`` are its normalised signals in the q-space dictionary
    (:meth:`QSpaceInterpolator.coefficients`, float32, one row per ``usable``
    voxel): any target scheme's signals are one product away.
    """

    usable: np.ndarray
    s0: np.ndarray
    coefficients: np.ndarray
    targets: dict[str, np.ndarray]


def _cache_path(seed: int, crop) -> Path | None:
    """Where an auxiliary subject is kept ($MRINETS_CACHE, default ~/.cache/mrinets; empty: not kept)."""
    root = os.environ.get("MRINETS_CACHE", str(Path.home() / ".cache" / "mrinets"))
    if not root:
        return None
    key = json.dumps([_AUX_VERSION, seed, crop and [list(c) for c in crop], AUX_SCHEME, AUX_VOXEL_MM,
                      TARGET_VOXEL_MM, AUX_SNR, S0])
    return Path(root) / "microstructure" / f"aux-{seed}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.npz"


_AUX_VERSION = 1  # bump when the simulation, fit or interpolation of auxiliary subjects changes


def auxiliary_subject(seed: int, *, crop=None) -> AuxiliarySubject:
    """Simulate, downsample, fit and project one auxiliary subject (kept on disk: every scheme reuses it)."""
    path = _cache_path(seed, crop)
    if path is not None and path.exists():
        with np.load(path) as f:
            return AuxiliarySubject(f["usable"], f["s0"], f["coefficients"], {p: f[p] for p in PARAMETERS})
    start = time.perf_counter()
    scheme = GradientScheme.from_dipy(AUX_SCHEME)
    truth = make_truth(seed, voxel_mm=AUX_VOXEL_MM, population="auxiliary", crop=crop)
    dwi = simulate_dwi(truth, scheme, snr=AUX_SNR, rng=np.random.default_rng([seed, 11]), s0=S0)
    factor = int(round(TARGET_VOXEL_MM / AUX_VOXEL_MM))
    dwi = block_average(dwi, factor)
    mask = block_average(truth.mask.astype(np.float32), factor) > 0.5
    targets = _fit_targets(dwi, scheme, mask)
    ratio, usable = normalise_dwi(dwi, scheme, mask)
    full = np.ones((int(usable.sum()), scheme.n), np.float32)
    full[:, ~scheme.b0_mask] = ratio[usable]
    coefficients = QSpaceInterpolator(scheme, scheme).coefficients(full).astype(np.float32)
    subject = AuxiliarySubject(usable, dwi[..., scheme.b0_mask].mean(axis=-1).astype(np.float32), coefficients,
                               targets)
    if path is not None:
        try:
            from mrinets.io.output import atomic_path

            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.savez(f, usable=usable, s0=subject.s0, coefficients=coefficients, **targets)
        except (OSError, OutputError) as exc:  # a read-only or full cache only costs time
            log.info("auxiliary subject %d not kept (%s)", seed, exc)
    log.info("auxiliary subject %d simulated in %.1f s", seed, time.perf_counter() - start)
    return subject


def auxiliary_set(seed: int, target: GradientScheme, *, crop=None, target_snr: float | None = TARGET_SNR
                  ) -> TrainingSet:
    """One auxiliary subject as pretraining samples on the ``target`` scheme.

    With ``target_snr`` (default: the target scans' SNR) the interpolated
    signals are re-acquired with the noise the target scans carry
    (:func:`auxiliary_noise`); ``None`` keeps them as interpolated.
    """
    subject = auxiliary_subject(seed, crop=crop)
    usable = subject.usable
    moved = QSpaceInterpolator(GradientScheme.from_dipy(AUX_SCHEME), target).synthesise(subject.coefficients)
    ratio = np.zeros((*usable.shape, int((~target.b0_mask).sum())), np.float32)
    ratio[usable] = moved[:, ~target.b0_mask]
    if target_snr is not None:
        ratio, usable = reacquire(ratio, usable, subject.s0, target, auxiliary_noise(target_snr),
                                  np.random.default_rng([seed, 17]))
    return training_set(ratio, usable, subject.targets)


@dataclass
class TargetSubject:
    """A target-population subject: its low-quality scan, the full scan's fit, and the truth."""

    seed: int
    lq_dwi: np.ndarray
    lq_scheme: GradientScheme
    mask: np.ndarray
    tissue: np.ndarray
    truth: dict[str, np.ndarray]
    hq_fit: dict[str, np.ndarray] | None
    affine: np.ndarray
    hq_snr: float = TARGET_SNR

    def samples(self) -> TrainingSet:
        """Fine-tuning samples: low-quality patches, full-scan fit as targets."""
        ratio, usable = normalise_dwi(self.lq_dwi, self.lq_scheme, self.mask)
        return training_set(ratio, usable, self.hq_fit)


def target_subject(seed: int, *, crop=None, hq_snr: float | None = None) -> TargetSubject:
    """Simulate a target subject's full scan and keep the low-quality subset of its volumes.

    With ``hq_snr`` the full (training-target) scan is a separate acquisition
    at that SNR, as when training subjects get a longer, averaged research
    protocol, and the low-quality scan its own SNR-``TARGET_SNR`` acquisition.
    """
    full = GradientScheme.from_dipy(FULL_TARGET_SCHEME)
    truth = make_truth(seed, voxel_mm=TARGET_VOXEL_MM, population="target", crop=crop)
    dwi = simulate_dwi(truth, full, snr=TARGET_SNR, rng=np.random.default_rng([seed, 11]), s0=S0)
    keep = target_indices()
    hq = dwi if hq_snr is None else simulate_dwi(truth, full, snr=hq_snr, rng=np.random.default_rng([seed, 13]), s0=S0)
    hq_fit = _fit_targets(hq, full, truth.mask)
    return TargetSubject(seed=seed, lq_dwi=dwi[..., keep], lq_scheme=full.subset(keep), mask=truth.mask,
                         tissue=truth.tissue, truth={p: getattr(truth, p) for p in PARAMETERS}, hq_fit=hq_fit,
                         affine=truth.affine, hq_snr=TARGET_SNR if hq_snr is None else hq_snr)


def scheme_subject(seed: int, scheme: GradientScheme, *, crop=None, full_scan: bool = False) -> TargetSubject:
    """A target-population subject scanned on ``scheme`` (SNR ``TARGET_SNR``).

    With ``full_scan`` the subject also gets a separate research acquisition
    on the auxiliary 3-shell scheme (193 volumes, same SNR) whose fit is the
    fine-tuning target, as target subjects with a full scan give in the
    paper; without, it is held-out data scored against the truth only.
    """
    truth = make_truth(seed, voxel_mm=TARGET_VOXEL_MM, population="target", crop=crop)
    dwi = simulate_dwi(truth, scheme, snr=TARGET_SNR, rng=np.random.default_rng([seed, 11]), s0=S0)
    hq_fit = None
    if full_scan:
        full = GradientScheme.from_dipy(AUX_SCHEME)
        hq = simulate_dwi(truth, full, snr=TARGET_SNR, rng=np.random.default_rng([seed, 13]), s0=S0)
        hq_fit = _fit_targets(hq, full, truth.mask)
    return TargetSubject(seed=seed, lq_dwi=dwi, lq_scheme=scheme, mask=truth.mask, tissue=truth.tissue,
                         truth={p: getattr(truth, p) for p in PARAMETERS}, hq_fit=hq_fit, affine=truth.affine)


def score(maps: dict[str, np.ndarray], subject: TargetSubject) -> dict[str, float]:
    """Mean absolute errors in the grey and white matter against the truth and against the full-scan fit."""
    tissue = subject.mask & (subject.tissue >= 2)
    out = {}
    for p in PARAMETERS:
        out[f"mae_{p}"] = float(np.mean(np.abs(maps[p][tissue] - subject.truth[p][tissue])))
        if subject.hq_fit is not None:
            out[f"mae_hq_{p}"] = float(np.nanmean(np.abs(maps[p][tissue] - subject.hq_fit[p][tissue])))
    out["mae_mean"] = float(np.mean([out[f"mae_{p}"] for p in PARAMETERS]))
    return out


def fit_scores(subject: TargetSubject) -> dict[str, float]:
    """The reference fitter run on the same low-quality scan, scored like the network."""
    maps = _fit_targets(subject.lq_dwi, subject.lq_scheme, subject.mask)
    return score({p: np.nan_to_num(m) for p, m in maps.items()}, subject)


def pretrain(n_subjects: int, fit: FitConfig, *, seed_start: int = AUX_SEED_START, net_config: NetConfig | None = None,
             crop=None, target_snr: float | None = TARGET_SNR) -> tuple[MicrostructureModel, dict]:
    """Pretrain on ``n_subjects`` auxiliary phantoms brought to the target scheme and noise (:func:`auxiliary_set`)."""
    net_config = net_config or NetConfig(scheme=target_scheme().to_dict())
    scheme = net_config.gradient_scheme
    sets = [auxiliary_set(seed_start + i, scheme, crop=crop, target_snr=target_snr)
            for i in _progress(range(n_subjects), "auxiliary")]
    data = concatenate(sets)
    del sets  # one copy of the patches less while training (180-volume schemes: 1.5 GB per copy)
    net, report = train_network(data, net_config, fit)
    report.update(stage="pretrain", subjects=n_subjects, seed_start=seed_start, target_snr=target_snr,
                  crop=[list(c) for c in crop] if crop else None)
    return MicrostructureModel(net, net_config, {"pretrain": report}), report


def rehearsal_set(model: MicrostructureModel, n_subjects: int) -> TrainingSet:
    """The first ``n_subjects`` of the auxiliary subjects ``model`` was pretrained on, simulated again."""
    if "pretrain" not in model.card:
        raise ArgumentError("rehearsal", "the initial weights were not pretrained (their card has no pretraining)")
    report = model.card["pretrain"]
    n = min(n_subjects, report["subjects"])
    crop = tuple(tuple(c) for c in report["crop"]) if report.get("crop") else None
    return concatenate([auxiliary_set(report["seed_start"] + i, model.config.gradient_scheme, crop=crop,
                                      target_snr=report.get("target_snr", TARGET_SNR))
                        for i in _progress(range(n), "rehearsal")])


def finetune(subjects: list[TargetSubject], fit: FitConfig, *, init: MicrostructureModel | None = None,
             rehearsal: TrainingSet | None = None) -> tuple[MicrostructureModel, dict]:
    """Fine-tune ``init`` (or train from scratch) on target subjects' low-quality scans and full-scan fits.

    The subjects' low-quality scheme must be the network's (:func:`target_subject` for the default
    network, :func:`scheme_subject` with ``full_scan=True`` for another).

    With ``fit.rehearsal`` > 0, ``rehearsal`` (see :func:`rehearsal_set`)
    supplies the pretraining samples mixed into fine-tuning.
    """
    net_config = init.config if init is not None else NetConfig(scheme=target_scheme().to_dict())
    for s in subjects:
        if not s.lq_scheme.same_as(net_config.gradient_scheme):
            raise ArgumentError(f"subject {s.seed}", "its low-quality scheme is not the network's")
    net, report = train_network(concatenate([s.samples() for s in subjects]), net_config, fit,
                                init=init.net if init is not None else None, rehearsal=rehearsal)
    report.update(stage="finetune" if init is not None else "scratch", subjects=len(subjects),
                  seeds=[s.seed for s in subjects], full_scan_snr=subjects[0].hq_snr, anchor=fit.anchor,
                  rehearsal=fit.rehearsal)
    card = {**(init.card if init is not None else {}), report["stage"]: report}
    return MicrostructureModel(net, net_config, card), report


def evaluate(model: MicrostructureModel, subjects: list[TargetSubject], *, device: str = "auto") -> dict:
    """Per-subject and mean errors of the network on held-out subjects."""
    rows = []
    for s in subjects:
        ratio, usable = normalise_dwi(s.lq_dwi, s.lq_scheme, s.mask)
        if not s.lq_scheme.same_as(model.scheme):
            ratio = interpolate_ratios(ratio, usable, s.lq_scheme, model.scheme)
        maps = predict_ratios(model.net, ratio, usable, patch=model.config.patch, device=device)
        rows.append({"seed": s.seed, **score(maps, s)})
    return {"subjects": rows, **_mean_rows(rows)}


def evaluate_fit(subjects: list[TargetSubject]) -> dict:
    """The reference fitter on the same low-quality scans."""
    rows = [{"seed": s.seed, **fit_scores(s)} for s in subjects]
    return {"subjects": rows, **_mean_rows(rows)}


def _mean_rows(rows: list[dict]) -> dict:
    keys = [k for k in rows[0] if k != "seed"]
    return {k: round(float(np.mean([r[k] for r in rows])), 5) for k in keys}


def _progress(items, label: str):
    from rich.progress import track

    return track(items, description=f"{label} subjects", transient=True, disable=not log.isEnabledFor(logging.INFO))
