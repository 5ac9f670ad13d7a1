"""Does pretraining help? Pretrained + fine-tuned vs trained from scratch on K target subjects (the paper's claim).

Held-out target phantoms are scored in grey and white matter against the
truth (mean absolute error of ICVF, ISOVF, ODI), beside the reference fitter
run on the same 31-volume scans. One pretraining serves every K; both arms
get the same epochs, learning-rate schedule and validation split.
``--rehearsal S`` fine-tunes with pretraining samples mixed into a share S of
every epoch (the first ``--rehearsal-subjects`` auxiliary subjects, simulated
again); choose S on validation seeds (``--test-seed-start 250000``), not on
the test seeds.

    python benchmarks/bench_microstructure_pretraining.py --out bench_micro
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from mrinets.pipelines import microstructure as ms
from mrinets.pipelines.microstructure import experiment as ex


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench_micro", help="folder for weights and the JSON table")
    parser.add_argument("--aux", type=int, default=6, help="auxiliary subjects for pretraining")
    parser.add_argument("--ks", type=int, nargs="*", default=[1, 2, 5],
                        help="target training subject counts (none: only the fitter rows)")
    parser.add_argument("--test", type=int, default=4, help="held-out target subjects")
    parser.add_argument("--pretrain-epochs", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=30, help="epochs of fine-tuning and of training from scratch")
    parser.add_argument("--finetune-lr", type=float, default=5e-4)
    parser.add_argument("--anchor", type=float, default=0.0, help="L2-SP strength of fine-tuning (0: plain)")
    parser.add_argument("--rehearsal", type=float, default=0.0,
                        help="share of every fine-tuning epoch drawn from the pretraining data (0: plain)")
    parser.add_argument("--rehearsal-subjects", type=int, default=2, help="auxiliary subjects for --rehearsal")
    parser.add_argument("--test-seed-start", type=int, default=ex.TEST_SEED_START,
                        help="first held-out seed (choose settings on other seeds than the test ones, e.g. 250000)")
    parser.add_argument("--lr", type=float, default=2e-3, help="learning rate from scratch and for pretraining")
    parser.add_argument("--pretrained", help="reuse this pretrained.pt instead of pretraining")
    parser.add_argument("--clean-inputs", action="store_true",
                        help="pretrain on the interpolated signals without the target scans' noise")
    parser.add_argument("--hq-snr", type=float,
                        help="the target subjects' full scans as a separate acquisition at this SNR (default: the "
                             "low-quality scan is a subset of the full one, both SNR 20)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    if args.pretrained:
        pretrained = ms.load_model(args.pretrained)
    else:
        pretrained, _ = ex.pretrain(args.aux, ms.FitConfig(epochs=args.pretrain_epochs, lr=args.lr, quiet=True),
                                    target_snr=None if args.clean_inputs else ex.TARGET_SNR)
        ms.save_model(pretrained, out / "pretrained.pt")
    pretrain_s = time.perf_counter() - t0
    train = [ex.target_subject(ex.TRAIN_SEED_START + i, hq_snr=args.hq_snr) for i in range(max(args.ks, default=0))]
    test = [ex.target_subject(args.test_seed_start + i, hq_snr=args.hq_snr) for i in range(args.test)]
    rehearsal = ex.rehearsal_set(pretrained, args.rehearsal_subjects) if args.rehearsal else None

    # The fit of the full scans is what every network is taught: its error is the floor they inherit.
    targets = [{"seed": s.seed, **ex.score({p: np.nan_to_num(s.hq_fit[p]) for p in ms.PARAMETERS}, s)} for s in test]
    rows = [{"method": "reference fit on the full 64 volumes", "k": None,
             **{k: float(np.mean([r[k] for r in targets])) for k in ("mae_icvf", "mae_isovf", "mae_odi", "mae_mean")}},
            {"method": "reference fit on the 31 volumes", "k": None, **_short(ex.evaluate_fit(test))},
            {"method": "pretrained only (K=0)", "k": 0, **_short(ex.evaluate(pretrained, test))}]
    for k in args.ks:
        scratch, _ = ex.finetune(train[:k], ms.FitConfig(epochs=args.epochs, lr=args.lr, quiet=True))
        tuned, _ = ex.finetune(train[:k], ms.FitConfig(epochs=args.epochs, lr=args.finetune_lr, anchor=args.anchor,
                                                       rehearsal=args.rehearsal, quiet=True),
                               init=pretrained, rehearsal=rehearsal)
        ms.save_model(tuned, out / f"finetuned_k{k}.pt")
        a, b = _short(ex.evaluate(scratch, test)), _short(ex.evaluate(tuned, test))
        gain = 100 * (a["mae_mean"] - b["mae_mean"]) / a["mae_mean"]
        gain_hq = 100 * (_hq_mean(a) - _hq_mean(b)) / _hq_mean(a)
        rows += [{"method": "from scratch", "k": k, **a},
                 {"method": "pretrained + fine-tuned", "k": k, **b, "gain_pct": round(gain, 1),
                  "gain_hq_pct": round(gain_hq, 1)}]
    table = {"rows": rows, "aux_subjects": args.aux, "test_seeds": [s.seed for s in test],
             "pretrain_seconds": round(pretrain_s, 1), "total_seconds": round(time.perf_counter() - t0, 1),
             "threads": torch.get_num_threads(), "args": vars(args)}
    (out / "pretraining_table.json").write_text(json.dumps(table, indent=2))
    print(f"\n{'method':34s} {'K':>3s} {'ICVF':>7s} {'ISOVF':>7s} {'ODI':>7s} {'mean':>7s} {'gain':>7s}")
    for r in rows:
        k = "" if r["k"] is None else str(r["k"])
        gain = f"{r['gain_pct']:+.1f}%" if "gain_pct" in r else ""
        print(f"{r['method']:34s} {k:>3s} {r['mae_icvf']:7.4f} {r['mae_isovf']:7.4f} {r['mae_odi']:7.4f} "
              f"{r['mae_mean']:7.4f} {gain:>7s}")
    print(f"(mean absolute error vs truth in GM+WM of {len(test)} held-out subjects; gain = error cut vs scratch "
          f"at the same K; target >= 10 % at K = 1, 2)")
    print("\nthe same against each test subject's fit of its full 64-volume scan (the paper's reference):")
    for r in rows:
        if "mae_hq_icvf" in r:
            k = "" if r["k"] is None else str(r["k"])
            gain = f"{r['gain_hq_pct']:+.1f}%" if "gain_hq_pct" in r else ""
            print(f"{r['method']:34s} {k:>3s} {r['mae_hq_icvf']:7.4f} {r['mae_hq_isovf']:7.4f} {r['mae_hq_odi']:7.4f} "
                  f"{_hq_mean(r):7.4f} {gain:>7s}")


def _hq_mean(r: dict) -> float:
    return (r["mae_hq_icvf"] + r["mae_hq_isovf"] + r["mae_hq_odi"]) / 3


def _short(result: dict) -> dict:
    keys = ("mae_icvf", "mae_isovf", "mae_odi", "mae_mean", "mae_hq_icvf", "mae_hq_isovf", "mae_hq_odi")
    return {k: result[k] for k in keys}


if __name__ == "__main__":
    main()
