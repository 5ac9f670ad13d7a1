"""Many subjects: a BIDS App and a TSV batch, resumable, sharded, failure-isolated, on Dask."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mrinets.cli import main
from mrinets.data.phantoms.qsm import make_qsm_head
from mrinets.io.bids import find_gre_runs

TES = (0.005, 0.012)


def _bids_dataset(root: Path) -> Path:
    root.mkdir()
    (root / "dataset_description.json").write_text(json.dumps({"Name": "toy", "BIDSVersion": "1.9.0"}))
    for subject, session, seed in (("sub-01", None, 1), ("sub-02", "ses-a", 2)):
        p = make_qsm_head(seed, voxel_size=4.0, echo_times=TES)
        anat = root / subject / (session or "") / "anat"
        anat.mkdir(parents=True)
        prefix = subject + (f"_{session}" if session else "")
        for e, te in enumerate(TES, start=1):
            for part, data in (("mag", p.magnitude[..., e - 1]), ("phase", p.phase[..., e - 1])):
                name = f"{prefix}_echo-{e}_part-{part}_MEGRE"
                nib.save(nib.Nifti1Image(data.astype(np.float32), p.affine), anat / f"{name}.nii.gz")
                (anat / f"{name}.json").write_text(json.dumps({"EchoTime": te, "MagneticFieldStrength": 3.0}))
    return root


@pytest.fixture(scope="module")
def bids_root(tmp_path_factory):
    return _bids_dataset(tmp_path_factory.mktemp("bids") / "ds")


def test_find_gre_runs(bids_root):
    runs = find_gre_runs(bids_root)
    assert [r.prefix for r in runs] == ["sub-01", "sub-02_ses-a"]
    assert runs[1].session == "ses-a" and runs[1].echo_times == TES and runs[1].b0 == 3.0
    assert [p.name for p in runs[0].phase] == ["sub-01_echo-1_part-phase_MEGRE.nii.gz",
                                              "sub-01_echo-2_part-phase_MEGRE.nii.gz"]
    assert len(find_gre_runs(bids_root, participant_labels=["02"])) == 1


def test_bids_app_writes_derivatives_and_resumes(bids_root, tmp_path, capsys):
    out = tmp_path / "derivatives"
    argv = ["bids", str(bids_root), str(out), "participant", "--method", "tkd", "--workers", "0"]
    assert main(argv) == 0
    chi = out / "sub-02" / "ses-a" / "anat" / "sub-02_ses-a_Chimap.nii.gz"
    assert chi.exists() and (out / "sub-01" / "anat" / "sub-01_desc-brain_mask.nii.gz").exists()
    np.testing.assert_allclose(nib.load(chi).affine, nib.load(
        bids_root / "sub-02" / "ses-a" / "anat" / "sub-02_ses-a_echo-1_part-mag_MEGRE.nii.gz").affine)
    assert json.loads((out / "dataset_description.json").read_text())["DatasetType"] == "derivative"
    capsys.readouterr()
    assert main(argv) == 0
    assert "0 done, 2 skipped" in capsys.readouterr().out


def test_bids_errors_are_one_line(bids_root, tmp_path, capsys):
    code = main(["bids", str(tmp_path), str(tmp_path / "o"), "participant"])
    assert code == 2 and "not a BIDS dataset" in capsys.readouterr().err
    code = main(["bids", str(bids_root), str(tmp_path / "o"), "participant", "--participant-label", "09"])
    assert code == 2 and "sub-09" in capsys.readouterr().err


def _table(tmp_path: Path, bids_root: Path, broken: bool = False) -> Path:
    rows = ["subject\tmag\tphase\tte\tb0"]
    for run in find_gre_runs(bids_root):
        rows.append(f"{run.prefix}\t{run.magnitude[0]}\t{run.phase[0]}\t{TES[0]}\t3")
    if broken:
        bad = tmp_path / "broken.nii.gz"
        bad.write_text("not an image")
        rows.append(f"broken\t{bad}\t{bad}\t{TES[0]}\t3")
    table = tmp_path / "subjects.tsv"
    table.write_text("\n".join(rows) + "\n")
    return table


def test_batch_isolates_failures_and_shards(bids_root, tmp_path, capsys):
    table = _table(tmp_path, bids_root, broken=True)
    out = tmp_path / "batch"
    code = main(["batch", "qsm", str(table), "--out", str(out), "--workers", "0", "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert "broken failed" in err and "not a NIfTI image" in err
    assert (out / "sub-01" / "chi.nii.gz").exists()
    assert not (out / "broken").exists() or not any((out / "broken").iterdir())
    summary = (out / "mrinets_summary_part0.tsv").read_text()
    assert "sub-01\tdone" in summary and "broken\tfailed" in summary
    part = tmp_path / "part"
    assert main(["batch", "qsm", str(_table(tmp_path, bids_root)), "--out", str(part), "--workers", "0",
                 "--num-parts", "2", "--part-id", "1", "--quiet"]) == 0
    assert sorted(p.name for p in part.iterdir() if p.is_dir()) == ["sub-02_ses-a"]


def test_batch_on_a_local_dask_cluster(bids_root, tmp_path):
    pytest.importorskip("dask.distributed")
    out = tmp_path / "dask"
    assert main(["batch", "qsm", str(_table(tmp_path, bids_root)), "--out", str(out), "--workers", "1",
                 "--quiet"]) == 0
    assert (out / "sub-01" / "chi.nii.gz").exists() and (out / "sub-02_ses-a" / ".mrinets-done").exists()


def test_bad_sharding_is_one_line(bids_root, tmp_path, capsys):
    code = main(["batch", "qsm", str(_table(tmp_path, bids_root)), "--out", str(tmp_path / "x"), "--num-parts", "2",
                 "--part-id", "2"])
    assert code == 2 and "--part-id" in capsys.readouterr().err


def test_two_runs_of_a_session_resume_each_on_its_own(bids_root, tmp_path, capsys):
    """Runs share the session's derivatives folder: a deleted output of one run is redone, not skipped."""
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(bids_root, root)
    anat = root / "sub-01" / "anat"
    for path in sorted(anat.glob("sub-01_echo-*")):
        shutil.copy(path, anat / path.name.replace("sub-01_", "sub-01_run-2_"))
    out = tmp_path / "derivatives"
    argv = ["bids", str(root), str(out), "participant", "--participant-label", "01", "--method", "tkd",
            "--workers", "0"]
    assert main(argv) == 0
    first = out / "sub-01" / "anat" / "sub-01_Chimap.nii.gz"
    assert first.exists() and (out / "sub-01" / "anat" / "sub-01_run-2_Chimap.nii.gz").exists()
    first.unlink()
    capsys.readouterr()
    assert main(argv) == 0
    assert "1 done, 1 skipped" in capsys.readouterr().out and first.exists()
