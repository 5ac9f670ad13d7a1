"""PedQ-NET against TKD, TV and its own ablation without the segmentation loss, on held-out phantoms.

Each held-out phantom (``mrinets phantom qsm`` heads, seeds never used in
training, oblique B0, every other one low-iron and weakly myelinated like an
infant brain) is inverted either from its true local field plus noise (SNR 100)
in its true brain mask (``--source clean``, the default: only the inversion is
scored) or after the whole QSM pipeline from magnitude and wrapped phase
(``--source pipeline``: unwrapping, V-SHARP, with the true brain mask); only
the dipole inversion differs between rows. Scores: NRMSE, HFEN, SSIM overall
and inside the nuclei, nucleus-edge sharpness relative to the truth's, and the
dipole kernel estimated backward from (local field, chi). Then the speed of
whole-volume PedQ-NET inference on a 256 x 256 x 80 grid, beside the 60 s limit.

Run: ``python benchmarks/bench_pedqnet.py [--seeds 91000 91001] [--voxel-size 1.8] [--ablation W.pt]
[--weights W.pt] [--source clean|pipeline]``
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from scipy import ndimage

from mrinets.data.phantoms.qsm import make_qsm_head
from mrinets.metrics.qsm import edge_sharpness, estimate_dipole_kernel, qsm_scores
from mrinets.physics.dipole import b0_direction_in_voxels
from mrinets.pipelines import pedqnet as pq
from mrinets.pipelines.qsm import QsmConfig, invert_local_field, reconstruct


def score(chi, truth, mask, labels, field, voxel, b0_vox) -> dict:
    lab = np.where(mask, labels, 0)
    nuclei = ndimage.binary_dilation(lab > 0) & mask
    overall = qsm_scores(chi, truth, mask=mask)
    inside = qsm_scores(chi, truth, mask=nuclei)
    sharp = edge_sharpness(chi, lab, voxel_size=voxel) / edge_sharpness(truth, lab, voxel_size=voxel)
    kernel = estimate_dipole_kernel(np.where(mask, field, 0), np.where(mask, chi, 0), voxel_size=voxel,
                                    b0_dir=b0_vox)
    return {"nrmse": overall["nrmse_percent"], "hfen": overall["hfen_percent"], "ssim": overall["ssim"],
            "nuc_nrmse": inside["nrmse_percent"], "nuc_hfen": inside["hfen_percent"], "nuc_ssim": inside["ssim"],
            "sharpness": sharp, "kernel_err": kernel["kernel_rel_error"], "b0_angle": kernel["b0_angle_error_deg"]}


def _clean_field(p, rng) -> np.ndarray:
    """The phantom's true local field plus the noise of a phase at SNR 100 (as the training command's held-out)."""
    weight = pq._normalised_magnitude(p.magnitude, p.mask)
    noise = rng.standard_normal(p.mask.shape) / (100.0 * np.maximum(weight, 0.1) * pq.phase_scale(p.b0, pq.DEFAULT_TE))
    return np.where(p.mask, p.local_field + noise, 0).astype(np.float32)


def accuracy(seeds, voxel_size: float, ablation: str | None, finetune: int, weights: str | None = None,
             source: str = "clean") -> dict[str, list[dict]]:
    methods = {"tkd": None, "tv": None, "pedqnet": pq.load_model(weights)}
    if ablation:
        methods["pedqnet-noseg"] = pq.load_model(ablation)
    if finetune:
        methods[f"pedqnet+ft{finetune}"] = methods["pedqnet"]
    rows: dict[str, list[dict]] = {m: [] for m in methods}
    for i, seed in enumerate(seeds):
        rng = np.random.default_rng(seed)
        low = i % 2 == 1
        tilt = np.deg2rad(rng.uniform(10, 30))
        b0_dir = (float(np.sin(tilt)), 0.0, float(np.cos(tilt)))
        p = make_qsm_head(seed, voxel_size=voxel_size, b0_dir=b0_dir, iron_scale=0.3 if low else 1.0,
                          myelin_scale=0.3 if low else 1.0, snr=100.0)
        voxel = np.full(3, voxel_size)
        b0_vox = b0_direction_in_voxels(b0_dir, p.affine)
        if source == "clean":
            local, mask = _clean_field(p, rng), p.mask
        else:
            base = QsmConfig(echo_times=p.echo_times, b0=p.b0, b0_dir=b0_dir, method="tkd")
            out = reconstruct(p.magnitude, p.phase, affine=p.affine, config=base, mask=p.mask)
            local, mask = out["local_field"], out["mask"]
        weight = np.sqrt((p.magnitude**2).mean(-1))
        for name, model in methods.items():
            tic = time.perf_counter()
            ft = finetune if "+ft" in name else 0
            config = QsmConfig(echo_times=p.echo_times, b0=p.b0, b0_dir=b0_dir,
                               method="pedqnet" if model is not None else name, finetune_steps=ft, device="cpu")
            chi, _ = invert_local_field(local, mask, voxel_size=voxel, b0_vox=b0_vox, config=config,
                                        magnitude=weight, te=max(p.echo_times), model=model)
            row = score(chi, p.chi, mask, p.labels, local, voxel, b0_vox)
            row.update(seed=seed, low_iron=low, seconds=time.perf_counter() - tic)
            rows[name].append(row)
            print(json.dumps({"method": name, **{k: round(v, 4) if isinstance(v, float) else v
                                                 for k, v in row.items()}}), flush=True)
    return rows


def speed(shape=(256, 256, 80), threads: int = 2, weights: str | None = None,
          segment: bool = True) -> tuple[float, float]:
    """Wall seconds and CPU seconds of this process (all threads) for one whole-volume inversion."""
    torch.set_num_threads(threads)
    model = pq.load_model(weights)
    rng = np.random.default_rng(0)
    grid = np.indices(shape).astype(np.float32)
    centre = (np.asarray(shape, np.float32) - 1)[:, None, None, None] / 2
    mask = (((grid - centre) / (np.asarray(shape, np.float32)[:, None, None, None] * 0.45)) ** 2).sum(0) < 1
    field = np.where(mask, ndimage.gaussian_filter(rng.standard_normal(shape), 3) * 0.05, 0).astype(np.float32)
    tic, cpu = time.perf_counter(), time.process_time()
    pq.invert(field, mask, voxel_size=(0.9, 0.9, 2.0), b0_dir=(0, 0, 1), model=model, device="cpu", segment=segment)
    return time.perf_counter() - tic, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[91000, 91001])
    parser.add_argument("--voxel-size", type=float, default=1.8)
    parser.add_argument("--ablation", help="weights of `mrinets qsm train ... --no-segment`")
    parser.add_argument("--weights", help="PedQ-NET weights to score (default: the shipped ones)")
    parser.add_argument("--source", choices=("clean", "pipeline"), default="clean",
                        help="invert the true local field + noise (clean) or the full pipeline's local field")
    parser.add_argument("--finetune", type=int, default=0, help="also PedQ-NET with this many fine-tuning steps")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the speed test")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = {} if args.skip_accuracy else accuracy(args.seeds, args.voxel_size, args.ablation, args.finetune,
                                                  args.weights, args.source)
    keys = ["nrmse", "hfen", "ssim", "nuc_nrmse", "nuc_hfen", "nuc_ssim", "sharpness", "kernel_err", "b0_angle",
            "seconds"]
    subsets = (("all", lambda r: True), ("adult iron", lambda r: not r["low_iron"]),
               ("low iron", lambda r: r["low_iron"]))
    for subset, pick in () if args.skip_accuracy else subsets:
        where = "true local field + noise" if args.source == "clean" else "full pipeline"
        print(f"\nHeld-out phantoms ({subset}), {args.voxel_size} mm, oblique B0, {where}, mean over seeds")
        print("| method | NRMSE % | HFEN % | SSIM | nuclei NRMSE % | nuclei HFEN % | nuclei SSIM | edge sharpness "
              "(truth 1) | kernel rel. error | B0 angle error deg | inversion s |")
        print("|---|" + "---|" * len(keys))
        for name, rs in rows.items():
            sel = [r for r in rs if pick(r)]
            if sel:
                print(f"| {name} | " + " | ".join(f"{np.mean([r[k] for r in sel]):.3f}" for k in keys) + " |")
    if not args.skip_speed:
        # On a shared machine the wall time depends on the others' load. This process's CPU seconds (all threads)
        # bound the wall time on idle cores: between CPU / threads (perfect parallelism) and CPU (none).
        load = os.getloadavg()[0]
        print(f"\n| whole-volume PedQ-NET inference, 256x256x80, {args.threads} threads (load {load:.1f} on "
              f"{os.cpu_count()} cores) | wall s | CPU s, all threads | limit s |")
        print("|---|---|---|---|")
        for label, segment in (("chi only (--no-nuclei)", False), ("chi + nuclei", True)):
            wall, cpu = speed(threads=args.threads, weights=args.weights, segment=segment)
            print(f"| {label} | {wall:.1f} | {cpu:.1f} | 60 |", flush=True)


if __name__ == "__main__":
    main()
