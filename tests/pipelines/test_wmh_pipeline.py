"""WMH pipeline: box round trip, training steps, predict outputs and measures, CLI contract."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest
import torch

from mrinets.cli import main
from mrinets.data.phantoms.wmh import make_wmh_subject
from mrinets.errors import ArgumentError
from mrinets.io.nifti import from_array
from mrinets.metrics.segmentation import ERROR_KINDS, dice
from mrinets.pipelines import wmh
from mrinets.pipelines.wmh.grid import GRID_SHAPE, from_grid, grid_brain, grid_search, grid_wm, to_grid
from mrinets.pipelines.wmh.model import WmhTrainConfig, acquire_label, label_agreement, recalibrate_label

CROP = ((30, 170), (40, 200), (60, 140))
TINY = dict(channels=(4, 8, 16, 32), patch_size=(32, 32, 24), block=(24, 24, 3), samples_per_subject=2, epochs=1,
            batch_size=2, quiet=True, device="cpu")


@pytest.fixture(scope="module")
def phantom():
    return make_wmh_subject(7, severity=0.9, crop=CROP, gross=False)


@pytest.fixture(scope="module")
def subject(phantom):
    from mrinets.pipelines.wmh.data import prepare_subject

    return prepare_subject("p7", phantom.t1, phantom.t1_affine, phantom.flair_label, phantom.flair_affine,
                           phantom.to_mni, truth=phantom.lesion)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    config = WmhTrainConfig(**TINY)
    torch.manual_seed(0)
    model = wmh.model.build_network(config.channels)
    return wmh.save_weights(model, config, tmp_path_factory.mktemp("w") / "tiny.pt", {"command": "test"})


def test_box_round_trip_is_exact_for_smooth_maps():
    rng = np.random.default_rng(0)
    angle = np.deg2rad(7)
    to_mni = np.eye(4)
    to_mni[:3, :3] = [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1.05]]
    to_mni[:3, 3] = rng.uniform(-5, 5, 3)
    affine = np.diag([1.2, 1.2, 1.2, 1.0])
    affine[:3, 3] = [-80, -100, -30]
    shape = (130, 160, 90)
    idx = np.indices(shape).transpose(1, 2, 3, 0)
    mni = idx @ (to_mni @ affine)[:3, :3].T + (to_mni @ affine)[:3, 3]
    smooth = np.cos(mni[..., 0] / 15) * np.sin(mni[..., 1] / 20)
    back = from_grid(to_grid(smooth, affine, to_mni), affine, shape, to_mni)
    # Inside the box and away from the subject's own edge (beyond it the box holds zeros).
    inside = (np.abs(mni[..., 0]) < 80) & (mni[..., 1] > -110) & (mni[..., 1] < 80) & (mni[..., 2] > -25) \
        & (mni[..., 2] < 65) & np.all((idx >= 3) & (idx < np.array(shape) - 3), axis=-1)
    assert inside.mean() > 0.3
    assert np.abs(back - smooth)[inside].max() < 0.01


def test_cubic_round_trip_keeps_small_lesions(phantom):
    # A posed head: the box and the T1 grid do not line up, so each linear resampling blurs the lesion edges.
    from mrinets.data.phantoms.head import rotation_matrix

    to_mni = np.eye(4)
    to_mni[:3, :3] = rotation_matrix(np.deg2rad([4.0, -3.0, 6.0]))
    to_mni[:3, 3] = [0.4, -0.3, 0.6]
    truth = phantom.lesion >= 0.5
    scores = {}
    for order in (1, 3):
        box = to_grid(phantom.lesion, phantom.t1_affine, to_mni, order=order)
        back = from_grid(box, phantom.t1_affine, truth.shape, to_mni, order=order)
        scores[order] = dice(back >= 0.5, truth)
    assert scores[3] > 0.9 and scores[3] > scores[1] + 0.05


def test_search_region_leaves_out_only_the_brain_surface():
    from scipy import ndimage

    brain, search, wm = grid_brain(), grid_search(), grid_wm() > 0.5
    # The box cuts the brain at its faces: that cut is not the brain's surface (border_value=1).
    surface = brain & ~ndimage.binary_erosion(brain, border_value=1)
    deep = ndimage.binary_erosion(brain, iterations=5, border_value=1)
    assert not (search & ~brain).any() and not (search & surface).any()
    assert search[deep].all() and search[wm].mean() > 0.999


def test_prepared_subject_ties_label_to_box(subject):
    assert subject.image.shape == GRID_SHAPE and subject.thickness_mm == pytest.approx(5.0)
    assert subject.slice_axis == 2
    # The truth, carried through the label's acquisition, agrees with the rater's label better than chance.
    agreement = label_agreement(subject.truth, subject)
    shifted = np.roll(subject.truth, 12, axis=0)
    assert agreement > 0.3 and agreement > 2 * label_agreement(shifted, subject)
    assert subject.naive.sum() > 0 and set(np.unique(subject.naive)) <= {0.0, 1.0}


@pytest.mark.parametrize("loss", ["super-resolution", "naive"])
def test_train_runs_both_losses_and_two_steps(subject, loss):
    other = wmh.data.TrainingSubject(**{**subject.__dict__, "name": "copy"})
    # An untrained network's noise would make the label fit search the whole brain (tested on its own below).
    config = WmhTrainConfig(loss=loss, two_step=True, recalibrate=False, **TINY)
    model, report, first = wmh.train([subject, other], config)
    assert set(report["agreement"]) == {"p7", "copy"}
    assert report["agreement"]["p7"] == pytest.approx(report["agreement"]["copy"])
    assert report["dropped"] == []
    assert isinstance(model, torch.nn.Module) and model is not first


def test_predict_outputs_on_input_grid_with_measures(phantom, tiny_weights, tmp_path):
    t1 = from_array(phantom.t1, phantom.t1_affine)
    result = wmh.predict(t1, wmh.WmhConfig(weights=str(tiny_weights), device="cpu"), to_mni=phantom.to_mni)
    assert result.prob.shape == phantom.t1.shape and 0 <= result.prob.min() and result.prob.max() <= 1
    m = result.measures
    assert m["etiv_ml"] == pytest.approx(1886.5, rel=0.01)
    regions = sum(m[f"wmh_{r}_ml"] for r in wmh.segment.REGION_NAMES)
    quads = sum(m[f"wmh_{q}_ml"] for q in wmh.segment.QUADRANT_NAMES)
    assert quads == pytest.approx(m["wmh_total_ml"], abs=1e-6)
    assert regions <= m["wmh_total_ml"] + 1e-6
    assert set(np.unique(result.regions)) <= {0, 1, 2, 3, 4}
    files = result.save(tmp_path)
    prob = nib.load(tmp_path / "image_wmh_prob.nii.gz")
    np.testing.assert_allclose(prob.affine, phantom.t1_affine, atol=1e-5)
    assert {f.name for f in files} >= {"image_wmh_mask.nii.gz", "image_wmh_regions.nii.gz", "image_wmh.csv",
                                        "image_wmh_qc.png"}


def test_partial_volume_trim_keeps_the_band_of_the_lesion_share():
    from mrinets.pipelines.wmh.segment import PV_LESION_SHARE, trim_partial_volume

    reach = 1.0 - PV_LESION_SHARE
    t1 = np.ones((10, 10, 10), np.float32)
    prob = np.zeros_like(t1)
    # A sure core at 0.6 of white matter with CSF at 0.2 puts the band at (0.6 - 0.4 reach, 0.6 + 0.4 reach);
    # uncertain edge layers lie beside it: mostly lesion (0.75), more than half white matter (0.85), more than
    # half CSF (0.35).
    t1[2:5, 2:5, 2:5], prob[2:5, 2:5, 2:5] = 0.6, 0.95
    t1[5, 2:5, 2:5], prob[5, 2:5, 2:5] = 0.75, 0.6
    t1[6, 2:5, 2:5], prob[6, 2:5, 2:5] = 0.85, 0.6
    t1[1, 2:5, 2:5], prob[1, 2:5, 2:5] = 0.35, 0.6
    mask = prob >= 0.5
    trimmed, band = trim_partial_volume(mask, prob, t1, csf=0.2)
    assert band == pytest.approx((0.6 - 0.4 * reach, 0.6 + 0.4 * reach))
    assert trimmed[2:6].sum() == 27 + 9 and not trimmed[6].any() and not trimmed[1].any()
    # Without a CSF level, or with one no darker than the lesion, the band has no lower side.
    for csf in (None, 0.7):
        kept, band = trim_partial_volume(mask, prob, t1, csf=csf)
        assert band == (-np.inf, pytest.approx(0.6 + 0.4 * reach)) and kept[1].sum() == 9
    # No lesion level to trust: too small a sure core, or a core no darker than white matter.
    small = np.where(prob > 0.9, 0.6, prob)
    small[2:5, 2:5, 2] = 0.95
    bright_core = np.where(prob > 0.9, 1.1, t1)
    for untrusted in (trim_partial_volume(mask, small, t1, 0.2), trim_partial_volume(mask, prob, bright_core, 0.2)):
        assert np.array_equal(untrusted[0], mask) and untrusted[1] is None


def test_growth_takes_dark_white_matter_next_to_the_mask_only():
    from mrinets.pipelines.wmh.segment import GROW_MIN_PROB, GROW_STEPS, grow_in_white_matter

    t1 = np.ones((20, 12, 12), np.float32)
    prob = np.zeros_like(t1)
    wm = np.ones_like(t1)
    # A sure core at 0.6 of white matter with CSF at 0.2 (band 0.42 to 0.78); beside it along x, uncertain voxels
    # of every kind.
    t1[2:5, 4:7, 4:7], prob[2:5, 4:7, 4:7] = 0.6, 0.95
    prob[5:18, 4:7, 4:7] = 0.3
    end = 5 + GROW_STEPS + 2
    t1[5:end, 4:7, 4:7] = 0.7  # dark enough: grown layer by layer, but no further than GROW_STEPS
    t1[5:9, 4, 4] = 0.85  # brighter than the band: less than half lesion
    t1[5, 6, 6] = 0.3  # darker than the band: more than half CSF
    wm[5, 5, 6] = 0.2  # grey matter in the template
    mask = prob >= 0.5
    grown = grow_in_white_matter(mask, prob, t1, wm, csf=0.2)
    new = grown & ~mask
    assert new[5].sum() == 9 - 3 and new[5 + GROW_STEPS - 1].any() and not new[5 + GROW_STEPS:].any()
    assert not new[:, 4, 4].any() and not new[5, 6, 6] and not new[5, 5, 6]
    assert (grown & mask).sum() == mask.sum()
    # Nothing leaves the network's reach: no candidates, no sure core, or nothing marked.
    assert np.array_equal(grow_in_white_matter(mask, np.where(prob == 0.3, GROW_MIN_PROB / 2, prob), t1, wm, 0.2),
                          mask)
    assert np.array_equal(grow_in_white_matter(mask, np.minimum(prob, 0.8), t1, wm, 0.2), mask)
    assert not grow_in_white_matter(np.zeros_like(mask), prob, t1, wm, 0.2).any()
    # A network's own floor: 0.3 still reaches the uncertain voxels, 0.4 does not.
    assert np.array_equal(grow_in_white_matter(mask, prob, t1, wm, 0.2, min_prob=0.3), grown)
    assert np.array_equal(grow_in_white_matter(mask, prob, t1, wm, 0.2, min_prob=0.4), mask)


@pytest.mark.slow
def test_predict_grows_with_the_networks_own_floor_unless_asked(phantom, tiny_weights, monkeypatch):
    from mrinets.pipelines.wmh import segment

    floors = []

    def spy(mask, prob, t1, wm, csf=None, *, min_prob):
        floors.append(min_prob)
        return mask

    # The untrained network is sure of nothing, so a band is lent to the trim to reach the growth.
    monkeypatch.setattr(segment, "trim_partial_volume", lambda mask, prob, t1, csf: (mask, (0.2, 0.8)))
    monkeypatch.setattr(segment, "grow_in_white_matter", spy)
    t1 = from_array(phantom.t1, phantom.t1_affine)
    base = wmh.load_model(tiny_weights)
    sharp = wmh.WmhModel(base.network, base.patch_size, {**base.card, "grow_min_prob": 0.1})
    # A card on which `mrinets wmh tune` chose no growth grows only when given a floor.
    bare = wmh.WmhModel(base.network, base.patch_size, {**base.card, "grow": False})
    for model, floor in ((base, None), (sharp, None), (sharp, 0.3), (bare, None), (bare, 0.2)):
        wmh.predict(t1, wmh.WmhConfig(device="cpu", grow_min_prob=floor), model=model, to_mni=phantom.to_mni)
    assert floors == [segment.GROW_MIN_PROB, 0.1, 0.3, 0.2]
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError, match="^grow_min_prob: must lie in"):
            wmh.WmhConfig(grow_min_prob=bad)


def test_csf_reference_reads_the_ventricles():
    from mrinets.data.templates import load_mni
    from mrinets.pipelines.wmh.grid import csf_reference, grid_ventricles, to_grid, wm_reference

    # The ventricles lie deep inside the network box, and on the template's own T1 they are far darker than the
    # white matter.
    assert 1500 < grid_ventricles().sum() < 10_000
    mni = load_mni()
    box = to_grid(mni.t1.data, mni.affine, np.eye(4))
    assert 0.0 < csf_reference(box) / wm_reference(box) < 0.5


def test_partial_volume_trim_restores_the_edges_of_a_blurred_map(phantom):
    # A map as blurred as one taught through 5 mm slices: the phantom's own T1 puts the edges back.
    from scipy import ndimage

    from mrinets.data.templates import load_mni
    from mrinets.pipelines.wmh.segment import trim_partial_volume

    truth = phantom.lesion >= 0.5
    prob = np.clip(2.0 * ndimage.gaussian_filter(phantom.lesion, 1.5), 0.0, 1.0)
    core_wm = load_mni().wm.data[tuple(slice(a, b) for a, b in CROP)] > 0.95
    t1 = phantom.t1 / np.median(phantom.t1[core_wm])
    blurred = dice(prob >= 0.5, truth)
    assert dice(trim_partial_volume(prob >= 0.5, prob, t1)[0], truth) > blurred + 0.05


def test_baseline_finds_dark_white_matter(phantom):
    t1 = from_array(phantom.t1, phantom.t1_affine)
    result = wmh.predict(t1, wmh.WmhConfig(method="baseline", baseline_k=3.0), to_mni=phantom.to_mni)
    truth = phantom.truth_mask
    assert (result.mask & truth).sum() > 0.2 * truth.sum()


@pytest.mark.slow
def test_cli_predict_two_subjects_writes_cohort_csv(tmp_path, tiny_weights):
    from mrinets.data.phantoms.wmh import make_wmh_subject

    paths = []
    for seed in (1, 2):
        p = make_wmh_subject(seed, pose=True)
        path = tmp_path / f"sub-{seed}_T1w.nii.gz"
        nib.save(nib.Nifti1Image(p.t1, p.t1_affine), path)
        paths.append(str(path))
    out = tmp_path / "out"
    assert main(["wmh", "predict", *paths, "--out", str(out), "--weights", str(tiny_weights), "--quiet",
                 "--device", "cpu"]) == 0
    rows = list(csv.DictReader(open(out / "cohort_wmh.csv")))
    assert [r["subject"] for r in rows] == ["sub-1_T1w", "sub-2_T1w"]
    assert all(1000 < float(r["etiv_ml"]) < 2600 and float(r["registration_score"]) > 0.5 for r in rows)
    assert (out / "sub-2_T1w_wmh_qc.png").is_file()
    mask = nib.load(out / "sub-1_T1w_wmh_mask.nii.gz")
    np.testing.assert_allclose(mask.affine, nib.load(paths[0]).affine, atol=1e-5)
    # Without the mirror pass the network answers alone: another map on the same grid; untrimmed, the mask is
    # the thresholded map.
    bare = tmp_path / "bare"
    assert main(["wmh", "predict", paths[0], "--out", str(bare), "--weights", str(tiny_weights), "--quiet",
                 "--device", "cpu", "--no-flip", "--no-pv-trim"]) == 0
    averaged, alone = (nib.load(d / "sub-1_T1w_wmh_prob.nii.gz") for d in (out, bare))
    np.testing.assert_allclose(alone.affine, averaged.affine, atol=1e-5)
    assert np.abs(alone.get_fdata() - averaged.get_fdata()).max() > 1e-3
    bare_mask = nib.load(bare / "sub-1_T1w_wmh_mask.nii.gz").get_fdata() > 0
    np.testing.assert_array_equal(bare_mask, alone.get_fdata() >= 0.5)
    bare_row = next(csv.DictReader(open(bare / "sub-1_T1w_wmh.csv")))
    assert bare_row["pv_trim_upper"] == bare_row["pv_trim_lower"] == bare_row["grow_added_ml"] == "nan"


@pytest.mark.parametrize("case", ["4d", "2d", "empty", "noise"])
def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, tiny_weights, capsys, case):
    rng = np.random.default_rng(0)
    data = {"4d": rng.random((20, 20, 20, 3)), "2d": rng.random((30, 30)), "empty": np.zeros((60, 60, 60)),
            "noise": rng.random((90, 100, 90))}[case].astype(np.float32)
    path = tmp_path / f"{case}.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    out = tmp_path / "out"
    status = main(["wmh", "predict", str(path), "--out", str(out), "--weights", str(tiny_weights)])
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert err.count("\n") == 0 and str(path) in err
    assert not out.exists() or not any(out.iterdir())


def test_growth_follows_the_trim_unless_asked():
    assert wmh.WmhConfig().grow is True and wmh.WmhConfig(pv_trim=False).grow is False
    assert wmh.WmhConfig(grow=False).grow is False
    with pytest.raises(ValueError, match="^grow: ") as caught:
        wmh.WmhConfig(pv_trim=False, grow=True)
    assert not isinstance(caught.value, ArgumentError) and caught.value.field == "grow"


def test_cli_grow_without_the_trim_exits_2(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["wmh", "predict", "t1.nii.gz", "--out", str(out), "--grow", "--no-pv-trim"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--grow" in err and not out.exists()


@pytest.mark.parametrize("content", [b"", b"not weights\n", b"PK\x03\x04broken zip"])
def test_cli_weights_that_are_not_a_torch_file_exit_2(tmp_path, phantom, capsys, content):
    t1 = tmp_path / "t1.nii.gz"
    nib.save(nib.Nifti1Image(phantom.t1, phantom.t1_affine), t1)
    weights = tmp_path / "w.pt"
    weights.write_bytes(content)
    out = tmp_path / "out"
    assert main(["wmh", "predict", str(t1), "--out", str(out), "--weights", str(weights), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(weights) in err and not out.exists()
    assert main(["wmh", "train", "--phantoms", "1", "--out", str(out), "--first-step", str(weights)]) == 2
    assert "--first-step" in capsys.readouterr().err and not out.exists()


def test_cli_evaluate_scores_masks(tmp_path, capsys):
    truth = np.zeros((20, 20, 20), np.uint8)
    truth[5:10, 5:10, 5:10] = 1
    pred = np.roll(truth, 1, axis=0)
    for name, data in (("t", truth), ("p", pred)):
        nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / f"{name}.nii.gz")
    assert main(["wmh", "evaluate", "--pred", str(tmp_path / "p.nii.gz"), "--truth", str(tmp_path / "t.nii.gz"),
                 "--out", str(tmp_path / "s.json")]) == 0
    capsys.readouterr()
    import json

    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["subjects"][0]["dice"] == pytest.approx(0.8)
    assert scores["subjects"][0]["tpr"] == 1.0
    # One face of the cube off each side: 25 voxels of 1 uL at the edges, no lesion missed or invented.
    row = scores["subjects"][0]
    assert row["edge_fn_ml"] == row["edge_fp_ml"] == pytest.approx(0.025)
    assert row["missed_ml"] == row["fp_lesion_ml"] == 0.0


@pytest.mark.slow
def test_cli_batch_wmh_gathers_cohort_and_resumes(tmp_path, tiny_weights):
    p = make_wmh_subject(4, pose=True)
    nib.save(nib.Nifti1Image(p.t1, p.t1_affine), tmp_path / "a.nii.gz")
    (tmp_path / "subjects.tsv").write_text("subject\tt1\nsub-a\ta.nii.gz\nsub-b\tmissing.nii.gz\n")
    out = tmp_path / "out"
    argv = ["batch", "wmh", str(tmp_path / "subjects.tsv"), "--out", str(out), "--weights", str(tiny_weights),
            "--workers", "0", "--quiet"]
    assert main(argv) == 1  # sub-b fails alone
    rows = list(csv.DictReader(open(out / "cohort_wmh.csv")))
    assert [r["subject"] for r in rows] == ["sub-a"] and rows[0]["grow_added_ml"] != "nan"
    assert (out / "sub-a" / "a_wmh_mask.nii.gz").is_file() and not (out / "sub-b").exists()
    summary = (out / "mrinets_summary_part0.tsv").read_text()
    assert "sub-b\tfailed" in summary
    assert main(argv) == 1
    assert "sub-a\tskipped" in (out / "mrinets_summary_part0.tsv").read_text()


@pytest.mark.slow
def test_bids_app_runs_wmh_on_t1w_with_bids_names(tmp_path, tiny_weights):
    root = tmp_path / "bids"
    anat = root / "sub-01" / "ses-a" / "anat"
    anat.mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.8.0"}')
    p = make_wmh_subject(6, pose=True)
    nib.save(nib.Nifti1Image(p.t1, p.t1_affine), anat / "sub-01_ses-a_T1w.nii.gz")
    out = tmp_path / "deriv"
    argv = ["bids", str(root), str(out), "participant", "--pipelines", "wmh", "--weights", str(tiny_weights),
            "--workers", "0", "--quiet", "--no-grow"]
    assert main(argv) == 0
    folder = out / "sub-01" / "ses-a" / "anat"
    assert (folder / "sub-01_ses-a_space-T1w_label-WMH_probseg.nii.gz").is_file()
    row = next(csv.DictReader(open(folder / "sub-01_ses-a_desc-wmh_measures.csv")))
    assert row["grow_added_ml"] == "nan"
    assert (folder / ".mrinets-done-sub-01_ses-a_wmh").is_file() and (out / "dataset_description.json").is_file()


class _Oracle(torch.nn.Module):
    """Logits of an image that holds the lesion fraction itself."""

    def forward(self, x):
        return 20.0 * (x - 0.5)


def test_training_twice_gives_the_same_weights_to_the_bit(subject):
    from mrinets.pipelines.wmh.model import train_network

    # A model card's command must give its weights again: nothing in training may draw unseeded randomness.
    config = WmhTrainConfig(**{**TINY, "tilt": 0.5})
    first, again = (train_network([subject], config).state_dict() for _ in range(2))
    assert all(torch.equal(first[k], again[k]) for k in first)
    other = train_network([subject], config, seed_offset=1).state_dict()
    assert not all(torch.equal(first[k], other[k]) for k in first)


@pytest.mark.slow
def test_two_step_drops_a_grossly_wrong_label(subject):
    from mrinets.pipelines.wmh.data import TrainingSubject
    from mrinets.pipelines.wmh.model import train_two_step

    base = {**subject.__dict__, "image": subject.truth.astype(np.float32)}
    good = [TrainingSubject(**{**base, "name": f"good{i}"}) for i in range(3)]
    bad = TrainingSubject(**{**base, "name": "bad", "label": np.roll(subject.label, 12, axis=0)})
    config = WmhTrainConfig(**TINY)
    _, report, first = train_two_step(good + [bad], config, first=_Oracle())
    assert report["dropped"] == ["bad"] and set(report["recalibration"]) == {"good0", "good1", "good2", "bad"}
    assert report["agreement"]["bad"] < 0.25 * report["agreement"]["good0"]
    assert isinstance(first, _Oracle)


@pytest.mark.slow
def test_cli_train_on_user_pairs(tmp_path, capsys):
    p = make_wmh_subject(8, pose=True, severity=0.8)
    nib.save(nib.Nifti1Image(p.t1, p.t1_affine), tmp_path / "t1.nii.gz")
    nib.save(nib.Nifti1Image(p.flair_label.astype(np.uint8), p.flair_affine), tmp_path / "label.nii.gz")
    (tmp_path / "pairs.tsv").write_text("t1\tflair_label\nt1.nii.gz\tlabel.nii.gz\n")
    out = tmp_path / "model"
    common = ["--pairs", str(tmp_path / "pairs.tsv"), "--epochs", "1", "--samples-per-subject", "2",
              "--no-recalibrate", "--quiet", "--device", "cpu", "--channels", "8", "16", "24", "32"]
    assert main(["wmh", "train", "--out", str(out), *common]) == 0
    model = wmh.load_model(out / "wmh_t1.pt")
    card = model.card
    assert card["n_subjects"] == 1 and "--pairs" in card["command"] and "--channels 8 16 24 32" in card["command"]
    assert list(card["config"]["channels"]) == [8, 16, 24, 32]
    assert sum(p.numel() for p in model.network.parameters()) < 0.5 * sum(
        p.numel() for p in wmh.load_model().network.parameters())
    assert (out / "wmh_t1.md").read_text().startswith("# mrinets WMH network")
    # A first step from other subjects cannot be the start of this run's second step.
    assert main(["wmh", "train", "--out", str(tmp_path / "other"), "--first-step", str(out / "wmh_t1_step1.pt"),
                 "--phantoms", "2", *common]) == 2
    assert "0 phantoms from seed 1000 and pairs pairs.tsv" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()
    # The card holds its subjects as JSON; a card from before that is read from its command line.
    first = torch.load(out / "wmh_t1_step1.pt", weights_only=True)
    assert first["card"]["subjects"] == {"phantoms": 0, "seed_start": 1000, "pairs": str(tmp_path / "pairs.tsv")}
    assert '"seed_start": 1000' in (out / "wmh_t1.md").read_text()
    del first["card"]["subjects"]
    torch.save(first, tmp_path / "old_card.pt")
    assert main(["wmh", "train", "--out", str(tmp_path / "other"), "--first-step", str(tmp_path / "old_card.pt"),
                 "--phantoms", "2", *common]) == 2
    assert "was trained on 0 phantoms from seed 1000 and pairs pairs.tsv" in capsys.readouterr().err
    # A second step retrained on the first one: the card names both commands, the first step keeps its own.
    again = tmp_path / "again"
    assert main(["wmh", "train", "--out", str(again), "--first-step", str(out / "wmh_t1_step1.pt"),
                 "--second-temperature", "0.05", "--tilt", "0.5", "--grow-min-prob", "0.1", *common]) == 0
    card = wmh.load_model(again / "wmh_t1.pt").card
    assert "--first-step" in card["command"] and "--second-temperature 0.05" in card["command"]
    assert "--grow-min-prob 0.1" in card["command"] and wmh.load_model(again / "wmh_t1.pt").grow_min_prob == 0.1
    assert "give at least 0.1 (`--grow-min-prob`" in (again / "wmh_t1.md").read_text()
    assert wmh.load_model(out / "wmh_t1.pt").grow_min_prob == wmh.segment.GROW_MIN_PROB
    assert "--tilt 0.5" in card["command"] and card["config"]["tilt"] == 0.5
    assert card["first_step_command"] == wmh.load_model(out / "wmh_t1.pt").card["command"]
    assert card["config"]["second_temperature"] == 0.05
    assert wmh.load_model(again / "wmh_t1_step1.pt").card == wmh.load_model(out / "wmh_t1_step1.pt").card
    assert "Its first step" in (again / "wmh_t1.md").read_text()
    # A further step fits the labels against that final network; the card names the whole chain.
    third = tmp_path / "third"
    assert main(["wmh", "train", "--out", str(third), "--first-step", str(again / "wmh_t1.pt"), *common]) == 0
    card = wmh.load_model(third / "wmh_t1.pt").card
    assert card["first_step_command"] == wmh.load_model(again / "wmh_t1.pt").card["command"]
    assert card["earlier_first_step_commands"] == [wmh.load_model(out / "wmh_t1.pt").card["command"]]
    assert "That run's own first step came from" in (third / "wmh_t1.md").read_text()


def test_init_starts_every_step_from_the_given_weights(subject):
    from mrinets.pipelines.wmh.model import train_network

    config = WmhTrainConfig(**{**TINY, "lr": 1e-9})
    torch.manual_seed(123)
    init = wmh.model.build_network(config.channels).state_dict()
    tuned = train_network([subject], config, init=init).state_dict()
    fresh = train_network([subject], config).state_dict()
    weights = [k for k in init if k.endswith("weight")]
    # A vanishing learning rate leaves the weights where they started: at init's, not at the seed's draw.
    assert all(torch.allclose(tuned[k], init[k], atol=1e-6) for k in weights)
    assert not all(torch.allclose(fresh[k], init[k], atol=1e-3) for k in weights)


def test_cli_train_refuses_init_weights_that_do_not_fit(tmp_path, tiny_weights, capsys):
    out = tmp_path / "model"
    assert main(["wmh", "train", "--phantoms", "1", "--out", str(out), "--init", str(tiny_weights)]) == 2
    err = capsys.readouterr().err
    assert "--init" in err and "channels" in err and not out.exists()
    with pytest.raises(SystemExit) as exit_:
        main(["wmh", "train", "--phantoms", "1", "--out", str(out), "--phantom-lesions", "lacunes"])
    assert exit_.value.code == 2
    assert "--phantom-lesions" in capsys.readouterr().err and not out.exists()


def test_cli_train_refuses_a_file_that_is_not_a_first_step(tmp_path, tiny_weights, capsys):
    out = tmp_path / "model"
    assert main(["wmh", "train", "--phantoms", "1", "--out", str(out), "--first-step", str(tiny_weights)]) == 2
    assert "--first-step" in capsys.readouterr().err and not out.exists()
    assert main(["wmh", "train", "--phantoms", "1", "--out", str(out), "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err and not out.exists()
    assert main(["wmh", "train", "--phantoms", "1", "--out", str(out), "--grow-min-prob", "1.5"]) == 2
    assert "--grow-min-prob" in capsys.readouterr().err and not out.exists()
    assert main(["wmh", "train", "--phantoms", "1", "--out", str(out), "--loss", "naive", "--tilt", "0.5"]) == 2
    assert "--tilt" in capsys.readouterr().err and not out.exists()
    assert main(["wmh", "train", "--phantoms", "1", "--out", str(out), "--channels", "0", "8", "16", "32"]) == 2
    assert "--channels" in capsys.readouterr().err and not out.exists()


def test_phantom_subjects_keep_the_seed_order_in_worker_processes():
    import math

    assert wmh.phantom_subjects([5, 3, 4, 6], workers=2, quiet=True, make=math.factorial) == [120, 6, 24, 720]
    assert wmh.phantom_subjects([5, 3], quiet=True, make=math.factorial) == [120, 6]
    with pytest.raises(ValueError, match="at least 1"):
        wmh.phantom_subjects([5], workers=0, make=math.factorial)


def test_tilted_patches_carry_the_label_geometry_with_them(subject):
    from scipy import ndimage

    from mrinets.pipelines.wmh.data import SliceLabelPatches
    from mrinets.training.losses import acquire

    # A smooth image, acquired through each item's own sample points, must read the same at every thick
    # voxel whether the patch was cut upright or tilted: only then does a tilted patch keep its label's meaning.
    smooth = wmh.data.TrainingSubject(**{**subject.__dict__,
                                         "image": ndimage.gaussian_filter(subject.truth.astype(np.float32), 2.0)})
    kwargs = dict(patch_size=(32, 32, 24), block=(24, 24, 3), samples_per_subject=6, augment=False)
    upright = SliceLabelPatches([smooth], tilt=0.0, **kwargs)
    tilted = SliceLabelPatches([smooth], tilt=1.0, **kwargs)
    compared, differ = 0, 0
    for item in range(6):
        a, b = upright[item], tilted[item]
        assert torch.equal(a["label"], b["label"]) and b["image"].shape == a["image"].shape
        both = (a["valid"] > 0) & (b["valid"] > 0)
        acquired = [acquire(x["image"][None], x["grid"][None], x["profile"][None])[0] for x in (a, b)]
        assert torch.allclose(acquired[0][both], acquired[1][both], atol=0.02)
        compared += int(both.sum())
        differ += int(not torch.allclose(a["image"], b["image"], atol=0.05))
    assert compared > 500 and differ >= 4
    with pytest.raises(ValueError, match="between 0 and 1"):
        WmhTrainConfig(tilt=1.5)
    with pytest.raises(ValueError, match="super-resolution"):
        WmhTrainConfig(loss="naive", tilt=0.5)


def test_dense_labels_are_cut_and_tilted_with_the_image(subject):
    from scipy import ndimage

    from mrinets.pipelines.wmh.data import SliceLabelPatches

    image = ndimage.gaussian_filter(subject.truth.astype(np.float32), 1.0)
    dense = wmh.data.TrainingSubject(**{**subject.__dict__, "image": image, "dense": (image > 0.5).astype(np.uint8)})
    kwargs = dict(patch_size=(32, 32, 24), block=(24, 24, 3), samples_per_subject=6, augment=False)
    for tilt, least in ((0.0, 1.0), (1.0, 0.85)):
        data = SliceLabelPatches([dense], tilt=tilt, **kwargs)
        # Carried by the same coordinates, the label stays on the image's lesion; tilted, both are interpolated
        # and their edges may differ.
        agree = [dice(x["dense"].numpy() > 0.5, x["image"].numpy() > 0.5) for x in map(data.__getitem__, range(6))]
        assert min(agree) >= least
    assert "dense" not in SliceLabelPatches([subject], **kwargs)[0]
    with pytest.raises(ValueError, match="every subject"):
        SliceLabelPatches([dense, subject], **kwargs)


@pytest.fixture
def trained(monkeypatch):
    """Stands in for ``train_network``: records (subjects, config) of each run and returns an oracle."""
    from mrinets.pipelines.wmh import model as wmh_model

    runs = []

    def record(subjects, config, **kwargs):
        runs.append((subjects, config))
        return _Oracle()

    monkeypatch.setattr(wmh_model, "train_network", record)
    return runs


def test_second_step_teaches_the_first_models_mask_as_a_dense_label(subject, trained):
    from mrinets.pipelines.wmh import model as wmh_model

    base = {**subject.__dict__, "image": subject.truth.astype(np.float32)}
    subjects = [wmh.data.TrainingSubject(**{**base, "name": f"s{i}"}) for i in range(2)]
    config = WmhTrainConfig(**{**TINY, "dense_weight": 1.0, "recalibrate": False})
    _, report, _ = wmh_model.train_two_step(subjects, config, first=_Oracle())
    second, _ = trained[0]
    # The oracle's mask is the truth's (a bright "lesion" is neither trimmed nor grown), seen in the search region.
    assert all(s.dense is not None and s.dense.shape == GRID_SHAPE for s in second)
    assert min(report["dense_label_dice"].values()) > 0.8
    batch = {k: v[None] for k, v in wmh.data.SliceLabelPatches(second, (32, 32, 24), 1, block=(24, 24, 3))[0].items()}
    loss = wmh_model._loss_fn(config)
    without = {k: v for k, v in batch.items() if k != "dense"}
    net = wmh_model.build_network(config.channels)
    with torch.no_grad():
        assert float(loss(net, batch)) > float(loss(net, without)) > 0
    with pytest.raises(ValueError, match="second step"):
        WmhTrainConfig(dense_weight=1.0, two_step=False)
    with pytest.raises(ValueError, match="negative"):
        WmhTrainConfig(dense_weight=-1.0)


@pytest.mark.parametrize("option", [["--dense-weight", "1"], ["--unscore-unmarked"], ["--centre-thresholds"],
                                    ["--mask-thresholds"]])
def test_cli_second_step_options_without_the_second_step_exit_2(tmp_path, capsys, option):
    out = tmp_path / "w"
    assert main(["wmh", "train", "--out", str(out), "--phantoms", "1", "--one-step", *option]) == 2
    assert option[0] in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("flag", ["--centre-thresholds", "--mask-thresholds"])
def test_cli_threshold_options_without_the_label_fit_exit_2(tmp_path, capsys, flag):
    out = tmp_path / "w"
    assert main(["wmh", "train", "--out", str(out), "--phantoms", "1", "--no-recalibrate", flag]) == 2
    assert flag in capsys.readouterr().err and not out.exists()


def _rater_label(subject, threshold: float = 0.5) -> np.ndarray:
    """The label of a rater who marks every thick voxel more than ``threshold`` lesion."""
    idx = np.argwhere(np.ones(subject.label.shape, bool))
    return (acquire_label(subject.truth, subject, idx) > threshold).reshape(subject.label.shape)


def _isolated_lesion(label: np.ndarray) -> np.ndarray:
    """One piece of a label lying more than 3 voxels from every other piece."""
    from scipy import ndimage

    pieces, n = ndimage.label(label)
    for k in range(1, n + 1):
        piece = pieces == k
        if not (ndimage.binary_dilation(piece, iterations=3) & (label > 0) & ~piece).any():
            return piece
    raise AssertionError("no isolated lesion in the test label")


def test_unmarked_lesions_are_what_the_model_sees_far_from_the_label(subject):
    from mrinets.pipelines.wmh.data import TrainingSubject
    from mrinets.pipelines.wmh.model import unmarked_lesions

    # A complete rater's label less one lesion apart from the others: a missed lesion.
    full = _rater_label(subject)
    missed = _isolated_lesion(full)
    rater = TrainingSubject(**{**subject.__dict__, "label": (full & ~missed).astype(np.uint8), "threshold": 0.5})
    unscored = unmarked_lesions(subject.truth, rater)
    assert unscored.any() and not (unscored & ~missed).any()
    assert unscored.sum() >= 0.9 * missed.sum()
    complete = TrainingSubject(**{**rater.__dict__, "label": full.astype(np.uint8)})
    assert not unmarked_lesions(subject.truth, complete).any()


def test_unscored_thick_voxels_leave_the_loss(subject):
    from mrinets.pipelines.wmh.data import SliceLabelPatches, TrainingSubject

    kwargs = {"patch_size": (32, 32, 24), "samples_per_subject": 3, "block": (24, 24, 3)}
    plain = SliceLabelPatches([subject], **kwargs)
    none = SliceLabelPatches([TrainingSubject(**{**subject.__dict__, "unscored": np.zeros(subject.label.shape, bool)})],
                             **kwargs)
    every = SliceLabelPatches([TrainingSubject(**{**subject.__dict__, "unscored": np.ones(subject.label.shape, bool)})],
                              **kwargs)
    for i in range(3):
        assert plain[i]["valid"].sum() > 0
        assert torch.equal(plain[i]["valid"], none[i]["valid"]) and torch.equal(plain[i]["label"], every[i]["label"])
        assert every[i]["valid"].sum() == 0


def test_second_step_leaves_unmarked_lesions_unscored(subject, trained):
    from mrinets.pipelines.wmh import model as wmh_model

    full = _rater_label(subject)
    base = {**subject.__dict__, "image": subject.truth.astype(np.float32), "threshold": 0.5,
            "label": (full & ~_isolated_lesion(full)).astype(np.uint8)}
    subjects = [wmh.data.TrainingSubject(**{**base, "name": f"s{i}"}) for i in range(2)]
    config = WmhTrainConfig(**{**TINY, "unscore_unmarked": True, "recalibrate": False})
    _, report, _ = wmh_model.train_two_step(subjects, config, first=_Oracle())
    second, _ = trained[0]
    assert all(s.unscored is not None and s.unscored.any() for s in second)
    assert report["unscored_voxels"] == {s.name: int(s.unscored.sum()) for s in second}
    wmh_model.train_two_step(subjects, WmhTrainConfig(**{**TINY, "recalibrate": False}), first=_Oracle())
    second, _ = trained[1]
    assert all(s.unscored is None for s in second)
    with pytest.raises(ValueError, match="second step"):
        WmhTrainConfig(unscore_unmarked=True, two_step=False)


def test_second_step_trains_with_its_own_temperature(subject, trained):
    from mrinets.pipelines.wmh import model as wmh_model

    base = {**subject.__dict__, "image": subject.truth.astype(np.float32)}
    subjects = [wmh.data.TrainingSubject(**{**base, "name": f"s{i}"}) for i in range(2)]
    config = WmhTrainConfig(**{**TINY, "second_temperature": 0.03, "recalibrate": False})
    wmh_model.train_two_step(subjects, config, first=_Oracle())
    assert [c.temperature for _, c in trained] == [0.03]
    wmh_model.train_two_step(subjects, config)
    assert [c.temperature for _, c in trained] == [0.03, 0.1, 0.03]
    with pytest.raises(ValueError, match="positive"):
        WmhTrainConfig(second_temperature=0.0)


@pytest.mark.slow
def test_recalibration_finds_a_label_pose_error_and_its_rater_threshold(subject):
    from mrinets.pipelines.wmh.data import TrainingSubject

    # A rater who marks thick voxels more than 60 % lesion, on a label whose header is 2 mm off in x.
    label = _rater_label(subject, 0.6)
    off = np.eye(4)
    off[0, 3] = 2.0
    wrong = TrainingSubject(**{**subject.__dict__, "label": label.astype(np.uint8),
                               "label_to_grid": off @ subject.label_to_grid})
    fixed, fit = recalibrate_label(subject.truth, wrong)
    assert fit["shift_mm"][0] == pytest.approx(-2.0, abs=0.4)
    assert np.abs(fit["shift_mm"][1:]).max() < 0.4 and np.abs(fit["angles_deg"]).max() < 0.5
    assert fit["threshold"] == pytest.approx(0.6, abs=0.1)
    assert label_agreement(subject.truth, fixed) > 0.9 > label_agreement(subject.truth, wrong)


@pytest.mark.slow
def test_centred_thresholds_take_a_wide_first_models_bias_out_of_the_rater_fits(subject, trained):
    from scipy import ndimage

    from mrinets.pipelines.wmh import model as wmh_model

    # A first model that draws every lesion a voxel too wide in-plane, and three raters whose median is 0.45.
    wide = ndimage.maximum_filter(subject.truth.astype(np.float32), size=(3, 3, 1))
    raters = (0.35, 0.45, 0.55)
    subjects = [wmh.data.TrainingSubject(**{**subject.__dict__, "name": f"r{t}", "image": wide,
                                            "label": _rater_label(subject, t).astype(np.uint8)}) for t in raters]
    config = WmhTrainConfig(**{**TINY, "centre_thresholds": True})
    _, report, _ = wmh_model.train_two_step(subjects, config, first=_Oracle())
    fitted = np.array([report["recalibration"][s.name]["threshold"] for s in subjects])
    centred = np.array([s.threshold for s in trained[0][0]])
    # Fitted against the wide model every rater looks stricter than it was (by over 0.1 here); centred, the
    # thresholds are each rater's own within two steps of the fit's grid, in the raters' order.
    assert (fitted - raters).min() > 0.1
    assert report["threshold_shift"] == pytest.approx(0.45 - np.median(fitted))
    assert np.median(centred) == pytest.approx(0.45)
    assert np.abs(centred - raters).max() <= 0.1 + 1e-6 < (fitted - raters).min()
    assert np.all(np.diff(centred) >= 0)
    wmh_model.train_two_step(subjects, WmhTrainConfig(**TINY), first=_Oracle())
    np.testing.assert_allclose([s.threshold for s in trained[1][0]], fitted)
    with pytest.raises(ValueError, match="label fit"):
        WmhTrainConfig(centre_thresholds=True, recalibrate=False)


def test_mask_threshold_reads_a_raters_threshold_off_a_mask(subject):
    from scipy import ndimage

    from mrinets.pipelines.wmh.data import TrainingSubject
    from mrinets.pipelines.wmh.model import mask_threshold

    truth = subject.truth > 0.5
    for rater in (0.35, 0.6):
        labelled = TrainingSubject(**{**subject.__dict__, "label": _rater_label(subject, rater).astype(np.uint8)})
        assert mask_threshold(truth, labelled) == pytest.approx(rater, abs=0.1)
        # A mask a voxel too wide in-plane makes every rater look stricter than it was.
        wide = ndimage.binary_dilation(truth, structure=np.ones((3, 3, 1), bool))
        assert mask_threshold(wide, labelled) >= mask_threshold(truth, labelled) + 0.1


@pytest.mark.slow
def test_second_step_refits_kept_labels_thresholds_on_the_first_models_mask(subject, trained):
    from mrinets.pipelines.wmh import model as wmh_model
    from mrinets.pipelines.wmh.segment import WmhModel, box_mask

    base = {**subject.__dict__, "image": subject.truth.astype(np.float32)}
    raters = (0.35, 0.45, 0.55)
    subjects = [wmh.data.TrainingSubject(**{**base, "name": f"r{t}",
                                            "label": _rater_label(subject, t).astype(np.uint8)}) for t in raters]
    subjects.append(wmh.data.TrainingSubject(**{**base, "name": "bad", "label": np.roll(subject.label, 12, axis=0)}))
    config = WmhTrainConfig(**{**TINY, "mask_thresholds": True})
    _, report, _ = wmh_model.train_two_step(subjects, config, first=_Oracle())
    second, _ = trained[0]
    # The drop still reads the raw fit; only the kept labels are refitted, each on the oracle's mask.
    assert report["dropped"] == ["bad"] and list(report["mask_thresholds"]) == [f"r{t}" for t in raters]
    mask = box_mask(WmhModel(_Oracle(), TINY["patch_size"], {}), base["image"])
    for s in second[:3]:
        assert s.threshold == report["mask_thresholds"][s.name] == wmh_model.mask_threshold(mask, s)
    assert second[3].threshold == report["recalibration"]["bad"]["threshold"]
    wmh_model.train_two_step(subjects, WmhTrainConfig(**TINY), first=_Oracle())
    assert [s.threshold for s in trained[1][0]] == [report["recalibration"][s.name]["threshold"] for s in subjects]
    with pytest.raises(ValueError, match="label fit"):
        WmhTrainConfig(mask_thresholds=True, recalibrate=False)
    with pytest.raises(ValueError, match="second step"):
        WmhTrainConfig(mask_thresholds=True, two_step=False)


def test_centred_thresholds_stay_in_the_fits_range_and_ignore_dropped_labels():
    from mrinets.pipelines.wmh.data import TrainingSubject
    from mrinets.pipelines.wmh.model import THRESHOLD_RANGE, centre_thresholds

    def rater(threshold, weight=1.0):
        return TrainingSubject(name="s", image=None, label=None, label_to_grid=None, slice_axis=2, thickness_mm=5.0,
                               naive=None, threshold=threshold, weight=weight)

    out, shift = centre_thresholds([rater(0.2), rater(0.6), rater(0.7), rater(0.75, weight=0.0), rater(None)], 0.45)
    assert shift == pytest.approx(-0.15)
    assert [s.threshold for s in out] == pytest.approx([THRESHOLD_RANGE[0], 0.45, 0.55, 0.6, None])
    assert centre_thresholds([rater(None)], 0.45)[1] == 0.0


def test_flip_averaging_makes_the_answer_mirror_symmetric():
    from mrinets.pipelines.wmh.model import build_network
    from mrinets.pipelines.wmh.segment import WmhModel, box_logits

    torch.manual_seed(0)
    model = WmhModel(build_network(TINY["channels"]).eval(), TINY["patch_size"], {})
    box = np.random.default_rng(0).random(TINY["patch_size"]).astype(np.float32)
    mirror = np.ascontiguousarray(box[::-1])
    averaged, averaged_mirror = box_logits(model, box), box_logits(model, mirror)
    np.testing.assert_allclose(averaged_mirror, averaged[::-1], atol=1e-5)
    bare, bare_mirror = box_logits(model, box, flip=False), box_logits(model, mirror, flip=False)
    assert np.abs(bare_mirror - bare[::-1]).max() > 1e-3
    np.testing.assert_allclose(averaged, 0.5 * (bare + bare_mirror[::-1]), atol=1e-5)


def test_model_card_says_whether_held_out_scores_used_the_mirror_pass():
    from mrinets.pipelines.wmh.card import model_card_text as _model_card

    card = dict(wmh.load_model().card)
    assert "), with `predict`'s left-right mirror pass" in _model_card({**card, "held_out_mirror_pass": True})
    assert "without `predict`'s left-right mirror pass" in _model_card({**card, "held_out_mirror_pass": False})
    # Cards written before the mirror pass existed were scored without it.
    card.pop("held_out_mirror_pass", None)
    assert "without `predict`'s left-right mirror pass" in _model_card(card)


def test_model_card_says_how_far_the_scoring_windows_overlapped():
    from mrinets.pipelines.wmh.card import model_card_text as _model_card

    card = dict(wmh.load_model().card)
    assert "windows overlapping 0.25 x 0.25 x 0.75 (x, y, z)" in _model_card(
        {**card, "held_out_window_overlap": [0.25, 0.25, 0.75]})
    # Cards written before the overlap was recorded were scored with 0.25 along every axis.
    card.pop("held_out_window_overlap", None)
    assert "windows overlapping 0.25 x 0.25 x 0.25 (x, y, z)" in _model_card(card)


def test_model_card_says_whether_the_mask_was_trimmed():
    from mrinets.pipelines.wmh.card import model_card_text as _model_card

    card = dict(wmh.load_model().card)
    assert "(x, y, z), with the partial-volume trim" in _model_card({**card, "held_out_pv_trim": True})
    grown = _model_card({**card, "held_out_pv_trim": True, "held_out_grow": True, "grow_min_prob": 0.15})
    assert "trim of the mask and its growth into dark white matter (voxels it gives at least 0.15)" in grown
    assert "its growth" not in _model_card({**card, "held_out_pv_trim": True, "held_out_grow": False})
    assert "dense 1 mm label" not in _model_card(card)
    dense = {**card, "config": {**card["config"], "dense_weight": 0.5}}
    assert "dense 1 mm label with weight 0.5" in _model_card(dense)
    # Cards written before the trim existed were scored without it.
    card.pop("held_out_pv_trim", None)
    assert "(x, y, z), without the partial-volume trim" in _model_card(card)


def test_model_card_names_every_network_a_fine_tuned_one_started_from():
    from mrinets.pipelines.wmh.card import model_card_text as _model_card
    from mrinets.pipelines.wmh.card import with_held_out

    base = {"command": "mrinets wmh train --out a --phantoms 2 --first-step s1.pt", "first_step_command":
            "mrinets wmh train --out s1 --phantoms 2 --one-step", "train_seconds": 1.0, "config": {"loss": "sr"},
            "n_subjects": 2, "dropped_by_two_step": []}
    tuned = {**base, "command": "mrinets wmh train --out b --one-step --init a.pt", "first_step_command": "",
             "init": {"weights": "a.pt", "command": base["command"], "first_step_command": base["first_step_command"],
                      "init": None}}
    again = {**tuned, "command": "mrinets wmh train --out c --one-step --init b.pt",
             "init": {"weights": "b.pt", "command": tuned["command"], "first_step_command": tuned["command"],
                      "init": tuned["init"]}}
    text = _model_card(again)
    # Every command of the chain, newest first, each once; the root's first step too.
    order = [text.index(c) for c in (again["command"], tuned["command"], base["command"], base["first_step_command"])]
    assert order == sorted(order) and text.count(tuned["command"]) == 1
    assert "the `ms` lesion model" in _model_card({**again, "phantom_lesions": "ms"}) and "ms` lesion" not in text
    assert "the `ms-flair` lesion model" in _model_card({**again, "phantom_lesions": "ms-flair"})
    scores = {"seeds": [900000, 900001], "mirror_pass": True, "window_overlap": [0.25, 0.25, 0.75], "pv_trim": True,
              "grow": True, "summary": {"mine": {"dice_mean": 0.5, "dice_sd": 0.1, "lesion_tpr_mean": 0.4,
                                                 "lesion_fpr_mean": 0.2, "volume_pearson_r": 0.9,
                                                 "volume_bias_ml": -1.0}}}
    scored = _model_card(with_held_out(again, scores))
    assert "Seeds 900000..900001" in scored and "| network | 0.500 ± 0.100 | 0.40 | 0.20 | 0.900 | -1.00 |" in scored


@pytest.mark.slow
def test_evaluate_phantoms_records_mirror_pass_and_trim(tiny_weights):
    model = wmh.load_model(tiny_weights)
    scores = wmh.evaluate_phantoms({"net": model}, [7], baseline_k=None, register=False, device="cpu", flip=False,
                                   pv_trim=False)
    assert scores["mirror_pass"] is False and 0.0 <= scores["summary"]["net"]["dice_mean"] <= 1.0
    assert scores["window_overlap"] == [0.25, 0.25, 0.75] and scores["pv_trim"] is False
    # Growth follows the trim, as in predict.
    assert scores["grow"] is False
    # The error kinds account for every voxel the mask gets wrong.
    row, summary = scores["subjects"]["net"][0], scores["summary"]["net"]
    assert row["pred_ml"] == pytest.approx(row["true_ml"] - row["missed_ml"] - row["edge_fn_ml"]
                                           + row["fp_lesion_ml"] + row["edge_fp_ml"])
    assert all(summary[f"{kind}_ml_mean"] == row[f"{kind}_ml"] for kind in ERROR_KINDS)
