"""QSM pipeline end to end: phantoms with known chi, the real GRE crop, outputs on the input grid."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from mrinets.cli import main
from mrinets.data.phantoms.qsm import NUCLEI, make_qsm_head
from mrinets.metrics.qsm import qsm_scores
from mrinets.pipelines.qsm import QsmConfig, combine_echoes, evaluate, predict, reconstruct


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("qsm_phantom")
    make_qsm_head(11, voxel_size=3.0).save(out)
    return out


def test_temporal_unwrapping_is_exact_in_reliable_voxels():
    p = make_qsm_head(4, voxel_size=3.0, snr=1e5)
    unwrapped, field_hz, reliable = combine_echoes(p.phase, p.magnitude, echo_times=p.echo_times, mask=p.mask,
                                                  voxel_size=np.array([3.0, 3.0, 3.0]))
    assert reliable.sum() > 0.85 * p.mask.sum()
    # unwrapped minus true phase is a constant multiple of 2 pi (true phase = phi0 + field * TE)
    ppm_to_hz = 42.577478518 * p.b0
    err = np.abs(field_hz - p.total_field * ppm_to_hz)[reliable]
    # the smoothed receive phase leaves a small bias where it curves (0.1 Hz = 0.0008 ppm at 3 T)
    assert err.max() < 0.1 and np.median(err) < 0.01
    rewrapped = np.angle(np.exp(1j * unwrapped))
    np.testing.assert_allclose(np.cos(rewrapped[reliable]), np.cos(p.phase[reliable]), atol=1e-4)


def test_tv_beats_tkd_and_nuclei_are_measured():
    p = make_qsm_head(12, voxel_size=3.0)
    scores = {}
    for method in ("tkd", "tv"):
        out = reconstruct(p.magnitude, p.phase, affine=p.affine, mask=p.mask,
                          config=QsmConfig(echo_times=p.echo_times, b0=p.b0, method=method))
        scores[method] = qsm_scores(out["chi"], p.chi, mask=out["mask"], labels=np.where(out["mask"], p.labels, 0))
    assert scores["tv"]["nrmse_percent"] < scores["tkd"]["nrmse_percent"]
    assert scores["tv"]["ssim"] > scores["tkd"]["ssim"]
    gp = scores["tv"]["roi"][str(NUCLEI["globus_pallidus"][0])]
    assert abs(gp["error_ppm"]) < 0.05


def test_cli_predict_and_evaluate(phantom_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["qsm", "predict", "--mag", str(phantom_dir / "mag.nii.gz"), "--phase", str(phantom_dir / "phase.nii.gz"),
                 "--te", "0.004", "0.012", "0.020", "0.028", "--b0", "3", "--labels", str(phantom_dir / "labels.nii.gz"),
                 "--out", str(out), "--quiet", "--no-qc"])
    assert code == 0
    measures = json.loads((out / "measures.json").read_text())
    assert measures["method"] == "tkd" and "globus_pallidus" in measures["roi_mean_chi_ppm"]
    chi = nib.load(out / "chi.nii.gz")
    np.testing.assert_allclose(chi.affine, nib.load(phantom_dir / "mag.nii.gz").affine)
    assert nib.load(out / "unwrapped_phase.nii.gz").shape[-1] == 4
    capsys.readouterr()
    code = main(["qsm", "evaluate", "--pred", str(out / "chi.nii.gz"), "--truth", str(phantom_dir / "chi.nii.gz"),
                 "--mask", str(out / "mask.nii.gz"), "--labels", str(phantom_dir / "labels.nii.gz"),
                 "--out", str(tmp_path / "scores.json")])
    assert code == 0
    scores = json.loads(capsys.readouterr().out)
    assert {"nrmse_percent", "hfen_percent", "ssim", "roi"} <= set(scores)
    assert json.loads((tmp_path / "scores.json").read_text()) == scores


def test_scanner_integer_phase_gives_same_result(phantom_dir, tmp_path):
    img = nib.load(phantom_dir / "phase.nii.gz")
    ints = np.clip(np.round(img.get_fdata() / np.pi * 4096), -4096, 4095).astype(np.int16)
    nib.save(nib.Nifti1Image(ints, img.affine, img.header), tmp_path / "phase_int.nii.gz")
    config = QsmConfig(echo_times=(0.004, 0.012, 0.020, 0.028), b0=3.0)
    a = predict(phantom_dir / "mag.nii.gz", phantom_dir / "phase.nii.gz", config=config)
    b = predict(phantom_dir / "mag.nii.gz", tmp_path / "phase_int.nii.gz", config=config)
    assert b.measures["phase_scale_to_radians"] == pytest.approx(np.pi / 4096)
    both = a.mask & b.mask
    assert np.corrcoef(a.chi[both], b.chi[both])[0, 1] > 0.99


def test_oblique_b0_direction_is_carried_through_the_affine(tmp_path):
    """A head scanned tilted: the same chi is recovered when --b0-dir says where B0 was."""
    tilt = np.deg2rad(20.0)
    b0_world = (0.0, np.sin(tilt), np.cos(tilt))
    p = make_qsm_head(13, voxel_size=3.0, b0_dir=b0_world, snr=300)
    right = reconstruct(p.magnitude, p.phase, affine=p.affine, mask=p.mask,
                        config=QsmConfig(echo_times=p.echo_times, b0=3.0, b0_dir=b0_world))
    wrong = reconstruct(p.magnitude, p.phase, affine=p.affine, mask=p.mask,
                        config=QsmConfig(echo_times=p.echo_times, b0=3.0))
    m = right["mask"]
    assert qsm_scores(right["chi"], p.chi, mask=m)["nrmse_percent"] < qsm_scores(wrong["chi"], p.chi, mask=m)["nrmse_percent"]


def test_real_gre_crop_runs_end_to_end(real_gre, tmp_path):
    mag, phase = real_gre
    result = predict(mag, phase, config=QsmConfig(echo_times=(0.004, 0.008, 0.012), b0=3.0, vsharp_max_radius_mm=4.0))
    files = result.save(tmp_path, qc=False)
    chi = nib.load(tmp_path / "chi.nii.gz")
    np.testing.assert_allclose(chi.affine, nib.load(mag).affine)
    assert chi.shape == (40, 40, 20)
    assert result.measures["phase_scale_to_radians"] == pytest.approx(np.pi / 0.0036744, rel=1e-3)
    values = result.chi[result.mask]
    assert result.mask.sum() > 1000 and np.isfinite(values).all()
    # brain tissue susceptibility stays within a physiological range
    assert np.percentile(np.abs(values), 99) < 0.5
    assert {f.name for f in files} >= {"chi.nii.gz", "mask.nii.gz", "measures.json"}


def test_evaluate_rejects_other_grid(phantom_dir, tmp_path):
    from mrinets.errors import GridMismatchError

    img = nib.load(phantom_dir / "chi.nii.gz")
    nib.save(nib.Nifti1Image(img.get_fdata()[:-1].astype(np.float32), img.affine), tmp_path / "small.nii.gz")
    with pytest.raises(GridMismatchError):
        evaluate(tmp_path / "small.nii.gz", phantom_dir / "chi.nii.gz", mask=phantom_dir / "mask.nii.gz")


def test_las_oblique_anisotropic_scan_through_files(tmp_path):
    """A head stored LAS on an oblique 4 x 4 x 5 mm grid with B0 tilted in world coordinates.

    Read from NIfTI as a user's scan is: the chain's B0 in voxel axes equals the
    one known from the phantom's construction, and giving B0 as if it were in
    voxel axes (ignoring the affine's flip and rotation) scores worse.
    """
    from mrinets.data.phantoms.qsm import make_qsm_scan
    from mrinets.io import load, load_mask

    b0_world = (np.sin(np.deg2rad(25)), 0.0, np.cos(np.deg2rad(25)))
    p = make_qsm_scan(8, voxel_size=(4.0, 4.0, 5.0), orientation="LAS", oblique_deg=(0.0, 0.0, 30.0),
                      b0_dir=b0_world, fine_mm=4.0, snr=300)
    p.save(tmp_path)
    files = (tmp_path / "mag.nii.gz", tmp_path / "phase.nii.gz")
    truth = load(tmp_path / "chi.nii.gz")
    region = load_mask(tmp_path / "mask.nii.gz", like=truth)
    right = predict(*files, config=QsmConfig(echo_times=p.echo_times, b0=3.0, b0_dir=b0_world, harmonic_iterations=0))
    stored = np.asarray(p.meta["b0_dir_voxels"])
    expected = np.zeros(3)
    for axis, (target, flip) in enumerate(truth.source.to_ras):
        expected[int(target)] = flip * stored[axis]
    np.testing.assert_allclose(np.abs(right.measures["b0_dir_voxels"] @ expected), 1.0, atol=1e-6)
    naive = predict(*files, config=QsmConfig(echo_times=p.echo_times, b0=3.0, b0_dir=tuple(stored),
                                             harmonic_iterations=0))
    m = region & right.mask & naive.mask
    good = qsm_scores(right.chi, truth.data, mask=m)["nrmse_percent"]
    bad = qsm_scores(naive.chi, truth.data, mask=m)["nrmse_percent"]
    assert good < 90 and good < bad - 5


def test_smoothed_receive_phase_lowers_field_noise():
    """Fitting the frequency through a smoothed TE = 0 phase halves its noise against a voxel-wise offset fit."""
    from mrinets.physics.echoes import fit_echoes

    p = make_qsm_head(6, voxel_size=3.0, snr=30)
    voxel = np.array([3.0, 3.0, 3.0])
    unwrapped, field_hz, reliable = combine_echoes(p.phase, p.magnitude, echo_times=p.echo_times, mask=p.mask,
                                                  voxel_size=voxel)
    voxelwise = fit_echoes(unwrapped, echo_times=p.echo_times, magnitude=p.magnitude, mask=reliable,
                           offset=True).field_hz
    truth = p.total_field * 42.577478518 * p.b0
    assert np.std((field_hz - truth)[reliable]) < 0.7 * np.std((voxelwise - truth)[reliable])
