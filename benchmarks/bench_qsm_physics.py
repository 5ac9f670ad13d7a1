"""Speed and memory of the QSM physics chain on a 256x256x128 head built from spheres.

Times one complex FFT of the volume's size, then brain mask, Laplacian
unwrapping, V-SHARP, TKD and TV inversion, and prints each step's time in
seconds and in FFTs, with peak memory. Targets (from the issue):
mask + unwrap + V-SHARP + TKD under 30 FFTs, TV under 60 s, memory under 4 GB.

Run: ``python benchmarks/bench_qsm_physics.py [--tv-iter N]``
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

import numpy as np
import scipy.fft as sfft

from mrinets.physics.background import vsharp
from mrinets.physics.dipole import forward_field
from mrinets.physics.echoes import GAMMA
from mrinets.physics.inversion import tkd, tv_inversion
from mrinets.physics.unwrap import unwrap_laplacian, wrap

SHAPE = (256, 256, 128)
VOXEL_SIZE = (1.0, 1.0, 1.5)
B0, TE = 3.0, 0.02
RAD_PER_PPM = GAMMA * B0 * TE * 1e-6


def head_phantom(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """chi (ppm, relative to tissue), brain mask, wrapped phase and magnitude."""
    rng = np.random.default_rng(seed)
    axes = [(np.arange(n) - (n - 1) / 2) * h for n, h in zip(SHAPE, VOXEL_SIZE)]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    brain = (x / 70) ** 2 + (y / 90) ** 2 + (z / 65) ** 2 <= 1
    near_brain = (x / 78) ** 2 + (y / 98) ** 2 + (z / 73) ** 2 <= 1
    head = (x / 86) ** 2 + (y / 108) ** 2 + (z / 84) ** 2 <= 1
    air = ~head
    air |= (x**2 + (y - 92) ** 2 + (z + 40) ** 2) < 16**2  # frontal sinus
    air |= ((np.abs(x) - 80) ** 2 + y**2 + (z + 20) ** 2) < 6**2  # ear canals
    air &= ~near_brain  # tissue keeps the air 8 mm or more from the brain
    chi = np.where(air, 9.4, 0.0).astype(np.float32)  # air relative to tissue
    for _ in range(40):  # nuclei, veins, lesions as spheres inside the brain
        centre = rng.uniform(-1, 1, 3) * (45, 60, 40)
        inside = ((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2) < rng.uniform(3, 10) ** 2
        chi[inside & brain] = rng.uniform(-0.1, 0.3)
    field = forward_field(chi, voxel_size=VOXEL_SIZE, pad=0)
    field -= field[brain].mean()
    phase = wrap(field * RAD_PER_PPM + rng.normal(0, 0.05, SHAPE).astype(np.float32))
    phase[air] = rng.uniform(-np.pi, np.pi, int(air.sum()))  # no signal in air: random phase
    magnitude = np.where(air, 0.0, 1.0).astype(np.float32) + np.abs(rng.normal(0, 0.02, SHAPE)).astype(np.float32)
    return np.where(brain, chi, 0).astype(np.float32), brain, phase, magnitude


def make_mask(magnitude: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The project's GRE brain mask when it is there; else a magnitude threshold of the brain."""
    try:
        from mrinets.preprocess.mask import gre_brain_mask
    except ImportError:
        return (magnitude > 0.5) & truth
    return gre_brain_mask(magnitude, voxel_size=VOXEL_SIZE) & truth


def timed(label: str, rows: list, func, *args, **kwargs):
    tracemalloc.reset_peak()
    start = time.perf_counter()
    result = func(*args, **kwargs)
    seconds = time.perf_counter() - start
    rows.append((label, seconds, tracemalloc.get_traced_memory()[1] / 2**20))
    return result


def fft_seconds(repeats: int = 5) -> float:
    data = (np.random.default_rng(1).normal(size=SHAPE) + 0j).astype(np.complex64)
    sfft.fftn(data, workers=-1)  # warm-up: plan caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sfft.fftn(data, workers=-1)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tv-iter", type=int, default=100, help="TV iterations (default 100)")
    args = parser.parse_args()

    chi, truth, phase, magnitude = head_phantom()
    one_fft = fft_seconds()
    tracemalloc.start()
    rows: list[tuple[str, float, float]] = []
    mask = timed("brain mask", rows, make_mask, magnitude, truth)
    unwrapped = timed("Laplacian unwrap", rows, unwrap_laplacian, phase, voxel_size=VOXEL_SIZE)
    field_ppm = unwrapped / np.float32(RAD_PER_PPM)
    local, eroded = timed("V-SHARP (12..1.5 mm)", rows, vsharp, field_ppm, mask, voxel_size=VOXEL_SIZE)
    chi_tkd = timed("TKD", rows, tkd, local, eroded, voxel_size=VOXEL_SIZE)
    chain = sum(seconds for _, seconds, _ in rows)
    chi_tv = timed(
        f"TV ({args.tv_iter} iterations max)",
        rows,
        tv_inversion,
        local,
        eroded,
        voxel_size=VOXEL_SIZE,
        magnitude=magnitude,
        max_iter=args.tv_iter,
    )
    tracemalloc.stop()
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux

    print(f"volume {SHAPE}, voxels {VOXEL_SIZE} mm; one complex64 FFT: {one_fft:.3f} s")
    print(f"{'step':<28}{'seconds':>10}{'FFTs':>9}{'peak MiB':>11}")
    for label, seconds, peak in rows:
        print(f"{label:<28}{seconds:>10.3f}{seconds / one_fft:>9.1f}{peak:>11.0f}")
    physics = chain - rows[0][1]
    print(f"{'unwrap+V-SHARP+TKD':<28}{physics:>10.3f}{physics / one_fft:>9.1f}")
    print(f"{'mask+unwrap+V-SHARP+TKD':<28}{chain:>10.3f}{chain / one_fft:>9.1f}{'':>11}  (target < 30 FFTs)")
    print(f"TV: {rows[-1][1]:.1f} s (target < 60 s); peak RSS {peak_rss:.0f} MiB (target < 4096 MiB)")
    for name, estimate in (("TKD", chi_tkd), ("TV", chi_tv)):
        ref, est = chi[eroded] - chi[eroded].mean(), estimate[eroded] - estimate[eroded].mean()
        print(f"{name} NRMSE in the eroded mask: {np.linalg.norm(est - ref) / np.linalg.norm(ref):.2f}")


if __name__ == "__main__":
    main()
