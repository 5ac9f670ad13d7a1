"""The base head phantom: reproducible, realistic contrasts, Rician noise, thick slices."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from mrinets.data.phantoms import PHANTOM_KINDS
from mrinets.data.phantoms.head import _cubic_zoom, make_head, rician

CROP = ((70, 126), (80, 136), (60, 110))


@pytest.fixture(scope="module")
def subject():
    return make_head(7, crop=CROP)


@pytest.mark.parametrize("coarse, zoom", [((5, 6, 4), (9.4, 7.0, 11.25)), ((2, 3, 2), (30.0, 1.0, 2.5))])
def test_warp_field_zoom_is_scipys_cubic_zoom(coarse, zoom):
    field = np.random.default_rng(0).normal(size=coarse)
    ours, theirs = _cubic_zoom(field, zoom), ndimage.zoom(field, zoom, order=3)
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < 1e-12 * np.abs(theirs).max()


def test_same_seed_same_subject_and_different_seed_differs(subject):
    again = make_head(7, crop=CROP)
    for name in subject.images:
        np.testing.assert_array_equal(subject.images[name], again.images[name])
    other = make_head(8, crop=CROP)
    assert not np.allclose(subject.images["t1w"], other.images["t1w"])
    assert subject.meta["warp"] != other.meta["warp"]


def test_contrast_orderings(subject):
    means = {}
    for name, image in subject.images.items():
        means[name] = [float(image[getattr(subject, t) > 0.9].mean()) for t in ("wm", "gm", "csf")]
    wm, gm, csf = means["t1w"]
    assert wm > gm > csf
    wm, gm, csf = means["t2w"]
    assert csf > gm > wm
    wm, gm, csf = means["flair"]
    assert gm > wm > csf
    wm, gm, csf = means["gre"]
    assert csf > gm > wm


def test_rician_background_follows_rayleigh():
    rng = np.random.default_rng(0)
    sigma = 0.1
    noise = rician(np.zeros(200_000, np.float32), sigma, rng)
    assert noise.mean() == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.01)
    assert noise.std() == pytest.approx(sigma * np.sqrt((4 - np.pi) / 2), rel=0.02)
    bright = rician(np.full(200_000, 10.0, np.float32), sigma, rng)
    assert bright.mean() == pytest.approx(10.0, rel=1e-3)


def test_snr_sets_noise_level():
    quiet = make_head(1, crop=CROP, snr=200, contrasts=("t1w",), bias=0)
    loud = make_head(1, crop=CROP, snr=10, contrasts=("t1w",), bias=0)
    wm = quiet.wm > 0.95
    assert loud.images["t1w"][wm].std() > 4 * quiet.images["t1w"][wm].std()


def test_thick_slices_and_grid():
    s = make_head(2, crop=CROP, voxel_size=(0.9, 0.9, 5.0), slice_thickness=5.0, contrasts=("flair",))
    np.testing.assert_allclose(np.sqrt((s.affine[:3, :3] ** 2).sum(0)), [0.9, 0.9, 5.0], atol=1e-6)
    assert s.images["flair"].shape == s.gm.shape == s.mask.shape
    assert s.images["flair"].shape[2] == 10


def test_save_and_registry(tmp_path, subject):
    paths = subject.save(tmp_path / "s")
    names = {p.name for p in paths}
    assert {"t1w.nii.gz", "flair.nii.gz", "truth_gm.nii.gz", "truth_mask.nii.gz", "phantom.json"} <= names
    img = nib.load(tmp_path / "s" / "t1w.nii.gz")
    np.testing.assert_allclose(img.affine, subject.affine, atol=1e-5)
    assert json.loads((tmp_path / "s" / "phantom.json").read_text())["seed"] == 7
    assert {"head", "qsm"} <= set(PHANTOM_KINDS)


def test_bad_arguments():
    with pytest.raises(ValueError, match="contrasts must be among"):
        make_head(0, crop=CROP, contrasts=("dwi",))
    with pytest.raises(ValueError, match="snr must be positive"):
        make_head(0, crop=CROP, snr=0)
