"""The 64 mT degradation model: contrast, grid, noise, misregistration."""

from __future__ import annotations

import numpy as np
import pytest

from mrinets.physics.lowfield import RELAXATION, LowFieldConfig, contrast_levels, degrade, rigid_matrix, tissue_signal


def test_t1_shortens_at_low_field_and_t1w_contrast_order_holds():
    for tissue in ("wm", "gm", "csf"):
        assert RELAXATION["64mT"][tissue][0] < RELAXATION["3T"][tissue][0]
    wm, gm, csf = contrast_levels("64mT", "t1")
    assert wm > gm > csf >= 0
    wm2, gm2, csf2 = contrast_levels("64mT", "t2")
    assert csf2 > gm2 > wm2


def test_grey_white_t1_ratio_shrinks_from_3t_to_64mT():
    ratio = {f: RELAXATION[f]["gm"][0] / RELAXATION[f]["wm"][0] for f in ("3T", "64mT")}
    assert ratio["64mT"] < ratio["3T"]


def test_signal_equations():
    se = {"kind": "se", "tr": 1e9, "te": 0.0}
    assert tissue_signal(1000.0, 100.0, 0.7, se) == pytest.approx(0.7)
    ir = {"kind": "ir", "tr": 1e9, "ti": 1000.0 * np.log(2), "te": 0.0}
    assert tissue_signal(1000.0, 100.0, 1.0, ir) == pytest.approx(0.0, abs=1e-9)  # the inversion null
    with pytest.raises(ValueError, match="kind"):
        tissue_signal(1000.0, 100.0, 1.0, {"kind": "gre", "tr": 1, "te": 1})


def test_rigid_matrix_keeps_centre_without_shift():
    m = rigid_matrix([3.0, -2.0, 1.0], [0, 0, 0], [10.0, 20.0, 30.0])
    assert np.allclose(m[:3, :3] @ [10, 20, 30] + m[:3, 3], [10, 20, 30])
    assert np.allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3))


@pytest.fixture(scope="module")
def block():
    shape = (48, 48, 40)
    g = np.stack(np.meshgrid(*[np.arange(n) - n / 2 for n in shape], indexing="ij"))
    r = np.sqrt((g**2).sum(0))
    wm = (r < 10).astype(np.float32)
    gm = ((r >= 10) & (r < 15)).astype(np.float32)
    csf = ((r >= 15) & (r < 18)).astype(np.float32)
    return np.stack([wm, gm, csf]), np.zeros(shape, np.float32), np.eye(4)


def test_degrade_grid_noise_and_meta(block):
    tissue, detail, affine = block
    config = LowFieldConfig(voxel_mm=(1.6, 1.6, 5.0), snr=10.0, bias=0.0)
    image, lf_affine, meta = degrade(tissue, detail, affine, "t1", np.random.default_rng(0), config)
    assert np.allclose(np.sqrt((lf_affine[:3, :3] ** 2).sum(0)), [1.6, 1.6, 5.0])
    assert image.shape == (30, 30, 8)
    corner = image[:4, :4, :]  # background: Rician of zero signal has mean sigma sqrt(pi / 2)
    sigma = meta["levels_wm_gm_csf"][0] / config.snr
    assert corner.mean() == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.25)
    centre = image[13:17, 13:17, 3:5].mean()
    assert centre == pytest.approx(meta["levels_wm_gm_csf"][0], rel=0.2)
    assert all(abs(a) <= config.misregistration_deg for a in meta["rotation_deg"])
    assert all(abs(s) <= config.misregistration_mm for s in meta["shift_mm"])


def test_degrade_is_seeded_and_misregistration_moves_the_image(block):
    tissue, detail, affine = block
    a = degrade(tissue, detail, affine, "t1", np.random.default_rng(1))[0]
    b = degrade(tissue, detail, affine, "t1", np.random.default_rng(1))[0]
    assert np.array_equal(a, b)
    still = LowFieldConfig(misregistration_deg=0.0, misregistration_mm=0.0, snr=1e6, bias=0.0)
    moved = LowFieldConfig(misregistration_deg=0.0, misregistration_mm=3.0, snr=1e6, bias=0.0)
    s = degrade(tissue, detail, affine, "t1", np.random.default_rng(2), still)[0]
    m = degrade(tissue, detail, affine, "t1", np.random.default_rng(2), moved)[0]
    com = [np.array(np.nonzero(x > 0.5 * x.max())).mean(axis=1) for x in (s, m)]
    assert np.linalg.norm((com[0] - com[1])[:2] * 1.6) > 0.3


def test_config_refuses_bad_values():
    with pytest.raises(ValueError, match="voxel_size"):
        LowFieldConfig(voxel_mm=(0.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="snr"):
        LowFieldConfig(snr=-1.0)
