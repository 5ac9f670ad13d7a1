"""Losses shared by the pipelines' training steps.

The super-resolution loss of deep-T1-WMH (Thyreau et al. 2022) teaches a
network that predicts on a fine 3D grid from labels drawn on thick 2D slices:
the fine prediction is carried through the acquisition of the labelled image
(its pose relative to the prediction grid and its slice profile) and only
then compared with the label, so the label says nothing about where inside a
thick slice a lesion lies and the image is left to decide it.

The image-translation losses (low-field pipeline) are those of pix2pix and
CycleGAN: a least-squares adversarial loss (Mao et al. 2017), L1, and the
structural loss ``1 - SSIM`` that LoHiResGAN adds (Islam et al. 2023).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["acquire", "soft_dice_loss", "segmentation_loss", "super_resolution_loss", "weighted_ce_dice_loss",
           "distillation_loss", "adversarial_loss", "ssim_2d", "ssim_loss", "dipole_kernel_torch",
           "dipole_convolve", "model_based_qsm_loss"]


def acquire(prob: torch.Tensor, grid: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Slice-profile average of ``prob`` at the sample points of thick-slice voxels.

    Parameters
    ----------
    prob : Tensor (N, 1, X, Y, Z)
        Fine-grid prediction.
    grid : Tensor (N, A, B, C * K, 3)
        For each of the A x B x C low-resolution voxels, K points along its
        slice normal, in ``grid_sample`` coordinates of ``prob`` (last axis
        ordered z, y, x; ``align_corners=True``).
    weights : Tensor (N, K)
        Slice profile at the K points, summing to 1.

    Returns
    -------
    Tensor (N, A, B, C)
    """
    n, a, b, ck, _ = grid.shape
    k = weights.shape[-1]
    samples = F.grid_sample(prob, grid, mode="bilinear", padding_mode="border", align_corners=True)
    samples = samples.reshape(n, a, b, ck // k, k)
    return (samples * weights[:, None, None, None, :]).sum(-1)


def soft_dice_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                   eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice over the whole batch (one overlap, so empty patches do not dominate)."""
    if mask is not None:
        pred, target = pred * mask, target * mask
    overlap = (pred * target).sum()
    return 1.0 - (2.0 * overlap + eps) / (pred.sum() + target.sum() + eps)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Voxel-wise BCE + soft Dice on the prediction grid, optional per-sample weights (N,)."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).mean(1)
    if weight is not None:
        bce = bce * weight
    return bce.mean() + soft_dice_loss(torch.sigmoid(logits), target)


def super_resolution_loss(
    logits: torch.Tensor,
    grid: torch.Tensor,
    weights: torch.Tensor,
    label: torch.Tensor,
    valid: torch.Tensor,
    *,
    threshold: float | torch.Tensor | None = 0.5,
    temperature: float = 0.1,
    sample_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Compare a fine prediction with a thick-slice label through the label's acquisition.

    Parameters
    ----------
    logits : Tensor (N, 1, X, Y, Z)
    grid, weights
        As in :func:`acquire`.
    label : Tensor (N, A, B, C)
        Binary thick-slice label.
    valid : Tensor (N, A, B, C)
        1 for the thick voxels to score (those centred inside the patch).
    threshold : float, Tensor (N,) or None
        A rater marks a thick voxel when the lesion fills more than this
        share of its slice profile (one value, or one per sample: each
        label's own rater); the loss then scores
        ``(acquired - threshold) / temperature`` as a logit, which leaves the
        network free to shape the lesion inside the slice as the image
        shows it. None compares the acquired average itself with the label.
    sample_weight : Tensor (N,), optional
        Per-sample trust (the two-step procedure down-weights poor labels).
    """
    acquired = acquire(torch.sigmoid(logits), grid, weights)
    if threshold is None:
        score = torch.logit(acquired.clamp(1e-4, 1 - 1e-4))
    else:
        if torch.is_tensor(threshold):
            threshold = threshold.reshape(-1, *([1] * (acquired.ndim - 1)))
        score = (acquired - threshold) / temperature
    bce = F.binary_cross_entropy_with_logits(score, label, reduction="none") * valid
    per_sample = bce.flatten(1).sum(1) / valid.flatten(1).sum(1).clamp(min=1.0)
    if sample_weight is not None:
        per_sample = per_sample * sample_weight
    return per_sample.mean() + soft_dice_loss(torch.sigmoid(score), label, valid)


def weighted_ce_dice_loss(logits: torch.Tensor, target: torch.Tensor, class_weights: torch.Tensor | None = None,
                          mask: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted cross-entropy + soft Dice of the foreground class, for two-class voxel logits.

    Parameters
    ----------
    logits : Tensor (N, 2, X, Y, Z)
    target : Tensor (N, X, Y, Z) or (N, 1, X, Y, Z), 0/1
    class_weights : Tensor (2,), optional
        Weights of background and foreground in the cross-entropy (rare
        microbleeds need a large foreground weight).
    mask : Tensor like ``target``, optional
        Voxels scored (1) and ignored (0).
    """
    if logits.ndim != 5 or logits.shape[1] != 2:
        raise ValueError(f"logits must be (N, 2, X, Y, Z), got {tuple(logits.shape)}")
    target = target.reshape(logits.shape[0], *logits.shape[2:])
    ce = F.cross_entropy(logits, target.long(), weight=class_weights, reduction="none")
    prob = torch.softmax(logits, dim=1)[:, 1]
    if mask is not None:
        mask = mask.reshape(target.shape).float()
        ce = (ce * mask).sum() / mask.sum().clamp(min=1.0)
        return ce + soft_dice_loss(prob, target.float(), mask)
    return ce.mean() + soft_dice_loss(prob, target.float())


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor, *,
                      temperature: float = 4.0, weight: float = 0.4,
                      class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Response-based knowledge distillation: softened teacher outputs beside the true labels.

    Notes
    -----
    .. math:: L = (1 - w)\\, CE(s, y) + w\\, T^2\\, KL(\\sigma(t / T) \\,\\|\\, \\sigma(s / T))

    with ``T`` the temperature and ``w`` the weight of the teacher's term
    (Sundaresan et al. 2023 publish T = 4, w = 0.4). The ``T^2`` keeps the
    gradients of the soft term on the scale of the hard one (Hinton et al.).

    References
    ----------
    Hinton G, Vinyals O, Dean J. Distilling the knowledge in a neural network.
    arXiv:1503.02531, 2015.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if not 0 <= weight <= 1:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    hard = F.cross_entropy(student_logits, target.long().reshape(-1), weight=class_weights)
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                    F.softmax(teacher_logits.detach() / temperature, dim=1), reduction="batchmean")
    return (1.0 - weight) * hard + weight * temperature**2 * soft
def adversarial_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss: patch logits pulled to 1 (``real``) or 0."""
    return F.mse_loss(logits, torch.full_like(logits, 1.0 if real else 0.0))


def ssim_2d(pred: torch.Tensor, target: torch.Tensor, *, data_range: float = 2.0, win_size: int = 7) -> torch.Tensor:
    """Mean SSIM of (N, C, H, W) images, uniform window and sample covariance as scikit-image, borders cropped.

    ``data_range`` 2 suits images in [-1, 1].
    """
    channels = pred.shape[1]
    kernel = torch.full((channels, 1, win_size, win_size), 1.0 / win_size**2, dtype=pred.dtype, device=pred.device)

    def mean(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, kernel, groups=channels)

    n = win_size**2
    cov_norm = n / (n - 1)
    ux, uy = mean(pred), mean(target)
    vx = cov_norm * (mean(pred * pred) - ux * ux)
    vy = cov_norm * (mean(target * target) - uy * uy)
    vxy = cov_norm * (mean(pred * target) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    smap = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return smap.mean()


def ssim_loss(pred: torch.Tensor, target: torch.Tensor, *, data_range: float = 2.0) -> torch.Tensor:
    """``1 - SSIM``: the structural term of LoHiResGAN's generator loss."""
    return 1.0 - ssim_2d(pred, target, data_range=data_range)
def dipole_kernel_torch(shape, voxel_size, b0_dir, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Unit dipole kernel on the full FFT grid of ``shape``, as :func:`mrinets.physics.dipole.dipole_kernel`.

    The same convention (``D(0) = 0``; ``(k.b)^2`` averaged over both signs of
    a Nyquist component so the kernel stays even), built in torch so that a
    training step can use each sample's own B0 direction and voxel size.
    """
    b = torch.as_tensor(b0_dir, dtype=torch.float64).reshape(3)
    b = b / torch.linalg.norm(b)
    freqs = []
    for axis, (n, h) in enumerate(zip(shape, voxel_size)):
        view = [1, 1, 1]
        view[axis] = int(n)
        freqs.append(torch.fft.fftfreq(int(n), d=float(h), dtype=torch.float64).reshape(view))
    kb = torch.zeros((), dtype=torch.float64)
    aliased = torch.zeros((), dtype=torch.float64)
    for k, n, bi in zip(freqs, shape, b):
        nyq = torch.zeros(k.shape, dtype=torch.bool)
        if int(n) % 2 == 0:
            nyq.reshape(-1)[int(n) // 2] = True
        kb = kb + torch.where(nyq, 0.0, k * bi)
        aliased = aliased + torch.where(nyq, (k * bi) ** 2, 0.0)
    k2 = freqs[0] ** 2 + freqs[1] ** 2 + freqs[2] ** 2
    k2 = torch.where(k2 == 0, 1.0, k2)
    kernel = 1.0 / 3.0 - (kb * kb + aliased) / k2
    kernel[0, 0, 0] = 0.0
    return kernel.to(device=device, dtype=dtype)


def dipole_convolve(chi: torch.Tensor, kernel: torch.Tensor, pad: Sequence[int]) -> torch.Tensor:
    """Field of ``chi`` (N, 1, X, Y, Z) with per-sample kernels (N, 1, X+2p, Y+2p, Z+2p) on a zero-padded grid.

    Padding by ``pad`` voxels on each side turns the FFT's periodic
    convolution into a linear one for sources ``pad`` voxels apart, so a
    patch's sources do not wrap onto its opposite side.
    """
    px, py, pz = (int(p) for p in pad)
    padded = F.pad(chi, (pz, pz, py, py, px, px))
    field = torch.fft.ifftn(torch.fft.fftn(padded, dim=(-3, -2, -1)) * kernel, dim=(-3, -2, -1)).real
    return field[..., px: px + chi.shape[-3], py: py + chi.shape[-2], pz: pz + chi.shape[-1]]


def model_based_qsm_loss(chi: torch.Tensor, phase: torch.Tensor, kernel: torch.Tensor, weight: torch.Tensor,
                         pad: Sequence[int], phase_scale: torch.Tensor | float) -> torch.Tensor:
    """``|| W m (exp(i s D*chi) - exp(i s y)) ||_1`` per voxel of the weights, averaged over the batch.

    Parameters
    ----------
    chi : Tensor (N, 1, X, Y, Z)
        Susceptibility in ppm (zero outside the mask).
    phase : Tensor (N, 1, X, Y, Z)
        Local field in ppm; ``phase_scale * phase`` is the phase in radians.
    kernel : Tensor (N, 1, X+2p, Y+2p, Z+2p)
        Dipole kernels (:func:`dipole_kernel_torch`) of each sample's B0 direction and voxel size.
    weight : Tensor (N, 1, X, Y, Z)
        Mask times magnitude weighting ``W m`` (0 where a voxel must not count).
    pad : sequence of 3 int
        Zero padding of :func:`dipole_convolve`.
    phase_scale : float or Tensor (N,)
        Radians per ppm, ``gamma * B0 * TE``: compares the fields as the
        complex signals of that echo, so noise in the phase enters as it does
        in the GRE data and phase wraps cost nothing.
    """
    s = torch.as_tensor(phase_scale, dtype=chi.dtype, device=chi.device).reshape(-1, *([1] * (chi.ndim - 1)))
    model_phase = s * dipole_convolve(chi, kernel, pad)
    diff = torch.polar(torch.ones_like(model_phase), model_phase) - torch.polar(torch.ones_like(phase), s * phase)
    return (weight * diff.abs()).flatten(1).sum(1).div(weight.flatten(1).sum(1).clamp(min=1.0)).mean()
