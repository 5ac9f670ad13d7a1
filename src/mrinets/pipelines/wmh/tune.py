"""``predict``'s growth floor chosen for a network on tuning phantoms, as nnU-Net chooses its post-processing.

The growth (:func:`~mrinets.pipelines.wmh.segment.grow_in_white_matter`)
takes dark white matter next to the mask where the network gives at least a
floor. The floor belongs to the network (a network taught with a sharper
rater spreads its probability less), so it is chosen on phantoms that neither
trained it nor test it: each tuning phantom goes through ``predict``'s network
pass once (registration included), and every floor of the grid is only the
trim and growth again on that cached probability map.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrinets.errors import ConfigError
from mrinets.pipelines.wmh.segment import MaskInputs, WmhModel, mask_from, mask_inputs

__all__ = ["GROW_GRID", "TUNE_SEED_START", "TIE", "RULE", "TuningCase", "check_grid", "check_tuning", "tuning_seeds",
           "tuning_cases", "score_grid", "choose_floor", "tune_growth", "tuned_card", "floor_label", "tune_command",
           "save_tuned"]

log = logging.getLogger(__name__)

# None: no growth (the trimmed mask as it is), which counts as the highest floor.
GROW_GRID = (None, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5)
# Seeds of neither training (1000-1079, 2000-2039 so far) nor the held-out tests (900000 on).
TUNE_SEED_START = 700_000
# Mean Dice within this of the best is a tie, settled towards the higher floor (the smaller change to the network's
# own mask, and fewer grown false positives on scans unlike the phantoms).
TIE = 0.002
RULE = (f"the floor with the highest mean Dice (each lesion model's mean over its phantoms, averaged over the "
        f"models); floors within {TIE:g} of it tie and the highest of them wins (no growth counts as highest)")


@dataclass
class TuningCase:
    """One tuning phantom: ``predict``'s network pass on it (:class:`MaskInputs`) and its 1 mm truth."""

    seed: int
    lesions: str
    inputs: MaskInputs
    truth: np.ndarray
    voxel_ml: float


def floor_label(floor: float | None) -> str:
    """A grid point as the report and the card write it ("none": no growth)."""
    return "none" if floor is None else f"{floor:g}"


def check_grid(grid: Sequence[float | None]) -> tuple:
    """The grid's floors, each once, in order; refused if empty or a floor lies outside (0, 1)."""
    if not grid:
        raise ConfigError("grid", "give at least one floor")
    for floor in grid:
        if floor is not None and not 0 < floor < 1:
            raise ConfigError("grid", f"floors must lie in (0, 1) or be none, got {floor:g}")
    return tuple(dict.fromkeys(grid))


def tuning_seeds(phantoms: int, seed_start: int, lesion_models: Sequence[str]) -> dict[str, list[int]]:
    """``phantoms`` seeds per lesion model, one run of seeds after another from ``seed_start``."""
    from mrinets.data.phantoms.wmh import LESION_MODELS
    from mrinets.pipelines.wmh import TEST_SEED_START

    if phantoms < 1:
        raise ConfigError("phantoms", f"must be at least 1, got {phantoms}")
    if not lesion_models or any(m not in LESION_MODELS for m in lesion_models):
        raise ConfigError("phantom_lesions", f"must be among {', '.join(LESION_MODELS)}")
    models = list(dict.fromkeys(lesion_models))
    if seed_start + phantoms * len(models) > TEST_SEED_START:
        raise ConfigError("seed_start", f"tuning seeds must stay below the held-out test seeds ({TEST_SEED_START})")
    return {m: list(range(seed_start + k * phantoms, seed_start + (k + 1) * phantoms)) for k, m in enumerate(models)}


def check_tuning(model: WmhModel, phantoms: int, seed_start: int, lesion_models: Sequence[str],
                 grid: Sequence[float | None]) -> tuple[dict[str, list[int]], tuple]:
    """:func:`tuning_seeds` and :func:`check_grid`, refusing seeds that trained ``model`` (its card's subjects)."""
    grid = check_grid(grid)
    seeds = tuning_seeds(phantoms, seed_start, lesion_models)
    subjects = model.card.get("subjects") or {}
    start = subjects.get("seed_start", 0)
    used = set(range(start, start + subjects.get("phantoms", 0))) & {s for group in seeds.values() for s in group}
    if used:
        raise ConfigError("seed_start", f"seeds {min(used)}..{max(used)} trained this network")
    return seeds, grid


def tuning_cases(model: WmhModel, seeds: dict[str, Sequence[int]], *, device: str = "cpu", flip: bool = True,
                 register: bool = True, quiet: bool = False) -> list[TuningCase]:
    """``predict``'s network pass on posed phantoms of each lesion model (as :func:`evaluate_phantoms` poses them)."""
    from rich.progress import track

    from mrinets.data.phantoms.wmh import make_wmh_subject
    from mrinets.io.nifti import from_array
    from mrinets.preprocess.register import register_to_mni

    jobs = [(lesions, seed) for lesions, group in seeds.items() for seed in group]
    cases = []
    for lesions, seed in track(jobs, description="tuning phantoms", disable=quiet):
        phantom = make_wmh_subject(seed, pose=True, lesions=lesions)
        t1 = from_array(phantom.t1, phantom.t1_affine)
        to_mni = register_to_mni(t1).matrix if register else phantom.to_mni
        cases.append(TuningCase(seed, lesions, mask_inputs(t1, model, to_mni, device=device, flip=flip),
                                phantom.truth_mask, float(np.prod(t1.voxel_size)) / 1000.0))
    return cases


