"""``mrinets qsm``: susceptibility maps from GRE magnitude and phase."""

from __future__ import annotations

import argparse
import json
import sys

from mrinets.cli.common import (COMMANDS, add_common, finite_float, nonnegative_float, nonnegative_int, positive_float,
                                positive_int, reports_flags)
from mrinets.pipelines import qsm

# Config fields whose flag is not the field's own name.
_FLAGS = {"echo_times": "--te", "vsharp_max_radius_mm": "--vsharp-radius", "tv_max_iter": "--tv-iter"}

NAME = "qsm"


def add_parser(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser(NAME, help=COMMANDS[NAME])
    add_common(group)
    cmds = group.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = cmds.add_parser(
        "predict",
        help="reconstruct chi (ppm) from magnitude and phase",
        description="Mask, unwrap and combine echoes, remove the background field (V-SHARP) and invert "
        "the dipole (TKD or TV). Phase in radians or scanner integer units is detected and scaled.",
    )
    p.add_argument("--mag", required=True, help="magnitude NIfTI (3D, or 4D with echoes last)")
    p.add_argument("--phase", required=True, help="phase NIfTI on the same grid, one volume per echo")
    p.add_argument("--te", required=True, nargs="+", type=finite_float, help="echo time(s) in seconds")
    p.add_argument("--b0", required=True, type=finite_float, help="field strength in tesla")
    p.add_argument(
        "--b0-dir", nargs=3, type=finite_float, default=(0.0, 0.0, 1.0), metavar=("X", "Y", "Z"),
        help="B0 direction in scanner/world coordinates (default 0 0 1); the affine carries it into voxels",
    )
    p.add_argument("--mask", help="brain mask NIfTI on the same grid (default: computed from magnitude)")
    p.add_argument("--labels", help="label map (e.g. nuclei) for mean chi per region; names from <labels>.tsv")
    p.add_argument("--vsharp-radius", type=positive_float, default=12.0, help="largest V-SHARP radius, mm")
    _add_inversion_options(p)
    p.set_defaults(func=_predict)

    v = cmds.add_parser(
        "invert",
        help="dipole inversion of a local field map (as QSM challenge data come)",
        description="Susceptibility from a local (background-removed) field map: TKD, TV or PedQ-NET. "
        "Writes the same outputs as predict (chi, local field, mask, measures, QC).",
    )
    v.add_argument("--field", required=True, help="local field NIfTI (3D), in ppm or Hz (--unit)")
    v.add_argument("--mask", required=True, help="mask NIfTI on the same grid: where the field is known")
    v.add_argument("--b0-dir", nargs=3, type=finite_float, default=(0.0, 0.0, 1.0), metavar=("X", "Y", "Z"),
                   help="B0 direction in scanner/world coordinates (default 0 0 1)")
    v.add_argument("--unit", choices=qsm.FIELD_UNITS, default="ppm", help="unit of the field (default ppm)")
    v.add_argument("--b0", type=finite_float, default=3.0, help="field strength in tesla (Hz to ppm; default 3)")
    v.add_argument("--te", type=finite_float, default=0.02,
                   help="echo time (s) setting PedQ-NET's fine-tuning phase scale (default 0.02)")
    v.add_argument("--magnitude", help="magnitude NIfTI (weights TV and PedQ-NET fine-tuning)")
    v.add_argument("--labels", help="label map for mean chi per region; names from <labels>.tsv")
    _add_inversion_options(v)
    v.set_defaults(func=_invert)

    t = cmds.add_parser(
        "train",
        help="train PedQ-NET (unsupervised deep QSM) on phantoms",
        description="Phantoms with varied B0 direction, voxel size, SNR and nucleus iron (incl. low-iron, "
        "infant-like) -> local fields -> a DynUNet trained by the model-based dipole loss, with a UNETR "
        "nuclei segmenter trained jointly (unless --no-segment). Writes qsm_pedqnet.pt, its model card "
        "and train_report.json.",
    )
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument("--phantoms", type=positive_int, default=8, help="training phantoms (default 8)")
    t.add_argument("--seed-start", type=nonnegative_int, default=5000, help="seed of the first phantom")
    t.add_argument("--directions", type=positive_int, default=3, help="B0 directions per phantom (default 3)")
    t.add_argument("--steps", type=positive_int, default=1500, help="optimiser steps (default 1500)")
    t.add_argument("--batch-size", type=positive_int, default=2)
    t.add_argument("--patch", type=positive_int, default=48, help="patch side in voxels, multiple of 16")
    t.add_argument("--lr", type=positive_float, default=2e-3)
    t.add_argument("--filters", type=positive_int, nargs="+", default=[12, 24, 48, 96],
                   help="DynUNet feature maps per level")
    t.add_argument("--seg-weight", type=nonnegative_float, default=0.1, help="lambda of the segmentation loss")
    t.add_argument("--no-segment", action="store_true", help="no segmentation network (ablation)")
    t.add_argument("--test-phantoms", type=nonnegative_int, default=2, help="held-out phantoms scored at the end")
    t.add_argument("--max-minutes", type=positive_float, help="stop training after this many minutes")
    t.add_argument("--seed", type=nonnegative_int, default=0)
    t.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_common(t)
    t.set_defaults(func=_train)

    e = cmds.add_parser("evaluate", help="NRMSE, HFEN, SSIM and per-ROI errors against a true chi map")
    e.add_argument("--pred", required=True)
    e.add_argument("--truth", required=True)
    e.add_argument("--mask", required=True)
    e.add_argument("--labels", help="nuclei labels: per-ROI errors, scores inside nuclei, edge sharpness")
    e.add_argument("--field", help="local field (ppm): dipole kernel estimated backward from (field, chi)")
    e.add_argument("--b0-dir", nargs=3, type=finite_float, default=(0.0, 0.0, 1.0), metavar=("X", "Y", "Z"),
                   help="B0 direction of --field in world coordinates (default 0 0 1)")
    e.add_argument("--out", help="write the scores to this JSON file too")
    add_common(e)
    e.set_defaults(func=_evaluate)


@reports_flags(_FLAGS)
def _predict(args: argparse.Namespace) -> int:
    from mrinets.io import ensure_outdir

    config = _config(args, tuple(args.te), vsharp_max_radius_mm=args.vsharp_radius)
    ensure_outdir(args.out)
    result = qsm.predict(args.mag, args.phase, config=config, mask=args.mask, labels=args.labels)
    paths = result.save(args.out, qc=not args.no_qc)
    if not args.quiet:
        print(f"mrinets qsm: wrote {len(paths)} files to {args.out}")
    return 0


def _config(args: argparse.Namespace, echo_times: tuple, **fields) -> qsm.QsmConfig:
    """The reconstruction's configuration from the options predict and invert share."""
    return qsm.QsmConfig(echo_times=echo_times, b0=args.b0, b0_dir=tuple(args.b0_dir), method=args.method,
                         tkd_threshold=args.tkd_threshold, tv_lambda=args.tv_lambda, tv_max_iter=args.tv_iter,
                         weights=args.weights, finetune_steps=args.finetune_steps, device=args.device, **fields)


def _add_inversion_options(p: argparse.ArgumentParser) -> None:
    """The dipole inversion's options and the outputs, shared by predict and invert."""
    p.add_argument("--method", choices=qsm.METHODS, default="tkd", help="dipole inversion (default tkd)")
    p.add_argument("--tkd-threshold", type=finite_float, default=0.19)
    p.add_argument("--tv-lambda", type=positive_float, default=1e-3)
    p.add_argument("--tv-iter", type=positive_int, default=100)
    _add_pedqnet_options(p)
    p.add_argument("--no-qc", action="store_true", help="skip the QC picture")
    p.add_argument("--out", required=True, help="output folder")
    add_common(p)


def _add_pedqnet_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", help="PedQ-NET weights from `mrinets qsm train` (default: the shipped ones)")
    p.add_argument("--finetune-steps", type=nonnegative_int, default=0,
                   help="PedQ-NET self-supervised steps on this scan's field before predicting (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (PedQ-NET)")


@reports_flags(_FLAGS)
def _invert(args: argparse.Namespace) -> int:
    from mrinets.io import ensure_outdir

    config = _config(args, (args.te,))
    ensure_outdir(args.out)
    result = qsm.invert(args.field, config=config, mask=args.mask, unit=args.unit, magnitude=args.magnitude,
                        labels=args.labels)
    paths = result.save(args.out, qc=not args.no_qc)
    if not args.quiet:
        print(f"mrinets qsm: wrote {len(paths)} files to {args.out}")
    return 0


@reports_flags(_FLAGS)
def _train(args: argparse.Namespace) -> int:
    import shlex

    from mrinets.io import ensure_outdir
    from mrinets.pipelines.pedqnet import PedQNetTrainConfig
    from mrinets.training.engine import resolve_device

    resolve_device(args.device)
    config = PedQNetTrainConfig(
        phantoms=args.phantoms, seed_start=args.seed_start, directions_per_phantom=args.directions, steps=args.steps,
        batch_size=args.batch_size, patch=args.patch, pad=args.patch // 2, lr=args.lr, filters=tuple(args.filters),
        segment=not args.no_segment, seg_weight=args.seg_weight, max_minutes=args.max_minutes, seed=args.seed,
        device=args.device, quiet=args.quiet,
    )
    ensure_outdir(args.out)
    # The canonical command, every option spelled out, so the card's line reproduces the weights.
    argv = ["--out", args.out, "--phantoms", args.phantoms, "--seed-start", args.seed_start, "--directions",
            args.directions, "--steps", args.steps, "--batch-size", args.batch_size, "--patch", args.patch, "--lr",
            args.lr, "--filters", *args.filters, "--seg-weight", args.seg_weight, "--test-phantoms",
            args.test_phantoms, "--seed", args.seed, "--device", args.device]
    argv += ["--no-segment"] if args.no_segment else []
    argv += ["--max-minutes", args.max_minutes] if args.max_minutes else []
    command = "mrinets qsm train " + " ".join(shlex.quote(str(a)) for a in argv)
    report = qsm.train(config, args.out, test_phantoms=args.test_phantoms, command=command)
    if not args.quiet:
        for row in report["held_out"]:
            print(f"held-out {row['seed']} (low iron {row['low_iron']}): NRMSE TKD {row['tkd']['nrmse_percent']:.1f} "
                  f"% PedQ-NET {row['pedqnet']['nrmse_percent']:.1f} %")
        print(f"mrinets qsm: wrote qsm_pedqnet.pt and its model card to {args.out}")
    return 0


@reports_flags(_FLAGS)
def _evaluate(args: argparse.Namespace) -> int:
    from mrinets.io import write_json

    scores = qsm.evaluate(args.pred, args.truth, mask=args.mask, labels=args.labels, field=args.field,
                          b0_dir=tuple(args.b0_dir))
    if args.out:
        write_json(args.out, scores)
    json.dump(scores, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
