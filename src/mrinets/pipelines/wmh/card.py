"""Model cards of the WMH networks: what trained them, on what, and how they scored on held-out phantoms."""

from __future__ import annotations

import json

import numpy as np

from mrinets.pipelines.wmh.segment import card_grow_min_prob

__all__ = ["CARD_BASELINE_K", "model_card_text", "earlier_first_steps", "with_held_out"]

# The classic baseline's k on a card's held-out table (untuned; the tuned one is benchmarked in docs/wmh.md).
CARD_BASELINE_K = 3.0


def model_card_text(card: dict) -> str:
    """The Markdown model card of a ``mrinets wmh train`` run (its command, data, configuration, held-out scores)."""
    lines = ["# mrinets WMH network (wmh_t1.pt)", "",
             "3D U-Net (MONAI residual units) predicting white-matter hypointensity probability on T1 in the",
             "MNI-aligned box of 184 x 202 x 72 voxels at 1 x 1 x 1.5 mm, trained from thick-slice FLAIR labels.",
             "", "## Command that produced these weights", "", "```", card["command"], "```", "",
             *_first_step_lines(card),
             *_init_lines(card.get("init")),
             f"Training subjects: {card['n_subjects']}; training time {card['train_seconds']} s on this machine.",
             f"Labels dropped by the two-step procedure: {', '.join(card['dropped_by_two_step']) or 'none'}.",
             *_recalibration_lines(card.get("label_recalibration", {}), card.get("mask_thresholds", {})),
             *_dense_lines(card["config"].get("dense_weight", 0.0)), "",
             "## Data", "",
             "`mrinets phantom wmh` subjects (seeds from --seed-start): the MNI152 2009a tissue maps under a smooth",
             *_LESION_LINES.get(card.get("phantom_lesions", "wmh"), _WMH_LESION_LINES),
             "T1 SNR 15-40 with a bias field; labels drawn on a 0.9 x 0.9 x 5 mm FLAIR (Gaussian slice profile,",
             "residual misregistration up to 1.5 mm / 1.5 degrees) with a per-subject threshold, small lesions",
             "missed, in-plane dilation or erosion, and about 15 % grossly wrong labels. The network never sees",
             "the 1 mm truth.", "",
             "## Use", "",
             "`mrinets wmh predict T1.nii.gz --out DIR` (this file is the default), or `--weights` for another",
             "file from `mrinets wmh train`. Loaded with `torch.load(..., weights_only=True)`.",
             *_growth_use_lines(card), "",
             *_tuning_lines(card.get("grow_tuning")),
             "## Configuration", "", "```json", json.dumps(card["config"], indent=2), "```", "",
             *_subject_lines(card)]
    if "held_out" in card:
        # Cards written before the overlap was recorded were scored with 0.25 along every axis.
        overlap = " x ".join(f"{v:g}" for v in card.get("held_out_window_overlap", (0.25,) * 3))
        lines += ["## Held-out phantoms (scored at 1 mm against the high-resolution truth, registration included)",
                  "", f"Seeds {card['held_out_seeds'][0]}..{card['held_out_seeds'][-1]} (never used in training), "
                  + ("with" if card.get("held_out_mirror_pass") else "without")
                  + f" `predict`'s left-right mirror pass, sliding windows overlapping {overlap} (x, y, z), "
                  + ("with" if card.get("held_out_pv_trim") else "without") + " the partial-volume trim of the mask"
                  + (" and its growth into dark white matter (voxels it gives at least "
                     f"{card_grow_min_prob(card):g})." if card.get("held_out_grow") else "."),
                  "", "| method | Dice | lesion TPR | lesion FPR | volume r | volume bias (mL) |",
                  "|---|---|---|---|---|---|"]
        for name, s in card["held_out"].items():
            if name == "baseline":
                name = f"classic baseline, k = {CARD_BASELINE_K:g} (untuned; the README has the tuned one)"
            lines.append(f"| {name} | {s['dice_mean']:.3f} ± {s['dice_sd']:.3f} | {s['lesion_tpr_mean']:.2f} | "
                         f"{s['lesion_fpr_mean']:.2f} | {s['volume_pearson_r']:.3f} | {s['volume_bias_ml']:+.2f} |")
        lines.append("")
    lines += ["## Limits", "",
              "Trained on synthetic subjects only (MNI152 anatomy under smooth deformations with drawn lesions);",
              "real scans differ in contrast, lesion shape and artefacts. Check the QC pictures.", ""]
    return "\n".join(lines)


