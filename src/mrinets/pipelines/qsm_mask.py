"""Brain mask from GRE magnitude by a network trained on QSM phantoms (issue 38, item 3).

The network (:class:`~mrinets.nets.brainmask.BrainMaskNet`, a small MONAI 3D
U-Net) sees one echo's magnitude divided by its 99th percentile, on a working
grid no finer than ``work_mm`` (finer scans are resampled down, so the cost and
the network's view do not depend on the scan's resolution; the logits are
resampled back and cut at 0). The largest connected component, holes filled,
is the mask. Training data: ``mrinets phantom qsm`` heads (brain, CSF gap,
skull, scalp, sinus) at several voxel sizes, with per-sample augmentation of
what real scans vary: the echo (4 to 28 ms), axis order and flips (storage
orientation), slice thickness, a smooth multiplicative bias field, contrast
(gamma), Rician noise level. Labels: the phantoms' true brain masks.

Two things the phantom leaves out make masking easy there (a threshold finds
its brain exactly, since the 3 mm between brain and skull has no signal), and
are added here, to training and to the held-out cases alike: bright
extra-cerebral CSF in that gap (CSF is the brightest tissue of a GRE scan, and
a brain mask leaves it out), and intravoxel dephasing from the phantom's own
total field (signal loss next to the sinus and the skull base at late echoes).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from mrinets.errors import ArgumentError, ConfigError
from mrinets.nets.brainmask import BrainMaskNet
from mrinets.training.engine import read_weights, resolve_device, seed_everything
from mrinets.training.losses import soft_dice_loss

__all__ = ["DEFAULT_MASK_WEIGHTS", "MaskModel", "MaskTrainConfig", "dice", "held_out_cases", "load_mask_model",
           "mask_model_card", "net_brain_mask", "save_mask_weights", "train_mask"]

log = logging.getLogger(__name__)

DEFAULT_MASK_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "qsm_brainmask.pt"
HELD_OUT_SEED = 95000


@dataclass
class MaskTrainConfig:
    """Everything that decides the masking network's weights (stored with them and in the card)."""

    phantoms: int = 4
    seed_start: int = 7000
    voxel_sizes: tuple[float, ...] = (1.5, 1.8, 2.2)
    channels: tuple[int, ...] = (8, 16, 32, 64)
    work_mm: float = 1.5
    patch: int = 64
    steps: int = 400
    batch_size: int = 2
    lr: float = 3e-3
    boundary_share: float = 0.7
    seed: int = 0
    max_minutes: float | None = None
    device: str = "auto"
    quiet: bool = False
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.voxel_sizes = tuple(float(v) for v in self.voxel_sizes)
        self.channels = tuple(int(c) for c in self.channels)
        for name in ("phantoms", "steps", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(name, f"must be at least 1, got {getattr(self, name)}")
        divisor = 2 ** (len(self.channels) - 1)
        if self.patch < divisor or self.patch % divisor:
            raise ConfigError("patch", f"must be a positive multiple of {divisor}, got {self.patch}")
        if any(not v > 0 for v in self.voxel_sizes):
            raise ConfigError("voxel_sizes", f"must be positive mm, got {self.voxel_sizes}")
        if not (math.isfinite(self.work_mm) and self.work_mm > 0):
            raise ConfigError("work_mm", f"must be positive mm, got {self.work_mm}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError("lr", f"must be positive, got {self.lr}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ConfigError("max_minutes", f"must be positive, got {self.max_minutes}")


@dataclass
class MaskModel:
    net: BrainMaskNet
    config: dict
    card: dict = field(default_factory=dict)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = a.sum() + b.sum()
    return float(2 * (a & b).sum() / total) if total else 1.0


def normalise(magnitude: np.ndarray) -> np.ndarray:
    """One echo's magnitude over its 99th percentile (whole field of view), clipped to [0, 3]."""
    top = float(np.percentile(magnitude, 99))
    return np.clip(magnitude / max(top, 1e-12), 0, 3).astype(np.float32)


def _first_echo(magnitude: np.ndarray) -> np.ndarray:
    mag = np.abs(np.asarray(magnitude, np.float32))
    return mag[..., 0] if mag.ndim == 4 else mag


def _work_zoom(voxel_size, work_mm: float) -> np.ndarray:
    """Zoom factors taking a grid to one no finer than ``work_mm`` (coarser axes are kept)."""
    return np.minimum(np.asarray(voxel_size, float) / work_mm, 1.0)


def net_brain_mask(magnitude: np.ndarray, *, voxel_size, model: MaskModel | None = None,
                   device: str = "cpu") -> np.ndarray:
    """Brain mask (bool, the input grid) of a GRE magnitude (3D, or 4D with echoes last: the first is used)."""
    from mrinets.preprocess.mask import fill_holes, largest_component
    from mrinets.training.inference import predict_volume

    model = load_mask_model() if model is None else model
    mag = _first_echo(magnitude)
    if mag.ndim != 3:
        raise ValueError(f"magnitude must be 3D or 4D, got shape {np.shape(magnitude)}")
    zoom = _work_zoom(voxel_size, float(model.config["work_mm"]))
    work = ndimage.zoom(mag, zoom, order=1) if np.any(zoom < 1) else mag
    x = normalise(work)
    patch, div = int(model.config["patch"]), model.net.divisor
    # Windows of 2x the training patch where the volume allows: fewer windows, the same instance-norm scale.
    roi = [max(div, min(2 * patch, int(math.ceil(n / div) * div))) for n in x.shape]
    logits = predict_volume(model.net, x, roi_size=roi, overlap=0.25, device=resolve_device(device))[0]
    if logits.shape != mag.shape:
        logits = ndimage.zoom(logits, np.asarray(mag.shape) / np.asarray(logits.shape), order=1)
        logits = logits[: mag.shape[0], : mag.shape[1], : mag.shape[2]]
    inside = logits > 0
    return fill_holes(largest_component(inside)) if inside.any() else inside


# ----------------------------------------------------------------------------------------------------- training


@dataclass
class _Subject:
    magnitude: np.ndarray  # (X, Y, Z, echoes)
    mask: np.ndarray
    voxel_size: tuple[float, float, float]
    meta: dict
    total_field: np.ndarray  # ppm
    echo_times: tuple[float, ...]
    b0: float
    gap: np.ndarray  # the signal-free shell between brain and skull


def _gap(mask: np.ndarray, voxel_size) -> np.ndarray:
    """Voxels within 3 mm outside the brain: the phantom's empty CSF space (its skull starts at 3 mm)."""
    return ~mask & (ndimage.distance_transform_edt(~mask, sampling=voxel_size) <= 3.0)


def realistic_signal(mag: np.ndarray, echo: int, subject: _Subject, rng: np.random.Generator, *,
                     csf: bool, dephasing: bool) -> np.ndarray:
    """One echo's magnitude with bright extra-cerebral CSF and/or intravoxel dephasing added."""
    from mrinets.physics.echoes import GAMMA

    te = subject.echo_times[echo]
    out = mag.astype(np.float32, copy=True)
    if csf:
        # CSF proton density 1 and R2* 3/s (the phantom's own values), partial-volumed by a random fraction.
        out[subject.gap] += float(rng.uniform(0.5, 1.0)) * np.exp(-3.0 * te)
    if dephasing:
        rad = GAMMA * subject.b0 * 1e-6 * te * subject.total_field
        for axis in range(3):
            out *= np.abs(np.sinc(np.gradient(rad, axis=axis) / (2 * np.pi))).astype(np.float32)
    return out


def _make_subject(seed: int, config: MaskTrainConfig) -> _Subject:
    from mrinets.data.phantoms.qsm import make_qsm_head

    rng = np.random.default_rng(seed)
    vs = float(rng.choice(config.voxel_sizes))
    snr = float(np.exp(rng.uniform(np.log(15), np.log(150))))
    iron = float(rng.uniform(0.3, 1.3))
    p = make_qsm_head(seed, voxel_size=vs, snr=snr, iron_scale=iron, myelin_scale=float(rng.uniform(0.2, 1.2)))
    return _Subject(p.magnitude.astype(np.float32), p.mask, (vs, vs, vs),
                    {"seed": seed, "voxel_size_mm": vs, "snr": round(snr, 2), "iron_scale": round(iron, 3)},
                    p.total_field.astype(np.float32), p.echo_times, p.b0, _gap(p.mask, (vs, vs, vs)))


def _bias_field(shape, rng: np.random.Generator, strength: float) -> np.ndarray:
    """A smooth multiplicative field: exp of a random quadratic per axis (separable, cheap on whole volumes)."""
    out = np.ones(shape, np.float32)
    for axis, n in enumerate(shape):
        t = np.linspace(-1, 1, n, dtype=np.float32)
        a, b = rng.normal(0, strength, 2)
        prof = np.exp(a * t + b * (t**2 - 1 / 3)).astype(np.float32)
        out *= prof.reshape([-1 if i == axis else 1 for i in range(3)])
    return out


def _variants(subject: _Subject, rng: np.random.Generator) -> dict:
    """Every (echo, CSF, dephasing) version of a subject's magnitude with its 99th percentile, made once."""
    out = {}
    for echo in range(subject.magnitude.shape[-1]):
        for csf in (False, True):
            for dephasing in (False, True):
                mag = realistic_signal(subject.magnitude[..., echo], echo, subject, rng, csf=csf, dephasing=dephasing)
                out[echo, csf, dephasing] = (mag, float(np.percentile(mag, 99)))
    return out


def augment(subject: _Subject, variants: dict, edge: np.ndarray, rng: np.random.Generator, config: MaskTrainConfig,
            ) -> tuple[np.ndarray, np.ndarray]:
    """A random patch of one phantom as a real scan could give it, on the network's working grid.

    Echo, bright extra-cerebral CSF, dephasing, thick slices along a random
    axis, bias field, gamma, Rician noise, then axis order and flips. The
    patch is cut first (centred on the brain's edge for ``boundary_share`` of
    them) and normalised by its whole volume's 99th percentile, as
    :func:`net_brain_mask` normalises a scan. Returns (magnitude, mask),
    ``config.patch`` voxels a side.
    """
    size = config.patch
    key = (int(rng.integers(subject.magnitude.shape[-1])), bool(rng.random() < 0.6), bool(rng.random() < 0.5))
    full, top = variants[key]
    zoom = _work_zoom(subject.voxel_size, config.work_mm)
    if rng.random() < 0.4:
        zoom[int(rng.integers(3))] /= rng.uniform(1.2, 2.0)
    shape = np.asarray(full.shape)
    centre = edge[int(rng.integers(len(edge)))] if rng.random() < config.boundary_share else rng.integers(0, shape)
    src = np.ceil(size / zoom).astype(int) + 2
    lo = np.clip(centre - src // 2, 0, np.maximum(shape - src, 0))
    box = tuple(slice(int(a), int(a + n)) for a, n in zip(lo, src))
    mag, mask = full[box], subject.mask[box].astype(np.float32)
    bias = np.ones(mag.shape, np.float32)
    for axis, (start, n) in enumerate(zip(lo, mag.shape)):
        # The bias field is a function of the whole volume's coordinates, evaluated on the patch.
        t = (start + np.arange(n)) / max(shape[axis] - 1, 1) * 2 - 1
        c1, c2 = rng.normal(0, 0.25, 2)
        bias *= np.exp(c1 * t + c2 * (t**2 - 1 / 3)).astype(np.float32).reshape([-1 if i == axis else 1
                                                                                 for i in range(3)])
    mag = mag * bias
    if np.any(zoom < 1):
        mag = ndimage.zoom(mag, zoom, order=1)
        mask = ndimage.zoom(mask, zoom, order=1)
    mag = top * (mag / top).clip(0, None) ** rng.uniform(0.75, 1.35)
    sigma = top * rng.uniform(0.0, 0.06)
    if sigma > 0:
        mag = np.hypot(mag + rng.normal(0, sigma, mag.shape), rng.normal(0, sigma, mag.shape))
    mag = np.clip(mag / top, 0, 3)
    order = rng.permutation(3)
    mag, mask = mag.transpose(order), mask.transpose(order)
    for axis in range(3):
        if rng.random() < 0.5:
            mag, mask = np.flip(mag, axis), np.flip(mask, axis)
    return _patch(mag, (0, 0, 0), size).astype(np.float32), (_patch(mask, (0, 0, 0), size) > 0.5).astype(np.float32)


def _patch(volume: np.ndarray, lo, size: int) -> np.ndarray:
    sub = volume[tuple(slice(a, a + size) for a in lo)]
    pads = [(0, size - n) for n in sub.shape]
    return np.pad(sub, pads) if any(p for _, p in pads) else sub


class _Sampler:
    def __init__(self, subjects: list[_Subject], config: MaskTrainConfig, rng: np.random.Generator):
        self.subjects, self.config, self.rng = subjects, config, rng
        self.variants = [_variants(s, rng) for s in subjects]
        self.edges = [np.argwhere(s.mask ^ ndimage.binary_erosion(s.mask)) for s in subjects]

    def sample(self) -> dict[str, torch.Tensor]:
        xs, ys = [], []
        for _ in range(self.config.batch_size):
            i = int(self.rng.integers(len(self.subjects)))
            mag, mask = augment(self.subjects[i], self.variants[i], self.edges[i], self.rng, self.config)
            xs.append(mag[None])
            ys.append(mask[None])
        return {"x": torch.from_numpy(np.stack(xs)), "y": torch.from_numpy(np.stack(ys))}


def train_mask(config: MaskTrainConfig) -> tuple[MaskModel, dict]:
    """Train the masking network on phantoms; returns the model and a report (history, subjects, timings)."""
    from rich.progress import track

    start = time.perf_counter()
    seed_everything(config.seed)
    seeds = range(config.seed_start, config.seed_start + config.phantoms)
    subjects = [_make_subject(s, config) for s in track(seeds, "phantoms", disable=config.quiet)]
    made = time.perf_counter() - start
    device = resolve_device(config.device)
    net = BrainMaskNet(channels=config.channels).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.steps, pct_start=0.1)
    sampler = _Sampler(subjects, config, np.random.default_rng(config.seed))
    history, running, done = [], {"bce": 0.0, "dice": 0.0}, 0
    tic = time.perf_counter()
    for step in track(range(config.steps), "mask training", disable=config.quiet):
        batch = {k: v.to(device) for k, v in sampler.sample().items()}
        logits = net(batch["x"])
        bce = F.binary_cross_entropy_with_logits(logits, batch["y"])
        dl = soft_dice_loss(torch.sigmoid(logits), batch["y"])
        loss = bce + dl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        done = step + 1
        running["bce"] += bce.item()
        running["dice"] += dl.item()
        if done % 50 == 0 or done == config.steps:
            n = 50 if done % 50 == 0 else done % 50
            history.append({"step": done, **{k: round(v / n, 5) for k, v in running.items()}})
            log.info("step %d %s", done, history[-1])
            running = {k: 0.0 for k in running}
        if config.max_minutes is not None and time.perf_counter() - tic > 60 * config.max_minutes:
            log.warning("stopped after %d of %d steps: --max-minutes %.1f reached", done, config.steps,
                        config.max_minutes)
            break
    report = {"steps_done": done, "phantom_seconds": round(made, 1),
              "train_seconds": round(time.perf_counter() - tic, 1), "history": history,
              "subjects": [s.meta for s in subjects], "config": asdict(config)}
    return MaskModel(net.cpu().eval(), asdict(config)), report


def held_out_cases(n_phantoms: int = 2, seed: int = HELD_OUT_SEED):
    """Held-out test scans: unseen phantoms, each as simulated and in variants (thick slices, axes swapped and
    flipped, bias field + noise, last echo, bright extra-cerebral CSF, CSF + dephasing + bias at the last echo).
    Yields (name, magnitude 4D, true mask, voxel size)."""
    from mrinets.data.phantoms.qsm import make_qsm_head

    for i in range(n_phantoms):
        s = seed + i
        rng = np.random.default_rng(s)
        vs = (1.5, 2.0)[i % 2]
        p = make_qsm_head(s, voxel_size=vs, snr=60.0, iron_scale=(1.0, 0.3)[i % 2], myelin_scale=(1.0, 0.3)[i % 2])
        mag, mask, vox = p.magnitude.astype(np.float32), p.mask, (vs, vs, vs)
        subject = _Subject(mag, mask, vox, {}, p.total_field, p.echo_times, p.b0, _gap(mask, vox))
        yield f"{s} {vs} mm as simulated", mag, mask, vox
        thick = ndimage.zoom(mag, (1, 1, 0.5, 1), order=1)
        yield f"{s} {vs}x{vs}x{2 * vs:g} mm slices", thick, ndimage.zoom(mask.astype(np.float32), (1, 1, 0.5),
                                                                         order=1) > 0.5, (vs, vs, 2 * vs)
        yield f"{s} axes swapped + flipped", np.flip(mag.transpose(1, 0, 2, 3), 0), \
            np.flip(mask.transpose(1, 0, 2), 0), vox
        bias = _bias_field(mask.shape, rng, 0.35)[..., None]
        noise = 0.04 * float(np.percentile(mag, 99))
        noisy = np.hypot(mag * bias + rng.normal(0, noise, mag.shape), rng.normal(0, noise, mag.shape))
        yield f"{s} bias field + noise", noisy.astype(np.float32), mask, vox
        yield f"{s} last echo only", mag[..., -1:], mask, vox
        csf = np.stack([realistic_signal(mag[..., e], e, subject, rng, csf=True, dephasing=False)
                        for e in range(mag.shape[-1])], -1)
        yield f"{s} bright extra-cerebral CSF", csf, mask, vox
        last = mag.shape[-1] - 1
        hard = realistic_signal(mag[..., last], last, subject, rng, csf=True, dephasing=True)
        yield f"{s} CSF + dephasing + bias, last echo", (hard * bias[..., 0])[..., None], mask, vox


def evaluate_cases(model: MaskModel, n_phantoms: int = 2) -> list[dict]:
    """Dice of the network's mask and of the classic mask against the true brain mask on held-out cases."""
    from mrinets.preprocess.mask import gre_brain_mask

    rows = []
    for name, mag, truth, vox in held_out_cases(n_phantoms):
        tic = time.perf_counter()
        net = net_brain_mask(mag, voxel_size=vox, model=model)
        t_net = time.perf_counter() - tic
        tic = time.perf_counter()
        classic = gre_brain_mask(mag, voxel_size=vox)
        t_classic = time.perf_counter() - tic
        rows.append({"case": name, "net_dice": round(dice(net, truth), 4),
                     "classic_dice": round(dice(classic, truth), 4),
                     "net_s": round(t_net, 2), "classic_s": round(t_classic, 2)})
        log.info("%s", rows[-1])
    return rows


def save_mask_weights(model: MaskModel, path: str | Path, card: dict | None = None) -> Path:
    from mrinets.io.output import atomic_path
    from mrinets.pipelines.pedqnet import _plain

    state = {"net": model.net.state_dict(), "net_config": model.net.config(), "config": _plain(model.config),
             "card": _plain(card or {})}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_mask_model(path: str | Path | None = None) -> MaskModel:
    """Load weights written by ``mrinets qsm train-mask`` (``torch.load(weights_only=True)``)."""
    path = Path(path) if path else DEFAULT_MASK_WEIGHTS
    try:
        state = read_weights(path)
    except ArgumentError as exc:
        raise ArgumentError("--mask-weights", exc.problem) from None
    try:
        net = BrainMaskNet(**state["net_config"])
        net.load_state_dict(state["net"])
        config = dict(state["config"])
        int(config["patch"]), float(config["work_mm"])
    except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ArgumentError("--mask-weights", f"{path} is not an mrinets brain-mask weights file ({first})") from None
    return MaskModel(net.eval(), config, dict(state.get("card", {})))


def mask_model_card(command: str, report: dict) -> str:
    import json

    rows = report["held_out"]
    lines = ["# mrinets QSM brain-masking network (qsm_brainmask.pt)", "",
             "A small MONAI 3D U-Net from one echo's GRE magnitude (over its 99th percentile, on a grid no finer",
             f"than {report['config']['work_mm']} mm) to the brain mask; largest component, holes filled. Used by",
             "`mrinets qsm predict --masker net` when no --mask is given.", "",
             "## Command that produced these weights", "", "```", command, "```", "",
             (f"Steps done: {report['steps_done']}; phantom generation {report['phantom_seconds']} s, "
              f"training {report['train_seconds']} s on this machine (CPU)."), "",
             "## Data", "",
             "`mrinets phantom qsm` heads (brain, CSF gap, skull, scalp, sinus) with their true brain masks;",
             "per sample: random echo, thick slices along a random axis, axis order and flips, bias field, gamma,",
             "Rician noise. Subjects:", "", "```json", json.dumps(report["subjects"], indent=1), "```", "",
             "## Held-out phantoms (seeds 95000+), Dice against the true brain mask", "",
             "Measured by the same command; again by `python benchmarks/bench_qsm_mask.py`.", "",
             "| case | network Dice | classic mask Dice | network s | classic s |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['net_dice']:.4f} | {r['classic_dice']:.4f} | {r['net_s']} | "
                     f"{r['classic_s']} |")
    if rows:
        lines.append(f"| **mean** | {np.mean([r['net_dice'] for r in rows]):.4f} | "
                     f"{np.mean([r['classic_dice'] for r in rows]):.4f} | | |")
    lines += ["", "## Configuration", "", "```json", json.dumps(report["config"], indent=1), "```", "",
              "## Training history (every 50 steps)", "", "```json", json.dumps(report["history"][-10:], indent=0),
              "```", ""]
    return "\n".join(lines)


def train_and_save(config: MaskTrainConfig, outdir: str | Path, *, test_phantoms: int = 2,
                   command: str = "") -> dict:
    """Train, score on held-out phantoms and write ``qsm_brainmask.pt``, its card and ``train_report.json``."""
    from mrinets.io import OutputStage, write_json

    model, report = train_mask(config)
    report["held_out"] = evaluate_cases(model, test_phantoms) if test_phantoms else []
    with OutputStage(Path(outdir)) as stage:
        save_mask_weights(model, stage.path("qsm_brainmask.pt"), card={"command": command,
                                                                      "held_out": report["held_out"]})
        write_json(stage.path("train_report.json"), report)
        stage.path("qsm_brainmask.md").write_text(mask_model_card(command, report), encoding="utf-8")
    return report
