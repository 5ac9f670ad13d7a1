"""Tissue classifier, volumes and agreement statistics."""

from __future__ import annotations

import numpy as np
import pytest

from mrinets.metrics.morphometry import abs_percent_difference, brain_mask, classify_tissue, icc, tissue_volumes


@pytest.fixture(scope="module")
def head():
    shape = (40, 40, 30)
    g = np.stack(np.meshgrid(*[np.arange(n) - n / 2 for n in shape], indexing="ij"))
    r = np.sqrt((g**2).sum(0))
    truth = np.zeros(shape, np.int8)
    truth[r < 14] = 1  # CSF shell outside
    truth[r < 12] = 2
    truth[r < 8] = 3
    truth[(r < 3)] = 1  # a central "ventricle"
    levels = {0: 0.0, 1: 0.3, 2: 0.65, 3: 1.0}
    rng = np.random.default_rng(0)
    image = np.vectorize(levels.get)(truth).astype(np.float32) + rng.normal(0, 0.03, shape).astype(np.float32)
    return image, truth


def test_classifier_recovers_tissue_t1_and_t2(head):
    image, truth = head
    mask = truth > 0
    labels, post = classify_tissue(image, mask, "t1")
    assert (labels[mask] == truth[mask]).mean() > 0.98
    assert np.allclose(post.sum(0)[mask], 1.0, atol=1e-5)
    t2 = np.where(mask, 1.3 - image, 0)
    labels2, _ = classify_tissue(t2, mask, "t2")
    assert (labels2[mask] == truth[mask]).mean() > 0.98


def test_volumes_regions_and_mask(head):
    image, truth = head
    vols = tissue_volumes(truth, (4.0, 4.0, 4.0))
    assert vols["wm"] == pytest.approx((truth == 3).sum() * 64 / 1000)
    assert vols["gm_left"] + vols["gm_right"] == pytest.approx(vols["gm"])
    assert vols["gm_left"] == pytest.approx(vols["gm_right"], rel=0.15)
    assert 0 < vols["csf_central"] < vols["csf"]
    mask = brain_mask(image)
    assert (mask == (truth > 0)).mean() > 0.97


def test_icc_and_percent_difference():
    a = np.array([10.0, 12, 15, 9, 20])
    assert icc(a, a) == pytest.approx(1.0)
    assert icc(a, a + 5) < icc(a, a + 0.5) < 1.0  # absolute agreement punishes a bias
    assert icc(a, a[::-1]) < 0.5
    assert abs_percent_difference(110, 100) == pytest.approx(10.0)
