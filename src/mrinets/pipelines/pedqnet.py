"""PedQ-NET: unsupervised deep dipole inversion (local field -> chi) with an optional nuclei segmenter.

A 3D U-Net of the nnU-Net family (MONAI ``DynUNet``) maps the local field, with
its TKD inversion as a second channel, to susceptibility (TKD plus a learnt
correction: see :class:`~mrinets.nets.pedqnet.FieldToChiNet` for why). It
never sees a true chi: it is trained by the model-based
loss, which carries its chi back through the dipole forward model and
compares the result with the measured field as complex signals,

.. math:: L_{model} = \\lVert W m (e^{i s\\, d * \\chi} - e^{i s\\, y}) \\rVert_1,

``y`` the local field (ppm), ``s = gamma B0 TE`` (rad/ppm; 3 T and 20 ms
unless told, see :class:`PedQNetTrainConfig`), ``d`` the dipole kernel of each
sample's own B0 direction and voxel size, ``m`` the mask and ``W`` the
magnitude normalised to 1. Because the loss needs no ground truth the same
loss adapts the network to one new scan at prediction time
(``finetune_steps``). A small UNETR on the network's chi predicts caudate,
putamen, globus pallidus and thalamus, left and right; trained jointly,
``L_total = L_model + lambda (soft Dice + CE)``, it asks the reconstruction to
keep the nuclei's edges.

Patches and the dipole convolution: the field inside a patch is also made by
sources outside it, which the patch cannot see. The patch's chi is therefore
convolved on a grid zero-padded by ``pad`` voxels (a linear, not periodic,
convolution) and the loss is scored only ``margin`` voxels inside the patch,
where the 1/r^3 dipole field of the unseen sources is weakest. Whole volumes
are reconstructed by sliding windows with Gaussian blending.

References
----------
Jung W, et al. PedQ-NET (pediatric QSM by unsupervised deep learning, model-based loss with a
jointly trained segmentation network).
Isensee F, et al. nnU-Net. Nat Methods 2021;18:203. Hatamizadeh A, et al. UNETR. WACV 2022.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mrinets.errors import ArgumentError, ConfigError
from mrinets.nets.pedqnet import FieldToChiNet, NucleiNet
from mrinets.physics.echoes import GAMMA
from mrinets.training.engine import read_weights, resolve_device, seed_everything
from mrinets.training.losses import dipole_kernel_torch, model_based_qsm_loss, soft_dice_loss

__all__ = ["DEFAULT_WEIGHTS", "NUCLEI_CLASSES", "PedQNetModel", "PedQNetTrainConfig", "TrainingSubject",
           "geometry_channels", "invert", "load_model", "make_subjects", "phase_scale", "save_weights", "train"]

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "qsm_pedqnet.pt"
# Segmenter classes: labels_lr of the QSM phantom 1..8 (caudate, putamen, pallidus, thalamus; right then left).
NUCLEI_CLASSES = ("background", "caudate_R", "caudate_L", "putamen_R", "putamen_L", "globus_pallidus_R",
                  "globus_pallidus_L", "thalamus_R", "thalamus_L")
DEFAULT_TE = 0.02


def phase_scale(b0: float, te: float = DEFAULT_TE) -> float:
    """Radians of phase per ppm of field at field strength ``b0`` (T) and echo time ``te`` (s)."""
    return float(GAMMA * b0 * 1e-6 * te)


def geometry_channels(b0_vox: np.ndarray, shape) -> np.ndarray:
    """The six distinct entries of ``b b^T`` as constant channels (6, X, Y, Z)."""
    b = np.asarray(b0_vox, np.float64)
    b = b / np.linalg.norm(b)
    values = [b[0] * b[0], b[1] * b[1], b[2] * b[2], b[0] * b[1], b[0] * b[2], b[1] * b[2]]
    return np.broadcast_to(np.asarray(values, np.float32)[:, None, None, None], (6, *shape))


@dataclass
class PedQNetTrainConfig:
    """Everything that decides the trained weights (stored with them and in the model card)."""

    phantoms: int = 8
    seed_start: int = 5000
    directions_per_phantom: int = 3
    max_tilt_deg: float = 35.0
    voxel_sizes: tuple[float, ...] = (1.2, 1.5, 1.8)
    anisotropic_share: float = 0.35
    iron_range: tuple[float, float] = (0.2, 1.3)
    low_iron_share: float = 0.4
    snr_range: tuple[float, float] = (15.0, 200.0)
    filters: tuple[int, ...] = (8, 16, 32, 64)
    patch: int = 48
    pad: int = 24
    margin: int = 6
    steps: int = 1500
    batch_size: int = 2
    lr: float = 2e-3
    segment: bool = True
    seg_weight: float = 0.1
    seg_hidden: int = 32
    seg_feature_size: int = 4
    b0: float = 3.0
    te: float = DEFAULT_TE
    nucleus_share: float = 0.6
    seed: int = 0
    max_minutes: float | None = None
    device: str = "auto"
    quiet: bool = False
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.filters = tuple(int(f) for f in self.filters)
        self.voxel_sizes = tuple(float(v) for v in self.voxel_sizes)
        for name in ("phantoms", "steps", "batch_size", "directions_per_phantom", "seg_hidden", "seg_feature_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(name, f"must be at least 1, got {getattr(self, name)}")
        if self.patch % 16 or self.patch < 16:
            raise ConfigError("patch", f"must be a positive multiple of 16 (UNETR tokens), got {self.patch}")
        if not 0 <= self.margin < self.patch // 2 - 2:
            raise ConfigError("margin", f"must be 0 to {self.patch // 2 - 3} voxels, got {self.margin}")
        if self.pad < 0:
            raise ConfigError("pad", f"must not be negative, got {self.pad}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError("lr", f"must be positive, got {self.lr}")
        if not self.seg_weight >= 0:
            raise ConfigError("seg_weight", f"must not be negative, got {self.seg_weight}")
        if any(not v > 0 for v in self.voxel_sizes):
            raise ConfigError("voxel_sizes", f"must be positive mm, got {self.voxel_sizes}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ConfigError("max_minutes", f"must be positive, got {self.max_minutes}")


@dataclass
class TrainingSubject:
    """One phantom: chi truth (for checks only), mask, weights, nuclei labels, and for several B0 directions
    the noisy local field and its TKD inversion (on the whole volume, as at prediction time)."""

    chi: np.ndarray
    mask: np.ndarray
    weight: np.ndarray
    labels: np.ndarray
    voxel_size: tuple[float, float, float]
    b0_dirs: list[np.ndarray]
    fields: list[np.ndarray]
    tkds: list[np.ndarray]
    meta: dict


def _random_direction(rng: np.random.Generator, max_tilt_deg: float) -> np.ndarray:
    """A B0 direction tilted up to ``max_tilt_deg`` from the z axis, in any azimuth."""
    tilt = np.deg2rad(rng.uniform(0, max_tilt_deg))
    az = rng.uniform(0, 2 * np.pi)
    return np.array([np.sin(tilt) * np.cos(az), np.sin(tilt) * np.sin(az), np.cos(tilt)])


def _normalised_magnitude(mag: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Magnitude / its 99th percentile in the mask, clipped to [0, 1], zero outside."""
    m = mag if mag.ndim == 3 else np.sqrt((mag**2).mean(-1))
    top = float(np.percentile(m[mask], 99)) if mask.any() else 1.0
    return np.where(mask, np.clip(m / max(top, 1e-12), 0, 1), 0).astype(np.float32)


