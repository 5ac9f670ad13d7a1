"""Any diffusion scheme: the registry's choice of network, the fallback to the fit, pretraining for a user's scheme."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from mrinets.cli import main
from mrinets.data.phantoms.microstructure import make_truth, simulate_dwi
from mrinets.io.gradients import array_frame_to_fsl
from mrinets.physics.diffusion import GradientScheme
from mrinets.pipelines import microstructure as ms
from mrinets.pipelines.microstructure import experiment as ex
from mrinets.pipelines.microstructure import schemes

CROP = ((80, 104), (110, 134), (76, 94))  # 24 x 24 x 18 mm of white and grey matter: 8 x 8 x 6 voxels at 3 mm
REG = schemes.REGISTRY


@pytest.mark.parametrize("shells, expected, kind", [
    ((1000.0, 2000.0), "b1000-b2000", "shells match"),
    ((990.0, 2005.0), "b1000-b2000", "shells match"),  # HCP-style jitter of the nominal b-values
    ((1000.0,), "b1000", "shells match"),
    ((700.0, 2000.0), "b700-b2000", "shells match"),
    ((1000.0, 2000.0, 3000.0), "b1000-b2000-b3000", "shells match"),
    ((1500.0, 2500.0), "b1500-b2500", "shells match"),
    ((1000.0, 1500.0, 2000.0, 2500.0), "b1500-b2500", "interpolated across b-values"),
])
def test_choice_picks_the_network_whose_shells_match(shells, expected, kind):
    choice = schemes.choose(shells, list(REG.values()))
    assert (choice.name, choice.kind) == (expected, kind)


def test_choice_never_extrapolates_and_falls_back_when_nothing_fits():
    only_default = [REG["b1500-b2500"]]
    assert schemes.choose((1000.0,), only_default) is None  # one shell cannot give b1500 and b2500
    assert schemes.choose((700.0, 2000.0), only_default) is None  # b2500 lies beyond the input's b2000
    # Without the b700/b2000 network, the b1000/b2000 one is interpolated between the input's shells.
    choice = schemes.choose((700.0, 2000.0), [REG["b1000-b2000"], REG["b1000"]])
    assert (choice.name, choice.kind) == ("b1000-b2000", "interpolated across b-values")
    # A single-shell network never serves a multi-shell scan (it would discard shells).
    assert schemes.choose((1000.0, 3000.0), [REG["b1000"]]) is None


def test_registry_schemes_have_the_shells_they_are_named_for():
    for spec in REG.values():
        scheme = schemes.spec_scheme(spec)
        assert scheme.shells == tuple(b for b, _ in spec.shells), spec.name
        if spec.name != "b1500-b2500":
            assert int((~scheme.b0_mask).sum()) == sum(n for _, n in spec.shells)


def test_shipped_networks_read_their_registry_scheme():
    for spec in schemes.shipped():
        model = ms.load_model(spec.path)
        assert model.scheme.same_as(schemes.spec_scheme(spec)), spec.name
        assert spec.path.with_suffix(".md").exists()
        assert model.card["pretrain"]["command"].startswith("mrinets microstructure pretrain")


def _write(tmp_path, name, shells, n_dir=20):
    from mrinets.physics.diffusion.amico import hemisphere_directions

    truth = make_truth(ex.TEST_SEED_START + 60, voxel_mm=3.0, population="target", crop=CROP)
    bvals = np.concatenate([[0.0, 0.0], *[np.full(n_dir, b) for b in shells]])
    bvecs = np.concatenate([np.zeros((2, 3)), *[hemisphere_directions(n_dir) for _ in shells]])
    scheme = GradientScheme(bvals, bvecs)
    dwi = simulate_dwi(truth, scheme, snr=30.0, rng=np.random.default_rng(3))
    nib.save(nib.Nifti1Image(dwi.astype(np.float32), truth.affine), tmp_path / f"{name}.nii.gz")
    np.savetxt(tmp_path / f"{name}.bval", bvals[None], fmt="%g")
    np.savetxt(tmp_path / f"{name}.bvec", array_frame_to_fsl(scheme.bvecs, truth.affine).T, fmt="%.6f")
    nib.save(nib.Nifti1Image(truth.mask.astype(np.uint8), truth.affine), tmp_path / "mask.nii.gz")
    return [str(tmp_path / f"{name}.nii.gz"), "--bval", str(tmp_path / f"{name}.bval"), "--bvec",
            str(tmp_path / f"{name}.bvec"), "--mask", str(tmp_path / "mask.nii.gz")], truth


@pytest.mark.parametrize("name, shells", [("b700_b2000", (700.0, 2000.0)), ("b1000", (1000.0,))])
def test_common_schemes_give_maps_and_exit_0(tmp_path, capsys, name, shells):
    args, truth = _write(tmp_path, name, shells)
    out = tmp_path / "out"
    assert main(["microstructure", "predict", *args, "--out", str(out), "--device", "cpu", "--no-qc"]) == 0
    measures = json.loads((out / "measures.json").read_text())
    choice = schemes.choose(shells)
    if choice is None:
        assert measures["method"] == "fit" and "no shipped network fits" in measures["reason"]
    else:
        assert measures["method"] == "network" and measures["network"] == choice.name
    assert ("warning" in measures) == (len(shells) == 1)  # single shell: said to be ill-posed
    inside = truth.mask
    for p in ms.PARAMETERS:
        values = nib.load(out / f"{p}.nii.gz").get_fdata()[inside]
        assert np.all((values >= 0) & (values <= 1)) and values.std() > 0, p


def test_no_fitting_network_falls_back_to_the_fit_with_a_note(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(schemes, "shipped", lambda: [REG["b1500-b2500"]])
    args, _ = _write(tmp_path, "b700_b2000", (700.0, 2000.0))
    out = tmp_path / "out"
    assert main(["microstructure", "predict", *args, "--out", str(out), "--device", "cpu", "--no-qc"]) == 0
    measures = json.loads((out / "measures.json").read_text())
    assert measures["method"] == "fit" and measures["network"] is None
    assert "no shipped network fits shells b700/b2000" in measures["reason"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model fit" in err[0]  # one line in the log


def test_given_weights_that_cannot_serve_fall_back_to_the_fit(tmp_path):
    from mrinets.io.nifti import from_array

    model, _ = ex.pretrain(1, ms.FitConfig(epochs=1, quiet=True, device="cpu"), crop=CROP)  # b1500/b2500
    _, truth = _write(tmp_path, "b1000", (1000.0,))
    image = from_array(nib.load(tmp_path / "b1000.nii.gz").get_fdata().astype(np.float32), truth.affine)
    scheme = GradientScheme.from_files(tmp_path / "b1000.bval", tmp_path / "b1000.bvec")
    result = ms.predict(image, scheme, from_array(truth.mask.astype(np.float32), truth.affine), model=model,
                        config=ms.MicrostructureConfig(device="cpu"))
    assert result.measures["method"] == "fit" and "cannot serve" in result.measures["reason"]


def test_pretrain_scheme_from_writes_weights_and_a_card_predict_uses(tmp_path, capsys):
    args, _ = _write(tmp_path, "mine", (800.0, 1600.0), n_dir=8)
    weights = tmp_path / "w" / "mine.pt"
    assert main(["microstructure", "pretrain", "--scheme-from", args[2], args[4], "--out", str(weights),
                 "--subjects", "1", "--epochs", "2", "--crop", *map(str, np.ravel(CROP)), "--test-subjects", "1",
                 "--device", "cpu", "--quiet"]) == 0
    model = ms.load_model(weights)
    assert model.scheme.shells == (800.0, 1600.0) and model.config.n_measurements == 16
    card = weights.with_suffix(".md").read_text()
    assert "--scheme-from" in card and "b800/b1600" in card and "| network |" in card
    assert model.card["pretrain"]["epochs_run"] == 2
    out = tmp_path / "out"
    assert main(["microstructure", "predict", *args, "--weights", str(weights), "--out", str(out), "--device",
                 "cpu", "--no-qc", "--quiet"]) == 0
    measures = json.loads((out / "measures.json").read_text())
    assert measures["method"] == "network" and measures["network"] == "mine.pt"
    # Fine-tuning on target phantoms scanned on that scheme (plus a full research scan whose fit is the target).
    tuned = tmp_path / "w" / "mine_ft.pt"
    assert main(["microstructure", "finetune", "--init", str(weights), "--out", str(tuned), "--subjects", "1",
                 "--epochs", "1", "--crop", *map(str, np.ravel(CROP)), "--device", "cpu", "--quiet"]) == 0
    again = ms.load_model(tuned)
    assert again.scheme.same_as(model.scheme) and again.card["finetune"]["subjects"] == 1
    text = tuned.with_suffix(".md").read_text()
    assert "- pretrain: `mrinets microstructure pretrain" in text
    assert "- finetune: `mrinets microstructure finetune" in text


def test_public_api_has_predict_evaluate_train():
    import mrinets

    for name in ("predict", "evaluate", "train"):
        assert callable(getattr(mrinets.microstructure, name))


def test_train_makes_a_network_for_a_given_scheme_with_held_out_errors():
    scheme = schemes.spec_scheme(REG["b700-b2000"])
    model = ms.train(scheme, subjects=1, fit=ms.FitConfig(epochs=1, quiet=True, device="cpu"), crop=CROP,
                     test_subjects=1)
    assert model.scheme.same_as(scheme) and model.card["pretrain"]["crop"] == [list(c) for c in CROP]
    net, fit = model.card["held_out"]["network"], model.card["held_out"]["fit_on_low_quality"]
    assert 0 < net["mae_mean"] < 0.5 and 0 < fit["mae_mean"] < 0.5


def test_auxiliary_subject_is_kept_and_read_back_the_same(monkeypatch, tmp_path):
    monkeypatch.setenv("MRINETS_CACHE", str(tmp_path))
    scheme = schemes.spec_scheme(REG["b1000"])
    first = ex.auxiliary_set(ex.AUX_SEED_START + 7, scheme, crop=CROP)
    assert len(list((tmp_path / "microstructure").glob("aux-*.npz"))) == 1
    again = ex.auxiliary_set(ex.AUX_SEED_START + 7, scheme, crop=CROP)  # from the file
    np.testing.assert_array_equal(first.patches, again.patches)
    monkeypatch.setenv("MRINETS_CACHE", "")  # not kept: computed again, the same numbers
    np.testing.assert_array_equal(ex.auxiliary_set(ex.AUX_SEED_START + 7, scheme, crop=CROP).patches, first.patches)
