"""``mrinets qsm``: susceptibility maps from GRE magnitude and phase."""

from __future__ import annotations

import argparse
import json
import sys

from mrinets.cli.common import add_common, finite_float, positive_float, positive_int
from mrinets.pipelines import qsm

NAME = "qsm"


def add_parser(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser(NAME, help="quantitative susceptibility mapping from GRE magnitude + phase")
    add_common(group)
    cmds = group.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = cmds.add_parser(
        "predict",
        help="reconstruct chi (ppm) from magnitude and phase",
        description="Mask, unwrap and combine echoes, remove the background field (V-SHARP) and invert "
        "the dipole (TKD or TV). Phase in radians or scanner integer units is detected and scaled.",
    )
    p.add_argument("--mag", required=True, help="magnitude NIfTI (3D, or 4D with echoes last)")
    p.add_argument("--phase", required=True, help="phase NIfTI on the same grid, one volume per echo")
    p.add_argument("--te", required=True, nargs="+", type=finite_float, help="echo time(s) in seconds")
    p.add_argument("--b0", required=True, type=finite_float, help="field strength in tesla")
    p.add_argument(
        "--b0-dir", nargs=3, type=finite_float, default=(0.0, 0.0, 1.0), metavar=("X", "Y", "Z"),
        help="B0 direction in scanner/world coordinates (default 0 0 1); the affine carries it into voxels",
    )
    p.add_argument("--mask", help="brain mask NIfTI on the same grid (default: computed from magnitude)")
    p.add_argument("--labels", help="label map (e.g. nuclei) for mean chi per region; names from <labels>.tsv")
    p.add_argument("--method", choices=qsm.METHODS, default="tkd", help="dipole inversion (default tkd)")
    p.add_argument("--vsharp-radius", type=positive_float, default=12.0, help="largest V-SHARP radius, mm")
    p.add_argument("--tkd-threshold", type=finite_float, default=0.19)
    p.add_argument("--tv-lambda", type=positive_float, default=1e-3)
    p.add_argument("--tv-iter", type=positive_int, default=100)
    p.add_argument("--no-qc", action="store_true", help="skip the QC picture")
    p.add_argument("--out", required=True, help="output folder")
    add_common(p)
    p.set_defaults(func=_predict)

    e = cmds.add_parser("evaluate", help="NRMSE, HFEN, SSIM and per-ROI errors against a true chi map")
    e.add_argument("--pred", required=True)
    e.add_argument("--truth", required=True)
    e.add_argument("--mask", required=True)
    e.add_argument("--labels")
    e.add_argument("--out", help="write the scores to this JSON file too")
    add_common(e)
    e.set_defaults(func=_evaluate)


def _predict(args: argparse.Namespace) -> int:
    from mrinets.io import ensure_outdir

    config = qsm.QsmConfig(
        echo_times=tuple(args.te),
        b0=args.b0,
        b0_dir=tuple(args.b0_dir),
        method=args.method,
        vsharp_max_radius_mm=args.vsharp_radius,
        tkd_threshold=args.tkd_threshold,
        tv_lambda=args.tv_lambda,
        tv_max_iter=args.tv_iter,
    )
    ensure_outdir(args.out)
    result = qsm.predict(args.mag, args.phase, config=config, mask=args.mask, labels=args.labels)
    paths = result.save(args.out, qc=not args.no_qc)
    if not args.quiet:
        print(f"mrinets qsm: wrote {len(paths)} files to {args.out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from mrinets.io import write_json

    scores = qsm.evaluate(args.pred, args.truth, mask=args.mask, labels=args.labels)
    if args.out:
        write_json(args.out, scores)
    json.dump(scores, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
