"""Hostile NIfTI files made byte by byte, for the loader's tests and the CLI fuzz table.

Each maker writes one file into a folder and returns its path. The header
fields are patched at their NIfTI-1 byte offsets, as a broken converter would
leave them, so nibabel's own writer cannot tidy them up.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

# NIfTI-1 header byte offsets (little endian).
DIM, DATATYPE, BITPIX, PIXDIM, VOX_OFFSET, SCL_SLOPE = 40, 70, 72, 76, 108, 112
QFORM_CODE, SFORM_CODE, QUATERN, SROW = 252, 254, 256, 280


def brain(shape=(8, 8, 8), seed=0) -> np.ndarray:
    """A small positive volume that is not constant."""
    return (np.random.default_rng(seed).random(shape) + 0.5).astype(np.float32)


def write_bytes(path: Path, data: bytes | bytearray) -> Path:
    if path.name.endswith(".gz"):
        data = gzip.compress(bytes(data), compresslevel=1)
    path.write_bytes(bytes(data))
    return path


def nifti_bytes(data: np.ndarray, affine=None) -> bytearray:
    """The bytes of a single-file NIfTI-1 image of ``data``."""
    img = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
    return bytearray(img.to_bytes())


def patched(path: Path, data: np.ndarray, *patches: tuple[str, int, tuple]) -> Path:
    """Write ``data`` then overwrite header fields: ``(struct format, offset, values)``."""
    raw = nifti_bytes(data)
    for fmt, offset, values in patches:
        struct.pack_into("<" + fmt, raw, offset, *values)
    return write_bytes(path, raw)


def zero_sform_qform(folder: Path, suffix=".nii") -> Path:
    return patched(folder / f"zero_sform_qform{suffix}", brain(), ("hh", QFORM_CODE, (1, 1)),
                   ("12f", SROW, (0.0,) * 12), ("6f", QUATERN, (0.0,) * 6), ("8f", PIXDIM, (0.0,) * 8))


def sform_zero_column(folder: Path, suffix=".nii") -> Path:
    return patched(folder / f"sform_zero_column{suffix}", brain(), ("hh", QFORM_CODE, (0, 1)),
                   ("12f", SROW, (1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0)))


def nan_sform(folder: Path, suffix=".nii") -> Path:
    return patched(folder / f"nan_sform{suffix}", brain(), ("hh", QFORM_CODE, (0, 1)),
                   ("12f", SROW, (float("nan"), 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0)))


def rgb24(folder: Path, suffix=".nii") -> Path:
    rgb = np.zeros((8, 8, 8), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"] = (brain() * 100).astype(np.uint8)
    return write_bytes(folder / f"rgb24{suffix}", nifti_bytes(rgb))


def one_bit(folder: Path, suffix=".nii") -> Path:
    return patched(folder / f"one_bit{suffix}", (brain() > 1).astype(np.uint8), ("hh", DATATYPE, (1, 1)))


def huge_dims(folder: Path, suffix=".nii") -> Path:
    return patched(folder / f"huge_dims{suffix}", brain(), ("8h", DIM, (3, 4000, 4000, 4000, 1, 1, 1, 1)))


def absurd_slope(folder: Path, suffix=".nii") -> Path:
    return patched(folder / f"absurd_slope{suffix}", (brain() * 1000).astype(np.int16),
                   ("ff", SCL_SLOPE, (1e30, 0.0)))


def complex_valued(folder: Path, suffix=".nii") -> Path:
    data = brain()
    return write_bytes(folder / f"complex{suffix}", nifti_bytes((data + 1j * data).astype(np.complex64)))


def truncated(folder: Path, suffix=".nii.gz") -> Path:
    raw = gzip.compress(bytes(nifti_bytes(brain())))
    path = folder / f"truncated{suffix}"
    path.write_bytes(raw[: len(raw) // 2])
    return path


def not_nifti(folder: Path, suffix=".nii.gz") -> Path:
    path = folder / f"text{suffix}"
    path.write_text("subject\tt1\n")
    return path


def nan_voxels(folder: Path, suffix=".nii.gz") -> Path:
    data = brain()
    data[2, 2, 2] = np.nan
    return write_bytes(folder / f"nan_voxels{suffix}", nifti_bytes(data))


def two_d(folder: Path, suffix=".nii.gz") -> Path:
    return write_bytes(folder / f"two_d{suffix}", nifti_bytes(brain((8, 8))))


def five_d(folder: Path, suffix=".nii.gz") -> Path:
    return write_bytes(folder / f"five_d{suffix}", nifti_bytes(brain((4, 4, 4, 2, 2))))


def a_folder(folder: Path, suffix=".nii.gz") -> Path:
    path = folder / f"folder{suffix}"
    path.mkdir()
    return path


def missing(folder: Path, suffix=".nii.gz") -> Path:
    return folder / f"missing{suffix}"


# Files that no command may accept, whatever it reads them as.
BAD_FILES: dict[str, Callable[[Path], Path]] = {
    "zero_sform_qform": zero_sform_qform,
    "sform_zero_column": sform_zero_column,
    "nan_sform": nan_sform,
    "rgb24": rgb24,
    "one_bit": one_bit,
    "huge_dims": huge_dims,
    "huge_dims_gz": lambda folder: huge_dims(folder, ".nii.gz"),
    "absurd_slope": absurd_slope,
    "complex": complex_valued,
    "truncated": truncated,
    "not_nifti": not_nifti,
    "nan_voxels": nan_voxels,
    "two_d": two_d,
    "five_d": five_d,
    "folder": a_folder,
    "missing": missing,
}
