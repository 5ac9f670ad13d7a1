"""NODDI microstructure from few-gradient diffusion MRI by a network pretrained on auxiliary data.

Faces: :func:`predict` (one DWI -> :class:`MicrostructureResult` of ICVF,
ISOVF, ODI), :func:`fit_reference` (the AMICO-style linear fit that makes
high-quality training targets), and in :mod:`.experiment` the pretraining on
an auxiliary dataset (spatially downsampled, interpolated in q-space to the
target scheme), the fine-tuning on K target subjects and the evaluation.

References
----------
Li Y, Qin Y, Liu Z, Ye C. Pretraining improves deep learning based tissue
microstructure estimation. CDMRI 2020, Mathematics and Visualization (2021) 173-185.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from mrinets.errors import ArgumentError, DimensionError, EmptyImageError
from mrinets.io import Image, OutputStage, check_same_grid, load, save, write_json
from mrinets.io.gradients import fsl_to_array_frame
from mrinets.physics.diffusion import GradientScheme
from mrinets.physics.diffusion.amico import NoddiModel
from mrinets.pipelines.microstructure.data import PARAMETERS, interpolate_ratios, normalise_dwi, target_scheme
from mrinets.pipelines.microstructure.model import FitConfig, NetConfig, build_network, predict_ratios
from mrinets.preprocess.mask import gre_brain_mask
from mrinets.training.engine import load_checkpoint, resolve_device

__all__ = ["PARAMETERS", "DEFAULT_WEIGHTS", "OUTPUT_NAMES", "MicrostructureConfig", "MicrostructureModel",
           "MicrostructureResult", "NetConfig", "FitConfig", "load_dwi", "load_model", "save_model", "predict",
           "fit_reference", "target_scheme", "compare_maps", "model_card_text", "predict_and_save",
           "bids_output_names", "pretrained_card_text", "evaluate", "train", "SINGLE_SHELL_NOTE"]

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "microstructure_noddi.pt"
OUTPUT_NAMES = {"icvf": "icvf.nii.gz", "isovf": "isovf.nii.gz", "odi": "odi.nii.gz", "mask": "mask.nii.gz",
                "measures": "measures.json", "qc": "qc_noddi.png"}


@dataclass
class MicrostructureConfig:
    """Options of :func:`predict` (recorded in measures.json)."""

    method: str = "network"
    weights: str | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.method not in ("network", "fit"):
            raise ArgumentError("--method", f"must be network or fit, got {self.method!r}")
        resolve_device(self.device)  # refused before the data are read


@dataclass
class MicrostructureModel:
    """A trained estimator and what rebuilds and describes it."""

    net: torch.nn.Module
    config: NetConfig
    card: dict = field(default_factory=dict)

    @property
    def scheme(self) -> GradientScheme:
        return self.config.gradient_scheme


def save_model(model: MicrostructureModel, path: str | Path) -> Path:
    """Weights + network config + card in one file readable with ``torch.load(weights_only=True)``."""
    from mrinets.io.output import atomic_path

    state = {"state_dict": model.net.state_dict(), "net_config": asdict(model.config), "card": model.card}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_model(path: str | Path | None = None) -> MicrostructureModel:
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.exists():
        raise ArgumentError(str(path), "weights file not found")
    state = load_checkpoint(path)
    try:
        config = NetConfig.from_dict(state["net_config"])
        net = build_network(config)
        net.load_state_dict(state["state_dict"])
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise ArgumentError(str(path), f"not an mrinets microstructure weights file ({str(exc).splitlines()[0]})")
    return MicrostructureModel(net.eval(), config, state.get("card", {}))


def load_dwi(dwi: str | Path, bval: str | Path, bvec: str | Path, *, mask: str | Path | None = None
             ) -> tuple[Image, GradientScheme, Image | None]:
    """Read and check a DWI, its FSL gradient table (carried into the array frame) and an optional mask."""
    image = load(dwi, ndim=4)
    scheme = GradientScheme.from_files(bval, bvec, n_volumes=image.shape[3])
    if image.source is not None:
        scheme = GradientScheme(scheme.bvals, fsl_to_array_frame(scheme.bvecs, image.source.affine,
                                                                 image.source.to_ras))
    if not np.any(image.data[..., scheme.b0_mask] > 0):
        raise EmptyImageError(dwi, "every b=0 volume is zero (or negative): the signal cannot be normalised by S0")
    if int((~scheme.b0_mask).sum()) < 6:
        raise DimensionError(bval, f"has {int((~scheme.b0_mask).sum())} diffusion-weighted volumes; NODDI needs 6 "
                                   "or more")
    mask_image = None
    if mask is not None:
        mask_image = load(mask, ndim=3, allow_empty=True)
        check_same_grid(image, mask_image)
        if not np.any(mask_image.data > 0):
            raise ArgumentError(str(mask), "mask is empty")
    return image, scheme, mask_image


@functools.lru_cache(maxsize=8)  # every network of the registry
def _cached_model(weights: str | None) -> MicrostructureModel:
    return load_model(weights)


def predict_and_save(dwi: str | Path, bval: str | Path, bvec: str | Path, outdir: str | Path, *,
                     config: MicrostructureConfig, mask: str | Path | None = None, qc: bool = True,
                     names: dict[str, str] | None = None) -> list[Path]:
    """Load one DWI, :func:`predict`, save: one subject of a batch (the model is loaded once per process)."""
    image, scheme, mask_image = load_dwi(dwi, bval, bvec, mask=mask)
    return predict(image, scheme, mask_image, config=config).save(outdir, qc=qc, names=names)


def bids_output_names(prefix: str) -> dict[str, str]:
    """BIDS derivative names (BEP016 style: ``<prefix>_model-NODDI_param-ICVF_dwimap.nii.gz``)."""
    maps = {p: f"{prefix}_model-NODDI_param-{p.upper()}_dwimap.nii.gz" for p in PARAMETERS}
    return {**maps, "mask": f"{prefix}_desc-brain_mask.nii.gz", "measures": f"{prefix}_model-NODDI_measures.json",
            "qc": f"{prefix}_model-NODDI_desc-qc_dwimap.png"}


def _brain_mask(image: Image, scheme: GradientScheme, mask: Image | None) -> np.ndarray:
    if mask is not None:
        return mask.data > 0
    b0 = image.data[..., scheme.b0_mask].mean(axis=-1)
    return gre_brain_mask(b0, voxel_size=image.voxel_size)


@dataclass
class MicrostructureResult:
    """NODDI maps on the input grid, the mask and the measures."""

    maps: dict[str, np.ndarray]
    mask: np.ndarray
    reference: Image
    measures: dict

    def save(self, outdir: str | Path, *, qc: bool = True, names: dict[str, str] | None = None) -> list[Path]:
        """Write the three maps, the mask, measures.json and a QC PNG, all or nothing."""
        names = OUTPUT_NAMES if names is None else names
        ref = self.reference
        with OutputStage(outdir) as stage:
            for p in PARAMETERS:
                save(self.maps[p], stage.path(names[p]), like=ref)
            save(self.mask.astype(np.uint8), stage.path(names["mask"]), like=ref, dtype=np.uint8)
            write_json(stage.path(names["measures"]), self.measures)
            if qc:
                from mrinets.report import qc_png

                qc_png(Image(self.maps["icvf"], ref.affine), stage.path(names["qc"]), contours=self.mask,
                       title=f"NODDI ICVF ({self.measures['method']})", vmin=0.0, vmax=1.0, cmap="viridis",
                       colorbar_label="ICVF")
            return [stage.final(n) for n in stage.names]


def _measures(maps: dict[str, np.ndarray], mask: np.ndarray, voxel_ml: float) -> dict:
    out = {"brain_voxels": int(mask.sum()), "brain_ml": round(float(mask.sum() * voxel_ml), 2)}
    for p in PARAMETERS:
        values = maps[p][mask]
        out[f"{p}_mean"] = round(float(values.mean()), 4) if values.size else None
        out[f"{p}_median"] = round(float(np.median(values)), 4) if values.size else None
    return out


SINGLE_SHELL_NOTE = ("single shell: NODDI is ill-posed from one b-value (the intra-cellular, extra-cellular and "
                     "free-water signals trade off), expect large errors; see docs/microstructure.md")


def fit_reference(image: Image, scheme: GradientScheme, mask: Image | None = None) -> MicrostructureResult:
    """The AMICO-style NODDI fit on the full acquisition (``mrinets microstructure fit``)."""
    brain = _brain_mask(image, scheme, mask)
    start = time.perf_counter()
    fit = NoddiModel(scheme).fit(image.data, brain)
    maps = {p: np.where(brain, np.nan_to_num(getattr(fit, p)), 0.0).astype(np.float32) for p in PARAMETERS}
    measures = {"method": "fit", "fitter": "AMICO-style linear NODDI fit (mrinets)", "network": None,
                "resampled": False, "scheme_note": "model fit on the input's own scheme", "n_volumes": scheme.n,
                "shells": list(scheme.shells), "seconds": round(time.perf_counter() - start, 2),
                **_measures(maps, brain, float(np.prod(image.voxel_size)) / 1000)}
    if len(scheme.shells) == 1:
        measures["warning"] = SINGLE_SHELL_NOTE
    return MicrostructureResult(maps, brain, image.with_data(maps["icvf"]), measures)


def _fallback(image: Image, scheme: GradientScheme, mask: Image | None, reason: str) -> MicrostructureResult:
    log.warning("NODDI by the model fit: %s", reason)
    result = fit_reference(image, scheme, mask)
    result.measures["reason"] = reason
    result.measures["scheme_note"] = f"model fit: {reason}"
    return result


def _shells_text(shells) -> str:
    return "/".join(f"b{b:g}" for b in shells) or "none"


def predict(image: Image, scheme: GradientScheme, mask: Image | None = None, *,
            config: MicrostructureConfig | None = None, model: MicrostructureModel | None = None
            ) -> MicrostructureResult:
    """ICVF, ISOVF and ODI of one DWI by the nearest shipped network (or ``config.weights``, or ``model``).

    Without ``model`` or ``config.weights`` the network is chosen from the
    registry (:func:`.schemes.choose`): one whose shells match the input's,
    else one whose shells lie between the input's; where none fits, the model
    fit serves the scan (``measures["method"] == "fit"`` and
    ``measures["reason"]`` says why). When the input's directions are not the
    network's, the normalised signals are first interpolated in q-space onto
    them (:class:`~mrinets.physics.diffusion.qspace.QSpaceInterpolator`, the
    dictionary method of the pretraining) and ``measures["resampled"]`` says so.
    """
    from mrinets.pipelines.microstructure import schemes

    config = config or MicrostructureConfig()
    if config.method == "fit":
        return fit_reference(image, scheme, mask)
    start = time.perf_counter()
    if model is not None or config.weights is not None:
        model = model or _cached_model(config.weights)
        name, kind = (Path(config.weights).name if config.weights else "given model"), "given weights"
    else:
        choice = schemes.choose(scheme.shells)
        if choice is None:
            have = ", ".join(_shells_text(b for b, _ in s.shells) for s in schemes.shipped())
            return _fallback(image, scheme, mask, f"no shipped network fits shells {_shells_text(scheme.shells)} "
                                                  f"(networks for {have}; make one with `mrinets microstructure "
                                                  "pretrain --scheme-from`)")
        model, name, kind = _cached_model(str(choice.path)), choice.name, choice.kind
    brain = _brain_mask(image, scheme, mask)
    ratio, usable = normalise_dwi(image.data, scheme, brain)
    resampled = not scheme.same_as(model.scheme)
    if resampled:
        try:
            ratio = interpolate_ratios(ratio, usable, scheme, model.scheme)
        except ValueError as exc:  # the network's b-values lie beyond the input's
            return _fallback(image, scheme, mask, f"network {name} cannot serve this scan ({exc})")
    maps = predict_ratios(model.net, ratio, usable, patch=model.config.patch, device=config.device)
    note = (f"network {name} ({kind}): input ({scheme.n} volumes, shells {_shells_text(scheme.shells)}) "
            f"interpolated in q-space onto its {model.scheme.n} volumes ({_shells_text(model.scheme.shells)})"
            if resampled else f"network {name}: input scheme is the network's")
    measures = {"method": "network", "network": name, "scheme_match": kind,
                "weights": schemes.REGISTRY[name].weights if name in schemes.REGISTRY else name,
                "resampled": resampled, "scheme_note": note, "n_volumes": scheme.n, "shells": list(scheme.shells),
                "seconds": round(time.perf_counter() - start, 2),
                **_measures(maps, usable, float(np.prod(image.voxel_size)) / 1000)}
    if len(scheme.shells) == 1:
        measures["warning"] = SINGLE_SHELL_NOTE
    log.info(note)
    return MicrostructureResult(maps, usable, image.with_data(maps["icvf"]), measures)


def compare_maps(pred_dir: str | Path, ref_dir: str | Path, *, mask: str | Path | None = None) -> dict:
    """MAE, bias and Pearson correlation per parameter between two folders of NODDI maps."""
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    first = load(pred_dir / OUTPUT_NAMES["icvf"], allow_empty=True)
    mask_path = Path(mask) if mask is not None else pred_dir / OUTPUT_NAMES["mask"]
    mask_image = load(mask_path, allow_empty=True)
    check_same_grid(first, mask_image)
    inside = mask_image.data > 0
    if not inside.any():
        raise ArgumentError(str(mask_path), "mask is empty")
    scores: dict = {"voxels": int(inside.sum())}
    for p in PARAMETERS:
        a = load(pred_dir / OUTPUT_NAMES[p], allow_empty=True)
        b = load(ref_dir / OUTPUT_NAMES[p], allow_empty=True)
        check_same_grid(a, b)
        x, y = a.data[inside], b.data[inside]
        r = float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else float("nan")
        scores[p] = {"mae": round(float(np.mean(np.abs(x - y))), 5), "bias": round(float(np.mean(x - y)), 5),
                     "pearson_r": round(r, 4)}
    return scores


def _full_scan_snr(card: dict) -> str:
    stage = card.get("finetune") or card.get("scratch") or {}
    return f"{stage.get('full_scan_snr', 20):g}"


def _rehearsal_text(card: dict) -> str:
    stage = card.get("finetune", {})
    if not stage.get("rehearsal"):
        return ""
    return (f" Rehearsal: {stage['rehearsed_samples']} pretraining samples were mixed into fine-tuning"
            f" (share asked {100 * stage['rehearsal']:.0f} %).")


def _held_out_lines(card: dict, fit_label: str) -> list[str]:
    if "held_out" not in card:
        return []
    net, fit = card["held_out"]["network"], card["held_out"]["fit_on_low_quality"]
    seeds = [r["seed"] for r in net["subjects"]]
    return ["## Held-out target phantoms (grey and white matter, against the truth)", "",
            f"Seeds {seeds[0]}..{seeds[-1]}, never used in training.", "",
            "| method | MAE ICVF | MAE ISOVF | MAE ODI | mean |", "|---|---|---|---|---|",
            f"| network | {net['mae_icvf']:.4f} | {net['mae_isovf']:.4f} | {net['mae_odi']:.4f} | "
            f"{net['mae_mean']:.4f} |",
            f"| {fit_label} | {fit['mae_icvf']:.4f} | {fit['mae_isovf']:.4f} | "
            f"{fit['mae_odi']:.4f} | {fit['mae_mean']:.4f} |", ""]


def pretrained_card_text(card: dict, filename: str) -> str:
    """The Markdown model card of a network pretrained for one scheme (``pretrain --scheme``/``--scheme-from``)."""
    scheme, rep = card.get("scheme", {}), card["pretrain"]
    shells = "/".join(f"b{b:g}" for b in scheme.get("shells", []))
    crop = f" Phantoms cropped to the MNI box {scheme['crop']}." if scheme.get("crop") else ""
    lines = [f"# mrinets NODDI estimator for {shells} ({filename})", "",
             "MESC-style network (unfolded gated sparse coding over a separable spatial-angular dictionary)",
             f"reading 3x3x3 patches of S/S0 on the {scheme.get('n_volumes')} volumes of {scheme.get('label')}",
             "and estimating ICVF, ISOVF and ODI of the centre voxel, "
             + ("pretrained on auxiliary data brought to the scheme, then fine-tuned on target subjects (Li et al. "
                "2020)." if "finetune" in card else "pretrained only (no target subjects with a full scan to "
                "fine-tune on)."), "",
             "## Commands that produced these weights", ""]
    for stage in ("pretrain", "finetune"):
        if stage in card:
            r = card[stage]
            lines += [f"- {stage}: `{r.get('command', '')}` ({r['samples']} samples, best epoch {r['best_epoch']} "
                      f"of {r['epochs_run']}, validation MAE against the fitted targets: ICVF {r['val_mae_icvf']}, "
                      f"ISOVF {r['val_mae_isovf']}, ODI {r['val_mae_odi']})"]
    lines += ["",
             "## Data", "",
             f"{rep['subjects']} `mrinets phantom microstructure` auxiliary subjects (seeds from {rep['seed_start']}):",
             "healthy phantoms at 1.5 mm on DIPY's gtab_3shell (SNR 25), averaged into 3 mm voxels, fitted on",
             "their own scheme (targets), interpolated in q-space onto this scheme and re-acquired with SNR-20",
             f"noise (inputs).{crop}"
             + (f" Fine-tuning: {card['finetune']['subjects']} target-population phantoms at 3 mm scanned on this "
                "scheme (SNR 20, inputs) and on DIPY's gtab_3shell (193 volumes, SNR 20, a separate research scan "
                "whose fit is the target)." if "finetune" in card else ""), "",
             "## Use", "",
             f"`mrinets microstructure predict DWI.nii.gz --bval B --bvec V --weights {filename} --out DIR`;",
             "input directions other than these are interpolated in q-space onto them. Loaded with",
             "`torch.load(..., weights_only=True)`.", ""]
    lines += _held_out_lines(card, "model fit, same scans")
    if len(scheme.get("shells", [])) == 1:
        lines += ["Single shell: NODDI is ill-posed from one b-value; read the errors above before using the maps.",
                  ""]
    return "\n".join(lines)


def model_card_text(card: dict) -> str:
    """The Markdown model card of a fine-tuned (or scratch-trained) estimator."""
    lines = ["# mrinets NODDI estimator (microstructure_noddi.pt)", "",
             "MESC-style network (unfolded gated sparse coding over a separable spatial-angular dictionary)",
             "reading 3x3x3 patches of S/S0 on a 31-volume scheme (b=0, 12 directions at b=1500, 18 at b=2500,",
             "thinned from DIPY's gtab_isbi2013_2shell) and estimating ICVF, ISOVF and ODI of the centre voxel.",
             "", "## Commands that produced these weights", ""]
    for stage in ("pretrain", "finetune", "scratch"):
        if stage in card:
            rep = card[stage]
            lines += [f"- {stage}: `{rep.get('command', '')}` ({rep['samples']} samples, best epoch "
                      f"{rep['best_epoch']} of {rep['epochs_run']}, validation MAE against the fitted targets: ICVF "
                      f"{rep['val_mae_icvf']}, "
                      f"ISOVF {rep['val_mae_isovf']}, ODI {rep['val_mae_odi']})"]
    lines += ["", "## Data", "",
              "`mrinets phantom microstructure` subjects: NODDI maps on the MNI152 tissue maps under a smooth",
              "deformation, tract-shaped fibre directions, Rician noise. Pretraining: healthy auxiliary phantoms at",
              "1.5 mm on DIPY's gtab_3shell (SNR 25), averaged into 3 mm voxels, fitted on their own scheme",
              "(targets) and interpolated in q-space onto the 31-volume scheme, then re-acquired with the target",
              "scans' noise (inputs; not with `--clean-inputs`). Fine-tuning: clinical",
              "target phantoms at 3 mm (SNR 20), inputs the 31-volume subset, targets the reference fit of the",
              f"full 64-volume scan (SNR {_full_scan_snr(card)}).{_rehearsal_text(card)}", "",
              "## Use", "",
              "`mrinets microstructure predict DWI.nii.gz --bval B --bvec V --out DIR` (this file is the default).",
              "Another scheme is interpolated in q-space onto the network's first. Loaded with",
              "`torch.load(..., weights_only=True)`.", ""]
    lines += _held_out_lines(card, "reference fit, same 31 volumes")
    return "\n".join(lines)


def evaluate(pred_dir: str | Path, ref_dir: str | Path, *, mask: str | Path | None = None) -> dict:
    """MAE, bias and Pearson r per parameter of predicted maps against reference maps (:func:`compare_maps`)."""
    return compare_maps(pred_dir, ref_dir, mask=mask)


def train(scheme: GradientScheme | None = None, *, subjects: int = 6, fit: FitConfig | None = None, crop=None,
          test_subjects: int = 0, init: MicrostructureModel | None = None,
          target_subjects: int = 0) -> MicrostructureModel:
    """A network for ``scheme`` (default: the shipped b1500/b2500 one), as the paper makes one for a new scheme.

    Pretrained on ``subjects`` auxiliary phantoms brought to ``scheme``
    (:func:`.experiment.pretrain`), or starting from ``init``; with
    ``target_subjects`` > 0 then fine-tuned on that many target phantoms (their
    scans must be on ``scheme``, i.e. the default scheme only). With
    ``test_subjects`` the card gets held-out errors on phantoms scanned on
    ``scheme`` beside the model fit's.
    """
    from mrinets.pipelines.microstructure import experiment

    fit = fit or FitConfig()
    scheme = scheme or target_scheme()
    model = init
    if model is None:
        model, _ = experiment.pretrain(subjects, fit, crop=crop, net_config=NetConfig(scheme=scheme.to_dict()))
    if target_subjects:
        train_set = [experiment.target_subject(experiment.TRAIN_SEED_START + i, crop=crop)
                     for i in range(target_subjects)]
        model, _ = experiment.finetune(train_set, fit, init=model)
    model.card["scheme"] = {"label": "given scheme", "shells": list(scheme.shells), "n_volumes": scheme.n,
                            "crop": [list(c) for c in crop] if crop else None}
    if test_subjects:
        test = [experiment.scheme_subject(experiment.TEST_SEED_START + i, scheme, crop=crop)
                for i in range(test_subjects)]
        model.card["held_out"] = {"network": experiment.evaluate(model, test, device=fit.device),
                                  "fit_on_low_quality": experiment.evaluate_fit(test)}
    return model
