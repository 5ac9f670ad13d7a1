"""``mrinets cmb``: cerebral microbleeds on SWI, GRE magnitude or QSM (train, predict, evaluate)."""

from __future__ import annotations

import argparse
import json
import sys

from mrinets.cli.common import (COMMANDS, add_common, finite_float, nonnegative_int, positive_float, positive_int,
                                share_float)
from mrinets.pipelines.cmb.data import CONTRASTS

NAME = "cmb"


def add_parser(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser(NAME, help=COMMANDS[NAME])
    add_common(group)
    cmds = group.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = cmds.add_parser(
        "predict", help="labelled microbleed map, table (centre, volume, probability, location), count and QC",
        description="Resample to 1 mm, standardise, find candidates with the U-Net (image + radial symmetry), "
        "keep those the distilled student accepts, and apply the size, sphericity, vessel, brain-edge and (QSM) "
        "susceptibility-sign rules. Writes <name>_cmb_labels.nii.gz, _cmb_candidate_prob.nii.gz, _cmb.csv, "
        "_cmb.json and _cmb_qc.png.")
    p.add_argument("image", help="3D SWI, GRE magnitude (one echo) or QSM NIfTI")
    p.add_argument("--contrast", required=True, choices=CONTRASTS, help="what the image is")
    p.add_argument("--mask", help="brain mask on the image's grid (default: computed)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--weights", help="weights from `mrinets cmb train` (default: the shipped detector)")
    p.add_argument("--threshold", type=finite_float, help="student probability threshold (default: the card's)")
    p.add_argument("--candidate-threshold", type=finite_float,
                   help="step-1 probability threshold (default: the card's, chosen for 95%% sensitivity)")
    p.add_argument("--no-cleanup", action="store_true", help="skip the step-3 rules")
    p.add_argument("--space", choices=("native", "mni"), default="native",
                   help="mni: the image's world coordinates are MNI152 (normalised scans, phantoms), so each CMB "
                        "gets a lobar/deep/infratentorial class; native: location unknown unless --to-mni")
    p.add_argument("--to-mni", help="text file with the 4x4 matrix from the image's world mm to MNI152 mm")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-qc", action="store_true", help="skip the QC picture")
    add_common(p)
    p.set_defaults(func=_predict)

    t = cmds.add_parser(
        "train", help="train the candidate U-Net, the teacher, the distilled student and its ablation on phantoms",
        description="Simulate phantoms (`mrinets phantom cmb`), train step 1 (weighted CE + Dice), pick its "
                    "threshold for the target sensitivity on validation phantoms, cut candidate patches, train the "
                    "multi-task teacher and two students (distilled, and alone), pick the student threshold of best "
                    "F1 on validation. Writes cmb_detector.pt, cmb_ablation.pt, the card cmb_detector.md and "
                    "train_report.json.")
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument("--phantoms", type=positive_int, default=10, help="training phantoms (each gives every contrast)")
    t.add_argument("--seed-start", type=nonnegative_int, default=1000, help="first training phantom seed")
    t.add_argument("--val-phantoms", type=positive_int, default=3, help="validation phantoms (seeds from 800000)")
    t.add_argument("--test-phantoms", type=nonnegative_int, default=0,
                   help="held-out phantoms (seeds from 900000) scored after training, on the card")
    t.add_argument("--contrasts", nargs="+", choices=CONTRASTS, default=list(CONTRASTS),
                   help="contrasts trained on (default all three); held-out phantoms are scored on all three")
    t.add_argument("--crop", type=positive_float, default=48.0, help="side (mm) of each phantom's box of brain")
    t.add_argument("--epochs-step1", type=positive_int, default=5)
    t.add_argument("--epochs-step2", type=positive_int, default=6)
    t.add_argument("--samples-per-volume", type=positive_int, default=6, help="step-1 patches per volume and epoch")
    t.add_argument("--batch-size", type=positive_int, default=8, help="step-1 batch")
    t.add_argument("--batch-size-step2", type=positive_int, default=16, help="teacher and student batch")
    t.add_argument("--lr", type=positive_float, default=2e-3)
    t.add_argument("--kd-temperature", type=positive_float, default=4.0, help="distillation temperature T")
    t.add_argument("--kd-weight", type=share_float, default=0.4, help="weight of the teacher's term")
    t.add_argument("--seed", type=nonnegative_int, default=0)
    t.add_argument("--workers", type=positive_int, default=1, help="processes simulating the phantoms")
    t.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_common(t)
    t.set_defaults(func=_train)

    e = cmds.add_parser(
        "evaluate", help="cluster-wise TPR, FP per subject, precision and F1 (label maps, or held-out phantoms)",
        description="Either score predicted label maps against true ones (--pred/--truth), or run the detector "
                    "on held-out phantoms (--phantoms N, seeds from 900000) per contrast.")
    e.add_argument("--pred", nargs="+", help="predicted CMB label maps (NIfTI)")
    e.add_argument("--truth", nargs="+", help="true CMB label maps, same order and grids")
    e.add_argument("--phantoms", type=nonnegative_int, default=0, help="held-out phantoms to run the detector on")
    e.add_argument("--contrasts", nargs="+", choices=CONTRASTS, default=list(CONTRASTS))
    e.add_argument("--weights", help="detector weights (default: the shipped ones)")
    e.add_argument("--device", default="auto", help="auto, cpu or cuda")
    e.add_argument("--out", help="write the scores to this JSON file too")
    add_common(e)
    e.set_defaults(func=_evaluate)


def _read_matrix(path: str):
    import warnings

    import numpy as np

    from mrinets.errors import ArgumentError
    from mrinets.io.output import note_input

    note_input(path)
    try:
        with open(path, encoding="utf-8") as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an empty file is reported below, in one line
            matrix = np.loadtxt(fh, ndmin=2)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ArgumentError("--to-mni", f"{path} is not a readable 4x4 matrix ({type(exc).__name__})") from None
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix[:3, :3])) < 1e-6:
        raise ArgumentError("--to-mni", f"{path} must hold a finite, invertible 4x4 matrix, got shape {matrix.shape}")
    return matrix


