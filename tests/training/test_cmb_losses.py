"""Distillation loss and weighted cross-entropy + Dice against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mrinets.training.losses import distillation_loss, weighted_ce_dice_loss


def test_distillation_without_teacher_weight_is_cross_entropy():
    s = torch.tensor([[2.0, -1.0], [0.5, 0.3]])
    t = torch.tensor([[-3.0, 3.0], [1.0, 0.0]])
    y = torch.tensor([0, 1])
    assert float(distillation_loss(s, t, y, weight=0.0)) == pytest.approx(float(F.cross_entropy(s, y)))


def test_soft_term_vanishes_when_student_matches_teacher():
    s = torch.tensor([[1.0, 2.0]])
    y = torch.tensor([1])
    loss = distillation_loss(s, s.clone(), y, temperature=4.0, weight=0.4)
    assert float(loss) == pytest.approx(0.6 * float(F.cross_entropy(s, y)), rel=1e-5)


def test_soft_term_hand_computed():
    s, t, y = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 4.0 * math.log(3.0)]]), torch.tensor([0])
    # Teacher softened by T = 4: (1/4, 3/4); student: (1/2, 1/2).
    kl = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    expected = 0.6 * math.log(2.0) + 0.4 * 16.0 * kl
    assert float(distillation_loss(s, t, y, temperature=4.0, weight=0.4)) == pytest.approx(expected, rel=1e-5)


def test_distillation_pulls_student_towards_teacher():
    s = torch.zeros(1, 2, requires_grad=True)
    t = torch.tensor([[0.0, 5.0]])
    distillation_loss(s, t, torch.tensor([0]), weight=1.0).backward()
    assert s.grad[0, 1] < 0 < s.grad[0, 0]  # gradient descent raises class 1, as the teacher says


def test_distillation_checks_arguments():
    s = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(s, s, torch.tensor([0]), temperature=0.0)
    with pytest.raises(ValueError, match="weight"):
        distillation_loss(s, s, torch.tensor([0]), weight=1.5)


def test_weighted_ce_dice_rewards_the_right_answer_and_weights_foreground():
    target = torch.zeros(1, 1, 4, 4, 4)
    target[..., 1:3, 1:3, 1:3] = 1
    good = torch.cat([(1 - target) * 10 - 5, target * 10 - 5], dim=1)
    bad = -good
    assert float(weighted_ce_dice_loss(good, target)) < 0.05
    assert float(weighted_ce_dice_loss(bad, target)) > 1.0
    # All voxels called background: a foreground weight of 10 makes the missed lesion cost more.
    background = torch.cat([torch.full_like(target, 2.0), torch.full_like(target, -2.0)], dim=1)
    plain = weighted_ce_dice_loss(background, target)
    weighted = weighted_ce_dice_loss(background, target, torch.tensor([1.0, 10.0]))
    assert float(weighted) > float(plain)


def test_weighted_ce_dice_checks_shape():
    with pytest.raises(ValueError, match="logits"):
        weighted_ce_dice_loss(torch.zeros(1, 3, 2, 2, 2), torch.zeros(1, 2, 2, 2))
