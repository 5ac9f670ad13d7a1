"""Data safety and silently wrong numbers (issue 37): every case refused in one line, or made right.

Tiny images (16 x 16 x 12), ``--workers 0`` for batch; the pipeline itself is
replaced by a stand-in only where the thing tested is the path, staging or
resume logic around it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mrinets.cli import main

TES = (0.005, 0.010)
AFFINE = np.diag([1.0, 1.0, 1.5, 1.0])


def _gre_arrays(shape=(16, 16, 12), te=TES):
    rng = np.random.default_rng(0)
    g = np.stack(np.meshgrid(*[np.arange(s) - s / 2 for s in shape], indexing="ij"))
    ball = (g**2).sum(0) < (min(shape) / 2.5) ** 2
    field = 150.0 * g[0] / shape[0] + 40.0 * (g[1] / shape[1]) ** 2  # Hz
    mag = np.stack([ball * np.exp(-t * 20) + 0.02 * rng.random(shape) for t in te], -1).astype(np.float32)
    phase = np.angle(np.exp(1j * 2 * np.pi * field[..., None] * np.asarray(te))).astype(np.float32)
    phase = np.where(ball[..., None], phase, rng.uniform(-np.pi, np.pi, phase.shape)).astype(np.float32)
    return mag, phase, ball


def _gre(folder: Path, name="gre", order=(0, 1)) -> tuple[Path, Path]:
    mag, phase, _ = _gre_arrays()
    folder.mkdir(parents=True, exist_ok=True)
    mpath, ppath = folder / f"{name}_mag.nii.gz", folder / f"{name}_phase.nii.gz"
    nib.save(nib.Nifti1Image(mag[..., list(order)], AFFINE), mpath)
    nib.save(nib.Nifti1Image(phase[..., list(order)], AFFINE), ppath)
    return mpath, ppath


def _mask(path: Path, values: np.ndarray | None = None) -> Path:
    _, _, ball = _gre_arrays()
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(ball.astype(np.float32) if values is None else values, AFFINE), path)
    return path


def _run(argv, capsys):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.err


def _one_line(code, err, *needles):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mrinets: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, err)


def _empty(folder: Path) -> bool:
    return not folder.exists() or not any(folder.iterdir())


def _qsm(mag, phase, out, *extra, te=TES):
    return ["qsm", "predict", "--mag", mag, "--phase", phase, "--te", *map(str, te), "--b0", "3", "--out", out,
            "--no-qc", "--vsharp-radius", "3", *extra]


# ---------------------------------------------------------------- batch: subject names and the table

def _table(path: Path, rows: list[list[str]], header=("subject", "mag", "phase", "te", "b0")) -> Path:
    path.write_text("\n".join("\t".join(r) for r in [list(header), *rows]) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def gre_pair(tmp_path):
    return _gre(tmp_path / "in")


@pytest.mark.parametrize("name, needle", [
    ("../escape", "'../escape' is not a subject label"),
    ("{abs}", "is not a subject label"),
    ("", "column subject is empty"),
    ("s1/", "'s1/' is not a subject label"),
    (".", "'.' is not a subject label"),
    ("mrinets_summary_part0.tsv", "is the name of the batch's summary file"),
])
def test_batch_refuses_bad_subject_names_before_any_work(tmp_path, capsys, gre_pair, name, needle):
    name = name.format(abs=tmp_path / "abs" / "path")
    mag, phase = gre_pair
    table = _table(tmp_path / "subjects.tsv", [["s0", str(mag), str(phase), "0.005 0.01", "3"],
                                                [name, str(mag), str(phase), "0.005 0.01", "3"]])
    out = tmp_path / "out"
    code, err = _run(["batch", "qsm", table, "--out", out, "--workers", "0"], capsys)
    _one_line(code, err, "subjects.tsv:3", needle)
    assert _empty(out) and not (tmp_path / "escape").exists() and not (tmp_path / "abs").exists()


@pytest.mark.parametrize("names, needle", [
    (("s1", "s1"), "subject 's1' is listed twice (rows 2 and 3)"),
    (("s1", "S1"), "subject 'S1' is listed twice (rows 2 and 3; names differing only in case share a folder"),
])
def test_batch_refuses_duplicate_subjects(tmp_path, capsys, gre_pair, names, needle):
    mag, phase = gre_pair
    table = _table(tmp_path / "subjects.tsv", [[n, str(mag), str(phase), "0.005 0.01", "3"] for n in names])
    code, err = _run(["batch", "qsm", table, "--out", tmp_path / "out", "--workers", "0"], capsys)
    _one_line(code, err, needle)
    assert _empty(tmp_path / "out")


def test_batch_table_problems_are_one_line(tmp_path, capsys, gre_pair):
    mag, phase = gre_pair
    out = tmp_path / "out"
    good = ["s0", str(mag), str(phase), "0.005 0.01", "3"]
    cases = [
        ([good, ["s1", str(mag), str(phase)]], "subjects.tsv:3: row has 3 cells, the header 5 (missing: te, b0)"),
        ([good, ["s1", str(mag), str(phase), "0.005 0.01", ""]], "subjects.tsv:3: column b0 is empty"),
        ([good, ["s1", str(mag), str(phase), "0.005 0.01", "3", "extra"]], "row has 6 cells, the header 5"),
    ]
    for rows, needle in cases:
        code, err = _run(["batch", "qsm", _table(tmp_path / "subjects.tsv", rows), "--out", out, "--workers", "0"],
                         capsys)
        _one_line(code, err, needle)
        assert _empty(out)
    latin = tmp_path / "latin.tsv"
    latin.write_bytes("subject\tmag\tphase\tte\tb0\nJos\xe9\ta\tb\t0.01\t3\n".encode("latin-1"))
    code, err = _run(["batch", "qsm", latin, "--out", out, "--workers", "0"], capsys)
    _one_line(code, err, "latin.tsv", "not UTF-8 text (byte 0xe9 on line 2)")
    assert _empty(out)
    code, err = _run(["batch", "qsm", tmp_path, "--out", out, "--workers", "0"], capsys)
    _one_line(code, err, "is a folder, not a table")


def _fake_pipeline(monkeypatch, calls: list):
    """Stand-in for qsm.predict_and_save that publishes two files through an OutputStage."""
    from mrinets.io import OutputStage, write_text
    from mrinets.pipelines import qsm

    def fake(magnitude, phase, outdir, **kwargs):
        calls.append(Path(outdir).name)
        with OutputStage(outdir) as stage:
            write_text(stage.path("chi.nii.gz"), "chi")
            write_text(stage.path("measures.json"), "{}")
            return [stage.final(n) for n in stage.names]

    monkeypatch.setattr(qsm, "predict_and_save", fake)


def test_batch_table_with_bom_is_read(tmp_path, capsys, gre_pair, monkeypatch):
    """Spreadsheets write a byte-order mark before the header; it is not part of the first column's name."""
    calls: list = []
    _fake_pipeline(monkeypatch, calls)
    mag, phase = gre_pair
    table = tmp_path / "subjects.tsv"
    table.write_text(f"subject\tmag\tphase\tte\tb0\ns1\t{mag}\t{phase}\t0.005 0.01\t3\n", encoding="utf-8-sig")
    code, err = _run(["batch", "qsm", table, "--out", tmp_path / "out", "--workers", "0", "--quiet"], capsys)
    assert code == 0, err
    assert calls == ["s1"]


