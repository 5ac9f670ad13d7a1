"""PedQ-NET inside the QSM pipeline: shipped weights, CLI invert/predict/evaluate, fine-tuning, the real GRE crop."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from mrinets.cli import main
from mrinets.data.phantoms.qsm import make_qsm_head
from mrinets.pipelines import pedqnet as pq
from mrinets.pipelines.qsm import QsmConfig, predict


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("pedqnet_phantom")
    p = make_qsm_head(21, voxel_size=3.0, b0_dir=(0.2, 0.0, 1.0))
    p.save(out)
    return out, p


@pytest.fixture(scope="module")
def shipped():
    return pq.load_model()


def test_shipped_weights_load_with_weights_only_and_are_small(shipped):
    assert pq.DEFAULT_WEIGHTS.stat().st_size < 4e6
    assert shipped.seg is not None and shipped.patch % 16 == 0
    card = pq.DEFAULT_WEIGHTS.with_suffix(".md").read_text()
    assert "mrinets qsm train " in card and shipped.card["command"] in card


def test_cli_invert_pedqnet_on_tiny_phantom(phantom_dir, tmp_path, capsys):
    folder, p = phantom_dir
    out = tmp_path / "inv"
    code = main(["qsm", "invert", "--field", str(folder / "local_field.nii.gz"), "--mask", str(folder / "mask.nii.gz"),
                 "--b0-dir", "0.2", "0", "1", "--method", "pedqnet", "--device", "cpu", "--out", str(out)])
    assert code == 0
    chi = nib.load(out / "chi.nii.gz")
    np.testing.assert_allclose(chi.affine, p.affine)
    data = chi.get_fdata()
    assert np.isfinite(data).all() and np.all(data[~p.mask] == 0)
    # the network's chi follows the truth (TKD from the same noiseless field reaches about the same)
    assert np.corrcoef(data[p.mask], p.chi[p.mask])[0, 1] > 0.6
    nuclei = nib.load(out / "nuclei.nii.gz").get_fdata()
    assert nuclei.max() <= 8 and (out / "nuclei.tsv").exists()
    measures = json.loads((out / "measures.json").read_text())
    assert measures["method"] == "pedqnet" and "nuclei_mean_chi_ppm" in measures
    assert not (out / "total_field.nii.gz").exists()


def test_invert_hz_equals_ppm(phantom_dir, tmp_path):
    folder, p = phantom_dir
    hz = tmp_path / "field_hz.nii.gz"
    nib.save(nib.Nifti1Image((p.local_field * 42.577478518 * 3.0).astype(np.float32), p.affine), hz)
    for name, field, unit in (("ppm", folder / "local_field.nii.gz", "ppm"), ("hz", hz, "hz")):
        assert main(["qsm", "invert", "--field", str(field), "--mask", str(folder / "mask.nii.gz"), "--unit", unit,
                     "--b0", "3", "--method", "tkd", "--no-qc", "--out", str(tmp_path / name)]) == 0
    a = nib.load(tmp_path / "ppm" / "chi.nii.gz").get_fdata()
    b = nib.load(tmp_path / "hz" / "chi.nii.gz").get_fdata()
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_cli_predict_pedqnet_from_gre_and_evaluate(phantom_dir, tmp_path, capsys):
    folder, p = phantom_dir
    out = tmp_path / "pred"
    te = [str(t) for t in p.echo_times]
    assert main(["qsm", "predict", "--mag", str(folder / "mag.nii.gz"), "--phase", str(folder / "phase.nii.gz"),
                 "--te", *te, "--b0", "3", "--b0-dir", "0.2", "0", "1", "--mask", str(folder / "mask.nii.gz"),
                 "--method", "pedqnet", "--device", "cpu", "--no-qc", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["qsm", "evaluate", "--pred", str(out / "chi.nii.gz"), "--truth", str(folder / "chi.nii.gz"),
                 "--mask", str(out / "mask.nii.gz"), "--labels", str(folder / "labels.nii.gz"), "--field",
                 str(out / "local_field.nii.gz"), "--b0-dir", "0.2", "0", "1"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert np.isfinite(scores["nrmse_percent"]) and scores["nuclei"]["ssim"] <= 1
    assert {"nrmse_percent", "hfen_percent", "ssim"} <= set(scores["nuclei"])
    assert scores["edge_sharpness_per_mm"]["truth"] > 0
    assert scores["dipole_kernel"]["pred"]["b0_angle_error_deg"] < 30


def test_finetuning_adapts_a_copy_and_lowers_the_model_loss(phantom_dir, shipped):
    _, p = phantom_dir
    before = {k: v.clone() for k, v in shipped.recon.state_dict().items()}
    b = np.array([0.2, 0.0, 1.0]) / np.hypot(0.2, 1.0)
    args = dict(voxel_size=(3.0, 3.0, 3.0), b0_dir=b, model=shipped, segment=False, device="cpu")
    box = (slice(15, 50), slice(15, 60), slice(15, 50))  # the deep grey nuclei, to stay fast
    field, mask = p.local_field[box], p.mask[box]
    plain = pq.invert(field, mask, **args)["chi"]
    tuned = pq.invert(field, mask, finetune_steps=3, finetune_lr=1e-3, **args)["chi"]
    for k, v in shipped.recon.state_dict().items():
        torch.testing.assert_close(v, before[k])
    assert not np.allclose(plain, tuned)

    from mrinets.physics.dipole import forward_field

    def residual(chi):
        return np.abs(forward_field(chi, voxel_size=(3.0,) * 3, b0_dir=b) - field)[mask].mean()

    assert residual(tuned) < residual(plain) * 1.05


def test_segmenter_does_not_change_chi_and_empty_field_of_view_is_left_out(phantom_dir, shipped):
    _, p = phantom_dir
    b = (0.2, 0.0, 1.0)
    base = pq.invert(p.local_field, p.mask, voxel_size=(3.0,) * 3, b0_dir=b, model=shipped, segment=True)
    alone = pq.invert(p.local_field, p.mask, voxel_size=(3.0,) * 3, b0_dir=b, model=shipped, segment=False)
    np.testing.assert_array_equal(alone["chi"], base["chi"])
    assert alone["nuclei"] is None and base["nuclei"].shape == p.mask.shape
    # zeros around the head leave chi nearly as it was (only the mask's bounding box is reconstructed; the
    # TKD input channel changes a little, its FFT grid being larger)
    pad = ((7, 3), (0, 9), (5, 5))
    wide = pq.invert(np.pad(p.local_field, pad), np.pad(p.mask, pad), voxel_size=(3.0,) * 3, b0_dir=b,
                     model=shipped, segment=False)["chi"]
    inner = wide[7:-3, :-9, 5:-5]
    assert np.corrcoef(inner[p.mask], base["chi"][p.mask])[0, 1] > 0.98


def test_geometry_channels_do_not_depend_on_the_sign_of_b0():
    b = np.array([0.3, -0.2, 0.9])
    np.testing.assert_allclose(pq.geometry_channels(b, (2, 2, 2)), pq.geometry_channels(-b, (2, 2, 2)))


def test_real_gre_crop_with_pedqnet(real_gre, tmp_path):
    mag, phase = real_gre
    config = QsmConfig(echo_times=(0.004, 0.008, 0.012), b0=3.0, vsharp_max_radius_mm=4.0, method="pedqnet",
                       device="cpu")
    result = predict(mag, phase, config=config)
    files = result.save(tmp_path, qc=False)
    assert nib.load(tmp_path / "chi.nii.gz").shape == (40, 40, 20)
    values = result.chi[result.mask]
    assert result.mask.sum() > 1000 and np.isfinite(values).all()
    assert np.percentile(np.abs(values), 99) < 0.5
    assert values.std() > 1e-3  # not a blank map
    assert {f.name for f in files} >= {"chi.nii.gz", "nuclei.nii.gz", "measures.json"}


def test_pedqnet_config_is_checked():
    # Library errors are ValueErrors naming the field; the command line names the flag (tests/cli/test_fuzz.py).
    with pytest.raises(ValueError, match="^finetune_steps: only applies to method pedqnet"):
        QsmConfig(echo_times=(0.01,), b0=3.0, method="tkd", finetune_steps=3)
    with pytest.raises(ValueError, match="^patch: must be a positive multiple of 16"):
        pq.PedQNetTrainConfig(patch=40)

