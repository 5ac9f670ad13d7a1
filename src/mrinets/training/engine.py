"""A generic training loop: progress, validation, checkpoints, early stopping, seeding, devices, DDP.

Pipelines plug in their own step through ``loss_fn(model, batch)``, so the
same engine trains a supervised segmenter, a physics-based self-supervised
model or a distilled student.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from mrinets.errors import ArgumentError, UnreadableFileError
from mrinets.io.output import atomic_path

__all__ = ["History", "TrainConfig", "Trainer", "resolve_device", "seed_everything", "load_checkpoint"]

log = logging.getLogger(__name__)

LossOutput = torch.Tensor | tuple[torch.Tensor, dict[str, float]]


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``/``"cuda:N"``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ArgumentError("--device", f"{name} requested but no CUDA GPU is available (use auto or cpu)")
        return torch.device(name)
    raise ArgumentError("--device", f"must be auto, cpu or cuda, got {name!r}")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so that CPU runs repeat exactly."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class TrainConfig:
    """Options of :class:`Trainer` (stored in every checkpoint and model card)."""

    max_epochs: int = 10
    batch_size: int = 2
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    patience: int | None = None
    monitor: str = "val_loss"
    mode: str = "min"
    grad_clip: float | None = None
    num_workers: int = 0
    checkpoint_dir: str | None = None
    quiet: bool = False
    restore_best: bool = False

    def __post_init__(self) -> None:
        for name in ("max_epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be non-negative, got {self.weight_decay}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be at least 1 or None, got {self.patience}")
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {self.mode!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be positive or None, got {self.grad_clip}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be non-negative, got {self.num_workers}")


@dataclass
class History:
    """Per-epoch losses and validation metrics, and the best epoch so far."""

    train_loss: list[float] = field(default_factory=list)
    val: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_value: float | None = None
    stopped_early: bool = False


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _split(output: LossOutput) -> tuple[torch.Tensor, dict[str, float]]:
    if isinstance(output, tuple):
        return output[0], dict(output[1])
    return output, {}


def _distributed() -> bool:
    """Join the process group that ``torchrun`` describes, if any."""
    if dist.is_available() and dist.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return True
    return False


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2])},
        "python": torch.tensor(random.getstate()[1], dtype=torch.int64),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy"]["key"].numpy().astype(np.uint32), state["numpy"]["pos"], 0, 0.0))
    random.setstate((3, tuple(int(v) for v in state["python"].tolist()), None))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint or weights file saved with ``torch.save`` (safe ``weights_only`` loading).

    Raises UnreadableFileError for anything ``torch.load`` cannot read.
    """
    from mrinets.io.output import note_input

    note_input(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a file that is not torch's raises anything from EOFError to IndexError
        raise UnreadableFileError(path, f"not a file saved by torch ({type(exc).__name__})") from None


def read_weights(path: str | os.PathLike) -> dict[str, Any]:
    """The saved state of a ``--weights`` file; a missing, folder or unreadable file is refused in one line."""
    path = Path(path)
    if not path.is_file():
        raise ArgumentError("--weights", f"{path} is not a file" if path.is_dir() else f"{path} does not exist")
    try:
        return load_checkpoint(path)
    except UnreadableFileError as exc:
        raise ArgumentError("--weights", f"{path} is {exc.problem}") from None


class Trainer:
    """Train ``model`` with a pluggable step.

    Parameters
    ----------
    model : nn.Module
    loss_fn : callable
        ``loss_fn(model, batch) -> loss`` or ``(loss, {"name": value})``.
    config : TrainConfig
    val_fn : callable, optional
        ``val_fn(model, batch) -> {"metric": value}``, averaged over the
        validation set; default ``{"val_loss": loss_fn(...)}``.
    optimizer, scheduler : optional
        Default AdamW with ``config.lr`` and ``config.weight_decay``; the
        scheduler (if any) steps once per epoch, or once per batch with
        ``scheduler_per_step`` (one-cycle schedules).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[nn.Module, Any], LossOutput],
        config: TrainConfig,
        *,
        val_fn: Callable[[nn.Module, Any], dict[str, float]] | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        scheduler_per_step: bool = False,
    ) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self.distributed = _distributed()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        self.model = model.to(self.device)
        self.loss_fn = loss_fn
        self.val_fn = val_fn
        self.optimizer = optimizer or torch.optim.AdamW(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.scheduler = scheduler
        self.scheduler_per_step = scheduler_per_step
        self.amp = bool(config.amp and self.device.type == "cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _loader(self, data: Dataset, *, shuffle: bool, epoch: int) -> DataLoader:
        sampler = None
        if self.distributed:
            sampler = DistributedSampler(data, num_replicas=self.world, rank=self.rank, shuffle=shuffle,
                                         seed=self.config.seed)
            sampler.set_epoch(epoch)
        generator = torch.Generator().manual_seed(self.config.seed + epoch)
        return DataLoader(data, batch_size=self.config.batch_size, shuffle=shuffle and sampler is None,
                          sampler=sampler, num_workers=self.config.num_workers, generator=generator)

    def _mean(self, values: dict[str, float], count: int) -> dict[str, float]:
        """Average sums over batches, and over ranks under DDP."""
        keys = sorted(values)
        totals = torch.tensor([values[k] for k in keys] + [float(count)], dtype=torch.float64)
        if self.distributed:
            dist.all_reduce(totals)
        n = max(float(totals[-1]), 1.0)
        return {k: float(v) / n for k, v in zip(keys, totals[:-1])}

    def _better(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value < best if self.config.mode == "min" else value > best

    def _train_epoch(self, net: nn.Module, data: Dataset, epoch: int, progress: Any) -> float:
        net.train()
        sums: dict[str, float] = {"loss": 0.0}
        count = 0
        loader = self._loader(data, shuffle=True, epoch=epoch)
        task = progress.add_task(f"epoch {epoch + 1}/{self.config.max_epochs}", total=len(loader)) if progress else None
        for batch in loader:
            batch = _to_device(batch, self.device)
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, enabled=self.amp):
                loss, logs = _split(self.loss_fn(net, batch))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {float(loss.detach())} at epoch {epoch + 1}")
            self.scaler.scale(loss).backward()
            if self.config.grad_clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(net.parameters(), self.config.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.scheduler is not None and self.scheduler_per_step:
                self.scheduler.step()
            sums["loss"] += float(loss.detach())
            count += 1
            if progress:
                progress.update(task, advance=1, description=f"epoch {epoch + 1}/{self.config.max_epochs} "
                                f"loss {sums['loss'] / count:.4g}")
        return self._mean(sums, count)["loss"]

    @torch.no_grad()
    def _validate(self, net: nn.Module, data: Dataset) -> dict[str, float]:
        net.eval()
        sums: dict[str, float] = {}
        count = 0
        for batch in self._loader(data, shuffle=False, epoch=0):
            batch = _to_device(batch, self.device)
            if self.val_fn is None:
                metrics = {"val_loss": float(_split(self.loss_fn(net, batch))[0])}
            else:
                metrics = {k: float(v) for k, v in self.val_fn(net, batch).items()}
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
        return self._mean(sums, count)

    def _checkpoint(self, name: str, epoch: int, history: History) -> None:
        if not (self.is_main and self.config.checkpoint_dir):
            return
        folder = Path(self.config.checkpoint_dir)
        folder.mkdir(parents=True, exist_ok=True)
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
            "scaler": self.scaler.state_dict(),
            "epoch": epoch,
            "history": asdict(history),
            "rng": _rng_state(),
            "config": asdict(self.config),
        }
        with atomic_path(folder / name) as tmp:
            torch.save(state, tmp)

    def fit(self, train_data: Dataset, val_data: Dataset | None = None, *, resume: str | os.PathLike | None = None) -> History:
        """Train for ``config.max_epochs`` epochs (or until early stopping)."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        history = History()
        start = 0
        if resume is None:
            seed_everything(self.config.seed)
        else:
            state = load_checkpoint(resume)
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None and state["scheduler"]:
                self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            history = History(**state["history"])
            start = int(state["epoch"]) + 1
            _set_rng_state(state["rng"])
        net: nn.Module = self.model
        if self.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        best_state = None
        show = self.is_main and not self.config.quiet
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), transient=True, disable=not show)
        with progress:
            for epoch in range(start, self.config.max_epochs):
                train_loss = self._train_epoch(net, train_data, epoch, progress if show else None)
                metrics = self._validate(net, val_data) if val_data is not None else {"val_loss": train_loss}
                history.train_loss.append(train_loss)
                history.val.append(metrics)
                if self.scheduler is not None and not self.scheduler_per_step:
                    self.scheduler.step()
                value = metrics.get(self.config.monitor)
                if value is None:
                    raise KeyError(f"monitor {self.config.monitor!r} is not among the metrics {sorted(metrics)}")
                if self._better(value, history.best_value):
                    history.best_value, history.best_epoch = float(value), epoch
                    best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                    self._checkpoint("best.pt", epoch, history)
                self._checkpoint("last.pt", epoch, history)
                if show:
                    log.info("epoch %d: train %.4g, %s", epoch + 1, train_loss,
                             ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
                if self.config.patience is not None and epoch - history.best_epoch >= self.config.patience:
                    history.stopped_early = True
                    break
        if (history.stopped_early or self.config.restore_best) and best_state is not None:
            self.model.load_state_dict(best_state)
        return history
