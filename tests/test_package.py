"""The package's top level: pipelines reachable as ``mrinets.<pipeline>``, imported lazily."""

from __future__ import annotations

import subprocess
import sys

import pytest

import mrinets


@pytest.mark.parametrize("name", mrinets.PIPELINES)
def test_pipeline_from_the_top_is_the_pipeline_module(name):
    import importlib

    module = importlib.import_module(f"mrinets.pipelines.{name}")
    assert getattr(mrinets, name) is module
    for face in ("predict", "evaluate", "train"):
        assert callable(getattr(module, face)), f"mrinets.{name} lacks {face}()"


def test_from_import_and_unknown_name():
    from mrinets import qsm

    assert qsm.__name__ == "mrinets.pipelines.qsm"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        mrinets.nope  # noqa: B018


def test_import_mrinets_does_not_import_torch():
    code = "import sys, mrinets; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
