"""``mrinets wmh train`` as a library call: subjects, first step or init, training, card, files.

:func:`train_and_save` is what the command runs; the command only maps its
flags onto :class:`WmhTrainRun` and :class:`~mrinets.pipelines.wmh.model.WmhTrainConfig`.
A bad field raises :class:`~mrinets.errors.ConfigError` naming it (the command
reports it under its flag).
"""

from __future__ import annotations

import argparse
import functools
import shlex
from dataclasses import dataclass
from pathlib import Path

from mrinets.errors import ArgumentError, ConfigError

__all__ = ["WmhTrainRun", "train_and_save", "train_command"]


@dataclass
class WmhTrainRun:
    """What a training run is given besides the training configuration: its subjects, start and outputs.

    ``phantoms`` phantoms from ``seed_start`` (of the ``phantom_lesions``
    model) and/or the rows of ``pairs`` (a TSV with columns t1 and
    flair_label); ``first_step``: a network from an earlier run on the same
    subjects, used as the first step; ``init``: weights every step starts
    from; ``grow_min_prob``: written on the card for ``predict``'s growth;
    ``test_phantoms``: held-out phantoms scored onto the card.
    """

    out: str | Path
    phantoms: int = 0
    seed_start: int = 1000
    pairs: str | None = None
    phantom_lesions: str = "wmh"
    first_step: str | None = None
    init: str | None = None
    grow_min_prob: float | None = None
    test_phantoms: int = 0
    workers: int = 1

    def __post_init__(self) -> None:
        from mrinets.data.phantoms.wmh import LESION_MODELS
        from mrinets.pipelines.wmh import TEST_SEED_START
        from mrinets.pipelines.wmh.segment import WmhConfig

        if self.phantoms < 0:
            raise ConfigError("phantoms", "counts must not be negative")
        if self.test_phantoms < 0:
            raise ConfigError("test_phantoms", "counts must not be negative")
        if self.workers < 1:
            raise ConfigError("workers", f"must be at least 1, got {self.workers}")
        if self.phantom_lesions not in LESION_MODELS:
            raise ConfigError("phantom_lesions", f"must be one of {', '.join(LESION_MODELS)}")
        if self.phantoms == 0 and not self.pairs:
            raise ConfigError("subjects", "give --phantoms N and/or --pairs TSV")
        if set(range(self.seed_start, self.seed_start + self.phantoms)) & set(
                range(TEST_SEED_START, TEST_SEED_START + self.test_phantoms)):
            raise ConfigError("seed_start", "training seeds overlap the held-out test seeds")
        WmhConfig(grow_min_prob=self.grow_min_prob)  # predict's check of the value, before hours of training

    @property
    def subjects(self) -> dict:
        """The training subjects as the model card stores them (JSON)."""
        return {"phantoms": self.phantoms, "seed_start": self.seed_start, "pairs": self.pairs}


def train_command(config, run: WmhTrainRun) -> str:
    """The canonical ``mrinets wmh train`` line of a run, every option spelled out, so the card reproduces it."""
    from mrinets.pipelines.wmh.model import WmhTrainConfig

    argv = ["--out", str(run.out), "--phantoms", str(run.phantoms), "--seed-start", str(run.seed_start),
            "--loss", config.loss, "--epochs", str(config.epochs), "--samples-per-subject",
            str(config.samples_per_subject), "--batch-size", str(config.batch_size), "--lr", f"{config.lr:g}",
            "--seed", str(config.seed), "--test-phantoms", str(run.test_phantoms)]
    if run.pairs:
        argv += ["--pairs", run.pairs]
    if not config.two_step:
        argv.append("--one-step")
    if not config.recalibrate:
        argv.append("--no-recalibrate")
    if config.second_temperature is not None:
        argv += ["--second-temperature", f"{config.second_temperature:g}"]
    if config.tilt:
        argv += ["--tilt", f"{config.tilt:g}"]
    if config.dense_weight:
        argv += ["--dense-weight", f"{config.dense_weight:g}"]
    for flag, used in (("--unscore-unmarked", config.unscore_unmarked),
                       ("--centre-thresholds", config.centre_thresholds),
                       ("--mask-thresholds", config.mask_thresholds)):
        if used:
            argv.append(flag)
    if run.grow_min_prob is not None:
        argv += ["--grow-min-prob", f"{run.grow_min_prob:g}"]
    if tuple(config.channels) != WmhTrainConfig.channels:
        argv += ["--channels", *map(str, config.channels)]
    if run.first_step:
        argv += ["--first-step", run.first_step]
    if run.phantom_lesions != "wmh":
        argv += ["--phantom-lesions", run.phantom_lesions]
    if run.init:
        argv += ["--init", run.init]
    return "mrinets wmh train " + " ".join(shlex.quote(a) for a in argv)


