"""QC picture with marked points (one axial panel per slice holding a mark)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image as PILImage

from mrinets.io import Image
from mrinets.report.qc import marks_png


def _image():
    return Image(np.random.default_rng(0).random((20, 24, 10)).astype(np.float32), np.diag([1.0, 1.0, 2.0, 1.0]))


def test_one_panel_per_marked_slice(tmp_path):
    one = marks_png(_image(), tmp_path / "one.png", [(5, 5, 3)])
    marks = [(5, 5, 3), (10, 10, 3), (6, 7, 6), (1, 1, 8)]
    three = marks_png(_image(), tmp_path / "three.png", marks, ids=[4, 5, 6, 7])
    w1, _ = PILImage.open(one).size
    w3, _ = PILImage.open(three).size
    assert w3 == 3 * w1  # slices 3, 6 and 8: three panels side by side


def test_no_marks_still_draws_the_middle_slice(tmp_path):
    path = marks_png(_image(), tmp_path / "none.png", [])
    assert path.stat().st_size > 1000


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="ids"):
        marks_png(_image(), tmp_path / "x.png", [(1, 1, 1)], ids=[1, 2])
    with pytest.raises(ValueError, match="3D"):
        marks_png(Image(np.zeros((4, 4, 4, 2), np.float32), np.eye(4)), tmp_path / "x.png", [])
