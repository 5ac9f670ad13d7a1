"""WMH growth floors side by side: held-out phantoms, the real MS patient and the deep-T1-WMH example T1.

Each subject goes through ``predict``'s network pass once (registration
included; :func:`mrinets.pipelines.wmh.tune.tuning_cases` for the phantoms,
posed as ``evaluate_phantoms`` poses them); each floor is the trim and growth
again on that probability map, so the floors differ in nothing else. The
phantoms, the patient and lesions inserted into the example T1 are scored
against their truth, the plain example T1 (no truth) by its volume and what
growth added. ``--card-json`` writes the
weights' own floor's held-out scores as ``evaluate_phantoms`` does, for
``python -m mrinets.pipelines.wmh.card WEIGHTS --held-out FILE``.

Run: ``python benchmarks/bench_wmh_growth.py [--weights W] [--floors 0.1 0.2] [--seeds 900000 900006]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
PATIENT = REFERENCE / "ms-lesion-t1"
EXAMPLE_T1 = REFERENCE / "deep-t1-wmh" / "t1_image.nii.gz"


def _floor(text: str) -> float | None:
    return None if text == "none" else float(text)


def _real_case(path: Path, model, truth_path: Path | None, device: str):
    from mrinets.io import load
    from mrinets.pipelines.wmh.segment import mask_inputs
    from mrinets.pipelines.wmh.tune import TuningCase
    from mrinets.preprocess.register import register_to_mni

    t1 = load(path, ndim=3)
    inputs = mask_inputs(t1, model, register_to_mni(t1).matrix, device=device)
    truth = load(truth_path, ndim=3, allow_empty=True).data > 0.5 if truth_path else np.zeros(t1.spatial_shape, bool)
    return TuningCase(seed=0, lesions=path.parent.name, inputs=inputs, truth=truth,
                      voxel_ml=float(np.prod(t1.voxel_size)) / 1000.0)


def main() -> None:
    from mrinets.pipelines import wmh
    from mrinets.pipelines.wmh import tune
    from mrinets.pipelines.wmh.segment import PREDICT_OVERLAP, mask_from

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="the network's weights (default: the shipped ones)")
    parser.add_argument("--floors", nargs="+", type=_floor, default=[0.1, 0.2],
                        help="growth floors to compare ('none': no growth)")
    parser.add_argument("--seeds", nargs=2, type=int, default=[900_000, 900_006], metavar=("FIRST", "END"),
                        help="held-out phantom seeds, FIRST to END - 1 (default 900000 900006)")
    parser.add_argument("--lesions", default="wmh", help="the phantoms' lesion model (default wmh)")
    parser.add_argument("--card-json", help="write the weights' own floor's held-out scores here (evaluate_phantoms)")
    parser.add_argument("--inserted", nargs="*", type=int, default=[820096, 820097, 820098, 820099], metavar="SEED",
                        help="seeds of `wmh` lesions inserted into the example T1 (insert_wmh; default 820096-820099)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    model = wmh.load_model(args.weights)
    own = model.grow_min_prob if model.grows else None
    floors = list(dict.fromkeys(args.floors + ([own] if args.card_json else [])))
    seeds = list(range(*args.seeds))
    if seeds:
        cases = tune.tuning_cases(model, {args.lesions: seeds}, device=args.device, quiet=True)
        scores = tune.score_grid(cases, floors)
        print(f"held-out `{args.lesions}` phantoms {seeds[0]}-{seeds[-1]} (posed, registered; weights "
              f"{args.weights or 'shipped'}, own floor {tune.floor_label(own)})")
        print(f"{'floor':>6}{'Dice':>8}{'SD':>7}{'TPR':>6}{'FPR':>6}{'r':>7}{'bias mL':>9}{'edge FP mL':>11}")
        for label, s in scores.items():
            m = s["summary"]
            print(f"{label:>6}{m['dice_mean']:>8.3f}{m['dice_sd']:>7.3f}{m['lesion_tpr_mean']:>6.2f}"
                  f"{m['lesion_fpr_mean']:>6.2f}{m['volume_pearson_r']:>7.3f}{m['volume_bias_ml']:>+9.2f}"
                  f"{m['edge_fp_ml_mean']:>11.2f}")
        if args.card_json:
            s = scores[tune.floor_label(own)]
            Path(args.card_json).write_text(json.dumps(
                {"seeds": seeds, "lesions": args.lesions, "mirror_pass": True,
                 "window_overlap": list(PREDICT_OVERLAP), "pv_trim": True, "grow": own is not None,
                 "summary": {"network": s["summary"]},
                 "subjects": {"network": s["subjects"]}}, indent=2))

    if PATIENT.is_dir():
        patient = _real_case(PATIENT / "T1.nii.gz", model, PATIENT / "consensus_gt.nii.gz", args.device)
        print(f"\nreal MS patient ({PATIENT.name}, consensus {patient.truth.sum() * patient.voxel_ml:.2f} mL)")
        print(f"{'floor':>6}{'Dice':>8}{'TPR':>6}{'FPR':>6}{'volume mL':>11}{'missed mL':>11}{'FP lesion mL':>14}")
        for label, s in tune.score_grid([patient], floors).items():
            r = s["subjects"][0]
            print(f"{label:>6}{r['dice']:>8.3f}{r['tpr']:>6.2f}{r['fpr']:>6.2f}{r['pred_ml']:>11.2f}"
                  f"{r['missed_ml']:>11.2f}{r['fp_lesion_ml']:>14.2f}")
    else:
        print(f"\n{PATIENT} is absent: no real-patient rows")
    if EXAMPLE_T1.is_file():
        example = _real_case(EXAMPLE_T1, model, None, args.device)
        print(f"\ndeep-T1-WMH example T1 ({EXAMPLE_T1.name}; no truth)")
        print(f"{'floor':>6}{'volume mL':>11}{'grown mL':>10}")
        for floor in floors:
            grown = {"grow": False} if floor is None else {"min_prob": floor}
            mask, _, added = mask_from(example.inputs, **grown)
            print(f"{tune.floor_label(floor):>6}{mask.sum() * example.voxel_ml:>11.2f}"
                  f"{(added or 0) * example.voxel_ml:>10.2f}")
        _inserted(example, model, floors, args.inserted, args.device)
    else:
        print(f"\n{EXAMPLE_T1} is absent: no example-T1 rows")


def _inserted(example, model, floors, seeds, device: str) -> None:
    """Lesions inserted into the example T1, each registered and predicted as a user's scan (its own spots count
    as false positives)."""
    from mrinets.data.phantoms.wmh import insert_wmh
    from mrinets.io import load
    from mrinets.io.nifti import from_array
    from mrinets.pipelines.wmh import tune
    from mrinets.pipelines.wmh.segment import mask_inputs
    from mrinets.preprocess.register import register_to_mni

    if not seeds:
        return
    real = load(EXAMPLE_T1, ndim=3)
    to_mni = register_to_mni(real).matrix
    cases = []
    for seed in seeds:
        phantom = insert_wmh(real.data, real.affine, to_mni, seed)
        t1 = from_array(phantom.t1, phantom.t1_affine)
        cases.append(tune.TuningCase(seed, "inserted", mask_inputs(t1, model, register_to_mni(t1).matrix,
                                                                   device=device),
                                     phantom.truth_mask, example.voxel_ml))
    print(f"\n`wmh` lesions inserted into the example T1 (seeds {', '.join(map(str, seeds))}; mean over them)")
    print(f"{'floor':>6}{'Dice':>8}{'TPR':>6}{'FPR':>6}{'bias mL':>9}{'FP lesion mL':>14}")
    for label, s in tune.score_grid(cases, floors).items():
        m = s["summary"]
        print(f"{label:>6}{m['dice_mean']:>8.3f}{m['lesion_tpr_mean']:>6.2f}{m['lesion_fpr_mean']:>6.2f}"
              f"{m['volume_bias_ml']:>+9.2f}{m['fp_lesion_ml_mean']:>14.2f}")


if __name__ == "__main__":
    main()
