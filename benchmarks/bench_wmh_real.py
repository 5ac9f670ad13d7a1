"""WMH on the real MS patient: the network beside the classic baseline, time, and how its lesions look on T1.

The patient (../shared/reference/ms-lesion-t1: skull-stripped, N4-corrected,
registered to MNI at 1 mm, LAS, values slightly negative at the brain edge;
consensus lesion mask drawn on FLAIR by several raters) goes through
``mrinets wmh predict`` as it is shipped, once with the network and once with
the classic k-sigma baseline, each a fresh process (wall and CPU seconds; the
machine is shared, so CPU time is the steadier figure). ``mrinets wmh
evaluate`` scores both masks against the consensus. The last table measures
the lesions' T1 contrast (T1 over the template's core white-matter median, as
``predict`` scales it) on the patient and on held-out phantoms.

Run: ``python benchmarks/bench_wmh_real.py [--phantoms 3] [--weights WEIGHTS] [--no-grow]``
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PATIENT = Path(__file__).resolve().parents[2] / "shared" / "reference" / "ms-lesion-t1"
TARGET_SECONDS = 25.0


def _run(argv: list[str]) -> tuple[float, float, str]:
    """Wall and CPU seconds (children's user + system) of one fresh ``mrinets`` process, and its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mrinets.cli", *argv], check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), done.stdout


def _levels(t1: np.ndarray, affine: np.ndarray, lesion: np.ndarray, to_mni: np.ndarray) -> dict:
    """Median T1 of lesion, lesion core, normal white matter, grey matter and ventricles over the white-matter median."""
    from scipy import ndimage

    from mrinets.data.templates import load_mni
    from mrinets.pipelines.wmh.grid import GRID_AFFINE, GRID_SHAPE, csf_reference, grid_wm, to_grid, wm_reference
    from mrinets.physics.sampling import affine_resample

    box = to_grid(t1, affine, to_mni)
    lesion_box = to_grid(lesion.astype(np.float32), affine, to_mni) > 0.5
    reference = wm_reference(box)
    mni = load_mni()
    gm = affine_resample(mni.gm.data, mni.affine, GRID_AFFINE, GRID_SHAPE) > 0.7
    wm = (grid_wm() > 0.9) & ~ndimage.binary_dilation(lesion_box, iterations=2)
    scaled = box / reference
    core = ndimage.binary_erosion(lesion_box)
    return {"lesion": float(np.median(scaled[lesion_box])), "lesion core": float(np.median(scaled[core])),
            "lesion p90": float(np.percentile(scaled[lesion_box], 90)), "white matter": float(np.median(scaled[wm])),
            "grey matter": float(np.median(scaled[gm & ~lesion_box])),
            "ventricles": csf_reference(box) / reference, "lesion mL": float(lesion.sum()) / 1000.0}


def error_breakdown(t1_path: Path, truth_path: Path, outs: dict[str, Path]) -> None:
    """Print where each method's errors lie: T1 of consensus, rims, found and missed voxels; false positives by region.

    T1 is over the median of the normal-appearing white matter (brain voxels above the 60th percentile, 3 voxels
    or more from the consensus); the regions are ``predict``'s (``*_wmh_regions.nii.gz``).
    """
    from scipy import ndimage

    from mrinets.data.atlas import REGION_NAMES
    from mrinets.io import load

    t1, truth = load(t1_path).data, load(truth_path, allow_empty=True).data > 0.5
    first = next(iter(outs.values()))
    regions = load(next(first.glob("*_wmh_regions.nii.gz"))).data.astype(int)
    brain = (regions > 0) & ~ndimage.binary_dilation(truth, iterations=3)
    scaled = t1 / np.median(t1[brain & (t1 > np.percentile(t1[t1 > 0], 60))])
    core = ndimage.binary_erosion(truth)
    rim = truth & ~core
    print(f"\nconsensus: {(scaled[truth] >= 0.9).mean():.0%} of its volume has T1 >= 0.9 of white matter; rims (outer "
          f"voxel) {rim.sum() / truth.sum():.0%} of it, T1 median {np.median(scaled[rim]):.2f} against "
          f"{np.median(scaled[core]):.2f} in the cores")
    for method, out in outs.items():
        mask = load(next(out.glob("*_wmh_mask.nii.gz")), allow_empty=True).data > 0.5
        labels, _ = ndimage.label(mask)
        hit = np.unique(labels[truth & mask])
        false = mask & ~np.isin(labels, hit[hit > 0])
        by_region = ", ".join(f"{name} {(false & (regions == i)).sum() / 1000:.2f}"
                              for i, name in enumerate(REGION_NAMES, start=1))
        found = np.median(scaled[truth & mask]) if (truth & mask).any() else float("nan")
        print(f"{method}: consensus voxels found T1 median {found:.2f}, missed {np.median(scaled[truth & ~mask]):.2f}; "
              f"false-positive lesions (mL) {by_region}, outside the regions {(false & (regions == 0)).sum() / 1000:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phantoms", type=int, default=3, help="held-out phantoms (seeds from 900000) for contrast")
    parser.add_argument("--weights", help="the network's weights (default: the shipped ones)")
    parser.add_argument("--no-grow", action="store_true", help="the network's mask trimmed but not grown")
    args = parser.parse_args()
    if not PATIENT.is_dir():
        sys.exit(f"{PATIENT} is absent: this benchmark needs ../shared/reference")
    t1, truth = PATIENT / "T1.nii.gz", PATIENT / "consensus_gt.nii.gz"
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("network", "baseline"):
            out = Path(tmp) / method
            weights = ["--weights", args.weights] if args.weights and method == "network" else []
            if args.no_grow and method == "network":
                weights.append("--no-grow")
            wall, cpu, _ = _run(["wmh", "predict", str(t1), "--out", str(out), "--method", method, "--quiet", *weights])
            _, _, text = _run(["wmh", "evaluate", "--pred", str(out / "T1_wmh_mask.nii.gz"), "--truth", str(truth)])
            measures = next(csv.DictReader(open(out / "T1_wmh.csv")))
            rows[method] = {"wall": wall, "cpu": cpu, **json.loads(text)["subjects"][0],
                            "input_kind": measures["input_kind"]}
        truth_ml = rows["network"]["true_ml"]
        print(f"mrinets wmh predict {t1} (input_kind {rows['network']['input_kind']}), scored by mrinets wmh evaluate "
              f"against the consensus ({truth_ml:.2f} mL)")
        print(f"{'method':10}{'wall s':>8}{'CPU s':>8}{'Dice':>7}{'lesion TPR':>12}{'lesion FPR':>12}{'volume mL':>11}"
              f"{'missed mL':>11}{'FP lesion mL':>14}")
        for method, r in rows.items():
            print(f"{method:10}{r['wall']:>8.1f}{r['cpu']:>8.1f}{r['dice']:>7.3f}{r['tpr']:>12.2f}{r['fpr']:>12.2f}"
                  f"{r['pred_ml']:>11.2f}{r['missed_ml']:>11.2f}{r['fp_lesion_ml']:>14.2f}")
        print(f"targets: wall <= {TARGET_SECONDS:g} s; volume within 50 % of {truth_ml:.2f} mL; "
              f"Dice >= baseline + 0.15 = {rows['baseline']['dice'] + 0.15:.3f}")
        error_breakdown(t1, truth, {m: Path(tmp) / m for m in rows})

    from mrinets.data.phantoms.wmh import make_wmh_subject
    from mrinets.io import load
    from mrinets.preprocess.register import register_to_mni

    image, lesion = load(t1), load(truth, allow_empty=True).data > 0.5
    levels = {"MS patient (consensus)": _levels(image.data, image.affine, lesion, register_to_mni(image).matrix)}
    for seed in range(900_000, 900_000 + args.phantoms):
        p = make_wmh_subject(seed)
        levels[f"phantom {seed} (truth)"] = _levels(p.t1, p.t1_affine, p.truth_mask, p.to_mni)
    names = list(next(iter(levels.values())))
    print("\nT1 over the template's core white-matter median (medians)")
    print(f"{'':26}" + "".join(f"{n:>14}" for n in names))
    for who, v in levels.items():
        print(f"{who:26}" + "".join(f"{v[n]:>14.2f}" for n in names))


if __name__ == "__main__":
    main()
