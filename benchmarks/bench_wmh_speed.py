"""Time and peak memory of ``mrinets wmh predict`` on one 1 mm T1, registration included.

The input is the real deep-T1-WMH example resampled to 1 mm when
../shared/reference is there, else a posed 1 mm WMH phantom (197x233x189).
Each run is a fresh process (``mrinets wmh predict``), so import time, model
loading, registration, inference, resampling back, regions, the CSV and the QC
picture are all counted; peak memory is the child's maximum resident set.
The published deep-T1-WMH tool takes about 25 s and 3.4 GB per subject on this
2-core machine class (the issue's figures).

Run: ``python benchmarks/bench_wmh_speed.py [--repeats 3] [predict options, e.g. --no-grow]``
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

PUBLISHED_SECONDS, PUBLISHED_GB = 25.0, 3.4
REAL_T1 = Path(__file__).resolve().parents[2] / "shared" / "reference" / "deep-t1-wmh" / "t1_image.nii.gz"


def one_mm_t1(folder: Path) -> tuple[Path, str]:
    if REAL_T1.is_file():
        from nibabel.processing import resample_to_output

        img = resample_to_output(nib.load(REAL_T1), voxel_sizes=(1.0, 1.0, 1.0), order=1)
        path = folder / "real_t1_1mm.nii.gz"
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj, np.float32), img.affine), path)
        return path, f"real deep-T1-WMH T1 at 1 mm {img.shape}"
    from mrinets.data.phantoms.wmh import make_wmh_subject

    p = make_wmh_subject(900_100, pose=True)
    path = folder / "phantom_t1.nii.gz"
    nib.save(nib.Nifti1Image(p.t1, p.t1_affine), path)
    return path, f"WMH phantom at 1 mm {p.t1.shape}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args, predict_options = parser.parse_known_args()
    exe = Path(sys.executable).with_name("mrinets")
    with tempfile.TemporaryDirectory() as tmp:
        t1, what = one_mm_t1(Path(tmp))
        times = []
        for i in range(args.repeats):
            start = time.perf_counter()
            subprocess.run([str(exe), "wmh", "predict", str(t1), "--out", f"{tmp}/out{i}", "--quiet", *predict_options],
                           check=True)
            times.append(time.perf_counter() - start)
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
    print(f"mrinets wmh predict{''.join(' ' + o for o in predict_options)} on {what}, {args.repeats} fresh processes")
    print(f"{'':24}{'mrinets':>12}{'deep-T1-WMH':>14}")
    print(f"{'time per subject (s)':24}{np.median(times):>12.1f}{PUBLISHED_SECONDS:>14.1f}")
    print(f"{'peak memory (GB)':24}{peak_gb:>12.2f}{PUBLISHED_GB:>14.1f}")
    print(f"times: {', '.join(f'{t:.1f}' for t in times)} s (median shown)")


if __name__ == "__main__":
    main()
