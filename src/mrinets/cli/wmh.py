"""``mrinets wmh``: white-matter hypointensities on 3D T1 (train, predict, evaluate)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from mrinets.cli.common import (COMMANDS, add_common, finite_float, nonnegative_float, nonnegative_int, positive_float,
                                 positive_int, reports_flags, share_float)
from mrinets.data.phantoms.wmh import LESION_MODELS

NAME = "wmh"
log = logging.getLogger(__name__)
# Fields of WmhTrainRun and WmhTrainConfig whose flag is not "--" + the field with dashes.
_TRAIN_FLAGS = {"subjects": "mrinets wmh train", "two_step": "--one-step", "recalibrate": "--no-recalibrate"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser(NAME, help=COMMANDS[NAME])
    add_common(group)
    cmds = group.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = cmds.add_parser(
        "predict", help="lesion probability, mask, regions and volumes of one or more T1s",
        description="Register each T1 to MNI152 (affine), predict in the network box, bring the maps back "
        "onto the T1's own grid, and measure lesion volume in total, in four regions and in four quadrants, "
        "also as a fraction of eTIV. The T1 may have skull (and neck) or be skull-stripped, in scanner or MNI "
        "space; the CSV's input_kind says which was found. Several inputs also give cohort_wmh.csv.")
    p.add_argument("t1", nargs="+", help="3D T1-weighted NIfTI file(s)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--brain-mask", nargs="+", metavar="MASK",
                   help="your own brain mask(s) (binary, on each T1's grid, one per T1 in the same order), used "
                        "instead of ours for the registration and to bound the lesions")
    p.add_argument("--weights", help="weights file from `mrinets wmh train` (default: the shipped model)")
    p.add_argument("--threshold", type=finite_float, default=0.5, help="probability threshold of the mask")
    p.add_argument("--method", choices=("network", "baseline"), default="network",
                   help="the network, or the classic intensity rule (darker than white matter by k SD)")
    p.add_argument("--baseline-k", type=finite_float, default=3.0, help="k of the baseline rule")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-flip", action="store_true",
                   help="skip the left-right mirror pass averaged with the network's answer (half the network "
                        "time, about 0.02 lower Dice on validation phantoms)")
    p.add_argument("--no-pv-trim", action="store_true",
                   help="keep mask voxels outside the partial-volume band (T1 that shows at least 55%% lesion, "
                        "beside CSF or beside white matter), and so skip the growth too: the thresholded probability "
                        "as it is; about 0.1 lower Dice on validation phantoms")
    p.add_argument("--grow", action=argparse.BooleanOptionalAction, default=None,
                   help="grow the trimmed mask up to 5 voxels into white matter in the band around it (default: "
                        "whenever the mask is trimmed; about 0.03 higher Dice on tuning and validation phantoms, "
                        "higher on each of 24; see docs/wmh-history.md)")
    p.add_argument("--grow-min-prob", type=finite_float,
                   help="least network probability of a grown voxel (default: the one on the weights' card; 0.01 "
                        "for cards without one)")
    p.add_argument("--no-qc", action="store_true", help="skip the QC pictures")
    add_common(p)
    p.set_defaults(func=_predict)

    t = cmds.add_parser(
        "train", help="train the network from thick-slice labels (phantoms or T1 + FLAIR-label pairs)",
        description="Train the 3D network with the super-resolution loss (or the naive-upsampling ablation), "
        "by default in two steps: train, fit every label's residual pose and rater threshold against the first "
        "model, drop the labels that still disagree, retrain. Writes wmh_t1.pt (and the first step's "
        "wmh_t1_step1.pt), its model card and a JSON report; with --test-phantoms the card holds held-out scores.")
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument("--phantoms", type=nonnegative_int, default=0, help="number of training phantoms")
    t.add_argument("--seed-start", type=nonnegative_int, default=1000, help="first phantom seed")
    t.add_argument("--pairs", help="TSV with columns t1 and flair_label (paths), one training subject per row")
    t.add_argument("--loss", choices=("super-resolution", "naive"), default="super-resolution")
    t.add_argument("--one-step", action="store_true", help="skip the second step of the procedure")
    t.add_argument("--no-recalibrate", action="store_true",
                   help="second step: keep each label's pose and the default threshold (only drop outliers)")
    t.add_argument("--second-temperature", type=positive_float,
                   help="second step: temperature of the rater model (default: the first step's, 0.1; the shipped "
                        "weights use 0.03 with --mask-thresholds, see docs/wmh-history.md)")
    t.add_argument("--dense-weight", type=nonnegative_float, default=0.0,
                   help="second step: also teach each kept subject's first-model mask, trimmed and grown as "
                        "predict makes it, as a dense 1 mm label with this weight beside the thick label (0: off)")
    t.add_argument("--unscore-unmarked", action="store_true",
                   help="second step: leave out of the loss the thick voxels of lesions the first model sees far "
                        "from anything the label marks (lesions a rater likely missed)")
    t.add_argument("--centre-thresholds", action="store_true",
                   help="second step: shift the fitted rater thresholds so their median is the training default "
                        "(0.45), removing the first model's own width bias from them")
    t.add_argument("--mask-thresholds", action="store_true",
                   help="second step: fit each kept label's rater threshold on the first model's mask as predict "
                        "makes it (trimmed and grown by the T1) instead of its raw probability, which is wider; the "
                        "shipped weights add --second-temperature 0.03 --grow-min-prob 0.1, see docs/wmh-history.md")
    t.add_argument("--grow-min-prob", type=finite_float,
                   help="the least network probability predict's growth asks of a voxel with these weights, written "
                        "on their card (default 0.01; 0.1 for --second-temperature 0.03 --mask-thresholds, whose "
                        "network grows faint spots of a real T1 at 0.01, see docs/wmh-history.md)")
    t.add_argument("--tilt", type=share_float, default=0.0,
                   help="share of training patches tilted (with their labels) by up to 90 degrees about a "
                        "horizontal axis, so thin lesions along the label's slices are seen at other angles")
    t.add_argument("--first-step", help="a network from an earlier run on the same subjects and settings, "
                                        "used instead of training the first step: its wmh_t1_step1.pt, or its "
                                        "final wmh_t1.pt for a further step (labels fitted against it)")
    t.add_argument("--init", metavar="WEIGHTS",
                   help="start every step from these weights (a wmh_t1.pt of `mrinets wmh train`, e.g. the shipped "
                        "one) instead of at random: fine-tuning, e.g. on phantoms of another lesion model")
    t.add_argument("--phantom-lesions", choices=LESION_MODELS, default="wmh",
                   help="the training phantoms' lesion model: wmh (small-vessel lesions, one T1 level per subject) "
                        "ms (as a real MS patient's lesions look on T1) or ms-flair (ms lesions outlined as on "
                        "FLAIR, beyond their T1 change, and confluent ones; docs/wmh.md)")
    t.add_argument("--channels", type=int, nargs=4, default=[16, 32, 64, 128], metavar="C",
                   help="the U-Net's channels at each of its four levels (default 16 32 64 128)")
    t.add_argument("--epochs", type=positive_int, default=8)
    t.add_argument("--samples-per-subject", type=positive_int, default=48, help="patches per subject and epoch")
    t.add_argument("--batch-size", type=positive_int, default=4)
    t.add_argument("--lr", type=positive_float, default=3e-3)
    t.add_argument("--seed", type=nonnegative_int, default=0)
    t.add_argument("--test-phantoms", type=nonnegative_int, default=0,
                   help=f"held-out phantoms (seeds from {900_000}) scored after training")
    t.add_argument("--workers", type=int, default=1,
                   help="processes that simulate the phantoms (default 1); the weights do not depend on it")
    t.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_common(t)
    t.set_defaults(func=_train)

    u = cmds.add_parser(
        "tune", help="choose predict's growth floor for a network on tuning phantoms (weights unchanged)",
        description="Run the network once on posed tuning phantoms of each lesion model (registration included), "
        "score every growth floor of the grid on those probability maps (trim and growth only), choose one by the "
        "rule in docs/wmh-history.md (best mean Dice over the lesion models, near-ties to the higher floor) and "
        "write the weights again with the choice, its command and the grid's scores on the card (wmh_t1.pt, "
        "wmh_t1.md, tune_report.json).")
    u.add_argument("--weights", required=True, help="weights file from `mrinets wmh train` (e.g. the shipped one)")
    u.add_argument("--out", required=True, help="output folder")
    u.add_argument("--phantoms", type=positive_int, default=6, help="tuning phantoms per lesion model (default 6)")
    u.add_argument("--seed-start", type=nonnegative_int, default=None,
                   help="first tuning seed (default 700000; seeds run on from model to model, below 900000)")
    u.add_argument("--phantom-lesions", nargs="+", choices=LESION_MODELS, default=list(LESION_MODELS),
                   help="lesion models of the tuning phantoms (default: all)")
    u.add_argument("--grid", nargs="+", type=_floor, default=None,
                   metavar="FLOOR", help="floors to score, 'none' for no growth (default: none 0.05 0.1 0.15 0.2 "
                                         "0.3 0.5)")
    u.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_common(u)
    u.set_defaults(func=_tune)

    e = cmds.add_parser("evaluate", help="Dice, lesion-wise TPR/FPR, the volume of each error kind (missed lesions, "
                                         "false-positive lesions, edges) and volume agreement of masks against truth")
    e.add_argument("--pred", required=True, nargs="+", help="predicted masks (NIfTI)")
    e.add_argument("--truth", required=True, nargs="+", help="true masks, same order and grids")
    e.add_argument("--out", help="write the scores to this JSON file too")
    add_common(e)
    e.set_defaults(func=_evaluate)


@reports_flags()
def _predict(args: argparse.Namespace) -> int:
    from mrinets.errors import ArgumentError
    from mrinets.io import OutputStage, ensure_outdir, write_text
    from mrinets.io.nifti import load
    from mrinets.pipelines import wmh
    from mrinets.preprocess.mask import user_brain_mask

    config = wmh.WmhConfig(weights=args.weights, threshold=args.threshold, method=args.method,
                           baseline_k=args.baseline_k, device=args.device, flip=not args.no_flip,
                           pv_trim=not args.no_pv_trim, grow=args.grow, grow_min_prob=args.grow_min_prob)
    images = [load(path, ndim=3) for path in args.t1]
    if args.brain_mask is not None and len(args.brain_mask) != len(images):
        raise ArgumentError("--brain-mask", f"{len(args.brain_mask)} mask(s) for {len(images)} T1(s); give one per T1")
    masks = [load(path, ndim=3, allow_empty=True) for path in args.brain_mask or []] or [None] * len(images)
    # Every mask is checked before any work, so a bad one costs no registration.
    for image, mask in zip(images, masks):
        if mask is not None:
            user_brain_mask(mask, image)
    names = [im.name for im in images]
    if len(set(names)) != len(names):
        raise ArgumentError("t1", "two inputs share a file name; outputs are named after it")
    model = wmh.load_model(args.weights) if args.method == "network" else None
    out = ensure_outdir(args.out)
    rows = []
    # One stage for the whole cohort: a failure on any input leaves no output at all.
    with OutputStage(out) as stage:
        for image, mask in zip(images, masks):
            result = wmh.predict(image, config, model=model, brain_mask=mask)
            result.save_into(stage, qc=not args.no_qc)
            rows.append(result.measures)
            log.info("%s: WMH %.2f mL, eTIV %.0f mL", image.name, result.measures["wmh_total_ml"],
                     result.measures["etiv_ml"])
        if len(rows) > 1:
            write_text(stage.path("cohort_wmh.csv"), wmh.measures_table(rows))
        count = len(stage.names)
    if not args.quiet:
        print(f"mrinets wmh: wrote {count} files to {out}")
    return 0


@reports_flags(_TRAIN_FLAGS)
def _train(args: argparse.Namespace) -> int:
    from mrinets.pipelines import wmh

    config = wmh.WmhTrainConfig(loss=args.loss, epochs=args.epochs, samples_per_subject=args.samples_per_subject,
                                batch_size=args.batch_size, lr=args.lr, seed=args.seed, two_step=not args.one_step,
                                recalibrate=not args.no_recalibrate, second_temperature=args.second_temperature,
                                tilt=args.tilt, dense_weight=args.dense_weight,
                                unscore_unmarked=args.unscore_unmarked, centre_thresholds=args.centre_thresholds,
                                mask_thresholds=args.mask_thresholds, channels=tuple(args.channels),
                                device=args.device, quiet=args.quiet)
    run = wmh.WmhTrainRun(out=args.out, phantoms=args.phantoms, seed_start=args.seed_start, pairs=args.pairs,
                          phantom_lesions=args.phantom_lesions, first_step=args.first_step, init=args.init,
                          grow_min_prob=args.grow_min_prob, test_phantoms=args.test_phantoms, workers=args.workers)
    weights = wmh.train_and_save(config, run)
    if not args.quiet:
        print(f"mrinets wmh train: wrote {weights}")
    return 0


def _floor(text: str) -> float | None:
    return None if text == "none" else finite_float(text)


@reports_flags()
def _tune(args: argparse.Namespace) -> int:
    from mrinets.io import ensure_outdir
    from mrinets.pipelines import wmh
    from mrinets.pipelines.wmh import tune
    from mrinets.training.engine import resolve_device

    # Defaults live in the library (tune.GROW_GRID, tune.TUNE_SEED_START), imported only when the command runs.
    grid = tune.GROW_GRID if args.grid is None else args.grid
    seed_start = tune.TUNE_SEED_START if args.seed_start is None else args.seed_start
    model = wmh.load_model(args.weights)
    # Every flag is checked before the output folder is made and the phantoms are simulated.
    tune.check_tuning(model, args.phantoms, seed_start, args.phantom_lesions, grid)
    ensure_outdir(args.out)
    command = tune.tune_command(args.weights, args.out, phantoms=args.phantoms, seed_start=seed_start,
                                lesion_models=args.phantom_lesions, grid=grid)
    report = tune.tune_growth(model, phantoms=args.phantoms, seed_start=seed_start,
                              lesion_models=args.phantom_lesions, grid=grid,
                              device=str(resolve_device(args.device)), quiet=args.quiet)
    path = tune.save_tuned(args.weights, args.out, report, command)
    if not args.quiet:
        for label, s in report["scores"].items():
            print(f"floor {label:>5}: mean Dice {s['dice']:.4f} ("
                  + ", ".join(f"{m} {v['dice_mean']:.4f}" for m, v in s["by_lesions"].items()) + ")")
        print(f"mrinets wmh tune: chose {tune.floor_label(report['chosen'])}; wrote {path}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from mrinets.errors import ArgumentError
    from mrinets.io import write_json
    from mrinets.pipelines import wmh

    if len(args.pred) != len(args.truth):
        raise ArgumentError("--truth", f"{len(args.pred)} predictions but {len(args.truth)} truths")
    scores = wmh.evaluate(args.pred, args.truth)
    if args.out:
        write_json(args.out, scores)
    json.dump(scores, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
