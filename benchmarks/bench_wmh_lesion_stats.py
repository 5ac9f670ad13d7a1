"""How lesions look on T1, the real MS patient's beside the WMH phantom's: contrast, size, location.

Each subject's T1 and lesion mask are carried into the MNI152 1 mm grid
(the patient through ``register_to_mni``, as ``predict`` does; a phantom
through its known pose). T1 is over the median of normal-appearing white
matter (the template's white matter above 0.9, 2 voxels or more from any
lesion). Distances are the template's (``mni_anatomy``): to the lateral
ventricles and to the cortex. The phantom's lesions are its 1 mm truth
(lesion fraction >= 0.5), the patient's the raters' consensus drawn on FLAIR.

Phantom columns are medians over the phantoms of each lesion model.

Run: ``python benchmarks/bench_wmh_lesion_stats.py [--phantoms 6] [--seed-start 900000] [--lesions wmh ms ms-flair]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

PATIENT = Path(__file__).resolve().parents[2] / "shared" / "reference" / "ms-lesion-t1"


def lesion_stats(t1: np.ndarray, affine: np.ndarray, lesion: np.ndarray, to_mni: np.ndarray) -> dict:
    """Contrast, size and location figures of one subject's lesions (see the module docstring)."""
    from mrinets.data.atlas import mni_anatomy
    from mrinets.data.templates import load_mni
    from mrinets.physics.sampling import affine_resample

    mni, anatomy = load_mni(), mni_anatomy()
    t1_mni = affine_resample(t1.astype(np.float32), to_mni @ affine, mni.affine, mni.wm.data.shape, order=1)
    les = affine_resample(lesion.astype(np.float32), to_mni @ affine, mni.affine, mni.wm.data.shape, order=1) > 0.5
    nawm = (mni.wm.data > 0.9) & ~ndimage.binary_dilation(les, iterations=2)
    scaled = t1_mni / float(np.median(t1_mni[nawm]))
    labels, n = ndimage.label(les)
    sizes = np.bincount(labels.ravel())[1:] / 1000.0
    per_lesion = ndimage.median(scaled, labels, np.arange(1, n + 1)) if n else np.array([np.nan])
    vent, cortex = anatomy.ventricle_distance_mm[les], anatomy.cortex_distance_mm[les]
    rim = les & ~ndimage.binary_erosion(les)
    # Horn caps: voxels within 10 mm of the ventricles beyond the bodies' middle third along y.
    y = np.nonzero(anatomy.ventricles.any(axis=(0, 2)))[0]
    third = (y.max() - y.min()) / 3.0
    yy = np.broadcast_to(np.arange(les.shape[1])[None, :, None], les.shape)[les]
    horns = (anatomy.ventricle_distance_mm[les] <= 10) & ((yy < y.min() + third) | (yy > y.max() - third))
    v = scaled[les]
    return {
        "volume mL": les.sum() / 1000.0,
        "lesions": n,
        "size median mL": float(np.median(sizes)) if n else np.nan,
        "size max mL": float(sizes.max()) if n else np.nan,
        "vol in <0.05 mL": float(sizes[sizes < 0.05].sum() / max(sizes.sum(), 1e-9)),
        "T1 p10": float(np.percentile(v, 10)), "T1 p50": float(np.median(v)), "T1 p90": float(np.percentile(v, 90)),
        "T1 >= 0.9": float((v >= 0.9).mean()),
        "lesion T1 p10": float(np.percentile(per_lesion, 10)), "lesion T1 p50": float(np.median(per_lesion)),
        "lesion T1 p90": float(np.percentile(per_lesion, 90)),
        "rim share": float(rim.sum() / les.sum()),
        "vent <= 3 mm": float((vent <= 3).mean()), "vent 3-10 mm": float(((vent > 3) & (vent <= 10)).mean()),
        "vent > 10 mm": float((vent > 10).mean()), "horn caps": float(horns.mean()),
        "cortex <= 4 mm": float((cortex <= 4).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phantoms", type=int, default=6)
    parser.add_argument("--seed-start", type=int, default=900_000)
    parser.add_argument("--lesions", nargs="+", default=["wmh", "ms", "ms-flair"],
                        help="the phantom's lesion models to show")
    args = parser.parse_args()
    from mrinets.data.phantoms.wmh import make_wmh_subject
    from mrinets.io import load
    from mrinets.preprocess.register import register_to_mni

    rows = {}
    if PATIENT.is_dir():
        image = load(PATIENT / "T1.nii.gz")
        truth = load(PATIENT / "consensus_gt.nii.gz", allow_empty=True).data > 0.5
        rows["MS patient"] = lesion_stats(image.data, image.affine, truth, register_to_mni(image).matrix)
    else:
        print(f"{PATIENT} is absent: phantoms only", file=sys.stderr)
    for model in args.lesions:
        phantoms = []
        for seed in range(args.seed_start, args.seed_start + args.phantoms):
            p = make_wmh_subject(seed, lesions=model)
            phantoms.append(lesion_stats(p.t1, p.t1_affine, p.truth_mask, p.to_mni))
        if phantoms:
            rows[f"{model} phantoms x{len(phantoms)}"] = {k: float(np.nanmedian([r[k] for r in phantoms]))
                                                         for k in phantoms[0]}
    names = list(next(iter(rows.values())))
    print(f"{'':18}" + "".join(f"{w:>24}" for w in rows))
    for k in names:
        print(f"{k:18}" + "".join(f"{r[k]:>24.3f}" for r in rows.values()))


if __name__ == "__main__":
    main()
