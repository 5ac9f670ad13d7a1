"""Atomic writes and staged outputs leave nothing partial behind."""

from __future__ import annotations

import os

import pytest

from mrinets.errors import OutputError
from mrinets.io import OutputStage, atomic_path, ensure_outdir, write_json


def test_atomic_path_renames_on_success_and_cleans_on_failure(tmp_path):
    target = tmp_path / "map.nii.gz"
    with atomic_path(target) as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path
        tmp.write_text("ok")
        assert not target.exists()
    assert target.read_text() == "ok"
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "other.json") as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.nii.gz"]


def test_stage_publishes_all_or_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with OutputStage(tmp_path) as stage:
            stage.path("a.txt").write_text("a")
            raise RuntimeError("failed half-way")
    assert list(tmp_path.iterdir()) == []
    with OutputStage(tmp_path) as stage:
        stage.path("a.txt").write_text("a")
        write_json(stage.path("m.json"), {"x": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "m.json"]
    with pytest.raises(ValueError, match="plain file name"):
        with OutputStage(tmp_path) as stage:
            stage.path("../escape.txt")


def test_ensure_outdir_errors(tmp_path):
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(OutputError, match="exists and is not a folder"):
        ensure_outdir(afile)
    if os.geteuid() == 0:
        pytest.skip("root can write into read-only folders; permission check not testable")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="not writable"):
            ensure_outdir(locked)
    finally:
        locked.chmod(0o700)
