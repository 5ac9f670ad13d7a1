"""Low-field pipeline: 64 mT scan -> synthetic 3 T image (LoHiResGAN, Islam et al. 2023) and its measures.

``predict`` resamples the scan onto the networks' 2 mm working grid (its own
axes), scales intensities by the brain's 99.5th percentile, translates it
axial slice by axial slice (neighbouring slices as channels) and writes the
synthetic image on the working grid and on the input's grid, a JSON/CSV of
measures (PIQE before and after, tissue and regional volumes of both) and a QC
picture. ``train`` draws paired phantoms (:mod:`mrinets.data.phantoms.lowfield`)
and trains one of five models; ``evaluate`` scores models on held-out pairs.

References
----------
Islam KT, Zhong S, Zakavi P, et al. Improving portable low-field MRI image
quality through image-to-image translation using paired low- and high-field
images. Sci Rep 2023;13:21183.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mrinets.data.phantoms.lowfield import (CONTRASTS, HELD_OUT_SEED, WORK_MM, LowFieldPair, make_lowfield_pair,
                                            pair_from_t1)
from mrinets.errors import ArgumentError
from mrinets.io import Image, OutputStage, load, save, write_json
from mrinets.io.nifti import from_array
from mrinets.io.tables import csv_text
from mrinets.metrics.image import nrmse, piqe_volume, psnr, ssim
from mrinets.metrics.morphometry import abs_percent_difference, brain_mask, classify_tissue, icc, tissue_volumes
from mrinets.physics.sampling import affine_resample, resample_to_voxel_size
from mrinets.pipelines.lowfield.model import (
    MODELS,
    SliceData,
    TrainConfig,
    build_generator,
    train_model,
    translate_volume,
)

__all__ = [
    "CONTRASTS",
    "check_contrast",
    "MODELS",
    "OUTPUT_NAMES",
    "WORK_MM",
    "LowFieldModel",
    "LowFieldResult",
    "TrainConfig",
    "csv_text",
    "default_weights",
    "evaluate",
    "evaluate_pairs",
    "load_model",
    "phantom_pairs",
    "predict",
    "predict_and_save",
    "save_weights",
    "train",
    "translate_volume",
]

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"
OUTPUT_NAMES = {
    "synthetic": "synthetic_3t.nii.gz",
    "synthetic_work": "synthetic_3t_work.nii.gz",
    "lowfield_work": "lowfield_work.nii.gz",
    "mask": "brain_mask_work.nii.gz",
    "measures": "measures.json",
    "table": "measures.csv",
    "qc": "qc_lowfield.png",
}


def default_weights(contrast: str) -> Path:
    return WEIGHTS_DIR / f"lowfield_{contrast}.pt"


@dataclass
class LowFieldModel:
    """A trained generator, what rebuilds it, and its card."""

    generator: torch.nn.Module
    spec: dict
    context: int
    contrast: str
    card: dict = field(default_factory=dict)


def save_weights(model: LowFieldModel, path: str | Path) -> Path:
    """State dict plus plain-type rebuild info (loadable with ``weights_only=True``)."""
    from mrinets.io.output import atomic_path

    state = {"state_dict": model.generator.state_dict(), "spec": model.spec, "context": model.context,
             "contrast": model.contrast, "card": model.card}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_model(path: str | Path | None = None, contrast: str = "t1") -> LowFieldModel:
    """Weights from ``mrinets lowfield train`` (default: the shipped ones for ``contrast``)."""
    from mrinets.training.engine import read_weights

    path = Path(path) if path else default_weights(contrast)
    state = read_weights(path)
    try:
        generator = build_generator(dict(state["spec"]))
        generator.load_state_dict(state["state_dict"])
        model = LowFieldModel(generator=generator.eval(), spec=dict(state["spec"]), context=int(state["context"]),
                              contrast=str(state["contrast"]), card=dict(state.get("card", {})))
    except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as exc:
        raise ArgumentError("--weights", f"{path} is not an mrinets low-field weights file "
                                         f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if model.contrast != contrast:
        raise ArgumentError("--contrast", f"{contrast} given but {path.name} was trained on {model.contrast}")
    return model


def _to_work_grid(image: Image, work_mm: float) -> tuple[np.ndarray, np.ndarray]:
    from scipy import ndimage

    voxel = image.voxel_size
    sigma = np.sqrt(np.clip((work_mm / voxel) ** 2 - 1.0, 0, None)) / 2.3548
    data = ndimage.gaussian_filter(np.clip(image.data.astype(np.float32), 0, None), sigma)
    return resample_to_voxel_size(data, image.affine, (work_mm,) * 3, order=1)


def normalise(volume: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float]:
    """Scale so the brain's 99.5th percentile is 1 (the intensity unit the networks learned)."""
    values = volume[mask] if mask.any() else volume[volume > 0]
    scale = float(np.percentile(values, 99.5)) if values.size else 1.0
    scale = scale if scale > 0 else 1.0
    return (volume / scale).astype(np.float32), scale