def make_subject(seed: int, config: PedQNetTrainConfig) -> TrainingSubject:
    """A phantom with random voxel size, iron, myelin and SNR, and its local fields for random B0 directions.

    A share of the subjects is resampled to thicker slices (anisotropic
    voxels). Only the brain's own chi makes the local field (the
    background field is what V-SHARP removes before this network).
    """
    from scipy import ndimage

    from mrinets.data.phantoms.qsm import make_qsm_head
    from mrinets.physics.dipole import forward_field
    from mrinets.physics.inversion import tkd

    rng = np.random.default_rng(seed)
    vs = float(rng.choice(config.voxel_sizes))
    low = rng.random() < config.low_iron_share
    iron = rng.uniform(config.iron_range[0], 0.45) if low else rng.uniform(0.6, config.iron_range[1])
    myelin = rng.uniform(0.0, 0.5) if low else rng.uniform(0.7, 1.2)
    snr = float(np.exp(rng.uniform(*np.log(config.snr_range))))
    p = make_qsm_head(seed, voxel_size=vs, iron_scale=iron, myelin_scale=myelin, snr=snr)
    box = tuple(slice(max(int(i.min()) - 4, 0), int(i.max()) + 5) for i in np.nonzero(p.mask))
    chi, mask, labels = p.chi[box], p.mask[box], p.labels_lr[box]
    mag = p.magnitude[box][..., 0]
    voxel = [vs, vs, vs]
    if rng.random() < config.anisotropic_share:
        factor = float(rng.uniform(1.3, 2.0))
        zoom = (1.0, 1.0, 1.0 / factor)
        chi = ndimage.zoom(chi, zoom, order=1)
        mag = ndimage.zoom(mag, zoom, order=1)
        mask = ndimage.zoom(mask.astype(np.float32), zoom, order=1) > 0.5
        labels = ndimage.zoom(labels, zoom, order=0)
        voxel[2] = vs * p.chi[box].shape[2] / chi.shape[2]
    labels = np.where(labels <= 8, labels, 0).astype(np.uint8)
    chi = np.where(mask, chi, 0).astype(np.float32)
    weight = _normalised_magnitude(mag, mask)
    dirs, fields, tkds = [], [], []
    for _ in range(config.directions_per_phantom):
        b = _random_direction(rng, config.max_tilt_deg)
        # Field noise of a phase whose noise is 1 / (SNR * magnitude) radians.
        noise = rng.standard_normal(mask.shape) / (snr * np.maximum(weight, 0.1) * phase_scale(config.b0, config.te))
        f = np.where(mask, forward_field(chi, voxel_size=voxel, b0_dir=b) + noise, 0).astype(np.float32)
        dirs.append(b)
        fields.append(f)
        tkds.append(tkd(f, mask, voxel_size=voxel, b0_dir=b))
    meta = {"seed": seed, "voxel_size_mm": voxel, "iron_scale": iron, "myelin_scale": myelin, "snr": snr,
            "low_iron": bool(low)}
    return TrainingSubject(chi, mask, weight, labels, tuple(voxel), dirs, fields, tkds, meta)


