"""Low-field pipeline: the five models train and translate, weights round-trip, predict writes its outputs."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from mrinets.errors import ArgumentError
from mrinets.pipelines import lowfield
from mrinets.pipelines.lowfield.model import SliceData, pad_multiple, stack_slices, train_model, translate_volume


def _volumes(rng, n=2, shape=(20, 24, 6)):
    g = np.stack(np.meshgrid(*[np.arange(s) - s / 2 for s in shape], indexing="ij"))
    r = np.sqrt((g[:2] ** 2).sum(0))
    # A dark core, a bright ring and a grey rim: three tissue levels inside the mask.
    hf = np.where(r < 3, 0.25, np.where(r < 8, 1.0, np.where(r < 10, 0.6, 0.0))).astype(np.float32)
    lf = [np.clip(hf * 0.8 + rng.normal(0, 0.05, shape), 0, None).astype(np.float32) for _ in range(n)]
    return lf, [hf] * n, [r < 10] * n


def test_stack_and_pad():
    vol = np.arange(4 * 5 * 3, dtype=np.float32).reshape(4, 5, 3)
    st = stack_slices(vol, 1)
    assert st.shape == (3, 3, 4, 5)
    assert np.array_equal(st[0, 0], vol[..., 0]) and np.array_equal(st[0, 2], vol[..., 1])  # edge repeated
    padded, (ox, oy) = pad_multiple(vol, -1.0)
    assert padded.shape[:2] == (16, 16) and np.array_equal(padded[ox:ox + 4, oy:oy + 5], vol)


@pytest.mark.parametrize("model", lowfield.MODELS)
def test_each_model_trains_and_translates(model):
    rng = np.random.default_rng(0)
    lf, hf, masks = _volumes(rng)
    data = SliceData(lf, hf, masks, context=1)
    config = lowfield.TrainConfig(model=model, iterations=1, batch_size=2, features=4, n_blocks=1, device="cpu")
    gen, spec, history = train_model(data, config, quiet=True)
    assert set(history["final_losses"]) >= ({"cycle"} if model == "cyclegan" else {"l1"})
    out = translate_volume(gen, spec, lf[0], context=1)
    assert out.shape == lf[0].shape and np.all(np.isfinite(out))
    assert out.min() >= 0.0 and out.max() <= 1.0  # tanh range mapped back to [0, 1]


@pytest.mark.slow
def test_unet_learns_the_mapping():
    rng = np.random.default_rng(1)
    lf, hf, masks = _volumes(rng, n=2)
    data = SliceData(lf, hf, masks, context=0)
    config = lowfield.TrainConfig(model="unet", iterations=200, batch_size=4, features=8, context=0, lr=2e-3,
                                  device="cpu")
    before = np.abs(np.clip(lf[0], 0, 1) - hf[0]).mean()
    gen, spec, _ = train_model(data, config, quiet=True)
    after = np.abs(translate_volume(gen, spec, lf[0], context=0) - hf[0]).mean()
    assert after < 0.7 * before


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    rng = np.random.default_rng(2)
    lf, hf, masks = _volumes(rng)
    config = lowfield.TrainConfig(model="lohiresgan", iterations=1, batch_size=2, features=4, n_blocks=1,
                                  device="cpu")
    gen, spec, _ = train_model(SliceData(lf, hf, masks, 1), config, quiet=True)
    model = lowfield.LowFieldModel(generator=gen, spec=spec, context=1, contrast="t1",
                                   card={"config": config.as_dict(), "command": "test"})
    path = tmp_path_factory.mktemp("w") / "lowfield_t1.pt"
    lowfield.save_weights(model, path)
    return path, model


def test_weights_round_trip_and_contrast_check(tiny_weights):
    path, model = tiny_weights
    loaded = lowfield.load_model(path, "t1")
    x = torch.randn(1, 3, 16, 16)
    assert torch.allclose(loaded.generator(x), model.generator(x))
    with pytest.raises(ArgumentError, match="trained on t1"):
        lowfield.load_model(path, "t2")


def test_predict_writes_outputs_on_the_input_grid(tiny_weights, tmp_path):
    path, _ = tiny_weights
    shape = (24, 24, 6)
    g = np.stack(np.meshgrid(*[np.arange(s) - s / 2 for s in shape], indexing="ij"))
    data = (100 * (np.sqrt((g[:2] ** 2).sum(0)) < 9) + np.random.default_rng(3).random(shape)).astype(np.float32)
    affine = np.diag([1.6, 1.6, 5.0, 1.0])
    src = tmp_path / "lf.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), src)
    result = lowfield.predict(src, contrast="t1", weights=path, device="cpu")
    files = result.save(tmp_path / "out")
    assert {p.name for p in files} == set(lowfield.OUTPUT_NAMES.values())
    syn = nib.load(tmp_path / "out" / "synthetic_3t.nii.gz")
    assert syn.shape == shape and np.allclose(syn.affine, affine)
    work = nib.load(tmp_path / "out" / "synthetic_3t_work.nii.gz")
    assert np.allclose(np.abs(np.diag(work.affine))[:3], 2.0)
    measures = json.loads((tmp_path / "out" / "measures.json").read_text())
    assert set(measures["piqe"]) == {"lowfield", "synthetic"}
    assert measures["volumes_ml"]["synthetic"]["gm"] >= 0
    assert (tmp_path / "out" / "measures.csv").read_text().startswith("measure,lowfield,synthetic,unit")


def test_evaluate_pairs_scores_identity_as_perfect(tiny_weights):
    from mrinets.data.phantoms.lowfield import LowFieldPair

    rng = np.random.default_rng(4)
    _, hf, masks = _volumes(rng, n=2, shape=(24, 24, 12))
    hf = [h + rng.normal(0, 0.03, h.shape).astype(np.float32) for h in hf]  # a mixture needs spread classes
    tissue = np.zeros((3, *hf[0].shape), np.float32)
    pairs = [LowFieldPair(lowfield=hf[i], lowfield_affine=np.eye(4), lf_work=hf[i], hf_work=hf[i],
                          mask_work=masks[i], tissue_work=tissue, work_affine=np.eye(4) * 2, contrast="t1")
             for i in range(2)]
    scores = lowfield.evaluate_pairs({}, pairs)
    raw = scores["methods"]["lowfield"]
    assert raw["ssim"] == pytest.approx(1.0) and raw["nrmse"] == 0.0
    assert raw["mean_abs_pct_diff_regional"] == pytest.approx(0.0, abs=1e-9)
    from scipy import ndimage

    for pair in pairs:
        pair.lf_work = ndimage.gaussian_filter(pair.hf_work, 1.5)
    blurred = lowfield.evaluate_pairs({}, pairs)["methods"]["lowfield"]
    assert blurred["ssim"] < 0.95 and blurred["nrmse"] > 0.05
