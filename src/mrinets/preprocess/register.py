"""Affine registration of a T1-weighted head to the MNI152 template.

Notes
-----
A T1 with skull, scalp and neck does not match the skull-stripped template, so
the brain is first cut out morphologically on a 2 mm copy; a T1 that is already
skull-stripped (its support is brain-sized) is taken as it is, and a user's own
brain mask replaces both. The stripped brain
is then matched to the template T1 by maximising their Pearson correlation over
an affine map (Adam on trilinear samples, in torch), initialised by the two
brains' centres of mass and volumes.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from skimage.filters import threshold_otsu

from mrinets.data.templates import load_mni
from mrinets.errors import RegistrationError
from mrinets.io.nifti import Image
from mrinets.physics.sampling import affine_resample, resample_to_voxel_size
from mrinets.preprocess.mask import dilate, erode, fill_holes, largest_component

__all__ = ["MniRegistration", "register_to_mni", "input_kind", "INPUT_KINDS"]

log = logging.getLogger(__name__)

COARSE_MM = 2.0
# The MNI brain's centre of mass lies 73 mm below its top; scalp and skull add about 5-10 mm.
TOP_TO_CENTRE_MM = 78.0
# How far the brain may lie beyond the template placed by that guess.
PRIOR_MARGIN_MM = 15.0
# Wider than skull plus CSF on a blurred 2 mm grid, narrower than half the brainstem.
ERODE_MM = 8.0
MARGIN_MM = 6.0
CEREBRUM_Z_MM = -20.0
# A brain more than twice or less than half the template's volume is a failure, not a subject.
MAX_VOLUME_RATIO = 2.0
# (grid mm, blur mm, lowest MNI z used, full affine, Adam iterations, mask from the template)
STAGES = (
    (4.0, 2.5, CEREBRUM_Z_MM, False, 150, False),
    (3.0, 1.0, CEREBRUM_Z_MM, True, 150, False),
    (3.0, 1.0, None, True, 100, True),
)
# The score ignores the outer 6 mm of the brain, whose outline any blob can match. Measured:
# the real 1.75 mm T1 with skull 0.61, synthetic T1s 0.95, the moved template 0.99; a uniform
# sphere or ellipsoid 0.03, a synthetic T2w -0.84 (noise and flat volumes fail earlier: no brain).
SCORE_DEPTH_MM = 6.0
MIN_SCORE = 0.3
# Support of an image: above this share of its 99th percentile (2 mm, blurred), holes filled, largest piece.
# Measured: skull-stripped T1s 1.15 L (the MS patient) to 2.05 L (synthetic heads), the template 1.96 L; the real
# T1 with skull 3.5 L. A support under this share of the template brain's volume is a stripped brain.
SUPPORT_SHARE = 0.1
STRIPPED_MAX_RATIO = 1.4
# A stripped brain leaves out the CSF the template's brain holds, so it may be smaller than the template by more.
STRIPPED_MAX_VOLUME_RATIO = 2.5
# An MNI-space grid: axes along the world's, its field of view holding the template brain; and the registration
# found then moves the brain by little (rotation and shift at the centre; a rigid-only MNI alignment keeps its scale).
MNI_SPACE_MAX_DEGREES = 5.0
MNI_SPACE_MAX_SHIFT_MM = 10.0
INPUT_KINDS = ("head", "skull-stripped", "head+mni-space", "skull-stripped+mni-space")
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


@dataclass
class MniRegistration:
    """An affine map from subject world (RAS mm) to MNI152 world.

    Attributes
    ----------
    matrix : ndarray
        4x4, ``x_mni = matrix @ x_subject`` in homogeneous world coordinates.
    score : float
        Pearson correlation of the subject T1 (2 mm, blurred) with the MNI T1
        at 3 mm samples more than 6 mm inside the MNI brain.
    coarse_brain : ndarray of bool or None
        The rough skull-stripped brain that drove the first stages, on a 2 mm grid.
    coarse_affine : ndarray or None
        That grid's affine.
    input_kind : str
        What the input was (one of :data:`INPUT_KINDS`): a ``head`` (skull,
        scalp, maybe neck) or ``skull-stripped``, and ``+mni-space`` when its
        grid and the brain on it already lie in MNI space.
    """

    matrix: np.ndarray
    score: float
    coarse_brain: np.ndarray | None = None
    coarse_affine: np.ndarray | None = None
    input_kind: str = "head"

    def to_grid(self, data: np.ndarray, src_affine: np.ndarray, dst_affine: np.ndarray,
                dst_shape: Sequence[int], order: int = 1) -> np.ndarray:
        """Resample subject ``data`` onto an MNI-space grid of ``dst_affine`` and ``dst_shape``."""
        return affine_resample(data, self.matrix @ src_affine, dst_affine, dst_shape, order=order)

    def from_grid(self, data: np.ndarray, grid_affine: np.ndarray, subject_affine: np.ndarray,
                  subject_shape: Sequence[int], order: int = 1) -> np.ndarray:
        """Resample MNI-grid ``data`` back onto the subject grid."""
        return affine_resample(data, grid_affine, self.matrix @ subject_affine, subject_shape, order=order)

    def brain_mask(self, affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
        """The rough brain on a subject grid (made on demand: about 1 s on a 1 mm head, and no pipeline needs it)."""
        if self.coarse_brain is None:
            raise ValueError("this registration carries no brain mask")
        return affine_resample(self.coarse_brain.astype(np.float32), self.coarse_affine, affine, shape) > 0.5

    @property
    def scale_determinant(self) -> float:
        """``|det|`` of the linear part: subject volume = MNI volume / determinant."""
        return float(abs(np.linalg.det(self.matrix[:3, :3])))


def _coarse(image: Image) -> tuple[np.ndarray, np.ndarray]:
    """A blurred 2 mm copy of ``image`` and its affine."""
    sigma = 0.5 * COARSE_MM / image.voxel_size
    return resample_to_voxel_size(ndimage.gaussian_filter(np.nan_to_num(image.data), sigma), image.affine,
                                  (COARSE_MM,) * 3)


def _support(low: np.ndarray) -> np.ndarray:
    """What the image holds above :data:`SUPPORT_SHARE` of its bright level: a head, or a stripped brain."""
    level = np.percentile(low, 99)
    if not level > 0:
        return np.zeros(low.shape, bool)
    return fill_holes(largest_component(low > SUPPORT_SHARE * level))


def _is_stripped(support: np.ndarray) -> bool:
    return 0 < support.sum() * COARSE_MM**3 < STRIPPED_MAX_RATIO * _mni_brain()[1]


def _on_mni_grid(image: Image) -> bool:
    """The grid's axes lie along the world's and its field of view holds the template brain (2 mm to spare)."""
    linear = image.affine[:3, :3]
    if np.abs(linear - np.diag(np.diag(linear))).max() > 1e-3 * np.abs(linear).max():
        return False
    corners = np.array(np.meshgrid(*[[0, s - 1] for s in image.spatial_shape], indexing="ij")).reshape(3, -1)
    world = linear @ corners + image.affine[:3, 3:4]
    mni = load_mni()
    brain = np.argwhere(mni.mask.data > 0.5)
    lo, hi = (brain.min(axis=0), brain.max(axis=0))
    lo, hi = (np.array(v) @ mni.affine[:3, :3].T + mni.affine[:3, 3] for v in (lo, hi))
    return bool(np.all(world.min(axis=1) <= lo + 2.0) and np.all(world.max(axis=1) >= hi - 2.0))


def _moves_little(matrix: np.ndarray) -> bool:
    """Whether a subject-to-MNI map only scales and shears about the MNI brain's centre (an MNI-space input)."""
    linear = matrix[:3, :3]
    u, _, vt = np.linalg.svd(linear)
    rotation = u @ vt
    degrees = np.degrees(np.arccos(np.clip((np.trace(rotation) - 1) / 2, -1.0, 1.0)))
    centre = _mni_brain()[0]
    shift = np.linalg.norm(np.linalg.solve(linear, centre - matrix[:3, 3]) - centre)
    return degrees <= MNI_SPACE_MAX_DEGREES and shift <= MNI_SPACE_MAX_SHIFT_MM


