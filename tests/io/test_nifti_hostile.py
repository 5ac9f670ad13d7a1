"""The loader refuses broken files with one InputError naming the file, never a traceback or a wrong image."""

from __future__ import annotations

import struct

import hostile
import numpy as np
import pytest

from mrinets.errors import InputError
from mrinets.io import load, load_mask
from mrinets.io.nifti import from_array


@pytest.mark.parametrize("maker, needles", [
    (hostile.zero_sform_qform, ["no usable orientation", "sform"]),
    (hostile.sform_zero_column, ["no usable orientation", "column 2 of the sform is zero"]),
    (hostile.nan_sform, ["no usable orientation", "not finite"]),
    (hostile.rgb24, ["RGB colour"]),
    (hostile.one_bit, ["1-bit"]),
    (hostile.huge_dims, ["4000 x 4000 x 4000", "238 GiB"]),
    (hostile.absurd_slope, ["scl_slope 1e+30", "1e+12"]),
    (hostile.complex_valued, ["complex", "magnitude"]),
])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_broken_header_is_one_input_error(tmp_path, maker, needles, suffix):
    path = maker(tmp_path, suffix)
    with pytest.raises(InputError) as info:
        load(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)


def test_huge_compressed_header_is_refused_before_reading(tmp_path, monkeypatch):
    """A .nii.gz whose header declares 238 GiB is refused from the header, not by a MemoryError."""
    import nibabel.arrayproxy

    path = hostile.huge_dims(tmp_path, ".nii.gz")

    def no_read(*args, **kwargs):
        raise AssertionError("voxel data read for an image that cannot fit in memory")

    monkeypatch.setattr(nibabel.arrayproxy.ArrayProxy, "__array__", no_read)
    with pytest.raises(InputError, match=r"4000 x 4000 x 4000 .* float32 needs 238 GiB"):
        load(path)


def test_slope_scaling_in_range_is_kept(tmp_path):
    """A sane scl_slope (Philips-style 0.5) still scales the data."""
    raw = (hostile.brain() * 1000).astype(np.int16)
    path = hostile.patched(tmp_path / "scaled.nii", raw, ("ff", hostile.SCL_SLOPE, (0.5, 10.0)))
    image = load(path)
    np.testing.assert_allclose(image.data, raw * 0.5 + 10.0)


def _mutations(seed: int, count: int):
    """Random values in the header fields a broken converter gets wrong."""
    rng = np.random.default_rng(seed)
    specials = [0.0, -1.0, 1e-30, 1e30, float("inf"), float("nan"), 3.0, 255.0]
    for _ in range(count):
        field = rng.integers(7)
        if field == 0:
            dims = [int(rng.integers(1, 8))] + [int(rng.choice([0, 1, 2, 8, 9, 32767, -1])) for _ in range(7)]
            yield "8h", hostile.DIM, tuple(dims)
        elif field == 1:
            code = int(rng.choice([0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1536, 1792, 2048, 2304, 7]))
            yield "hh", hostile.DATATYPE, (code, int(rng.choice([0, 1, 8, 16, 32, 64, 24])))
        elif field == 2:
            yield "8f", hostile.PIXDIM, tuple(float(rng.choice(specials)) for _ in range(8))
        elif field == 3:
            yield "ff", hostile.SCL_SLOPE, (float(rng.choice(specials)), float(rng.choice(specials)))
        elif field == 4:
            yield "hh", hostile.QFORM_CODE, (int(rng.choice([0, 1, 2, -5, 99])), int(rng.choice([0, 1, 4, -1])))
        elif field == 5:
            yield "12f", hostile.SROW, tuple(float(rng.choice(specials)) for _ in range(12))
        else:
            yield "f", hostile.VOX_OFFSET, (float(rng.choice([0.0, 348.0, 352.0, 1e9, -352.0, 353.0])),)


@pytest.mark.parametrize("seed", range(8))
def test_fuzzed_headers_load_or_refuse_in_one_line(tmp_path, seed):
    """Generated header damage: each file either loads as a finite image on a usable grid or raises InputError."""
    rng = np.random.default_rng(1000 + seed)
    for i in range(40):
        patches = list(_mutations(rng.integers(1 << 30), int(rng.integers(1, 4))))
        suffix = ".nii.gz" if i % 2 else ".nii"
        path = hostile.patched(tmp_path / f"fuzz{i}{suffix}", hostile.brain(), *patches)
        try:
            image = load(path, ndim=(3, 4))
        except InputError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(str(path)), (patches, exc)
            continue
        assert image.data.dtype == np.float32 and np.isfinite(image.data).all(), patches
        assert np.all(np.abs(image.data) <= 1e12), patches
        assert np.isfinite(image.affine).all() and abs(np.linalg.det(image.affine[:3, :3])) > 0, patches


def test_mask_values(tmp_path):
    import nibabel as nib

    ball = np.zeros((8, 8, 8), np.float32)
    ball[2:6, 2:6, 2:6] = 1
    for name, data, needle in (("negative", -ball, "no voxel above 0.5 (values -1 to 0)"),
                               ("fraction", 0.3 * ball, "no voxel above 0.5 (values 0 to 0.3)"),
                               ("zeros", 0 * ball, "no voxel above 0.5 (values 0 to 0)")):
        path = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(data, np.eye(4)), path)
        with pytest.raises(InputError, match=r"mask has no voxel above 0\.5") as info:
            load_mask(path)
        assert needle in str(info.value)
    path = tmp_path / "ok.nii.gz"
    nib.save(nib.Nifti1Image(255 * ball, np.eye(4)), path)
    assert load_mask(path).sum() == 64
    with pytest.raises(InputError, match="does not match"):
        load_mask(path, like=from_array(np.ones((8, 8, 9), np.float32)))


def test_header_offsets_are_nifti1():
    """The byte offsets the hostile makers patch are those of the NIfTI-1 standard."""
    raw = hostile.nifti_bytes(hostile.brain())
    assert struct.unpack_from("<i", raw, 0)[0] == 348
    assert struct.unpack_from("<h", raw, hostile.DIM)[0] == 3
    assert struct.unpack_from("<h", raw, hostile.DATATYPE)[0] == 16  # float32
    assert raw[344:348] == b"n+1\x00"