@dataclass
class LowFieldResult:
    """Synthetic 3 T image (working grid and input grid) and measures of one scan."""

    synthetic: np.ndarray
    synthetic_work: np.ndarray
    lowfield_work: np.ndarray
    mask_work: np.ndarray
    work_affine: np.ndarray
    reference: Image
    measures: dict

    def save(self, outdir: str | Path, *, qc: bool = True) -> list[Path]:
        """Write the images, measures (JSON and CSV) and a QC picture, all or nothing."""
        names = OUTPUT_NAMES
        work = from_array(self.synthetic_work, self.work_affine)
        with OutputStage(outdir) as stage:
            save(self.synthetic, stage.path(names["synthetic"]), like=self.reference)
            save(self.synthetic_work, stage.path(names["synthetic_work"]), like=work)
            save(self.lowfield_work, stage.path(names["lowfield_work"]), like=work)
            save(self.mask_work.astype(np.uint8), stage.path(names["mask"]), like=work, dtype=np.uint8)
            write_json(stage.path(names["measures"]), self.measures)
            stage.path(names["table"]).write_text(csv_text(_measure_rows(self.measures)), encoding="utf-8")
            if qc:
                from mrinets.report.lowfield import side_by_side

                side_by_side({"64 mT input": self.lowfield_work, "synthetic 3 T": self.synthetic_work},
                             stage.path(names["qc"]), voxel_mm=WORK_MM,
                             title=f"{self.measures['input']} ({self.measures['contrast']})")
            return [stage.final(n) for n in stage.names]


def _measure_rows(measures: dict) -> list[dict]:
    rows = [{"measure": "piqe", "lowfield": measures["piqe"]["lowfield"], "synthetic": measures["piqe"]["synthetic"],
             "unit": "score (0 best)"}]
    for name, value in measures["volumes_ml"]["synthetic"].items():
        rows.append({"measure": f"volume_{name}", "lowfield": measures["volumes_ml"]["lowfield"][name],
                     "synthetic": value, "unit": "ml"})
    return rows


def check_contrast(contrast: str) -> None:
    """Refuse (under ``--contrast``) a contrast no weights are made for."""
    if contrast not in CONTRASTS:
        raise ArgumentError("--contrast", f"must be one of {', '.join(CONTRASTS)}, got {contrast!r}")


@functools.lru_cache(maxsize=2)
def _cached_model(weights: str | None, contrast: str) -> LowFieldModel:
    return load_model(weights, contrast)


def predict_and_save(image_path: str | Path, outdir: str | Path, *, contrast: str = "t1", weights: str | None = None,
                     device: str = "auto", qc: bool = True) -> list[Path]:
    """Load one scan, :func:`predict`, save: one subject of a batch (model loaded once per process)."""
    check_contrast(contrast)
    image = load(image_path, ndim=3)
    return predict(image, contrast=contrast, model=_cached_model(weights, contrast), device=device).save(outdir, qc=qc)


