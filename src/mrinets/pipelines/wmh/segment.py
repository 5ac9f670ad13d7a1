"""WMH on a T1: register, predict in the box, bring back, measure by region; and the classic baseline."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from mrinets.data.atlas import QUADRANT_NAMES, REGION_NAMES, mni_regions, quadrants
from mrinets.errors import ArgumentError, ConfigError
from mrinets.io import OutputStage, write_json, write_text
from mrinets.io.nifti import Image, save
from mrinets.io.tables import csv_text
from mrinets.physics.sampling import affine_resample
from mrinets.pipelines.wmh.grid import (csf_reference, from_grid, grid_masks, grid_search, grid_wm, normalise, to_grid,
                                        wm_reference)
from mrinets.pipelines.wmh.network import build_network, predict_logits
from mrinets.training.engine import read_weights

__all__ = ["WmhConfig", "ConfigError", "WmhResult", "WmhModel", "load_model", "predict", "box_logits", "baseline_grid",
           "box_mask", "pv_band", "trim_partial_volume", "grow_in_white_matter", "card_grow_min_prob", "MaskInputs",
           "mask_from", "mask_inputs", "measures_table",
           "output_names", "bids_output_names", "DEFAULT_WEIGHTS", "OUTPUT_SUFFIXES"]

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "wmh_t1.pt"
OUTPUT_SUFFIXES = {"prob": "_wmh_prob.nii.gz", "mask": "_wmh_mask.nii.gz", "regions": "_wmh_regions.nii.gz",
                   "csv": "_wmh.csv", "qc": "_wmh_qc.png"}
_LOGIT_LIMIT = 10.0
# Windows 10 slices apart along z: at 0.25 overlap the box's 72 slices hold under two 40-slice windows, so central
# slices were read near window edges (measured in docs/wmh-history.md).
PREDICT_OVERLAP = (0.25, 0.25, 0.75)
# Fewest voxels the network must be sure of (a 3 x 3 x 3 cube) before their median is trusted as the lesion level.
PV_TRIM_MIN_CORE = 27
# The least share of lesion a mask voxel's T1 must show. Just outside a lesion's half-lesion surface lie more voxels
# than just inside it, so under noise the cut that errs least lies a little past half (docs/wmh-history.md).
PV_LESION_SHARE = 0.55
# The growth (tuned on phantoms, docs/wmh-history.md): steps and reach in voxels, the least probability and template
# white-matter probability a grown voxel needs. The least probability is the network's own, on its card
# (WmhModel.grow_min_prob); GROW_MIN_PROB is that of networks taught with the default rater model.
GROW_STEPS, GROW_MIN_PROB, GROW_MIN_WM = 5, 0.01, 0.5


@dataclass
class WmhConfig:
    """Options of ``mrinets wmh predict``; a field out of range raises :class:`ConfigError` (a ValueError)."""

    weights: str | None = None
    threshold: float = 0.5
    method: str = "network"
    baseline_k: float = 3.0
    device: str = "auto"
    flip: bool = True
    pv_trim: bool = True
    # None: grow whenever the mask is trimmed (the default since growth passed its rule on fresh seeds).
    grow: bool | None = None
    # None: the network's own (WmhModel.grow_min_prob).
    grow_min_prob: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise ConfigError("threshold", f"must lie in (0, 1), got {self.threshold:g}")
        if self.method not in ("network", "baseline"):
            raise ConfigError("method", f"must be network or baseline, got {self.method!r}")
        if not self.baseline_k > 0:
            raise ConfigError("baseline_k", f"must be positive, got {self.baseline_k:g}")
        if self.grow_min_prob is not None and not 0 < self.grow_min_prob < 1:
            raise ConfigError("grow_min_prob", f"must lie in (0, 1), got {self.grow_min_prob:g}")
        if self.grow and not self.pv_trim:
            raise ConfigError("grow", "grows the trimmed mask, so it needs the partial-volume trim")
        if self.grow is None:
            self.grow = self.pv_trim


@dataclass
class WmhModel:
    """A trained network and the facts of its model card."""

    network: torch.nn.Module
    patch_size: tuple[int, int, int]
    card: dict

    @property
    def grows(self) -> bool:
        """False when the card says ``predict`` should not grow this network's mask (``mrinets wmh tune``)."""
        return bool(self.card.get("grow", True))

    @property
    def grow_min_prob(self) -> float:
        """The least probability ``predict``'s growth asks of a voxel with this network (:func:`card_grow_min_prob`)."""
        return card_grow_min_prob(self.card)