_WMH_LESION_LINES = [
    "random deformation, periventricular caps/bands and deep lesions (T1-hypointense, partial volume),"]
_MS_LESION_LINES = [
    "random deformation, with the `ms` lesion model (--phantom-lesions ms): ovoid lesions at the horns,",
    "across the ventricle wall, deep and juxtacortical, each at its own T1 level (0.62-0.97 of white",
    "matter at the edge, darker inside; docs/wmh.md has how it was measured on a real MS patient),"]
_MS_FLAIR_LESION_LINES = [
    "random deformation, with the `ms-flair` lesion model (--phantom-lesions ms-flair): the `ms` lesions",
    "(ovoid, at the horns, across the ventricle wall, deep and juxtacortical, each at its own T1 level)",
    "outlined as a rater draws them on FLAIR, 0.5-1.5 mm beyond their T1 hypointensity (0.85-1.0 of white",
    "matter there), confluent periventricular lesions at higher severity, grey matter at 0.72-0.80 of white",
    "matter (docs/wmh.md has how they were measured on a real MS patient),"]
_LESION_LINES = {"wmh": _WMH_LESION_LINES, "ms": _MS_LESION_LINES, "ms-flair": _MS_FLAIR_LESION_LINES}


def _growth_use_lines(card: dict) -> list[str]:
    where = " (chosen by `mrinets wmh tune`, below)" if "grow_tuning" in card else (
        " (`--grow-min-prob` of the command above)" if "grow_min_prob" in card else "")
    if not card.get("grow", True):
        return [f"`predict` does not grow the mask with these weights{where}; `--grow-min-prob P` grows it."]
    return [f"`predict` grows the mask into voxels these weights give at least {card_grow_min_prob(card):g}{where}."]


def _tuning_lines(tuning: dict | None) -> list[str]:
    """The growth floor's choice on tuning phantoms: command, rule, every floor's score."""
    if not tuning:
        return []
    models = list(tuning["seeds"])
    lines = ["## Growth floor chosen on tuning phantoms", "",
             "The weights above are unchanged; `predict`'s growth floor was chosen for them by:", "", "```",
             tuning["command"], "```", "",
             "Seeds: " + "; ".join(f"{m} phantoms {s[0]}..{s[-1]}" for m, s in tuning["seeds"].items())
             + f". Rule (written before the scores): {tuning['rule']}.",
             f"Chosen: **{tuning['chosen']}** (before: {tuning['before']}).", "",
             "| floor | mean Dice | " + " | ".join(f"Dice, {m} phantoms" for m in models) + " | volume bias (mL) |",
             "|---" * (len(models) + 3) + "|"]
    for label, s in tuning["scores"].items():
        lines.append(f"| {label} | {s['dice']:.4f} | " + " | ".join(f"{s[m]:.4f}" for m in models)
                     + f" | {s['volume_bias_ml']:+.2f} |")
    return [*lines, ""]


def _init_lines(init: dict | None) -> list[str]:
    """The chain of networks a fine-tuned one started from (--init), each with its command."""
    lines = []
    while init:
        lines += [f"It started from the weights {init['weights']} (--init), which came from:", "", "```",
                  init["command"], "```", ""]
        first = init.get("first_step_command", "")
        if first and first != init["command"]:
            lines += ["whose first step came from:", "", "```", first, "```", ""]
        init = init.get("init")
    return lines


