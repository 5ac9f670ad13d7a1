"""Shared fixtures: real reference data (skipped where absent) and temporary outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


def reference_file(*parts: str) -> Path:
    """Path of a file under ../shared/reference, or skip the test with the reason."""
    path = REFERENCE.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data not available: {path} (../shared/reference is absent)")
    return path


@pytest.fixture
def real_t1() -> Path:
    """The real LAS T1 of the deep-T1-WMH project (1.75 mm)."""
    return reference_file("deep-t1-wmh", "t1_image.nii.gz")


@pytest.fixture
def real_gre() -> tuple[Path, Path]:
    """The real 3-echo GRE crop of CLEARSWI.jl: (magnitude, phase)."""
    return reference_file("clearswi-small", "mag.nii"), reference_file("clearswi-small", "phase.nii")


@pytest.fixture
def wmh_boxes() -> Path:
    """Folder of deep-T1-WMH's frontal and right-side MNI boxes."""
    return reference_file("deep-t1-wmh", "frontalMNI_box.nii.gz").parent


@pytest.fixture
def ms_patient() -> tuple[Path, Path]:
    """The real MS patient (skull-stripped, MNI space, LAS): (T1, consensus lesion mask)."""
    return reference_file("ms-lesion-t1", "T1.nii.gz"), reference_file("ms-lesion-t1", "consensus_gt.nii.gz")


@pytest.fixture(autouse=True, scope="session")
def _cache_in_a_temporary_folder(tmp_path_factory):
    """Auxiliary phantoms kept by the microstructure pipeline go to a temporary folder, not ~/.cache."""
    import os

    old = os.environ.get("MRINETS_CACHE")
    os.environ["MRINETS_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("MRINETS_CACHE", None)
    else:
        os.environ["MRINETS_CACHE"] = old
