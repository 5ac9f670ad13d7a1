"""Reading and writing images and outputs."""

from __future__ import annotations

from mrinets.io.nifti import Image, check_same_grid, load, load_labels, load_mask, load_stack, save
from mrinets.io.output import (OutputStage, atomic_path, ensure_outdir, guard_inputs, note_input, write_json,
                               write_text)

__all__ = [
    "Image",
    "OutputStage",
    "atomic_path",
    "check_same_grid",
    "ensure_outdir",
    "guard_inputs",
    "load",
    "load_labels",
    "load_mask",
    "load_stack",
    "note_input",
    "save",
    "write_json",
    "write_text",
]
