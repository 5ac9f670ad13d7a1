"""``mrinets microstructure``: NODDI maps from diffusion MRI (fit, predict, pretrain, finetune, evaluate)."""

from __future__ import annotations

import argparse
import functools
import json
import shlex
import sys

from mrinets.cli.common import (COMMANDS, add_common, finite_float, nonnegative_float, nonnegative_int, positive_float,
                                 positive_int)

NAME = "microstructure"


def add_parser(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser(NAME, help=COMMANDS[NAME])
    add_common(group)
    cmds = group.add_subparsers(dest="action", metavar="ACTION", required=True)

    def dwi_inputs(p: argparse.ArgumentParser) -> None:
        p.add_argument("dwi", help="4D diffusion-weighted NIfTI")
        p.add_argument("--bval", required=True, help="FSL b-values file (s/mm^2)")
        p.add_argument("--bvec", required=True, help="FSL b-vectors file")
        p.add_argument("--mask", help="brain mask on the DWI grid (default: computed from the b=0 volumes)")
        p.add_argument("--out", required=True, help="output folder")
        p.add_argument("--no-qc", action="store_true", help="skip the QC picture")
        add_common(p)

    f = cmds.add_parser("fit", help="the reference AMICO-style linear NODDI fit (best on a full, multi-shell scheme)",
                        description="Dictionary of Watson-stick and tortuous-zeppelin atoms over ICVF and ODI plus a "
                        "free-water atom, rotated to each voxel's tensor direction, solved by non-negative "
                        "least squares as AMICO does. Writes icvf, isovf, odi, mask, measures.json, QC PNG.")
    dwi_inputs(f)
    f.set_defaults(func=_fit)

    p = cmds.add_parser("predict", help="ICVF, ISOVF, ODI from a (few-gradient) DWI by the network",
                        description="Normalise by the b=0 mean, read 3x3x3 patches, estimate the centre voxel's "
                        "NODDI parameters. The network is the shipped one whose shells match the scan's (b1000/b2000, "
                        "b1000, b700/b2000, b1000/2000/3000, b1500/b2500), else one whose shells lie between the "
                        "scan's; other directions are interpolated in q-space onto the network's. Where no network "
                        "fits, the model fit serves the scan with a one-line warning. measures.json records the "
                        "method, the network and why.")
    dwi_inputs(p)
    p.add_argument("--weights", help="weights from `mrinets microstructure pretrain`/`finetune` (default: the shipped "
                                     "network nearest the scan's scheme)")
    p.add_argument("--method", choices=("network", "fit"), default="network")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.set_defaults(func=_predict)

    def training(p: argparse.ArgumentParser, lr_help: str = "learning rate (default 2e-3)",
                 out_help: str = "output folder") -> None:
        p.add_argument("--out", required=True, help=out_help)
        p.add_argument("--epochs", type=positive_int, default=30)
        p.add_argument("--batch-size", type=positive_int, default=256)
        p.add_argument("--lr", type=positive_float, help=lr_help)
        p.add_argument("--seed", type=nonnegative_int, default=0)
        p.add_argument("--device", default="auto", help="auto, cpu or cuda")
        add_common(p)

    t = cmds.add_parser("pretrain", help="pretrain on auxiliary high-quality phantoms brought to a scheme (yours: "
                        "--scheme-from BVAL BVEC)",
                        description="Auxiliary subjects (1.5 mm, 3 shells x 64 directions) are averaged into 3 mm "
                        "voxels, fitted on their own scheme (targets) and interpolated in q-space onto the "
                        "network's scheme, then re-acquired with the target scans' noise (inputs). The scheme is "
                        "the default network's (b1500/b2500), a registry scheme (--scheme) or your own "
                        "(--scheme-from). Writes the weights (--out FILE.pt, or OUT/pretrained.pt for a folder) "
                        "with a model card beside them; predict uses them with --weights.")
    t.add_argument("--subjects", type=positive_int, default=6, help="auxiliary phantoms")
    t.add_argument("--clean-inputs", action="store_true",
                   help="keep the interpolated signals as they are (no re-acquisition with the target noise)")
    which = t.add_mutually_exclusive_group()
    which.add_argument("--scheme", choices=sorted(_registry()), help="a scheme of the shipped registry")
    which.add_argument("--scheme-from", nargs=2, metavar=("BVAL", "BVEC"),
                       help="FSL b-values and b-vectors of your acquisition: the network reads its volumes")
    t.add_argument("--test-subjects", type=nonnegative_int, default=0,
                   help="held-out target phantoms scanned on the scheme, scored against the truth beside the "
                        "model fit of the same scans (in the card)")
    t.add_argument("--crop", type=nonnegative_int, nargs=6, metavar=("X0", "X1", "Y0", "Y1", "Z0", "Z1"),
                   help="build only this box of the phantoms (MNI152 1 mm voxels): quick trials")
    training(t, out_help="weights file FILE.pt (card FILE.md beside it) or an output folder")
    t.set_defaults(func=_pretrain)

    n = cmds.add_parser("finetune", help="fine-tune (or train from scratch) on K target subjects",
                        description="Target phantoms (3 mm, clinical population): inputs are the 31-volume "
                        "low-quality scans, targets the reference fit of the full 64-volume scans. Writes "
                        "microstructure_noddi.pt, its model card and a report; --test-subjects scores held-out "
                        "subjects against the truth, beside the reference fit of the same low-quality scans. "
                        "With --init weights of another scheme (pretrain --scheme/--scheme-from), the target "
                        "phantoms are scanned on that scheme and get a separate full 3-shell research scan whose "
                        "fit is the target.")
    n.add_argument("--init", help="pretrained weights (omit to train from scratch)")
    n.add_argument("--subjects", type=positive_int, default=1, help="K target training phantoms")
    n.add_argument("--test-subjects", type=nonnegative_int, default=0, help="held-out target phantoms to score")
    n.add_argument("--anchor", type=nonnegative_float, default=0.0,
                   help="L2-SP strength: pull towards the --init weights instead of decaying towards zero (default 0)")
    n.add_argument("--rehearsal", type=finite_float, default=0.0,
                   help="share of every fine-tuning epoch drawn from the pretraining data (the --init card's "
                        "auxiliary subjects, simulated again), against forgetting their clean targets (default 0)")
    n.add_argument("--rehearsal-subjects", type=positive_int, default=2,
                   help="auxiliary subjects simulated again for --rehearsal (default 2, about 2 min each)")
    n.add_argument("--hq-snr", type=positive_float,
                   help="the target subjects' full scans (the training targets) as a separate acquisition at this "
                        "SNR, e.g. a longer research protocol (default: the low-quality scan is a subset of the "
                        "full scan, both SNR 20)")
    n.add_argument("--crop", type=nonnegative_int, nargs=6, metavar=("X0", "X1", "Y0", "Y1", "Z0", "Z1"),
                   help="build only this box of the phantoms (MNI152 1 mm voxels): quick trials")
    training(n, "learning rate (default 5e-4 when fine-tuning, 2e-3 from scratch)",
             "output folder, or a weights file FILE.pt (card FILE.md beside it)")
    n.set_defaults(func=_finetune)

    e = cmds.add_parser("evaluate", help="compare NODDI maps with reference maps (MAE and correlation per parameter)")
    e.add_argument("pred", help="folder with icvf/isovf/odi.nii.gz (from predict or fit)")
    e.add_argument("ref", help="folder with the reference maps (truth or a fit of the full scan)")
    e.add_argument("--mask", help="voxels to score (default: the prediction's mask.nii.gz)")
    e.add_argument("--out", help="write the scores to this JSON file too")
    add_common(e)
    e.set_defaults(func=_evaluate)


def _registry() -> list[str]:
    from mrinets.pipelines.microstructure.schemes import REGISTRY

    return list(REGISTRY)


def _inputs(args: argparse.Namespace):
    from mrinets.pipelines import microstructure as ms

    return ms.load_dwi(args.dwi, args.bval, args.bvec, mask=args.mask)


def _save(result, args: argparse.Namespace) -> int:
    from mrinets.io import ensure_outdir

    ensure_outdir(args.out)
    paths = result.save(args.out, qc=not args.no_qc)
    if not args.quiet:
        print(f"mrinets microstructure: wrote {len(paths)} files to {args.out}")
        if result.measures["method"] == "network":  # a fallback to the fit was already logged as a warning
            print(f"note: {result.measures['scheme_note']}")
        if "warning" in result.measures:
            print(f"warning: {result.measures['warning']}")
    return 0


def _fit(args: argparse.Namespace) -> int:
    from mrinets.pipelines import microstructure as ms

    image, scheme, mask = _inputs(args)
    return _save(ms.fit_reference(image, scheme, mask), args)


def _predict(args: argparse.Namespace) -> int:
    from mrinets.pipelines import microstructure as ms

    config = ms.MicrostructureConfig(method=args.method, weights=args.weights, device=args.device)
    image, scheme, mask = _inputs(args)
    return _save(ms.predict(image, scheme, mask, config=config), args)


def _fit_config(args: argparse.Namespace):
    from mrinets.pipelines.microstructure import FitConfig

    if args.lr is None:
        args.lr = 5e-4 if getattr(args, "init", None) else 2e-3
    return FitConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device,
                     anchor=getattr(args, "anchor", 0.0), rehearsal=getattr(args, "rehearsal", 0.0), quiet=args.quiet)


