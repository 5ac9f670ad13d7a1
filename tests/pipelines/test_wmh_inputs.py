"""WMH on T1s as open datasets ship them: skull-stripped, in MNI space, negative edges; the user's brain mask;
and the real MS patient."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from t1_inputs import stripped_mni_space_t1

from mrinets.cli import main
from mrinets.pipelines import wmh
from mrinets.pipelines.wmh.model import WmhTrainConfig

# Windows as large as the box allows: a whole box through a tiny network in few windows.
TINY = dict(channels=(4, 8, 16, 32), patch_size=(96, 96, 72), block=(24, 24, 3), samples_per_subject=2, epochs=1,
            batch_size=2, quiet=True, device="cpu")


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    config = WmhTrainConfig(**TINY)
    torch.manual_seed(0)
    model = wmh.model.build_network(config.channels)
    return wmh.save_weights(model, config, tmp_path_factory.mktemp("w") / "tiny.pt", {"command": "test"})


@pytest.fixture(scope="module")
def stripped(tmp_path_factory):
    return stripped_mni_space_t1(tmp_path_factory.mktemp("t1") / "stripped.nii.gz")


def _row(path):
    return next(csv.DictReader(open(path)))


def test_stripped_mni_space_t1_is_predicted_and_its_kind_reported(stripped, tiny_weights, tmp_path):
    """Through the Python faces: predict takes a path and gives a Result that saves; evaluate scores masks."""
    out = tmp_path / "out"
    result = wmh.predict(str(stripped), wmh.WmhConfig(weights=str(tiny_weights), device="cpu", flip=False))
    assert isinstance(result, wmh.Result)
    result.save(out, qc=False)
    row = _row(out / "stripped_wmh.csv")
    assert row["input_kind"] == "skull-stripped+mni-space" and row["brain_mask"] == "ours"
    assert float(row["registration_score"]) > 0.9
    prob = nib.load(out / "stripped_wmh_prob.nii.gz")
    assert nib.aff2axcodes(prob.affine) == ("L", "A", "S") and prob.shape == nib.load(stripped).shape
    mask = out / "stripped_wmh_mask.nii.gz"
    scores = wmh.evaluate(mask, stripped)["subjects"][0]
    assert scores["true_ml"] > 1000 and scores["pred_ml"] == pytest.approx(float(row["wmh_total_ml"]), rel=1e-3)
    with pytest.raises(ValueError, match="either"):
        wmh.evaluate(mask, stripped, phantoms=[1])


def test_users_brain_mask_is_used(stripped, tiny_weights, tmp_path):
    image = nib.load(stripped)
    data = image.get_fdata()
    mask = data > 0
    # The user's stripping leaves out the top 20 mm of the brain: no lesion may be found there.
    top = int(np.argwhere(mask)[:, 2].max())
    mask[:, :, top - 10:] = False
    mask_path = tmp_path / "brain.nii.gz"
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), image.affine), mask_path)
    out = tmp_path / "out"
    args = ["wmh", "predict", str(stripped), "--weights", str(tiny_weights), "--out", str(out), "--quiet",
            "--device", "cpu", "--no-qc", "--no-flip", "--threshold", "0.01", "--no-pv-trim"]
    assert main([*args, "--brain-mask", str(mask_path)]) == 0
    assert _row(out / "stripped_wmh.csv")["brain_mask"] == "user"
    prob = nib.load(out / "stripped_wmh_prob.nii.gz").get_fdata()
    assert prob[~mask].max() == 0.0 and prob[mask].max() > 0.01
    ours = tmp_path / "ours"
    assert main([*args[:6], str(ours), *args[7:]]) == 0
    assert nib.load(ours / "stripped_wmh_prob.nii.gz").get_fdata()[~mask].max() > 0.01


@pytest.mark.parametrize("case, needle", [("labels", "not binary"), ("empty", "brain mask is empty"),
                                          ("grid", "does not match"), ("count", "one per T1")])
def test_bad_brain_mask_exits_2_and_writes_nothing(case, needle, stripped, tmp_path, capsys):
    image = nib.load(stripped)
    mask = (image.get_fdata() > 0).astype(np.float32)
    paths = [tmp_path / "m.nii.gz"]
    if case == "labels":
        mask *= 2
    elif case == "empty":
        mask[:] = 0
    elif case == "grid":
        mask = mask[1:]
    elif case == "count":
        paths = paths * 2
    nib.save(nib.Nifti1Image(mask, image.affine), paths[0])
    out = tmp_path / "out"
    assert main(["wmh", "predict", str(stripped), "--out", str(out), "--brain-mask", *map(str, paths)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.slow
def test_real_ms_patient_is_predicted_and_scored(ms_patient, tmp_path, capsys):
    """The real skull-stripped, MNI-space MS patient (slow: a full 1 mm head through the shipped network)."""
    t1, truth = ms_patient
    out = tmp_path / "out"
    assert main(["wmh", "predict", str(t1), "--out", str(out), "--quiet", "--device", "cpu", "--no-qc"]) == 0
    row = _row(out / "T1_wmh.csv")
    assert row["input_kind"] == "skull-stripped+mni-space"
    capsys.readouterr()
    assert main(["wmh", "evaluate", "--pred", str(out / "T1_wmh_mask.nii.gz"), "--truth", str(truth),
                 "--out", str(tmp_path / "scores.json")]) == 0
    scores = json.loads(capsys.readouterr().out)["subjects"][0]
    assert scores["true_ml"] == pytest.approx(8.227, abs=0.01)
    assert scores["pred_ml"] == pytest.approx(float(row["wmh_total_ml"]), rel=1e-3)
    # The shipped weights give 0.326 (docs/wmh.md); the classic baseline 0.112, and the issue asks for 0.15 more.
    assert scores["dice"] > 0.112 + 0.15