def test_resume_checks_the_outputs_the_marker_lists(tmp_path, capsys, gre_pair, monkeypatch):
    calls: list = []
    _fake_pipeline(monkeypatch, calls)
    mag, phase = gre_pair
    table = _table(tmp_path / "subjects.tsv", [["s1", str(mag), str(phase), "0.005 0.01", "3"],
                                                ["s2", str(mag), str(phase), "0.005 0.01", "3"]])
    out = tmp_path / "out"
    argv = ["batch", "qsm", table, "--out", out, "--workers", "0"]
    assert _run(argv, capsys)[0] == 0
    marker = json.loads((out / "s1" / ".mrinets-done").read_text())
    assert marker["outputs"] == ["chi.nii.gz", "measures.json"]
    (out / "s1" / "chi.nii.gz").unlink()
    (out / "s2" / ".mrinets-done").write_text("finished 2025-01-01T00:00:00\n")  # a marker listing no outputs
    calls.clear()
    code, _ = _run(argv, capsys)
    assert code == 0 and sorted(calls) == ["s1", "s2"]
    assert (out / "s1" / "chi.nii.gz").exists()
    calls.clear()
    assert _run(argv, capsys)[0] == 0 and calls == []


# ---------------------------------------------------------------- per-subject input errors are isolated

