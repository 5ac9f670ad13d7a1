"""``mrinets info``: check an image (and its gradient table) the way every pipeline will."""

from __future__ import annotations

import argparse

import nibabel as nib
import numpy as np

from mrinets.cli.common import COMMANDS, add_common

NAME = "info"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        NAME,
        help=COMMANDS[NAME],
        description="Load an image with the checks every pipeline applies (readable NIfTI, 3D/4D, finite, "
        "not empty) and print its grid, orientation and intensity range; with --bval/--bvec also check the "
        "gradient table against the number of volumes.",
    )
    p.add_argument("image", help="NIfTI file")
    p.add_argument("--bval", help="FSL b-values file")
    p.add_argument("--bvec", help="FSL b-vectors file")
    add_common(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from mrinets.errors import ArgumentError
    from mrinets.io import load
    from mrinets.io.gradients import read_bvals_bvecs

    image = load(args.image, ndim=(3, 4))
    src = image.source
    lines = [
        f"file          {image.path}",
        f"shape         {image.shape}",
        f"voxel size    {' x '.join(f'{v:.4g}' for v in image.voxel_size)} mm",
        f"orientation   {''.join(nib.aff2axcodes(src.affine)) if src else 'RAS'} on disk (read as RAS)",
        f"data type     {src.dtype if src else 'float32'}",
        f"range         {float(image.data.min()):.6g} .. {float(image.data.max()):.6g}",
    ]
    if (args.bval is None) != (args.bvec is None):
        raise ArgumentError("--bval/--bvec", "give both the b-values and the b-vectors file")
    if args.bval:
        n = image.shape[3] if image.data.ndim == 4 else 1
        bvals, _ = read_bvals_bvecs(args.bval, args.bvec, n_volumes=n)
        shells, counts = np.unique(np.round(bvals, -2), return_counts=True)
        lines.append("shells        " + ", ".join(f"b={int(b)} x{c}" for b, c in zip(shells, counts)))
    print("\n".join(lines))
    return 0