def predict(image: Image | str | Path, *, contrast: str = "t1", model: LowFieldModel | None = None,
            weights: str | Path | None = None, device: str = "auto") -> LowFieldResult:
    """Translate one low-field scan to a synthetic 3 T image and measure both."""
    from mrinets.training.engine import resolve_device

    check_contrast(contrast)
    dev = resolve_device(device)
    if model is None:
        model = load_model(weights, contrast)
    img = image if isinstance(image, Image) else load(image, ndim=3)
    tic = time.perf_counter()
    work, work_affine = _to_work_grid(img, WORK_MM)
    if min(work.shape) < 4:
        raise ArgumentError(str(img.path or "image"), f"covers too little: {work.shape} voxels on the {WORK_MM} mm "
                                                      "working grid (at least 4 per axis)")
    mask = brain_mask(work, (WORK_MM,) * 3)
    lf, scale = normalise(work, mask)
    synthetic_work = translate_volume(model.generator, model.spec, lf, context=model.context, device=dev)
    synthetic_work = np.clip(synthetic_work, 0, None)
    t_translate = time.perf_counter() - tic
    synthetic = affine_resample(synthetic_work, work_affine, img.affine, img.spatial_shape, order=1)
    measures = {
        "input": img.name, "contrast": contrast, "working_grid_mm": WORK_MM, "input_voxel_mm": img.voxel_size.tolist(),
        "intensity_scale": scale, "weights": model.card.get("command", "custom weights"),
        "device": str(dev), "seconds_translate": round(t_translate, 2),
    }
    measures.update(_image_measures(lf, synthetic_work, mask, contrast))
    return LowFieldResult(synthetic=synthetic.astype(np.float32), synthetic_work=synthetic_work, lowfield_work=lf,
                          mask_work=mask, work_affine=work_affine,
                          reference=img if img.data.ndim == 3 else img.with_data(img.data[..., 0]), measures=measures)


def _image_measures(lf: np.ndarray, synthetic: np.ndarray, mask: np.ndarray, contrast: str) -> dict:
    out: dict = {"piqe": {"lowfield": _safe_piqe(lf, mask), "synthetic": _safe_piqe(synthetic, mask)},
                 "volumes_ml": {}}
    if mask.sum() >= 10:
        for name, vol in (("lowfield", lf), ("synthetic", synthetic)):
            labels, _ = classify_tissue(vol, mask, contrast)
            out["volumes_ml"][name] = tissue_volumes(labels, (WORK_MM,) * 3)
    else:
        out["volumes_ml"] = {"lowfield": {}, "synthetic": {}}
    return out


def _safe_piqe(volume: np.ndarray, mask: np.ndarray) -> float | None:
    try:
        return round(piqe_volume(volume, mask), 3)
    except ValueError:
        return None


# ---------------------------------------------------------------- training and evaluation


def phantom_pairs(seeds: Sequence[int], contrast: str, *, cache: str | Path | None = None,
                  quiet: bool = True) -> list[LowFieldPair]:
    """Paired phantoms for ``seeds`` (cached as ``.npz`` in ``cache`` when given: they take seconds each)."""
    from tqdm.auto import tqdm

    pairs = []
    for seed in tqdm(list(seeds), desc=f"phantoms {contrast}", disable=quiet, unit="subject"):
        path = None if cache is None else Path(cache) / f"lowfield_{contrast}_{seed}.npz"
        if path is not None and path.exists():
            z = np.load(path)
            pairs.append(LowFieldPair(lowfield=z["lowfield"], lowfield_affine=z["lowfield_affine"],
                                      lf_work=z["lf_work"], hf_work=z["hf_work"], mask_work=z["mask_work"],
                                      tissue_work=z["tissue_work"], work_affine=z["work_affine"], contrast=contrast,
                                      meta={"seed": seed}))
            continue
        pair = make_lowfield_pair(seed, contrast)
        if path is not None:
            from mrinets.io.output import atomic_path

            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, lowfield=pair.lowfield, lowfield_affine=pair.lowfield_affine, lf_work=pair.lf_work,
                         hf_work=pair.hf_work, mask_work=pair.mask_work, tissue_work=pair.tissue_work,
                         work_affine=pair.work_affine)
        pairs.append(pair)
    return pairs


def train(config: TrainConfig, *, cache: str | Path | None = None, quiet: bool = False,
          pairs: Sequence[LowFieldPair] | None = None) -> tuple[LowFieldModel, dict]:
    """Train ``config.model`` on ``config.subjects`` phantom pairs (or the given ``pairs``)."""
    if pairs is None:
        pairs = phantom_pairs(range(config.seed_start, config.seed_start + config.subjects), config.contrast,
                              cache=cache, quiet=quiet)
    data = SliceData([p.lf_work for p in pairs], [p.hf_work for p in pairs], [p.mask_work for p in pairs],
                     config.context)
    generator, spec, history = train_model(data, config, quiet=quiet)
    history["training_slices"] = len(data)
    model = LowFieldModel(generator=generator, spec=spec, context=config.context, contrast=config.contrast,
                          card={"config": config.as_dict(), "history": history})
    return model, history


