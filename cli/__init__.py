"""Command line for scripted runs without the ComfyUI UI: ``python rerender_cli.py <command> …``.

Each module of this folder whose name does not start with ``_`` adds one sub-command through
``register(subparsers)``; the sub-command's handler is stored as ``func`` and returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import Sequence

from ..common.errors import RerenderError
from . import _progress
from ._messages import OptionNames, command_parser, log_notes

#: Exit codes: bad input (as argparse's own usage errors), and interrupted by Ctrl-C (128 + SIGINT).
EXIT_INPUT, EXIT_INTERRUPTED = 2, 130


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command of this folder registered."""
    parser = argparse.ArgumentParser(
        prog="rerender_cli.py", description="Rerender Video: scripted runs without the ComfyUI UI.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda item: item.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}").register(subparsers)
    return parser


def interrupted_line(args: argparse.Namespace) -> str:
    """The one line printed on Ctrl-C: where the run stopped, what was kept, how to resume.

    A command may give its own text as ``set_defaults(interrupted="…")``.
    """
    if getattr(args, "interrupted", None):
        return f"interrupted: {args.interrupted}"
    from ..common.cache import cache_root

    step = _progress.last_step()
    where = f" during {step}" if step else ""
    return (f"interrupted{where}: finished work is kept in the cache ({cache_root()}), no output file was "
            "written; run the same command again to resume")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the sub-command.

    Errors in the input print one line naming the option the user typed and the fix, and return 2;
    Ctrl-C prints one line (what was kept, how to resume) and returns 130.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    names = OptionNames(command_parser(parser, args.command))
    _progress.reset()
    with log_notes(names):
        try:
            return int(args.func(args) or 0)
        except RerenderError as error:
            print(f"error: {names.error(error)}", file=sys.stderr)
            return EXIT_INPUT
        except KeyboardInterrupt:
            newline = "\n" if sys.stderr.isatty() else ""  # after the terminal's ^C
            print(f"{newline}{interrupted_line(args)}", file=sys.stderr)
            return EXIT_INTERRUPTED
