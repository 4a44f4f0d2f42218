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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command of this folder registered."""
    parser = argparse.ArgumentParser(
        prog="rerender_cli.py", description="Rerender Video: scripted runs without the ComfyUI UI.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda item: item.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the sub-command; user errors print one clear line and return 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RerenderError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
