"""The estimator's configuration, training (pretraining and fine-tuning) and whole-volume inference."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields

import numpy as np
import torch
from torch.utils.data import TensorDataset

from mrinets.nets.qspace import MescNet
from mrinets.physics.diffusion import GradientScheme
from mrinets.pipelines.microstructure.data import PARAMETERS, TrainingSet, fill_outside, mix_in
from mrinets.training.engine import TrainConfig, Trainer, resolve_device

__all__ = ["NetConfig", "FitConfig", "build_network", "train_network", "predict_ratios"]

log = logging.getLogger(__name__)


@dataclass
class NetConfig:
    """What rebuilds the network: its scheme and sizes (stored with the weights)."""

    scheme: dict = field(default_factory=dict)
    patch: int = 3
    angular_atoms: int = 16
    spatial_atoms: int = 4
    code_size: int = 32
    iterations: int = 3
    hidden: int = 32

    @property
    def gradient_scheme(self) -> GradientScheme:
        return GradientScheme.from_dict(self.scheme)

    @property
    def n_measurements(self) -> int:
        return int((~self.gradient_scheme.b0_mask).sum())

    @classmethod
    def from_dict(cls, d: dict) -> NetConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class FitConfig:
    """One training run: pretraining, fine-tuning or training from scratch.

    ``anchor`` > 0 fine-tunes with L2-SP (Li, Grandvalet, Davoine, ICML 2018):
    the penalty ``anchor * ||w - w_init||^2`` pulls towards the initial
    (pretrained) weights instead of towards zero, so that a single target
    subject adapts the network without erasing what pretraining taught.

    ``rehearsal`` > 0 fine-tunes on the target samples mixed with pretraining
    samples, which make up that share of every epoch (rehearsal, a guard
    against catastrophic forgetting): the auxiliary targets, fits of clean multi-shell
    data, stay in view while the network adapts to the target population.
    """

    epochs: int = 30
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.1
    patience: int | None = 8
    anchor: float = 0.0
    rehearsal: float = 0.0
    seed: int = 0
    device: str = "auto"
    quiet: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.val_fraction < 0.5:
            raise ValueError(f"val_fraction must be in (0, 0.5), got {self.val_fraction}")
        if not self.anchor >= 0:
            raise ValueError(f"anchor must be non-negative, got {self.anchor}")
        if not 0 <= self.rehearsal < 1:
            raise ValueError(f"rehearsal must be in [0, 1), got {self.rehearsal}")


def build_network(config: NetConfig) -> MescNet:
    return MescNet(config.n_measurements, n_voxels=config.patch**3, n_outputs=len(PARAMETERS),
                   angular_atoms=config.angular_atoms, spatial_atoms=config.spatial_atoms,
                   code_size=config.code_size, iterations=config.iterations, hidden=config.hidden)


def _loss(net: torch.nn.Module, batch) -> torch.Tensor:
    patches, targets = batch
    return torch.mean((net(patches) - targets) ** 2)


def _anchored(anchor: float, reference: list[torch.Tensor]):
    def loss(net: torch.nn.Module, batch) -> torch.Tensor:
        drift = sum(torch.sum((p - r.to(p.device)) ** 2) for p, r in zip(net.parameters(), reference))
        return _loss(net, batch) + anchor * drift

    return loss


def _val(net: torch.nn.Module, batch) -> dict[str, float]:
    patches, targets = batch
    err = torch.abs(net(patches) - targets).mean(dim=0)
    out = {"val_loss": float(torch.mean((net(patches) - targets) ** 2))}
    out.update({f"val_mae_{p}": float(e) for p, e in zip(PARAMETERS, err)})
    return out


def train_network(data: TrainingSet, net_config: NetConfig, fit: FitConfig, *, init: MescNet | None = None,
                  rehearsal: TrainingSet | None = None) -> tuple[MescNet, dict]:
    """Train from ``init`` (fine-tuning) or from scratch; the best epoch on held-out samples is kept.

    With ``fit.rehearsal`` > 0, samples drawn from ``rehearsal`` (the
    pretraining set) make up that share of the training and validation data.
    Returns the network (CPU, eval mode) and a report: epochs run, best
    epoch, validation errors per parameter.
    """
    target_samples = len(data)
    if fit.rehearsal > 0:
        if rehearsal is None or init is None:
            raise ValueError("rehearsal needs the pretrained network and its pretraining samples")
        data = mix_in(data, rehearsal, fit.rehearsal, seed=fit.seed)
    train, val = data.split(fit.val_fraction, seed=fit.seed)
    torch.manual_seed(fit.seed)
    net = build_network(net_config)
    if init is not None:
        net.load_state_dict(init.state_dict())
    to_tensors = lambda s: TensorDataset(torch.from_numpy(s.patches), torch.from_numpy(s.targets))  # noqa: E731
    config = TrainConfig(max_epochs=fit.epochs, batch_size=fit.batch_size, lr=fit.lr, weight_decay=fit.weight_decay,
                         seed=fit.seed, device=fit.device, patience=fit.patience, quiet=fit.quiet,
                         restore_best=True)
    anchored = init is not None and fit.anchor > 0
    loss = _anchored(fit.anchor, [p.detach().clone() for p in net.parameters()]) if anchored else _loss
    # Under L2-SP the pull is towards the pretrained weights: no decay towards zero on top of it.
    optimizer = torch.optim.AdamW(net.parameters(), lr=fit.lr, weight_decay=0.0 if anchored else fit.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=fit.epochs)
    trainer = Trainer(net, loss, config, val_fn=_val, optimizer=optimizer, scheduler=scheduler)
    history = trainer.fit(to_tensors(train), to_tensors(val))
    best = history.val[history.best_epoch]
    report = {"samples": len(train), "val_samples": len(val), "epochs_run": len(history.train_loss),
              "best_epoch": history.best_epoch + 1, "init": "pretrained" if init is not None else "scratch",
              "rehearsed_samples": len(data) - target_samples,
              **{k: round(v, 5) for k, v in best.items()}}
    log.info("trained (%s): %s", report["init"], report)
    return net.cpu().eval(), report


@torch.inference_mode()
def predict_ratios(net: MescNet, ratio: np.ndarray, mask: np.ndarray, *, patch: int = 3, device: str = "auto",
                   chunk: int = 65536) -> dict[str, np.ndarray]:
    """Maps of every parameter on the volume's grid (zero outside ``mask``), float32.

    Every voxel of the brain's bounding box is projected on the angular atoms
    once; each mask voxel's patch then gathers its neighbours' projections, in
    chunks of ``chunk`` voxels (the same numbers as cutting patches one by one,
    27 times fewer angular products).
    """
    dev = resolve_device(device)
    net = net.to(dev).eval()
    half = patch // 2
    maps = {name: np.zeros(mask.shape, dtype=np.float32) for name in PARAMETERS}
    if not mask.any():
        return maps
    lo = np.argwhere(mask).min(axis=0)
    hi = np.argwhere(mask).max(axis=0) + 1
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    filled = np.pad(fill_outside(ratio, mask)[box], ((half, half),) * 3 + ((0, 0),), mode="edge")
    shape = filled.shape[:3]
    angular = net.angular(torch.from_numpy(filled.reshape(-1, filled.shape[-1])).to(dev))
    steps = np.arange(-half, half + 1)
    offsets = ((steps[:, None, None] * shape[1] + steps[None, :, None]) * shape[2] + steps[None, None, :]).ravel()
    centres = np.flatnonzero(np.pad(mask[box], half))
    values = np.empty((centres.size, len(PARAMETERS)), np.float32)
    for a in range(0, centres.size, chunk):
        neighbours = torch.from_numpy(centres[a : a + chunk, None] + offsets).to(dev)
        values[a : a + chunk] = net.from_angular(angular[neighbours]).float().cpu().numpy()
    where = mask[box]
    for k, name in enumerate(PARAMETERS):
        maps[name][box][where] = values[:, k]
    return maps
