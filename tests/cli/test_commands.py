"""The phantom, info and demo commands do what their help says."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from mrinets.cli import main


def test_phantom_qsm_command(tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["phantom", "qsm", "--seed", "3", "--voxel-size", "4", "--te", "0.005", "0.01", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert nib.load(out / "phase.nii.gz").shape[-1] == 2
    assert json.loads((out / "phantom.json").read_text())["seed"] == 3


def test_phantom_head_command_is_reproducible(tmp_path):
    for name in ("a", "b"):
        assert main(["phantom", "head", "--seed", "5", "--fast", "--contrasts", "t1w", "--voxel-size", "2", "2", "2",
                     "--out", str(tmp_path / name), "--quiet"]) == 0
    a = nib.load(tmp_path / "a" / "t1w.nii.gz").get_fdata()
    b = nib.load(tmp_path / "b" / "t1w.nii.gz").get_fdata()
    np.testing.assert_array_equal(a, b)


def test_phantom_bad_option_is_one_line(tmp_path, capsys):
    code = main(["phantom", "head", "--seed", "1", "--fast", "--contrasts", "dwi", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "--contrasts: must be among" in err
    assert not any((tmp_path / "x").iterdir())


def test_info_prints_geometry(real_t1, capsys):
    assert main(["info", str(real_t1)]) == 0
    out = capsys.readouterr().out
    assert "LAS on disk" in out and "1.75 x 1.75 x 1.75 mm" in out


@pytest.mark.slow
def test_demo_writes_report(tmp_path):
    assert main(["demo", "--out", str(tmp_path), "--quiet"]) == 0
    html = (tmp_path / "index.html").read_text()
    assert "QSM (TV)" in html and "qc_chi.png" in html
    assert "Microbleeds on SWI" in html and "synthetic 3 T (LoHiResGAN)" in html
