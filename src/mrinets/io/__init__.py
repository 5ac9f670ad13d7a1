"""Reading and writing images and outputs."""

from __future__ import annotations

from mrinets.io.nifti import Image, check_same_grid, load, load_stack, save
from mrinets.io.output import OutputStage, atomic_path, ensure_outdir, write_json, write_text

__all__ = [
    "Image",
    "OutputStage",
    "atomic_path",
    "check_same_grid",
    "ensure_outdir",
    "load",
    "load_stack",
    "save",
    "write_json",
    "write_text",
]
