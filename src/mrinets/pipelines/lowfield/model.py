"""The five translation models and how each is trained: LoHiResGAN and its four baselines.

All work slice-wise on axial slices of the 2 mm working grid, with the
neighbouring slices as extra input channels (2.5D), images in [-1, 1].

- ``lohiresgan``: ResNet generator, conditional PatchGAN, adversarial + L1 + (1 - SSIM);
- ``unet``: 2D U-Net, L1 only;
- ``gan``: the same U-Net, adversarial + L1 with an unconditional PatchGAN (judges the image alone);
- ``cgan``: pix2pix, U-Net + conditional PatchGAN, adversarial + L1;
- ``cyclegan``: two ResNet generators and two PatchGANs on unpaired slices, adversarial + cycle L1.

Adversarial losses are least-squares (LSGAN) for all, as CycleGAN uses; L1
weight 100 as pix2pix. Every generator learns a residual: its tanh output is
added to the input's centre slice (all slices for CycleGAN), so training starts
from the low-field image instead of from nothing, which matters with minutes
of CPU training (docs/lowfield.md).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from mrinets.errors import ArgumentError
from mrinets.nets.patch_discriminator import PatchDiscriminator
from mrinets.nets.resnet_generator import ResnetGenerator
from mrinets.nets.unet2d import UNet2D
from mrinets.training.engine import resolve_device, seed_everything
from mrinets.training.losses import adversarial_loss, ssim_loss

__all__ = [
    "MODELS",
    "SliceData",
    "TrainConfig",
    "build_generator",
    "from_unit",
    "pad_multiple",
    "stack_slices",
    "to_unit",
    "train_model",
    "translate_volume",
]

log = logging.getLogger(__name__)

MODELS = ("lohiresgan", "unet", "gan", "cgan", "cyclegan")
PAD = 16  # in-plane sizes are padded to a multiple of this (the U-Net's four levels)


@dataclass
class TrainConfig:
    """Training of one translation model (stored on the model card).

    Parameters
    ----------
    model : one of :data:`MODELS`
    contrast : "t1" or "t2"
    subjects : int
        Training pairs (phantom seeds ``seed_start`` ...).
    iterations : int
        Generator updates.
    batch_size, lr : int, float
        Adam (beta1 0.5) for generators and discriminators alike.
    context : int
        Neighbouring slices on each side given as channels.
    features, n_blocks : int
        Width of the generators (ResNet stem, U-Net first level) and residual blocks.
    lambda_l1, lambda_ssim, lambda_cycle : float
        Loss weights (adversarial weight 1).
    """

    model: str = "lohiresgan"
    contrast: str = "t1"
    subjects: int = 12
    seed_start: int = 1000
    iterations: int = 600
    batch_size: int = 6
    lr: float = 4e-4
    context: int = 1
    features: int = 16
    n_blocks: int = 4
    lambda_l1: float = 100.0
    lambda_ssim: float = 50.0
    lambda_cycle: float = 10.0
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ArgumentError("--model", f"must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.contrast not in ("t1", "t2"):
            raise ArgumentError("--contrast", f"must be t1 or t2, got {self.contrast!r}")
        for name in ("subjects", "iterations", "batch_size", "features", "n_blocks"):
            if int(getattr(self, name)) < 1:
                raise ArgumentError(f"--{name.replace('_', '-')}", f"must be at least 1, got {getattr(self, name)}")
        if self.context < 0 or self.context > 4:
            raise ArgumentError("--context", f"must be 0 to 4 slices, got {self.context}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ArgumentError("--lr", f"must be positive, got {self.lr}")
        for name in ("lambda_l1", "lambda_ssim", "lambda_cycle"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ArgumentError(f"--{name.replace('_', '-')}", "must not be negative")

    @property
    def in_channels(self) -> int:
        return 2 * self.context + 1

    def as_dict(self) -> dict:
        return asdict(self)


def to_unit(volume: np.ndarray) -> np.ndarray:
    """Normalised intensities (1 = bright tissue) to the networks' [-1, 1]."""
    return (np.clip(volume, 0.0, 1.5) * 2.0 - 1.0).astype(np.float32)


def from_unit(volume: np.ndarray) -> np.ndarray:
    return ((np.asarray(volume, np.float32) + 1.0) / 2.0).astype(np.float32)


