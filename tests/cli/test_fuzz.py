"""Fuzz table: every command, fed each kind of broken input, answers one line on stderr, exit 2, no output.

Every file argument of every command gets each hostile file of its kind
(NIfTI, text table, weights); commands without file arguments get broken
options. A command added to ``mrinets`` must get rows here
(:func:`test_every_command_is_in_the_table`).
"""

from __future__ import annotations

import json
from pathlib import Path

import hostile
import nibabel as nib
import numpy as np
import pytest

from mrinets.cli import build_parser, main

GRE_AFFINE = np.diag([1.0, 1.0, 1.5, 1.0])
DWI_AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict[str, Path]:
    """Valid inputs of every kind, so that only the argument under test is broken."""
    root = tmp_path_factory.mktemp("good")
    rng = np.random.default_rng(0)
    shape = (16, 16, 12)
    g = np.stack(np.meshgrid(*[np.arange(s) - s / 2 for s in shape], indexing="ij"))
    ball = ((g**2).sum(0) < 30).astype(np.float32)
    files = {}

    def put(name, data, affine=GRE_AFFINE):
        files[name] = root / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(np.asarray(data), affine), files[name])

    put("mag", np.stack([ball + 0.02 * rng.random(shape) for _ in range(2)], -1).astype(np.float32))
    put("phase", rng.uniform(-np.pi, np.pi, (*shape, 2)).astype(np.float32))
    put("mask", ball)
    put("labels", (2 * ball).astype(np.int16))
    put("chi", (0.05 * ball + 0.01 * rng.standard_normal(shape)).astype(np.float32))
    put("t1", (ball * 100 + rng.random(shape)).astype(np.float32))
    dwi = 100 * np.exp(-np.r_[0, np.full(7, 1000.0)] * 7e-4) * (1 + 0.02 * rng.random((8, 8, 8, 8)))
    put("dwi", dwi.astype(np.float32), DWI_AFFINE)
    put("dwi_mask", np.ones((8, 8, 8), np.uint8), DWI_AFFINE)
    files["bval"] = root / "dwi.bval"
    files["bval"].write_text("0 1000 1000 1000 1000 1000 1000 1000\n")
    files["bvec"] = root / "dwi.bvec"
    dirs = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0.6, 0.8, 0], [0.6, 0, 0.8], [0, 0.6, 0.8],
                     [0.48, 0.6, 0.64]])
    np.savetxt(files["bvec"], dirs.T, fmt="%.3f")
    files["bval_high"] = root / "high.bval"
    files["bval_high"].write_text("0 1000 1000 1000 1000 1000 1000 9000\n")
    noddi = root / "noddi"
    noddi.mkdir()
    for p in ("icvf", "isovf", "odi"):
        nib.save(nib.Nifti1Image(rng.random((8, 8, 8)).astype(np.float32), DWI_AFFINE), noddi / f"{p}.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.uint8), DWI_AFFINE), noddi / "mask.nii.gz")
    files["noddi"] = noddi
    files["wmh_weights"] = Path(__file__).resolve().parents[2] / "src" / "mrinets" / "weights" / "wmh_t1.pt"
    return files


def _bad_table_makers():
    def text(folder):
        return _write(folder / "garbage.txt", "this is not\na table of numbers\n")

    def binary(folder):
        return _write(folder / "binary.txt", bytes(range(256)) * 4)

    def empty(folder):
        return _write(folder / "empty.txt", "")

    def latin1(folder):
        return _write(folder / "latin1.txt", "subject\tt1\nJos\xe9\t1\n".encode("latin-1"))

    def nan(folder):
        return _write(folder / "nan.txt", "nan nan nan nan nan nan nan nan\n" * 3)

    def folder_(folder):
        path = folder / "a_folder.txt"
        path.mkdir()
        return path

    return {"text": text, "binary": binary, "empty": empty, "latin1": latin1, "nan": nan, "folder": folder_,
            "missing": lambda folder: folder / "missing.txt"}


def _bad_weights_makers():
    def text(folder):
        return _write(folder / "weights_text.pt", "not a torch file")

    def empty(folder):
        return _write(folder / "weights_empty.pt", b"")

    def nifti(folder):
        return hostile.write_bytes(folder / "weights.nii.gz", hostile.nifti_bytes(hostile.brain()))

    def wrong_dict(folder):
        import torch

        path = folder / "weights_dict.pt"
        torch.save({"state_dict": {"w": torch.zeros(2)}, "channels": [1, 2, 3, 4], "patch_size": [8, 8, 8],
                    "net_config": {"nonsense": 1}}, path)
        return path

    def folder_(folder):
        path = folder / "weights_folder.pt"
        path.mkdir()
        return path

    return {"text": text, "empty": empty, "nifti": nifti, "wrong_dict": wrong_dict, "folder": folder_,
            "missing": lambda folder: folder / "missing.pt"}


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


BAD = {"nifti": hostile.BAD_FILES, "table": _bad_table_makers(), "weights": _bad_weights_makers()}

# (command, kind of the broken argument, argv with {bad}, {out} and good files by name)
FILE_SLOTS = [
    ("info", "nifti", ["info", "{bad}"]),
    ("info", "table", ["info", "{dwi}", "--bval", "{bad}", "--bvec", "{bvec}"]),
    ("info", "table", ["info", "{dwi}", "--bval", "{bval}", "--bvec", "{bad}"]),
    ("qsm predict", "nifti", ["qsm", "predict", "--mag", "{bad}", "--phase", "{phase}", "--te", "0.005", "0.01",
                              "--b0", "3", "--out", "{out}"]),
    ("qsm predict", "nifti", ["qsm", "predict", "--mag", "{mag}", "--phase", "{bad}", "--te", "0.005", "0.01",
                              "--b0", "3", "--out", "{out}"]),
    ("qsm predict", "nifti", ["qsm", "predict", "--mag", "{mag}", "--phase", "{phase}", "--te", "0.005", "0.01",
                              "--b0", "3", "--mask", "{bad}", "--out", "{out}"]),
    ("qsm predict", "nifti", ["qsm", "predict", "--mag", "{mag}", "--phase", "{phase}", "--te", "0.005", "0.01",
                              "--b0", "3", "--labels", "{bad}", "--out", "{out}"]),
    ("qsm evaluate", "nifti", ["qsm", "evaluate", "--pred", "{bad}", "--truth", "{chi}", "--mask", "{mask}",
                               "--out", "{out}/scores.json"]),
    ("qsm evaluate", "nifti", ["qsm", "evaluate", "--pred", "{chi}", "--truth", "{bad}", "--mask", "{mask}",
                               "--out", "{out}/scores.json"]),
    ("qsm evaluate", "nifti", ["qsm", "evaluate", "--pred", "{chi}", "--truth", "{chi}", "--mask", "{bad}",
                               "--out", "{out}/scores.json"]),
    ("qsm evaluate", "nifti", ["qsm", "evaluate", "--pred", "{chi}", "--truth", "{chi}", "--mask", "{mask}",
                               "--labels", "{bad}", "--out", "{out}/scores.json"]),
    ("qsm evaluate", "nifti", ["qsm", "evaluate", "--pred", "{chi}", "--truth", "{chi}", "--mask", "{mask}",
                               "--field", "{bad}", "--out", "{out}/scores.json"]),
    ("qsm predict", "weights", ["qsm", "predict", "--mag", "{mag}", "--phase", "{phase}", "--te", "0.005", "0.01",
                                "--b0", "3", "--method", "pedqnet", "--weights", "{bad}", "--out", "{out}"]),
    ("qsm predict", "weights", ["qsm", "predict", "--mag", "{mag}", "--phase", "{phase}", "--te", "0.005", "0.01",
                                "--b0", "3", "--masker", "net", "--mask-weights", "{bad}", "--out", "{out}"]),
    ("qsm invert", "nifti", ["qsm", "invert", "--field", "{bad}", "--mask", "{mask}", "--out", "{out}"]),
    ("qsm invert", "nifti", ["qsm", "invert", "--field", "{chi}", "--mask", "{bad}", "--out", "{out}"]),
    ("qsm invert", "nifti", ["qsm", "invert", "--field", "{chi}", "--mask", "{mask}", "--magnitude", "{bad}",
                             "--out", "{out}"]),
    ("qsm invert", "nifti", ["qsm", "invert", "--field", "{chi}", "--mask", "{mask}", "--labels", "{bad}",
                             "--out", "{out}"]),
    ("qsm invert", "weights", ["qsm", "invert", "--field", "{chi}", "--mask", "{mask}", "--method", "pedqnet",
                               "--weights", "{bad}", "--out", "{out}"]),
    ("wmh predict", "nifti", ["wmh", "predict", "{t1}", "{bad}", "--out", "{out}"]),
    ("wmh predict", "weights", ["wmh", "predict", "{t1}", "--weights", "{bad}", "--out", "{out}"]),
    ("wmh predict", "nifti", ["wmh", "predict", "{t1}", "--brain-mask", "{bad}", "--out", "{out}"]),
    ("wmh evaluate", "nifti", ["wmh", "evaluate", "--pred", "{bad}", "--truth", "{mask}", "--out", "{out}/s.json"]),
    ("wmh evaluate", "nifti", ["wmh", "evaluate", "--pred", "{mask}", "--truth", "{bad}", "--out", "{out}/s.json"]),
    ("wmh train", "table", ["wmh", "train", "--pairs", "{bad}", "--epochs", "1", "--out", "{out}"]),
    ("wmh train", "weights", ["wmh", "train", "--phantoms", "1", "--first-step", "{bad}", "--out", "{out}"]),
    ("wmh train", "weights", ["wmh", "train", "--phantoms", "1", "--init", "{bad}", "--out", "{out}"]),
    ("wmh tune", "weights", ["wmh", "tune", "--weights", "{bad}", "--out", "{out}"]),
    ("microstructure fit", "nifti", ["microstructure", "fit", "{bad}", "--bval", "{bval}", "--bvec", "{bvec}",
                                     "--out", "{out}"]),
    ("microstructure fit", "nifti", ["microstructure", "fit", "{dwi}", "--bval", "{bval}", "--bvec", "{bvec}",
                                     "--mask", "{bad}", "--out", "{out}"]),
    ("microstructure fit", "table", ["microstructure", "fit", "{dwi}", "--bval", "{bad}", "--bvec", "{bvec}",
                                     "--out", "{out}"]),
    ("microstructure predict", "table", ["microstructure", "predict", "{dwi}", "--bval", "{bval}", "--bvec",
                                         "{bad}", "--out", "{out}"]),
    ("microstructure predict", "nifti", ["microstructure", "predict", "{bad}", "--bval", "{bval}", "--bvec",
                                         "{bvec}", "--out", "{out}"]),
    ("microstructure predict", "weights", ["microstructure", "predict", "{dwi}", "--bval", "{bval}", "--bvec",
                                           "{bvec}", "--weights", "{bad}", "--out", "{out}"]),
    ("microstructure finetune", "weights", ["microstructure", "finetune", "--init", "{bad}", "--out", "{out}"]),
    ("microstructure pretrain", "table", ["microstructure", "pretrain", "--scheme-from", "{bad}", "{bvec}",
                                          "--out", "{out}/w.pt"]),
    ("microstructure pretrain", "table", ["microstructure", "pretrain", "--scheme-from", "{bval}", "{bad}",
                                          "--out", "{out}/w.pt"]),
    ("microstructure evaluate", "nifti", ["microstructure", "evaluate", "{noddi}", "{noddi}", "--mask", "{bad}",
                                          "--out", "{out}/s.json"]),
    ("cmb predict", "nifti", ["cmb", "predict", "{bad}", "--contrast", "swi", "--out", "{out}"]),
    ("cmb predict", "nifti", ["cmb", "predict", "{t1}", "--contrast", "swi", "--mask", "{bad}", "--out", "{out}"]),
    ("cmb predict", "weights", ["cmb", "predict", "{t1}", "--contrast", "gre", "--weights", "{bad}", "--out", "{out}"]),
    ("cmb predict", "table", ["cmb", "predict", "{t1}", "--contrast", "qsm", "--to-mni", "{bad}", "--out", "{out}"]),
    ("cmb evaluate", "nifti", ["cmb", "evaluate", "--pred", "{bad}", "--truth", "{labels}", "--out", "{out}/s.json"]),
    ("cmb evaluate", "nifti", ["cmb", "evaluate", "--pred", "{labels}", "--truth", "{bad}", "--out", "{out}/s.json"]),
    ("cmb evaluate", "weights", ["cmb", "evaluate", "--phantoms", "1", "--weights", "{bad}", "--out", "{out}/s.json"]),
    ("phantom wmh", "nifti", ["phantom", "wmh", "--seed", "1", "--t1", "{bad}", "--out", "{out}"]),
    ("phantom lowfield", "nifti", ["phantom", "lowfield", "--seed", "1", "--t1", "{bad}", "--out", "{out}"]),
    ("lowfield predict", "nifti", ["lowfield", "predict", "{bad}", "--out", "{out}"]),
    ("lowfield predict", "weights", ["lowfield", "predict", "{t1}", "--weights", "{bad}", "--out", "{out}"]),
    ("lowfield evaluate", "weights", ["lowfield", "evaluate", "--weights", "{bad}", "--subjects", "1", "--out",
                                      "{out}"]),
    ("lowfield evaluate", "nifti", ["lowfield", "evaluate", "--real-t1", "{bad}", "--subjects", "1", "--out",
                                    "{out}"]),
    ("batch", "table", ["batch", "qsm", "{bad}", "--out", "{out}", "--workers", "0"]),
    ("batch", "table", ["batch", "wmh", "{bad}", "--out", "{out}", "--workers", "0"]),
    ("batch", "table", ["batch", "microstructure", "{bad}", "--out", "{out}", "--workers", "0"]),
    ("batch", "table", ["batch", "cmb", "{bad}", "--out", "{out}", "--workers", "0"]),
    ("batch", "table", ["batch", "lowfield", "{bad}", "--out", "{out}", "--workers", "0"]),
]


def _slot_id(index: int) -> str:
    command, kind, _ = FILE_SLOTS[index]
    return f"{command.replace(' ', '-')}-{index}-{kind}"


def _fill(argv, good, bad, out) -> list[str]:
    values = {k: str(v) for k, v in good.items()}
    return [a.format(bad=bad, out=out, **values) for a in argv]


def _assert_refused(argv, capsys, out: Path):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, (argv, err)
    assert len(lines) == 1 and lines[0].startswith("mrinets: error: "), (argv, err)
    assert not out.exists() or not any(out.iterdir()), (argv, sorted(p.name for p in out.rglob("*")))
    return lines[0]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[tuple[str, str], Path]:
    made = {}
    for kind, makers in BAD.items():
        folder = tmp_path_factory.mktemp(f"bad_{kind}")
        for name, make in makers.items():
            made[kind, name] = make(folder)
    return made


@pytest.fixture(scope="module", autouse=True)
def one_parser():
    """Build the parser once: every case parses with the same parser ``main`` would build (20 ms each time)."""
    import mrinets.cli

    parser = build_parser()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mrinets.cli, "build_parser", lambda full=None: parser)
        yield


