"""The CMB phantom: microbleeds bloom dark on GRE/SWI and bright on QSM; mimics look as they should."""

from __future__ import annotations

import numpy as np
import pytest

from mrinets.data.phantoms.cmb import MIMIC_NAMES, apparent_radius, make_cmb_subject, swi_from_complex

# A deep-white-matter box of the MNI template: brain throughout, so every kind of object fits.
CENTRE = (-24.0, -10.0, 28.0)


@pytest.fixture(scope="module")
def phantom():
    return make_cmb_subject(3, crop_mm=36.0, n_cmb=3, b0=3.0, te=0.025, snr=40.0, centre_mm=CENTRE)


def _median(image, mask):
    return float(np.median(image[mask]))


def test_microbleeds_dark_on_gre_and_swi_bright_on_qsm(phantom):
    p = phantom
    assert len(p.cmbs) == 3 and p.cmb_labels.max() == 3
    for i in range(1, 4):
        lesion = p.cmb_labels == i
        assert p.images["gre"][lesion].min() < 0.5 * _median(p.images["gre"], p.mask)
        assert p.images["swi"][lesion].min() <= p.images["gre"][lesion].min()
        assert p.images["qsm"][lesion].max() > 0.1


def test_mimics_have_their_signature(phantom):
    p = phantom
    present = set(np.unique(p.mimic_labels)) - {0}
    assert present <= set(MIMIC_NAMES)
    qsm = p.images["qsm"]
    if (p.mimic_labels == 1).any():  # veins: paramagnetic
        assert qsm[p.mimic_labels == 1].mean() > 0.05
    if (p.mimic_labels == 2).any():  # calcifications: diamagnetic and dark on GRE
        assert qsm[p.mimic_labels == 2].mean() < -0.05
        assert p.images["gre"][p.mimic_labels == 2].mean() < _median(p.images["gre"], p.mask)


def test_calcification_is_negative_on_qsm_when_present():
    # Seed chosen among the first few to hold a calcification in a deep box.
    for seed in range(10):
        p = make_cmb_subject(seed, crop_mm=36.0, n_cmb=0, centre_mm=CENTRE)
        if (p.mimic_labels == 2).any():
            assert p.images["qsm"][p.mimic_labels == 2].mean() < 0
            return
    pytest.fail("no calcification in 10 seeds")


def test_blooming_grows_with_echo_time():
    dark = []
    for te in (0.010, 0.030):
        p = make_cmb_subject(5, crop_mm=32.0, n_cmb=2, b0=3.0, te=te, snr=200.0, centre_mm=CENTRE)
        gre = p.images["gre"]
        dark.append(int((gre < 0.5 * _median(gre, p.mask))[p.mask].sum()))
    assert dark[1] > dark[0]


def test_apparent_radius_follows_the_dipole_law():
    a = apparent_radius(1.0, 1.0, b0=3.0, te=0.02)
    assert a > 1.0
    assert apparent_radius(1.0, 8.0, b0=3.0, te=0.02) == pytest.approx(2 * a)  # cube root of 8
    assert apparent_radius(1.0, 1e-6, b0=3.0, te=0.02) == 1.0  # never below the sphere


def test_swi_mask_darkens_only_positive_phase():
    s = np.array([np.exp(1j * 0.5 * np.pi), np.exp(-1j * 0.5 * np.pi), 1.0 + 0j])
    swi = swi_from_complex(s)
    np.testing.assert_allclose(swi, [0.5**4, 1.0, 1.0], rtol=1e-6)


def test_same_seed_same_subject(phantom):
    again = make_cmb_subject(3, crop_mm=36.0, n_cmb=3, b0=3.0, te=0.025, snr=40.0, centre_mm=CENTRE)
    np.testing.assert_array_equal(again.images["swi"], phantom.images["swi"])


def test_bad_arguments_name_the_field():
    with pytest.raises(ValueError, match="voxel_size"):
        make_cmb_subject(0, voxel_size=0.01)
    with pytest.raises(ValueError, match="crop_mm"):
        make_cmb_subject(0, crop_mm=2.0)
