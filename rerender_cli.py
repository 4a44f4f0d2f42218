#!/usr/bin/env python3
"""Command line of the pack, for scripted runs without the ComfyUI UI.

Run ``python rerender_cli.py --help`` from the pack's folder (or give its path). The pack folder is
loaded as the package ``rerender_video`` whatever the folder is called, which is also how the
tests import it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PACKAGE_NAME = "rerender_video"
PACK_ROOT = Path(__file__).resolve().parent


def load_pack() -> ModuleType:
    """Import the pack folder as the package ``rerender_video`` (once) and return it."""
    if PACKAGE_NAME in sys.modules:
        return sys.modules[PACKAGE_NAME]
    spec = importlib.util.spec_from_file_location(
        PACKAGE_NAME, PACK_ROOT / "__init__.py", submodule_search_locations=[str(PACK_ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE_NAME] = module
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    load_pack()
    from rerender_video.cli import main  # noqa: E402  (importable only after load_pack)

    sys.exit(main())
