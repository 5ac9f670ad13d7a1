"""The WMH phantom and the MNI white-matter anatomy it uses."""

from __future__ import annotations

import numpy as np
import pytest

from mrinets.data.atlas import REGION_NAMES, mni_anatomy, mni_regions, quadrants
from mrinets.data.phantoms.wmh import make_wmh_subject

CROP = ((40, 160), (60, 180), (70, 130))


@pytest.fixture(scope="module")
def phantom():
    return make_wmh_subject(3, severity=0.9, snr=30.0, crop=CROP, gross=False)


def test_ventricles_are_two_mirror_lateral_ventricles():
    anatomy = mni_anatomy()
    volume_ml = anatomy.ventricles.sum() / 1000.0
    assert 8 < volume_ml < 40
    world = np.argwhere(anatomy.ventricles) @ anatomy.affine[:3, :3].T + anatomy.affine[:3, 3]
    assert abs(world[:, 0].mean()) < 2.0
    assert (world[:, 0] > 5).sum() == pytest.approx((world[:, 0] < -5).sum(), rel=0.1)
    assert -10 < world[:, 2].mean() < 30


def test_regions_have_plausible_sizes_and_order():
    volumes = mni_anatomy().region_volumes_ml()
    assert list(volumes) == list(REGION_NAMES)
    assert 50 < volumes["periventricular"] < 250
    assert 20 < volumes["inner_grey"] < 80
    assert volumes["infracortical"] > volumes["deep_white"] > volumes["periventricular"]


def test_packaged_regions_equal_the_derived_ones():
    # After a change to mni_anatomy, rewrite the file with mrinets.data.atlas.write_mni_regions().
    labels, affine = mni_regions()
    anatomy = mni_anatomy()
    np.testing.assert_array_equal(labels, anatomy.regions)
    np.testing.assert_allclose(affine, anatomy.affine)


def test_quadrants_split_by_side_and_central_plane():
    points = np.array([[30.0, 40.0, 20.0], [30.0, -60.0, 20.0], [-30.0, 40.0, 20.0], [-30.0, -60.0, 20.0]])
    np.testing.assert_array_equal(quadrants(points), [2, 3, 0, 1])


def test_quadrants_match_deep_t1_wmh_boxes(wmh_boxes):
    import nibabel as nib

    from mrinets.data.templates import load_mni

    folder = wmh_boxes
    mni = load_mni()
    for name, pick in (("frontalMNI_box", lambda q: (q == 0) | (q == 2)), ("rightsideMNI_box", lambda q: q >= 2)):
        img = nib.load(folder / f"{name}.nii.gz")
        box = np.asanyarray(img.dataobj) > 0
        idx = np.argwhere(np.ones(box.shape, bool))
        world = idx @ img.affine[:3, :3].T + img.affine[:3, 3]
        vox = np.rint((world - mni.affine[:3, 3]) @ np.linalg.inv(mni.affine[:3, :3]).T).astype(int)
        ok = np.all((vox >= 0) & (vox < mni.wm.data.shape), axis=1)
        in_wm = np.zeros(len(idx), bool)
        in_wm[ok] = mni.wm.data[tuple(vox[ok].T)] > 0.5
        ours, ref = pick(quadrants(world))[in_wm], box.reshape(-1)[in_wm]
        assert 2 * (ours & ref).sum() / (ours.sum() + ref.sum()) > 0.88, name


def test_lesions_are_white_matter_and_t1_hypointense(phantom):
    lesion = phantom.lesion
    assert lesion.min() >= 0 and lesion.max() <= 1
    assert phantom.truth_mask.sum() > 500
    # Partial volume: a fringe of fractional voxels around every lesion.
    assert ((lesion > 0.1) & (lesion < 0.9)).sum() > 0.2 * phantom.truth_mask.sum()
    from mrinets.data.templates import load_mni

    wm = load_mni().wm.data[tuple(slice(a, b) for a, b in CROP)]
    assert wm[phantom.truth_mask].mean() > 0.6
    inside = phantom.t1[phantom.truth_mask].mean()
    normal = phantom.t1[(wm > 0.95) & (lesion == 0)].mean()
    assert inside < 0.8 * normal


def test_flair_is_thick_slice_and_label_is_made_on_it(phantom):
    spacing = np.sqrt((phantom.flair_affine[:3, :3] ** 2).sum(axis=0))
    np.testing.assert_allclose(spacing, [0.9, 0.9, 5.0])
    assert phantom.flair_label.shape == phantom.flair.shape
    assert phantom.flair_label.dtype == bool and phantom.flair_label.any()
    assert phantom.flair[phantom.flair_label].mean() > 1.3 * np.median(phantom.flair[phantom.flair > 0.3])
    assert phantom.meta["label"]["gross"] is False


@pytest.mark.slow
def test_same_seed_same_subject_and_flaws_recorded():
    a = make_wmh_subject(11, crop=CROP)
    b = make_wmh_subject(11, crop=CROP)
    np.testing.assert_array_equal(a.t1, b.t1)
    np.testing.assert_array_equal(a.flair_label, b.flair_label)
    for key in ("threshold", "missed", "morphology", "gross"):
        assert key in a.meta["label"]


