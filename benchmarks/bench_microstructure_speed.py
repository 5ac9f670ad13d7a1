"""Whole-brain NODDI speed: the network beside the reference fitter (and AMICO when installed), same data.

A target phantom at 1.7 mm (about 300,000 brain voxels) on the network's
31-volume scheme. Targets: network under 15 s on 2 CPU cores, and at least
20 times faster than the reference fitter.

    python benchmarks/bench_microstructure_speed.py [--weights W] [--no-amico]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from mrinets.data.phantoms.microstructure import make_truth, simulate_dwi
from mrinets.io.nifti import from_array
from mrinets.physics.diffusion.amico import NoddiModel
from mrinets.pipelines import microstructure as ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="network weights (default: shipped)")
    parser.add_argument("--voxel", type=float, default=1.7)
    parser.add_argument("--no-amico", action="store_true", help="skip the AMICO peer")
    args = parser.parse_args()
    torch.set_num_threads(2)

    scheme = ms.target_scheme()
    truth = make_truth(1234, voxel_mm=args.voxel, population="target")
    dwi = simulate_dwi(truth, scheme, snr=20.0, rng=np.random.default_rng(0))
    image = from_array(dwi, truth.affine)
    mask = from_array(truth.mask.astype(np.float32), truth.affine)
    n = int(truth.mask.sum())
    model = ms.load_model(args.weights)

    t = time.perf_counter()
    ms.predict(image, scheme, mask, model=model, config=ms.MicrostructureConfig(device="cpu"))
    net_s = time.perf_counter() - t
    t = time.perf_counter()
    NoddiModel(scheme).fit(dwi, truth.mask)
    fit_s = time.perf_counter() - t
    rows = [("mrinets network (predict, whole pipeline)", net_s), ("mrinets reference fit (AMICO-style)", fit_s)]
    if not args.no_amico:
        try:
            from benchmarks.peers.amico_noddi import amico_noddi
        except ImportError as exc:
            print(f"AMICO peer skipped: {exc}")
        else:
            t = time.perf_counter()
            res = amico_noddi(dwi, truth.mask, scheme.bvals, scheme.bvecs, voxel_size=args.voxel)
            rows.append((f"dmri-amico 2.x (fit {res['fit_seconds']:.1f} s + kernels {res['lut_seconds']:.1f} s)",
                         time.perf_counter() - t))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"\n{n} brain voxels x {scheme.n} volumes at {args.voxel} mm, {torch.get_num_threads()} threads")
    print(f"{'method':58s} {'seconds':>8s} {'vs network':>10s}")
    for name, sec in rows:
        print(f"{name:58s} {sec:8.2f} {sec / net_s:9.1f}x")
    print(f"targets: network < 15 s ({'met' if net_s < 15 else 'NOT met'}), reference fit / network >= 20 "
          f"({'met' if fit_s / net_s >= 20 else 'NOT met'}); peak RSS {peak:.2f} GB")


if __name__ == "__main__":
    main()