def input_kind(image: Image) -> str:
    """``head`` or ``skull-stripped`` (from the support's volume), before any registration."""
    return "skull-stripped" if _is_stripped(_support(_coarse(image)[0])) else "head"


def _skull_strip(low: np.ndarray, aff: np.ndarray) -> np.ndarray:
    """A rough brain mask on the 2 mm copy ``low`` (affine ``aff``) of a head.

    Above Otsu's threshold, near where a template brain would sit below the top
    of the head (which keeps the face and neck out), an erosion cuts the brain
    from the scalp through the dark skull and a dilation within the threshold
    grows the largest piece back.
    """
    empty = np.zeros(low.shape, bool)
    if not np.ptp(low) > 0:
        return empty
    # Otsu splits background from head; the head's own dark class (CSF, skull, muscle) starts below it.
    threshold = threshold_otsu(low)
    head = fill_holes(largest_component(low > threshold))
    # World height of every voxel (the grid may be oblique); a few stray voxels do not make the top.
    z = sum(aff[2, i] * np.arange(n).reshape([-1 if a == i else 1 for a in range(3)])
            for i, n in enumerate(low.shape)) + aff[2, 3]
    top = np.percentile(z[head], 99.9)
    cranium = np.argwhere(head & (z > top - 60.0)).mean(axis=0) @ aff[:3, :3].T + aff[:3, 3]
    mni, shift = load_mni(), np.eye(4)
    shift[:3, 3] = _mni_brain()[0] - np.array([cranium[0], cranium[1], top - TOP_TO_CENTRE_MM])
    prior = affine_resample(mni.mask.data, mni.affine, shift @ aff, low.shape) > 0.5
    prior = ndimage.distance_transform_edt(~prior, sampling=COARSE_MM) <= PRIOR_MARGIN_MM
    foreground = (low > threshold) & prior
    core = erode(foreground, ERODE_MM, (COARSE_MM,) * 3)
    if not core.any():
        return empty
    grown = dilate(largest_component(core), ERODE_MM + COARSE_MM, (COARSE_MM,) * 3)
    return fill_holes(largest_component(grown & foreground))


