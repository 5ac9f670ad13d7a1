"""Diffusion acquisition schemes: b-values, unit b-vectors, shells."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

__all__ = ["GradientScheme", "B0_THRESHOLD", "SHELL_TOLERANCE", "as_voxel_mask"]

B0_THRESHOLD = 50.0  # s/mm^2, as in io.gradients, DIPY and FSL
SHELL_TOLERANCE = 100.0  # s/mm^2: b-values this close belong to one shell


@dataclass(frozen=True, eq=False)
class GradientScheme:
    """A diffusion acquisition: one b-value (s/mm^2) and one unit b-vector per volume.

    Parameters
    ----------
    bvals : array_like, shape (N,)
    bvecs : array_like, shape (N, 3)
        Unit vectors for diffusion-weighted volumes (FSL convention, as DIPY
        reads them); b=0 rows are set to zero.

    Examples
    --------
    >>> s = GradientScheme([0, 1000, 1000], [[0, 0, 0], [1, 0, 0], [0, 1, 0]])
    >>> s.n, s.shells, int(s.b0_mask.sum())
    (3, (1000.0,), 1)
    """

    bvals: np.ndarray
    bvecs: np.ndarray

    def __post_init__(self) -> None:
        bvals = np.asarray(self.bvals, dtype=np.float64).reshape(-1)
        bvecs = np.asarray(self.bvecs, dtype=np.float64)
        if bvecs.shape != (bvals.size, 3):
            raise ValueError(f"bvecs must have shape ({bvals.size}, 3) to match bvals, got {bvecs.shape}")
        if not np.all(np.isfinite(bvals)) or np.any(bvals < 0):
            raise ValueError("bvals must be finite and non-negative")
        weighted = bvals > B0_THRESHOLD
        norms = np.linalg.norm(bvecs, axis=1)
        if np.any(weighted & (np.abs(norms - 1) > 0.05)):
            raise ValueError("bvecs of diffusion-weighted volumes must be unit vectors")
        unit = np.zeros_like(bvecs)
        unit[weighted] = bvecs[weighted] / norms[weighted, None]
        bvals = np.where(weighted, bvals, 0.0)
        object.__setattr__(self, "bvals", bvals)
        object.__setattr__(self, "bvecs", unit)

    @classmethod
    def from_files(
        cls, bval: str | os.PathLike, bvec: str | os.PathLike, *, n_volumes: int | None = None
    ) -> GradientScheme:
        """Read FSL ``bval``/``bvec`` files, checked as :func:`mrinets.io.gradients.read_bvals_bvecs` does."""
        from mrinets.io.gradients import read_bvals_bvecs

        return cls(*read_bvals_bvecs(bval, bvec, n_volumes=n_volumes))

    @classmethod
    def from_dipy(cls, name: str) -> GradientScheme:
        """One of DIPY's shipped tables (``gtab_3shell``, ``gtab_isbi2013_2shell``)."""
        from mrinets.data.templates import load_dipy_scheme

        return cls(*load_dipy_scheme(name))

    @property
    def n(self) -> int:
        return int(self.bvals.size)

    @property
    def b0_mask(self) -> np.ndarray:
        return self.bvals <= B0_THRESHOLD

    @property
    def shell_values(self) -> np.ndarray:
        """Per volume, the (rounded) b-value of its shell; 0 for b=0 volumes."""
        values = np.zeros(self.n)
        order = np.argsort(self.bvals)
        start = None
        for pos, i in enumerate(order):
            if self.bvals[i] <= B0_THRESHOLD:
                continue
            if start is None or self.bvals[i] - self.bvals[order[start]] > SHELL_TOLERANCE:
                start = pos
            group = order[start : pos + 1]
            values[group] = np.round(self.bvals[group].mean(), -1)
        return values

    @property
    def shells(self) -> tuple[float, ...]:
        """The b-values of the diffusion-weighted shells, ascending."""
        values = self.shell_values
        return tuple(float(v) for v in np.unique(values[values > 0]))

    def subset(self, indices: np.ndarray) -> GradientScheme:
        """The scheme of the volumes ``indices`` (integer positions or a boolean mask)."""
        indices = np.asarray(indices)
        return GradientScheme(self.bvals[indices], self.bvecs[indices])

    def with_b0(self, n_b0: int) -> GradientScheme:
        """The weighted volumes with exactly ``n_b0`` b=0 volumes in front."""
        weighted = ~self.b0_mask
        return GradientScheme(
            np.concatenate([np.zeros(n_b0), self.bvals[weighted]]),
            np.concatenate([np.zeros((n_b0, 3)), self.bvecs[weighted]]),
        )

    def spread_subset(self, n_per_shell: int | dict[float, int], *, n_b0: int = 1) -> GradientScheme:
        """Keep ``n_per_shell`` well-spread directions of each shell and ``n_b0`` b=0 volumes.

        See :meth:`spread_indices` for the choice.
        """
        return self.subset(self.spread_indices(n_per_shell, n_b0=n_b0))

    def spread_indices(self, n_per_shell: int | dict[float, int], *, n_b0: int = 1) -> np.ndarray:
        """Positions of the volumes :meth:`spread_subset` keeps (b=0 first, then shell by shell).

        Directions are picked greedily, each the one farthest (in angle, with
        antipodal symmetry) from those already kept, starting from the one
        closest to z: the usual way to thin a scheme without leaving holes.
        """
        shell_values = self.shell_values
        keep = list(np.flatnonzero(self.b0_mask)[:n_b0])
        if len(keep) < n_b0:
            raise ValueError(f"the scheme has {len(keep)} b=0 volumes, {n_b0} asked")
        for shell in self.shells:
            count = n_per_shell if isinstance(n_per_shell, int) else n_per_shell.get(shell, 0)
            members = np.flatnonzero(shell_values == shell)
            if count > members.size:
                raise ValueError(f"shell b={shell:g} has {members.size} directions, {count} asked")
            if count == 0:
                continue
            vecs = self.bvecs[members]
            chosen = [int(np.argmax(np.abs(vecs[:, 2])))]
            closeness = np.abs(vecs @ vecs[chosen[0]])
            for _ in range(count - 1):
                nxt = int(np.argmin(closeness))
                chosen.append(nxt)
                closeness = np.maximum(closeness, np.abs(vecs @ vecs[nxt]))
            keep.extend(members[sorted(chosen)])
        return np.array(keep)

    def same_as(self, other: GradientScheme, *, b_tol: float = 20.0, angle_tol_deg: float = 2.0) -> bool:
        """Whether ``other`` is this acquisition (same order; b-vector signs may differ)."""
        if other.n != self.n or np.any(np.abs(other.bvals - self.bvals) > b_tol):
            return False
        weighted = ~self.b0_mask
        cos = np.abs(np.sum(self.bvecs[weighted] * other.bvecs[weighted], axis=1))
        return bool(np.all(cos >= np.cos(np.deg2rad(angle_tol_deg))))

    def to_dict(self) -> dict:
        return {"bvals": self.bvals.round(3).tolist(), "bvecs": self.bvecs.round(6).tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> GradientScheme:
        return cls(np.asarray(d["bvals"]), np.asarray(d["bvecs"]))


def as_voxel_mask(mask: np.ndarray | None, spatial: tuple[int, ...]) -> np.ndarray:
    """``mask`` as booleans of the DWI's spatial shape (all voxels when None); ValueError naming it otherwise."""
    if mask is None:
        return np.ones(spatial, dtype=bool)
    mask = np.asarray(mask)
    if mask.shape != tuple(spatial):
        raise ValueError(f"mask must have the spatial shape of dwi {tuple(spatial)}, got {mask.shape}")
    return mask.astype(bool)