@pytest.mark.slow
def test_gross_label_misses_most_of_the_acquired_lesions():
    good = make_wmh_subject(5, severity=0.8, crop=CROP, gross=False)
    bad = make_wmh_subject(5, severity=0.8, crop=CROP, gross=True)
    overlap = (good.flair_label & bad.flair_label).sum() / max(good.flair_label.sum(), 1)
    assert overlap < 0.5


@pytest.mark.slow
def test_pose_moves_headers_and_records_the_map_back(tmp_path):
    p = make_wmh_subject(2, crop=CROP, pose=True)
    assert not np.allclose(p.t1_affine, p.t1_affine @ p.to_mni)
    centre = np.array([60.0, 60.0, 30.0, 1.0])
    # Same voxel, same MNI point, whatever the pose.
    plain = make_wmh_subject(2, crop=CROP, pose=False)
    np.testing.assert_allclose(p.to_mni @ p.t1_affine @ centre, plain.t1_affine @ centre, atol=1e-6)
    files = {f.name for f in p.save(tmp_path)}
    assert {"t1.nii.gz", "flair.nii.gz", "flair_label.nii.gz", "truth_lesion_mask.nii.gz", "phantom.json"} <= files


def test_inserted_lesions_keep_the_images_noise(phantom):
    from scipy import ndimage

    from mrinets.data.phantoms.wmh import insert_wmh
    from mrinets.data.templates import load_mni

    # The phantom's T1 (noise at SNR 30, a bias field) stands in for a user's scan.
    inserted = insert_wmh(phantom.t1, phantom.t1_affine, phantom.to_mni, 5, severity=0.9, gross=False)
    core = ndimage.binary_erosion(inserted.lesion > 0.99, iterations=2)
    assert core.sum() > 200
    signal = ndimage.gaussian_filter(phantom.t1, 1.0)
    # The core is darkened to the drawn share of white matter...
    wm_level = np.median(phantom.t1[load_mni().wm.data[tuple(slice(a, b) for a, b in CROP)] > 0.95])
    ratio = inserted.t1[core] / signal[core]
    assert np.median(ratio) == pytest.approx(inserted.meta["t1_lesion_level"] / wm_level, rel=0.03)

    def detail(image):
        return (image - ndimage.gaussian_filter(image, 1.0))[core]

    # ... and the scan's own noise stays in the core, where a flat level would leave none.
    assert detail(inserted.t1).std() == pytest.approx(detail(phantom.t1).std(), rel=0.2)
    outside = inserted.lesion == 0
    np.testing.assert_array_equal(inserted.t1[outside], phantom.t1[outside])


@pytest.mark.slow
def test_lesions_inserted_into_a_real_t1(real_t1, tmp_path):
    from mrinets.cli import main
    from mrinets.io.nifti import load

    out = tmp_path / "inserted"
    assert main(["phantom", "wmh", "--seed", "3", "--severity", "0.8", "--t1", str(real_t1), "--out", str(out),
                 "--quiet"]) == 0
    t1 = load(out / "t1.nii.gz")
    original = load(real_t1)
    truth = load(out / "truth_lesion_fraction.nii.gz").data
    label = load(out / "flair_label.nii.gz", allow_empty=True)
    assert truth.sum() * np.prod(t1.voxel_size) / 1000 > 2.0
    core = truth > 0.9
    assert t1.data[core].mean() < 0.8 * original.data[core].mean()
    np.testing.assert_array_equal(t1.data[truth == 0], original.data[truth == 0])
    assert label.data.any() and np.allclose(label.voxel_size, [0.9, 0.9, 5.0])
    assert not (out / "flair.nii.gz").exists()


@pytest.fixture(scope="module")
def ms_phantom():
    return make_wmh_subject(3, severity=0.9, snr=200.0, crop=CROP, gross=False, lesions="ms")


def _crop(volume):
    return volume[tuple(slice(a, b) for a, b in CROP)]


def test_ms_lesions_each_have_their_own_level_darker_inside(ms_phantom):
    from scipy import ndimage

    from mrinets.data.templates import load_mni

    p = ms_phantom
    wm = _crop(load_mni().wm.data)
    normal = np.median(p.t1[(wm > 0.95) & (p.lesion == 0)])
    scaled = p.t1 / normal
    labels, n = ndimage.label(p.truth_mask)
    assert n >= 5
    # As on the real patient (docs/wmh.md): lesions from barely to clearly hypointense, one level each.
    per_lesion = np.asarray(ndimage.median(scaled, labels, np.arange(1, n + 1)))
    assert per_lesion.max() - per_lesion.min() > 0.15
    assert 0.6 < np.median(scaled[p.truth_mask]) < 0.95
    # The cores of large lesions are darker than their edges.
    core = ndimage.binary_erosion(p.truth_mask, iterations=2)
    edge = p.truth_mask & ~ndimage.binary_erosion(p.truth_mask)
    assert core.sum() > 50
    assert np.median(scaled[core]) < np.median(scaled[edge]) - 0.05


