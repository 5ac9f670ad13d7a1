"""Affine registration to MNI152: synthetic subjects with known truth, the real T1, and failures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from t1_inputs import stripped_mni_space_t1

from mrinets.data.phantoms.head import make_head, rotation_matrix
from mrinets.data.templates import load_mni
from mrinets.errors import InputError, RegistrationError
from mrinets.io import load
from mrinets.io.nifti import from_array
from mrinets.physics.sampling import resample_to_voxel_size
from mrinets.preprocess.register import (
    MIN_SCORE,
    MniRegistration,
    _adam_step,
    register_to_mni,
)


def _mean_error_mm(matrix: np.ndarray, truth: np.ndarray) -> float:
    """Mean distance between the two maps' images of MNI brain voxels (every 20th), in subject space."""
    mni = load_mni()
    voxels = np.argwhere(mni.mask.data > 0.5)[::20]
    points = np.c_[voxels @ mni.affine[:3, :3].T + mni.affine[:3, 3], np.ones(len(voxels))]
    estimate = points @ np.linalg.inv(matrix).T
    expected = points @ np.linalg.inv(truth).T
    return float(np.linalg.norm(estimate[:, :3] - expected[:, :3], axis=1).mean())


@pytest.fixture(scope="module")
def phantom():
    """A 2 mm synthetic head (no skull) and its true subject-to-MNI affine."""
    head = make_head(3, contrasts=("t1w", "t2w"), voxel_size=(2.0, 2.0, 2.0))
    warp = head.meta["warp"]
    linear = rotation_matrix(np.deg2rad(warp["rotation_deg"])) @ np.diag(warp["scaling"])
    mni = load_mni()
    # make_head pulls template values at linear @ (x - centre) + centre + shift, from subject world x.
    centre = mni.affine[:3, :3] @ ((np.array(mni.t1.shape) - 1) / 2) + mni.affine[:3, 3]
    truth = np.eye(4)
    truth[:3, :3] = linear
    truth[:3, 3] = centre + np.array(warp["translation_mm"]) - linear @ centre
    return head, truth


def test_phantom_recovers_the_drawn_affine(phantom):
    head, truth = phantom
    reg = register_to_mni(from_array(head.images["t1w"], head.affine))
    assert _mean_error_mm(reg.matrix, truth) < 1.5
    assert reg.score > 0.8
    assert reg.scale_determinant == pytest.approx(abs(np.linalg.det(truth[:3, :3])), abs=0.03)
    brain = reg.brain_mask(head.affine, head.mask.shape)
    assert brain.shape == head.mask.shape
    dice = 2 * (brain & head.mask).sum() / (brain.sum() + head.mask.sum())
    assert dice > 0.8


def test_moved_mni_copy_is_recovered():
    """The template itself with a rigid motion put into its header: the inverse motion comes back."""
    mni = load_mni()
    data, affine = resample_to_voxel_size(mni.t1.data, mni.affine, (1.5, 1.5, 1.5))
    motion = np.eye(4)
    motion[:3, :3] = rotation_matrix(np.deg2rad([12.0, -5.0, 8.0]))
    motion[:3, 3] = [10.0, -15.0, 6.0]
    reg = register_to_mni(from_array(data, motion @ affine))
    assert _mean_error_mm(reg.matrix, np.linalg.inv(motion)) < 1.5
    assert reg.score > 0.9
    assert reg.input_kind == "skull-stripped"


def test_grid_directions_and_determinant():
    """to_grid and from_grid move data the way the matrix maps world points."""
    matrix = np.diag([1.25, 1.0, 1.0, 1.0])
    matrix[:3, 3] = [10.0, 0.0, 0.0]
    reg = MniRegistration(matrix=matrix, score=1.0)
    assert reg.scale_determinant == pytest.approx(1.25)
    with pytest.raises(ValueError, match="no brain mask"):
        reg.brain_mask(np.eye(4), (2, 2, 2))
    data = np.zeros((40, 20, 20), np.float32)
    data[8, 10, 10] = 1.0  # subject world x = 8 mm -> MNI x = 1.25 * 8 + 10 = 20 mm
    grid = reg.to_grid(data, np.eye(4), np.eye(4), (40, 20, 20), order=0)
    assert np.argwhere(grid == 1).tolist() == [[20, 10, 10]]
    back = reg.from_grid(grid, np.eye(4), np.eye(4), data.shape, order=0)
    assert back[8, 10, 10] == 1.0


