"""Model card of the CMB detector: what trained it, its operating points and its held-out scores."""

from __future__ import annotations

import json

from mrinets.pipelines.cmb.data import CONTRASTS

__all__ = ["model_card_text"]


def model_card_text(card: dict, name: str = "cmb_detector.pt") -> str:
    """The Markdown model card of a ``mrinets cmb train`` run (command, operating points, data, held-out scores).

    ``name``: the weights file the card describes (a detector trained on some
    contrasts only ships without its ablation networks).
    """
    op = card["operating_point"]
    v1, v2 = card["validation_step1"], card["validation_step2"]
    contrasts = card["config"]["contrasts"]
    trained_on = "" if len(contrasts) == len(CONTRASTS) else f", trained on {' + '.join(contrasts).upper()} only"
    ablation = "ablation networks in cmb_ablation.pt" if not trained_on else "its ablation networks are not shipped"
    lines = [f"# mrinets CMB detector{trained_on} ({name}{',' if not trained_on else ';'} {ablation})", "",
             "Step 1: 3D U-Net (MONAI residual units) on the standardised image + its radial symmetry transform",
             "(1 mm grid, 32^3 patches). Step 2: student classifier on 16^3 candidate patches, distilled from a",
             "multi-task teacher (classifier + segmentor). Step 3: size, sphericity, vessel, brain-edge and QSM-sign",
             "rules (no weights).", "",
             "## Command that produced these weights", "", "```", card["command"], "```", "",
             f"Training time {card['train_seconds']} s on this machine (2 CPU cores shared); training phantoms seeds "
             f"{card['train_seeds'][0]}..{card['train_seeds'][1]}.", "",
             "## Operating points (chosen on validation phantoms, seeds from 800000)", "",
             f"- candidate threshold {op['candidate_threshold']:g}: step-1 sensitivity {v1['sensitivity']:.3f}, "
             f"{v1['candidates_per_volume']:.1f} candidates per volume "
             f"(target >= {card['config'].get('target_sensitivity', 0.95):g}{_peaks(card)})",
             f"- student threshold {op['student_threshold']:g} ({_criterion(card)}): TPR {v2['tpr']:.3f}, "
             f"FP/subject {v2['fp_per_subject']:.2f}, precision {v2['precision']:.3f}, F1 {v2['f1']:.3f}", "",
             "## Data", "",
             "`mrinets phantom cmb` subjects: 64 mm boxes of MNI152 anatomy (lobar, deep and infratentorial), deep",
             "grey nuclei, veins, calcifications, sulcal flow voids and 0-6 microbleeds, simulated through the dipole",
             "model on a 0.5 mm grid at 1.5 or 3 T, TE 15-30 ms, B0 tilted up to 20 degrees, SNR 15-40, bias and",
             "arbitrary scanner gain; each seen as GRE magnitude, SWI and QSM (TKD).", "",
             "## Use", "",
             "`mrinets cmb predict IMG --contrast swi|gre|qsm --out DIR` (this file is the default). Loaded with",
             "`torch.load(..., weights_only=True)`.", "",
             "## Configuration", "", "```json", json.dumps(card["config"], indent=2), "```", ""]
    if "held_out" in card:
        lines += [f"## Held-out phantoms (seeds {card['held_out_seeds'][0]}..{card['held_out_seeds'][1]})", "",
                  "Measured by the training command above (`--test-phantoms`); cluster-wise, pooled over subjects.", "",
                  "| model | contrast | TPR | FP/subject | precision | F1 | calcifications rejected |",
                  "|---|---|---|---|---|---|---|"]
        for name, per in card["held_out"].items():
            for contrast, s in per.items():
                lines.append(f"| {name} | {contrast} | {s['tpr']:.3f} | {s['fp_per_subject']:.2f} | "
                             f"{s['precision']:.3f} | {s['f1']:.3f} | {s['calcification_rejection']:.2f} "
                             f"({s['calcifications']}) |")
        lines.append("")
    lines += ["## Limits", "",
              "Trained on synthetic subjects only; real scans differ in texture, artefacts and mimics. The JSON of",
              "every prediction flags inputs outside the training range. Check the QC picture.", ""]
    return "\n".join(lines)


def _peaks(card: dict) -> str:
    # Cards from before the radial-symmetry peak candidates (no max_fp_per_subject either) stay as written.
    return "" if "max_fp_per_subject" not in card["config"] else "; U-Net alone, before the symmetry-peak candidates"


def _criterion(card: dict) -> str:
    bound = card["config"].get("max_fp_per_subject")
    if bound is None or card["validation_step2"]["fp_per_subject"] > bound:
        return "best F1"
    return f"highest TPR at <= {bound:g} FP/subject"


def main(argv: list[str] | None = None) -> None:
    """``python -m mrinets.pipelines.cmb.card WEIGHTS.pt``: the card rebuilt from what the weights file stores."""
    import argparse
    from pathlib import Path

    from mrinets.io import write_text
    from mrinets.pipelines.cmb.detect import load_model

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("weights", help="a cmb_detector*.pt written by mrinets cmb train")
    parser.add_argument("--out", help="write the card here (default: beside the weights, .md)")
    args = parser.parse_args(argv)
    weights = Path(args.weights)
    write_text(Path(args.out) if args.out else weights.with_suffix(".md"),
               model_card_text(load_model(weights).card, weights.name))


if __name__ == "__main__":
    main()
