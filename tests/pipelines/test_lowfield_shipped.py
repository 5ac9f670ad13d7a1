"""The shipped low-field weights: loadable, carded, and predicting on NIfTI input (a real T1 where present)."""

from __future__ import annotations

import json
import re

import nibabel as nib
import numpy as np
import pytest
import torch

from mrinets.cli import main
from mrinets.pipelines import lowfield

SHIPPED = lowfield.default_weights("t1")


@pytest.fixture(scope="module")
def shipped():
    if not SHIPPED.exists():
        pytest.fail(f"shipped weights missing: {SHIPPED}")
    return lowfield.load_model(None, "t1")


def test_weights_are_small_state_dicts_with_a_card(shipped):
    state = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    assert SHIPPED.stat().st_size < 5 * 2**20
    card = SHIPPED.with_suffix(".md").read_text()
    command = state["card"]["command"]
    assert command.startswith("mrinets lowfield train --model lohiresgan --contrast t1 ")
    assert command in card
    assert re.search(r"\| lohiresgan \| 0\.\d+ \|", card), "the card holds held-out scores"
    assert state["card"]["config"]["model"] == "lohiresgan"


def test_cli_predict_on_a_tiny_nifti(tmp_path, shipped):
    shape = (40, 44, 8)
    g = np.stack(np.meshgrid(*[np.arange(s) - s / 2 for s in shape], indexing="ij"))
    r = np.sqrt((g[0] / 16) ** 2 + (g[1] / 18) ** 2)
    rng = np.random.default_rng(0)
    data = np.where(r < 0.6, 90.0, np.where(r < 1.0, 70.0, 0.0)) + rng.rayleigh(6.0, shape)
    src = tmp_path / "lf.nii.gz"
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.diag([1.6, 1.6, 5.0, 1.0])), src)
    assert main(["lowfield", "predict", str(src), "--contrast", "t1", "--out", str(tmp_path / "out"), "--quiet"]) == 0
    out = nib.load(tmp_path / "out" / "synthetic_3t.nii.gz")
    assert out.shape == shape
    assert np.isfinite(out.get_fdata()).all() and out.get_fdata().max() > 0
    measures = json.loads((tmp_path / "out" / "measures.json").read_text())
    assert measures["weights"].startswith("mrinets lowfield train")
    assert (tmp_path / "out" / "qc_lowfield.png").stat().st_size > 1000


@pytest.mark.slow
def test_real_t1_degraded_by_our_model_runs_through_predict(real_t1, shipped, tmp_path):
    """The real T1 is out of the training domain (docs/lowfield.md): the network must not beat the raw scan here,
    but predict must run on the NIfTI and keep the anatomy (correlation with the 3 T image, SSIM near the raw
    scan's)."""
    from mrinets.data.phantoms.lowfield import pair_from_t1
    from mrinets.io import load
    from mrinets.metrics.image import ssim

    image = load(real_t1, ndim=3)
    pair = pair_from_t1(image.data, image.affine, seed=7)
    src = tmp_path / "lowfield.nii.gz"
    nib.save(nib.Nifti1Image(pair.lowfield, pair.lowfield_affine), src)
    result = lowfield.predict(src, contrast="t1", model=shipped, device="cpu")
    assert result.synthetic.shape == pair.lowfield.shape and np.isfinite(result.synthetic).all()
    synthetic = lowfield.translate_volume(shipped.generator, shipped.spec, pair.lf_work, context=shipped.context)
    hf, mask = np.clip(pair.hf_work, 0, 1), pair.mask_work
    assert np.corrcoef(synthetic[mask], hf[mask])[0, 1] > 0.5
    raw = ssim(np.clip(pair.lf_work, 0, 1), hf, data_range=1, mask=mask)
    assert ssim(np.clip(synthetic, 0, 1), hf, data_range=1, mask=mask) > raw - 0.1


def test_t2_weights_load_with_their_card():
    path = lowfield.default_weights("t2")
    if not path.exists():
        pytest.fail(f"shipped weights missing: {path}")
    model = lowfield.load_model(None, "t2")
    assert model.contrast == "t2" and model.card["command"].startswith("mrinets lowfield train --model lohiresgan "
                                                                      "--contrast t2 ")
    assert model.card["command"] in path.with_suffix(".md").read_text()
    x = torch.zeros(1, 2 * model.context + 1, 32, 32) - 1.0
    assert model.generator(x).shape == (1, 1, 32, 32)


def test_cli_batch_lowfield_gathers_measures(tmp_path, shipped):
    shape = (40, 44, 8)
    g = np.stack(np.meshgrid(*[np.arange(s) - s / 2 for s in shape], indexing="ij"))
    inside = (g[0] / 16) ** 2 + (g[1] / 18) ** 2 < 1
    rng = np.random.default_rng(1)
    for name in ("a", "b"):
        data = np.where(inside, 80.0, 0.0) + rng.rayleigh(6.0, shape)
        nib.save(nib.Nifti1Image(data.astype(np.float32), np.diag([1.6, 1.6, 5.0, 1.0])), tmp_path / f"{name}.nii.gz")
    (tmp_path / "subjects.tsv").write_text("subject\timage\nsub-a\ta.nii.gz\nsub-b\tb.nii.gz\n")
    out = tmp_path / "out"
    argv = ["batch", "lowfield", str(tmp_path / "subjects.tsv"), "--out", str(out), "--workers", "0", "--quiet"]
    assert main(argv) == 0
    lines = (out / "cohort_lowfield.csv").read_text().splitlines()
    per_subject = (out / "sub-a" / "measures.csv").read_text().splitlines()
    assert lines[0] == "subject," + per_subject[0]
    assert len(lines) == 1 + 2 * (len(per_subject) - 1)
    assert all((out / s / "synthetic_3t.nii.gz").exists() for s in ("sub-a", "sub-b"))
    before = (out / "sub-a" / "synthetic_3t.nii.gz").stat().st_mtime_ns
    assert main(argv) == 0
    assert (out / "sub-a" / "synthetic_3t.nii.gz").stat().st_mtime_ns == before


def test_cli_batch_lowfield_refuses_a_row_of_unknown_contrast(tmp_path, capsys):
    (tmp_path / "subjects.tsv").write_text("subject\timage\tcontrast\nsub-a\ta.nii.gz\tflair\n")
    out = tmp_path / "out"
    assert main(["batch", "lowfield", str(tmp_path / "subjects.tsv"), "--out", str(out), "--workers", "0"]) == 1
    err = capsys.readouterr().err
    assert "subjects.tsv:2: contrast" in err and "flair" in err
    assert not (out / "sub-a" / "synthetic_3t.nii.gz").exists()
