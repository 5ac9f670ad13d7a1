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
from mrinets.io.output import atomic_path, note_input

__all__ = ["Image", "MAX_ABS_VALUE", "check_same_grid", "from_array", "load", "load_labels", "load_mask", "load_stack",
           "nifti_stem", "physical_memory_bytes", "save"]

_RAS = ornt.axcodes2ornt(("R", "A", "S"))

MAX_ABS_VALUE = 1e12
"""Largest voxel magnitude accepted: no MRI quantity comes near it, and float32 sums of squares stay finite."""


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
        return "image" if self.path is None else nifti_stem(self.path)

    def with_data(self, data: np.ndarray) -> Image:
        """A new image on the same grid (3D or 4D ``data``)."""
        data = np.asarray(data)
        if data.shape[:3] != self.spatial_shape:
            raise ValueError(f"data of shape {data.shape} does not fit grid {self.spatial_shape}")
        return Image(data=data, affine=self.affine, path=self.path, source=self.source)


def nifti_stem(path: str | os.PathLike) -> str:
    """A file's name without ``.nii.gz`` or ``.nii``."""
    stem = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


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
    note_input(path)
    try:
        img = nib.load(str(path))
    except nib.spatialimages.HeaderDataError as exc:
        raise NotNiftiError(path, f"unsupported NIfTI header ({_first_line(exc)}{_datatype_hint(exc)})") from None
    except (nib.filebasedimages.ImageFileError, ValueError) as exc:
        raise NotNiftiError(path, f"not a NIfTI image ({_first_line(exc)})") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise UnreadableFileError(path, f"cannot read file ({_first_line(exc)})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise NotNiftiError(path, f"not a NIfTI image (read as {type(img).__name__})")
    return img


def _datatype_hint(exc: BaseException) -> str:
    return "; 1-bit binary voxels are not supported, store masks as uint8" if "data code 1 " in str(exc) else ""


def _check_voxel_type(path: Path, dtype: np.dtype) -> None:
    if dtype.fields is not None:
        raise NotNiftiError(path, f"holds RGB colour voxels ({dtype.itemsize * 8}-bit), not intensities")
    if dtype.kind == "c":
        raise NotNiftiError(path, f"holds complex values ({dtype}); give the magnitude (and the phase) as real "
                                  "images")
    if dtype.kind not in "biuf":
        raise NotNiftiError(path, f"voxel type {dtype} is not a number type")


def _gib(n_bytes: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= size:
            return f"{n_bytes / size:.3g} {unit}"
    return f"{n_bytes:.0f} bytes"


def physical_memory_bytes() -> float:
    """This machine's physical memory in bytes (infinite where the system does not say)."""
    try:
        return float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return float("inf")


def _check_declared_size(path: Path, img: nib.Nifti1Image, shape: tuple[int, ...]) -> None:
    """Refuse, from the header alone, data the file cannot hold or memory cannot take."""
    dtype = img.get_data_dtype()
    n_voxels = float(np.prod(shape, dtype=np.float64))
    dims = " x ".join(str(s) for s in shape)
    on_disk = n_voxels * dtype.itemsize
    if not path.name.endswith(".gz"):
        offset = int(img.dataobj.offset)
        held = path.stat().st_size - offset
        if on_disk > held:
            raise UnreadableFileError(path, f"header declares {dims} voxels of {dtype} ({_gib(on_disk)}) but the "
                                            f"file holds only {_gib(max(held, 0))} of voxel data")
    # Reading makes the file's array and, unless it already is one, its float32 copy.
    scaled = _scaling(img) != (1.0, 0.0)
    needed = on_disk + (4 * n_voxels if scaled or dtype != np.float32 else 0)
    memory = physical_memory_bytes()
    if needed > memory:
        raise UnreadableFileError(path, f"header declares {dims} voxels; reading them as float32 needs "
                                        f"{_gib(needed)}, more than this machine's memory ({_gib(memory)})")


def _check_affine(path: Path, img: nib.Nifti1Image) -> np.ndarray:
    affine = np.asarray(img.affine, dtype=np.float64)
    header = img.header
    which = "sform" if int(header["sform_code"]) > 0 else "qform" if int(header["qform_code"]) > 0 else "pixdim"
    if not np.all(np.isfinite(affine)):
        raise NotNiftiError(path, f"has no usable orientation: the {which} matrix is not finite")
    zero = [str(i + 1) for i in range(3) if not np.any(affine[:3, i])]
    if len(zero) == 3:
        raise NotNiftiError(path, f"has no usable orientation: the {which} matrix is all zero")
    if zero:
        raise NotNiftiError(path, f"has no usable orientation: column {', '.join(zero)} of the {which} is zero")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12 * np.prod(np.linalg.norm(affine[:3, :3], axis=0)):
        raise NotNiftiError(path, f"has no usable orientation: the {which} matrix is singular")
    return affine


def _scaling(img: nib.Nifti1Image) -> tuple[float, float]:
    slope = getattr(img.dataobj, "slope", 1.0)
    inter = getattr(img.dataobj, "inter", 0.0)
    return float(slope), float(inter)


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
    _check_voxel_type(path, img.get_data_dtype())
    affine = _check_affine(path, img)
    _check_declared_size(path, img, shape)
    slope, inter = _scaling(img)
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            raw = np.asarray(img.dataobj, dtype=np.float32).reshape(shape)
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise UnreadableFileError(path, f"cannot read voxel data ({_first_line(exc)})") from None
    except MemoryError:
        raise UnreadableFileError(path, f"not enough memory to read {' x '.join(map(str, shape))} voxels") from None
    scaled = (slope, inter) != (1.0, 0.0)
    n_bad = int(raw.size - np.count_nonzero(np.isfinite(raw)))
    if n_bad:
        if scaled and np.all(np.isfinite(np.asarray(img.dataobj.get_unscaled(), dtype=np.float64))):
            raise NonFiniteError(path, f"scl_slope {slope:g} and scl_inter {inter:g} make {n_bad} voxels infinite")
        raise NonFiniteError(path, f"{n_bad} voxels are NaN or infinite")
    peak = float(np.abs(raw).max()) if raw.size else 0.0
    if peak > MAX_ABS_VALUE:
        cause = f" (scl_slope {slope:g}, scl_inter {inter:g})" if scaled else ""
        raise NonFiniteError(path, f"voxel values reach {peak:.3g}{cause}, beyond {MAX_ABS_VALUE:g}, the largest "
                                   "magnitude mrinets computes with; check the header's scaling")
    if not allow_empty and (raw.size == 0 or float(raw.max()) == float(raw.min())):
        raise EmptyImageError(path, f"image is empty (every voxel equals {float(raw.flat[0]):g})")

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


def load_mask(path: str | os.PathLike, *, like: Image | None = None, threshold: float = 0.5) -> np.ndarray:
    """A 3D mask file as booleans (voxels above ``threshold``), on ``like``'s grid if given.

    Raises
    ------
    InputError
        Besides :func:`load`'s errors: a grid other than ``like``'s, or no voxel
        above ``threshold`` (a mask of negative or fractional values only).
    """
    image = load(path, allow_empty=True)
    if like is not None:
        check_same_grid(like, image)
    inside = image.data > threshold
    if not inside.any():
        lo, hi = float(image.data.min()) + 0.0, float(image.data.max()) + 0.0  # + 0.0: no "-0"
        raise EmptyImageError(path, f"mask has no voxel above {threshold:g} (values {lo:g} to {hi:g}); a mask holds 1 "
                                    "inside and 0 outside")
    return inside


def load_labels(path: str | os.PathLike, *, like: Image | None = None) -> np.ndarray:
    """A 3D label map as int32, on ``like``'s grid if given; values must be whole numbers that int32 holds."""
    image = load(path, allow_empty=True)
    if like is not None:
        check_same_grid(like, image)
    data = image.data.astype(np.float64)
    lo, hi = float(data.min()), float(data.max())
    off = float(np.abs(data - np.rint(data)).max())
    top = np.iinfo(np.int32).max
    if lo < 0 or hi > top or off > 0.01:
        raise DimensionError(path, f"label values must be whole numbers from 0 to {top}; got {lo:g} to {hi:g}"
                                   + (f", up to {off:.2g} away from a whole number" if off > 0.01 else ""))
    return np.rint(data).astype(np.int32)


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
