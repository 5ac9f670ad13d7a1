"""Argument helpers shared by the sub-command modules."""

from __future__ import annotations

import argparse
import math

__all__ = ["COMMANDS", "add_common", "finite_float", "positive_float", "nonnegative_float", "share_float",
           "positive_int", "nonnegative_int"]

# Each sub-command (the module mrinets.cli.<name>) and its one-line summary, in the order `mrinets --help` lists
# them; kept here so the list can be shown without importing the modules, some of which import torch.
COMMANDS = {
    "demo": "run every available pipeline on built-in data and write an HTML report",
    "phantom": "write a synthetic subject with its ground truth",
    "info": "check a NIfTI image (and bval/bvec) and print its geometry",
    "qsm": "quantitative susceptibility mapping from GRE magnitude + phase",
    "wmh": "white-matter hypointensities on 3D T1 (Thyreau et al. 2022)",
    "cmb": "cerebral microbleed detection on SWI/GRE/QSM (Sundaresan et al. 2023)",
    "microstructure": "NODDI microstructure from few-gradient dMRI (Li et al. 2020)",
    "lowfield": "64 mT to 3 T image translation (LoHiResGAN, Islam et al. 2023)",
    "batch": "run a pipeline on many subjects listed in a TSV (resumable, Dask)",
    "bids": "BIDS App: run pipelines on every participant of a BIDS dataset",
}


def add_common(parser: argparse.ArgumentParser) -> None:
    """Options every command accepts, after the sub-command name too."""
    parser.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars or info messages")
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks and debug messages")


def finite_float(text: str) -> float:
    """A float that is not NaN or infinite."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite float above zero."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def nonnegative_float(text: str) -> float:
    """A finite float, zero or above."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def share_float(text: str) -> float:
    """A finite float from 0 to 1."""
    value = finite_float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie between 0 and 1, got {text}")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def positive_int(text: str) -> int:
    """A whole number, 1 or more (epochs, batch sizes, counts of things to make)."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def nonnegative_int(text: str) -> int:
    """A whole number, 0 or more (seeds, optional counts)."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def reports_flags(flags: dict[str, str] | None = None):
    """Decorate a command: a :class:`~mrinets.errors.ConfigError` from the library is reported under its flag.

    ``flags`` maps the fields whose flag is not ``--`` + the field with dashes.
    """
    import functools

    from mrinets.errors import ArgumentError, ConfigError

    flags = flags or {}

    def wrap(command):
        @functools.wraps(command)
        def run(args: argparse.Namespace) -> int:
            try:
                return command(args)
            except ConfigError as exc:
                flag = flags.get(exc.field, "--" + exc.field.replace("_", "-"))
                raise ArgumentError(flag, exc.problem) from None
        return run

    return wrap
