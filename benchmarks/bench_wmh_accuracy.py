"""WMH accuracy on held-out phantoms: super-resolution loss vs naive upsampling, one vs two steps, baseline, ceiling.

Trains, on the same phantoms (seeds 1000.., imperfect thick-slice FLAIR labels,
a few grossly wrong), with the same budget:
  1. the super-resolution loss, one step;
  2. the two-step procedure started from (1): labels scored against (1),
     outliers dropped, retrained from scratch (this is what `mrinets wmh train`
     ships);
  3. the ablation: the same network and budget on labels naively upsampled
     to the T1 grid;
  4. the ceiling: the same network and budget taught by the phantoms'
     high-resolution truth (in the box, lesion share >= 0.5) instead of any
     label, which no user has: what this network can reach on these
     phantoms, whatever the labels and the loss;
and the classic baseline (white-matter voxels darker than the white-matter
median by k robust SDs, k chosen on the training phantoms against their
high-resolution truth, an advantage the networks never get).
Every method is scored on posed held-out phantoms (seeds 900000..) at 1 mm
against the high-resolution truth, after the pipeline's own registration.

``--from-train DIR`` takes (1) and (2) from a ``mrinets wmh train`` run with the
same phantoms and settings (its ``wmh_t1_step1.pt`` and ``wmh_t1.pt``: the same
computation, so the shipped weights are the ones scored) and trains only the
ablation here; it waits for DIR's weights when run beside the training.

``--eval-only`` rescores the networks and baseline k an earlier run saved in ``--out``;
``--resume`` reuses the ablation and ceiling networks an earlier run with the same
phantoms and settings saved there (the phantoms and the baseline are made again).

Scores include ``predict``'s left-right mirror pass, partial-volume trim of the mask and growth of
the trimmed mask unless ``--no-flip``, ``--no-pv-trim`` or ``--no-grow`` (the README's rows other than
the shipped default were scored before growth was the default: ``--no-grow``).

Run: ``python benchmarks/bench_wmh_accuracy.py [--train 40 --test 10 --out bench_wmh] [--from-train DIR] [--resume]``
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from mrinets.metrics.segmentation import dice
from mrinets.pipelines import wmh
from mrinets.pipelines.wmh.model import WmhTrainConfig, build_network, train_network, train_two_step
from mrinets.pipelines.wmh.segment import baseline_grid


def calibrate_baseline(subjects) -> tuple[float, dict]:
    scores = {}
    for k in (1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0, 8.0):
        scores[k] = float(np.mean([dice(baseline_grid(s.image, k) > 0, s.truth >= 0.5) for s in subjects]))
    return max(scores, key=scores.get), scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=40)
    parser.add_argument("--test", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--samples-per-subject", type=int, default=48)
    parser.add_argument("--out", default="bench_wmh")
    parser.add_argument("--workers", type=int, default=1, help="processes that simulate the training phantoms")
    parser.add_argument("--from-train", help="folder of a `mrinets wmh train` run with the same settings")
    parser.add_argument("--eval-only", action="store_true",
                        help="score the networks and baseline k saved in --out by an earlier run (after a change "
                             "to prediction)")
    parser.add_argument("--no-flip", action="store_true", help="score without predict's mirror pass")
    parser.add_argument("--no-pv-trim", action="store_true", help="score without predict's partial-volume trim")
    parser.add_argument("--no-grow", action="store_true", help="score without predict's growth of the trimmed mask")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the ablation and ceiling networks an earlier run with the same settings saved in "
                             "--out")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.eval_only:
        evaluate_saved(out, args.test, flip=not args.no_flip, pv_trim=not args.no_pv_trim, grow=_grow(args))
        return
    subjects = wmh.phantom_subjects(range(1000, 1000 + args.train), workers=args.workers, quiet=True)
    gross = [s.name for s in subjects if s.meta.get("gross")]
    config = WmhTrainConfig(epochs=args.epochs, samples_per_subject=args.samples_per_subject, quiet=True)
    naive = _trained(out / _file(NAIVE), subjects, replace(config, loss="naive"), args.resume)
    truth_taught = [replace(s, naive=(s.truth >= 0.5).astype(np.float32), weight=1.0) for s in subjects]
    ceiling = _trained(out / _file(CEILING), truth_taught, replace(config, loss="naive"), args.resume)
    if args.from_train:
        folder = Path(args.from_train)
        while not (folder / "train_report.json").is_file():
            time.sleep(30)
        one_step = wmh.load_model(folder / "wmh_t1_step1.pt").network
        two_step = wmh.load_model(folder / "wmh_t1.pt").network
        report = json.loads((folder / "train_report.json").read_text())
        report.pop("held_out", None)
    else:
        one_step = train_network(subjects, config)
        two_step, report, _ = train_two_step(subjects, config, first=one_step)
    k, k_scores = calibrate_baseline(subjects)
    models = {"super-resolution, two-step": two_step, "super-resolution, one step": one_step,
              NAIVE: naive, CEILING: ceiling}
    for name, model in models.items():
        torch.save(model.state_dict(), out / _file(name))
    seeds = list(range(wmh.TEST_SEED_START, wmh.TEST_SEED_START + args.test))
    results = wmh.evaluate_phantoms({n: wmh.WmhModel(m, config.patch_size, {}) for n, m in models.items()}, seeds,
                                    baseline_k=k, flip=not args.no_flip, pv_trim=not args.no_pv_trim,
                                    grow=_grow(args))
    results.update(two_step=report, grossly_wrong_labels=gross, baseline_k=k, baseline_k_scores=k_scores,
                   seconds=round(time.perf_counter() - start))
    (out / "wmh_accuracy.json").write_text(json.dumps(results, indent=2, default=float))
    print(f"{args.train} training phantoms ({len(gross)} grossly wrong labels: {', '.join(gross) or 'none'}); "
          f"two-step dropped: {', '.join(report['dropped']) or 'none'}")
    table(results)


NAIVE = "naive upsampling, one step"
CEILING = "ceiling: taught by the 1 mm truth"


def _file(name: str) -> str:
    return f"{name.replace(':', '').replace(', ', '_').replace(' ', '-')}.pt"


def _trained(path: Path, subjects, config: WmhTrainConfig, resume: bool) -> torch.nn.Module:
    """The network saved at ``path`` with ``resume``, else one trained now (and saved there)."""
    if resume and path.is_file():
        print(f"reused {path}")
        return _load(path, config)
    network = train_network(subjects, config)
    torch.save(network.state_dict(), path)
    return network


def _load(path: Path, config: WmhTrainConfig) -> torch.nn.Module:
    network = build_network(config.channels)
    network.load_state_dict(torch.load(path, weights_only=True))
    return network.eval()


def _grow(args: argparse.Namespace) -> bool | None:
    return False if args.no_grow else None


def evaluate_saved(out: Path, n_test: int, *, flip: bool = True, pv_trim: bool = True,
                   grow: bool | None = None) -> None:
    earlier = json.loads((out / "wmh_accuracy.json").read_text())
    config = WmhTrainConfig()
    models = {}
    for name in (n for n in earlier["summary"] if n != "baseline"):
        models[name] = wmh.WmhModel(_load(out / _file(name), config), config.patch_size, {})
    start = time.perf_counter()
    seeds = list(range(wmh.TEST_SEED_START, wmh.TEST_SEED_START + n_test))
    results = wmh.evaluate_phantoms(models, seeds, baseline_k=earlier["baseline_k"], flip=flip, pv_trim=pv_trim,
                                    grow=grow)
    results.update({k: earlier[k] for k in ("two_step", "grossly_wrong_labels", "baseline_k", "baseline_k_scores")},
                   seconds=round(time.perf_counter() - start))
    (out / "wmh_accuracy.json").write_text(json.dumps(results, indent=2, default=float))
    table(results)


def table(results: dict) -> None:
    seeds, k = results["seeds"], results["baseline_k"]
    print(f"held-out phantoms: seeds {seeds[0]}..{seeds[-1]}, scored at 1 mm, registration included")
    print(f"{'method':34}{'Dice':>14}{'lesion TPR':>12}{'lesion FPR':>12}{'vol r':>8}{'bias mL':>9}")
    for name, s in results["summary"].items():
        label = f"baseline (k = {k:g})" if name == "baseline" else name
        print(f"{label:34}{s['dice_mean']:>8.3f} ± {s['dice_sd']:.2f}{s['lesion_tpr_mean']:>12.2f}"
              f"{s['lesion_fpr_mean']:>12.2f}{s['volume_pearson_r']:>8.3f}{s['volume_bias_ml']:>+9.2f}")
    print(f"total {results['seconds']} s")


if __name__ == "__main__":
    main()
