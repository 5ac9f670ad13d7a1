"""``mrinets wmh tune``: the growth floor chosen on cached probability maps, and written on the card."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mrinets.cli import main
from mrinets.pipelines import wmh
from mrinets.pipelines.wmh import tune
from mrinets.pipelines.wmh.card import model_card_text
from mrinets.pipelines.wmh.segment import MaskInputs


def _case(lesions: str = "wmh", seed: int = 1) -> tune.TuningCase:
    """A 9-voxel lesion whose network core is 7 voxels wide: growth recovers its edge where the floor is at most
    0.2, and at 0.05 also takes a dark spot beside it that is not lesion."""
    shape = (24, 24, 24)
    t1 = np.ones(shape, np.float32)
    prob = np.full(shape, 0.01, np.float32)
    truth = np.zeros(shape, bool)
    truth[6:15, 6:15, 6:15] = True
    t1[truth] = 0.6
    prob[truth] = 0.2
    prob[7:14, 7:14, 7:14] = 0.95
    t1[15:17, 6:15, 6:15], prob[15:17, 6:15, 6:15] = 0.6, 0.07
    inputs = MaskInputs(prob=prob, scaled=t1, csf=0.2, affine=np.eye(4), shape=shape, to_mni=np.eye(4))
    inputs.wm = np.ones(shape, np.float32)  # the template's white matter everywhere (cached_property's slot)
    return tune.TuningCase(seed=seed, lesions=lesions, inputs=inputs, truth=truth, voxel_ml=0.001)


@pytest.fixture(scope="module")
def report():
    cases = [_case("wmh", 1), _case("ms", 2)]
    scores = tune.score_grid(cases, tune.GROW_GRID)
    return {"seeds": {"wmh": [1], "ms": [2]}, "rule": tune.RULE, "grid": [tune.floor_label(f) for f in tune.GROW_GRID],
            "scores": scores, "chosen": tune.choose_floor(scores), "before": 0.1}


def test_the_grid_is_scored_on_the_cached_map_and_the_best_floor_chosen(report):
    scores = report["scores"]
    assert list(scores) == ["none", "0.05", "0.1", "0.15", "0.2", "0.3", "0.5"]
    # Without growth (and above the edge's 0.2) the mask is the 343-voxel core of the 729-voxel lesion.
    assert scores["none"]["dice"] == pytest.approx(2 * 343 / (343 + 729))
    assert scores["0.3"]["dice"] == scores["0.5"]["dice"] == scores["none"]["dice"]
    # 0.05 reaches the dark spot beside the lesion (162 voxels), 0.1 to 0.2 stop at the lesion's edge.
    assert scores["0.05"]["dice"] == pytest.approx(2 * 729 / (729 + 729 + 162))
    assert scores["0.1"]["dice"] == scores["0.15"]["dice"] == scores["0.2"]["dice"] == pytest.approx(1.0)
    best = max(s["dice"] for s in scores.values())
    # The best score, tied three ways: the highest of the tied floors.
    assert report["chosen"] == 0.2 and scores["0.2"]["dice"] == best
    assert scores["0.2"]["by_lesions"]["ms"]["dice_mean"] == pytest.approx(1.0)
    assert scores["0.05"]["summary"]["fp_lesion_ml_mean"] + scores["0.05"]["summary"]["edge_fp_ml_mean"] > 0.1


def test_ties_go_to_the_higher_floor_and_no_growth_counts_highest():
    scores = {"none": {"floor": None, "dice": 0.70}, "0.1": {"floor": 0.1, "dice": 0.7015},
              "0.2": {"floor": 0.2, "dice": 0.69}}
    assert tune.choose_floor(scores) is None
    assert tune.choose_floor(scores, tie=0.001) == 0.1
    assert tune.choose_floor({k: v for k, v in scores.items() if k != "none"}) == 0.1


def test_the_card_records_the_choice_its_command_and_the_grid(report):
    card = {"command": "mrinets wmh train --out x", "config": {}, "n_subjects": 1, "train_seconds": 1.0,
            "dropped_by_two_step": [], "grow_min_prob": 0.1, "held_out": {"network": {}}, "held_out_seeds": [1]}
    command = tune.tune_command("w.pt", "out", phantoms=1, seed_start=1, lesion_models=["wmh", "ms"],
                                grid=tune.GROW_GRID)
    assert command.endswith("--phantom-lesions wmh ms --grid none 0.05 0.1 0.15 0.2 0.3 0.5")
    tuned = tune.tuned_card(card, report, command)
    assert tuned["grow_min_prob"] == 0.2 and tuned["grow_tuning"]["chosen"] == "0.2"
    assert tuned["grow_tuning"]["command"] == command and tuned["grow_tuning"]["before"] == "0.1"
    # Held-out scores made with the floor before no longer describe the network as predict runs it.
    assert not any(k.startswith("held_out") for k in tuned)
    text = model_card_text(tuned)
    assert command in text and "give at least 0.2 (chosen by `mrinets wmh tune`" in text
    assert "| 0.2 | 1.0000 | 1.0000 | 1.0000 |" in text
    # No growth chosen: the card says so, and predict's network grows only when given a floor.
    bare = tune.tuned_card(card, {**report, "chosen": None}, command)
    assert bare["grow"] is False and "grow_min_prob" not in bare
    assert not wmh.WmhModel(None, (8, 8, 8), bare).grows and "does not grow the mask" in model_card_text(bare)


def test_cli_tune_writes_the_same_weights_with_the_chosen_floor(tmp_path, monkeypatch, capsys):
    from mrinets.pipelines.wmh.model import WmhTrainConfig, build_network

    config = WmhTrainConfig(channels=(4, 8, 16, 32), patch_size=(32, 32, 24))
    torch.manual_seed(0)
    weights = wmh.save_weights(build_network(config.channels), config, tmp_path / "w.pt",
                               {"command": "test", "config": {}, "n_subjects": 2, "train_seconds": 1.0,
                                "dropped_by_two_step": [],
                                "subjects": {"phantoms": 2, "seed_start": 10, "pairs": None}})
    asked = {}

    def cached(model, seeds, **kw):
        asked.update(seeds)
        return [_case(lesions, seed) for lesions, group in seeds.items() for seed in group]

    monkeypatch.setattr(tune, "tuning_cases", cached)
    out = tmp_path / "tuned"
    assert main(["wmh", "tune", "--weights", str(weights), "--out", str(out), "--phantoms", "2", "--seed-start",
                 "20", "--grid", "none", "0.05", "0.2", "0.3"]) == 0
    assert asked == {"wmh": [20, 21], "ms": [22, 23], "ms-flair": [24, 25]}
    assert "chose 0.2" in capsys.readouterr().out
    before, after = torch.load(weights, weights_only=True), torch.load(out / "wmh_t1.pt", weights_only=True)
    assert all(torch.equal(before["state_dict"][k], after["state_dict"][k]) for k in before["state_dict"])
    assert wmh.load_model(out / "wmh_t1.pt").grow_min_prob == 0.2
    assert json.loads((out / "tune_report.json").read_text())["chosen"] == 0.2
    assert "--seed-start 20" in (out / "wmh_t1.md").read_text()
    # Seeds that trained the network are refused before anything is written.
    assert main(["wmh", "tune", "--weights", str(weights), "--out", str(tmp_path / "no"), "--phantoms", "2",
                 "--seed-start", "8"]) == 2
    assert "seeds 10..11 trained this network" in capsys.readouterr().err and not (tmp_path / "no").exists()


@pytest.mark.slow
def test_cached_maps_score_as_predict_does_on_a_phantom():
    model = wmh.load_model()
    cases = tune.tuning_cases(model, {"wmh": [700900]}, register=False, quiet=True)
    scored = tune.score_grid(cases, [model.grow_min_prob, None])
    direct = wmh.evaluate_phantoms({"n": model}, [700900], baseline_k=None, register=False)["subjects"]["n"][0]
    plain = wmh.evaluate_phantoms({"n": model}, [700900], baseline_k=None, register=False, grow=False)
    assert scored[tune.floor_label(model.grow_min_prob)]["subjects"][0]["dice"] == pytest.approx(direct["dice"])
    assert scored["none"]["subjects"][0]["dice"] == pytest.approx(plain["subjects"]["n"][0]["dice"])


def test_library_tunes_on_every_lesion_model_by_default_as_the_command_does(monkeypatch):
    from mrinets.data.phantoms.wmh import LESION_MODELS

    asked = {}

    def cached(model, seeds, **kw):
        asked.update(seeds)
        return [_case(lesions, seed) for lesions, group in seeds.items() for seed in group]

    monkeypatch.setattr(tune, "tuning_cases", cached)
    model = wmh.WmhModel(None, (8, 8, 8), {"subjects": {"phantoms": 2, "seed_start": 10}})
    report = tune.tune_growth(model, phantoms=1, seed_start=20, quiet=True)
    assert list(asked) == list(LESION_MODELS) == list(report["seeds"])
    assert report["chosen"] == 0.2


def test_cli_tune_defaults_are_the_librarys(tmp_path, monkeypatch):
    from mrinets.pipelines.wmh.model import WmhTrainConfig, build_network

    config = WmhTrainConfig(channels=(4, 8, 16, 32), patch_size=(32, 32, 24))
    weights = wmh.save_weights(build_network(config.channels), config, tmp_path / "w.pt",
                               {"command": "test", "config": {}, "n_subjects": 2, "train_seconds": 1.0,
                                "dropped_by_two_step": [],
                                "subjects": {"phantoms": 2, "seed_start": 10, "pairs": None}})
    asked = {}

    def cached(model, seeds, **kw):
        asked.update(seeds)
        return [_case(lesions, seed) for lesions, group in seeds.items() for seed in group]

    monkeypatch.setattr(tune, "tuning_cases", cached)
    out = tmp_path / "tuned"
    assert main(["wmh", "tune", "--weights", str(weights), "--out", str(out), "--phantoms", "1", "--quiet"]) == 0
    assert min(s for group in asked.values() for s in group) == tune.TUNE_SEED_START
    report = json.loads((out / "tune_report.json").read_text())
    assert report["grid"] == [tune.floor_label(f) for f in tune.GROW_GRID]
