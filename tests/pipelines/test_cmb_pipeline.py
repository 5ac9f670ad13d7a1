"""The CMB pipeline end to end: predict with the shipped weights (phantom and real GRE), locations, inputs."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from mrinets.cli import main
from mrinets.io import Image
from mrinets.pipelines import cmb
from mrinets.pipelines.cmb.data import input_channels, standardise, to_working_grid

CENTRE = (-24.0, -10.0, 28.0)


@pytest.fixture(scope="module")
def phantom():
    from mrinets.data.phantoms.cmb import make_cmb_subject

    return make_cmb_subject(11, crop_mm=40.0, n_cmb=3, b0=3.0, te=0.025, snr=40.0, centre_mm=CENTRE)


def test_mrinets_cmb_resolves_to_the_pipeline():
    import mrinets

    assert "cmb" in mrinets.PIPELINES
    assert all(callable(getattr(mrinets.cmb, f)) for f in ("predict", "train", "evaluate"))


def test_standardised_microbleeds_are_bright_in_every_contrast(phantom):
    lesion = phantom.cmb_labels > 0
    for contrast, image in phantom.images.items():
        z = standardise(image, contrast, phantom.mask)
        assert np.median(z[lesion]) > 3 * np.abs(np.median(z[phantom.mask])) + 0.1, contrast


def test_standardisation_ignores_the_scanner_scale(phantom):
    z1 = standardise(phantom.images["gre"], "gre", phantom.mask)
    z2 = standardise(37.0 * phantom.images["gre"], "gre", phantom.mask)
    np.testing.assert_allclose(z1, z2, atol=1e-5)
    assert input_channels(z1, phantom.mask).shape == (2, *z1.shape)


def test_working_grid_keeps_the_field_of_view():
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    data, work = to_working_grid(np.ones((40, 40, 10), np.float32), affine)
    assert data.shape == (20, 20, 20)
    corner_in = affine @ [-0.5, -0.5, -0.5, 1.0]
    corner_work = work @ [-0.5, -0.5, -0.5, 1.0]
    np.testing.assert_allclose(corner_in, corner_work, atol=1e-9)


@pytest.mark.parametrize("point, expected", [((40, -20, 40), "lobar"), ((20, 0, 5), "deep"),
                                             ((0, -30, -30), "infratentorial"), ((20, -60, -35), "infratentorial"),
                                             ((-50, 0, -25), "lobar")])
def test_mars_location_rule(point, expected):
    assert cmb.mars_location(np.array(point, float)) == expected


def test_predict_cli_on_a_phantom_with_shipped_weights(phantom, tmp_path):
    path = tmp_path / "swi.nii.gz"
    nib.save(nib.Nifti1Image(phantom.images["swi"], phantom.affine), path)
    out = tmp_path / "out"
    assert main(["cmb", "predict", str(path), "--contrast", "swi", "--space", "mni", "--out", str(out),
                 "--device", "cpu", "--quiet"]) == 0
    labels = nib.load(out / "swi_cmb_labels.nii.gz")
    assert labels.shape == phantom.images["swi"].shape and np.allclose(labels.affine, phantom.affine)
    with open(out / "swi_cmb.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    measures = json.loads((out / "swi_cmb.json").read_text())
    assert measures["count"] == len(rows) == int(np.asarray(labels.dataobj).max())
    assert (out / "swi_cmb_qc.png").stat().st_size > 1000
    for row in rows:
        assert row["location"] in ("lobar", "deep", "infratentorial")
        assert 0 < float(row["probability"]) <= 1 and float(row["volume_mm3"]) > 0


def test_predict_finds_most_phantom_microbleeds(phantom):
    result = cmb.predict(Image(phantom.images["gre"], phantom.affine), cmb.CmbConfig(contrast="gre", device="cpu"),
                         mask=phantom.mask)
    from mrinets.metrics.detection import cluster_detection

    found = cluster_detection(result.labels, phantom.cmb_labels)
    assert found["tp"] >= 2 and found["fp"] <= 2, found


def test_predict_on_real_gre_echo_flags_out_of_range(real_gre, tmp_path):
    mag = nib.load(real_gre[0])
    echo = tmp_path / "mag_echo3.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(mag.dataobj)[..., 2].astype(np.float32), mag.affine), echo)
    out = tmp_path / "out"
    assert main(["cmb", "predict", str(echo), "--contrast", "gre", "--out", str(out), "--device", "cpu",
                 "--quiet"]) == 0
    measures = json.loads((out / "mag_echo3_cmb.json").read_text())
    # 19 x 19 x 20 mm: smaller than the networks' context, and flagged so.
    assert measures["out_of_training_range"] is True
    assert any("field of view" in r for r in measures["out_of_training_range_reasons"])
    assert measures["count"] >= 0 and measures["candidates_step1"] >= measures["count"]


def test_predict_refuses_4d(tmp_path):
    path = tmp_path / "four.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8, 2), np.float32), np.eye(4)), path)
    assert main(["cmb", "predict", str(path), "--contrast", "gre", "--out", str(tmp_path / "o")]) == 2


def test_cli_batch_cmb_gathers_counts_and_isolates_a_bad_row(phantom, tmp_path, capsys):
    for contrast in ("swi", "gre"):
        nib.save(nib.Nifti1Image(phantom.images[contrast], phantom.affine), tmp_path / f"{contrast}.nii.gz")
    (tmp_path / "subjects.tsv").write_text("subject\timage\tcontrast\nsub-a\tswi.nii.gz\tswi\n"
                                           "sub-b\tgre.nii.gz\tgre\nsub-c\tgre.nii.gz\tt1\n")
    out = tmp_path / "out"
    code = main(["batch", "cmb", str(tmp_path / "subjects.tsv"), "--out", str(out), "--space", "mni", "--workers", "0",
                 "--quiet"])
    assert code == 1
    assert "subjects.tsv:4: contrast" in capsys.readouterr().err
    with open(out / "cohort_cmb.csv", newline="") as fh:
        cohort = {row["subject"]: row for row in csv.DictReader(fh)}
    assert sorted(cohort) == ["sub-a", "sub-b"] and not (out / "sub-c").exists()
    for subject, contrast in (("sub-a", "swi"), ("sub-b", "gre")):
        measures = json.loads((out / subject / f"{contrast}_cmb.json").read_text())
        row = cohort[subject]
        assert row["contrast"] == contrast and int(row["count"]) == measures["count"]
        assert sum(int(row[f"count_{loc}"]) for loc in cmb.LOCATIONS) == measures["count"]


def test_bids_app_finds_swi_and_t2starw(phantom, tmp_path):
    root = tmp_path / "ds"
    anat = root / "sub-01" / "anat"
    anat.mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.9.0"}')
    nib.save(nib.Nifti1Image(phantom.images["swi"], phantom.affine), anat / "sub-01_swi.nii.gz")
    nib.save(nib.Nifti1Image(phantom.images["gre"], phantom.affine), anat / "sub-01_run-1_T2starw.nii.gz")
    out = tmp_path / "deriv"
    argv = ["bids", str(root), str(out), "participant", "--pipelines", "cmb", "--workers", "0", "--quiet"]
    assert main(argv) == 0
    folder = out / "sub-01" / "anat"
    swi = json.loads((folder / "sub-01_swi_cmb.json").read_text())
    gre = json.loads((folder / "sub-01_run-1_T2starw_cmb.json").read_text())
    assert (swi["contrast"], gre["contrast"]) == ("swi", "gre")
    assert (folder / "sub-01_swi_cmb_labels.nii.gz").is_file() and (folder / ".mrinets-done-sub-01_swi_cmb").is_file()