def score_grid(cases: Sequence[TuningCase], grid: Sequence[float | None] = GROW_GRID, *,
               threshold: float = 0.5) -> dict:
    """Every case scored at every floor of ``grid``: per-subject rows and summaries, keyed by :func:`floor_label`.

    Each floor's summary has :func:`~mrinets.pipelines.wmh.evaluate_phantoms`'
    fields over all cases, the same per lesion model (``by_lesions``), and
    ``dice``: the mean over the lesion models of their mean Dice (the score
    the rule reads).
    """
    from mrinets.pipelines.wmh import score_masks, summarise

    out = {}
    for floor in check_grid(grid):
        rows = []
        for case in cases:
            grown = {"grow": False} if floor is None else {"min_prob": floor}
            mask, _, _ = mask_from(case.inputs, threshold=threshold, **grown)
            rows.append({"seed": case.seed, "lesions": case.lesions,
                         **score_masks(mask, case.truth, case.voxel_ml)})
        by_lesions = {m: summarise([r for r in rows if r["lesions"] == m])
                      for m in dict.fromkeys(r["lesions"] for r in rows)}
        dice = float(np.mean([s["dice_mean"] for s in by_lesions.values()]))
        out[floor_label(floor)] = {"floor": floor, "dice": dice, "summary": summarise(rows), "by_lesions": by_lesions,
                                   "subjects": rows}
    return out


def choose_floor(scores: dict, tie: float = TIE) -> float | None:
    """The floor :data:`RULE` picks from :func:`score_grid`'s scores."""
    best = max(s["dice"] for s in scores.values())
    tied = [s["floor"] for s in scores.values() if s["dice"] >= best - tie]
    return None if None in tied else max(tied)


def tune_growth(model: WmhModel, *, phantoms: int = 6, seed_start: int = TUNE_SEED_START,
                lesion_models: Sequence[str] | None = None, grid: Sequence[float | None] = GROW_GRID,
                device: str = "cpu", quiet: bool = False) -> dict:
    """Score ``grid`` on tuning phantoms of each lesion model (None: all, as ``mrinets wmh tune``) and choose a
    floor by :data:`RULE`.

    Refuses seeds the network was trained on (its card's subjects) or that
    reach the held-out test seeds. Returns a report: the seeds, the rule,
    each floor's scores, the chosen floor (None: no growth) and the floor the
    network had before.
    """
    from mrinets.data.phantoms.wmh import LESION_MODELS

    lesion_models = LESION_MODELS if lesion_models is None else lesion_models
    seeds, grid = check_tuning(model, phantoms, seed_start, lesion_models, grid)
    cases = tuning_cases(model, seeds, device=device, quiet=quiet)
    scores = score_grid(cases, grid)
    chosen = choose_floor(scores)
    for label, s in scores.items():
        log.debug("floor %s: Dice %.4f (%s)", label, s["dice"],
                 ", ".join(f"{m} {v['dice_mean']:.4f}" for m, v in s["by_lesions"].items()))
    return {"seeds": seeds, "rule": RULE, "grid": [floor_label(f) for f in grid], "scores": scores,
            "chosen": chosen, "before": None if not model.grows else model.grow_min_prob}


def tune_command(weights: str | Path, out: str | Path, *, phantoms: int, seed_start: int,
                 lesion_models: Sequence[str], grid: Sequence[float | None]) -> str:
    """The canonical ``mrinets wmh tune`` line, every option spelled out, so the card reproduces the choice."""
    argv = ["--weights", str(weights), "--out", str(out), "--phantoms", str(phantoms), "--seed-start",
            str(seed_start), "--phantom-lesions", *lesion_models, "--grid", *map(floor_label, grid)]
    return "mrinets wmh tune " + " ".join(shlex.quote(a) for a in argv)


def tuned_card(card: dict, report: dict, command: str) -> dict:
    """``card`` with the chosen floor (or no growth) and the tuning's command, rule and scores.

    Held-out scores on the card were made with the floor before; when the
    floor changes they are dropped (score the tuned file again with
    ``python -m mrinets.pipelines.wmh.card WEIGHTS --held-out SCORES``).
    """
    chosen = report["chosen"]
    new = {k: v for k, v in card.items() if k not in ("grow", "grow_min_prob")}
    if chosen is None:
        new["grow"] = False
    else:
        new["grow_min_prob"] = chosen
    if chosen != report["before"]:
        new = {k: v for k, v in new.items() if not k.startswith("held_out")}
    new["grow_tuning"] = {
        "command": command, "rule": report["rule"], "seeds": report["seeds"], "chosen": floor_label(chosen),
        "before": floor_label(report["before"]),
        "scores": {label: {"dice": s["dice"], **{m: v["dice_mean"] for m, v in s["by_lesions"].items()},
                           "volume_bias_ml": s["summary"]["volume_bias_ml"]}
                   for label, s in report["scores"].items()}}
    return new


def save_tuned(weights: str | Path, out: str | Path, report: dict, command: str) -> Path:
    """Write ``weights``' state dict unchanged with :func:`tuned_card`, its Markdown card and ``tune_report.json``."""
    import torch

    from mrinets.io import OutputStage, write_json, write_text
    from mrinets.pipelines.wmh.card import model_card_text
    from mrinets.training.engine import read_weights

    state = read_weights(weights)
    state["card"] = tuned_card(state.get("card", {}), report, command)
    with OutputStage(out) as stage:
        torch.save(state, stage.path("wmh_t1.pt"))
        write_text(stage.path("wmh_t1.md"), model_card_text(state["card"]))
        write_json(stage.path("tune_report.json"), report)
    return Path(out) / "wmh_t1.pt"
