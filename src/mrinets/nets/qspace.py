"""Microstructure estimator: unfolded sparse coding over a separable spatial-angular dictionary.

The network follows the MEDN/MESC line of Ye and colleagues: diffusion signals
of a small patch are sparse in a separable dictionary (spatial x angular), so
the analysis operator is a pair of learned projections; the sparse code is
found by an unfolded iterative solver whose steps carry an LSTM-like memory
(MESC-Net's "historical information"), and a small fully connected head maps
the code to the tissue parameters.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MescNet"]


class MescNet(nn.Module):
    """Patch of normalised diffusion signals -> tissue parameters of the centre voxel.

    Parameters
    ----------
    n_measurements : int
        Diffusion-weighted volumes of the scheme (signals are S/S0, b=0 volumes left out).
    n_voxels : int
        Voxels of the input patch (27 for 3x3x3).
    n_outputs : int
        Parameters estimated, each in [0, 1] (sigmoid).
    angular_atoms, spatial_atoms : int
        Sizes of the separable analysis projections.
    code_size : int
        Length of the sparse code.
    iterations : int
        Unfolded solver steps.
    hidden : int
        Width of the two hidden layers of the head.

    Notes
    -----
    With y the (voxels x measurements) patch and ``y~ = W_s y W_a`` its
    separable projection, each step t computes

        c~_t = W y~ + S x_{t-1},  f_t = sigm(F_x x_{t-1} + F_y y~),  i_t = sigm(I_x x_{t-1} + I_y y~)
        c_t = f_t * c_{t-1} + i_t * c~_t,  x_t = relu(c_t - lambda)

    i.e. a non-negative soft-thresholding step (ISTA) whose state is gated.

    References
    ----------
    Ye C, Li Y, Zeng X. An improved deep network for tissue microstructure
    estimation with uncertainty quantification. Med Image Anal 61 (2020) 101650.
    """

    def __init__(
        self,
        n_measurements: int,
        *,
        n_voxels: int = 27,
        n_outputs: int = 3,
        angular_atoms: int = 24,
        spatial_atoms: int = 4,
        code_size: int = 64,
        iterations: int = 3,
        hidden: int = 32,
    ) -> None:
        super().__init__()
        for name, value in (("n_measurements", n_measurements), ("n_voxels", n_voxels), ("n_outputs", n_outputs),
                            ("angular_atoms", angular_atoms), ("spatial_atoms", spatial_atoms),
                            ("code_size", code_size), ("iterations", iterations), ("hidden", hidden)):
            if int(value) < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        self.n_measurements = n_measurements
        self.n_voxels = n_voxels
        self.iterations = iterations
        self.angular = nn.Linear(n_measurements, angular_atoms, bias=False)
        self.spatial = nn.Linear(n_voxels, spatial_atoms, bias=False)
        features = angular_atoms * spatial_atoms
        self.code_size = code_size
        # Drive, forget gate and input gate from the signal (one product), and their recurrent parts.
        self.from_signal = nn.Linear(features, 3 * code_size)
        self.from_code = nn.Linear(code_size, 3 * code_size, bias=False)
        self.threshold = nn.Parameter(torch.full((iterations, code_size), 0.01))
        self.head = nn.Sequential(
            nn.Linear(code_size, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_outputs)
        )

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """``patches`` (B, n_voxels, n_measurements) -> (B, n_outputs) in [0, 1]."""
        if patches.ndim != 3 or patches.shape[1:] != (self.n_voxels, self.n_measurements):
            raise ValueError(
                f"expected patches of shape (B, {self.n_voxels}, {self.n_measurements}), got {tuple(patches.shape)}"
            )
        return self.from_angular(self.angular(patches))

    def from_angular(self, angular: torch.Tensor) -> torch.Tensor:
        """Patches already projected on the angular atoms (B, n_voxels, angular_atoms) -> parameters.

        Whole-volume inference projects every voxel once and gathers the
        projections of each patch, instead of projecting each voxel 27 times.
        """
        return self.decode(self.spatial(angular.transpose(1, 2)).flatten(1))

    def decode(self, projected: torch.Tensor) -> torch.Tensor:
        """Projected patches (B, angular_atoms * spatial_atoms) -> parameters (B, n_outputs)."""
        # The signal's share of the drive and the gates is the same at every step: computed once.
        from_signal = self.from_signal(projected)
        drive = from_signal[:, : self.code_size]
        code = torch.relu(drive - self.threshold[0])
        cell = drive
        for t in range(1, self.iterations):
            mixed = from_signal + self.from_code(code)
            recur, forget, admit = mixed.split(self.code_size, dim=1)
            cell = torch.sigmoid(forget) * cell + torch.sigmoid(admit) * recur
            code = torch.relu(cell - self.threshold[t])
        return torch.sigmoid(self.head(code))
