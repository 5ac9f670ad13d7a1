"""Low-field translation: LoHiResGAN (shipped weights) beside its four baselines on held-out pairs.

The baselines (U-Net, GAN, pix2pix cGAN, CycleGAN) are trained here with the
shipped model's data and budget (the card's subjects, iterations, batch size
and seed; only --model differs), exactly as `mrinets lowfield train --model X`
would, and cached in --weights-dir. Every method, and the raw low-field scan,
is scored on the same held-out pairs (seeds from 900000): SSIM, PSNR and NRMSE
inside the 3 T brain mask, PIQE of the brain's axial slices, and regional
volumes (GM/WM per hemisphere, central CSF) from one tissue classifier,
compared with the 3 T scan's. Then one whole low-field volume is translated
by `predict` (resampling, masking, translation and measures) on 2 threads.

    OMP_NUM_THREADS=1 python benchmarks/bench_lowfield.py --subjects 4 --real-t1 \
        /work/shared/reference/deep-t1-wmh/t1_image.nii.gz
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from mrinets.pipelines import lowfield

BASELINES = ("unet", "gan", "cgan", "cyclegan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contrast", choices=("t1", "t2"), default="t1")
    parser.add_argument("--subjects", type=int, default=4, help="held-out pairs")
    parser.add_argument("--weights-dir", default="/tmp/mrinets-bench-lowfield", help="cache of trained baselines")
    parser.add_argument("--cache", default="/tmp/mrinets-bench-lowfield/phantoms", help="cache of phantom pairs")
    parser.add_argument("--real-t1", help="a real 3 T T1 degraded by our model and translated back")
    parser.add_argument("--json", help="also write the scores here")
    parser.add_argument("--baselines", nargs="*", default=list(BASELINES), choices=BASELINES,
                        help="baselines to train (or load from --weights-dir) and score")
    parser.add_argument("--cyclegan-iterations", type=int,
                        help="CycleGAN iterations (default: half the card's: each of its iterations updates two "
                             "generators and two discriminators, about twice LoHiResGAN's compute)")
    args = parser.parse_args()

    torch.set_num_threads(1)
    shipped = lowfield.load_model(None, args.contrast)
    config = dict(shipped.card["config"])
    models = {"lohiresgan": shipped}
    weights_dir = Path(args.weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    train_seconds = {"lohiresgan": shipped.card.get("history", {}).get("seconds")}
    for name in args.baselines:
        path = weights_dir / f"lowfield_{name}_{args.contrast}.pt"
        cfg = lowfield.TrainConfig(**{**config, "model": name, "device": "cpu"})
        if name == "cyclegan":
            cfg.iterations = args.cyclegan_iterations or max(1, config["iterations"] // 2)
        if path.exists() and _same(lowfield.load_model(path, args.contrast).card.get("config"), cfg.as_dict()):
            models[name] = lowfield.load_model(path, args.contrast)
        else:
            model, _ = lowfield.train(cfg, cache=args.cache, quiet=False)
            model.card["model"] = name
            lowfield.save_weights(model, path)
            models[name] = model
        train_seconds[name] = models[name].card.get("history", {}).get("seconds")

    tic = time.perf_counter()
    scores, pairs = lowfield.evaluate(models, contrast=args.contrast, subjects=args.subjects, cache=args.cache,
                                      real_t1=args.real_t1 if args.contrast == "t1" else None, quiet=False)
    eval_s = time.perf_counter() - tic

    # One whole volume through predict, as a user runs it, on 2 threads.
    from mrinets.io.nifti import from_array

    torch.set_num_threads(2)
    pair = pairs[0]
    image = from_array(pair.lowfield, pair.lowfield_affine)
    tic = time.perf_counter()
    result = lowfield.predict(image, contrast=args.contrast, model=shipped, device="cpu")
    predict_s = time.perf_counter() - tic

    print(f"\nLow-field -> 3 T, {args.contrast.upper()}w, {scores['subjects']} held-out pairs (seeds from 900000); "
          f"2 mm working grid; PIQE of the 3 T images {scores['piqe_3t']:.1f}")
    _table(scores["methods"], train_seconds)
    if "real_t1" in scores:
        print(f"\nReal 3 T T1 ({scores['real_t1']['file']}) degraded by our 64 mT model, translated back; "
              f"PIQE of the 3 T image {scores['real_t1']['piqe_3t']:.1f}")
        _table(scores["real_t1"]["methods"], train_seconds)
    methods = scores["methods"]
    best_baseline = {m: (max if m in ("ssim", "psnr") else min)(methods[b][m] for b in args.baselines)
                     for m in ("ssim", "psnr", "nrmse")}
    ours = methods["lohiresgan"]
    print("\nTargets (issue 40)")
    for m in ("ssim", "psnr", "nrmse"):
        ahead = ours[m] > best_baseline[m] if m != "nrmse" else ours[m] < best_baseline[m]
        print(f"  LoHiResGAN {m.upper():5s} {ours[m]:.4f} vs best baseline {best_baseline[m]:.4f}: "
              f"{'met' if ahead else 'NOT met'}")
    lf = methods["lowfield"]
    print(f"  PIQE {ours['piqe']:.1f} vs low-field input {lf['piqe']:.1f}: "
          f"{'met' if ours['piqe'] < lf['piqe'] else 'NOT met'}")
    ratio = ours["mean_abs_pct_diff_regional"] / lf["mean_abs_pct_diff_regional"]
    print(f"  regional volume |% diff| {ours['mean_abs_pct_diff_regional']:.1f} vs low-field "
          f"{lf['mean_abs_pct_diff_regional']:.1f} (ratio {ratio:.2f}, target <= 0.5): "
          f"{'met' if ratio <= 0.5 else 'NOT met'}")
    print(f"  whole volume {pair.lowfield.shape} through predict on 2 threads: {predict_s:.1f} s "
          f"(translation alone {result.measures['seconds_translate']} s; target < 30 s): "
          f"{'met' if predict_s < 30 else 'NOT met'}")
    print(f"  (evaluation took {eval_s:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps({"scores": {k: v for k, v in scores.items() if k != "per_subject"},
                                               "predict_seconds": predict_s, "train_seconds": train_seconds},
                                              indent=2, default=float))


def _same(a: dict | None, b: dict) -> bool:
    """Configs equal but for the device (weights do not depend on it)."""
    return a is not None and {k: v for k, v in a.items() if k != "device"} == {k: v for k, v in b.items()
                                                                                if k != "device"}


def _table(methods: dict, train_seconds: dict) -> None:
    print(f"{'method':12s} {'SSIM':>7s} {'PSNR dB':>8s} {'NRMSE':>7s} {'PIQE':>6s} {'reg |%d|':>9s} "
          f"{'ICC gm':>7s} {'ICC wm':>7s} {'ICC csf':>8s} {'train s':>8s}")
    for name, s in methods.items():
        icc = s["icc"]
        t = train_seconds.get(name)
        print(f"{name:12s} {s['ssim']:7.4f} {s['psnr']:8.2f} {s['nrmse']:7.4f} {s['piqe']:6.1f} "
              f"{s['mean_abs_pct_diff_regional']:9.1f} {_f(icc['gm']):>7s} {_f(icc['wm']):>7s} {_f(icc['csf']):>8s} "
              f"{'' if t is None else f'{t:.0f}':>8s}")


def _f(value: float) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.2f}"


if __name__ == "__main__":
    main()
