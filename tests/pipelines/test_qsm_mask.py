"""The QSM brain-masking network: training pieces, shipped weights, use by `qsm predict --masker net`, real GRE crop."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from mrinets.cli import main
from mrinets.data.phantoms.qsm import make_qsm_head
from mrinets.errors import ConfigError
from mrinets.pipelines import qsm_mask as qm
from mrinets.pipelines.qsm import QsmConfig

REAL = Path("/work/shared/reference/clearswi-small")


@pytest.fixture(scope="module")
def head():
    return make_qsm_head(31, voxel_size=3.0)


@pytest.fixture(scope="module")
def subject(head):
    vox = (3.0, 3.0, 3.0)
    return qm._Subject(head.magnitude, head.mask, vox, {}, head.total_field, head.echo_times, head.b0,
                       qm._gap(head.mask, vox))


@pytest.fixture(scope="module")
def shipped():
    return qm.load_mask_model()


def test_realistic_signal_adds_bright_csf_in_the_gap_and_dephasing_only_removes_signal(head, subject):
    rng = np.random.default_rng(0)
    echo = len(head.echo_times) - 1
    mag = head.magnitude[..., echo]
    csf = qm.realistic_signal(mag, echo, subject, rng, csf=True, dephasing=False)
    assert subject.gap.any() and not (subject.gap & head.mask).any()
    assert csf[subject.gap].mean() > 3 * mag[subject.gap].mean()
    np.testing.assert_array_equal(csf[~subject.gap], mag[~subject.gap])
    dep = qm.realistic_signal(mag, echo, subject, rng, csf=False, dephasing=True)
    assert np.all(dep <= mag + 1e-6) and (dep < 0.5 * mag).any()


def test_augmented_patch_keeps_magnitude_and_mask_aligned(subject):
    config = qm.MaskTrainConfig(patch=32, voxel_sizes=(3.0,), work_mm=3.0, boundary_share=1.0)
    rng = np.random.default_rng(1)
    variants = qm._variants(subject, rng)
    edge = np.argwhere(subject.mask ^ np.pad(subject.mask[1:-1, 1:-1, 1:-1], 1))
    contrast = []
    for _ in range(6):
        mag, mask = qm.augment(subject, variants, edge, rng, config)
        assert mag.shape == mask.shape == (32, 32, 32) and 0 <= mag.min() and mag.max() <= 3
        assert 0 < mask.mean() < 1  # centred on the brain's edge
        contrast.append(mag[mask > 0].mean() - mag[mask == 0].mean())
    # the brain is brighter than what surrounds it (air, skull) in most patches: the two were moved together
    assert np.median(contrast) > 0


def test_train_save_load_roundtrip_with_weights_only(tmp_path, head):
    config = qm.MaskTrainConfig(phantoms=1, seed_start=7100, voxel_sizes=(3.0,), patch=32, steps=2, work_mm=3.0,
                                quiet=True, device="cpu")
    model, report = qm.train_mask(config)
    assert report["steps_done"] == 2 and report["history"][-1]["step"] == 2
    path = qm.save_mask_weights(model, tmp_path / "m.pt", card={"command": "x"})
    torch.load(path, weights_only=True)
    again = qm.load_mask_model(path)
    mask = qm.net_brain_mask(head.magnitude, voxel_size=(3.0, 3.0, 3.0), model=again)
    assert mask.shape == head.mask.shape and mask.dtype == bool


def test_config_refuses_bad_values():
    with pytest.raises(ConfigError, match="patch"):
        qm.MaskTrainConfig(patch=36)
    with pytest.raises(ConfigError, match="mask_weights"):
        QsmConfig(echo_times=(0.01,), b0=3.0, mask_weights="w.pt")
    with pytest.raises(ConfigError, match="masker"):
        QsmConfig(echo_times=(0.01,), b0=3.0, masker="bet")


def test_shipped_weights_small_with_card_and_command(shipped):
    assert qm.DEFAULT_MASK_WEIGHTS.stat().st_size < 3e6
    card = qm.DEFAULT_MASK_WEIGHTS.with_suffix(".md").read_text()
    assert shipped.card["command"].startswith("mrinets qsm train-mask ") and shipped.card["command"] in card


def test_shipped_network_masks_an_unseen_phantom(shipped):
    # 2.5 mm: a voxel size between the training ones (1.5-2.2 mm) and the fast tests' 3 mm
    p = make_qsm_head(97, voxel_size=2.5, snr=40.0)
    mask = qm.net_brain_mask(p.magnitude, voxel_size=(2.5,) * 3, model=shipped)
    assert qm.dice(mask, p.mask) > 0.93


def test_cli_predict_with_network_mask(tmp_path, head, shipped):
    folder = tmp_path / "in"
    head.save(folder)
    out = tmp_path / "out"
    code = main(["qsm", "predict", "--mag", str(folder / "mag.nii.gz"), "--phase", str(folder / "phase.nii.gz"),
                 "--te", *[str(t) for t in head.echo_times], "--b0", "3", "--masker", "net", "--vsharp-radius", "6",
                 "--no-qc", "--out", str(out)])
    assert code == 0
    measures = json.loads((out / "measures.json").read_text())
    assert measures["config"]["masker"] == "net"
    mask = nib.load(out / "mask.nii.gz").get_fdata() > 0
    # the V-SHARP-eroded network mask lies inside the true brain
    assert mask.any() and (mask & ~head.mask).sum() < 0.05 * mask.sum()


@pytest.mark.skipif(not (REAL / "mag.nii").exists(),
                    reason="real GRE crop /work/shared/reference/clearswi-small absent")
def test_network_mask_on_real_gre_crop(shipped):
    img = nib.load(REAL / "mag.nii")
    mask = qm.net_brain_mask(np.asarray(img.dataobj, np.float32), voxel_size=img.header.get_zooms()[:3],
                             model=shipped)
    assert mask.shape == img.shape[:3]
    # the crop lies inside the brain: most of it is brain
    assert mask.mean() > 0.5
