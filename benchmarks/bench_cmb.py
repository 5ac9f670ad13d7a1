"""CMB detection on held-out phantoms: ours beside the issue's targets, the ablation and a baseline, and speed.

Run (about 10 minutes on 2 shared cores):

    PYTHONPATH=src python benchmarks/bench_cmb.py --phantoms 6

Tables:
1. per contrast, the shipped detector (distilled student) at its card's operating point: cluster-wise TPR,
   FP/subject, precision, F1, calcifications rejected, beside the targets (TPR >= 0.90 at < 2 FP/subject;
   calcifications rejected on QSM >= 0.90) and beside step 1 alone (the candidates, before steps 2 and 3);
1b. the per-stage funnel: how many true CMBs survive step 1, each step-3 rule alone, all rules, step 2, and both;
2. distillation ablation: the distilled student and the student trained alone, TPR at the same FP/subject
   (the distilled student's at its threshold; the other's threshold swept to match), target >= +5 points;
3. a contrast not trained on: the detector trained on SWI + GRE only (cmb_detector_noqsm.pt), scored on QSM;
4. seconds per scan of `predict` on a whole-brain 1 mm GRE-like volume (MNI152 grid), target < 120 s.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from mrinets.nets.patch_classifier import CandidateStudent, CandidateTeacher
from mrinets.pipelines import cmb
from mrinets.training.engine import load_checkpoint

WEIGHTS = Path(cmb.DEFAULT_WEIGHTS).parent


def _tpr_at_fp(sweep: list[dict], fp: float) -> float:
    """TPR of the swept thresholds at a given FP/subject (linear between the two nearest points)."""
    pts = sorted((s["fp_per_subject"], s["tpr"]) for s in sweep)
    xs, ys = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    return float(np.interp(fp, xs, ys))


def _speed(model: cmb.CmbModel, threads: int) -> tuple[float, float]:
    from mrinets.data.templates import load_mni
    from mrinets.io import Image

    torch.set_num_threads(threads)
    mni = load_mni()
    rng = np.random.default_rng(0)
    gre = (0.7 * mni.wm.data + 0.85 * mni.gm.data + 1.0 * mni.csf.data) * 1000
    gre = (gre + rng.normal(0, 20, gre.shape)).astype(np.float32)
    start, cpu = time.perf_counter(), time.process_time()
    cmb.predict(Image(gre, mni.affine), cmb.CmbConfig(contrast="gre", device="cpu"), model=model,
                mask=mni.mask.data > 0.5)
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phantoms", type=int, default=6, help="held-out phantoms (seeds from --seed-start)")
    parser.add_argument("--seed-start", type=int, default=cmb.TEST_SEED_START,
                        help="first held-out seed (default 900000; other ranges give fresh, untouched phantoms)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the speed test")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--speed-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.speed_only:
        _print_speed(cmb.load_model(), args.threads)
        return
    seeds = list(range(args.seed_start, args.seed_start + args.phantoms))
    model = cmb.load_model()
    ablation = load_checkpoint(WEIGHTS / "cmb_ablation.pt")
    alone = CandidateStudent(**ablation["student_alone_config"])
    alone.load_state_dict(ablation["student_alone"])
    teacher = CandidateTeacher(**ablation["teacher_config"])
    teacher.load_state_dict(ablation["teacher"])
    subjects = cmb.phantom_subjects(seeds, quiet=True)
    scores = cmb.evaluate_phantoms({"distilled": (model, None), "alone": (model, alone.eval()),
                                    "teacher": (model, teacher.eval())}, seeds,
                                   subjects=subjects, device="cpu")["models"]

    print(f"\n1. Held-out phantoms (seeds {seeds[0]}..{seeds[-1]}), shipped detector at its card's operating point")
    print("| contrast | TPR | FP/subject | precision | F1 | calcifications rejected | step-1 TPR | step-1 FP/subj |"
          " target |")
    print("|---|---|---|---|---|---|---|---|---|")
    for contrast, s in scores["distilled"].items():
        c = s["candidates"]
        print(f"| {contrast} | {s['tpr']:.3f} | {s['fp_per_subject']:.2f} | {s['precision']:.3f} | {s['f1']:.3f} | "
              f"{s['calcification_rejection']:.2f} ({s['calcifications']}) | {c['tpr']:.3f} | "
              f"{c['fp_per_subject']:.1f} | TPR >= 0.90, FP < 2; calc. (QSM) >= 0.90 |")

    print("\n1b. Where the true microbleeds are lost (same run): true CMBs touched by a surviving candidate after "
          "each stage; rule:X = that step-3 rule alone; final = as predict decides")
    keys = list(next(iter(scores["distilled"].values()))["funnel"])
    print("| contrast | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for contrast, s in scores["distilled"].items():
        print(f"| {contrast} | " + " | ".join(str(s["funnel"][k]) for k in keys) + " |")

    print("\n2. Distillation ablation: TPR at the distilled student's FP/subject (target: +5 points or more)")
    print("| contrast | FP/subject | distilled TPR | alone TPR (matched FP) | difference (points) |"
          " teacher TPR (matched FP) |")
    print("|---|---|---|---|---|---|")
    gains = []
    for contrast, s in scores["distilled"].items():
        other = _tpr_at_fp(scores["alone"][contrast]["sweep"], s["fp_per_subject"])
        teach = _tpr_at_fp(scores["teacher"][contrast]["sweep"], s["fp_per_subject"])
        gains.append(100 * (s["tpr"] - other))
        print(f"| {contrast} | {s['fp_per_subject']:.2f} | {s['tpr']:.3f} | {other:.3f} | {gains[-1]:+.1f} | "
              f"{teach:.3f} |")
    print(f"| mean | | | | {np.mean(gains):+.1f} | |")

    noqsm_path = WEIGHTS / "cmb_detector_noqsm.pt"
    if noqsm_path.exists():
        noqsm = cmb.load_model(noqsm_path)
        unseen = cmb.evaluate_phantoms({"noqsm": (noqsm, None)}, seeds, ("qsm",), subjects=subjects,
                                       device="cpu")["models"]["noqsm"]["qsm"]
        print("\n3. A contrast not trained on: detector trained on SWI + GRE only, scored on QSM (target TPR >= 0.80)")
        print("| model | TPR | FP/subject | precision | F1 |")
        print("|---|---|---|---|---|")
        print(f"| trained on SWI + GRE | {unseen['tpr']:.3f} | {unseen['fp_per_subject']:.2f} | "
              f"{unseen['precision']:.3f} | {unseen['f1']:.3f} |")
        s = scores["distilled"]["qsm"]
        print(f"| trained on all three (reference) | {s['tpr']:.3f} | {s['fp_per_subject']:.2f} | "
              f"{s['precision']:.3f} | {s['f1']:.3f} |")

    per = np.mean([s["seconds_per_volume"] for s in scores["distilled"].values()])
    print(f"\n(48 mm phantom boxes: {per:.2f} s each, steps 1-3 without file input/output)")
    if not args.skip_speed:
        _print_speed(model, args.threads)


def _print_speed(model: cmb.CmbModel, threads: int) -> None:
    seconds, cpu = _speed(model, threads)
    print(f"\n4. Speed: predict on a 197 x 233 x 189 (1 mm) GRE-like volume, {threads} CPU threads")
    # CPU time bounds the wall time on idle cores whatever the parallelism; wall time depends on the machine's load.
    print("| ours, wall (s) | ours, CPU time (s) | target (s) |")
    print("|---|---|---|")
    print(f"| {seconds:.1f} | {cpu:.1f} | 120 |")


if __name__ == "__main__":
    main()
