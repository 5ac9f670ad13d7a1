"""NIfTI round trips, orientation handling and input checks."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mrinets.errors import (
    DimensionError,
    EmptyImageError,
    GridMismatchError,
    NonFiniteError,
    NotNiftiError,
    UnreadableFileError,
)
from mrinets.io import check_same_grid, load, save
from mrinets.io.nifti import from_array

AXCODES = [("R", "A", "S"), ("L", "A", "S"), ("L", "P", "S"), ("A", "S", "R"), ("I", "L", "P")]


def _oriented(axcodes, shape=(6, 7, 8), voxel=(1.0, 2.0, 3.0), image_class=nib.Nifti1Image, dtype=np.int16):
    """A RAS volume with a known pattern, stored on disk in another axis order."""
    ras = np.arange(np.prod(shape), dtype=np.float64).reshape(shape) + 1
    ras_affine = np.diag([*voxel, 1.0])
    ras_affine[:3, 3] = [-10, 20, 5]
    target = nib.orientations.axcodes2ornt(axcodes)
    transform = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), target)
    disk = nib.orientations.apply_orientation(ras, transform)
    disk_affine = ras_affine @ nib.orientations.inv_ornt_aff(transform, shape)
    img = image_class(disk.astype(dtype), disk_affine)
    img.set_qform(disk_affine, code=1)
    img.set_sform(disk_affine, code=4)
    return img, ras, ras_affine


@pytest.mark.parametrize("axcodes", AXCODES)
@pytest.mark.parametrize("image_class", [nib.Nifti1Image, nib.Nifti2Image])
def test_load_gives_ras_array_for_any_orientation(tmp_path, axcodes, image_class):
    img, ras, ras_affine = _oriented(axcodes, image_class=image_class)
    path = tmp_path / "x.nii.gz"
    nib.save(img, path)
    im = load(path)
    assert nib.aff2axcodes(im.affine) == ("R", "A", "S")
    assert im.data.dtype == np.float32
    np.testing.assert_array_equal(im.data, ras)
    np.testing.assert_allclose(im.affine, ras_affine, atol=1e-5)
    # the same world point is reached by both arrays' affines
    np.testing.assert_allclose(im.voxel_size, [1, 2, 3], atol=1e-6)


@pytest.mark.parametrize("axcodes", AXCODES)
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_save_goes_back_to_input_orientation_and_header(tmp_path, axcodes, suffix):
    img, _, _ = _oriented(axcodes)
    src = tmp_path / f"in{suffix}"
    nib.save(img, src)
    im = load(src)
    out = save(im.data * 2, tmp_path / f"out{suffix}", like=im, dtype=None)
    back = nib.load(out)
    np.testing.assert_allclose(back.affine, img.affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(back.dataobj), np.asarray(img.dataobj) * 2)
    assert back.get_data_dtype() == np.int16
    assert int(back.header["qform_code"]) == 1 and int(back.header["sform_code"]) == 4
    assert type(back) is type(img)


def test_save_float_maps_and_4d(tmp_path):
    img, _, _ = _oriented(("L", "P", "S"))
    nib.save(img, tmp_path / "in.nii.gz")
    im = load(tmp_path / "in.nii.gz")
    four = np.stack([im.data, -im.data], axis=-1) / 7
    out = nib.load(save(four, tmp_path / "map.nii.gz", like=im))
    assert out.get_data_dtype() == np.float32 and out.shape == (*img.shape, 2)
    np.testing.assert_allclose(out.get_fdata()[..., 1], -np.asarray(img.dataobj) / 7, rtol=1e-6)


def test_real_las_t1_round_trip(tmp_path, real_t1):
    """The real deep-T1-WMH T1 (LAS) comes back with its affine and voxels."""
    original = nib.load(real_t1)
    assert nib.aff2axcodes(original.affine) == ("L", "A", "S")
    im = load(real_t1)
    assert nib.aff2axcodes(im.affine) == ("R", "A", "S")
    # the first RAS voxel is the right-most, i.e. the last index along the LAS file's x axis
    np.testing.assert_allclose(im.data[0, :, :], np.asarray(original.dataobj)[-1, :, :], rtol=1e-6)
    out = save(im, tmp_path / "t1.nii.gz", like=im, dtype=None)
    back = nib.load(out)
    np.testing.assert_array_equal(back.affine, original.affine)
    assert back.get_data_dtype() == original.get_data_dtype()
    assert back.header.get_zooms() == original.header.get_zooms()
    np.testing.assert_allclose(back.get_fdata(), original.get_fdata(), rtol=1e-6, atol=0)
    assert int(back.header["sform_code"]) == int(original.header["sform_code"])
    assert int(back.header["qform_code"]) == int(original.header["qform_code"])


def test_real_gre_is_4d(real_gre):
    mag, phase = real_gre
    m = load(mag, ndim=4)
    p = load(phase, ndim=4)
    assert m.shape == (40, 40, 20, 3)
    check_same_grid(m, p)
    with pytest.raises(DimensionError, match="expected a 3D image, got 4D"):
        load(mag)


def _write(tmp_path, data, name="bad.nii.gz", affine=None):
    path = tmp_path / name
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), path)
    return path


def test_errors_name_file_and_problem(tmp_path):
    with pytest.raises(UnreadableFileError, match="missing.nii.gz: file not found"):
        load(tmp_path / "missing.nii.gz")
    text = tmp_path / "notes.nii"
    text.write_text("this is not an image")
    with pytest.raises(NotNiftiError, match="notes.nii: not a NIfTI image"):
        load(text)
    with pytest.raises(UnreadableFileError, match="is a folder"):
        load(tmp_path)
    with pytest.raises(DimensionError, match="got 2D"):
        load(_write(tmp_path, np.ones((5, 5), np.float32)))
    with pytest.raises(DimensionError, match="single slice"):
        load(_write(tmp_path, np.random.rand(5, 5, 1).astype(np.float32)))
    nan = np.random.rand(4, 4, 4).astype(np.float32)
    nan[1, 1, 1] = np.nan
    nan[2, 2, 2] = np.inf
    with pytest.raises(NonFiniteError, match="2 voxels are NaN or infinite"):
        load(_write(tmp_path, nan))
    with pytest.raises(EmptyImageError, match="empty"):
        load(_write(tmp_path, np.zeros((4, 4, 4), np.float32)))
    assert load(_write(tmp_path, np.zeros((4, 4, 4), np.float32)), allow_empty=True).data.max() == 0


def test_truncated_gzip_is_unreadable(tmp_path):
    good = _write(tmp_path, np.random.rand(20, 20, 20).astype(np.float32), name="good.nii.gz")
    raw = good.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises((UnreadableFileError, NotNiftiError), match="cut.nii.gz"):
        load(cut)
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(gzip.compress(b"0" * 400))
    with pytest.raises(NotNiftiError, match="garbage.nii.gz: not a NIfTI image"):
        load(garbage)


def test_check_same_grid(tmp_path):
    data = np.random.rand(5, 6, 7).astype(np.float32)
    a = load(_write(tmp_path, data, name="a.nii.gz"))
    b = load(_write(tmp_path, data, name="b.nii.gz"))
    check_same_grid(a, b)
    shifted = np.eye(4)
    shifted[0, 3] = 0.5
    c = load(_write(tmp_path, data, name="c.nii.gz", affine=shifted))
    with pytest.raises(GridMismatchError, match=r"c.nii.gz: affine differs .* by up to 0.5 mm"):
        check_same_grid(a, c)
    d = load(_write(tmp_path, data[:4], name="d.nii.gz"))
    with pytest.raises(GridMismatchError, match=r"d.nii.gz: grid \(4, 6, 7\) does not match"):
        check_same_grid(a, d)


def test_from_array_saves_with_its_affine(tmp_path):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    im = from_array(np.ones((3, 4, 5)), affine)
    back = nib.load(save(im, tmp_path / "x.nii", like=im))
    np.testing.assert_array_equal(back.affine, affine)
    assert back.shape == (3, 4, 5)


def test_save_refuses_wrong_grid(tmp_path):
    im = from_array(np.ones((3, 4, 5)))
    with pytest.raises(ValueError, match="does not fit grid"):
        save(np.ones((4, 4, 4)), tmp_path / "x.nii", like=im)
    assert list(Path(tmp_path).iterdir()) == []


def test_fsl_bvecs_follow_the_array_into_ras(tmp_path):
    """FSL b-vectors mean the same world direction whether the file is stored LAS or RAS (x flipped by FSL)."""
    import nibabel as nib

    from mrinets.io.gradients import array_frame_to_fsl, fsl_to_array_frame

    data = np.random.default_rng(0).random((4, 5, 6)).astype(np.float32)
    stored = np.array([[1.0, 0.0, 0.0], [0.0, 0.6, 0.8]])
    for name, affine in (("ras", np.diag([2.0, 2.0, 2.0, 1.0])), ("las", np.diag([-2.0, 2.0, 2.0, 1.0])),
                         ("asl", np.array([[0, 0, -2.0, 0], [2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 0, 1]]))):
        nib.save(nib.Nifti1Image(data, affine), tmp_path / f"{name}.nii.gz")
        image = load(tmp_path / f"{name}.nii.gz")
        ras = fsl_to_array_frame(stored, image.source.affine, image.source.to_ras)
        # RAS+ array axes are world axes: the world direction is the vector itself.
        world = (affine[:3, :3] / 2.0) @ (stored * ([-1, 1, 1] if np.linalg.det(affine[:3, :3]) > 0 else 1)).T
        np.testing.assert_allclose(ras, world.T, atol=1e-12)
        # Written back on a RAS grid (positive determinant) FSL negates x again.
        np.testing.assert_allclose(array_frame_to_fsl(ras, image.affine), ras * [-1, 1, 1], atol=1e-12)
