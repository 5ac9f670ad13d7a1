"""The ``mrinets`` command line: thin workflows over the library.

Each sub-command lives in its own module with ``add_parser(subparsers)``; this
module owns what is common: the one-line error contract, ``--debug``,
``--quiet``, ``--version`` and logging.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Collection, Sequence
from typing import NoReturn

from mrinets import __version__
from mrinets.cli.common import COMMANDS, add_common
from mrinets.errors import EXIT_INPUT_ERROR, InputError

__all__ = ["main", "build_parser", "Parser"]

log = logging.getLogger("mrinets")


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in the one-line ``mrinets: error:`` form."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"mrinets: error: {self.prog}: {message}\n")
        raise SystemExit(EXIT_INPUT_ERROR)


def build_parser(full: Collection[str] = tuple(COMMANDS)) -> Parser:
    """The ``mrinets`` parser.

    The commands in ``full`` get their whole parser (their module is imported);
    the others are listed by name and summary only, so that ``mrinets --help``,
    ``--version`` and a command's start-up do not import every pipeline.
    """
    import importlib

    parser = Parser(
        prog="mrinets",
        description="Deep-learning pipelines that turn brain MRI into quantitative biomarkers.",
    )
    parser.add_argument("--version", action="version", version=f"mrinets {__version__}")
    add_common(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for name, summary in COMMANDS.items():
        if name in full:
            importlib.import_module(f"mrinets.cli.{name}").add_parser(sub)
        else:
            sub.add_parser(name, help=summary)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The sub-command named on the command line (the options before it take no values)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def _setup_logging(*, quiet: bool, debug: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="mrinets: %(message)s", stream=sys.stderr, force=True)
    if not debug:
        logging.getLogger("distributed").setLevel(logging.WARNING)
        # nibabel logs the header fields it repairs on load; a file it cannot repair is refused in one line.
        logging.getLogger("nibabel").setLevel(logging.CRITICAL)


class Terminated(KeyboardInterrupt):
    """SIGTERM (what SLURM, ``timeout`` and ``kill`` send), raised like Ctrl-C so outputs are cleaned up."""


def _on_sigterm(signum, frame) -> NoReturn:
    raise Terminated()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Python warnings as one ``mrinets: warning:`` line, without the source line under it."""
    text = str(message).strip().splitlines()
    log.warning("warning: %s", text[0] if text else category.__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    import signal
    import threading
    import warnings

    from mrinets.io import guard_inputs

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(full=[_command_of(argv)])
    args = parser.parse_args(argv)
    args.quiet = getattr(args, "quiet", False)
    args.debug = getattr(args, "debug", False)
    _setup_logging(quiet=args.quiet, debug=args.debug)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    show_warning, warnings.showwarning = warnings.showwarning, (warnings.showwarning if args.debug else _show_warning)
    try:
        with guard_inputs():
            status = args.func(args)
    except InputError as exc:
        if args.debug:
            raise
        sys.stderr.write(f"mrinets: error: {exc}\n")
        return EXIT_INPUT_ERROR
    except Terminated:
        sys.stderr.write("mrinets: terminated\n")
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        sys.stderr.write("mrinets: interrupted\n")
        return 130
    finally:
        warnings.showwarning = show_warning
        if in_main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
