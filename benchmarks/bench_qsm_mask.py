"""QSM brain masks: the masking network beside the classic mask (threshold + morphology), Dice against the truth.

Held-out ``mrinets phantom qsm`` heads (seeds 95000+, never used in training),
each as simulated and in the variants of
:func:`mrinets.pipelines.qsm_mask.held_out_cases` (thick slices, axes swapped
and flipped, bias field + noise, last echo, bright extra-cerebral CSF, CSF +
dephasing + bias). Then both masks on the real GRE crop
(/work/shared/reference/clearswi-small, no ground truth: the share of the crop
each calls brain), and the network's time on a 256 x 256 x 80 grid.

Run: ``python benchmarks/bench_qsm_mask.py [--phantoms 2] [--weights W.pt]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from mrinets.pipelines import qsm_mask as qm
from mrinets.preprocess.mask import gre_brain_mask

REAL = Path("/work/shared/reference/clearswi-small")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phantoms", type=int, default=2)
    parser.add_argument("--weights", help="masking network weights (default: the shipped ones)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = qm.load_mask_model(args.weights)
    rows = []
    print("| held-out case | network Dice | classic Dice | network s | classic s |")
    print("|---|---|---|---|---|")
    for name, mag, truth, vox in qm.held_out_cases(args.phantoms):
        tic = time.perf_counter()
        net = qm.net_brain_mask(mag, voxel_size=vox, model=model)
        t_net = time.perf_counter() - tic
        tic = time.perf_counter()
        classic = gre_brain_mask(mag, voxel_size=vox)
        t_classic = time.perf_counter() - tic
        rows.append((qm.dice(net, truth), qm.dice(classic, truth), t_net, t_classic))
        print(f"| {name} | {rows[-1][0]:.4f} | {rows[-1][1]:.4f} | {t_net:.1f} | {t_classic:.1f} |", flush=True)
    mean = np.mean(rows, axis=0)
    print(f"| **mean** (target: network >= 0.95 and above classic) | {mean[0]:.4f} | {mean[1]:.4f} | {mean[2]:.1f} | "
          f"{mean[3]:.1f} |")
    print(f"| **worst case** | {np.min([r[0] for r in rows]):.4f} | {np.min([r[1] for r in rows]):.4f} | | |")
    if (REAL / "mag.nii").exists():
        import nibabel as nib

        img = nib.load(REAL / "mag.nii")
        mag = np.asarray(img.dataobj, np.float32)
        vox = img.header.get_zooms()[:3]
        net = qm.net_brain_mask(mag, voxel_size=vox, model=model)
        classic = gre_brain_mask(mag, voxel_size=vox)
        print(f"\nReal GRE crop {REAL} {mag.shape}: share called brain: network {net.mean():.3f}, classic "
              f"{classic.mean():.3f}; Dice network vs classic {qm.dice(net, classic):.4f}")
    else:
        print(f"\nReal GRE crop {REAL} absent: skipped")
    shape = (256, 256, 80)
    grid = np.indices(shape).astype(np.float32)
    centre = (np.asarray(shape, np.float32) - 1)[:, None, None, None] / 2
    head = (((grid - centre) / (np.asarray(shape, np.float32)[:, None, None, None] * 0.45)) ** 2).sum(0) < 1
    mag = np.where(head, 1.0, 0.02).astype(np.float32) * np.random.default_rng(0).uniform(0.8, 1.2, shape)
    print(f"\n| 256x256x80 at 0.9x0.9x2 mm, {args.threads} threads | s | parameters |")
    print("|---|---|---|")
    tic = time.perf_counter()
    qm.net_brain_mask(mag, voxel_size=(0.9, 0.9, 2.0), model=model)
    n_params = sum(p.numel() for p in model.net.parameters())
    print(f"| masking network (MONAI UNet {model.net.config()['channels']}) | {time.perf_counter() - tic:.1f} | "
          f"{n_params} |")
    # The issue names UNETR: an (untrained) small UNETR in the same place, to compare the cost only.
    from monai.networks.nets import UNETR

    unetr = qm.MaskModel(UNETR(1, 1, (64, 64, 64), feature_size=8, hidden_size=48, mlp_dim=96, num_heads=4,
                               norm_name="instance"), dict(model.config, patch=32))
    unetr.net.divisor = 64
    tic = time.perf_counter()
    qm.net_brain_mask(mag, voxel_size=(0.9, 0.9, 2.0), model=unetr)
    n_params = sum(p.numel() for p in unetr.net.parameters())
    print(f"| UNETR 64^3 windows, feature 8, hidden 48 (untrained, cost only) | {time.perf_counter() - tic:.1f} | "
          f"{n_params} |")


if __name__ == "__main__":
    main()