def _command(action: str, args: argparse.Namespace, extra: list[str]) -> str:
    argv = ["--out", str(args.out), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
            "--lr", f"{args.lr:g}", "--seed", str(args.seed), *extra]
    return f"mrinets microstructure {action} " + " ".join(shlex.quote(a) for a in argv)


def _pretrain_scheme(args: argparse.Namespace):
    """The network's scheme, a label for the card and the command-line words that name it."""
    from mrinets.errors import ArgumentError, DimensionError
    from mrinets.physics.diffusion import GradientScheme
    from mrinets.pipelines.microstructure import experiment
    from mrinets.pipelines.microstructure.data import target_scheme
    from mrinets.pipelines.microstructure.schemes import REGISTRY, spec_scheme

    if args.scheme:
        return spec_scheme(REGISTRY[args.scheme]), f"registry scheme {args.scheme}", ["--scheme", args.scheme]
    if not args.scheme_from:
        return target_scheme(), "registry scheme b1500-b2500", []
    bval, bvec = args.scheme_from
    scheme = GradientScheme.from_files(bval, bvec)
    if int((~scheme.b0_mask).sum()) < 6:
        raise DimensionError(bval, f"has {int((~scheme.b0_mask).sum())} diffusion-weighted volumes; NODDI needs 6 "
                                   "or more")
    top = GradientScheme.from_dipy(experiment.AUX_SCHEME).bvals.max()
    if scheme.bvals.max() > 1.1 * top:
        raise ArgumentError(bval, f"b-value {scheme.bvals.max():g} lies beyond the auxiliary data's largest "
                                  f"({top:g} s/mm^2): it cannot be interpolated")
    return scheme, f"your scheme ({bval}, {bvec})", ["--scheme-from", bval, bvec]


