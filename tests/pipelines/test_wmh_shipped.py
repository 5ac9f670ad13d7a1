"""The shipped WMH weights: their card, and the whole pipeline on the real example T1."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np

from mrinets.cli import main
from mrinets.pipelines import wmh


def test_shipped_model_on_the_real_t1(real_t1, tmp_path):
    out = tmp_path / "real"
    assert main(["wmh", "predict", str(real_t1), "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    src = nib.load(real_t1)
    for suffix in ("_wmh_prob.nii.gz", "_wmh_mask.nii.gz", "_wmh_regions.nii.gz"):
        img = nib.load(out / f"t1_image{suffix}")
        assert img.shape == src.shape and nib.aff2axcodes(img.affine) == ("L", "A", "S")
        np.testing.assert_allclose(img.affine, src.affine, atol=1e-4)
    row = next(csv.DictReader(open(out / "t1_image_wmh.csv")))
    assert 0.0 <= float(row["wmh_total_ml"]) <= 60.0
    # The network is sure of enough dark voxels to trim by: the midpoint lies between lesion and white matter.
    assert 0.5 < float(row["pv_trim_midpoint"]) < 1.0
    assert 1100 < float(row["etiv_ml"]) < 2200
    assert (out / "t1_image_wmh_qc.png").stat().st_size > 20_000
    # --grow only adds to the trimmed mask, and on this T1 it does add.
    grown_out = tmp_path / "grown"
    assert main(["wmh", "predict", str(real_t1), "--out", str(grown_out), "--quiet", "--device", "cpu", "--grow",
                 "--no-qc"]) == 0
    mask, grown = (nib.load(d / "t1_image_wmh_mask.nii.gz").get_fdata() > 0 for d in (out, grown_out))
    assert grown[mask].all() and grown.sum() > mask.sum()


def test_shipped_weights_load_with_their_card():
    model = wmh.load_model()
    assert model.card["command"].startswith("mrinets wmh train ")
    assert "held_out" in model.card and model.patch_size == (64, 64, 40)
    assert wmh.DEFAULT_WEIGHTS.stat().st_size < 10 * 1024**2