def card_grow_min_prob(card: dict) -> float:
    """The growth's least probability on a model card (``mrinets wmh train --grow-min-prob``), else ``GROW_MIN_PROB``.

    It belongs to the network: one taught with a near-hard rater model
    (``--second-temperature 0.03 --mask-thresholds``) gives 0.01 to 0.4 around
    faint dark spots of a real T1, and growing from there marks them
    (docs/wmh-history.md).
    """
    return float(card.get("grow_min_prob", GROW_MIN_PROB))


def load_model(path: str | Path | None = None) -> WmhModel:
    """Load weights saved by ``mrinets wmh train`` (``torch.load(weights_only=True)``)."""
    path = Path(path) if path else DEFAULT_WEIGHTS
    state = read_weights(path)
    try:
        network = build_network(state["channels"])
        network.load_state_dict(state["state_dict"])
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise ArgumentError("--weights", f"{path} is not an mrinets WMH weights file ({str(exc).splitlines()[0]})")
    return WmhModel(network=network.eval(), patch_size=tuple(state["patch_size"]), card=dict(state.get("card", {})))


def baseline_grid(box: np.ndarray, k: float) -> np.ndarray:
    """Classic rule in the box: white-matter voxels darker than the white-matter median by ``k`` robust SDs.

    The white matter is the template's (probability > 0.5, so the rule reaches
    periventricular tissue); its distribution is read from the core (> 0.95)
    with the median and 1.4826 x MAD, which lesions barely move.
    """
    brain, core = grid_masks()
    wm = grid_wm() > 0.5
    values = box[core]
    median = float(np.median(values))
    sd = 1.4826 * float(np.median(np.abs(values - median)))
    return ((box < median - k * sd) & wm & brain).astype(np.float32)


@dataclass
class WmhResult:
    """Maps on the input grid (RAS arrays) and the measures of one subject."""

    name: str
    prob: np.ndarray
    mask: np.ndarray
    regions: np.ndarray
    measures: dict
    reference: Image = field(repr=False)

    def save_into(self, stage: OutputStage, *, qc: bool = True, names: dict[str, str] | None = None) -> None:
        """Write this subject's files into an open :class:`OutputStage`.

        ``names`` maps each output (keys of :data:`OUTPUT_SUFFIXES`, plus
        ``json``) to a file name; default ``<name>_wmh_prob.nii.gz`` and so on.
        """
        names = names or output_names(self.name)
        ref = self.reference
        save(self.prob, stage.path(names["prob"]), like=ref, dtype=np.float32)
        save(self.mask.astype(np.uint8), stage.path(names["mask"]), like=ref, dtype=np.uint8)
        save(self.regions, stage.path(names["regions"]), like=ref, dtype=np.uint8)
        write_text(stage.path(names["csv"]), measures_table([self.measures]))
        write_json(stage.path(names["json"]), self.measures)
        if qc:
            from mrinets.report import qc_png

            qc_png(ref, stage.path(names["qc"]), overlay=self.prob, contours=self.mask, overlay_vmin=0.0,
                   overlay_vmax=1.0, overlay_label="WMH probability (contour: mask)",
                   title=f"{self.name}: WMH {self.measures['wmh_total_ml']:.1f} mL")

    def save(self, outdir: str | Path, *, qc: bool = True, names: dict[str, str] | None = None) -> list[Path]:
        """Write the maps, measures (CSV and JSON) and QC picture into ``outdir``, all or nothing."""
        with OutputStage(outdir) as stage:
            self.save_into(stage, qc=qc, names=names)
            return [stage.final(n) for n in stage.names]


