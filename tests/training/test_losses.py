"""The super-resolution loss: acquisition geometry and behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrinets.pipelines.wmh.data import SliceLabelPatches, TrainingSubject
from mrinets.pipelines.wmh.grid import GRID_SHAPE
from mrinets.physics.sampling import slice_profile
from mrinets.training.losses import acquire, super_resolution_loss


def _subject(label_to_grid: np.ndarray, image: np.ndarray, label_shape=(60, 60, 12)) -> TrainingSubject:
    return TrainingSubject(name="s", image=image, label=np.zeros(label_shape, np.uint8), label_to_grid=label_to_grid,
                           slice_axis=2, thickness_mm=5.0, naive=np.zeros(GRID_SHAPE, np.float32))


def _oblique() -> np.ndarray:
    angle = np.deg2rad(4.0)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3] = rot @ np.diag([0.9, 0.9, 5.0 / 1.5])
    m[:3, 3] = [60.0, 70.0, 15.0]
    return m


@pytest.mark.parametrize("step", [1, 2])
def test_acquired_linear_field_equals_its_value_at_the_thick_voxel_centre(step):
    # A symmetric slice profile averages a linear field to its centre value, and trilinear sampling is exact
    # on it: so the acquired block must be the linear field at label voxel centres, axis by axis.
    slope = np.array([0.01, -0.02, 0.03])
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in GRID_SHAPE], indexing="ij")
    field_ = (1.0 + sum(s * g for s, g in zip(slope, grids))).astype(np.float32)
    m = _oblique()
    data = SliceLabelPatches([_subject(m, field_)], (64, 64, 40), 3, block=(20, 24, 4), in_plane_step=step,
                             augment=False, foreground_fraction=0.0)
    for i in range(3):
        item = data[i]
        acquired = acquire(item["image"][None], item["grid"][None], item["profile"][None])[0].numpy()
        valid = item["valid"].numpy() > 0
        assert valid.sum() > 100
        # Steps along the block's axes follow the label axes' images in the box.
        along = [np.diff(acquired, axis=a)[np.take(valid, range(1, valid.shape[a]), axis=a)
                                           & np.take(valid, range(valid.shape[a] - 1), axis=a)] for a in range(3)]
        for axis in range(3):
            expected = slope @ m[:3, axis] * (step if axis < 2 else 1)
            np.testing.assert_allclose(along[axis], expected, atol=1e-4)


def test_profile_weights_match_the_physics_profile():
    subject = _subject(_oblique(), np.zeros(GRID_SHAPE, np.float32))
    offsets, weights = subject.profile()
    assert abs(float(weights.sum()) - 1.0) < 1e-6
    mm = offsets * 5.0
    reference = slice_profile(5.0, 0.01)
    z = (np.arange(reference.size) - reference.size // 2) * 0.01
    expected = np.interp(mm, z, reference)
    np.testing.assert_allclose(weights, expected / expected.sum(), rtol=1e-3)


def test_thresholded_loss_accepts_a_lesion_thinner_than_the_slice():
    # A 2-voxel-thick lesion inside a 6-voxel slice profile, label 0 (below the rater's threshold): the true map
    # costs less than filling the whole profile, which the plain average loss would not distinguish from truth.
    prob_true = torch.zeros(1, 1, 4, 4, 12)
    prob_true[..., 5:7] = 1.0
    grid = torch.zeros(1, 4, 4, 6, 3)
    zs = torch.linspace(3, 8, 6)
    grid[..., 0] = (2 * zs / 11 - 1).view(1, 1, 1, 6)
    grid[..., 1] = (2 * torch.arange(4) / 3 - 1).view(1, 1, 4, 1)
    grid[..., 2] = (2 * torch.arange(4) / 3 - 1).view(1, 4, 1, 1)
    weights = torch.full((1, 6), 1 / 6)
    label = torch.zeros(1, 4, 4, 1)
    valid = torch.ones(1, 4, 4, 1)
    logits_true = torch.logit(prob_true.clamp(0.02, 0.98))
    logits_full = torch.logit(torch.full_like(prob_true, 0.98))
    true_loss = super_resolution_loss(logits_true, grid, weights, label, valid)
    full_loss = super_resolution_loss(logits_full, grid, weights, label, valid)
    assert float(true_loss) < float(full_loss)
    label1 = torch.ones(1, 4, 4, 1)
    assert float(super_resolution_loss(logits_full, grid, weights, label1, valid)) < \
        float(super_resolution_loss(logits_true, grid, weights, label1, valid))


def test_per_sample_thresholds_match_a_shared_one():
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 4, 4, 12)
    grid = torch.rand(2, 4, 4, 6, 3) * 2 - 1
    weights = torch.full((2, 6), 1 / 6)
    label = (torch.rand(2, 4, 4, 1) > 0.5).float()
    valid = torch.ones(2, 4, 4, 1)
    shared = super_resolution_loss(logits, grid, weights, label, valid, threshold=0.3)
    each = super_resolution_loss(logits, grid, weights, label, valid, threshold=torch.tensor([0.3, 0.3]))
    other = super_resolution_loss(logits, grid, weights, label, valid, threshold=torch.tensor([0.3, 0.6]))
    assert float(each) == pytest.approx(float(shared)) and float(other) != pytest.approx(float(shared))
