"""Patch sampling and sliding-window inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mrinets.training import PatchDataset, extract_patch, predict_volume, sample_centres


def test_foreground_oversampling_rate():
    rng = np.random.default_rng(0)
    fg = np.zeros((40, 40, 40), bool)
    fg[5:8, 5:8, 5:8] = True  # 0.04 % of the volume
    centres = sample_centres(fg.shape, 300, rng=rng, foreground=fg, foreground_fraction=0.5)
    hits = fg[tuple(centres.T)].mean()
    assert 0.45 < hits < 0.55
    with pytest.raises(ValueError, match="foreground_fraction"):
        sample_centres(fg.shape, 3, rng=rng, foreground=fg, foreground_fraction=2)


def test_extract_patch_pads_outside():
    vol = np.arange(27, dtype=np.float32).reshape(3, 3, 3) + 1
    patch = extract_patch(vol, (0, 0, 0), (4, 4, 4))
    assert patch.shape == (1, 4, 4, 4)
    assert patch[0, 2, 2, 2] == vol[0, 0, 0] and patch[0, 0, 0, 0] == 0


def test_patch_dataset_aligned_and_reproducible():
    img = np.random.default_rng(1).random((20, 22, 18)).astype(np.float32)
    lab = (img > 0.9).astype(np.float32)
    subjects = [{"image": img, "label": lab}]
    a = PatchDataset(subjects, (8, 8, 8), 10, foreground_key="label", seed=3)
    b = PatchDataset(subjects, (8, 8, 8), 10, foreground_key="label", seed=3)
    assert len(a) == 10
    item = a[4]
    assert item["image"].shape == (1, 8, 8, 8)
    assert torch.equal(item["label"], (item["image"] > 0.9).float())  # aligned
    assert torch.equal(a[7]["image"], b[7]["image"])


def test_sliding_window_equals_whole_volume_for_pointwise_model():
    model = nn.Conv3d(1, 2, 1)
    vol = np.random.default_rng(2).random((23, 17, 30)).astype(np.float32)
    out = predict_volume(model, vol, roi_size=(8, 8, 8), overlap=0.25)
    with torch.no_grad():
        direct = model(torch.from_numpy(vol)[None, None])[0].numpy()
    assert out.shape == (2, 23, 17, 30)
    np.testing.assert_allclose(out, direct, atol=1e-5)


def test_sliding_window_close_to_whole_volume_for_conv_net():
    """Only voxels within the receptive field of a window border differ (zero padding there)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 1, 3, padding=1))
    vol = np.random.default_rng(3).random((30, 30, 30)).astype(np.float32)
    out = predict_volume(model, vol, roi_size=(16, 16, 16), overlap=0.5, mode="gaussian")
    with torch.no_grad():
        direct = model(torch.from_numpy(vol)[None, None])[0].numpy()
    inner = (slice(None), slice(2, -2), slice(2, -2), slice(2, -2))
    close = np.abs(out[inner] - direct[inner]) < 1e-4
    assert close.mean() > 0.5
    assert np.abs(out - direct).mean() < 0.1 * direct.std()


def test_small_volume_is_padded_and_cropped():
    model = nn.Conv3d(1, 1, 1)
    out = predict_volume(model, np.ones((5, 6, 7), np.float32), roi_size=(16, 16, 16))
    assert out.shape == (1, 5, 6, 7)
