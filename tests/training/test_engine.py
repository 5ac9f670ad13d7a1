"""The training engine on a tiny regression problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from mrinets.errors import ArgumentError
from mrinets.training import TrainConfig, Trainer, load_checkpoint, resolve_device, seed_everything


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = x @ torch.tensor([[1.5], [-2.0], [0.5]]) + 0.3
    return TensorDataset(x, y)


def _model(seed=0):
    seed_everything(seed)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Dropout(0.1), nn.Linear(8, 1))


def mse(model, batch):
    x, y = batch
    return nn.functional.mse_loss(model(x), y)


def _fit(tmp_path=None, epochs=4, resume=None, seed=0, **kw):
    model = _model(seed)
    cfg = TrainConfig(max_epochs=epochs, batch_size=8, lr=1e-2, seed=seed, device="cpu", quiet=True,
                      checkpoint_dir=str(tmp_path) if tmp_path else None, **kw)
    trainer = Trainer(model, mse, cfg)
    history = trainer.fit(_data(), _data(32, seed=1), resume=resume)
    return model, history


def test_loss_decreases():
    _, history = _fit(epochs=6)
    assert history.train_loss[-1] < 0.5 * history.train_loss[0]
    assert history.val[-1]["val_loss"] < history.val[0]["val_loss"]


def test_same_seed_same_weights():
    a, _ = _fit()
    b, _ = _fit()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_resume_equals_uninterrupted(tmp_path):
    full, _ = _fit(epochs=4)
    _fit(tmp_path, epochs=2)
    resumed, history = _fit(epochs=4, resume=tmp_path / "last.pt")
    assert len(history.train_loss) == 4
    for pa, pb in zip(full.parameters(), resumed.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=1e-6)


def test_checkpoints_load_safely(tmp_path):
    _fit(tmp_path, epochs=2)
    state = load_checkpoint(tmp_path / "best.pt")
    assert state["epoch"] in (0, 1) and state["config"]["max_epochs"] == 2
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 1
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_early_stopping_restores_best():
    calls = {"n": 0}

    def val_fn(model, batch):
        calls["n"] += 1
        return {"score": float(calls["n"])}

    model = _model()
    cfg = TrainConfig(max_epochs=20, batch_size=8, device="cpu", quiet=True, patience=2, monitor="score", mode="min")
    history = Trainer(model, mse, cfg, val_fn=val_fn).fit(_data(), _data(8))
    assert history.stopped_early and len(history.train_loss) == 3 and history.best_epoch == 0


@pytest.mark.parametrize("field, value", [("max_epochs", 0), ("lr", 0.0), ("mode", "best"), ("patience", 0),
                                          ("batch_size", 0), ("grad_clip", -1.0)])
def test_config_validation(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ArgumentError, match="--device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ArgumentError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_non_finite_loss_is_reported():
    def bad(model, batch):
        return mse(model, batch) * float("nan")

    with pytest.raises(FloatingPointError, match="loss became nan"):
        Trainer(_model(), bad, TrainConfig(max_epochs=1, device="cpu", quiet=True)).fit(_data())


def test_dict_batches_and_logged_metrics():
    x = torch.randn(16, 3)
    data = [{"x": x[i], "y": x[i].sum(0, keepdim=True)} for i in range(16)]

    def loss_fn(model, batch):
        loss = nn.functional.mse_loss(model(batch["x"]), batch["y"])
        return loss, {"mse": float(loss.detach())}

    history = Trainer(_model(), loss_fn, TrainConfig(max_epochs=2, device="cpu", quiet=True)).fit(data)
    assert len(history.train_loss) == 2 and np.isfinite(history.train_loss).all()