def with_held_out(card: dict, scores: dict) -> dict:
    """``card`` with the held-out scores of :func:`mrinets.pipelines.wmh.evaluate_phantoms` (one network)."""
    (summary,) = [v for k, v in scores["summary"].items() if k != "baseline"]
    return {**card, "held_out": {"network": summary, **({"baseline": scores["summary"]["baseline"]}
                                                          if "baseline" in scores["summary"] else {})},
            "held_out_seeds": list(scores["seeds"]), "held_out_mirror_pass": scores["mirror_pass"],
            "held_out_window_overlap": scores["window_overlap"], "held_out_pv_trim": scores["pv_trim"],
            "held_out_grow": scores["grow"]}


def _subject_lines(card: dict) -> list[str]:
    if "subjects" not in card:
        return []
    return ["## Training subjects", "", "```json", json.dumps(card["subjects"], indent=2), "```", ""]


def _first_step_lines(card: dict) -> list[str]:
    # Cards written before --first-step existed trained both steps in one run.
    first = card.get("first_step_command", card["command"])
    if first == card["command"]:
        return []
    lines = ["Its first step (wmh_t1_step1.pt, given by --first-step) came from:", "", "```", first, "```", ""]
    for earlier in reversed(card.get("earlier_first_step_commands", [])):
        lines += ["That run's own first step came from:", "", "```", earlier, "```", ""]
    return lines


def earlier_first_steps(first_card: dict) -> list[str]:
    """The first-step commands behind a --first-step network that was itself a later step, oldest first."""
    own = first_card.get("first_step_command", first_card["command"])
    if own == first_card["command"]:
        return []
    return [*first_card.get("earlier_first_step_commands", []), own]


def _dense_lines(weight: float) -> list[str]:
    if not weight:
        return []
    return [f"Each kept label was also taught as a dense 1 mm label with weight {weight:g}: the first step's mask "
            "as `predict` makes it (trimmed and grown)."]


def _recalibration_lines(fits: dict, on_mask: dict) -> list[str]:
    thresholds = [f["threshold"] for f in fits.values() if f["threshold"] is not None]
    if not thresholds:
        return []
    shifts = [float(np.linalg.norm(f["shift_mm"])) for f in fits.values()]
    lines = [f"Label corrections fitted against the first step ({len(fits)} labels): pose shift median "
             f"{np.median(shifts):.1f} mm (max {max(shifts):.1f}), rater thresholds {min(thresholds):.2f} to "
             f"{max(thresholds):.2f} (train_report.json has each)."]
    if on_mask:
        values = list(on_mask.values())
        lines.append(f"Rater thresholds of the {len(values)} kept labels fitted again on the first step's mask "
                     f"(--mask-thresholds): {min(values):.2f} to {max(values):.2f}, median {np.median(values):.2f}.")
    return lines


def main(argv: list[str] | None = None) -> None:
    """``python -m mrinets.pipelines.wmh.card WEIGHTS [--held-out SCORES.json]``: write WEIGHTS' card (.md) again.

    With ``--held-out`` (the JSON of :func:`mrinets.pipelines.wmh.evaluate_phantoms` for this one network) the
    scores go into the card stored in the weights file too; the state dict is left as it is.
    """
    import argparse
    from pathlib import Path

    import torch

    from mrinets.io import write_text
    from mrinets.io.output import atomic_path
    from mrinets.training.engine import load_checkpoint

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("weights")
    parser.add_argument("--held-out", help="evaluate_phantoms JSON of this network")
    args = parser.parse_args(argv)
    path = Path(args.weights)
    state = load_checkpoint(path)
    if args.held_out:
        state["card"] = with_held_out(state["card"], json.loads(Path(args.held_out).read_text()))
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    write_text(path.with_suffix(".md"), model_card_text(state["card"]))


if __name__ == "__main__":
    main()