def make_subjects(config: PedQNetTrainConfig) -> list[TrainingSubject]:
    from rich.progress import track

    seeds = range(config.seed_start, config.seed_start + config.phantoms)
    return [make_subject(s, config) for s in track(seeds, "phantoms", disable=config.quiet)]


@dataclass
class PedQNetModel:
    """The trained networks and the config that built them."""

    recon: FieldToChiNet
    seg: NucleiNet | None
    config: dict
    card: dict = field(default_factory=dict)

    @property
    def patch(self) -> int:
        return int(self.config["patch"])


def build_networks(config: PedQNetTrainConfig) -> tuple[FieldToChiNet, NucleiNet | None]:
    recon = FieldToChiNet(filters=config.filters)
    seg = NucleiNet(n_classes=len(NUCLEI_CLASSES), img_size=config.patch, hidden_size=config.seg_hidden,
                    mlp_dim=2 * config.seg_hidden, feature_size=config.seg_feature_size) if config.segment else None
    return recon, seg


def _crop_box(shape, centre, size) -> tuple[slice, ...]:
    lo = [int(np.clip(c - size // 2, 0, max(n - size, 0))) for c, n in zip(centre, shape)]
    return tuple(slice(a, a + size) for a in lo)


def _pad_to(volume: np.ndarray, size: int) -> np.ndarray:
    pads = [(0, max(size - n, 0)) for n in volume.shape[-3:]]
    if not any(p for _, p in pads):
        return volume
    return np.pad(volume, [(0, 0)] * (volume.ndim - 3) + pads)


class _Sampler:
    """Random training patches: noisy field + geometry channels, weights, labels, kernel."""

    def __init__(self, subjects: list[TrainingSubject], config: PedQNetTrainConfig, rng: np.random.Generator):
        self.subjects, self.config, self.rng = subjects, config, rng
        self.scale = phase_scale(config.b0, config.te)
        self.inner = np.zeros((config.patch,) * 3, np.float32)
        m = config.margin
        self.inner[m: config.patch - m, m: config.patch - m, m: config.patch - m] = 1.0
        self._kernels: dict = {}

    def kernel(self, voxel_size, b0) -> torch.Tensor:
        key = (tuple(np.round(voxel_size, 4)), tuple(np.round(b0, 6)))
        if key not in self._kernels:
            grid = (self.config.patch + 2 * self.config.pad,) * 3
            self._kernels[key] = dipole_kernel_torch(grid, voxel_size, b0)[None]
        return self._kernels[key]

    def sample(self) -> dict[str, torch.Tensor]:
        cfg, rng = self.config, self.rng
        xs, ws, ys, ls, ks = [], [], [], [], []
        for _ in range(cfg.batch_size):
            subj = self.subjects[rng.integers(len(self.subjects))]
            d = int(rng.integers(len(subj.fields)))
            pool = np.argwhere(subj.labels > 0) if rng.random() < cfg.nucleus_share else np.argwhere(subj.mask)
            centre = pool[rng.integers(len(pool))] + rng.integers(-8, 9, 3)
            box = _crop_box(subj.mask.shape, centre, cfg.patch)
            mask = _pad_to(subj.mask[box].astype(np.float32), cfg.patch)
            weight = _pad_to(subj.weight[box], cfg.patch)
            y = _pad_to(subj.fields[d][box], cfg.patch) * mask
            t = _pad_to(subj.tkds[d][box], cfg.patch) * mask
            xs.append(np.concatenate([y[None], t[None], geometry_channels(subj.b0_dirs[d], y.shape)], 0))
            ys.append(y[None])
            ws.append((weight * mask * self.inner)[None])
            ls.append(_pad_to(subj.labels[box], cfg.patch).astype(np.int64)[None])
            ks.append(self.kernel(subj.voxel_size, subj.b0_dirs[d]))
        return {"x": torch.from_numpy(np.stack(xs)), "y": torch.from_numpy(np.stack(ys)),
                "w": torch.from_numpy(np.stack(ws)), "labels": torch.from_numpy(np.stack(ls)),
                "kernel": torch.stack(ks)}


def _losses(recon, seg, batch, config: PedQNetTrainConfig, scale: float) -> tuple[torch.Tensor, dict[str, float]]:
    mask = (batch["x"][:, :1] != 0).float()
    chi = recon(batch["x"]) * mask
    lm = model_based_qsm_loss(chi, batch["y"], batch["kernel"], batch["w"], (config.pad,) * 3, scale)
    parts = {"model": lm.item()}
    total = lm
    if seg is not None and config.seg_weight > 0:
        logits = seg(chi)
        target = batch["labels"][:, 0]
        ce = F.cross_entropy(logits, target)
        prob = torch.softmax(logits, 1)[:, 1:]
        onehot = F.one_hot(target, logits.shape[1]).permute(0, 4, 1, 2, 3)[:, 1:].float()
        dice = soft_dice_loss(prob, onehot)
        parts.update(ce=ce.item(), dice=dice.item())
        total = total + config.seg_weight * (ce + dice)
    return total, parts


def train(config: PedQNetTrainConfig, subjects: list[TrainingSubject] | None = None) -> tuple[PedQNetModel, dict]:
    """Train PedQ-NET on phantoms (made here unless given); returns the model and a report."""
    from rich.progress import track

    start = time.perf_counter()
    seed_everything(config.seed)
    subjects = make_subjects(config) if subjects is None else subjects
    made = time.perf_counter() - start
    device = resolve_device(config.device)
    recon, seg = build_networks(config)
    recon, seg = recon.to(device), (seg.to(device) if seg is not None else None)
    params = list(recon.parameters()) + (list(seg.parameters()) if seg is not None else [])
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.steps, pct_start=0.1)
    sampler = _Sampler(subjects, config, np.random.default_rng(config.seed))
    scale = phase_scale(config.b0, config.te)
    history: list[dict] = []
    running: dict[str, float] = {}
    tic = time.perf_counter()
    done = 0
    for step in track(range(config.steps), "PedQ-NET training", disable=config.quiet):
        batch = {k: v.to(device) for k, v in sampler.sample().items()}
        loss, parts = _losses(recon, seg, batch, config, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        sched.step()
        done = step + 1
        for k, v in parts.items():
            running[k] = running.get(k, 0.0) + v
        if done % 50 == 0 or done == config.steps:
            n = 50 if done % 50 == 0 else done % 50
            history.append({"step": done, **{k: round(v / n, 5) for k, v in running.items()}})
            log.info("step %d %s", done, history[-1])
            running = {}
        if config.max_minutes is not None and time.perf_counter() - tic > 60 * config.max_minutes:
            log.warning("stopped after %d of %d steps: --max-minutes %.1f reached", done, config.steps,
                        config.max_minutes)
            break
    report = {"steps_done": done, "phantom_seconds": round(made, 1),
              "train_seconds": round(time.perf_counter() - tic, 1), "history": history,
              "subjects": [s.meta for s in subjects], "config": asdict(config)}
    model = PedQNetModel(recon.cpu().eval(), seg.cpu().eval() if seg is not None else None, asdict(config))
    return model, report


def save_weights(model: PedQNetModel, path: str | Path, card: dict | None = None) -> Path:
    """State dicts plus what rebuilds the networks (plain types, for ``weights_only`` loading)."""
    from mrinets.io.output import atomic_path

    state = {"recon": model.recon.state_dict(), "recon_config": model.recon.config(),
             "seg": model.seg.state_dict() if model.seg is not None else {},
             "seg_config": model.seg.config() if model.seg is not None else {},
             "config": _plain(model.config), "card": _plain(card or {})}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def _plain(value):
    """JSON-like plain types (tuples to lists) that ``weights_only`` loading accepts."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def load_model(path: str | Path | None = None) -> PedQNetModel:
    """Load weights written by ``mrinets qsm train`` (``torch.load(weights_only=True)``)."""
    path = Path(path) if path else DEFAULT_WEIGHTS
    state = read_weights(path)
    try:
        recon = FieldToChiNet(**state["recon_config"])
        recon.load_state_dict(state["recon"])
        seg = None
        if state["seg_config"]:
            seg = NucleiNet(**state["seg_config"])
            seg.load_state_dict(state["seg"])
        config = dict(state["config"])
        int(config["patch"])
    except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ArgumentError("--weights", f"{path} is not an mrinets PedQ-NET weights file ({first})") from None
    return PedQNetModel(recon.eval(), seg.eval() if seg is not None else None, config, dict(state.get("card", {})))


def _finetune(model: PedQNetModel, x_full: np.ndarray, mask: np.ndarray, weight: np.ndarray, voxel_size,
              b0_vox, scale: float, steps: int, lr: float, device, seed: int = 0) -> FieldToChiNet:
    """A copy of the reconstruction network adapted to this field by the model-based loss alone."""
    cfg = model.config
    patch, pad, margin = int(cfg["patch"]), int(cfg["pad"]), int(cfg["margin"])
    recon = copy.deepcopy(model.recon).to(device).train()
    opt = torch.optim.Adam(recon.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    pool = np.argwhere(mask)
    kernel = dipole_kernel_torch((patch + 2 * pad,) * 3, voxel_size, b0_vox, device=device)[None, None]
    inner = np.zeros((patch,) * 3, np.float32)
    inner[margin: patch - margin, margin: patch - margin, margin: patch - margin] = 1.0
    for _ in range(steps):
        box = _crop_box(mask.shape, pool[rng.integers(len(pool))], patch)
        m = _pad_to(mask[box].astype(np.float32), patch)
        xb = _pad_to(x_full[(slice(None), *box)], patch)
        y = xb[0] * m
        w = _pad_to(weight[box], patch) * m * inner
        x = torch.from_numpy(np.ascontiguousarray(xb[None])).to(device)
        chi = recon(x) * torch.from_numpy(m[None, None]).to(device)
        loss = model_based_qsm_loss(chi, torch.from_numpy(y[None, None]).to(device), kernel,
                                    torch.from_numpy(w[None, None]).to(device), (pad,) * 3, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return recon.eval()


def invert(
    field_ppm: np.ndarray,
    mask: np.ndarray,
    *,
    voxel_size,
    b0_dir,
    model: PedQNetModel | None = None,
    magnitude: np.ndarray | None = None,
    scale: float | None = None,
    finetune_steps: int = 0,
    finetune_lr: float = 1e-4,
    device: str = "cpu",
    overlap: float = 0.125,
    window: int = 96,
    segment: bool = True,
) -> dict[str, np.ndarray | None]:
    """Susceptibility (ppm) from a local field (ppm) by PedQ-NET, on a volume of any size.

    Parameters
    ----------
    field_ppm, mask : ndarray
        Local field and the voxels where it is known.
    voxel_size, b0_dir
        Voxel edges (mm) and the B0 direction in voxel axes.
    magnitude : ndarray, optional
        Magnitude weighting of the fine-tuning loss (uniform without).
    scale : float, optional
        Radians per ppm of the fine-tuning loss; default the training's.
    finetune_steps : int
        Self-supervised steps on this field before predicting (0: none).
    overlap, window : float, int
        Sliding windows of the reconstruction network: side (voxels, at most)
        and overlap.
    segment : bool
        Run the nuclei segmenter (if the weights hold one).

    Returns
    -------
    dict
        ``chi`` (ppm, zero outside the mask) and ``nuclei`` (uint8 labels of
        :data:`NUCLEI_CLASSES`, or None without a segmenter).
    """
    from mrinets.training.inference import predict_volume

    model = load_model() if model is None else model
    dev = resolve_device(device)
    mask = np.asarray(mask, bool)
    field_ppm = np.where(mask, np.asarray(field_ppm, np.float32), 0).astype(np.float32)
    b = np.asarray(b0_dir, np.float64)
    b = b / np.linalg.norm(b)
    voxel_size = tuple(float(v) for v in voxel_size)
    scale = phase_scale(float(model.config.get("b0", 3.0)), float(model.config.get("te", DEFAULT_TE))) \
        if scale is None else float(scale)
    from mrinets.physics.inversion import tkd

    recon = model.recon
    first = tkd(field_ppm, mask, voxel_size=voxel_size, b0_dir=b)
    x = np.concatenate([field_ppm[None], first[None], geometry_channels(b, field_ppm.shape)], 0)
    if finetune_steps > 0:
        weight = _normalised_magnitude(magnitude, mask) if magnitude is not None else mask.astype(np.float32)
        recon = _finetune(model, x, mask, weight, voxel_size, b, scale, int(finetune_steps), finetune_lr, dev)
    # Only the mask's bounding box is reconstructed: outside it chi is zero anyway.
    box = tuple(slice(max(int(i.min()) - 2, 0), int(i.max()) + 3) for i in np.nonzero(mask)) if mask.any() \
        else tuple(slice(None) for _ in mask.shape)
    xb, inside = x[(slice(None), *box)], mask[box]
    patch = model.patch
    # Large windows with little overlap: per voxel, 96^3 windows cost a fraction of 64^3 ones on CPU
    # (docs/qsm-pedqnet.md, Speed).
    roi = [max(patch, min(window, int(math.ceil(n / recon.divisor) * recon.divisor))) for n in inside.shape]
    chi = np.zeros(mask.shape, np.float32)
    chi[box] = np.where(inside, predict_volume(recon, xb, roi_size=roi, overlap=overlap, device=dev)[0], 0)
    nuclei = None
    if segment and model.seg is not None:
        # UNETR's windows are fixed at the training patch (its position embeddings); no overlap, 8 per batch.
        logits = predict_volume(model.seg, chi[box], roi_size=(patch,) * 3, overlap=0.0, sw_batch_size=8,
                                device=dev)
        nuclei = np.zeros(mask.shape, np.uint8)
        nuclei[box] = np.where(inside, logits.argmax(0), 0)
    return {"chi": chi, "nuclei": nuclei}


HELD_OUT_SEED = 90000


def held_out_scores(model: PedQNetModel, config: PedQNetTrainConfig, n: int) -> list[dict]:
    """NRMSE/HFEN/SSIM of TKD and PedQ-NET on ``n`` unseen phantoms' true local fields (every other low-iron)."""
    from dataclasses import replace

    from mrinets.metrics.qsm import edge_sharpness, qsm_scores
    from mrinets.physics.inversion import tkd

    rows = []
    for i in range(n):
        cfg = replace(config, low_iron_share=float(i % 2 == 1), directions_per_phantom=1, anisotropic_share=0.0,
                      snr_range=(100.0, 100.0))
        s = make_subject(HELD_OUT_SEED + i, cfg)
        noisy = s.fields[0]
        row = {"seed": HELD_OUT_SEED + i, **{k: s.meta[k] for k in ("voxel_size_mm", "iron_scale", "low_iron")}}
        maps = {"tkd": tkd(noisy, s.mask, voxel_size=s.voxel_size, b0_dir=s.b0_dirs[0]),
                "pedqnet": invert(noisy, s.mask, voxel_size=s.voxel_size, b0_dir=s.b0_dirs[0], model=model,
                                  segment=False)["chi"]}
        for name, chi in maps.items():
            sc = qsm_scores(chi, s.chi, mask=s.mask)
            row[name] = {k: round(v, 4) for k, v in sc.items()}
            row[name]["edge_sharpness_per_mm"] = round(edge_sharpness(chi, s.labels, voxel_size=s.voxel_size), 4)
        row["truth_edge_sharpness_per_mm"] = round(edge_sharpness(s.chi, s.labels, voxel_size=s.voxel_size), 4)
        rows.append(row)
    return rows


def model_card(card: dict) -> str:
    """Markdown model card of a training run."""
    import json

    report = card["report"]
    lines = ["# mrinets PedQ-NET (qsm_pedqnet.pt)", "",
             "Unsupervised deep dipole inversion: a small MONAI DynUNet (nnU-Net family) maps the local field",
             "(ppm), its TKD inversion and six B0-geometry channels to chi (ppm) = TKD + a learnt correction,",
             "trained only by the model-based loss",
             "`|| W m (exp(i s D*chi) - exp(i s y)) ||_1`; " + (
                 "a small UNETR segmenting caudate, putamen, globus pallidus and thalamus (L/R) on the chi is "
                 "trained jointly (L_model + lambda (Dice + CE))." if report["config"]["segment"]
                 else "no segmentation loss (ablation)."), "",
             "## Command that produced these weights", "", "```", str(card.get("command")), "```", "",
             f"Steps done: {report['steps_done']}; phantom generation {report['phantom_seconds']} s, "
             f"training {report['train_seconds']} s on this machine (CPU).", "",
             "## Data", "",
             "`mrinets phantom qsm` heads (MNI152 tissue, nuclei with left/right labels, veins, calcification) with",
             "random voxel size, thick-slice resampling, iron scale (low-iron infant-like and adult), myelin scale,",
             "SNR and B0 directions; the network sees only the (noisy) local field. Subjects:", "",
             "```json", json.dumps(report["subjects"], indent=1), "```", "",
             "## Held-out phantoms (true local field + noise at SNR 100), TKD beside PedQ-NET", "",
             "Measured by the same command (its --test-phantoms); full-pipeline figures: benchmarks/bench_pedqnet.py.",
             "", "| seed | low iron | TKD NRMSE % | PedQ-NET NRMSE % | TKD HFEN % | PedQ-NET HFEN % | "
             "TKD SSIM | PedQ-NET SSIM |", "|---|---|---|---|---|---|---|---|"]
    for r in report["held_out"]:
        lines.append(f"| {r['seed']} | {r['low_iron']} | {r['tkd']['nrmse_percent']:.1f} | "
                     f"{r['pedqnet']['nrmse_percent']:.1f} | {r['tkd']['hfen_percent']:.1f} | "
                     f"{r['pedqnet']['hfen_percent']:.1f} | {r['tkd']['ssim']:.3f} | {r['pedqnet']['ssim']:.3f} |")
    lines += ["", "## Use", "",
              "`mrinets qsm predict ... --method pedqnet` or `mrinets qsm invert --field F --mask M --method pedqnet`",
              "(this file is the default; `--weights` for another). Loaded with `torch.load(..., weights_only=True)`.",
              "", "## Configuration", "", "```json", json.dumps(report["config"], indent=1), "```", "",
              "## Training history (every 50 steps)", "", "```json",
              json.dumps(report["history"][-10:], indent=0), "```", ""]
    return "\n".join(lines)
