"""``mrinets phantom <kind>``: write a synthetic subject with its ground truth."""

from __future__ import annotations

import argparse
from pathlib import Path

from mrinets.cli.common import COMMANDS, add_common, finite_float, nonnegative_int

NAME = "phantom"


def add_parser(sub: argparse._SubParsersAction) -> None:
    from mrinets.data.phantoms import PHANTOM_KINDS

    group = sub.add_parser(NAME, help=COMMANDS[NAME])
    add_common(group)
    kinds = group.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind in PHANTOM_KINDS.values():
        p = kinds.add_parser(kind.name, help=kind.help, description=kind.help)
        p.add_argument("--seed", type=nonnegative_int, required=True,
                       help="random seed: the same seed gives the same subject")
        p.add_argument("--out", required=True, help="output folder")
        for opt in kind.options:
            if opt.type is bool:
                p.add_argument(f"--{opt.flag}", action="store_true", help=opt.help)
            else:
                p.add_argument(f"--{opt.flag}", type=finite_float if opt.type is float else opt.type,
                               default=opt.default, nargs=opt.nargs, help=f"{opt.help} (default: {opt.default})")
        add_common(p)
        p.set_defaults(func=_run, phantom_kind=kind)


def _run(args: argparse.Namespace) -> int:
    from mrinets.errors import ArgumentError
    from mrinets.io import ensure_outdir

    kind = args.phantom_kind
    options = {opt.dest: getattr(args, opt.dest) for opt in kind.options}
    out = ensure_outdir(args.out)
    try:
        paths = kind.make(seed=args.seed, out=Path(out), **options)
    except ValueError as exc:
        text = str(exc)
        # The library names the argument first ("voxel_size 0.05 mm makes ..."); name its flag instead.
        for opt in kind.options:
            if text.startswith(f"{opt.dest} "):
                raise ArgumentError(f"--{opt.flag}", text[len(opt.dest) + 1:]) from None
        raise ArgumentError(f"mrinets phantom {kind.name}", text) from None
    if not args.quiet:
        print(f"mrinets phantom {kind.name}: wrote {len(paths)} files to {out}")
    return 0
