"""``mrinets lowfield``: 64 mT -> synthetic 3 T translation (train, predict, evaluate)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mrinets.cli.common import COMMANDS, add_common, nonnegative_float, nonnegative_int, positive_float, positive_int

NAME = "lowfield"
MODELS = ("lohiresgan", "unet", "gan", "cgan", "cyclegan")


def add_parser(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser(NAME, help=COMMANDS[NAME])
    add_common(group)
    cmds = group.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = cmds.add_parser(
        "predict", help="synthetic 3 T image, PIQE and tissue volumes of a low-field scan",
        description="Resample the scan onto the 2 mm working grid, translate it slice by slice with the shipped "
        "LoHiResGAN (or --weights), and write the synthetic image on the input's grid and on the working grid, "
        "measures (PIQE before/after, tissue and regional volumes) as JSON and CSV, and a QC picture. The input "
        "should be brain-extracted, as the training pairs are.")
    p.add_argument("lowfield", help="low-field (64 mT) T1w or T2w NIfTI")
    p.add_argument("--contrast", choices=("t1", "t2"), default="t1")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--weights", help="weights from `mrinets lowfield train` (default: the shipped ones)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-qc", action="store_true", help="skip the QC picture")
    add_common(p)
    p.set_defaults(func=_predict)

    t = cmds.add_parser(
        "train", help="train a translation model on paired 64 mT / 3 T phantoms",
        description="Draw paired phantoms (seeds from --seed-start), train one model and write "
        "lowfield_<contrast>.pt (LoHiResGAN) or lowfield_<model>_<contrast>.pt with its model card; "
        "--test-subjects scores it on held-out pairs (seeds from 900000) for the card.")
    t.add_argument("--model", choices=MODELS, default="lohiresgan")
    t.add_argument("--contrast", choices=("t1", "t2"), default="t1")
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument("--subjects", type=positive_int, default=12, help="training pairs")
    t.add_argument("--seed-start", type=nonnegative_int, default=1000, help="first phantom seed (below 900000)")
    t.add_argument("--iterations", type=positive_int, default=600, help="generator updates")
    t.add_argument("--batch-size", type=positive_int, default=6)
    t.add_argument("--lr", type=positive_float, default=4e-4)
    t.add_argument("--context", type=nonnegative_int, default=1, help="neighbouring slices on each side as channels")
    t.add_argument("--features", type=positive_int, default=16, help="generator width")
    t.add_argument("--n-blocks", type=positive_int, default=4, help="residual blocks of the ResNet generator")
    t.add_argument("--lambda-l1", type=nonnegative_float, default=100.0)
    t.add_argument("--lambda-ssim", type=nonnegative_float, default=50.0)
    t.add_argument("--seed", type=nonnegative_int, default=0)
    t.add_argument("--test-subjects", type=nonnegative_int, default=0, help="held-out pairs scored for the card")
    t.add_argument("--cache", help="folder that keeps the phantom pairs between runs")
    t.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_common(t)
    t.set_defaults(func=_train)

    e = cmds.add_parser(
        "evaluate", help="SSIM, PSNR, NRMSE, PIQE and volume agreement of models on held-out pairs",
        description="Score each weights file (and the raw low-field scan) on held-out phantom pairs (seeds from "
        "900000) and, with --real-t1, on a real 3 T T1 degraded by our own 64 mT model; write metrics.json, "
        "metrics.csv and a figure with low-field, synthetic and 3 T side by side.")
    e.add_argument("--weights", nargs="+", help="weights files (default: the shipped model of --contrast)")
    e.add_argument("--contrast", choices=("t1", "t2"), default="t1")
    e.add_argument("--subjects", type=positive_int, default=4, help="held-out pairs")
    e.add_argument("--real-t1", help="a real 3 T T1 to degrade and translate back (T1 only)")
    e.add_argument("--cache", help="folder that keeps the phantom pairs between runs")
    e.add_argument("--device", default="auto", help="auto, cpu or cuda")
    e.add_argument("--out", required=True, help="output folder")
    add_common(e)
    e.set_defaults(func=_evaluate)


def _predict(args: argparse.Namespace) -> int:
    from mrinets.io import ensure_outdir
    from mrinets.io.nifti import load
    from mrinets.pipelines import lowfield
    from mrinets.training.engine import resolve_device

    resolve_device(args.device)
    image = load(args.lowfield, ndim=3)
    model = lowfield.load_model(args.weights, args.contrast)
    ensure_outdir(args.out)
    result = lowfield.predict(image, contrast=args.contrast, model=model, device=args.device)
    paths = result.save(args.out, qc=not args.no_qc)
    if not args.quiet:
        m = result.measures
        print(f"mrinets lowfield: PIQE {m['piqe']['lowfield']} -> {m['piqe']['synthetic']}; "
              f"wrote {len(paths)} files to {args.out}")
    return 0


def _weights_name(model: str, contrast: str) -> str:
    return f"lowfield_{contrast}.pt" if model == "lohiresgan" else f"lowfield_{model}_{contrast}.pt"


def train_command(args: argparse.Namespace) -> str:
    """The canonical command line, every option spelled out, so the card reproduces the weights."""
    parts = ["mrinets lowfield train", f"--model {args.model}", f"--contrast {args.contrast}",
             f"--out {args.out}", f"--subjects {args.subjects}", f"--seed-start {args.seed_start}",
             f"--iterations {args.iterations}", f"--batch-size {args.batch_size}", f"--lr {args.lr:g}",
             f"--context {args.context}", f"--features {args.features}", f"--n-blocks {args.n_blocks}",
             f"--lambda-l1 {args.lambda_l1:g}", f"--lambda-ssim {args.lambda_ssim:g}", f"--seed {args.seed}",
             f"--test-subjects {args.test_subjects}"]
    return " ".join(parts)


def _train(args: argparse.Namespace) -> int:
    from mrinets.data.phantoms.lowfield import HELD_OUT_SEED
    from mrinets.errors import ArgumentError
    from mrinets.io import ensure_outdir, write_json, write_text
    from mrinets.pipelines import lowfield

    if args.seed_start + args.subjects > HELD_OUT_SEED:
        raise ArgumentError("--seed-start", f"training seeds must stay below {HELD_OUT_SEED} (held-out pairs)")
    config = lowfield.TrainConfig(model=args.model, contrast=args.contrast, subjects=args.subjects,
                                  seed_start=args.seed_start, iterations=args.iterations, batch_size=args.batch_size,
                                  lr=args.lr, context=args.context, features=args.features, n_blocks=args.n_blocks,
                                  lambda_l1=args.lambda_l1, lambda_ssim=args.lambda_ssim, seed=args.seed,
                                  device=args.device)
    from mrinets.training.engine import resolve_device

    resolve_device(args.device)
    out = ensure_outdir(args.out)
    model, history = lowfield.train(config, cache=args.cache, quiet=args.quiet)
    command = train_command(args)
    model.card.update({"command": command, "model": args.model})
    report = {"command": command, "config": config.as_dict(), "history": history}
    if args.test_subjects:
        scores, _ = lowfield.evaluate({args.model: model}, contrast=args.contrast, subjects=args.test_subjects,
                                      cache=args.cache, quiet=args.quiet)
        scores.pop("per_subject")
        report["held_out"] = scores
        model.card["held_out"] = {k: v for k, v in scores["methods"].items()}
    name = _weights_name(args.model, args.contrast)
    lowfield.save_weights(model, out / name)
    write_text(out / name.replace(".pt", ".md"), model_card(name, command, config.as_dict(), report))
    write_json(out / "train_report.json", report)
    if not args.quiet:
        print(f"mrinets lowfield train: wrote {out / name} ({history['seconds']} s)")
    return 0


def model_card(name: str, command: str, config: dict, report: dict) -> str:
    """Markdown card: the command, data, seed, config and held-out scores."""
    lines = [f"# mrinets low-field translation model ({name})", "",
             f"{config['model']} generator translating 64 mT {config['contrast'].upper()}w axial slices (2 mm "
             "working grid, neighbouring slices as channels) to synthetic 3 T.", "",
             "## Command that produced these weights", "", "```", command, "```", "",
             "## Data", "",
             f"{config['subjects']} paired phantoms (`mrinets phantom lowfield`, seeds {config['seed_start']} to "
             f"{config['seed_start'] + config['subjects'] - 1}): MNI152 2009a under random affine and smooth warps; "
             "3 T side the warped template T1 (or a synthesised spin-echo T2w); 64 mT side from "
             "mrinets.physics.lowfield (64 mT relaxation, 1.6 x 1.6 x 5 mm, bias, Rician SNR 12, up to 1.5 mm / "
             "1.5 degrees misregistration). Seed " + str(config["seed"]) + "; training took "
             f"{report['history']['seconds']} s ({report['history']['training_slices']} slices).", "",
             "## Training config", "", "```json", json.dumps(config, indent=2), "```", ""]
    held = report.get("held_out")
    if held:
        lines += ["## Held-out scores", "",
                  f"{held['subjects']} held-out pairs (seeds from 900000), inside the 3 T brain mask:", "",
                  "| method | SSIM | PSNR dB | NRMSE | PIQE | mean abs % diff, regional volumes |",
                  "|---|---|---|---|---|---|"]
        for method, s in held["methods"].items():
            lines.append(f"| {method} | {s['ssim']:.3f} | {s['psnr']:.2f} | {s['nrmse']:.3f} | {s['piqe']:.1f} | "
                         f"{s['mean_abs_pct_diff_regional']:.1f} |")
        lines += ["", f"PIQE of the 3 T images: {held['piqe_3t']:.1f}. Measured by the command above "
                  "(`--test-subjects`); `mrinets lowfield evaluate` gives the same table.", ""]
    return "\n".join(lines)


def _evaluate(args: argparse.Namespace) -> int:
    from mrinets.errors import ArgumentError
    from mrinets.io import OutputStage, ensure_outdir, write_json
    from mrinets.io.nifti import load
    from mrinets.pipelines import lowfield
    from mrinets.report.lowfield import side_by_side
    from mrinets.training.engine import resolve_device

    if args.real_t1 and args.contrast != "t1":
        raise ArgumentError("--real-t1", "a real T1 pairs only with --contrast t1")
    device = resolve_device(args.device)
    real_t1 = load(args.real_t1, ndim=3) if args.real_t1 else None
    paths = args.weights or [None]
    models = {}
    for path in paths:
        model = lowfield.load_model(path, args.contrast)
        name = model.card.get("model") or model.card.get("config", {}).get("model") or Path(path or "").stem
        while name in models:
            name += "'"
        models[name] = model
    ensure_outdir(args.out)
    scores, pairs = lowfield.evaluate(models, contrast=args.contrast, subjects=args.subjects, cache=args.cache,
                                      real_t1=real_t1, device=str(device), quiet=args.quiet)
    rows = []
    for method, s in scores["methods"].items():
        rows.append({"method": method, "ssim": round(s["ssim"], 4), "psnr_db": round(s["psnr"], 3),
                     "nrmse": round(s["nrmse"], 4), "piqe": round(s["piqe"], 2),
                     "mean_abs_pct_diff_regional": round(s["mean_abs_pct_diff_regional"], 2),
                     **{f"abs_pct_diff_{k}": round(v, 2) for k, v in s["abs_pct_diff"].items()},
                     **{f"icc_{k}": round(v, 3) for k, v in s["icc"].items()}})
    with OutputStage(args.out) as stage:
        write_json(stage.path("metrics.json"), scores)
        stage.path("metrics.csv").write_text(lowfield.csv_text(rows), encoding="utf-8")
        for tag, pair in (("phantom", pairs[0]), ("real_t1", pairs[-1] if args.real_t1 else None)):
            if pair is None:
                continue
            images = {"64 mT": pair.lf_work}
            for name, model in models.items():
                images[name] = lowfield.translate_volume(model.generator, model.spec, pair.lf_work,
                                                         context=model.context, device=device)
            images["3 T"] = pair.hf_work
            side_by_side(images, stage.path(f"comparison_{tag}.png"), voxel_mm=lowfield.WORK_MM,
                         title=f"held-out {tag.replace('_', ' ')} ({args.contrast})")
    json.dump({"methods": {m: {k: s[k] for k in ("ssim", "psnr", "nrmse", "piqe", "mean_abs_pct_diff_regional")}
                           for m, s in scores["methods"].items()}}, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