def test_batch_isolates_a_row_with_te_in_ms(tmp_path, capsys, gre_pair):
    mag, phase = gre_pair
    table = _table(tmp_path / "subjects.tsv", [["good", str(mag), str(phase), "0.005 0.010", "3"],
                                                ["ms", str(mag), str(phase), "5 10", "3"],
                                                ["tesla", str(mag), str(phase), "0.005 0.010", "1e9"],
                                                ["words", str(mag), str(phase), "five ten", "3"]])
    out = tmp_path / "out"
    code = main(["batch", "qsm", str(table), "--out", str(out), "--workers", "0", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert (out / "good" / "chi.nii.gz").exists() and (out / "good" / ".mrinets-done").exists()
    summary = {line.split("\t")[0]: line.split("\t") for line in (out / "mrinets_summary_part0.tsv").read_text()
               .splitlines()[1:]}
    assert summary["good"][1] == "done"
    assert summary["ms"][1] == "failed" and "echo time 5 s is implausible" in summary["ms"][3]
    assert summary["tesla"][1] == "failed" and "0.05 to 21 T" in summary["tesla"][3]
    assert summary["words"][1] == "failed" and "not a list of numbers" in summary["words"][3]
    assert _empty(out / "ms") and _empty(out / "tesla")


def _bids(root: Path, subjects=("sub-01", "sub-02")) -> Path:
    mag, phase, _ = _gre_arrays()
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "toy", "BIDSVersion": "1.9.0"}))
    for subject in subjects:
        anat = root / subject / "anat"
        anat.mkdir(parents=True)
        for e, te in enumerate(TES, start=1):
            for part, data in (("mag", mag[..., e - 1]), ("phase", phase[..., e - 1])):
                name = f"{subject}_echo-{e}_part-{part}_MEGRE"
                nib.save(nib.Nifti1Image(data, AFFINE), anat / f"{name}.nii.gz")
                (anat / f"{name}.json").write_text(json.dumps({"EchoTime": te, "MagneticFieldStrength": 3.0}))
    return root


def test_bids_isolates_a_subject_missing_a_sidecar(tmp_path, capsys):
    root = _bids(tmp_path / "ds")
    (root / "sub-02" / "anat" / "sub-02_echo-2_part-mag_MEGRE.json").unlink()
    out = tmp_path / "ds" / "derivatives" / "mrinets"
    code = main(["bids", str(root), str(out), "participant", "--pipelines", "qsm", "--method", "tkd",
                 "--workers", "0", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert (out / "sub-01" / "anat" / "sub-01_Chimap.nii.gz").exists()
    summary = (out / "mrinets_summary_part0.tsv").read_text()
    assert "sub-02\tfailed" in summary and "JSON sidecar not found" in summary
    assert json.loads((out / "dataset_description.json").read_text())["DatasetType"] == "derivative"


# ---------------------------------------------------------------- no command writes over its inputs

def test_qsm_mask_in_the_output_folder_is_not_replaced(tmp_path, capsys):
    mag, phase = _gre(tmp_path / "in")
    mask = _mask(tmp_path / "own" / "mask.nii.gz")
    before = mask.read_bytes()
    for _ in range(2):
        code, err = _run(_qsm(mag, phase, tmp_path / "own", "--mask", mask), capsys)
        _one_line(code, err, "own/mask.nii.gz", "would replace an input of this run")
    assert mask.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "own").iterdir()) == ["mask.nii.gz"]


def test_output_folder_reached_through_a_symlink(tmp_path, capsys):
    mag, phase = _gre(tmp_path / "data")
    (tmp_path / "link").symlink_to(tmp_path / "data", target_is_directory=True)
    _mask(tmp_path / "data" / "mask.nii.gz")
    code, err = _run(_qsm(mag, phase, tmp_path / "link", "--mask", tmp_path / "data" / "mask.nii.gz"), capsys)
    _one_line(code, err, "would replace an input")
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["gre_mag.nii.gz", "gre_phase.nii.gz",
                                                                     "mask.nii.gz"]