def train_and_save(config, run: WmhTrainRun) -> Path:
    """Train as ``mrinets wmh train`` does and write ``wmh_t1.pt``, its card and ``train_report.json`` to ``run.out``.

    Every input (``first_step``, ``init``, seeds) is checked before the
    output folder is made. With ``config.two_step`` the first step is written
    (``wmh_t1_step1.pt``) as soon as it exists. Returns the weights' path.
    """
    from mrinets.io import ensure_outdir, write_json, write_text
    from mrinets.pipelines import wmh
    from mrinets.pipelines.wmh.card import CARD_BASELINE_K, earlier_first_steps, model_card_text

    init = _load_init(run.init, config) if run.init else None
    first = None
    if run.first_step:
        if not config.two_step:
            raise ConfigError("first_step", "needs the second step (drop --one-step)")
        first = _load_first_step(run.first_step, config, run)
    out = ensure_outdir(run.out)
    command = train_command(config, run)
    pairs = _read_pairs(run.pairs) if run.pairs else []
    subjects = [wmh.pair_subject(t1, label) for t1, label in pairs]
    seeds = range(run.seed_start, run.seed_start + run.phantoms)
    subjects += wmh.phantom_subjects(seeds, workers=run.workers, quiet=config.quiet,
                                     make=functools.partial(wmh.phantom_subject, lesions=run.phantom_lesions))
    # The first step is kept as soon as it exists (the ablation benchmark scores it, and a stop loses less).
    first_card = first.card if first is not None else {"command": "first step of: " + command,
                                                         "subjects": run.subjects}

    def save_first(first_model):
        wmh.save_weights(first_model, config, out / "wmh_t1_step1.pt", first_card)

    model, report, _ = wmh.train(subjects, config, first=None if first is None else first.network,
                                 on_first=save_first if config.two_step else None,
                                 init=None if init is None else init.network.state_dict())
    card = {"command": command, "first_step_command": first_card["command"].removeprefix("first step of: "),
            "earlier_first_step_commands": earlier_first_steps(first_card),
            "train_seconds": report["train_seconds"], "config": report["config"], "subjects": run.subjects,
            "dropped_by_two_step": report.get("dropped", []), "n_subjects": len(subjects),
            "label_recalibration": report.get("recalibration", {}),
            "mask_thresholds": report.get("mask_thresholds", {})}
    if run.grow_min_prob is not None:
        card["grow_min_prob"] = run.grow_min_prob
    if run.phantom_lesions != "wmh":
        card["phantom_lesions"] = run.phantom_lesions
    if init is not None:
        card["init"] = {"weights": run.init, "command": init.card.get("command", ""),
                        "first_step_command": init.card.get("first_step_command", ""), "init": init.card.get("init")}
    if run.test_phantoms:
        test_seeds = list(range(wmh.TEST_SEED_START, wmh.TEST_SEED_START + run.test_phantoms))
        scores = wmh.evaluate_phantoms({"network": wmh.WmhModel(model, config.patch_size, card)}, test_seeds,
                                       baseline_k=CARD_BASELINE_K, device=config.device)
        card["held_out"] = scores["summary"]
        card["held_out_seeds"] = test_seeds
        card["held_out_mirror_pass"] = scores["mirror_pass"]
        card["held_out_window_overlap"] = scores["window_overlap"]
        card["held_out_pv_trim"] = scores["pv_trim"]
        card["held_out_grow"] = scores["grow"]
        report["held_out"] = scores
    weights = wmh.save_weights(model, config, out / "wmh_t1.pt", card)
    write_json(out / "train_report.json", report)
    write_text(out / "wmh_t1.md", model_card_text(card))
    return weights


def _read_pairs(path: str) -> list[tuple[str, str]]:
    from mrinets.io.tables import read_tsv

    base = Path(path).parent
    return [(str(base / r["t1"]), str(base / r["flair_label"])) for r in read_tsv(path, required=("t1", "flair_label"))]


def _load(path: str, field: str):
    from mrinets.pipelines.wmh.segment import load_model

    try:
        return load_model(path)
    except ArgumentError as exc:
        raise ConfigError(field, exc.problem) from None


def _load_init(path: str, config):
    """The network ``init`` names, checked to fit this run's channels and patch size."""
    from mrinets.pipelines.wmh.network import build_network

    model = _load(path, "init")
    try:
        build_network(config.channels).load_state_dict(model.network.state_dict())
    except RuntimeError:
        raise ConfigError("init", f"{path} has other channels than this run (--channels)") from None
    if tuple(model.patch_size) != config.patch_size:
        raise ConfigError("init", f"{path} was trained on other patches ({model.patch_size})")
    return model


def _load_first_step(path: str, config, run: WmhTrainRun):
    model = _load(path, "first_step")
    command = model.card.get("command", "").removeprefix("first step of: ")
    if tuple(model.patch_size) != config.patch_size or not command.startswith("mrinets wmh train "):
        raise ConfigError("first_step", f"{path} is not a network saved by `mrinets wmh train`")
    # Its labels are fitted against that network, so it must have been trained on the same subjects. Cards
    # written before they held the subjects as JSON give them only in their command line.
    theirs = model.card.get("subjects")
    if theirs is None:
        subjects = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        subjects.add_argument("--phantoms", type=int, default=0)
        subjects.add_argument("--seed-start", type=int, default=1000)
        subjects.add_argument("--pairs")
        theirs = vars(subjects.parse_known_args(shlex.split(command.removeprefix("mrinets wmh train ")))[0])

    def who(a: dict) -> str:
        pairs = f" and pairs {Path(a['pairs']).name}" if a.get("pairs") else ""
        return f"{a['phantoms']} phantoms from seed {a['seed_start']}{pairs}"

    if who(theirs) != who(run.subjects):
        raise ConfigError("first_step", f"{path} was trained on {who(theirs)}, this run on {who(run.subjects)}")
    return model

