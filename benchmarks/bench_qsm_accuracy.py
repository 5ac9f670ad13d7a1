"""Accuracy of the QSM chain on held-out susceptibility phantoms (1 mm, SNR 100).

For each seed a whole-head phantom is simulated (``mrinets phantom qsm``), the
full pipeline runs from magnitude + wrapped phase (mask from the magnitude,
echo combination, V-SHARP, TKD or TV), and the result is scored against the
true chi inside the V-SHARP mask with the 2016 QSM challenge measures and the
mean chi of each deep grey nucleus.

Run: ``python benchmarks/bench_qsm_accuracy.py [--seeds 101 102] [--voxel-size 1]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mrinets.data.phantoms.qsm import NUCLEI, make_qsm_head
from mrinets.metrics.qsm import qsm_scores
from mrinets.pipelines.qsm import METHODS, QsmConfig, reconstruct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[101, 102])
    parser.add_argument("--voxel-size", type=float, default=1.0)
    parser.add_argument("--snr", type=float, default=100.0)
    args = parser.parse_args()
    names = {lab: name for name, (lab, *_rest) in NUCLEI.items()}
    rows = []
    for seed in args.seeds:
        phantom = make_qsm_head(seed, voxel_size=args.voxel_size, snr=args.snr)
        for method in METHODS:
            tic = time.perf_counter()
            config = QsmConfig(echo_times=phantom.echo_times, b0=phantom.b0, method=method)
            out = reconstruct(phantom.magnitude, phantom.phase, affine=phantom.affine, config=config)
            seconds = time.perf_counter() - tic
            mask = out["mask"]
            scores = qsm_scores(out["chi"], phantom.chi, mask=mask, labels=np.where(mask, phantom.labels, 0),
                                names=names)
            worst = max(abs(v["error_ppm"]) for v in scores["roi"].values())
            rows.append((seed, method, scores, worst, seconds))
    print(f"QSM accuracy, {args.voxel_size:g} mm, SNR {args.snr:g}, echoes 4/12/20/28 ms, 3 T; mask from magnitude")
    print(f"{'seed':>5} {'method':>6} {'NRMSE %':>8} {'HFEN %':>8} {'SSIM':>6} {'worst nucleus err ppm':>22} {'s':>6}")
    for seed, method, s, worst, seconds in rows:
        print(f"{seed:>5} {method:>6} {s['nrmse_percent']:8.1f} {s['hfen_percent']:8.1f} {s['ssim']:6.3f} "
              f"{worst:22.4f} {seconds:6.1f}")
    print("\nper-nucleus error (ppm), mean over seeds:")
    for method in METHODS:
        errs = {}
        for seed, m, s, _, _ in rows:
            if m == method:
                for name, v in s["roi"].items():
                    errs.setdefault(name, []).append(v["error_ppm"])
        print(f"  {method}: " + ", ".join(f"{k} {np.mean(v):+.4f}" for k, v in errs.items()))
    for method in METHODS:
        mean = np.mean([s["nrmse_percent"] for _, m, s, _, _ in rows if m == method])
        print(f"mean NRMSE {method}: {mean:.1f} %")


if __name__ == "__main__":
    main()