def output_names(name: str) -> dict[str, str]:
    """Default file names of one subject's outputs."""
    return {**{k: name + v for k, v in OUTPUT_SUFFIXES.items()}, "json": name + "_wmh.json"}


def bids_output_names(prefix: str) -> dict[str, str]:
    """BIDS-derivative names (``label-WMH_probseg``, ``_mask``, ``desc-wmhregions_dseg``) for ``prefix``."""
    return {"prob": f"{prefix}_space-T1w_label-WMH_probseg.nii.gz", "mask": f"{prefix}_space-T1w_label-WMH_mask.nii.gz",
            "regions": f"{prefix}_space-T1w_desc-wmhregions_dseg.nii.gz", "csv": f"{prefix}_desc-wmh_measures.csv",
            "json": f"{prefix}_desc-wmh_measures.json", "qc": f"{prefix}_desc-wmh_qc.png"}


def measures_table(rows: list[dict]) -> str:
    """CSV text, one row per subject, columns in a fixed order."""
    return csv_text(rows, float_format=".6g")


def _measures(name: str, mask: np.ndarray, regions: np.ndarray, quadrant: np.ndarray, voxel_ml: float,
              etiv_ml: float, score: float, band: tuple[float, float] | None, grown_ml: float, kind: str,
              brain_mask: str) -> dict:
    # The trim's band (T1 over the template's white-matter median, its sides towards CSF and towards white matter;
    # NaN: not trimmed) and the volume the growth added (NaN: not grown) tell QC whether each acted.
    lower, upper = band or (float("nan"), float("nan"))
    row: dict = {"subject": name, "input_kind": kind, "brain_mask": brain_mask, "etiv_ml": etiv_ml,
                 "registration_score": score, "pv_trim_upper": upper, "pv_trim_lower": lower,
                 "grow_added_ml": grown_ml}
    total = float(mask.sum()) * voxel_ml
    row["wmh_total_ml"] = total
    row["wmh_total_frac_etiv"] = total / etiv_ml
    for i, region in enumerate(REGION_NAMES, start=1):
        volume = float((mask & (regions == i)).sum()) * voxel_ml
        row[f"wmh_{region}_ml"] = volume
        row[f"wmh_{region}_frac_etiv"] = volume / etiv_ml
        row[f"region_{region}_ml"] = float((regions == i).sum()) * voxel_ml
    for i, quad in enumerate(QUADRANT_NAMES):
        volume = float((mask & (quadrant == i)).sum()) * voxel_ml
        row[f"wmh_{quad}_ml"] = volume
        row[f"wmh_{quad}_frac_etiv"] = volume / etiv_ml
    return row


def box_logits(model: WmhModel, box: np.ndarray, *, device: str = "cpu", flip: bool = True) -> np.ndarray:
    """Lesion logits in the box; with ``flip``, averaged with those of the left-right mirror image.

    The network was never taught that lesions look the same in both
    hemispheres; averaging it with its mirror pass makes its answer
    mirror-symmetric and removes part of its noise (docs/wmh-history.md).
    Windows overlap by ``PREDICT_OVERLAP``.
    """
    logits = predict_logits(model.network, box, model.patch_size, device=device, overlap=PREDICT_OVERLAP)
    if flip:
        mirrored = predict_logits(model.network, np.ascontiguousarray(box[::-1]), model.patch_size, device=device,
                                  overlap=PREDICT_OVERLAP)
        logits = 0.5 * (logits + mirrored[::-1])
    return logits


