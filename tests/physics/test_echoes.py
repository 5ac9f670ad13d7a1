"""Acquisition checks, phase/field units, multi-echo fits and phase-unit detection (with real data)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mrinets.io.nifti import load
from mrinets.physics.echoes import (
    GAMMA,
    GreAcquisition,
    detect_phase_units,
    fit_echoes,
    hz_to_ppm,
    phase_to_hz,
    phase_to_ppm,
    ppm_to_hz,
)


def test_acquisition_normalises_and_validates():
    acq = GreAcquisition(echo_times=[0.004, 0.008, 0.012], b0=3, b0_dir=(0, 0, 2), voxel_size=(0.5, 0.5, 1))
    assert acq.echo_times == (0.004, 0.008, 0.012) and acq.n_echoes == 3
    assert acq.b0 == 3.0 and acq.b0_dir == (0.0, 0.0, 1.0)
    flipped = np.diag([1.0, -1.0, -1.0, 1.0])
    np.testing.assert_allclose(acq.b0_dir_in_voxels(flipped), (0, 0, -1))
    assert float(acq.hz_to_ppm(GAMMA / (2 * math.pi) * 3e-6)) == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"echo_times": [0.004, -0.008]}, "echo_times"),
        ({"echo_times": []}, "echo_times"),
        ({"echo_times": [4.0, 8.0]}, "echo_times"),  # milliseconds by mistake
        ({"b0": 0}, "b0"),
        ({"b0": float("nan")}, "b0"),
        ({"b0_dir": (0, 0, 0)}, "b0_dir"),
        ({"voxel_size": (1, 1, 0)}, "voxel_size"),
    ],
)
def test_acquisition_rejects_bad_arguments(kwargs, match):
    args = {"echo_times": [0.004, 0.008], "b0": 3.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        GreAcquisition(**args)


def test_units():
    # 1 ppm at 3 T is 127.7 Hz; at TE = 20 ms that is 16.05 rad
    hz_per_ppm = 42.577478518e6 * 3 * 1e-6
    assert float(ppm_to_hz(1.0, b0=3)) == pytest.approx(hz_per_ppm, rel=1e-6)
    assert float(hz_to_ppm(hz_per_ppm, b0=3)) == pytest.approx(1.0, rel=1e-6)
    phase = 2 * math.pi * hz_per_ppm * 0.02
    assert float(phase_to_hz(phase, te=0.02)) == pytest.approx(hz_per_ppm, rel=1e-6)
    assert float(phase_to_ppm(phase, te=0.02, b0=3)) == pytest.approx(1.0, rel=1e-6)
    assert phase_to_ppm(np.zeros((2, 2, 2)), te=0.02, b0=3).dtype == np.float32
    with pytest.raises(ValueError, match="te"):
        phase_to_hz(1.0, te=0)
    with pytest.raises(ValueError, match="b0"):
        hz_to_ppm(1.0, b0=-3)


def _multi_echo(offset=0.0, sigma=0.0, seed=0):
    rng = np.random.default_rng(seed)
    te = np.array([0.004, 0.008, 0.012, 0.016])
    field_hz = rng.uniform(-40, 40, (12, 10, 8)).astype(np.float32)
    magnitude = np.exp(-te / 0.03) * rng.uniform(0.5, 1.0, (12, 10, 8, 1))  # T2* decay
    phase = offset + 2 * np.pi * field_hz[..., None] * te
    phase = phase + rng.normal(0.0, 1.0, phase.shape) * sigma / magnitude  # noise ~ 1/magnitude
    return te, field_hz, phase.astype(np.float32), magnitude.astype(np.float32)


def test_fit_recovers_field_through_origin():
    te, field_hz, phase, magnitude = _multi_echo()
    fit = fit_echoes(phase, echo_times=te, magnitude=magnitude)
    np.testing.assert_allclose(fit.field_hz, field_hz, atol=1e-3)
    assert fit.field_hz.dtype == np.float32 and np.all(fit.offset == 0)
    assert fit.residual.max() < 1e-4


def test_fit_with_offset_and_noise():
    te, field_hz, phase, magnitude = _multi_echo(offset=0.7, sigma=0.02)
    fit = fit_echoes(phase, echo_times=te, magnitude=magnitude, offset=True)
    # 0.02 rad noise over 16 ms is ~1 Hz of noise per echo
    assert np.abs(fit.field_hz - field_hz).mean() < 1.0
    assert np.abs(fit.offset - 0.7).mean() < 0.06  # intercept: ~1.5x the per-echo noise
    assert 0.005 < np.median(fit.residual) < 0.05
    # weighting by magnitude^2 beats uniform weights when late echoes are noisier
    uniform = fit_echoes(phase, echo_times=te, offset=True)
    assert np.abs(fit.field_hz - field_hz).mean() < np.abs(uniform.field_hz - field_hz).mean()


def test_single_echo_and_mask():
    te, field_hz, phase, magnitude = _multi_echo()
    mask = np.zeros(field_hz.shape, bool)
    mask[2:8, 2:8, 2:6] = True
    fit = fit_echoes(phase[..., 1], echo_times=[te[1]], magnitude=magnitude[..., 1], mask=mask)
    np.testing.assert_allclose(fit.field_hz[mask], field_hz[mask], atol=1e-3)
    assert np.all(fit.field_hz[~mask] == 0)
    with pytest.raises(ValueError, match="echo_times"):
        fit_echoes(phase[..., 1], echo_times=[te[1]], offset=True)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"echo_times": [0.004, 0.008]}, "phase"),
        ({"magnitude": np.ones((3, 3, 3, 4))}, "magnitude"),
        ({"mask": np.ones((3, 3, 3), bool)}, "mask"),
        ({"echo_times": [0.004, 0.008, 0.0, 0.016]}, "echo_times"),
    ],
)
def test_fit_rejects_bad_arguments(kwargs, match):
    te, _, phase, _ = _multi_echo()
    args = {"echo_times": te, **kwargs}
    with pytest.raises(ValueError, match=match):
        fit_echoes(phase, **args)


def _wrapped(n=20000, seed=0):
    """Phase of a smooth field with many wraps: every value in (-pi, pi] about equally likely."""
    rng = np.random.default_rng(seed)
    return np.angle(np.exp(1j * rng.uniform(0, 40, n)))


@pytest.mark.parametrize(
    ("stored", "scale"),
    [
        (lambda p: p, 1.0),
        (lambda p: p + np.pi, 1.0),  # 0..2 pi
        (lambda p: np.round(p * 4096 / np.pi).clip(-4096, 4095), np.pi / 4096),
        (lambda p: np.round((p + np.pi) * 4096 / (2 * np.pi)).clip(0, 4095), 2 * np.pi / 4096),
        (lambda p: np.round(p * 1000), 1.0 / 1000),  # milliradians as integers
        (lambda p: np.degrees(p), np.pi / 180),
        (lambda p: p * 0.0037 / np.pi, np.pi / 0.0037),
    ],
)
def test_detect_phase_units(stored, scale):
    phase = _wrapped()
    assert detect_phase_units(stored(phase)) == pytest.approx(scale, rel=2e-3)


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(0).normal(0, 30, 20000),  # a field map in Hz, not phase
        np.linspace(-1.0, 2.0, 1000),  # radians that never wrap: scale unknowable
        np.zeros(100),
    ],
)
def test_detect_phase_units_refuses_unclear_data(values):
    with pytest.raises(ValueError, match="phase"):
        detect_phase_units(values)


def test_detect_phase_units_on_real_clearswi_phase(real_gre):
    _, phase_path = real_gre
    phase = load(phase_path, ndim=4)
    assert phase.shape == (40, 40, 20, 3)
    assert np.abs(phase.data).max() < 0.004  # the odd scale of the README
    scale = detect_phase_units(phase.data)
    radians = phase.data * scale
    assert np.abs(radians).max() == pytest.approx(np.pi, rel=1e-4)
    # the late echoes wrap: most of -pi..pi is used and both ends are reached by many voxels
    late = radians[..., 2]
    assert np.count_nonzero(late > 0.95 * np.pi) > 100 and np.count_nonzero(late < -0.95 * np.pi) > 100
