"""Diffusion MRI: acquisition schemes, the NODDI model, its AMICO-style linear fit, q-space interpolation."""

from mrinets.physics.diffusion.noddi import (
    D_ISO,
    D_PAR,
    KAPPA_MAX,
    ball_signal,
    kappa_from_odi,
    noddi_signal,
    odi_from_kappa,
    stick_signal,
    watson_tau,
    zeppelin_signal,
)
from mrinets.physics.diffusion.scheme import B0_THRESHOLD, GradientScheme
from mrinets.physics.diffusion.amico import NoddiFit, NoddiModel
from mrinets.physics.diffusion.nnls import nnls_batch
from mrinets.physics.diffusion.qspace import QSpaceInterpolator, resample_dwi

__all__ = [
    "B0_THRESHOLD",
    "D_ISO",
    "D_PAR",
    "KAPPA_MAX",
    "GradientScheme",
    "NoddiFit",
    "NoddiModel",
    "QSpaceInterpolator",
    "nnls_batch",
    "resample_dwi",
    "ball_signal",
    "kappa_from_odi",
    "noddi_signal",
    "odi_from_kappa",
    "stick_signal",
    "watson_tau",
    "zeppelin_signal",
]