def pv_band(prob: np.ndarray, t1: np.ndarray, csf: float | None = None) -> tuple[float, float] | None:
    """The T1 band of voxels at least ``PV_LESION_SHARE`` lesion, from the lesion core's level (None: no level).

    A T1 voxel mixes the signals of its tissues in proportion. Beside white
    matter (1 on ``t1``'s scale) a voxel that much lesion is darker than
    ``1 - PV_LESION_SHARE`` of the way from the lesion level to 1; beside CSF
    (level ``csf``, darker than lesion) it is brighter than the same fraction
    of the way from the lesion level to CSF. The lesion level
    is the median T1 where the network is sure (``prob`` > 0.9); with fewer
    than ``PV_TRIM_MIN_CORE`` such voxels, or a level no darker than white
    matter, there is none. Without ``csf``, or with one no darker than the
    lesion level, the band has no lower side (-inf).
    """
    core = t1[prob > 0.9]
    if core.size < PV_TRIM_MIN_CORE:
        return None
    level = float(np.median(core))
    if level >= 1.0:
        return None
    reach = 1.0 - PV_LESION_SHARE
    lower = level + reach * (csf - level) if csf is not None and csf < level else -np.inf
    return lower, level + reach * (1.0 - level)


def trim_partial_volume(mask: np.ndarray, prob: np.ndarray, t1: np.ndarray,
                        csf: float | None = None) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Keep the mask voxels whose T1 lies in :func:`pv_band`: at least ``PV_LESION_SHARE`` lesion.

    A lesion mask stands for "more than half of this voxel is lesion". The
    network, taught through 5 mm slices, cannot place a lesion's edge to the
    millimetre; the image can. ``t1`` is scaled so that the template's core
    white matter has median 1, and ``csf`` is the ventricles' level on that
    scale (:func:`~mrinets.pipelines.wmh.grid.csf_reference`). With no
    lesion level to trust the mask is returned as it is. The lower side drops
    the ventricles' walls, CSF and lesion mixed, which are as dark as lesion.
    Asking for a share of 0.55 instead of half, on both sides, keeps out more
    edge voxels just under half lesion than it loses just over (each measured
    in docs/wmh-history.md).

    Returns the mask and the band used (None: not trimmed).
    """
    band = pv_band(prob, t1, csf)
    if band is None:
        return mask, None
    return mask & (t1 > band[0]) & (t1 < band[1]), band


def grow_in_white_matter(mask: np.ndarray, prob: np.ndarray, t1: np.ndarray, wm: np.ndarray,
                         csf: float | None = None, *, min_prob: float = GROW_MIN_PROB) -> np.ndarray:
    """Grow a trimmed mask into the white-matter voxels around it whose T1 lies in :func:`pv_band`.

    The trim's converse (``predict``'s default; ``--no-grow``): a voxel next
    to the mask, as dark as at least ``PV_LESION_SHARE`` lesion, is taken up to
    ``GROW_STEPS`` voxels out (6-neighbour steps from the mask, whatever
    threshold made it), where the network gives at least ``min_prob`` and the template's
    white-matter probability ``wm`` is at least ``GROW_MIN_WM`` (grey matter
    is as dark as lesion). The network's edges, taught through 5 mm slices,
    stop short of the truth.
    """
    band = pv_band(prob, t1, csf)
    candidates = prob >= min_prob
    if band is None or not mask.any() or not candidates.any():
        return mask
    # Work in the box around every candidate and the mask (grown voxels are candidates): dilating a whole head
    # costs seconds.
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(candidates | mask))
    allowed = candidates[box] & (t1[box] > band[0]) & (t1[box] < band[1]) & (wm[box] >= GROW_MIN_WM)
    grown = mask[box].copy()
    for _ in range(GROW_STEPS):
        grown |= ndimage.binary_dilation(grown) & allowed
    out = mask.copy()
    out[box] = grown
    return out


def box_mask(model: WmhModel, box: np.ndarray, *, device: str = "cpu") -> np.ndarray:
    """``predict``'s default mask, made in the box from its normalised T1 ``box`` (the second step's dense label)."""
    logits = box_logits(model, box, device=device)
    prob = np.where(grid_search(), 1.0 / (1.0 + np.exp(-logits)), 0.0)
    csf = csf_reference(box)
    mask, _ = trim_partial_volume(prob >= 0.5, prob, box, csf)
    return grow_in_white_matter(mask, prob, box, grid_wm(), csf, min_prob=model.grow_min_prob)


@dataclass
class MaskInputs:
    """What a network's mask is made from on the T1's grid (:func:`mask_from`), kept to remake it cheaply.

    ``prob`` is the network's probability, ``scaled`` the T1 over the
    template's core white-matter median, ``csf`` the ventricles' level on
    that scale; ``wm`` (the template's white matter carried onto the grid)
    is made on first use.
    """

    prob: np.ndarray
    scaled: np.ndarray
    csf: float
    affine: np.ndarray
    shape: tuple[int, ...]
    to_mni: np.ndarray

    @functools.cached_property
    def wm(self) -> np.ndarray:
        return from_grid(grid_wm(), self.affine, self.shape, self.to_mni, order=1)


def mask_from(inputs: MaskInputs, *, threshold: float = 0.5, pv_trim: bool = True, grow: bool = True,
              min_prob: float = GROW_MIN_PROB) -> tuple[np.ndarray, tuple[float, float] | None, int | None]:
    """``predict``'s mask: the probability thresholded, trimmed to the partial-volume band and grown.

    Returns the mask, the trim's band (None: not trimmed) and the voxels the
    growth added (None: not grown).
    """
    mask = inputs.prob >= threshold
    if not pv_trim:
        return mask, None, None
    mask, band = trim_partial_volume(mask, inputs.prob, inputs.scaled, inputs.csf)
    if not grow:
        return mask, band, None
    trimmed = int(mask.sum())
    mask = grow_in_white_matter(mask, inputs.prob, inputs.scaled, inputs.wm, inputs.csf, min_prob=min_prob)
    return mask, band, int(mask.sum()) - trimmed


def _mask_inputs(model: WmhModel, data: np.ndarray, t1: Image, to_mni: np.ndarray, *, device: str, flip: bool,
                 inside: np.ndarray | None = None) -> MaskInputs:
    raw_box = to_grid(data, t1.affine, to_mni)
    logits = box_logits(model, normalise(raw_box), device=device, flip=flip)
    # The network sees the input's edge where the brain mask cuts skull and scalp on real T1s; nothing
    # outside the search region (grid_search) can be a white-matter lesion. Logits, clipped so the step at
    # its edge stays small, are carried back by cubic splines: linear interpolation of probabilities through
    # two off-grid resamplings shaves the edges of small lesions (test_cubic_round_trip_keeps_small_lesions).
    logits = np.where(grid_search(), np.clip(logits, -_LOGIT_LIMIT, _LOGIT_LIMIT), -_LOGIT_LIMIT)
    back = from_grid(logits, t1.affine, t1.spatial_shape, to_mni, order=3, cval=-_LOGIT_LIMIT)
    prob = 1.0 / (1.0 + np.exp(-back))
    if inside is not None:
        prob = np.where(inside, prob, 0.0)
    reference = wm_reference(raw_box)
    return MaskInputs(prob=prob, scaled=data / reference, csf=csf_reference(raw_box) / reference, affine=t1.affine,
                      shape=t1.spatial_shape, to_mni=to_mni)


def mask_inputs(t1: Image, model: WmhModel, to_mni: np.ndarray, *, device: str = "cpu",
                flip: bool = True) -> MaskInputs:
    """:class:`MaskInputs` of a T1 whose map to MNI is known: ``predict``'s network pass, once (no brain mask)."""
    return _mask_inputs(model, t1.data, t1, to_mni, device=device, flip=flip)


def predict(t1: Image | str | Path, config: WmhConfig | None = None, *, model: WmhModel | None = None,
            to_mni: np.ndarray | None = None, brain_mask: Image | str | Path | None = None) -> WmhResult:
    """Lesion probability, mask, regions and volumes of one T1 (an Image or a NIfTI path), on its own grid.

    The T1 may be a head (with or without neck) or skull-stripped, in scanner
    or MNI space; the measures' ``input_kind`` says which was found.
    ``to_mni`` (subject world -> MNI world) skips the registration when the
    map is known; otherwise :func:`register_to_mni` finds it and refuses images
    it cannot align (non-brain, empty, wrong contrast). ``brain_mask``, the
    user's own skull stripping on the T1's grid (binary), replaces ours: it
    drives the registration, and nothing outside it enters the network or
    the mask.
    """
    from mrinets.data.templates import load_mni
    from mrinets.preprocess.mask import user_brain_mask
    from mrinets.preprocess.register import input_kind, register_to_mni
    from mrinets.training.engine import resolve_device

    from mrinets.io.nifti import load

    if not isinstance(t1, Image):
        t1 = load(t1, ndim=3)
    if brain_mask is not None and not isinstance(brain_mask, Image):
        brain_mask = load(brain_mask, ndim=3, allow_empty=True)
    config = config or WmhConfig()
    score = float("nan")
    inside = None if brain_mask is None else user_brain_mask(brain_mask, t1)
    if to_mni is None:
        registration = register_to_mni(t1, brain_mask=inside)
        to_mni, score, kind = registration.matrix, float(registration.score), registration.input_kind
    else:
        kind = input_kind(t1)
    data = t1.data if inside is None else np.where(inside, t1.data, 0.0).astype(np.float32)
    voxel_ml = float(np.prod(t1.voxel_size)) / 1000.0
    band, grown_ml = None, float("nan")
    if config.method == "network":
        model = model or load_model(config.weights)
        inputs = _mask_inputs(model, data, t1, to_mni, device=str(resolve_device(config.device)), flip=config.flip,
                              inside=inside)
        prob = inputs.prob
        floor = config.grow_min_prob if config.grow_min_prob is not None else model.grow_min_prob
        # A card that chose no growth (`mrinets wmh tune`) is overridden by an explicit floor only.
        grow = config.grow and (model.grows or config.grow_min_prob is not None)
        mask, band, grown = mask_from(inputs, threshold=config.threshold, pv_trim=config.pv_trim, grow=grow,
                                      min_prob=floor)
        if grown is not None:
            grown_ml = grown * voxel_ml
    else:
        box = normalise(to_grid(data, t1.affine, to_mni))
        prob_box = baseline_grid(box, config.baseline_k)
        prob = np.clip(from_grid(prob_box, t1.affine, t1.spatial_shape, to_mni, order=1), 0.0, 1.0)
        if inside is not None:
            prob = np.where(inside, prob, 0.0)
        mask = prob >= config.threshold

    mni_labels, mni_affine = mni_regions()
    subject_in_mni = to_mni @ t1.affine
    regions = affine_resample(mni_labels, mni_affine, subject_in_mni, t1.spatial_shape, order=0)
    regions = regions.astype(np.uint8)
    idx = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in t1.spatial_shape], indexing="ij"), -1)
    quadrant = quadrants(idx @ subject_in_mni[:3, :3].T.astype(np.float32) + subject_in_mni[:3, 3])
    icv_ml = float((load_mni().mask.data > 0.5).sum()) / 1000.0
    etiv = icv_ml / float(abs(np.linalg.det(to_mni[:3, :3])))
    measures = _measures(t1.name, mask, regions, quadrant, voxel_ml, etiv, score, band, grown_ml, kind,
                         "user" if inside is not None else "ours")
    return WmhResult(name=t1.name, prob=prob.astype(np.float32), mask=mask, regions=regions, measures=measures,
                     reference=t1)
