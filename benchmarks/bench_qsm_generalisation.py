"""Generalisation of the classic QSM chain: heads acquired as real scans vary, and where accuracy is lost.

Each variant is a head of ``make_qsm_scan`` (simulated on a fine 1 mm grid,
acquired with intravoxel dephasing on a scan grid of its own voxel size,
storage orientation and oblique angle, B0 given in world coordinates), written
to NIfTI in its storage orientation and read back as a user's files are. The
chain is then run with the truth substituted stage by stage:

  true-local    TKD on the true local field inside the true brain mask (the inversion's own limit)
  vsharp        V-SHARP of the true total field in the true mask, then TKD
  restored      the same plus the chain's restore_harmonic_loss (what the chain does after V-SHARP)
  unwrap        the chain from magnitude + wrapped phase with the true mask (our echo combination)
  full          the chain with its own mask from the magnitude (what ``mrinets qsm predict`` does)
  full-tv       the same with TV instead of TKD

Every map is scored inside one evaluation mask, the same for all rows: the
true brain eroded by ``--eval-erode`` mm (3 by default); voxels a method left
out count with the value it wrote there (zero). Chi of each map and of the
truth is referenced to its own mean in that mask (2016 challenge NRMSE). The
local field rows give the field's own NRMSE inside the evaluation mask, near
the border (< 6 mm deep) and deep. Limits: TKD of the full chain within 1.5x
of true-local; TV below 60 %.

Run: ``python benchmarks/bench_qsm_generalisation.py [--variants A B ...] [--seed 7]`` (about 2.5 min of
one core per variant); variants can run in parallel with ``--json`` and be tabled with ``--from-json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from mrinets.data.phantoms.qsm import make_qsm_head
from mrinets.io import load, load_mask
from mrinets.metrics.qsm import nrmse
from mrinets.physics.background import default_vsharp_radii, vsharp

try:  # older code (the 'before' runs) has no such step
    from mrinets.physics.background import restore_harmonic_loss
except ImportError:
    restore_harmonic_loss = None
from mrinets.physics.dipole import b0_direction_in_voxels
from mrinets.physics.inversion import tkd
from mrinets.pipelines.qsm import QsmConfig, invert_local_field, predict, reconstruct
from mrinets.preprocess.mask import erode


def _tilt(deg: float, azimuth_deg: float = 0.0) -> tuple[float, float, float]:
    t, a = np.deg2rad(deg), np.deg2rad(azimuth_deg)
    return (float(np.sin(t) * np.cos(a)), float(np.sin(t) * np.sin(a)), float(np.cos(t)))


# name: make_qsm_scan keywords
VARIANTS: dict[str, dict] = {
    "A": {"voxel_size": (1.5, 1.5, 1.5), "orientation": "RAS", "b0_dir": (0.0, 0.0, 1.0)},
    "B": {"voxel_size": (1.5, 1.5, 1.5), "orientation": "LAS", "b0_dir": _tilt(15, 90)},
    "C": {"voxel_size": (1.8, 1.8, 1.8), "orientation": "LAS", "oblique_deg": (12.0, -8.0, 5.0),
          "b0_dir": _tilt(20, 30)},
    "D": {"voxel_size": (1.2, 1.2, 2.0), "orientation": "RAS", "oblique_deg": (-15.0, 0.0, 0.0),
          "b0_dir": _tilt(25, 200)},
    "E": {"voxel_size": (1.8, 1.8, 1.8), "orientation": "LPS", "b0_dir": _tilt(30, 0), "snr": 40.0,
          "skull_pd": 0.3, "air_smooth_mm": 0.0},
    # bench_pedqnet.py's first held-out head: make_qsm_head itself (RAS grid, no intravoxel dephasing)
    "P": {"own_head": 91000, "voxel_size": (1.8, 1.8, 1.8), "orientation": "RAS",
          "b0_dir": _tilt(float(np.random.default_rng(91000).uniform(10, 30)))},
}
DEFAULT = ["A", "B", "C", "D", "E"]


def describe(kw: dict) -> str:
    size = "x".join(f"{v:g}" for v in kw["voxel_size"])
    tilt = np.degrees(np.arccos(abs(kw["b0_dir"][2]) / np.linalg.norm(kw["b0_dir"])))
    parts = [f"{size} mm", kw["orientation"], f"B0 {tilt:.0f} deg"]
    if "own_head" in kw:
        parts.insert(0, f"make_qsm_head {kw['own_head']}")
    if any(kw.get("oblique_deg", (0, 0, 0))):
        parts.append("oblique " + "/".join(f"{v:g}" for v in kw["oblique_deg"]))
    if "snr" in kw:
        parts.append(f"SNR {kw['snr']:g}")
    if kw.get("air_smooth_mm", 2.0) == 0:
        parts.append("sharp air")
    if kw.get("skull_pd", 0.0) > 0:
        parts.append("bright skull")
    return ", ".join(parts)


def field_error(est: np.ndarray, truth: np.ndarray, region: np.ndarray) -> float:
    a = est[region] - est[region].mean()
    b = truth[region] - truth[region].mean()
    return float(100 * np.linalg.norm(a - b) / np.linalg.norm(b))


def run_variant(name: str, kw: dict, seed: int, eval_erode: float, tv: bool, harmonic: int | None = None) -> dict:
    tic = time.perf_counter()
    if "own_head" in kw:
        phantom = make_qsm_head(kw["own_head"], voxel_size=kw["voxel_size"][0], b0_dir=kw["b0_dir"], snr=100.0)
        phantom.meta["b0_dir_voxels"] = list(np.asarray(kw["b0_dir"]) / np.linalg.norm(kw["b0_dir"]))
    else:
        from mrinets.data.phantoms.qsm import make_qsm_scan

        phantom = make_qsm_scan(seed, **kw)
    row: dict = {"variant": name, "description": describe(kw), "phantom_s": time.perf_counter() - tic}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        phantom.save(folder)
        mag, phase = folder / "mag.nii.gz", folder / "phase.nii.gz"
        chi_img = load(folder / "chi.nii.gz", allow_empty=True)
        truth = chi_img.data
        local_true = load(folder / "local_field.nii.gz", allow_empty=True).data
        total_true = load(folder / "total_field.nii.gz").data
        brain = load_mask(folder / "mask.nii.gz", like=chi_img)
        mag_ras = load(mag, ndim=4).data
        phase_ras = load(phase, ndim=4).data
        affine = chi_img.affine
        voxel = chi_img.voxel_size
        # B0 in the RAS voxel axes: the phantom's construction (storage axes) carried by the reorientation
        stored = np.asarray(phantom.meta["b0_dir_voxels"])
        b_true = np.zeros(3)
        for axis, (target, flip) in enumerate(chi_img.source.to_ras):
            b_true[int(target)] = flip * stored[axis]
        b_used = b0_direction_in_voxels(phantom.b0_dir, affine)
        row["b0_angle_error_deg"] = float(np.degrees(np.arccos(min(1.0, abs(float(b_true @ b_used))))))
        evaluation = erode(brain, eval_erode, voxel)
        border = evaluation & ~erode(brain, 6.0, voxel)
        deep = evaluation & ~border
        row["eval_voxels"] = int(evaluation.sum())

        def score(chi: np.ndarray) -> float:
            return nrmse(chi, truth, mask=evaluation)

        def field_scores(prefix: str, local: np.ndarray) -> None:
            row[f"{prefix}_field"] = field_error(local, local_true, evaluation)
            row[f"{prefix}_field_border"] = field_error(local, local_true, border)
            row[f"{prefix}_field_deep"] = field_error(local, local_true, deep)

        row["true-local"] = score(tkd(local_true, brain, voxel_size=voxel, b0_dir=b_true))
        config = QsmConfig(echo_times=phantom.echo_times, b0=phantom.b0, b0_dir=phantom.b0_dir, method="tkd")
        if harmonic is not None:
            config = replace(config, harmonic_iterations=harmonic)
        radii = default_vsharp_radii(voxel, max_radius_mm=config.vsharp_max_radius_mm)
        threshold = getattr(config, "vsharp_threshold", 0.05)
        iterations = getattr(config, "harmonic_iterations", 0)
        row["harmonic_iterations"] = iterations
        local, kept = vsharp(total_true, brain, voxel_size=voxel, radii=radii, threshold=threshold)
        field_scores("vsharp", local)
        row["vsharp"] = score(tkd(local, kept, voxel_size=voxel, b0_dir=b_used))
        if iterations:
            local = restore_harmonic_loss(total_true, brain, local, kept, voxel_size=voxel, b0_dir=b_used,
                                          radii=radii, threshold=threshold, iterations=iterations)
            field_scores("restored", local)
            row["restored"] = score(tkd(local, kept, voxel_size=voxel, b0_dir=b_used))
        out = reconstruct(mag_ras, phase_ras, affine=affine, config=config, mask=brain)
        field_scores("unwrap", out["local_field"])
        row["unwrap"] = score(out["chi"])
        tic = time.perf_counter()
        full = predict(mag, phase, config=config)
        row["full_s"] = time.perf_counter() - tic
        own = full.mask
        row["mask_dice"] = float(2 * (own & brain).sum() / (own.sum() + brain.sum()))
        row["eval_covered"] = float((own & evaluation).sum() / evaluation.sum())
        field_scores("full", full.local_field)
        row["full"] = score(full.chi)
        if tv:
            # predict --method tv runs the same steps up to the inversion: invert that chain's local field
            tic = time.perf_counter()
            config_tv = replace(config, method="tv")
            chi_tv, _ = invert_local_field(full.local_field, full.mask, voxel_size=voxel,
                                           b0_vox=np.asarray(full.measures["b0_dir_voxels"]), config=config_tv,
                                           magnitude=np.sqrt((mag_ras**2).mean(-1)))
            row["full_tv_s"] = row["full_s"] - full.measures["timings_s"]["inversion"] + time.perf_counter() - tic
            row["full-tv"] = score(chi_tv)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=DEFAULT, choices=list(VARIANTS),
                        help="P: the head of bench_pedqnet.py (make_qsm_head), also runnable on older code")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--eval-erode", type=float, default=3.0, help="evaluation mask: true brain eroded by mm")
    parser.add_argument("--no-tv", action="store_true")
    parser.add_argument("--harmonic-iterations", type=int, help="override the chain's default (QsmConfig)")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--from-json", nargs="+", metavar="FILE",
                        help="print the table of rows saved by earlier runs (--json; e.g. variants run in parallel)")
    args = parser.parse_args()
    rows = []
    for path in args.from_json or []:
        rows.extend(json.loads(Path(path).read_text()))
    for name in [] if args.from_json else args.variants:
        row = run_variant(name, VARIANTS[name], args.seed, args.eval_erode, not args.no_tv, args.harmonic_iterations)
        rows.append(row)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    print(f"\nQSM chain generalisation, seed {args.seed}; NRMSE % in the true brain eroded by {args.eval_erode:g} mm")
    print("| variant | TKD true local field | TKD V-SHARP of true total field | + harmonic restore "
          "| TKD chain, true mask | TKD full chain | limit 1.5x | TV full chain | limit "
          "| local field NRMSE full chain (border / deep) | B0 angle err deg | mask Dice |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cell = {k: f"{r[k]:.1f}" if k in r else "-" for k in ("restored", "full-tv")}
        print(f"| {r['variant']}: {r['description']} | {r['true-local']:.1f} | {r['vsharp']:.1f} | {cell['restored']} "
              f"| {r['unwrap']:.1f} | {r['full']:.1f} | {1.5 * r['true-local']:.1f} | {cell['full-tv']} | 60 "
              f"| {r['full_field']:.0f} ({r['full_field_border']:.0f} / {r['full_field_deep']:.0f}) "
              f"| {r['b0_angle_error_deg']:.2f} | {r['mask_dice']:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
