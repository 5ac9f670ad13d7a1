"""Bad input: one line ``mrinets: error: <file>: <problem>``, exit 2, no output file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mrinets.cli import main


def _gre(tmp_path: Path, shape=(24, 24, 16), echoes=2, affine=None, name="gre"):
    """A small two-echo GRE pair: a bright ball in noise, phase of a smooth field."""
    rng = np.random.default_rng(0)
    g = np.stack(np.meshgrid(*[np.arange(s) - s / 2 for s in shape], indexing="ij"))
    ball = (g**2).sum(0) < (min(shape) / 2.5) ** 2
    te = np.array([0.005, 0.010])[:echoes]
    field = 150.0 * g[0] / shape[0]  # Hz, enough to wrap
    mag = np.stack([ball * np.exp(-t * 20) + 0.02 * rng.random(shape) for t in te], -1).astype(np.float32)
    phase = np.angle(np.exp(1j * 2 * np.pi * field[..., None] * te)).astype(np.float32)
    noise = rng.uniform(-np.pi, np.pi, phase.shape).astype(np.float32)  # phase of background noise
    phase = np.where(ball[..., None], phase, noise)
    affine = np.diag([1.0, 1.0, 1.5, 1.0]) if affine is None else affine
    mpath, ppath = tmp_path / f"{name}_mag.nii.gz", tmp_path / f"{name}_phase.nii.gz"
    nib.save(nib.Nifti1Image(mag, affine), mpath)
    nib.save(nib.Nifti1Image(phase, affine), ppath)
    return mpath, ppath


def _run(argv, capsys):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.err


def _assert_one_line_error(code, err, *needles):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mrinets: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, err)


def _qsm(mag, phase, out, *extra):
    return ["qsm", "predict", "--mag", mag, "--phase", phase, "--te", "0.005", "0.010", "--b0", "3", "--out", out,
            "--no-qc", *extra]


def test_good_input_writes_outputs(tmp_path, capsys):
    mag, phase = _gre(tmp_path)
    out = tmp_path / "out"
    code, err = _run(_qsm(mag, phase, out, "--vsharp-radius", "3"), capsys)
    assert code == 0, err
    assert {"chi.nii.gz", "local_field.nii.gz", "mask.nii.gz", "measures.json"} <= {p.name for p in out.iterdir()}


def _no_outputs(out: Path) -> bool:
    return not out.exists() or not any(out.iterdir())


def test_missing_file(tmp_path, capsys):
    mag, _ = _gre(tmp_path)
    out = tmp_path / "out"
    code, err = _run(_qsm(mag, tmp_path / "nope.nii.gz", out), capsys)
    _assert_one_line_error(code, err, "nope.nii.gz", "file not found")
    assert _no_outputs(out)


def test_not_nifti(tmp_path, capsys):
    mag, _ = _gre(tmp_path)
    bad = tmp_path / "phase.nii.gz"
    bad.write_text("hello")
    out = tmp_path / "out"
    code, err = _run(_qsm(mag, bad, out), capsys)
    _assert_one_line_error(code, err, "phase.nii.gz", "not a NIfTI image")
    assert _no_outputs(out)


def test_wrong_dimensionality(tmp_path, capsys):
    mag, phase = _gre(tmp_path)
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8), np.float32), np.eye(4)), flat)
    out = tmp_path / "out"
    code, err = _run(_qsm(flat, phase, out), capsys)
    _assert_one_line_error(code, err, "flat.nii.gz", "expected a 3D or 4D image, got 2D")
    assert _no_outputs(out)


def test_nan_voxels(tmp_path, capsys):
    mag, phase = _gre(tmp_path)
    img = nib.load(phase)
    data = img.get_fdata().astype(np.float32)
    data[3, 3, 3, 0] = np.nan
    nanpath = tmp_path / "nan_phase.nii.gz"
    nib.save(nib.Nifti1Image(data, img.affine), nanpath)
    out = tmp_path / "out"
    code, err = _run(_qsm(mag, nanpath, out), capsys)
    _assert_one_line_error(code, err, "nan_phase.nii.gz", "1 voxels are NaN or infinite")
    assert _no_outputs(out)


def test_empty_image(tmp_path, capsys):
    _, phase = _gre(tmp_path)
    empty = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((24, 24, 16, 2), np.float32), np.diag([1.0, 1.0, 1.5, 1.0])), empty)
    out = tmp_path / "out"
    code, err = _run(_qsm(empty, phase, out), capsys)
    _assert_one_line_error(code, err, "empty.nii.gz", "image is empty")
    assert _no_outputs(out)


def test_mismatched_grids(tmp_path, capsys):
    mag, _ = _gre(tmp_path)
    shifted = np.diag([1.0, 1.0, 1.5, 1.0])
    shifted[:3, 3] = [2.0, 0.0, 0.0]
    _, phase = _gre(tmp_path, affine=shifted, name="other")
    out = tmp_path / "out"
    code, err = _run(_qsm(mag, phase, out), capsys)
    _assert_one_line_error(code, err, "other_phase.nii.gz", "affine differs")
    assert _no_outputs(out)
    _, small = _gre(tmp_path, shape=(20, 24, 16), name="small")
    code, err = _run(_qsm(mag, small, out), capsys)
    _assert_one_line_error(code, err, "small_phase.nii.gz", "does not match")
    assert _no_outputs(out)


@pytest.mark.parametrize(
    "flags, needles",
    [
        (["--te", "-0.005", "0.01"], ["--te", "positive"]),
        (["--te", "5", "10"], ["--te", "not ms"]),
        (["--b0", "0"], ["--b0", "positive"]),
        (["--b0-dir", "0", "0", "0"], ["--b0-dir", "not all zero"]),
        (["--b0", "nan"], ["--b0", "not a finite number"]),
        (["--te", "0.005"], ["gre_phase.nii.gz", "2 echo(es) but 1 echo time"]),
    ],
)
def test_bad_numbers(tmp_path, capsys, flags, needles):
    mag, phase = _gre(tmp_path)
    out = tmp_path / "out"
    argv = _qsm(mag, phase, out)
    for flag in {f for f in flags if f.startswith("--") and f in argv}:
        i = argv.index(flag)
        n = {"--te": 2, "--b0": 1, "--b0-dir": 0}[flag]
        del argv[i : i + 1 + n]
    argv += flags
    code, err = _run(argv, capsys)
    _assert_one_line_error(code, err, *needles)
    assert _no_outputs(out)


def test_phase_in_unknown_units(tmp_path, capsys):
    mag, phase = _gre(tmp_path)
    img = nib.load(phase)
    hz = tmp_path / "fieldmap.nii.gz"
    nib.save(nib.Nifti1Image((img.get_fdata() * 0 + np.linspace(0, 30, 24)[:, None, None, None]).astype(np.float32),
                             img.affine), hz)
    out = tmp_path / "out"
    code, err = _run(_qsm(mag, hz, out), capsys)
    _assert_one_line_error(code, err, "fieldmap.nii.gz", "neither in radians nor in scanner units")
    assert _no_outputs(out)


def test_output_folder_not_writable(tmp_path, capsys):
    mag, phase = _gre(tmp_path)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should go")
    code, err = _run(_qsm(mag, phase, blocker / "out"), capsys)
    _assert_one_line_error(code, err, "blocker", "cannot create output folder")
    code, err = _run(_qsm(mag, phase, blocker), capsys)
    _assert_one_line_error(code, err, "blocker", "exists and is not a folder")


def test_failure_mid_run_leaves_no_partial_file(tmp_path, capsys, monkeypatch):
    """A crash while outputs are being written publishes none of them."""
    from mrinets.pipelines import qsm

    mag, phase = _gre(tmp_path)
    out = tmp_path / "out"

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(qsm, "write_json", boom)
    with pytest.raises(OSError, match="disk full"):
        main([str(a) for a in _qsm(mag, phase, out, "--vsharp-radius", "3")])
    assert list(out.iterdir()) == []


def test_bvecs_not_unit_and_count_mismatch(tmp_path, capsys):
    dwi = tmp_path / "dwi.nii.gz"
    nib.save(nib.Nifti1Image(np.random.rand(6, 6, 6, 4).astype(np.float32), np.eye(4)), dwi)
    bval = tmp_path / "dwi.bval"
    bvec = tmp_path / "dwi.bvec"
    bval.write_text("0 1000 1000 1000\n")
    bvec.write_text("0 1 0 0\n0 0 1 0\n0 0 0 0.5\n")
    code, err = _run(["info", dwi, "--bval", bval, "--bvec", bvec], capsys)
    _assert_one_line_error(code, err, "dwi.bvec", "b-vector 3 has length 0.5, not 1")
    bvec.write_text("0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    bval.write_text("0 1000 1000\n")
    code, err = _run(["info", dwi, "--bval", bval, "--bvec", bvec], capsys)
    _assert_one_line_error(code, err, "dwi.bvec", "has 4 b-vectors but dwi.bval has 3 b-values")
    bval.write_text("1000 1000 1000 1000\n")
    bvec.write_text("1 1 0 0\n0 0 1 0\n0 0 0 1\n")
    code, err = _run(["info", dwi, "--bval", bval, "--bvec", bvec], capsys)
    _assert_one_line_error(code, err, "dwi.bval", "no b=0 volume")
    bval.write_text("0 1000 1000 1000\n")
    code = main([str(a) for a in ["info", dwi, "--bval", bval, "--bvec", bvec]])
    assert code == 0
    assert "b=0 x1, b=1000 x3" in capsys.readouterr().out


def test_usage_errors_are_one_line_exit_2():
    proc = subprocess.run([sys.executable, "-m", "mrinets.cli", "qsm", "predict", "--b0", "x"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("mrinets: error:")


def test_debug_shows_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mrinets.cli", "info", str(tmp_path / "missing.nii"), "--debug"],
        capture_output=True, text=True,
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_help_lists_every_command():
    proc = subprocess.run([sys.executable, "-m", "mrinets.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for name in ["demo", "phantom", "wmh", "cmb", "qsm", "microstructure", "lowfield", "batch", "bids"]:
        assert name in proc.stdout
    version = subprocess.run([sys.executable, "-m", "mrinets.cli", "--version"], capture_output=True, text=True)
    assert version.stdout.startswith("mrinets ")


def test_help_and_version_do_not_import_the_pipelines():
    """The command list comes from cli.common.COMMANDS; torch is imported only by the command that runs."""
    probe = ("import sys\nfrom mrinets.cli import main\n"
             "for argv in (['--version'], ['--help'], ['wmh', '--help']):\n"
             "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
             "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert proc.stdout.strip().splitlines()[-1] == "False", proc.stderr


def test_command_summaries_match_the_modules():
    from mrinets.cli import build_parser
    from mrinets.cli.common import COMMANDS

    full, listed = build_parser(), build_parser(full=())
    for parser in (full, listed):
        choices = parser._subparsers._group_actions[0]._choices_actions
        assert {a.dest: a.help for a in choices} == COMMANDS