@pytest.mark.parametrize("index", range(len(FILE_SLOTS)), ids=_slot_id)
def test_bad_file_is_one_line_exit_2_nothing_written(index, good, bad_files, tmp_path, capsys):
    """Each hostile file of the argument's kind, in turn, in the argument under test."""
    _, kind, argv = FILE_SLOTS[index]
    for bad_name in BAD[kind]:
        out = tmp_path / bad_name
        _assert_refused(_fill(argv, good, bad_files[kind, bad_name], out), capsys, out)


def _bids_without_description(folder: Path) -> Path:
    (folder / "sub-01" / "anat").mkdir(parents=True)
    return folder


def _bids_with_bad_description(folder: Path) -> Path:
    (folder / "sub-01" / "anat").mkdir(parents=True)
    (folder / "dataset_description.json").write_text("{not json")
    return folder


def _bids_empty(folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "dataset_description.json").write_text(json.dumps({"Name": "x", "BIDSVersion": "1.9.0"}))
    return folder


# Commands without file arguments (or whose folders are the argument): broken options and folders.
OPTION_CASES = [
    ("demo", ["demo", "--out", "{file}"], "exists and is not a folder"),
    ("demo", ["demo", "--out", ""], "the path is empty"),
    ("demo", ["demo", "--seed", "-1", "--out", "{out}"], "--seed: must not be negative"),
    ("phantom head", ["phantom", "head", "--seed", "1", "--snr", "0", "--out", "{out}"], "--snr: must be positive"),
    ("phantom head", ["phantom", "head", "--seed", "1", "--voxel-size", "0", "1", "1", "--out", "{out}"],
     "--voxel-size: must be three positive lengths"),
    ("phantom head", ["phantom", "head", "--seed", "1", "--voxel-size", "0.02", "0.02", "0.02", "--out", "{out}"],
     "9850 x 11650 x 9450 grid"),
    ("phantom qsm", ["phantom", "qsm", "--seed", "1", "--voxel-size", "0.05", "--out", "{out}"],
     "3940 x 4660 x 3780 grid"),
    ("phantom qsm", ["phantom", "qsm", "--seed", "1", "--te", "0.01", "0.01", "--out", "{out}"],
     "echo_times must differ"),
    ("phantom qsm", ["phantom", "qsm", "--seed", "1", "--b0", "1e9", "--out", "{out}"], "--b0: must lie between"),
    ("phantom qsm-scan", ["phantom", "qsm-scan", "--seed", "1", "--orientation", "XYZ", "--out", "{out}"],
     "--orientation: must be one of RAS, LAS, LPS"),
    ("phantom qsm-scan", ["phantom", "qsm-scan", "--seed", "1", "--fine-mm", "0.5", "--voxel-size", "0.5", "0.5",
                          "0.5", "--out", "{out}"], "GiB, more than this machine"),
    ("phantom qsm-scan", ["phantom", "qsm-scan", "--seed", "1", "--fine-mm", "3", "--out", "{out}"],
     "--fine-mm: must lie in"),
    ("phantom qsm", ["phantom", "qsm", "--seed", "-1", "--out", "{out}"], "--seed: must not be negative"),
    ("phantom qsm", ["phantom", "qsm", "--seed", "1", "--iron-scale", "-1", "--out", "{out}"],
     "--iron-scale: must be a scale from 0 to 10"),
    ("phantom microstructure", ["phantom", "microstructure", "--seed", "1", "--downsample", "0", "--out", "{out}"],
     "--downsample: must be a positive integer"),
    ("phantom microstructure", ["phantom", "microstructure", "--seed", "1", "--snr", "nan", "--out", "{out}"],
     "--snr: not a finite number"),
    ("phantom wmh", ["phantom", "wmh", "--seed", "1", "--flair-voxel", "0", "5", "--out", "{out}"],
     "--flair-voxel: must be two positive lengths"),
    ("phantom wmh", ["phantom", "wmh", "--seed", "1", "--flair-voxel", "0.001", "5", "--out", "{out}"],
     "GiB, more than this machine"),
    ("qsm predict", ["qsm", "predict", "--mag", "{mag}", "--phase", "{phase}", "--te", "0.005", "0.01", "--b0",
                     "3", "--b0-dir", "0", "0", "0", "--out", "{out}"], "--b0-dir"),
    ("qsm predict", ["qsm", "predict", "--mag", "{mag}", "--phase", "{phase}", "--te", "0.005", "0.01", "--b0",
                     "3", "--tv-iter", "0", "--method", "tv", "--out", "{out}"], "--tv-iter: must be at least 1"),
    ("qsm predict", ["qsm", "predict", "--mag", "{mag}", "--phase", "{phase}", "--te", "0.005", "0.01", "--b0",
                     "3", "--vsharp-radius", "1e6", "--out", "{out}"], "--vsharp-radius"),
    ("qsm predict", ["qsm", "predict", "--mag", "{mag}", "--phase", "{phase}", "--te", "0.005", "0.01", "--b0",
                     "3", "--harmonic-iterations", "50", "--out", "{out}"], "--harmonic-iterations: must be 0 to 20"),
    ("qsm predict", ["qsm", "predict", "--mag", "{mag}", "--phase", "{phase}", "--te", "0.005", "0.01", "--b0",
                     "3", "--harmonic-iterations", "-1", "--out", "{out}"], "--harmonic-iterations"),
    ("qsm invert", ["qsm", "invert", "--field", "{chi}", "--mask", "{mask}", "--finetune-steps", "2", "--out",
                    "{out}"], "--finetune-steps: only applies to method pedqnet"),
    ("qsm invert", ["qsm", "invert", "--field", "{chi}", "--mask", "{mask}", "--b0-dir", "0", "0", "0", "--out",
                    "{out}"], "--b0-dir"),
    ("qsm invert", ["qsm", "invert", "--field", "{chi}", "--mask", "{mask}", "--unit", "hz", "--b0", "0", "--out",
                    "{out}"], "--b0"),
    ("qsm invert", ["qsm", "invert", "--field", "{mag}", "--mask", "{mask}", "--out", "{out}"], "4D"),
    ("qsm train", ["qsm", "train", "--patch", "40", "--out", "{out}"], "--patch: must be a positive multiple of 16"),
    ("qsm train", ["qsm", "train", "--steps", "0", "--out", "{out}"], "--steps"),
    ("qsm train", ["qsm", "train", "--device", "tpu", "--out", "{out}"], "--device"),
    ("qsm train", ["qsm", "train", "--out", "{file}"], "exists and is not a folder"),
    ("qsm train-mask", ["qsm", "train-mask", "--patch", "36", "--out", "{out}"],
     "--patch: must be a positive multiple of 8"),
    ("qsm train-mask", ["qsm", "train-mask", "--steps", "0", "--out", "{out}"], "--steps"),
    ("qsm train-mask", ["qsm", "train-mask", "--device", "tpu", "--out", "{out}"], "--device"),
    ("qsm train-mask", ["qsm", "train-mask", "--out", "{file}"], "exists and is not a folder"),
    ("qsm predict", ["qsm", "predict", "--mag", "{mag}", "--phase", "{phase}", "--te", "0.005", "0.01", "--b0",
                     "3", "--mask-weights", "{file}", "--out", "{out}"], "--mask-weights: only applies to masker net"),
    ("wmh predict", ["wmh", "predict", "{t1}", "--threshold", "1.5", "--out", "{out}"], "--threshold"),
    ("wmh predict", ["wmh", "predict", "{t1}", "--brain-mask", "{labels}", "--out", "{out}"], "not binary"),
    ("wmh predict", ["wmh", "predict", "{t1}", "--brain-mask", "{dwi_mask}", "--out", "{out}"], "does not match"),
    ("wmh predict", ["wmh", "predict", "{t1}", "--brain-mask", "{mask}", "{mask}", "--out", "{out}"],
     "--brain-mask: 2 mask(s) for 1 T1(s)"),
    ("wmh train", ["wmh", "train", "--phantoms", "-1", "--out", "{out}"], "--phantoms: must not be negative"),
    ("wmh train", ["wmh", "train", "--phantoms", "1", "--epochs", "0", "--out", "{out}"], "--epochs"),
    ("wmh train", ["wmh", "train", "--phantoms", "1", "--batch-size", "0", "--out", "{out}"], "--batch-size"),
    ("wmh train", ["wmh", "train", "--phantoms", "1", "--phantom-lesions", "x", "--out", "{out}"], "--phantom-lesions"),
    ("phantom wmh", ["phantom", "wmh", "--seed", "1", "--lesions", "x", "--out", "{out}"], "--lesions"),
    ("wmh tune", ["wmh", "tune", "--weights", "{wmh_weights}", "--grid", "1.5", "--out", "{out}"], "--grid"),
    ("wmh tune", ["wmh", "tune", "--weights", "{wmh_weights}", "--grid", "x", "--out", "{out}"], "--grid"),
    ("wmh tune", ["wmh", "tune", "--weights", "{wmh_weights}", "--phantoms", "0", "--out", "{out}"], "--phantoms"),
    ("wmh tune", ["wmh", "tune", "--weights", "{wmh_weights}", "--seed-start", "899999", "--out", "{out}"],
     "--seed-start: tuning seeds must stay below"),
    ("wmh tune", ["wmh", "tune", "--weights", "{wmh_weights}", "--seed-start", "3995", "--out", "{out}"],
     "--seed-start: seeds 4000..4012 trained this network"),
    ("wmh tune", ["wmh", "tune", "--weights", "{wmh_weights}", "--phantom-lesions", "x", "--out", "{out}"],
     "--phantom-lesions"),
    ("wmh tune", ["wmh", "tune", "--weights", "{wmh_weights}", "--out", "{file}"], "exists and is not a folder"),
    ("wmh evaluate", ["wmh", "evaluate", "--pred", "{mask}", "--truth", "{mask}", "{mask}"], "--truth"),
    ("microstructure pretrain", ["microstructure", "pretrain", "--subjects", "0", "--out", "{out}"], "--subjects"),
    ("microstructure pretrain", ["microstructure", "pretrain", "--epochs", "0", "--out", "{out}"], "--epochs"),
    ("microstructure pretrain", ["microstructure", "pretrain", "--batch-size", "0", "--out", "{out}"],
     "--batch-size"),
    ("microstructure pretrain", ["microstructure", "pretrain", "--scheme", "b9000", "--out", "{out}"], "--scheme"),
    ("microstructure pretrain", ["microstructure", "pretrain", "--scheme", "b1000", "--scheme-from", "{bval}",
                                 "{bvec}", "--out", "{out}"], "not allowed with"),
    ("microstructure pretrain", ["microstructure", "pretrain", "--scheme-from", "{bval}", "--out", "{out}"],
     "--scheme-from"),
    ("microstructure pretrain", ["microstructure", "pretrain", "--crop", "10", "12", "0", "50", "0", "50", "--out",
                                 "{out}"], "--crop"),
    ("microstructure pretrain", ["microstructure", "pretrain", "--crop", "1", "2", "3", "--out", "{out}"], "--crop"),
    ("microstructure pretrain", ["microstructure", "pretrain", "--test-subjects", "-1", "--out", "{out}"],
     "--test-subjects"),
    ("microstructure pretrain", ["microstructure", "pretrain", "--scheme-from", "{bval_high}", "{bvec}", "--out",
                                 "{out}/w.pt"], "beyond the auxiliary data"),
    ("microstructure predict", ["microstructure", "predict", "{dwi}", "--bval", "{bval}", "--bvec", "{bvec}",
                                "--method", "magic", "--out", "{out}"], "--method"),
    ("microstructure finetune", ["microstructure", "finetune", "--subjects", "0", "--out", "{out}"], "--subjects"),
    ("microstructure finetune", ["microstructure", "finetune", "--lr", "-1", "--out", "{out}"], "--lr"),
    ("microstructure finetune", ["microstructure", "finetune", "--anchor", "-1", "--out", "{out}"], "--anchor"),
    ("microstructure evaluate", ["microstructure", "evaluate", "{file}", "{noddi}"], "file not found"),
    ("microstructure evaluate", ["microstructure", "evaluate", "{out}", "{noddi}"], "file not found"),
    ("microstructure predict", ["microstructure", "predict", "{dwi}", "--bval", "{bval}", "--bvec", "{bvec}",
                                "--device", "tpu", "--out", "{out}"], "--device"),
    ("microstructure fit", ["microstructure", "fit", "{dwi}", "--bval", "{bval}", "--bvec", "{bvec}", "--mask",
                            "{mask}", "--out", "{out}"], "does not match"),
    ("info", ["info", "{dwi}", "--bval", "{bval}"], "give both"),
    ("batch", ["batch", "qsm", "{file}", "--out", "{out}", "--workers", "-3"], "--workers"),
    ("batch", ["batch", "qsm", "{file}", "--out", "{out}", "--num-parts", "0"], "--num-parts"),
    ("batch", ["batch", "qsm", "{file}", "--out", "{out}", "--scheduler", "not-an-address"], "--scheduler"),
    ("bids", ["bids", "{bids_nodesc}", "{out}", "participant", "--workers", "0"], "not a BIDS dataset"),
    ("bids", ["bids", "{bids_baddesc}", "{out}", "participant", "--workers", "0"], "no input found"),
    ("bids", ["bids", "{bids_empty}", "{out}", "participant", "--workers", "0"], "no input found"),
    ("bids", ["bids", "{bids_empty}", "{out}", "participant", "--participant-label", "../x", "--workers", "0"],
     "not in the dataset"),
    ("bids", ["bids", "{bids_empty}", "{bids_empty}", "participant", "--workers", "0"],
     "root of a raw BIDS dataset"),
    ("phantom cmb", ["phantom", "cmb", "--seed", "1", "--voxel-size", "0.01", "--out", "{out}"], "--voxel-size"),
    ("phantom cmb", ["phantom", "cmb", "--seed", "1", "--crop", "1", "--out", "{out}"], "crop"),
    ("cmb predict", ["cmb", "predict", "{t1}", "--contrast", "swi", "--threshold", "1.5", "--out", "{out}"],
     "--threshold"),
    ("cmb predict", ["cmb", "predict", "{t1}", "--contrast", "t2", "--out", "{out}"], "--contrast"),
    ("cmb predict", ["cmb", "predict", "{t1}", "--contrast", "swi", "--device", "tpu", "--out", "{out}"], "--device"),
    ("cmb predict", ["cmb", "predict", "{t1}", "--contrast", "swi", "--mask", "{dwi_mask}", "--out", "{out}"],
     "does not match"),
    ("cmb train", ["cmb", "train", "--phantoms", "0", "--out", "{out}"], "--phantoms"),
    ("cmb train", ["cmb", "train", "--kd-weight", "2", "--out", "{out}"], "--kd-weight"),
    ("cmb train", ["cmb", "train", "--target-sensitivity", "1.5", "--out", "{out}"], "--target-sensitivity"),
    ("cmb train", ["cmb", "train", "--epochs-teacher", "0", "--out", "{out}"], "--epochs-teacher"),
    ("cmb train", ["cmb", "train", "--max-fp", "-1", "--out", "{out}"], "--max-fp"),
    ("cmb train", ["cmb", "train", "--seed-start", "800000", "--out", "{out}"], "overlap"),
    ("cmb train", ["cmb", "train", "--device", "tpu", "--out", "{out}"], "--device"),
    ("cmb evaluate", ["cmb", "evaluate", "--out", "{out}/s.json"], "give --pred"),
    ("cmb evaluate", ["cmb", "evaluate", "--pred", "{labels}", "--truth", "{labels}", "{labels}"], "--truth"),
    ("phantom lowfield", ["phantom", "lowfield", "--seed", "1", "--snr", "0", "--out", "{out}"], "--snr"),
    ("phantom lowfield", ["phantom", "lowfield", "--seed", "1", "--voxel-size", "0.001", "1", "1", "--out",
                          "{out}"], "GiB, more than this machine"),
    ("lowfield predict", ["lowfield", "predict", "{t1}", "--device", "tpu", "--out", "{out}"], "--device"),
    ("lowfield predict", ["lowfield", "predict", "{t1}", "--contrast", "pd", "--out", "{out}"], "--contrast"),
    ("lowfield train", ["lowfield", "train", "--iterations", "0", "--out", "{out}"], "--iterations"),
    ("lowfield train", ["lowfield", "train", "--seed-start", "899999", "--subjects", "5", "--out", "{out}"],
     "held-out"),
    ("lowfield train", ["lowfield", "train", "--model", "vae", "--out", "{out}"], "--model"),
    ("lowfield evaluate", ["lowfield", "evaluate", "--real-t1", "{t1}", "--contrast", "t2", "--out", "{out}"],
     "--real-t1"),
]


