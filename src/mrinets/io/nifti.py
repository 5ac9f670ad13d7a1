"""NIfTI input and output that keeps geometry honest.

Inside mrinets an image is a float32 array in RAS+ voxel order with the 4x4
affine of that array beside it (:class:`Image`). :func:`load` reorients whatever
is on disk (LAS, LPS, oblique, ...) to the closest RAS+ axis order without
resampling; :func:`save` applies the inverse permutation/flips and writes the
input's own header back (qform/sform and their codes, voxel sizes, units), so
every output lies on the input's grid in the input's orientation.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations as ornt

from mrinets.errors import (
    DimensionError,
    EmptyImageError,
    GridMismatchError,
    NonFiniteError,
    NotNiftiError,
    UnreadableFileError,
)
from mrinets.io.output import atomic_path

__all__ = ["Image", "check_same_grid", "load", "load_stack", "save", "from_array"]

_RAS = ornt.axcodes2ornt(("R", "A", "S"))


@dataclass(frozen=True)
class Source:
    """What is needed to write an array back onto the file it came from."""

    header: nib.Nifti1Header
    image_class: type
    affine: np.ndarray
    spatial_shape: tuple[int, int, int]
    to_ras: np.ndarray
    dtype: np.dtype


@dataclass(frozen=True, eq=False)
class Image:
    """An array in RAS+ voxel order with its affine and its origin.

    Attributes
    ----------
    data : ndarray
        float32, shape (X, Y, Z) or (X, Y, Z, T), RAS+ voxel order.
    affine : ndarray
        4x4 voxel-to-world (RAS mm) matrix of ``data``.
    path : Path or None
        The file it was read from.
    source : Source or None
        Geometry of the file, used by :func:`save` to write back onto it.
    """

    data: np.ndarray
    affine: np.ndarray
    path: Path | None = None
    source: Source | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape[:3])  # type: ignore[return-value]

    @property
    def voxel_size(self) -> np.ndarray:
        """Voxel edge lengths in mm along the array axes."""
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)).astype(np.float64)

    @property
    def name(self) -> str:
        """File name without ``.nii``/``.nii.gz``, used to name outputs."""
        if self.path is None:
            return "image"
        stem = self.path.name
        for suffix in (".nii.gz", ".nii"):
            if stem.endswith(suffix):
                return stem[: -len(suffix)]
        return stem

    def with_data(self, data: np.ndarray) -> Image:
        """A new image on the same grid (3D or 4D ``data``)."""
        data = np.asarray(data)
        if data.shape[:3] != self.spatial_shape:
            raise ValueError(f"data of shape {data.shape} does not fit grid {self.spatial_shape}")
        return Image(data=data, affine=self.affine, path=self.path, source=self.source)


def from_array(data: np.ndarray, affine: np.ndarray | None = None) -> Image:
    """Wrap an in-memory RAS+ array (phantoms, tests) as an :class:`Image`."""
    data = np.asarray(data, dtype=np.float32)
    affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    if data.ndim not in (3, 4):
        raise ValueError(f"data must be 3D or 4D, got shape {data.shape}")
    return Image(data=data, affine=affine)


def _read(path: Path) -> nib.Nifti1Image:
    if not path.exists():
        raise UnreadableFileError(path, "file not found")
    if path.is_dir():
        raise UnreadableFileError(path, "is a folder, not a NIfTI file")
    if not os.access(path, os.R_OK):
        raise UnreadableFileError(path, "file is not readable (permission denied)")
    try:
        img = nib.load(str(path))
    except (nib.filebasedimages.ImageFileError, ValueError) as exc:
        raise NotNiftiError(path, f"not a NIfTI image ({_first_line(exc)})") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise UnreadableFileError(path, f"cannot read file ({_first_line(exc)})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise NotNiftiError(path, f"not a NIfTI image (read as {type(img).__name__})")
    return img


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def load(
    path: str | os.PathLike,
    *,
    ndim: int | Sequence[int] = 3,
    allow_empty: bool = False,
) -> Image:
    """Read a NIfTI-1/NIfTI-2 file into a float32 RAS+ :class:`Image`.

    Parameters
    ----------
    path : str or path-like
        ``.nii`` or ``.nii.gz`` file.
    ndim : int or sequence of int
        Accepted dimensionalities (3, 4 or both). A 4D file with a single volume
        counts as 3D.
    allow_empty : bool
        Accept images that are constant everywhere (all zeros, for instance).

    Raises
    ------
    UnreadableFileError, NotNiftiError, DimensionError, NonFiniteError, EmptyImageError
        With the file name and the problem in one line.
    """
    path = Path(path)
    img = _read(path)
    accepted = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 3 and shape[-1] == 1 and 3 in accepted and len(shape) not in accepted:
        shape = shape[:-1]
    if len(shape) not in accepted or len(shape) < 3 or len(shape) > 4:
        want = " or ".join(f"{n}D" for n in accepted)
        raise DimensionError(path, f"expected a {want} image, got {len(img.shape)}D of shape {img.shape}")
    if min(shape[:3]) < 2:
        raise DimensionError(path, f"expected a 3D volume, got a single slice of shape {img.shape}")
    try:
        raw = np.asarray(img.dataobj, dtype=np.float32).reshape(shape)
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise UnreadableFileError(path, f"cannot read voxel data ({_first_line(exc)})") from None
    n_bad = int(raw.size - np.count_nonzero(np.isfinite(raw)))
    if n_bad:
        raise NonFiniteError(path, f"{n_bad} voxels are NaN or infinite")
    if not allow_empty and (raw.size == 0 or float(raw.max()) == float(raw.min())):
        raise EmptyImageError(path, f"image is empty (every voxel equals {float(raw.flat[0]):g})")

    affine = img.affine.astype(np.float64)
    to_ras = ornt.ornt_transform(ornt.io_orientation(affine), _RAS)
    data = np.ascontiguousarray(ornt.apply_orientation(raw, to_ras), dtype=np.float32)
    ras_affine = affine @ ornt.inv_ornt_aff(to_ras, shape[:3])
    source = Source(
        header=img.header.copy(),
        image_class=type(img),
        affine=affine,
        spatial_shape=shape[:3],  # type: ignore[arg-type]
        to_ras=to_ras,
        dtype=img.get_data_dtype(),
    )
    return Image(data=data, affine=ras_affine, path=path, source=source)


def load_stack(paths: Sequence[str | os.PathLike]) -> Image:
    """Read one 3D file per volume (e.g. per echo) into a 4D :class:`Image`.

    Every file must lie on the first file's grid; the result keeps the first
    file's header for writing outputs.
    """
    if not paths:
        raise ValueError("paths must not be empty")
    images = [load(p) for p in paths]
    for other in images[1:]:
        check_same_grid(images[0], other)
    first = images[0]
    return Image(data=np.stack([im.data for im in images], axis=-1), affine=first.affine, path=first.path,
                 source=first.source)


def save(
    data: np.ndarray | Image,
    path: str | os.PathLike,
    *,
    like: Image,
    dtype: np.dtype | type | str | None = np.float32,
) -> Path:
    """Write a RAS+ array onto the grid and orientation of ``like``, atomically.

    Parameters
    ----------
    data : ndarray or Image
        3D or 4D array in the RAS+ voxel order of ``like.data``.
    path : str or path-like
        Destination ``.nii`` or ``.nii.gz``.
    like : Image
        The image whose grid, orientation and header the output keeps.
    dtype : dtype or None
        On-disk data type; ``None`` keeps the data type of ``like``'s file.

    Returns
    -------
    Path
        ``path``.
    """
    array = data.data if isinstance(data, Image) else np.asarray(data)
    if array.shape[:3] != like.spatial_shape:
        raise ValueError(f"array of shape {array.shape} does not fit grid {like.spatial_shape}")
    path = Path(path)
    src = like.source
    if src is None:
        out_array = array
        header = nib.Nifti1Header()
        image_class: type = nib.Nifti1Image
        affine = like.affine
        qcode = scode = 1
    else:
        back = ornt.ornt_transform(_RAS, ornt.io_orientation(src.affine))
        out_array = ornt.apply_orientation(array, back)
        header = src.header.copy()
        image_class = src.image_class
        affine = src.affine
        qcode = int(header["qform_code"])
        scode = int(header["sform_code"])
    disk_dtype = np.dtype(src.dtype if (dtype is None and src is not None) else (dtype or np.float32))
    if np.issubdtype(disk_dtype, np.integer):
        info = np.iinfo(disk_dtype)
        out_array = np.clip(np.rint(out_array), info.min, info.max)
    out_array = np.ascontiguousarray(out_array).astype(disk_dtype, copy=False)

    header.set_data_dtype(disk_dtype)
    header.set_data_shape(out_array.shape)
    if out_array.ndim == 3:
        header["dim"][4:] = 1
    img = image_class(out_array, affine, header=header)
    keep = src is not None
    img.set_qform(header.get_qform() if keep and qcode else affine, code=qcode)
    img.set_sform(header.get_sform() if keep and scode else affine, code=scode)
    img.header.set_slope_inter(1.0, 0.0)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


def check_same_grid(a: Image, b: Image, *, atol_mm: float = 1e-3) -> None:
    """Raise :class:`GridMismatchError` unless ``a`` and ``b`` share a voxel grid.

    The grids match when the spatial shapes are equal and the affines agree to
    ``atol_mm`` (millimetres, on every voxel corner of the field of view).
    """
    where = b.path or "image"
    if a.spatial_shape != b.spatial_shape:
        raise GridMismatchError(
            where, f"grid {b.spatial_shape} does not match {a.path or 'the first image'} grid {a.spatial_shape}"
        )
    corners = np.array(np.meshgrid(*[[0, s - 1] for s in a.spatial_shape], indexing="ij")).reshape(3, -1)
    corners = np.vstack([corners, np.ones(corners.shape[1])])
    diff = np.abs(a.affine @ corners - b.affine @ corners).max()
    if diff > atol_mm:
        raise GridMismatchError(
            where, f"affine differs from {a.path or 'the first image'} by up to {diff:.3g} mm (different position or orientation)"
        )