def test_real_t1_with_skull_registers(real_t1):
    image = load(real_t1)
    reg = register_to_mni(image)
    assert reg.input_kind == "head"
    assert reg.score >= MIN_SCORE
    assert 0.6 < reg.scale_determinant < 1.6
    mni = load_mni()
    brain = reg.from_grid(mni.mask.data, mni.affine, image.affine, image.spatial_shape) > 0.5
    litres = brain.sum() * np.prod(image.voxel_size) / 1e6
    assert 1.0 < litres < 2.2
    # The template brain mapped back lies within the head, mostly on the stripped brain.
    assert (brain & reg.brain_mask(image.affine, image.spatial_shape)).sum() > 0.7 * brain.sum()


def _volume(kind: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    shape = (90, 110, 90)
    if kind == "noise":
        return rng.random(shape)
    if kind == "flat":
        return np.ones(shape)
    grid = np.stack(np.meshgrid(*[np.arange(n) - n / 2 for n in shape], indexing="ij"))
    return (np.sqrt((grid**2).sum(axis=0)) < 35) + rng.normal(0, 0.05, shape)


@pytest.mark.parametrize("kind", ["noise", "flat", "sphere"])
def test_non_brains_are_refused(kind):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-90.0, -110.0, -90.0]
    with pytest.raises(RegistrationError, match="^image: (no brain-like|registration to MNI failed)"):
        register_to_mni(from_array(_volume(kind), affine))
    assert issubclass(RegistrationError, InputError)


def test_wrong_contrast_scores_low(phantom):
    head, _ = phantom
    with pytest.raises(RegistrationError, match="correlation -?0\\.\\d\\d is below 0.30"):
        register_to_mni(from_array(head.images["t2w"], head.affine))


def test_four_dimensional_input_is_a_bug():
    with pytest.raises(ValueError, match="must be 3D"):
        register_to_mni(from_array(np.zeros((4, 4, 4, 2))))


def test_adam_step_is_torch_adam():
    """The registration's own Adam steps give torch.optim.Adam's parameters, bit for bit."""
    start = torch.tensor([0.3, -1.2, 2.0])
    ours, theirs = start.clone().requires_grad_(), start.clone().requires_grad_()
    mean, square = torch.zeros(3), torch.zeros(3)
    optimiser = torch.optim.Adam([theirs], lr=0.05)
    for step in range(1, 31):
        (grad,) = torch.autograd.grad(((ours - 1.0) ** 4).sum(), [ours])
        with torch.no_grad():
            _adam_step(ours, grad, mean, square, 0.05, step)
        optimiser.zero_grad()
        ((theirs - 1.0) ** 4).sum().backward()
        optimiser.step()
    assert torch.equal(ours, theirs)
    assert not torch.equal(ours, start)


def test_skull_stripped_mni_space_t1_is_accepted_and_recognised(tmp_path):
    image = load(stripped_mni_space_t1(tmp_path / "stripped_mni.nii.gz"))
    assert image.data.min() < 0
    reg = register_to_mni(image)
    assert reg.input_kind == "skull-stripped+mni-space"
    assert _mean_error_mm(reg.matrix, np.eye(4)) < 1.5
    assert reg.score > 0.9


def test_moved_stripped_brain_is_not_taken_for_mni_space():
    mni = load_mni()
    data, affine = resample_to_voxel_size(mni.t1.data, mni.affine, (2.0, 2.0, 2.0))
    motion = np.eye(4)
    motion[:3, :3] = rotation_matrix(np.deg2rad([0.0, 0.0, 15.0]))
    reg = register_to_mni(from_array(data, motion @ affine))
    assert reg.input_kind == "skull-stripped"


def test_user_brain_mask_drives_the_registration(phantom):
    head, truth = phantom
    image = from_array(head.images["t1w"], head.affine)
    reg = register_to_mni(image, brain_mask=head.mask)
    assert _mean_error_mm(reg.matrix, truth) < 1.5
    # The rough brain is the user's (resampled to 2 mm), not ours.
    mask = reg.brain_mask(head.affine, head.mask.shape)
    assert 2 * (mask & head.mask).sum() / (mask.sum() + head.mask.sum()) > 0.95
    with pytest.raises(RegistrationError, match="no brain-like"):
        register_to_mni(image, brain_mask=np.zeros(head.mask.shape, bool))
