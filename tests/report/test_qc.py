"""QC pictures: written whole, readable, to scale, centred on what matters."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib import pyplot as plt

from mrinets.errors import OutputError
from mrinets.io.nifti import Image, from_array
from mrinets.report import qc_png
from mrinets.report.qc import default_center, slice_extents


def _head(shape=(40, 48, 24), voxel=(1.0, 1.0, 2.0)) -> Image:
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    data = np.where(x**2 + y**2 + z**2 < 0.8, 100 + 30 * np.cos(6 * x), 0.0)
    return from_array(data, np.diag([*voxel, 1.0]))


def _read(path) -> np.ndarray:
    pixels = plt.imread(path)
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    return pixels


def test_png_is_written_and_not_blank(tmp_path):
    image = _head()
    out = qc_png(image, tmp_path / "qc.png", title="phantom")
    assert out == tmp_path / "qc.png"
    pixels = _read(out)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 600
    assert np.unique(pixels[..., :3].reshape(-1, 3), axis=0).shape[0] > 20


def test_pipeline_call_with_contours_and_colorbar(tmp_path):
    image = _head()
    chi = from_array(image.data / 1000 - 0.1, image.affine)
    out = qc_png(Image(chi.data, chi.affine), tmp_path / "qc_chi.png", contours=image.data > 0,
                 title="QSM chi [ppm]", vmin=-0.15, vmax=0.25, colorbar_label="ppm")
    pixels = _read(out)
    # The outline colour (cyan) is present.
    rgb = pixels[..., :3]
    assert np.any((rgb[..., 0] < 0.2) & (rgb[..., 1] > 0.7) & (rgb[..., 2] > 0.8))


def test_overlay_and_labels(tmp_path):
    image = _head()
    overlay = np.zeros(image.shape)
    overlay[10:16, 20:26, 8:12] = 0.9
    labels = np.zeros(image.shape, dtype=int)
    labels[20:30, 20:30, 10:14] = 3
    labels[8:14, 30:36, 10:14] = 41
    out = qc_png(image, tmp_path / "qc.png", overlay=from_array(overlay, image.affine), labels=labels,
                 overlay_cmap="autumn")
    rgb = _read(out)[..., :3]
    # Something saturated red-ish (overlay) appears on a grey image.
    assert np.any((rgb[..., 0] > 0.8) & (rgb[..., 2] < 0.3))


def test_extents_are_physical_for_anisotropic_voxels():
    extents = slice_extents((200, 240, 30), (0.9, 0.9, 5.0))
    assert extents["axial"] == pytest.approx((0, 180, 0, 216))
    assert extents["coronal"] == pytest.approx((0, 180, 0, 150))
    assert extents["sagittal"] == pytest.approx((0, 216, 0, 150))


def test_anisotropic_volume_renders(tmp_path):
    image = _head(shape=(60, 70, 12), voxel=(0.9, 0.9, 5.0))
    _read(qc_png(image, tmp_path / "aniso.png"))


def test_default_center_is_overlay_centre_of_mass():
    shape = (30, 40, 20)
    overlay = np.zeros(shape)
    overlay[4:8, 30:34, 2:6] = 1.0
    assert default_center(shape, overlay=overlay) == (6, 32, 4)
    # Negative overlay values do not pull the centre.
    overlay[20, 5, 15] = -50
    assert default_center(shape, overlay=overlay) == (6, 32, 4)
    assert default_center(shape) == (15, 20, 10)
    assert default_center(shape, overlay=np.zeros(shape), contours=overlay > 0) == (6, 32, 4)


def test_failed_write_raises_and_leaves_nothing(tmp_path, monkeypatch):
    image = _head()
    with pytest.raises(OutputError):
        qc_png(image, tmp_path / "missing" / "qc.png")
    assert list(tmp_path.iterdir()) == []

    from matplotlib.figure import Figure

    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        qc_png(image, tmp_path / "qc.png")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"overlay": np.zeros((3, 3, 3))}, "overlay"),
        ({"contours": np.zeros((3, 3, 3))}, "contours"),
        ({"center": (100, 0, 0)}, "center"),
        ({"vmin": 2.0, "vmax": 1.0}, "vmin"),
        ({"alpha": 2.0}, "alpha"),
    ],
)
def test_bad_arguments_name_themselves(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name):
        qc_png(_head(), tmp_path / "qc.png", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_4d_image_is_refused(tmp_path):
    with pytest.raises(ValueError, match="image"):
        qc_png(from_array(np.ones((4, 4, 4, 2))), tmp_path / "qc.png")


def test_real_t1(tmp_path, real_t1):
    from mrinets.io import load

    image = load(real_t1)
    overlay = (image.data >= np.percentile(image.data, 99)).astype(np.float32)
    rgb = _read(qc_png(image, tmp_path / "t1.png", overlay=overlay, contours=image.data > 30))[..., :3]
    assert rgb.std() > 0.1
