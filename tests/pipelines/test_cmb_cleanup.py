"""Step-3 rules of the CMB detector on drawn clusters with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mrinets.pipelines.cmb.cleanup import CleanupRules, cleanup, rejection_reason, rule_failures
from mrinets.pipelines.cmb.data import Z_SCALE

SHAPE = (48, 48, 48)


def _scene():
    """A brain (sphere of radius 22), and clusters: ball, tube, speck, edge ball, flat disc."""
    g = np.indices(SHAPE).astype(float)
    mask = (((g - 24) ** 2).sum(0) <= 22**2)
    z = np.zeros(SHAPE, np.float32)
    labels = np.zeros(SHAPE, np.int16)

    def ball(c, r):
        return ((g - np.reshape(c, (3, 1, 1, 1))) ** 2).sum(0) <= r**2

    labels[ball((24, 24, 24), 2.5)] = 1                                  # microbleed-like
    tube = ((g[0] - 14) ** 2 + (g[1] - 14) ** 2 <= 1.5**2) & (np.abs(g[2] - 24) <= 10)
    z[tube] = 6 / Z_SCALE                                                # a dark vein, 21 mm long
    labels[tube & (np.abs(g[2] - 24) <= 2)] = 2                          # a short stub of it was a candidate
    labels[34, 24, 24] = 3                                               # a single voxel
    labels[ball((24, 45, 24), 1.5) & mask] = 4                           # at the brain edge
    labels[(np.abs(g[0] - 32) <= 4) & (np.abs(g[1] - 32) <= 4) & (g[2] == 20)] = 5  # flat 9 x 9 x 1 disc
    z[labels > 0] = np.maximum(z[labels > 0], 6 / Z_SCALE)
    return labels, z, mask


def test_each_rule_removes_its_case_and_keeps_the_microbleed():
    labels, z, mask = _scene()
    raw = np.where(labels > 0, -1.0, 0.0).astype(np.float32)
    features, reasons = cleanup(labels, z, mask, -raw, "swi")
    assert reasons[0] is None
    failed = [rule_failures(f, "swi") for f in features]
    assert failed[0] == []
    assert "vessel" in failed[1]
    assert failed[2] == ["too_small"]
    assert failed[3] == ["brain_edge"]
    assert failed[4] == ["not_spherical"]


def test_qsm_sign_rejects_diamagnetic():
    labels, z, mask = _scene()
    para = np.where(labels == 1, 0.3, 0.0).astype(np.float32)
    assert cleanup(labels, z, mask, para, "qsm")[1][0] is None
    assert cleanup(labels, z, mask, -para, "qsm")[1][0] == "diamagnetic"
    # The sign rule is for QSM only: a dark calcification on SWI is the classifier's to judge.
    assert cleanup(labels, z, mask, -para, "swi")[1][0] is None
    assert cleanup(labels, z, mask, -para, "qsm", rules=CleanupRules(qsm_sign=False))[1][0] is None


def test_features_are_measured_in_mm():
    labels, z, mask = _scene()
    features, _ = cleanup(labels, z, mask, np.zeros(SHAPE, np.float32), "gre", voxel_mm=2.0)
    assert features[0]["volume_mm3"] == pytest.approx(8.0 * ndimage.sum(labels == 1))


def test_size_bounds():
    f = {"volume_mm3": 1000.0, "sphericity": 1.0, "vessel_length_mm": 0.0, "vessel_elongation": 1.0,
         "edge_mm": 10.0, "raw_contrast": 1.0}
    assert rejection_reason(f, "swi") == "too_large"
    assert rejection_reason({**f, "volume_mm3": 30.0}, "swi") is None
    with pytest.raises(ValueError):
        CleanupRules(min_volume_mm3=10, max_volume_mm3=5)


def _ball(c, r):
    g = np.indices(SHAPE).astype(float)
    return ((g - np.reshape(c, (3, 1, 1, 1))) ** 2).sum(0) <= r**2


def test_size_and_shape_are_measured_on_the_bloom():
    """A candidate of one voxel on a large round bloom is neither too small nor misshapen."""
    mask = _ball((24, 24, 24), 22)
    z = np.where(_ball((24, 24, 24), 2.5), 8 / Z_SCALE, 0.0).astype(np.float32)
    labels = np.zeros(SHAPE, np.int16)
    labels[24, 24, 24] = 1
    features, reasons = cleanup(labels, z, mask, np.ones(SHAPE, np.float32), "swi")
    assert reasons == [None]
    assert features[0]["volume_mm3"] == pytest.approx(float(_ball((24, 24, 24), 2.5).sum()))
    assert features[0]["cluster_volume_mm3"] == 1.0


def test_microbleed_merged_with_a_dimmer_vein_is_not_a_vessel():
    """One candidate covering a bright bloom and the vein beside it: the bloom (above half its peak) is round."""
    g = np.indices(SHAPE).astype(float)
    mask = _ball((24, 24, 24), 22)
    tube = ((g[0] - 24) ** 2 + (g[1] - 28) ** 2 <= 1.5**2) & (np.abs(g[2] - 24) <= 12)
    bleed = _ball((24, 24, 24), 2.5)
    z = np.where(tube, 4 / Z_SCALE, 0.0)
    z = np.where(bleed, 10 / Z_SCALE, z).astype(np.float32)
    labels = (bleed | (tube & (np.abs(g[2] - 24) <= 6))).astype(np.int16)
    raw = np.ones(SHAPE, np.float32)
    assert cleanup(labels, z, mask, raw, "swi")[1] == [None]
    # The same vein alone, a candidate on its own, is still a vessel.
    alone = (tube & (np.abs(g[2] - 24) <= 2)).astype(np.int16)
    assert "vessel" in rule_failures(cleanup(alone, np.where(tube, 4 / Z_SCALE, 0).astype(np.float32), mask, raw,
                                             "swi")[0][0], "swi")


def test_confident_classifier_overrides_shape_rules_only():
    f = {"volume_mm3": 30.0, "sphericity": 0.1, "vessel_length_mm": 0.0, "vessel_elongation": 1.0,
         "edge_mm": 10.0, "raw_contrast": 1.0}
    rules = CleanupRules(override_probability=0.8)
    assert rejection_reason(f, "qsm", rules) == "not_spherical"
    assert rejection_reason(f, "qsm", rules, probability=0.5) == "not_spherical"
    assert rejection_reason(f, "qsm", rules, probability=0.9) is None
    # Anatomy and physics are not overridden: a diamagnetic or edge cluster stays out.
    assert rejection_reason({**f, "raw_contrast": -1.0}, "qsm", rules, probability=0.99) == "not_spherical"
    assert rejection_reason({**f, "sphericity": 1.0, "edge_mm": 0.0}, "qsm", rules, probability=0.99) == "brain_edge"