def test_same_file_as_magnitude_and_phase(tmp_path, capsys):
    _, phase = _gre(tmp_path / "in")
    code, err = _run(_qsm(phase, phase, tmp_path / "out"), capsys)
    _one_line(code, err, "gre_phase.nii.gz", "is given as both the magnitude and the phase")
    assert _empty(tmp_path / "out")


def test_outputs_beside_inputs_are_fine(tmp_path, capsys):
    mag, phase = _gre(tmp_path / "data")
    code, err = _run(_qsm(mag, phase, tmp_path / "data"), capsys)
    assert code == 0, err
    assert (tmp_path / "data" / "chi.nii.gz").exists()


def _dwi(folder: Path, *, b0_zero=False, nan_bvec=False):
    folder.mkdir(parents=True, exist_ok=True)
    dirs = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.7071, 0.7071, 0], [0.7071, 0, 0.7071], [0, 0.7071, 0.7071],
                     [0.5774, 0.5774, 0.5774]])
    bvals = np.r_[0, np.full(7, 1000.0)]
    bvecs = np.vstack([[0, 0, 0], dirs])
    adc = 0.0007
    signal_ = np.exp(-bvals * adc)[None, None, None, :] * np.ones((8, 8, 8, 1)) * 100
    signal_ = signal_ * (1 + 0.02 * np.random.default_rng(1).standard_normal(signal_.shape))
    if b0_zero:
        signal_[..., 0] = 0
    if nan_bvec:
        bvecs[3, 1] = np.nan
    nib.save(nib.Nifti1Image(signal_.astype(np.float32), np.eye(4) * [2, 2, 2, 1]), folder / "dwi.nii.gz")
    np.savetxt(folder / "dwi.bval", bvals[None], fmt="%g")
    np.savetxt(folder / "dwi.bvec", bvecs.T, fmt="%.4f")
    return folder / "dwi.nii.gz", folder / "dwi.bval", folder / "dwi.bvec"


def test_microstructure_mask_in_the_output_folder_is_not_replaced(tmp_path, capsys, monkeypatch):
    from mrinets.pipelines import microstructure as ms

    def quick_fit(image, scheme, mask=None):  # the fit itself is not under test, its outputs' paths are
        brain = mask.data > 0
        maps = {p: np.where(brain, 0.5, 0).astype(np.float32) for p in ms.PARAMETERS}
        return ms.MicrostructureResult(maps, brain, image.with_data(maps["icvf"]), {"method": "fit"})

    monkeypatch.setattr(ms, "fit_reference", quick_fit)
    dwi, bval, bvec = _dwi(tmp_path / "own")
    mask = tmp_path / "own" / "mask.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.uint8), np.eye(4) * [2, 2, 2, 1]), mask)
    before = mask.read_bytes()
    code, err = _run(["microstructure", "fit", dwi, "--bval", bval, "--bvec", bvec, "--mask", mask,
                      "--out", tmp_path / "own", "--no-qc"], capsys)
    _one_line(code, err, "mask.nii.gz", "would replace an input")
    assert mask.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "own").iterdir()) == ["dwi.bval", "dwi.bvec", "dwi.nii.gz",
                                                                    "mask.nii.gz"]


def test_evaluate_out_cannot_be_an_input_or_a_folder(tmp_path, capsys):
    mag, _ = _gre(tmp_path / "in")
    truth = tmp_path / "in" / "truth.nii.gz"
    mag_img = nib.load(mag)
    nib.save(nib.Nifti1Image(mag_img.get_fdata()[..., 0].astype(np.float32), AFFINE), truth)
    mask = _mask(tmp_path / "in" / "mask.nii.gz")
    before = truth.read_bytes()
    base = ["qsm", "evaluate", "--pred", truth, "--truth", truth, "--mask", mask]
    code, err = _run([*base, "--out", truth], capsys)
    _one_line(code, err, "truth.nii.gz", "would replace an input")
    assert truth.read_bytes() == before
    (tmp_path / "scores").mkdir()
    code, err = _run([*base, "--out", tmp_path / "scores"], capsys)
    _one_line(code, err, "scores", "is a folder; give a file name")
    assert _empty(tmp_path / "scores")