def _crop(args: argparse.Namespace):
    from mrinets.errors import ArgumentError

    if not args.crop:
        return None
    crop = tuple(zip(args.crop[::2], args.crop[1::2]))
    if any(b - a < 6 for a, b in crop):
        raise ArgumentError("--crop", "each range must span 6 voxels or more (X0 < X1, ...)")
    return crop


def _pretrain(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mrinets.errors import ArgumentError
    from mrinets.io import ensure_outdir, write_json, write_text
    from mrinets.pipelines import microstructure as ms
    from mrinets.pipelines.microstructure import experiment

    if args.subjects < 1:
        raise ArgumentError("--subjects", "need at least one auxiliary subject")
    crop = _crop(args)
    scheme, label, words = _pretrain_scheme(args)
    out = Path(args.out)
    path = out if out.suffix == ".pt" else out / "pretrained.pt"
    ensure_outdir(path.parent)
    model, report = experiment.pretrain(args.subjects, _fit_config(args), crop=crop,
                                        net_config=ms.NetConfig(scheme=scheme.to_dict()),
                                        target_snr=None if args.clean_inputs else experiment.TARGET_SNR)
    extra = ["--subjects", str(args.subjects), *words] + (["--clean-inputs"] if args.clean_inputs else [])
    extra += ["--test-subjects", str(args.test_subjects)] if args.test_subjects else []
    extra += ["--crop", *map(str, args.crop)] if args.crop else []
    model.card["pretrain"]["command"] = _command("pretrain", args, extra)
    model.card["scheme"] = {"label": label, "shells": list(scheme.shells), "n_volumes": scheme.n,
                            "crop": [list(c) for c in crop] if crop else None}
    if args.test_subjects:
        test = [experiment.scheme_subject(experiment.TEST_SEED_START + i, scheme, crop=crop)
                for i in range(args.test_subjects)]
        model.card["held_out"] = {"network": experiment.evaluate(model, test, device=args.device),
                                  "fit_on_low_quality": experiment.evaluate_fit(test)}
    ms.save_model(model, path)
    if out.suffix != ".pt":  # a weights file gets its card only; a folder its report too, as before
        write_json(out / "pretrain_report.json", model.card)
    write_text(path.with_suffix(".md"), ms.pretrained_card_text(model.card, path.name))
    if not args.quiet:
        print(f"mrinets microstructure pretrain: wrote {path} and its card {path.with_suffix('.md')}")
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mrinets.errors import ArgumentError
    from mrinets.io import ensure_outdir, write_json, write_text
    from mrinets.pipelines import microstructure as ms
    from mrinets.pipelines.microstructure import experiment

    if args.subjects < 1 or args.test_subjects < 0:
        raise ArgumentError("--subjects", "need at least one target subject (and no negative test count)")
    if args.hq_snr is not None and args.hq_snr <= 0:
        raise ArgumentError("--hq-snr", f"must be positive, got {args.hq_snr}")
    if not 0 <= args.rehearsal < 1 or args.rehearsal_subjects < 1:
        raise ArgumentError("--rehearsal", "the share must be in [0, 1) and --rehearsal-subjects at least 1")
    if args.rehearsal and not args.init:
        raise ArgumentError("--rehearsal", "needs pretrained weights (--init)")
    crop = _crop(args)
    init = ms.load_model(args.init) if args.init else None
    on_scheme = init is not None and not init.scheme.same_as(ms.target_scheme())
    if on_scheme and args.hq_snr is not None:
        raise ArgumentError("--hq-snr", "applies to the default scheme's target subjects only")
    path = Path(args.out) if Path(args.out).suffix == ".pt" else Path(args.out) / "microstructure_noddi.pt"
    ensure_outdir(path.parent)
    fit = _fit_config(args)
    if on_scheme:
        subject = functools.partial(experiment.scheme_subject, scheme=init.scheme, crop=crop, full_scan=True)
        test_subject = functools.partial(experiment.scheme_subject, scheme=init.scheme, crop=crop)
    else:
        subject = test_subject = functools.partial(experiment.target_subject, hq_snr=args.hq_snr, crop=crop)
    train = [subject(experiment.TRAIN_SEED_START + i) for i in range(args.subjects)]
    rehearsal = experiment.rehearsal_set(init, args.rehearsal_subjects) if args.rehearsal else None
    model, report = experiment.finetune(train, fit, init=init, rehearsal=rehearsal)
    stage = report["stage"]
    extra = ["--subjects", str(args.subjects), "--test-subjects", str(args.test_subjects)]
    extra += ["--hq-snr", f"{args.hq_snr:g}"] if args.hq_snr is not None else []
    extra += ["--anchor", f"{args.anchor:g}"] if args.anchor else []
    if args.rehearsal:
        extra += ["--rehearsal", f"{args.rehearsal:g}", "--rehearsal-subjects", str(args.rehearsal_subjects)]
    extra += ["--crop", *map(str, args.crop)] if args.crop else []
    model.card[stage]["command"] = _command("finetune", args, (["--init", args.init] if args.init else []) + extra)
    if args.test_subjects:
        test = [test_subject(experiment.TEST_SEED_START + i) for i in range(args.test_subjects)]
        model.card["held_out"] = {"network": experiment.evaluate(model, test, device=args.device),
                                  "fit_on_low_quality": experiment.evaluate_fit(test)}
    ms.save_model(model, path)
    if path.parent == Path(args.out):
        write_json(path.parent / "finetune_report.json", model.card)
    card = ms.pretrained_card_text(model.card, path.name) if on_scheme else ms.model_card_text(model.card)
    write_text(path.with_suffix(".md"), card)
    if not args.quiet:
        print(f"mrinets microstructure finetune: wrote {path}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from mrinets.io import write_json
    from mrinets.pipelines import microstructure as ms

    scores = ms.compare_maps(args.pred, args.ref, mask=args.mask)
    if args.out:
        write_json(args.out, scores)
    json.dump(scores, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
