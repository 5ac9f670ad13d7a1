"""Command groups announced in the design that this version does not ship yet.

They are listed so that ``mrinets --help`` shows the whole tool, and they say
plainly that they are not available rather than pretending to work.
"""

from __future__ import annotations

import argparse

from mrinets import __version__
from mrinets.cli.common import add_common
from mrinets.errors import InputError

# Pipelines move from here to their own module as they land.
PLANNED = {
    "cmb": "cerebral microbleed detection from SWI/GRE/QSM (Sundaresan et al. 2023)",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    for name, purpose in PLANNED.items():
        p = sub.add_parser(name, help=f"{purpose} [not in this version]", description=purpose)
        p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        add_common(p)
        p.set_defaults(func=_not_available, command_name=name)


def _not_available(args: argparse.Namespace) -> int:
    raise InputError(f"mrinets {args.command_name}", f"not available in mrinets {__version__} yet")