@functools.lru_cache(maxsize=1)
def _mni_brain() -> tuple[np.ndarray, float]:
    """World centre of mass (mm) and volume (mm^3) of the MNI brain mask."""
    mni = load_mni()
    voxels = np.argwhere(mni.mask.data > 0.5)
    return voxels.mean(axis=0) @ mni.affine[:3, :3].T + mni.affine[:3, 3], len(voxels) * abs(np.linalg.det(mni.affine))


@functools.lru_cache(maxsize=4)
def _template_samples(step_mm: float, blur_mm: float, z_min: float | None) -> tuple[np.ndarray, ...]:
    """World points of the MNI brain plus a margin, the blurred T1 there, and which lie deep in the brain."""
    t1, aff, region, deep = _template_grid(step_mm, blur_mm)
    if z_min is not None:
        region = region & (np.arange(region.shape[2]) * aff[2, 2] + aff[2, 3] > z_min)[None, None, :]
    idx = np.argwhere(region)
    return (idx @ aff[:3, :3].T + aff[:3, 3]).astype(np.float32), t1[region], deep[region]


@functools.lru_cache(maxsize=2)
def _template_grid(step_mm: float, blur_mm: float) -> tuple[np.ndarray, ...]:
    """The blurred MNI T1 on a grid of ``step_mm``, its affine, the brain plus a margin, and the deep brain."""
    mni = load_mni()
    t1, aff = resample_to_voxel_size(ndimage.gaussian_filter(mni.t1.data, blur_mm), mni.affine, (step_mm,) * 3)
    brain = resample_to_voxel_size(mni.mask.data, mni.affine, (step_mm,) * 3)[0] > 0.5
    # The margin puts the brain's edge, the strongest feature of a skull-stripped image, into the metric.
    region = ndimage.distance_transform_edt(~brain, sampling=step_mm) <= MARGIN_MM
    deep = ndimage.distance_transform_edt(brain, sampling=step_mm) > SCORE_DEPTH_MM
    return t1, aff, region, deep


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a - a.mean(), b - b.mean()
    return (a * b).sum() / torch.sqrt((a * a).sum() * (b * b).sum() + 1e-12)


class _Affine(torch.nn.Module):
    """``x_subject = s R (I + E) (x_mni - c_mni) + c_subject + t``: a similarity while ``E`` stays 0.

    ``R = expm([w]_x)`` is the rotation by ``|w|`` radians about ``w``.
    """

    def __init__(self, c_mni: np.ndarray, c_subject: np.ndarray, scale: float) -> None:
        super().__init__()
        self.register_buffer("c_mni", torch.tensor(c_mni, dtype=torch.float32))
        self.register_buffer("c_subject", torch.tensor(c_subject, dtype=torch.float32))
        self.rotation = torch.nn.Parameter(torch.zeros(3))
        self.log_scale = torch.nn.Parameter(torch.tensor(float(np.log(scale))))
        self.shift = torch.nn.Parameter(torch.zeros(3))
        self.strain = torch.nn.Parameter(torch.zeros(3, 3))

    def linear(self) -> torch.Tensor:
        (x, y, z), zero = self.rotation, torch.zeros(())
        skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero]).reshape(3, 3)
        return torch.exp(self.log_scale) * torch.linalg.matrix_exp(skew) @ (torch.eye(3) + self.strain)

    def forward(self) -> torch.Tensor:
        """The 4x4 MNI-to-subject world map (differentiable)."""
        linear = self.linear()
        offset = self.c_subject + self.shift - linear @ self.c_mni
        return torch.cat([torch.cat([linear, offset[:, None]], dim=1), torch.eye(4)[3:]])

    def mni_to_subject(self) -> np.ndarray:
        with torch.no_grad():
            linear = self.linear().double().numpy()
            out = np.eye(4)
            out[:3, :3] = linear
            out[:3, 3] = (self.c_subject + self.shift).double().numpy() - linear @ self.c_mni.double().numpy()
        return out


