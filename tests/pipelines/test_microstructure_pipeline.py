"""Microstructure pipeline end to end on tiny phantom crops: train, predict, save, CLI and bad input."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from mrinets.cli import main
from mrinets.io.nifti import from_array
from mrinets.physics.diffusion import GradientScheme
from mrinets.pipelines import microstructure as ms
from mrinets.pipelines.microstructure import experiment as ex

CROP = ((78, 138), (104, 164), (72, 102))  # 60 x 60 x 30 mm through the corpus callosum and ventricles


@pytest.fixture(scope="module")
def subjects():
    return [ex.target_subject(ex.TRAIN_SEED_START + 50, crop=CROP), ex.target_subject(ex.TEST_SEED_START + 50,
                                                                                       crop=CROP)]


@pytest.fixture(scope="module")
def tiny_model(subjects):
    model, report = ex.finetune(subjects[:1], ms.FitConfig(epochs=3, batch_size=128, quiet=True, device="cpu"))
    return model, report


def test_target_subject_is_a_subset_of_its_full_scan(subjects):
    s = subjects[0]
    assert s.lq_scheme.same_as(ms.target_scheme())
    assert s.lq_dwi.shape[-1] == 31 and s.lq_scheme.shells == (1500.0, 2500.0)
    inside = s.mask & (s.tissue >= 2)
    # The full-scan fit is a good target: close to the truth in tissue.
    for p in ms.PARAMETERS:
        assert np.nanmean(np.abs(s.hq_fit[p][inside] - s.truth[p][inside])) < 0.12, p


def test_load_model_refuses_a_file_that_is_not_weights(tmp_path):
    from mrinets.errors import ArgumentError, UnreadableFileError

    bad = tmp_path / "m.pt"
    bad.write_text("not weights\n")
    with pytest.raises(UnreadableFileError, match="not a file saved by torch"):
        ms.load_model(bad)
    torch.save({"state_dict": {}}, bad)
    with pytest.raises(ArgumentError, match="not an mrinets microstructure weights file"):
        ms.load_model(bad)


def test_training_report_and_round_trip(tmp_path, tiny_model, subjects):
    model, report = tiny_model
    assert report["stage"] == "scratch" and report["epochs_run"] == 3 and report["samples"] > 1000
    path = ms.save_model(model, tmp_path / "m.pt")
    again = ms.load_model(path)
    a = ex.evaluate(model, subjects[1:], device="cpu")
    b = ex.evaluate(again, subjects[1:], device="cpu")
    assert a["mae_mean"] == b["mae_mean"]
    assert set(a) >= {"mae_icvf", "mae_isovf", "mae_odi", "mae_hq_icvf", "subjects"}


def test_finetuning_starts_from_the_pretrained_weights(tiny_model, subjects):
    model, _ = tiny_model
    tuned, report = ex.finetune(subjects[:1], ms.FitConfig(epochs=1, lr=1e-6, quiet=True, device="cpu"), init=model)
    assert report["stage"] == "finetune" and "scratch" in tuned.card
    # With a vanishing learning rate fine-tuning keeps the initial network's behaviour.
    a = ex.evaluate(model, subjects[1:], device="cpu")["mae_mean"]
    b = ex.evaluate(tuned, subjects[1:], device="cpu")["mae_mean"]
    assert abs(a - b) < 1e-3


def test_auxiliary_samples_carry_the_target_scans_noise():
    crop = ((95, 125), (115, 145), (78, 96))
    clean = ex.auxiliary_set(ex.AUX_SEED_START, ms.target_scheme(), crop=crop, target_snr=None)
    noisy = ex.auxiliary_set(ex.AUX_SEED_START, ms.target_scheme(), crop=crop)
    assert clean.patches.shape[1:] == (27, 30) and len(clean) > 300
    # The same voxels and targets (the fit on the auxiliary scheme); only the inputs get noisier.
    np.testing.assert_array_equal(clean.targets, noisy.targets)
    added = noisy.patches[:, 13] - clean.patches[:, 13]
    # S/S0 noise of SNR 20 minus what the averaged auxiliary signals kept: about 0.04.
    assert 0.03 < added.std() < 0.06, added.std()
    assert abs(added.mean()) < 0.01


def test_l2sp_fine_tuning_stays_near_the_pretrained_weights(tiny_model, subjects):
    import torch

    model, _ = tiny_model

    def drift(anchor):
        fit = ms.FitConfig(epochs=2, lr=5e-3, anchor=anchor, quiet=True, device="cpu")
        tuned, _ = ex.finetune(subjects[:1], fit, init=model)
        with torch.no_grad():
            return sum(float(torch.sum((a - b) ** 2)) for a, b in zip(tuned.net.parameters(), model.net.parameters()))

    free, held = drift(0.0), drift(10.0)
    assert held < 0.2 * free, (held, free)
    with pytest.raises(ValueError, match="anchor"):
        ms.FitConfig(anchor=-1.0)


def test_rehearsal_mixes_the_pretraining_samples_into_fine_tuning(tiny_model, subjects):
    import torch

    from mrinets.pipelines.microstructure.data import TrainingSet

    model, _ = tiny_model
    # Stand-in pretraining samples whose targets no target subject has: only rehearsal can teach them.
    crop = ((95, 125), (115, 145), (78, 96))
    aux = ex.auxiliary_set(ex.AUX_SEED_START, ms.target_scheme(), crop=crop)
    aux = TrainingSet(aux.patches, np.full_like(aux.targets, 0.95))

    def aux_error(share):
        fit = ms.FitConfig(epochs=3, lr=5e-3, rehearsal=share, quiet=True, device="cpu")
        tuned, report = ex.finetune(subjects[:1], fit, init=model, rehearsal=aux if share else None)
        assert report["rehearsal"] == share and report["rehearsed_samples"] == (600 if share else 0)
        with torch.no_grad():
            return float(np.mean(np.abs(tuned.net(torch.from_numpy(aux.patches)).numpy() - aux.targets)))

    # All 600 stand-in samples join the subject's 4000. Their patches look like the subject's, so the
    # network can only meet them part-way, by about their share of the samples (13 %).
    plain, rehearsed = aux_error(0.0), aux_error(0.5)
    assert rehearsed < plain - 0.05, (rehearsed, plain)
    with pytest.raises(ValueError, match="rehearsal"):
        ex.finetune(subjects[:1], ms.FitConfig(epochs=1, rehearsal=0.1, quiet=True, device="cpu"), rehearsal=aux)
    with pytest.raises(ValueError, match="rehearsal"):
        ms.FitConfig(rehearsal=1.0)


def _write_dwi(tmp_path, s, name="dwi", scheme=None, data=None):
    from mrinets.io.gradients import array_frame_to_fsl

    scheme = scheme or s.lq_scheme
    data = s.lq_dwi if data is None else data
    nib.save(nib.Nifti1Image(data, s.affine), tmp_path / f"{name}.nii.gz")
    np.savetxt(tmp_path / f"{name}.bval", scheme.bvals[None], fmt="%g")
    np.savetxt(tmp_path / f"{name}.bvec", array_frame_to_fsl(scheme.bvecs, s.affine).T, fmt="%.6f")
    nib.save(nib.Nifti1Image(s.mask.astype(np.uint8), s.affine), tmp_path / "mask.nii.gz")
    return [tmp_path / f"{name}.nii.gz", "--bval", tmp_path / f"{name}.bval", "--bvec", tmp_path / f"{name}.bvec"]


def test_cli_predict_fit_and_evaluate(tmp_path, tiny_model, subjects):
    model, _ = tiny_model
    weights = ms.save_model(model, tmp_path / "w.pt")
    args = _write_dwi(tmp_path, subjects[1])
    out = tmp_path / "pred"
    assert main(["microstructure", "predict", *map(str, args), "--mask", str(tmp_path / "mask.nii.gz"),
                 "--weights", str(weights), "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    names = {p.name for p in out.iterdir()}
    assert names == {"icvf.nii.gz", "isovf.nii.gz", "odi.nii.gz", "mask.nii.gz", "measures.json", "qc_noddi.png"}
    measures = json.loads((out / "measures.json").read_text())
    assert measures["resampled"] is False and 0 < measures["icvf_mean"] < 1
    icvf = nib.load(out / "icvf.nii.gz")
    np.testing.assert_allclose(icvf.affine, subjects[1].affine)
    fit_out = tmp_path / "fit"
    assert main(["microstructure", "fit", *map(str, args), "--out", str(fit_out), "--quiet", "--no-qc"]) == 0
    assert json.loads((fit_out / "measures.json").read_text())["method"] == "fit"
    assert main(["microstructure", "evaluate", str(out), str(fit_out), "--out", str(tmp_path / "s.json"),
                 "--quiet"]) == 0
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["voxels"] == int(subjects[1].mask.sum()) and -1 <= scores["icvf"]["pearson_r"] <= 1


def test_other_scheme_is_interpolated_and_said(tmp_path, tiny_model):
    from mrinets.data.phantoms.microstructure import make_truth, simulate_dwi

    model, _ = tiny_model
    # The upper half of CROP: the q-space solve, most of this test's time, goes with the number of voxels.
    crop = (*CROP[:2], (80, 95))
    subject = ex.target_subject(ex.TEST_SEED_START + 50, crop=crop)
    full = GradientScheme.from_dipy("gtab_3shell")
    truth = make_truth(ex.TEST_SEED_START + 50, voxel_mm=3.0, population="target", crop=crop)
    dwi = simulate_dwi(truth, full, snr=20.0, rng=np.random.default_rng(1))
    image, mask = from_array(dwi, truth.affine), from_array(truth.mask.astype(np.float32), truth.affine)
    result = ms.predict(image, full, mask, model=model, config=ms.MicrostructureConfig(device="cpu"))
    assert result.measures["resampled"] is True and "interpolated in q-space" in result.measures["scheme_note"]
    direct = ms.predict(from_array(subject.lq_dwi, truth.affine), subject.lq_scheme, mask, model=model,
                        config=ms.MicrostructureConfig(device="cpu"))
    inside = truth.mask & (truth.tissue >= 2)
    # Same subject, another acquisition: the maps agree about as well as two noisy scans can.
    assert np.mean(np.abs(result.maps["icvf"][inside] - direct.maps["icvf"][inside])) < 0.08


@pytest.mark.parametrize("problem", ["3d", "count", "not-unit", "no-b0", "mask-grid", "nan"])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, subjects, problem):
    s = subjects[1]
    args = _write_dwi(tmp_path, s)
    extra = []
    if problem == "3d":
        nib.save(nib.Nifti1Image(s.lq_dwi[..., 0], s.affine), args[0])
    elif problem == "count":
        np.savetxt(args[2], s.lq_scheme.bvals[None, :-1], fmt="%g")
    elif problem == "not-unit":
        np.savetxt(args[4], 2 * s.lq_scheme.bvecs.T, fmt="%.6f")
    elif problem == "no-b0":
        np.savetxt(args[2], np.where(s.lq_scheme.bvals == 0, 1000, s.lq_scheme.bvals)[None], fmt="%g")
        bvecs = s.lq_scheme.bvecs.copy()
        bvecs[s.lq_scheme.b0_mask] = [1, 0, 0]
        np.savetxt(args[4], bvecs.T, fmt="%.6f")
    elif problem == "mask-grid":
        nib.save(nib.Nifti1Image(s.mask[:-1].astype(np.uint8), s.affine), tmp_path / "mask.nii.gz")
        extra = ["--mask", tmp_path / "mask.nii.gz"]
    elif problem == "nan":
        data = s.lq_dwi.copy()
        data[2, 2, 2, 3] = np.nan
        nib.save(nib.Nifti1Image(data, s.affine), args[0])
    out = tmp_path / "out"
    try:
        code = main(["microstructure", "predict", *map(str, args + extra), "--out", str(out), "--device", "cpu"])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("mrinets: error:")
    assert not out.exists() or not any(out.iterdir())


def test_batch_gathers_a_cohort_table_and_isolates_failures(tmp_path, tiny_model, subjects, capsys):
    model, _ = tiny_model
    weights = ms.save_model(model, tmp_path / "w.pt")
    args = _write_dwi(tmp_path, subjects[1])
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti")
    table = tmp_path / "subjects.tsv"
    table.write_text("subject\tdwi\tbval\tbvec\tmask\n"
                     f"s1\t{args[0].name}\t{args[2].name}\t{args[4].name}\tmask.nii.gz\n"
                     f"s2\tbroken.nii.gz\t{args[2].name}\t{args[4].name}\t\n")
    out = tmp_path / "cohort"
    code = main(["batch", "microstructure", str(table), "--out", str(out), "--weights", str(weights),
                 "--workers", "0", "--quiet"])
    assert code == 1  # s2 failed, s1 done
    assert "s2 failed" in capsys.readouterr().err
    rows = (out / "cohort_microstructure.tsv").read_text().splitlines()
    assert rows[0].split("\t")[:2] == ["subject", "brain_ml"] and len(rows) == 2 and rows[1].startswith("s1\t")
    assert (out / "s1" / "icvf.nii.gz").exists() and not (out / "s2" / "icvf.nii.gz").exists()


def test_bids_app_writes_noddi_derivatives(tmp_path, tiny_model, subjects, capsys):
    model, _ = tiny_model
    weights = ms.save_model(model, tmp_path / "w.pt")
    root = tmp_path / "bids"
    dwi_dir = root / "sub-01" / "ses-1" / "dwi"
    dwi_dir.mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.8.0"}')
    _write_dwi(dwi_dir, subjects[1], name="sub-01_ses-1_dwi")
    out = tmp_path / "derivatives"
    argv = ["bids", str(root), str(out), "participant", "--pipelines", "microstructure", "--noddi-weights",
            str(weights), "--workers", "0", "--quiet"]
    assert main(argv) == 0
    names = {p.name for p in (out / "sub-01" / "ses-1" / "dwi").iterdir()}
    assert {"sub-01_ses-1_model-NODDI_param-ICVF_dwimap.nii.gz", "sub-01_ses-1_model-NODDI_param-ODI_dwimap.nii.gz",
            "sub-01_ses-1_model-NODDI_measures.json"} <= names
    # A run missing its .bvec fails alone (summary row, exit 1), in one line naming the file.
    (dwi_dir / "sub-01_ses-1_dwi.bvec").unlink()
    capsys.readouterr()
    argv[2] = str(tmp_path / "again")
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sub-01_ses-1_dwi.bvec" in err
    assert "sub-01_ses-1_noddi\tfailed" in (tmp_path / "again" / "mrinets_summary_part0.tsv").read_text()


@pytest.mark.parametrize("extra", [["--rehearsal", "0.3"], ["--init", "x.pt", "--rehearsal", "1.5"]])
def test_cli_finetune_rejects_bad_rehearsal(tmp_path, capsys, extra):
    out = tmp_path / "out"
    try:
        code = main(["microstructure", "finetune", "--out", str(out), *extra])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--rehearsal" in err
    assert not out.exists()
