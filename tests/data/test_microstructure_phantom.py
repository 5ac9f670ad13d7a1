"""The NODDI microstructure phantom: truth maps, fibre directions, simulated dMRI and its files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from mrinets.data.phantoms.microstructure import (
    POPULATIONS,
    downsample_affine,
    make_microstructure_subject,
    make_truth,
    simulate_dwi,
)
from mrinets.io.gradients import fsl_to_array_frame, read_bvals_bvecs
from mrinets.io.nifti import load
from mrinets.physics.diffusion import GradientScheme

# 40 x 40 x 20 mm through the corpus callosum body and the lateral ventricles (MNI x, y in [-20, 20], z in [5, 25]).
CROP = ((78, 118), (114, 154), (77, 97))


@pytest.fixture(scope="module")
def scheme() -> GradientScheme:
    return GradientScheme.from_dipy("gtab_3shell").with_b0(2).spread_subset(6, n_b0=2)


@pytest.fixture(scope="module")
def truth():
    return make_truth(0, voxel_mm=2.0, population="target", crop=CROP)


def _world(truth) -> np.ndarray:
    idx = np.indices(truth.mask.shape).reshape(3, -1)
    return (truth.affine[:3, :3] @ idx + truth.affine[:3, 3:]).reshape(3, *truth.mask.shape)


def test_maps_have_the_grid_types_and_range(truth):
    assert truth.icvf.shape == (20, 20, 10)
    np.testing.assert_allclose(np.sqrt((truth.affine[:3, :3] ** 2).sum(axis=0)), [2.0, 2.0, 2.0])
    for m in (truth.icvf, truth.isovf, truth.odi):
        assert m.dtype == np.float32 and m.shape == truth.mask.shape
        assert m.min() >= 0 and m.max() <= 1
    assert truth.direction.shape == (*truth.mask.shape, 3) and truth.direction.dtype == np.float32
    assert truth.tissue.dtype == np.uint8 and set(np.unique(truth.tissue)) <= {0, 1, 2, 3}
    np.testing.assert_array_equal(truth.tissue > 0, truth.mask)
    assert all((truth.tissue == label).sum() > 100 for label in (1, 2, 3))


def test_tissue_values_are_ordered_as_in_the_brain(truth):
    wm, gm, csf = (truth.tissue == label for label in (3, 2, 1))
    assert truth.icvf[wm].mean() > truth.icvf[gm].mean() + 0.03
    assert truth.odi[wm].mean() < truth.odi[gm].mean() - 0.1
    assert truth.isovf[ndimage.binary_erosion(csf)].mean() > 0.85
    assert truth.isovf[wm].mean() < 0.2
    assert truth.icvf[ndimage.binary_erosion(csf)].mean() < truth.icvf[gm].mean()


def test_directions_are_unit_and_smooth_in_white_matter(truth):
    d = truth.direction
    np.testing.assert_allclose(np.linalg.norm(d, axis=-1), 1.0, atol=1e-5)
    wm = truth.tissue == 3
    for axis in range(3):
        ahead = tuple(slice(1, None) if a == axis else slice(None) for a in range(3))
        behind = tuple(slice(None, -1) if a == axis else slice(None) for a in range(3))
        pairs = wm[ahead] & wm[behind]
        cos = np.abs(np.sum(d[ahead] * d[behind], axis=-1))[pairs]
        assert pairs.sum() > 300 and np.mean(cos > 0.8) > 0.9


def test_corpus_callosum_runs_left_right_at_the_midline(truth):
    x, y, z = _world(truth)
    callosum = (truth.tissue == 3) & (np.abs(x) < 6) & (np.abs(y) < 20)
    assert callosum.sum() > 30
    assert np.mean(np.abs(truth.direction[callosum][:, 0]) > 0.8) > 0.8


def test_grey_matter_directions_are_normal_to_the_tissue_boundary(truth):
    depth = ndimage.gaussian_filter(np.where(truth.tissue == 3, 1.0, np.where(truth.tissue == 2, 0.5, 0.0)), 1.0)
    grad = np.stack(np.gradient(depth), axis=-1)
    strong = (truth.tissue == 2) & (np.linalg.norm(grad, axis=-1) > 0.1)
    cos = np.abs(np.sum(truth.direction[strong] * grad[strong], axis=-1)) / np.linalg.norm(grad[strong], axis=-1)
    assert strong.sum() > 50 and np.median(cos) > 0.7


def test_same_seed_same_subject_and_seeds_differ():
    a, b = (make_truth(5, voxel_mm=3.0, crop=CROP) for _ in range(2))
    for name in ("icvf", "isovf", "odi", "direction", "tissue"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    c = make_truth(6, voxel_mm=3.0, crop=CROP)
    assert not np.allclose(a.icvf, c.icvf)


def test_target_subjects_differ_more_and_are_less_healthy_than_auxiliary():
    def wm_icvf(population):
        means = []
        for seed in range(6):
            t = make_truth(seed, voxel_mm=3.0, population=population, crop=CROP)
            means.append(t.icvf[t.tissue == 3].mean())
        return np.array(means)

    aux, target = wm_icvf("auxiliary"), wm_icvf("target")
    assert np.ptp(target) > 1.5 * np.ptp(aux)
    assert target.mean() < aux.mean() - 0.02
    assert set(POPULATIONS) == {"auxiliary", "target"}


def test_noise_matches_the_snr(truth, scheme):
    dwi = simulate_dwi(truth, scheme, snr=25.0, rng=np.random.default_rng(0), s0=1000.0)
    assert dwi.shape == (*truth.mask.shape, scheme.n) and dwi.dtype == np.float32
    b0 = np.flatnonzero(scheme.b0_mask)
    # Two b=0 repeats differ by noise only: std(diff) = sqrt(2) sigma where the signal is high (Gaussian limit).
    bright = truth.mask & (dwi[..., b0[0]] > 600)
    sigma = np.std(dwi[..., b0[0]][bright] - dwi[..., b0[1]][bright]) / np.sqrt(2)
    assert sigma == pytest.approx(1000.0 / 25.0, rel=0.1)
    csf, wm = truth.tissue == 1, truth.tissue == 3
    assert dwi[..., b0[0]][csf].mean() > 1.3 * dwi[..., b0[0]][wm].mean()
    weighted = ~scheme.b0_mask
    assert dwi[..., weighted][wm].mean() < 0.7 * dwi[..., b0[0]][wm].mean()


def test_downsampling_averages_noise_free_signal_on_block_centres(truth, scheme):
    fine = simulate_dwi(truth, scheme, snr=1e6, rng=np.random.default_rng(1))
    coarse = simulate_dwi(truth, scheme, snr=1e6, rng=np.random.default_rng(1), downsample=2)
    assert coarse.shape == (10, 10, 5, scheme.n)
    blocks = fine.reshape(10, 2, 10, 2, 5, 2, scheme.n).mean(axis=(1, 3, 5))
    np.testing.assert_allclose(coarse, blocks, atol=0.05)
    affine = downsample_affine(truth.affine, 2)
    np.testing.assert_allclose(np.sqrt((affine[:3, :3] ** 2).sum(axis=0)), [4.0, 4.0, 4.0])
    block = np.indices((2, 2, 2)).reshape(3, -1) + np.array([[2], [4], [6]])
    centre = (truth.affine[:3, :3] @ block + truth.affine[:3, 3:]).mean(axis=1)
    np.testing.assert_allclose(affine[:3, :3] @ [1, 2, 3] + affine[:3, 3], centre)


def test_non_integer_voxel_size_keeps_the_field_of_view():
    t = make_truth(0, voxel_mm=2.5, crop=CROP)
    assert t.icvf.shape == (16, 16, 8)
    # The first 2.5 mm voxel covers MNI voxels [-0.5, 2.0] of the crop: its centre is 0.75 mm in.
    np.testing.assert_allclose(t.affine[:3, 3], np.array([78, 114, 77]) + [-98 + 0.75, -134 + 0.75, -72 + 0.75])


def test_subject_saves_readable_files(tmp_path, scheme):
    phantom = make_microstructure_subject(2, scheme=scheme, voxel_mm=3.0, snr=20.0, population="auxiliary",
                                          downsample=2, crop=CROP)
    written = phantom.save(tmp_path)
    names = {p.name for p in written}
    assert names == {"dwi.nii.gz", "dwi.bval", "dwi.bvec", "icvf.nii.gz", "isovf.nii.gz", "odi.nii.gz",
                     "direction.nii.gz", "mask.nii.gz", "tissue.nii.gz", "phantom.json"}
    dwi = load(tmp_path / "dwi.nii.gz", ndim=4)
    np.testing.assert_allclose(dwi.data, phantom.dwi)
    np.testing.assert_allclose(dwi.affine, phantom.dwi_affine)
    bvals, bvecs = read_bvals_bvecs(tmp_path / "dwi.bval", tmp_path / "dwi.bvec", n_volumes=dwi.shape[3])
    np.testing.assert_allclose(bvals, scheme.bvals)
    # FSL stores x negated for a positive-determinant grid; read back into the array frame it is the scheme.
    np.testing.assert_allclose(bvecs * [-1, 1, 1], scheme.bvecs, atol=1e-6)
    back = fsl_to_array_frame(bvecs, dwi.source.affine, dwi.source.to_ras)
    np.testing.assert_allclose(back, scheme.bvecs, atol=1e-6)
    icvf = load(tmp_path / "icvf.nii.gz")
    np.testing.assert_allclose(icvf.data, phantom.truth.icvf)
    np.testing.assert_allclose(load(tmp_path / "direction.nii.gz", ndim=4).data, phantom.truth.direction, atol=1e-6)
    tissue = load(tmp_path / "tissue.nii.gz")
    np.testing.assert_array_equal(tissue.data, phantom.truth.tissue)
    meta = json.loads((tmp_path / "phantom.json").read_text())
    assert meta["seed"] == 2 and meta["population"] == "auxiliary" and meta["snr"] == 20.0
    assert meta["voxel_mm"] == 3.0 and meta["dwi_voxel_mm"] == 6.0 and meta["scheme"]["n_volumes"] == scheme.n


def test_named_scheme_is_read_from_dipy():
    phantom = make_microstructure_subject(0, scheme="gtab_isbi2013_2shell", voxel_mm=4.0, crop=CROP)
    assert phantom.dwi.shape[-1] == phantom.scheme.n == 64
    assert phantom.meta["scheme"]["name"] == "gtab_isbi2013_2shell"
    assert phantom.meta["scheme"]["shells"] == [1500.0, 2500.0]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"population": "elderly"}, "population must be one of"),
    ({"voxel_mm": 0.5}, "voxel_mm must be at least"),
    ({"voxel_mm": 8.0}, "fewer than 3 voxels"),
])
def test_make_truth_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_truth(0, crop=CROP, **kwargs)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"snr": 0.0}, "snr must be positive"),
    ({"snr": 30.0, "downsample": 1.5}, "downsample must be a positive integer"),
])
def test_simulate_dwi_rejects_bad_arguments(truth, scheme, kwargs, match):
    with pytest.raises(ValueError, match=match):
        simulate_dwi(truth, scheme, rng=np.random.default_rng(0), **kwargs)