def test_bids_refuses_the_raw_dataset_as_output(tmp_path, capsys):
    root = _bids(tmp_path / "ds", subjects=("sub-01",))
    description = (root / "dataset_description.json").read_bytes()
    before = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    for out, needle in ((root, "root of a raw BIDS dataset"), (root / "sub-01", "inside the raw BIDS dataset"),
                        (root / "sub-01" / "anat", "inside the raw BIDS dataset")):
        code, err = _run(["bids", root, out, "participant", "--workers", "0"], capsys)
        _one_line(code, err, needle)
    assert (root / "dataset_description.json").read_bytes() == description
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == before


def test_output_inside_the_bids_root_through_a_symlink(tmp_path, capsys):
    root = _bids(tmp_path / "ds", subjects=("sub-01",))
    (tmp_path / "alias").symlink_to(root, target_is_directory=True)
    code, err = _run(["bids", root, tmp_path / "alias", "participant", "--workers", "0"], capsys)
    _one_line(code, err, "root of a raw BIDS dataset")


# ---------------------------------------------------------------- signals, stale stages, permissions

_SLOW_SAVE = """
import signal, sys, time
from pathlib import Path
# SIGINT as a terminal gives it: a job started in the background by a shell (e.g. CI run with &) inherits it ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)
from mrinets.pipelines import qsm
original = qsm.save
def slow(*args, **kwargs):
    path = original(*args, **kwargs)
    Path(sys.argv[1]).write_text("staged")
    time.sleep(60)
    return path
qsm.save = slow
from mrinets.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("sig, code, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_signal_while_staging_leaves_nothing(tmp_path, sig, code, word):
    mag, phase = _gre(tmp_path / "in")
    out = tmp_path / "out"
    flag = tmp_path / "flag"
    argv = [str(a) for a in _qsm(mag, phase, out)]
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_SAVE, str(flag), *argv], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not flag.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "timeout"
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    assert err.strip().splitlines() == [f"mrinets: {word}"], err
    assert _empty(out), list(out.iterdir())


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_next_run_cleans_a_killed_runs_stage(tmp_path, capsys):
    mag, phase = _gre(tmp_path / "in")
    out = tmp_path / "out"
    killed = out / f".mrinets-stage-{_dead_pid()}@{socket.gethostname()}-k1ll3d"
    legacy = out / ".mrinets-stage-oldformat"
    for stage in (killed, legacy):
        stage.mkdir(parents=True)
        (stage / "chi.nii.gz").write_bytes(b"half a file")
    old = time.time() - 3600
    os.utime(legacy, (old, old))
    code, err = _run(_qsm(mag, phase, out), capsys)
    assert code == 0, err
    assert not killed.exists() and not legacy.exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_cli_outputs_are_readable_by_the_group(tmp_path, capsys):
    mag, phase = _gre(tmp_path / "in")
    old = os.umask(0o022)
    try:
        assert _run(_qsm(mag, phase, tmp_path / "out"), capsys)[0] == 0
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out").iterdir()}
    assert modes and set(modes.values()) == {0o644}, modes


def test_unreachable_scheduler_fails_fast(tmp_path, capsys, gre_pair):
    pytest.importorskip("dask.distributed")
    mag, phase = gre_pair
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    table = _table(tmp_path / "subjects.tsv", [["s1", str(mag), str(phase), "0.005 0.01", "3"]])
    tic = time.monotonic()
    code, err = _run(["batch", "qsm", table, "--out", tmp_path / "out", "--scheduler", f"tcp://127.0.0.1:{port}"],
                     capsys)
    assert time.monotonic() - tic < 15
    _one_line(code, err, "--scheduler", f"no Dask scheduler answers at tcp://127.0.0.1:{port}")
    assert _empty(tmp_path / "out")


# ---------------------------------------------------------------- silently wrong numbers

def test_echoes_given_in_any_order_give_the_same_chi(tmp_path, capsys):
    mag, phase = _gre(tmp_path / "in")
    rmag, rphase = _gre(tmp_path / "in", name="reversed", order=(1, 0))
    assert _run(_qsm(mag, phase, tmp_path / "a"), capsys)[0] == 0
    code, err = _run(_qsm(rmag, rphase, tmp_path / "b", te=TES[::-1]), capsys)
    assert code == 0, err
    a = nib.load(tmp_path / "a" / "chi.nii.gz").get_fdata()
    b = nib.load(tmp_path / "b" / "chi.nii.gz").get_fdata()
    assert np.abs(a).max() > 0
    np.testing.assert_allclose(b, a, atol=1e-6)
    ua = nib.load(tmp_path / "a" / "unwrapped_phase.nii.gz").get_fdata()
    ub = nib.load(tmp_path / "b" / "unwrapped_phase.nii.gz").get_fdata()
    np.testing.assert_allclose(ub, ua, atol=1e-5)  # echoes are written in echo-time order
    measures = json.loads((tmp_path / "b" / "measures.json").read_text())
    assert measures["echo_order"] == [1, 0] and measures["config"]["echo_times"] == list(TES)
    assert "sorted" in measures["echo_order_note"]
    assert "echo_order" not in json.loads((tmp_path / "a" / "measures.json").read_text())


@pytest.mark.parametrize("flags, needles", [
    (["--te", "0.005", "0.005"], ["--te", "echo times must differ (0.005 s is given twice)"]),
    (["--te", "0.005", "5"], ["--te", "echo time 5 s is implausible"]),
    (["--te", "1e-300", "2e-300"], ["--te", "echo times and their spacing must be at least 1e-05 s"]),
    (["--te", "0.005", "0.0050001"], ["--te", "spacing must be at least 1e-05 s"]),
    (["--b0", "1e9"], ["--b0", "0.05 to 21 T", "1e+09"]),
    (["--b0", "0.01"], ["--b0", "0.05 to 21 T"]),
    (["--vsharp-radius", "1e6"], ["--vsharp-radius", "larger than the field of view"]),
    (["--vsharp-radius", "0.01"], ["--vsharp-radius", "at least the smallest voxel edge"]),
])
def test_bad_acquisition_numbers_are_one_line(tmp_path, capsys, flags, needles):
    mag, phase = _gre(tmp_path / "in")
    argv = _qsm(mag, phase, tmp_path / "out")
    flag = flags[0]
    i = argv.index(flag)
    del argv[i: i + (3 if flag == "--te" else 2)]
    code, err = _run(argv + flags, capsys)
    _one_line(code, err, *needles)
    assert _empty(tmp_path / "out")


def test_bad_acquisitions_refused_by_the_library():
    from mrinets.errors import InputError
    from mrinets.physics.echoes import GreAcquisition
    from mrinets.pipelines.qsm import QsmConfig

    with pytest.raises(ValueError, match="echo_times must differ"):
        GreAcquisition(echo_times=(0.01, 0.01), b0=3)
    with pytest.raises(ValueError, match="b0 must lie between 0.05 and 21 T"):
        GreAcquisition(echo_times=(0.01,), b0=1e9)
    with pytest.raises(InputError, match="0.05 to 21 T"):
        QsmConfig(echo_times=(0.01,), b0=25)


def test_bad_mask_values_are_one_line(tmp_path, capsys):
    mag, phase = _gre(tmp_path / "in")
    _, _, ball = _gre_arrays()
    for name, values, needle in (("neg", -ball.astype(np.float32), "values -1 to 0"),
                                 ("frac", 0.3 * ball.astype(np.float32), "values 0 to 0.3")):
        mask = _mask(tmp_path / "in" / f"{name}.nii.gz", values)
        code, err = _run(_qsm(mag, phase, tmp_path / "out", "--mask", mask), capsys)
        _one_line(code, err, f"{name}.nii.gz", "mask has no voxel above 0.5", needle)
    assert _empty(tmp_path / "out")


def test_complex_magnitude_is_refused(tmp_path, capsys):
    mag, phase = _gre(tmp_path / "in")
    data = nib.load(mag).get_fdata().astype(np.float32)
    cplx = tmp_path / "in" / "complex.nii.gz"
    nib.save(nib.Nifti1Image((data * np.exp(0.3j)).astype(np.complex64), AFFINE), cplx)
    code, err = _run(_qsm(cplx, phase, tmp_path / "out"), capsys)
    _one_line(code, err, "complex.nii.gz", "complex")
    assert _empty(tmp_path / "out")


def test_labels_beyond_int32_are_refused(tmp_path, capsys):
    mag, phase = _gre(tmp_path / "in")
    _, _, ball = _gre_arrays()
    labels = tmp_path / "in" / "labels.nii.gz"
    nib.save(nib.Nifti1Image((ball * 1e12).astype(np.float64), AFFINE), labels)
    code, err = _run(_qsm(mag, phase, tmp_path / "out", "--labels", labels), capsys)
    _one_line(code, err, "labels.nii.gz", "label values must be whole numbers from 0 to 2147483647")
    assert _empty(tmp_path / "out")


def test_empty_out_is_refused(tmp_path, capsys, monkeypatch):
    mag, phase = _gre(tmp_path / "in")
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, err = _run(_qsm(mag, phase, ""), capsys)
    _one_line(code, err, "output folder: the path is empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_dwi_with_zero_b0_and_nan_bvec_are_refused(tmp_path, capsys):
    dwi, bval, bvec = _dwi(tmp_path / "zero", b0_zero=True)
    code, err = _run(["microstructure", "fit", dwi, "--bval", bval, "--bvec", bvec, "--out", tmp_path / "out"],
                     capsys)
    _one_line(code, err, "dwi.nii.gz", "every b=0 volume is zero")
    dwi, bval, bvec = _dwi(tmp_path / "nan", nan_bvec=True)
    code, err = _run(["microstructure", "predict", dwi, "--bval", bval, "--bvec", bvec, "--out", tmp_path / "out"],
                     capsys)
    _one_line(code, err, "dwi.bvec", "b-vector 3 is not finite")
    code, err = _run(["info", dwi, "--bval", bval, "--bvec", bvec], capsys)
    _one_line(code, err, "dwi.bvec", "not finite")
    assert _empty(tmp_path / "out")


def test_bvals_in_ms_per_um2_are_refused(tmp_path, capsys):
    dwi, bval, bvec = _dwi(tmp_path / "units")
    bval.write_text("0 1 1 1 1 1 1 1\n")
    code, err = _run(["microstructure", "fit", dwi, "--bval", bval, "--bvec", bvec, "--out", tmp_path / "out"],
                     capsys)
    _one_line(code, err, "dwi.bval", "give them in s/mm^2 (e.g. 1000), not ms/um^2")
    assert _empty(tmp_path / "out")


def test_batch_subject_whose_input_lies_in_its_own_output_folder(tmp_path, capsys):
    """The guard holds per subject inside a batch too: that subject fails, its mask intact, the others go on."""
    mag, phase = _gre(tmp_path / "in")
    out = tmp_path / "out"
    mask = _mask(out / "s2" / "mask.nii.gz")
    before = mask.read_bytes()
    table = _table(tmp_path / "subjects.tsv", [["s1", str(mag), str(phase), "0.005 0.01", "3", ""],
                                                ["s2", str(mag), str(phase), "0.005 0.01", "3", str(mask)]],
                   header=("subject", "mag", "phase", "te", "b0", "mask"))
    code = main(["batch", "qsm", str(table), "--out", str(out), "--workers", "0", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "s2 failed" in err and "would replace an input of this run" in err
    assert mask.read_bytes() == before and sorted(p.name for p in (out / "s2").iterdir()) == ["mask.nii.gz"]
    assert (out / "s1" / "chi.nii.gz").exists()


def test_phantom_grid_too_large_for_memory(tmp_path, capsys):
    tic = time.monotonic()
    code, err = _run(["phantom", "qsm", "--seed", "1", "--voxel-size", "0.05", "--out", tmp_path / "ph"], capsys)
    _one_line(code, err, "--voxel-size", "3940 x 4660 x 3780", "GiB")
    assert time.monotonic() - tic < 5
    assert _empty(tmp_path / "ph")
