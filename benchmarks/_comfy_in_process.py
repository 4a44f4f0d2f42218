"""Start ComfyUI's Python modules in this process (no server) and load the pack into it, for the keyframe benchmarks.

ComfyUI parses its command line when ``comfy.options`` allows it, so the arguments are set before the first
``comfy`` import; ``--cpu`` keeps the run on the CPU like the figures in the README.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[1]


def boot_comfy(comfy_root: str, threads: int = 0, comfy_args: str = "") -> None:
    """Import ComfyUI from ``comfy_root`` with ``--cpu`` (+ ``comfy_args``), set torch's thread count (0 = torch's
    default), silence ComfyUI's progress bars, and load the pack as ``rerender_video`` (as ComfyUI does)."""
    sys.path.insert(0, os.path.abspath(comfy_root))
    import comfy.options
    comfy.options.enable_args_parsing()
    sys.argv = [sys.argv[0], "--cpu"] + comfy_args.split()
    import torch
    if threads:
        torch.set_num_threads(threads)
    import comfy.utils

    comfy.utils.PROGRESS_BAR_ENABLED = False
    spec = importlib.util.spec_from_file_location("rerender_cli", PACK_ROOT / "rerender_cli.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    cli.load_pack()