def test_ms_lesions_sit_less_on_the_ventricle_wall_than_wmh_bands(ms_phantom):
    wmh = make_wmh_subject(3, severity=0.9, snr=200.0, crop=CROP, gross=False)
    distance = _crop(mni_anatomy().ventricle_distance_mm)

    def on_wall(p):
        return (distance[p.truth_mask] <= 3).mean()

    assert on_wall(ms_phantom) < on_wall(wmh) - 0.1
    assert (distance[ms_phantom.truth_mask] > 10).mean() > 0.1
    sites = ms_phantom.meta["lesions"]["sites"]
    assert sum(sites.values()) == ms_phantom.meta["lesions"]["lesions"] and all(v > 0 for v in sites.values())


def test_ms_lesions_are_reproducible_and_the_model_is_checked(ms_phantom):
    again = make_wmh_subject(3, severity=0.9, snr=200.0, crop=CROP, gross=False, lesions="ms")
    np.testing.assert_array_equal(again.t1, ms_phantom.t1)
    np.testing.assert_array_equal(again.flair_label, ms_phantom.flair_label)
    with pytest.raises(ValueError, match="lesions must be one of"):
        make_wmh_subject(3, crop=CROP, lesions="small-vessel")


def test_ms_lesions_inserted_keep_their_levels(phantom):
    from mrinets.data.phantoms.wmh import insert_wmh

    inserted = insert_wmh(phantom.t1, phantom.t1_affine, phantom.to_mni, 5, severity=0.9, gross=False, lesions="ms")
    core = inserted.lesion > 0.99
    assert core.sum() > 100
    outside = inserted.lesion == 0
    np.testing.assert_array_equal(inserted.t1[outside], phantom.t1[outside])
    assert inserted.t1[core].mean() < phantom.t1[core].mean()
    assert 0.4 * phantom.t1[core].mean() < inserted.meta["t1_lesion_level"] < phantom.t1[core].max()


@pytest.fixture(scope="module")
def ms_flair_phantom():
    return make_wmh_subject(3, severity=0.9, snr=200.0, crop=CROP, gross=False, lesions="ms-flair")


def _over_white_matter(p):
    from mrinets.data.templates import load_mni

    wm = _crop(load_mni().wm.data)
    return p.t1 / np.median(p.t1[(wm > 0.95) & (p.lesion == 0)])


def test_ms_flair_labels_the_ms_lesions_beyond_their_t1_change(ms_phantom, ms_flair_phantom):
    from scipy import ndimage

    ms, flair = ms_phantom, ms_flair_phantom
    # Same T1 lesions, outlined wider: every "ms" lesion voxel is labelled, and much more around it.
    assert not (ms.truth_mask & ~flair.truth_mask).any()
    assert flair.truth_mask.sum() > 1.5 * ms.truth_mask.sum()
    # The rim (labelled, outside the T1 lesion, beside it) is barely darker than white matter on T1, as the
    # patient's consensus rims are (median 0.86, docs/wmh.md).
    rim = flair.truth_mask & ~ms.truth_mask & ndimage.binary_dilation(ms.truth_mask, iterations=2)
    scaled = _over_white_matter(flair)
    assert rim.sum() > 1000 and np.median(scaled[rim]) > 0.85
    share = {name: (_over_white_matter(p)[p.truth_mask] >= 0.9).mean() for name, p in (("ms", ms), ("flair", flair))}
    assert share["flair"] > max(0.15, share["ms"] + 0.08)
    # The T1 lesions themselves keep their levels.
    core = ms.lesion > 0.99
    assert np.median(scaled[core]) == pytest.approx(np.median(_over_white_matter(ms)[core]), abs=0.03)
    # The FLAIR shows the whole lesion: its label is wider too.
    assert flair.flair_label.sum() > 1.3 * ms.flair_label.sum()
    assert all(0.5 <= v <= 1.5 for v in flair.meta["lesions"]["rim_mm"])


def test_ms_flair_has_confluent_lesions_and_the_patients_grey_matter(ms_phantom, ms_flair_phantom):
    from scipy import ndimage

    from mrinets.data.templates import load_mni

    ms, flair = ms_phantom, ms_flair_phantom
    assert flair.meta["lesions"]["confluent"] >= 1

    def largest_ml(p):
        labels, _ = ndimage.label(p.truth_mask)
        return np.bincount(labels.ravel())[1:].max() / 1000.0

    assert largest_ml(flair) > max(2.0, 1.5 * largest_ml(ms))
    gm = _crop(load_mni().gm.data) > 0.9

    def grey(p):
        return np.median(_over_white_matter(p)[gm & (p.lesion == 0)])

    # The real patient's grey matter is at 0.76 of white matter, the "ms" phantom's darker (docs/wmh.md).
    assert 0.70 < grey(flair) < 0.82 and grey(ms) < 0.70
