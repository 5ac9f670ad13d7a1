"""The registry of shipped networks, one per common acquisition scheme, and the choice among them.

A network reads S/S0 on the fixed volumes of its own scheme (its first layer
has one weight per diffusion-weighted volume), so an input on another set of
directions is interpolated in q-space onto them first. Within a shell this is
interpolation over the sphere and is reliable; across b-values it is a model
(the multi-tensor dictionary) and is only done between the input's shells,
never beyond them. Hence a network *fits* an input when their shells pair up
within :data:`SHELL_MATCH` (directions may differ), and *covers* it when the
input has two or more shells spanning the network's; otherwise the model fit
serves the scan.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrinets.physics.diffusion import GradientScheme

__all__ = ["SHELL_MATCH", "SchemeSpec", "REGISTRY", "WEIGHTS_DIR", "Choice", "shipped", "choose", "spec_scheme",
           "shell_match"]

SHELL_MATCH = 0.10  # relative b-value difference under which two shells are the same shell
WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"


@dataclass(frozen=True)
class SchemeSpec:
    """A common scheme: directions per shell (b=0 volumes carry no network input)."""

    name: str
    shells: tuple[tuple[float, int], ...]
    weights: str
    like: str

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.weights


# Ordered by priority; the first is the fine-tuned network of the paper's experiment (its scheme is the
# thinned ISBI 2013 scheme, see data.target_scheme), the others are pretrained on the auxiliary phantoms.
REGISTRY: dict[str, SchemeSpec] = {s.name: s for s in (
    SchemeSpec("b1500-b2500", ((1500.0, 12), (2500.0, 18)), "microstructure_noddi.pt", "ISBI 2013 thinned"),
    SchemeSpec("b1000-b2000", ((1000.0, 50), (2000.0, 50)), "microstructure_noddi_b1000_b2000.pt", "UK Biobank"),
    SchemeSpec("b1000", ((1000.0, 32),), "microstructure_noddi_b1000.pt", "clinical single shell"),
    SchemeSpec("b700-b2000", ((700.0, 30), (2000.0, 60)), "microstructure_noddi_b700_b2000.pt", "clinical NODDI"),
    SchemeSpec("b1000-b2000-b3000", ((1000.0, 60), (2000.0, 60), (3000.0, 60)),
               "microstructure_noddi_b1000_b2000_b3000.pt", "HCP, thinned to 60 directions per shell"),
)}


def spec_scheme(spec: SchemeSpec, *, n_b0: int = 1) -> GradientScheme:
    """The spec's scheme: evenly spread directions on each shell, each shell's set turned about z.

    The turn (golden angle per shell) keeps the shells from sharing directions, as real schemes do.
    """
    if spec.name == "b1500-b2500":
        from mrinets.pipelines.microstructure.data import target_scheme

        return target_scheme()
    from mrinets.physics.diffusion.amico import hemisphere_directions

    bvals, bvecs = [np.zeros(n_b0)], [np.zeros((n_b0, 3))]
    for k, (b, n) in enumerate(spec.shells):
        angle = k * np.pi * (3.0 - np.sqrt(5.0))
        turn = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0, 0, 1.0]])
        bvals.append(np.full(n, b))
        bvecs.append(hemisphere_directions(n) @ turn.T)
    return GradientScheme(np.concatenate(bvals), np.concatenate(bvecs))


def shell_match(a: float, b: float) -> bool:
    return abs(a - b) <= SHELL_MATCH * max(a, b)


@dataclass(frozen=True)
class Choice:
    """The network picked for an input scheme and why."""

    name: str
    path: Path
    kind: str  # "shells match" or "interpolated across b-values"
    distance: float


def shipped() -> list[SchemeSpec]:
    """The registry's networks whose weights are installed."""
    return [s for s in REGISTRY.values() if s.path.exists()]


def _distance(network: tuple[float, ...], shells: tuple[float, ...]) -> float:
    return float(sum(min(abs(b - s) / b for s in shells) for b in network))


def fits(network: tuple[float, ...], shells: tuple[float, ...]) -> str | None:
    """``"shells match"``, ``"interpolated across b-values"`` or None (this network cannot serve those shells)."""
    if not shells:
        return None
    if len(network) == len(shells) and all(any(shell_match(b, s) for s in shells) for b in network) and all(
            any(shell_match(b, s) for b in network) for s in shells):
        return "shells match"
    lo, hi = min(shells) * (1 - SHELL_MATCH), max(shells) * (1 + SHELL_MATCH)
    # A single-shell network would discard the other shells: it serves single-shell inputs only.
    if len(shells) >= 2 and len(network) >= 2 and all(lo <= b <= hi for b in network):
        return "interpolated across b-values"
    return None


def choose(shells: tuple[float, ...], candidates: list[SchemeSpec] | None = None) -> Choice | None:
    """The nearest network for an input with these ``shells``: shells matching first, then covered; else None."""
    candidates = shipped() if candidates is None else candidates
    best: tuple | None = None
    for rank, spec in enumerate(candidates):
        network = tuple(b for b, _ in spec.shells)
        kind = fits(network, shells)
        if kind is None:
            continue
        key = (kind != "shells match", _distance(network, shells), -len(network), rank)
        if best is None or key < best[0]:
            best = (key, Choice(spec.name, spec.path, kind, round(key[1], 4)))
    return None if best is None else best[1]
