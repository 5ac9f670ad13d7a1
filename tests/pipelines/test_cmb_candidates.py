"""Step-1 candidates of the CMB detector (split at probability maxima, radial-symmetry peaks) and the funnel."""

from __future__ import annotations

import numpy as np

from mrinets.pipelines.cmb import detection_funnel
from mrinets.pipelines.cmb.detect import Detection
from mrinets.pipelines.cmb.model import candidate_clusters, symmetry_peaks

SHAPE = (32, 32, 32)


def _blob(centre, sigma, height=1.0):
    g = np.indices(SHAPE).astype(float)
    return height * np.exp(-((g - np.reshape(centre, (3, 1, 1, 1))) ** 2).sum(0) / (2 * sigma**2))


def test_two_maxima_joined_by_a_ridge_become_two_candidates():
    g = np.indices(SHAPE).astype(float)
    ridge = 0.3 * ((np.abs(g[0] - 16) <= 1) & (np.abs(g[1] - 16) <= 1) & (g[2] >= 8) & (g[2] <= 24))
    prob = np.maximum(np.maximum(_blob((16, 16, 8), 1.5), _blob((16, 16, 24), 1.5)), ridge).astype(np.float32)
    whole, n_whole = candidate_clusters(prob, 0.1, split=None)
    assert n_whole == 1
    labels, n = candidate_clusters(prob, 0.1)
    assert n == 2
    assert labels[16, 16, 8] != labels[16, 16, 24] and labels[16, 16, 8] > 0 and labels[16, 16, 24] > 0
    # Splitting only relabels: the candidates cover the same voxels.
    assert np.array_equal(labels > 0, whole > 0)


def test_one_maximum_stays_one_candidate():
    _, n = candidate_clusters(_blob((16, 16, 16), 2.0).astype(np.float32), 0.1)
    assert n == 1


def test_symmetry_peaks_add_the_bright_round_spots_the_unet_missed():
    z = (_blob((8, 8, 8), 0.8) + _blob((24, 24, 24), 0.8)).astype(np.float32)
    rs = (z > 0.3).astype(np.float32)
    labels = np.zeros(SHAPE, np.int32)
    labels[23:26, 23:26, 23:26] = 1                      # the U-Net found the second spot
    out, n = symmetry_peaks(labels, 1, np.stack([z, rs]), level=0.5, symmetry=0.5)
    assert n == 2
    assert out[8, 8, 8] == 2
    assert np.array_equal(out == 1, labels == 1)
    # A spot without radial symmetry (or too faint) is not added.
    assert symmetry_peaks(labels, 1, np.stack([z, np.zeros_like(rs)]), level=0.5, symmetry=0.5)[1] == 1
    assert symmetry_peaks(labels, 1, np.stack([0.4 * z, rs]), level=0.5, symmetry=0.5)[1] == 1


def test_funnel_counts_each_stage():
    truth = np.zeros(SHAPE, np.int16)
    truth[5, 5, 5], truth[15, 15, 15], truth[25, 25, 25] = 1, 2, 3
    cand = np.zeros(SHAPE, np.int32)
    cand[5, 5, 5], cand[15, 15, 15], cand[10, 10, 10] = 1, 2, 3   # CMB 3 is missed by step 1; 3 is a FP
    ok = {"volume_mm3": 30.0, "sphericity": 1.0, "vessel_length_mm": 0.0, "vessel_elongation": 1.0,
          "edge_mm": 10.0, "raw_contrast": 1.0}
    features = [ok, {**ok, "sphericity": 0.1}, ok]
    found = Detection(prob=np.zeros(SHAPE, np.float32), candidates=cand, n_candidates=3,
                      student_prob=np.array([0.9, 0.6, 0.7]), features=features,
                      reasons=[None, "not_spherical", None], kept=np.array([True, False, True]))
    f = detection_funnel(found, truth, "swi", threshold=0.5)
    assert (f["cmb"], f["step1"], f["rule:not_spherical"], f["step3"], f["step2"], f["final"]) == (3, 2, 1, 1, 2, 1)
    assert (f["fp_step1"], f["fp_final"]) == (1, 1)


def test_funnel_holds_plain_ints(tmp_path):
    """The funnel goes onto the model card inside the weights file, read with ``weights_only=True``."""
    import torch

    truth = np.zeros(SHAPE, np.int16)
    truth[5, 5, 5] = 1
    cand = np.zeros(SHAPE, np.int32)
    cand[5, 5, 5], cand[20, 20, 20] = 1, 2
    ok = {"volume_mm3": 30.0, "sphericity": 1.0, "vessel_length_mm": 0.0, "vessel_elongation": 1.0,
          "edge_mm": 10.0, "raw_contrast": 1.0}
    found = Detection(prob=np.zeros(SHAPE, np.float32), candidates=cand, n_candidates=2,
                      student_prob=np.array([0.9, 0.9], np.float32), features=[ok, ok], reasons=[None, None],
                      kept=np.array([True, True]))
    f = detection_funnel(found, truth, "swi", threshold=0.5)
    assert all(type(v) is int for v in f.values()), f
    torch.save({"card": {"funnel": f}}, tmp_path / "w.pt")
    assert torch.load(tmp_path / "w.pt", weights_only=True)["card"]["funnel"] == f
