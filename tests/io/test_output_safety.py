"""Outputs never replace inputs, respect the umask, and leave no stale stage behind."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys

import numpy as np
import pytest

from mrinets.errors import OutputError
from mrinets.io import OutputStage, atomic_path, ensure_outdir, guard_inputs, note_input, write_json, write_text
from mrinets.io.nifti import from_array, save


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_outputs_respect_the_umask(tmp_path, umask_027):
    write_text(tmp_path / "a.txt", "x")
    save(from_array(np.ones((4, 4, 4))), tmp_path / "a.nii.gz", like=from_array(np.ones((4, 4, 4))))
    with OutputStage(tmp_path / "run") as stage:
        write_json(stage.path("m.json"), {})
    assert _mode(tmp_path / "a.txt") == 0o640
    assert _mode(tmp_path / "a.nii.gz") == 0o640
    assert _mode(tmp_path / "run" / "m.json") == 0o640
    assert _mode(tmp_path / "run") == 0o750
    os.umask(0o002)
    write_text(tmp_path / "b.txt", "x")
    assert _mode(tmp_path / "b.txt") == 0o664


def test_a_folder_is_not_a_file_target(tmp_path):
    (tmp_path / "scores").mkdir()
    with pytest.raises(OutputError, match="is a folder; give a file name"):
        write_json(tmp_path / "scores", {})
    assert list((tmp_path / "scores").iterdir()) == []


def test_full_disk_is_one_output_error(tmp_path, monkeypatch):
    import errno

    import nibabel

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(nibabel, "save", full)
    like = from_array(np.ones((4, 4, 4)))
    with pytest.raises(OutputError, match="a.nii.gz: cannot be written .No space left on device."):
        with OutputStage(tmp_path / "out") as stage:
            save(like, stage.path("a.nii.gz"), like=like)
    assert list((tmp_path / "out").iterdir()) == []


def test_a_folder_in_the_way_of_an_output(tmp_path):
    (tmp_path / "chi.nii.gz").mkdir()
    with pytest.raises(OutputError, match="is a folder; an output file of this name cannot replace it"):
        with OutputStage(tmp_path) as stage:
            stage.path("chi.nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chi.nii.gz"]


def test_empty_output_path_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for empty in ("", "  "):
        with pytest.raises(OutputError, match="output folder: the path is empty"):
            ensure_outdir(empty)
    assert list(tmp_path.iterdir()) == []


def test_raw_bids_root_is_refused_but_derivatives_are_not(tmp_path):
    raw = tmp_path / "ds"
    raw.mkdir()
    (raw / "dataset_description.json").write_text(json.dumps({"Name": "x", "BIDSVersion": "1.9.0"}))
    with pytest.raises(OutputError, match="root of a raw BIDS dataset"):
        ensure_outdir(raw)
    with pytest.raises(OutputError, match="root of a raw BIDS dataset"):
        with OutputStage(raw):
            pass
    assert ensure_outdir(raw / "derivatives" / "mrinets") == raw / "derivatives" / "mrinets"
    derived = tmp_path / "deriv"
    derived.mkdir()
    (derived / "dataset_description.json").write_text(json.dumps({"Name": "x", "DatasetType": "derivative"}))
    assert ensure_outdir(derived) == derived


def test_guard_refuses_to_replace_an_input(tmp_path):
    own = tmp_path / "own"
    own.mkdir()
    mask = own / "mask.nii.gz"
    mask.write_bytes(b"the user's mask")
    with guard_inputs():
        note_input(mask)
        with pytest.raises(OutputError, match="would replace an input of this run"):
            with OutputStage(own) as stage:
                write_text(stage.path("chi.nii.gz"), "chi")
                write_text(stage.path("mask.nii.gz"), "ours")
        with pytest.raises(OutputError, match="would replace an input"):
            write_text(mask, "ours")
    assert mask.read_bytes() == b"the user's mask"
    assert sorted(p.name for p in own.iterdir()) == ["mask.nii.gz"]
    write_text(mask, "outside a guarded run the library writes where it is told")
    assert mask.read_text().startswith("outside")


def test_guard_sees_through_symlinks(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    mask = data / "mask.nii.gz"
    mask.write_bytes(b"m")
    (tmp_path / "link").symlink_to(data, target_is_directory=True)
    (tmp_path / "m_link.nii.gz").symlink_to(mask)
    with guard_inputs():
        note_input(tmp_path / "m_link.nii.gz")
        with pytest.raises(OutputError, match="would replace an input"):
            write_text(tmp_path / "link" / "mask.nii.gz", "x")
        with pytest.raises(OutputError, match="would replace an input"):
            write_text(tmp_path / "m_link.nii.gz", "x")
        write_text(tmp_path / "link" / "other.json", "fine")
    assert mask.read_bytes() == b"m"


def _stage_name(pid: int, host: str | None = None) -> str:
    return f".mrinets-stage-{pid}@{host or socket.gethostname()}-abc123"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_stages_are_cleaned_live_ones_kept(tmp_path):
    dead = tmp_path / _stage_name(_dead_pid())
    live = tmp_path / _stage_name(os.getppid())
    other_host = tmp_path / _stage_name(_dead_pid(), "another-node")
    stale_tmp = tmp_path / f".chi.nii.gz.mrinets-tmp-{_dead_pid()}@{socket.gethostname()}-x1.nii.gz"
    for folder in (dead, live, other_host):
        folder.mkdir()
        (folder / "chi.nii.gz").write_bytes(b"partial")
    stale_tmp.write_bytes(b"partial")
    sibling = tmp_path / "sub-02"  # another subject's folder, written by a live run: never looked into
    (sibling / _stage_name(_dead_pid())).mkdir(parents=True)
    with OutputStage(tmp_path) as stage:
        write_text(stage.path("a.txt"), "a")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["a.txt", live.name, other_host.name, "sub-02"])
    assert len(list(sibling.iterdir())) == 1


def test_stage_names_carry_pid_and_host(tmp_path):
    with OutputStage(tmp_path) as stage:
        path = stage.path("a.txt")
        assert path.parent.name.startswith(f".mrinets-stage-{os.getpid()}@{socket.gethostname()}-")
        with atomic_path(path) as tmp:
            assert f".mrinets-tmp-{os.getpid()}@" in tmp.name
            tmp.write_text("a")