@pytest.mark.parametrize("command, argv, needle", OPTION_CASES,
                         ids=[f"{c.replace(' ', '-')}-{i}" for i, (c, _, _) in enumerate(OPTION_CASES)])
def test_bad_option_is_one_line_exit_2_nothing_written(command, argv, needle, good, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    afile = tmp_path / "a_file.tsv"
    afile.write_text("subject\tmag\tphase\tte\tb0\ns1\tm\tp\t0.01\t3\n")
    folders = {"bids_nodesc": _bids_without_description(tmp_path / "nodesc"),
               "bids_baddesc": _bids_with_bad_description(tmp_path / "baddesc"),
               "bids_empty": _bids_empty(tmp_path / "emptyds")}
    values = {**{k: str(v) for k, v in good.items()}, **{k: str(v) for k, v in folders.items()}}
    out = tmp_path / "out"
    before = sorted(p.name for p in tmp_path.iterdir())
    err = _assert_refused([a.format(out=out, file=afile, **values) for a in argv], capsys, out)
    assert needle in err, (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "out") == [b for b in before if b != "out"]


def _leaf_commands(parser, prefix=()):
    import argparse

    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield " ".join(prefix)
        return
    for name, child in subs[0].choices.items():
        yield from _leaf_commands(child, (*prefix, name))


def test_every_command_is_in_the_table():
    covered = {c for c, _, _ in FILE_SLOTS} | {c for c, _, _ in OPTION_CASES}
    leaves = set(_leaf_commands(build_parser()))
    missing = sorted(leaves - covered)
    assert not missing, f"commands without a row in the fuzz table: {missing}"