def evaluate_pairs(models: dict[str, LowFieldModel], pairs: Sequence[LowFieldPair], *,
                   device: str = "cpu") -> dict:
    """Scores of each model (and of the raw low-field scan, ``lowfield``) on paired volumes.

    SSIM, PSNR and NRMSE inside the 3 T brain mask (intensities clipped to
    [0, 1], data range 1); PIQE of the brain's axial slices; tissue and
    regional volumes by the same mixture classifier in the same mask, compared
    with the 3 T scan's by absolute % difference and ICC(A,1) over subjects.
    """
    rows: dict[str, list[dict]] = {"lowfield": []}
    rows.update({name: [] for name in models})
    reference_volumes = []
    reference_piqe = []
    for pair in pairs:
        hf = np.clip(pair.hf_work, 0, 1)
        mask = pair.mask_work
        ref_labels, _ = classify_tissue(hf, mask, pair.contrast)
        ref_vol = tissue_volumes(ref_labels, (WORK_MM,) * 3)
        reference_volumes.append(ref_vol)
        reference_piqe.append(piqe_volume(hf, mask))
        images = {"lowfield": pair.lf_work}
        for name, model in models.items():
            tic = time.perf_counter()
            images[name] = translate_volume(model.generator, model.spec, pair.lf_work, context=model.context,
                                            device=device)
            images[name + ":seconds"] = time.perf_counter() - tic
        for name in rows:
            img = np.clip(images[name], 0, 1)
            labels, _ = classify_tissue(img, mask, pair.contrast)
            vol = tissue_volumes(labels, (WORK_MM,) * 3)
            rows[name].append({
                "ssim": ssim(img, hf, data_range=1.0, mask=mask), "psnr": psnr(img, hf, data_range=1.0, mask=mask),
                "nrmse": nrmse(img, hf, mask=mask), "piqe": piqe_volume(img, mask), "volumes": vol,
                "abs_pct_diff": {k: abs_percent_difference(v, ref_vol[k]) for k, v in vol.items()},
                "seconds": images.get(name + ":seconds"),
            })
    summary: dict = {"subjects": len(pairs), "piqe_3t": float(np.mean(reference_piqe)), "methods": {}}
    for name, items in rows.items():
        keys = list(items[0]["volumes"])
        summary["methods"][name] = {
            **{m: float(np.mean([r[m] for r in items])) for m in ("ssim", "psnr", "nrmse", "piqe")},
            **{f"{m}_sd": float(np.std([r[m] for r in items])) for m in ("ssim", "psnr", "nrmse", "piqe")},
            "abs_pct_diff": {k: float(np.mean([r["abs_pct_diff"][k] for r in items])) for k in keys},
            "icc": {k: icc([r["volumes"][k] for r in items], [v[k] for v in reference_volumes]) for k in keys},
            "mean_abs_pct_diff_regional": float(np.mean([np.mean([r["abs_pct_diff"][k] for k in keys
                                                                  if k not in ("csf", "gm", "wm")])
                                                         for r in items])),
        }
    summary["per_subject"] = rows
    return summary


def evaluate(models: dict[str, LowFieldModel], *, contrast: str = "t1", subjects: int = 4,
             cache: str | Path | None = None, real_t1: Image | str | Path | None = None, device: str = "cpu",
             quiet: bool = True) -> tuple[dict, list[LowFieldPair]]:
    """Score ``models`` on held-out phantom pairs (seeds from 900000) and, for T1, on a real T1 degraded by our
    own model."""
    pairs = phantom_pairs(range(HELD_OUT_SEED, HELD_OUT_SEED + subjects), contrast, cache=cache, quiet=quiet)
    scores = evaluate_pairs(models, pairs, device=device)
    if real_t1 is not None:
        if contrast != "t1":
            raise ArgumentError("--real-t1", "a real T1 pairs only with --contrast t1")
        image = real_t1 if isinstance(real_t1, Image) else load(real_t1, ndim=3)
        real = pair_from_t1(image.data, image.affine, seed=HELD_OUT_SEED)
        scores["real_t1"] = {"file": str(image.path), **evaluate_pairs(models, [real], device=device)}
        scores["real_t1"].pop("per_subject")
        pairs = [*pairs, real]
    return scores, pairs