def pad_multiple(volume: np.ndarray, value: float) -> tuple[np.ndarray, tuple[int, int]]:
    """Pad the first two axes up to multiples of :data:`PAD` (centred); return the offsets."""
    shape = volume.shape[:2]
    target = [int(math.ceil(n / PAD) * PAD) for n in shape]
    before = [(t - n) // 2 for t, n in zip(target, shape)]
    pad = [(b, t - n - b) for b, t, n in zip(before, target, shape)] + [(0, 0)] * (volume.ndim - 2)
    return np.pad(volume, pad, constant_values=value), (before[0], before[1])


def stack_slices(volume: np.ndarray, context: int) -> np.ndarray:
    """(X, Y, Z) -> (Z, 2 context + 1, X, Y): each axial slice with its neighbours (edges repeated)."""
    z = volume.shape[2]
    idx = np.clip(np.arange(z)[:, None] + np.arange(-context, context + 1)[None], 0, z - 1)
    return np.ascontiguousarray(np.moveaxis(volume[:, :, idx], (2, 3), (0, 1)))


class SliceData:
    """Axial slices of paired volumes on the working grid (padded), for random batches.

    Slices with less than 5 % brain are left out.
    """

    def __init__(self, inputs: Sequence[np.ndarray], targets: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                 context: int) -> None:
        xs, ys = [], []
        for lf, hf, mask in zip(inputs, targets, masks):
            keep = mask.mean(axis=(0, 1)) >= 0.05
            x, _ = pad_multiple(to_unit(lf), -1.0)
            y, _ = pad_multiple(to_unit(np.clip(hf, 0, 1)), -1.0)
            xs.append(stack_slices(x, context)[keep])
            ys.append(stack_slices(y, context)[keep])
        if not xs or len({a.shape[2:] for a in xs}) != 1:
            raise ValueError("training volumes must share one working-grid shape")
        self.context = context
        self.x = torch.from_numpy(np.concatenate(xs))
        self.y_stack = torch.from_numpy(np.concatenate(ys))  # CycleGAN's high-field domain has neighbours too

    def __len__(self) -> int:
        return len(self.x)

    def batch(self, rng: np.random.Generator, size: int, *, unpaired: bool = False) -> tuple[torch.Tensor, ...]:
        """(low-field stacks, high-field centre slices, high-field stacks); unpaired: the high-field side drawn
        independently."""
        i = rng.integers(0, len(self), size)
        j = rng.integers(0, len(self), size) if unpaired else i
        x, y_stack = self.x[i].clone(), self.y_stack[j].clone()
        flip = torch.from_numpy(rng.random(size) < 0.5)
        x[flip] = x[flip].flip(-2)  # left-right (first in-plane axis of RAS)
        y_stack[flip] = y_stack[flip].flip(-2)
        gain = torch.from_numpy(rng.uniform(0.9, 1.1, (size, 1, 1, 1)).astype(np.float32))
        x = (x + 1) * gain - 1  # scanner gain varies: the input's scale is not trusted
        return x, y_stack[:, self.context:self.context + 1], y_stack


class Residual(nn.Module):
    """``x[:, offset:offset + C_out] + net(x)``: the network predicts the correction of its input."""

    def __init__(self, net: nn.Module, offset: int) -> None:
        super().__init__()
        self.net = net
        self.offset = int(offset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        return x[:, self.offset:self.offset + y.shape[1]] + y


def build_generator(config: dict) -> nn.Module:
    """Rebuild a generator from ``{"kind": "resnet"|"unet", "residual_offset": k (optional), **arguments}``."""
    kind = config.get("kind")
    args = {k: v for k, v in config.items() if k not in ("kind", "residual_offset", "select_channel")}
    if kind == "resnet":
        net: nn.Module = ResnetGenerator(**args)
    elif kind == "unet":
        net = UNet2D(**args)
    else:
        raise ValueError(f"unknown generator kind {kind!r}")
    if "residual_offset" in config:
        net = Residual(net, config["residual_offset"])
    return net


def _generator(config: TrainConfig, in_channels: int, out_channels: int = 1) -> tuple[nn.Module, dict]:
    offset = 0 if out_channels == in_channels else config.context
    if config.model in ("lohiresgan", "cyclegan"):
        spec = {"kind": "resnet", "in_channels": in_channels, "out_channels": out_channels,
                "features": config.features, "n_blocks": config.n_blocks, "residual_offset": offset}
    else:
        f = config.features
        spec = {"kind": "unet", "in_channels": in_channels, "out_channels": out_channels,
                "channels": [f, 2 * f, 4 * f, 8 * f], "num_res_units": 1, "residual_offset": offset}
    return build_generator(spec), spec


def train_model(data: SliceData, config: TrainConfig, *, quiet: bool = False) -> tuple[nn.Module, dict, dict]:
    """Train ``config.model`` on ``data``; return (generator LF->HF, its spec, a history summary)."""
    from tqdm.auto import tqdm

    seed_everything(config.seed)
    rng = np.random.default_rng(config.seed)
    device = resolve_device(config.device)
    c = config.in_channels
    cyc = config.model == "cyclegan"
    gen, spec = _generator(config, c, c if cyc else 1)
    gen.to(device).train()
    nets: dict[str, nn.Module] = {}
    if config.model in ("lohiresgan", "cgan"):
        nets["d"] = PatchDiscriminator(c + 1, config.features, n_layers=3)
    elif config.model == "gan":
        nets["d"] = PatchDiscriminator(1, config.features, n_layers=3)
    elif cyc:
        nets["back"], _ = _generator(config, c, c)
        nets["d"] = PatchDiscriminator(c, config.features, n_layers=3)
        nets["d_lf"] = PatchDiscriminator(c, config.features, n_layers=3)
    for net in nets.values():
        net.to(device).train()
    g_params = list(gen.parameters()) + (list(nets["back"].parameters()) if cyc else [])
    opt_g = torch.optim.Adam(g_params, lr=config.lr, betas=(0.5, 0.999))
    d_params = [p for k, n in nets.items() if k.startswith("d") for p in n.parameters()]
    opt_d = torch.optim.Adam(d_params, lr=config.lr, betas=(0.5, 0.999)) if d_params else None
    # Linear decay over the second half, as pix2pix and CycleGAN schedule it.
    half = config.iterations // 2

    def decay(step: int) -> float:
        return 1.0 if step < half else max(0.0, 1.0 - (step - half) / max(config.iterations - half, 1))

    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, decay) for o in (opt_g, opt_d) if o is not None]
    losses: dict[str, list[float]] = {}
    tic = time.perf_counter()
    for _ in tqdm(range(config.iterations), desc=f"train {config.model}", disable=quiet, unit="it"):
        x, y, y_stack = (t.to(device) for t in data.batch(rng, config.batch_size, unpaired=cyc))
        parts = _generator_step(config, gen, nets, x, y_stack if cyc else y)
        opt_g.zero_grad()
        sum(parts.values()).backward()
        opt_g.step()
        if opt_d is not None:
            d_loss = _discriminator_step(config, gen, nets, x, y_stack if cyc else y)
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
            parts["d"] = d_loss
        for s in schedulers:
            s.step()
        for k, v in parts.items():
            losses.setdefault(k, []).append(float(v.detach()))
    tail = max(1, config.iterations // 10)
    history = {"seconds": round(time.perf_counter() - tic, 1),
               "final_losses": {k: round(float(np.mean(v[-tail:])), 5) for k, v in losses.items()}}
    if cyc:
        spec = {**spec, "select_channel": config.context}
    return gen.eval().cpu(), spec, history


def _generator_step(config, gen, nets, x, y) -> dict[str, torch.Tensor]:
    model = config.model
    if model == "cyclegan":
        hf = y  # unpaired high-field stacks, drawn apart from x
        fake_hf, fake_lf = gen(x), nets["back"](hf)
        return {
            "adv": adversarial_loss(nets["d"](fake_hf), True) + adversarial_loss(nets["d_lf"](fake_lf), True),
            "cycle": config.lambda_cycle * ((nets["back"](fake_hf) - x).abs().mean()
                                            + (gen(fake_lf) - hf).abs().mean()),
        }
    fake = gen(x)
    parts = {"l1": config.lambda_l1 * (fake - y).abs().mean()}
    if model == "lohiresgan":
        parts["ssim"] = config.lambda_ssim * ssim_loss(fake, y)
    if model in ("lohiresgan", "cgan"):
        parts["adv"] = adversarial_loss(nets["d"](torch.cat([x, fake], 1)), True)
    elif model == "gan":
        parts["adv"] = adversarial_loss(nets["d"](fake), True)
    return parts


def _discriminator_step(config, gen, nets, x, y) -> torch.Tensor:
    model = config.model
    with torch.no_grad():
        fake = gen(x)
    if model == "cyclegan":
        hf = y
        with torch.no_grad():
            fake_lf = nets["back"](hf)
        return 0.5 * (adversarial_loss(nets["d"](hf), True) + adversarial_loss(nets["d"](fake), False)
                      + adversarial_loss(nets["d_lf"](x), True) + adversarial_loss(nets["d_lf"](fake_lf), False))
    if model == "gan":
        real_in, fake_in = y, fake
    else:
        real_in, fake_in = torch.cat([x, y], 1), torch.cat([x, fake], 1)
    return 0.5 * (adversarial_loss(nets["d"](real_in), True) + adversarial_loss(nets["d"](fake_in), False))


def translate_volume(generator: nn.Module, spec: dict, volume: np.ndarray, *, context: int,
                     device: str | torch.device = "cpu", batch: int = 16) -> np.ndarray:
    """Translate a normalised low-field volume on the working grid (X, Y, Z) slice by slice; same shape out."""
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    padded, (ox, oy) = pad_multiple(to_unit(volume), -1.0)
    stacks = stack_slices(padded, context)
    channel = int(spec.get("select_channel", 0))
    generator = generator.to(dev).eval()
    out = np.empty((stacks.shape[0], *padded.shape[:2]), np.float32)
    with torch.inference_mode():
        for start in range(0, len(stacks), batch):
            x = torch.from_numpy(stacks[start:start + batch]).to(dev)
            out[start:start + batch] = generator(x)[:, channel].clamp(-1, 1).float().cpu().numpy()
    out = np.moveaxis(out, 0, 2)[ox:ox + volume.shape[0], oy:oy + volume.shape[1]]
    return from_unit(out)
