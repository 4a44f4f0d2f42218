#!/usr/bin/env python3
"""Command line of the pack, for scripted runs without the ComfyUI UI.

Run ``python rerender_cli.py --help`` from the pack's folder (or give its path). The pack folder is
loaded as the package ``rerender_video`` whatever the folder is called, which is also how the
tests import it.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

PACKAGE_NAME = "rerender_video"
PACK_ROOT = Path(__file__).resolve().parent


def load_pack(name: str = PACKAGE_NAME) -> ModuleType:
    """Make the pack folder importable as the package ``name`` (``rerender_video``) and return the package.

    A Ray worker loads it under the name the driver's process gave it (``segments/ray_task.py``).

    The package's ``__init__.py`` (node registration) is not run, so algorithm modules import
    without loading every node; ``import rerender_video.nodes`` registers the nodes when needed.
    Loading also asks for sleeping idle OpenMP threads when no OpenMP runtime has started yet
    (:func:`rerender_video.common.threads.sleep_idle_openmp_threads`).
    """
    if name in sys.modules:
        return sys.modules[name]
    package = ModuleType(name, __doc__)
    package.__path__ = [str(PACK_ROOT)]
    package.__file__ = str(PACK_ROOT / "__init__.py")
    package.__package__ = name
    sys.modules[name] = package
    threads = importlib.import_module(f"{name}.common.threads")  # needs the package

    threads.sleep_idle_openmp_threads()     # before torch is imported: idle OpenMP threads sleep (common/threads.py)
    return package


if __name__ == "__main__":
    load_pack()
    from rerender_video.cli import main  # noqa: E402  (importable only after load_pack)

    sys.exit(main())