def _world_to_grid(volume: torch.Tensor, world_to_voxel: torch.Tensor) -> torch.Tensor:
    """4x4 map from world mm to ``grid_sample`` coordinates of a (1, 1, X, Y, Z) volume: [-1, 1], last axis first."""
    size = torch.tensor(volume.shape[2:], dtype=torch.float32)
    scale = torch.diag(torch.cat([2.0 / (size - 1), torch.ones(1)]))
    scale[:3, 3] = -1.0
    return torch.eye(4)[[2, 1, 0, 3]] @ scale @ world_to_voxel


def _sample(volume: torch.Tensor, mni_to_grid: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Trilinear values of a (1, 1, X, Y, Z) volume at MNI world points (zero outside).

    One 3x3 map and a shift per point: composing the maps first keeps the per-point work (and its backward
    pass) to one product, which is most of a registration's time.
    """
    grid = points @ mni_to_grid[:3, :3].T + mni_to_grid[:3, 3]
    return torch.nn.functional.grid_sample(volume, grid[None, None, None], align_corners=True).reshape(-1)


def _fit(model: _Affine, volume: torch.Tensor, world_to_voxel: torch.Tensor, points: torch.Tensor,
         values: torch.Tensor, *, affine: bool, iterations: int) -> float:
    """Maximise the correlation of the sampled subject with the template values (Adam)."""
    groups = [(model.rotation, 0.01), (model.log_scale, 0.005), (model.shift, 1.0)]
    if affine:
        groups.append((model.strain, 0.005))
    params = [p for p, _ in groups]
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
    to_grid = _world_to_grid(volume, world_to_voxel)
    threads = torch.get_num_threads()
    # The tensors are small: on a busy machine a thread pool costs far more in contention than it gains.
    torch.set_num_threads(1)
    try:
        for step in range(1, iterations + 1):
            loss = -_pearson(_sample(volume, to_grid @ model(), points), values)
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for (param, lr), (mean, square), grad in zip(groups, moments, grads):
                    _adam_step(param, grad, mean, square, lr, step)
    finally:
        torch.set_num_threads(threads)
    return -float(loss.detach())


def _adam_step(param: torch.Tensor, grad: torch.Tensor, mean: torch.Tensor, square: torch.Tensor, lr: float,
               step: int) -> None:
    """One step of torch's single-tensor Adam (default betas and eps), in the same operations.

    ``torch.optim`` imports ``torch._dynamo`` on first use: 1 to 2 s per process, where the fits take 3 to 4 s.
    """
    mean.lerp_(grad, 1 - ADAM_BETAS[0])
    square.mul_(ADAM_BETAS[1]).addcmul_(grad, grad, value=1 - ADAM_BETAS[1])
    denom = (square.sqrt() / (1 - ADAM_BETAS[1] ** step) ** 0.5).add_(ADAM_EPS)
    param.addcdiv_(mean, denom, value=-lr / (1 - ADAM_BETAS[0] ** step))


def register_to_mni(image: Image, *, brain_mask: np.ndarray | None = None, min_score: float = MIN_SCORE,
                    quiet: bool = True) -> MniRegistration:
    """Affine registration of a T1-weighted image (with or without skull) to MNI152 2009a.

    Parameters
    ----------
    image : Image
        3D T1-weighted image, RAS+ (as :func:`mrinets.io.load` returns it):
        a head, with or without neck, or a skull-stripped brain (values at
        its edge may be slightly negative), in scanner or MNI space.
    brain_mask : ndarray of bool, optional
        The user's own brain mask on ``image``'s grid, used instead of ours.
    min_score : float
        Lowest accepted :attr:`MniRegistration.score`.
    quiet : bool
        When False, each stage's correlation is logged at INFO level.

    Returns
    -------
    MniRegistration

    Raises
    ------
    RegistrationError
        When no brain is found, or the result scores below ``min_score`` or
        implies an implausible brain size.

    Notes
    -----
    The metric is the Pearson correlation of the skull-stripped subject, sampled
    through the affine, with the blurred template T1 over the template brain
    plus a 6 mm margin. The first two stages use only the template above
    z = -20 mm (the cerebrum), where the stripped subject is cleanest; the last
    one masks the subject with the template brain mapped back onto it and uses
    the whole brain. The score is the same correlation of the unmasked subject
    more than 6 mm inside the template brain, so that a mask's outline cannot
    make it.
    """
    if image.data.ndim != 3:
        raise ValueError(f"image must be 3D, got shape {image.shape}")
    where = image.path if image.path is not None else "image"
    low, low_affine = _coarse(image)
    stripped = _is_stripped(_support(low))
    mni = load_mni()
    mni_centre, mni_volume = _mni_brain()
    if brain_mask is not None:
        rough = affine_resample(np.asarray(brain_mask, np.float32), image.affine, low_affine, low.shape) > 0.5
    else:
        rough = _skull_strip(low, low_affine)
        if stripped and rough.sum() * COARSE_MM**3 < mni_volume / MAX_VOLUME_RATIO:
            # Nothing to strip: on a small stripped brain Otsu's threshold and the erosion only cut CSF and grey
            # matter away, below a brain's size. Where they did not, the registration stays what it was.
            rough = _support(low)
    max_ratio = STRIPPED_MAX_VOLUME_RATIO if stripped or brain_mask is not None else MAX_VOLUME_RATIO
    volume_ratio = rough.sum() * COARSE_MM**3 / mni_volume
    if volume_ratio < 1 / max_ratio:
        raise RegistrationError(where, "no brain-like foreground found for registration to MNI")
    centre = np.argwhere(rough).mean(axis=0) @ low_affine[:3, :3].T + low_affine[:3, 3]
    model = _Affine(mni_centre, centre, float(np.cbrt(volume_ratio)))
    world_to_voxel = torch.tensor(np.linalg.inv(low_affine), dtype=torch.float32)
    low = low / np.percentile(low[rough], 95)
    mask = ndimage.binary_dilation(rough)
    for step_mm, blur_mm, z_min, affine, iterations, remask in STAGES:
        if remask:
            mni_to_low = np.linalg.solve(model.mni_to_subject(), low_affine)
            mask = ndimage.binary_dilation(affine_resample(mni.mask.data, mni.affine, mni_to_low, low.shape) > 0.5,
                                           iterations=2)
        points, values, _ = (torch.from_numpy(a) for a in _template_samples(step_mm, blur_mm, z_min))
        volume = torch.from_numpy(ndimage.gaussian_filter(low * mask, blur_mm / COARSE_MM))[None, None]
        fit = _fit(model, volume, world_to_voxel, points, values, affine=affine, iterations=iterations)
        if not quiet:
            log.info("MNI registration stage (%.0f mm, %s): correlation %.3f",
                     step_mm, "affine" if affine else "similarity", fit)
    points, values, deep = (torch.from_numpy(a) for a in _template_samples(step_mm, blur_mm, z_min))
    volume = torch.from_numpy(ndimage.gaussian_filter(low, blur_mm / COARSE_MM))[None, None]
    with torch.no_grad():
        score = float(_pearson(_sample(volume, _world_to_grid(volume, world_to_voxel) @ model(), points[deep]),
                               values[deep]))
    matrix = np.linalg.inv(model.mni_to_subject())
    kind = "skull-stripped" if stripped else "head"
    if _on_mni_grid(image) and _moves_little(matrix):
        kind += "+mni-space"
    registration = MniRegistration(matrix=matrix, score=score, coarse_brain=rough, coarse_affine=low_affine,
                                   input_kind=kind)
    if not quiet:
        log.info("MNI registration (%s): score %.3f, scale determinant %.2f", kind, score,
                 registration.scale_determinant)
    if score < min_score:
        raise RegistrationError(where, f"registration to MNI failed: correlation {score:.2f} is below {min_score:.2f}")
    if not 1 / MAX_VOLUME_RATIO < registration.scale_determinant < max_ratio:
        raise RegistrationError(where, f"registration to MNI implies an implausible brain size (volume ratio "
                                       f"{1 / registration.scale_determinant:.2f} of the template)")
    return registration
