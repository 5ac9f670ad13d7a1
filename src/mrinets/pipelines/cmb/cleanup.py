"""Step 3 of the CMB detector: rules that remove what a microbleed cannot be.

Each candidate cluster is measured on the 1 mm working grid and kept only when

- its volume lies in the range of a microbleed's apparent size (2-10 mm across);
- it is roughly spherical (smallest over largest principal spread);
- it is not part of a vessel: the connected dark structure it belongs to,
  within 12 mm, is not a long thin tube;
- it lies at least a set distance inside the brain edge (flow voids in sulci,
  partial volume at the cortex and the brain edge);
- on QSM, its susceptibility is positive (paramagnetic hemosiderin, not a
  diamagnetic calcification).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from mrinets.pipelines.cmb.data import Z_SCALE

__all__ = ["CleanupRules", "cluster_features", "rule_failures", "rejection_reason", "cleanup", "RULES", "SHAPE_RULES"]

_FULL = np.ones((3, 3, 3), bool)
RULES = ("too_small", "too_large", "not_spherical", "vessel", "brain_edge", "diamagnetic")
# Rules a confident step-2 probability overrides (the others are anatomy and physics, not shape).
SHAPE_RULES = ("too_small", "not_spherical", "vessel")


@dataclass(frozen=True)
class CleanupRules:
    """Bounds of step 3 (mm, mm^3, robust SD units)."""

    min_volume_mm3: float = 3.0
    max_volume_mm3: float = 600.0
    min_sphericity: float = 0.3
    vessel_length_mm: float = 10.0
    vessel_elongation: float = 2.5
    vessel_level_sd: float = 3.0
    vessel_reach_mm: float = 12.0
    min_edge_distance_mm: float = 1.5
    qsm_sign: bool = True
    bloom_fraction: float = 0.5
    bloom_radius_mm: float = 6.0
    override_probability: float = 0.8

    def __post_init__(self) -> None:
        if not 0 <= self.min_volume_mm3 < self.max_volume_mm3:
            raise ValueError("min_volume_mm3 must be non-negative and below max_volume_mm3")
        if not 0 <= self.min_sphericity <= 1:
            raise ValueError(f"min_sphericity must be in [0, 1], got {self.min_sphericity}")
        if self.min_edge_distance_mm < 0:
            raise ValueError(f"min_edge_distance_mm must not be negative, got {self.min_edge_distance_mm}")
        if not 0 < self.bloom_fraction < 1:
            raise ValueError(f"bloom_fraction must be in (0, 1), got {self.bloom_fraction}")
        if not 0 < self.override_probability <= 1:
            raise ValueError(f"override_probability must be in (0, 1], got {self.override_probability}")

    def as_dict(self) -> dict:
        return asdict(self)


def _spread(points_mm: np.ndarray) -> np.ndarray:
    """Principal variances (descending) of a voxel set, each voxel counted as a unit cube (+1/12)."""
    if len(points_mm) < 2:
        return np.full(3, 1.0 / 12.0)
    cov = np.cov(points_mm.T) + np.eye(3) / 12.0
    return np.sort(np.linalg.eigvalsh(cov))[::-1]


def cluster_features(labels: np.ndarray, z: np.ndarray, mask: np.ndarray, raw: np.ndarray, *,
                     voxel_mm: float = 1.0, rules: CleanupRules = CleanupRules()) -> list[dict]:
    """Measures of each cluster ``1..labels.max()`` (isotropic grid of ``voxel_mm``).

    Returns dicts with ``volume_mm3``, ``sphericity`` (sqrt of the smallest
    over the largest principal variance), ``vessel_length_mm`` and
    ``vessel_elongation`` (of the dark structure around it), ``edge_mm`` (from
    the centre to the brain edge) and ``raw_contrast`` (mean of the raw image
    in the cluster minus the brain median; its sign is the susceptibility's
    on QSM).
    """
    n = int(labels.max())
    if n == 0:
        return []
    # A mask that reaches the field of view's border goes on beyond it: that border is no brain edge.
    edge = ndimage.distance_transform_edt(np.pad(mask, 1, mode="edge"), sampling=voxel_mm)[1:-1, 1:-1, 1:-1]
    median = float(np.median(raw[mask])) if mask.any() else 0.0
    floor = rules.vessel_level_sd / Z_SCALE
    reach = int(np.ceil(rules.vessel_reach_mm / voxel_mm))
    out = []
    for i, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            out.append({"volume_mm3": 0.0, "cluster_volume_mm3": 0.0, "sphericity": 0.0, "vessel_length_mm": 0.0,
                        "vessel_elongation": 1.0, "edge_mm": 0.0, "raw_contrast": 0.0})
            continue
        where = np.argwhere(labels[box] == i) + [b.start for b in box]
        centre = where.mean(0)
        peak = where[np.argmax(z[tuple(where.T)])]
        # The bloom: what is brighter than a share of the candidate's peak, connected to the peak, within +- reach.
        # A microbleed blooms far above a vein, so a vein next to it (or merged into its candidate) falls outside.
        lo = np.maximum(peak - reach, 0)
        hi = np.minimum(peak + reach + 1, labels.shape)
        sub = tuple(slice(a, b) for a, b in zip(lo, hi))
        level = max(floor, rules.bloom_fraction * float(z[tuple(peak)]))
        bright = z[sub] >= level
        bright[tuple(peak - lo)] = True
        comp, _ = ndimage.label(bright, _FULL)
        structure = (np.argwhere(comp == comp[tuple(peak - lo)]) + lo) * voxel_mm
        # Size and shape of the bloom itself: the part of the structure within the largest apparent radius.
        bloom = structure[((structure - peak * voxel_mm) ** 2).sum(1) <= rules.bloom_radius_mm**2]
        lam, slam = _spread(bloom), _spread(structure)
        out.append({
            "volume_mm3": float(max(len(bloom), len(where)) * voxel_mm**3),
            "cluster_volume_mm3": float(len(where) * voxel_mm**3),
            "sphericity": float(np.sqrt(lam[-1] / lam[0])),
            "vessel_length_mm": float(np.sqrt(12.0 * slam[0])),
            "vessel_elongation": float(np.sqrt(slam[0] / slam[1])),
            "edge_mm": float(edge[tuple(np.clip(np.round(centre).astype(int), 0, np.array(labels.shape) - 1))]),
            "raw_contrast": float(raw[labels == i].mean() - median),
        })
    return out


def rule_failures(features: dict, contrast: str, rules: CleanupRules = CleanupRules()) -> list[str]:
    """Every rule of step 3 a cluster fails, in the order :func:`rejection_reason` tests them."""
    failed = []
    if features["volume_mm3"] < rules.min_volume_mm3:
        failed.append("too_small")
    if features["volume_mm3"] > rules.max_volume_mm3:
        failed.append("too_large")
    if features["sphericity"] < rules.min_sphericity:
        failed.append("not_spherical")
    long = features["vessel_length_mm"] >= rules.vessel_length_mm
    if long and features["vessel_elongation"] >= rules.vessel_elongation:
        failed.append("vessel")
    if features["edge_mm"] < rules.min_edge_distance_mm:
        failed.append("brain_edge")
    if contrast == "qsm" and rules.qsm_sign and features["raw_contrast"] <= 0:
        failed.append("diamagnetic")
    return failed


def rejection_reason(features: dict, contrast: str, rules: CleanupRules = CleanupRules(),
                     probability: float | None = None) -> str | None:
    """Why step 3 removes a cluster (the first rule it fails; None: kept).

    A cluster that fails only shape rules (:data:`SHAPE_RULES`) is kept when
    the step-2 ``probability`` reaches ``rules.override_probability``: the
    shape of a bloom on the 1 mm grid is a coarse measure, the classifier's
    confident judgement of the whole patch a better one.
    """
    failed = rule_failures(features, contrast, rules)
    if failed and probability is not None and probability >= rules.override_probability \
            and set(failed) <= set(SHAPE_RULES):
        return None
    return failed[0] if failed else None


def cleanup(labels: np.ndarray, z: np.ndarray, mask: np.ndarray, raw: np.ndarray, contrast: str, *,
            voxel_mm: float = 1.0, rules: CleanupRules = CleanupRules(),
            probabilities=None) -> tuple[list[dict], list[str | None]]:
    """Features and rejection reason of every cluster of ``labels`` (``probabilities``: step 2's, per cluster)."""
    features = cluster_features(labels, z, mask, raw, voxel_mm=voxel_mm, rules=rules)
    probs = [None] * len(features) if probabilities is None else [float(p) for p in probabilities]
    return features, [rejection_reason(f, contrast, rules, p) for f, p in zip(features, probs)]
