"""The shipped WMH weights: their card, and the whole pipeline on the real example T1."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest

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
    # The network is sure of enough dark voxels to trim by: the band lies between CSF and white matter.
    assert 0.1 < float(row["pv_trim_lower"]) < 0.6 < float(row["pv_trim_upper"]) < 1.0
    assert 1100 < float(row["etiv_ml"]) < 2200
    assert (out / "t1_image_wmh_qc.png").stat().st_size > 20_000
    # The default growth only adds to the trimmed mask, on this T1 it does add, and the CSV says how much.
    trimmed_out = tmp_path / "trimmed"
    assert main(["wmh", "predict", str(real_t1), "--out", str(trimmed_out), "--quiet", "--device", "cpu",
                 "--no-grow", "--no-qc"]) == 0
    grown, mask = (nib.load(d / "t1_image_wmh_mask.nii.gz").get_fdata() > 0 for d in (out, trimmed_out))
    assert grown[mask].all() and grown.sum() > mask.sum()
    voxel_ml = float(np.prod(src.header.get_zooms()[:3])) / 1000
    assert float(row["grow_added_ml"]) == pytest.approx((grown.sum() - mask.sum()) * voxel_ml, rel=1e-4)
    assert next(csv.DictReader(open(trimmed_out / "t1_image_wmh.csv")))["grow_added_ml"] == "nan"


def test_shipped_weights_load_with_their_card():
    model = wmh.load_model()
    assert model.card["command"].startswith("mrinets wmh train ")
    assert "held_out" in model.card and model.patch_size == (64, 64, 40)
    assert wmh.DEFAULT_WEIGHTS.stat().st_size < 10 * 1024**2