def _predict(args: argparse.Namespace) -> int:
    from mrinets.io import ensure_outdir, load, load_mask
    from mrinets.pipelines import cmb
    from mrinets.training.engine import resolve_device

    resolve_device(args.device)
    to_mni = _read_matrix(args.to_mni) if args.to_mni else None
    config = cmb.CmbConfig(contrast=args.contrast, weights=args.weights, device=args.device, threshold=args.threshold,
                           candidate_threshold=args.candidate_threshold, cleanup=not args.no_cleanup,
                           space=args.space, to_mni=to_mni)
    image = load(args.image, ndim=3)
    mask = load_mask(args.mask, like=image) if args.mask else None
    model = cmb.load_model(args.weights)
    out = ensure_outdir(args.out)
    result = cmb.predict(image, config, mask=mask, model=model)
    paths = result.save(out, qc=not args.no_qc)
    if not args.quiet:
        flag = " (out of training range: see the JSON)" if result.measures["out_of_training_range"] else ""
        print(f"mrinets cmb: {result.count} microbleeds{flag}; wrote {len(paths)} files to {out}")
    return 0


def _train_argv(args: argparse.Namespace) -> list[str]:
    return ["--out", str(args.out), "--phantoms", str(args.phantoms), "--seed-start", str(args.seed_start),
            "--val-phantoms", str(args.val_phantoms), "--test-phantoms", str(args.test_phantoms),
            "--contrasts", *args.contrasts, "--crop", f"{args.crop:g}", "--epochs-step1", str(args.epochs_step1),
            "--epochs-step2", str(args.epochs_step2), "--samples-per-volume", str(args.samples_per_volume),
            "--batch-size", str(args.batch_size), "--batch-size-step2", str(args.batch_size_step2),
            "--lr", f"{args.lr:g}", "--kd-temperature", f"{args.kd_temperature:g}", "--kd-weight",
            f"{args.kd_weight:g}", "--seed", str(args.seed)]


