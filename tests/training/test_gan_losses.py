"""Losses of the translation models: SSIM term against scikit-image, least-squares adversarial loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from mrinets.training.losses import adversarial_loss, ssim_2d, ssim_loss


def test_ssim_2d_matches_skimage_and_has_gradient():
    rng = np.random.default_rng(0)
    a = np.clip(rng.normal(0, 0.5, (40, 36)), -1, 1)
    b = np.clip(a + rng.normal(0, 0.2, a.shape), -1, 1)
    expected = structural_similarity(b, a, data_range=2.0)
    pred = torch.tensor(b[None, None], requires_grad=True)
    value = ssim_2d(pred, torch.tensor(a[None, None]), data_range=2.0).detach()
    assert float(value) == pytest.approx(expected, rel=1e-6)
    ssim_loss(pred, torch.tensor(a[None, None])).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_adversarial_loss_targets():
    logits = torch.tensor([1.0, 1.0])
    assert float(adversarial_loss(logits, True)) == 0.0
    assert float(adversarial_loss(logits, False)) == 1.0