def _train(args: argparse.Namespace) -> int:
    import shlex

    import torch

    from mrinets.errors import ArgumentError
    from mrinets.io import ensure_outdir, write_json, write_text
    from mrinets.io.output import atomic_path
    from mrinets.pipelines import cmb
    from mrinets.pipelines.cmb.card import model_card_text
    from mrinets.training.engine import resolve_device

    try:
        config = cmb.CmbTrainConfig(contrasts=tuple(args.contrasts), epochs_step1=args.epochs_step1,
                                    epochs_step2=args.epochs_step2, samples_per_volume=args.samples_per_volume,
                                    batch_size=args.batch_size, batch_size_step2=args.batch_size_step2,
                                    lr=args.lr, kd_temperature=args.kd_temperature, kd_weight=args.kd_weight,
                                    seed=args.seed, device=args.device, quiet=args.quiet)
    except ValueError as exc:
        raise ArgumentError("mrinets cmb train", str(exc)) from None
    resolve_device(args.device)
    train_seeds = range(args.seed_start, args.seed_start + args.phantoms)
    if set(train_seeds) & (set(range(cmb.VAL_SEED_START, cmb.VAL_SEED_START + args.val_phantoms))
                           | set(range(cmb.TEST_SEED_START, cmb.TEST_SEED_START + args.test_phantoms))):
        raise ArgumentError("--seed-start", "training seeds overlap the validation or held-out seeds")
    out = ensure_outdir(args.out)
    command = "mrinets cmb train " + " ".join(shlex.quote(a) for a in _train_argv(args))
    subjects = cmb.phantom_subjects(train_seeds, config.contrasts, workers=args.workers, quiet=args.quiet,
                                    crop_mm=args.crop)
    validation = cmb.phantom_subjects(range(cmb.VAL_SEED_START, cmb.VAL_SEED_START + args.val_phantoms),
                                      config.contrasts, workers=args.workers, quiet=args.quiet, crop_mm=args.crop)
    trained = cmb.train(subjects, validation, config)
    card = trained["card"]
    report = trained["report"]
    card.update({"command": command, "train_seconds": report["train_seconds"], "n_train_phantoms": args.phantoms,
                 "train_seeds": [train_seeds.start, train_seeds.stop - 1], "validation_step1": {
                     k: report["step1"][k] for k in ("threshold", "sensitivity", "candidates_per_volume")},
                 "validation_step2": report["step2"]["validation"]})
    if args.test_phantoms:
        seeds = list(range(cmb.TEST_SEED_START, cmb.TEST_SEED_START + args.test_phantoms))
        models = {"distilled student": (trained["model"], None),
                  "student alone": (trained["model"], trained["student_alone"]),
                  "teacher": (trained["model"], trained["teacher"])}
        scores = cmb.evaluate_phantoms(models, seeds, device=args.device, quiet=args.quiet, crop_mm=args.crop)
        card["held_out"] = {name: {c: {k: v for k, v in s.items() if k not in ("sweep", "candidates")}
                                   for c, s in per.items()} for name, per in scores["models"].items()}
        card["held_out_seeds"] = [seeds[0], seeds[-1]]
        report["held_out"] = scores
    weights = cmb.save_model(out / "cmb_detector.pt", trained["step1"], trained["student"], card)
    ablation = {"teacher": trained["teacher"].state_dict(), "teacher_config": trained["teacher"].config(),
                "student_alone": trained["student_alone"].state_dict(),
                "student_alone_config": trained["student_alone"].config(), "command": command}
    with atomic_path(out / "cmb_ablation.pt") as tmp:
        torch.save(ablation, tmp)
    write_json(out / "train_report.json", report)
    write_text(out / "cmb_detector.md", model_card_text(card))
    if not args.quiet:
        print(f"mrinets cmb train: wrote {weights}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from mrinets.errors import ArgumentError
    from mrinets.io import write_json
    from mrinets.pipelines import cmb

    if args.pred or args.truth:
        if not (args.pred and args.truth):
            raise ArgumentError("--truth" if args.pred else "--pred", "give both --pred and --truth")
        if len(args.pred) != len(args.truth):
            raise ArgumentError("--truth", f"{len(args.pred)} predictions but {len(args.truth)} truths")
        scores = cmb.evaluate(args.pred, args.truth)
    elif args.phantoms:
        model = cmb.load_model(args.weights)
        seeds = list(range(cmb.TEST_SEED_START, cmb.TEST_SEED_START + args.phantoms))
        scores = cmb.evaluate_phantoms({"detector": (model, None)}, seeds, tuple(args.contrasts), device=args.device,
                                       quiet=args.quiet)
    else:
        raise ArgumentError("mrinets cmb evaluate", "give --pred and --truth, or --phantoms N")
    if args.out:
        write_json(args.out, scores)
    json.dump(scores, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
