"""Test setup: import the pack folder as the package ``rerender_video`` and share real data.

Unit tests never need ComfyUI; integration tests read the checkout from ``COMFYUI_ROOT`` and skip,
saying so, when it is unset.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"

sys.path.insert(0, str(ROOT))
from rerender_cli import load_pack  # noqa: E402

load_pack()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets a fresh cache folder, so no test reads another's cached results."""
    monkeypatch.setenv("RERENDER_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


#: ComfyUI's top-level modules the pack's adapters import (nodes/_comfy.py, nodes/_keyframe_adapter.py).
COMFYUI_MODULES = ("folder_paths", "comfy")


@pytest.fixture(autouse=True)
def _outside_comfyui(request, monkeypatch):
    """Unit tests run as outside ComfyUI even after an integration test imported ComfyUI in this process.

    An integration test that puts the checkout on ``sys.path`` and imports ``comfy`` would otherwise
    change what the nodes see (``folder_paths`` decides where models and inputs are, ``comfy.utils`` the
    progress bar). The modules are hidden (``import`` raises ImportError) for the test and restored after.
    """
    if request.node.get_closest_marker("integration") is not None:
        return
    for name in list(sys.modules):
        if name.split(".")[0] in COMFYUI_MODULES:
            monkeypatch.setitem(sys.modules, name, None)
    for name in COMFYUI_MODULES:
        monkeypatch.setitem(sys.modules, name, None)


@pytest.fixture(scope="session")
def megamind_path() -> Path:
    """Path of the bundled Megamind.avi (720×528, 270 frames, 24000/1001 fps, AC3 audio)."""
    return DATA / "Megamind.avi"


@pytest.fixture(scope="session")
def comfyui_root() -> Path:
    """The ComfyUI checkout for integration tests; skips the test when ``COMFYUI_ROOT`` is unset."""
    root = os.environ.get("COMFYUI_ROOT")
    if not root:
        pytest.skip("integration test: set COMFYUI_ROOT to a ComfyUI checkout to run it")
    return Path(root)


@pytest.fixture(scope="session")
def megamind_frames(megamind_path):
    """The first 60 decoded frames of Megamind.avi as an IMAGE batch ``[60,528,720,3]`` float32.

    Decoded frame 0 is black (a fade-in); shots change at the cuts listed in tests/data/README.md.
    """
    from rerender_video.videoio.reader import load_frames

    return load_frames(megamind_path, frame_load_cap=60).images


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module: the toy models' tensors are tiny, and one thread avoids OpenMP
    spin-waits on a shared 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def read_only_dir(tmp_path):
    """``(folder, prefix)``: a folder on a read-only file system for a command run as ``prefix + command``.

    The folder is mounted read-only in a private mount namespace (``unshare``, no lasting change to
    the machine); without it, a non-root user gets a folder without write permission (``prefix`` is
    then empty). Skips where neither works (root without ``unshare``).
    """
    import shutil
    import subprocess

    folder = tmp_path / "read_only"
    folder.mkdir()
    if shutil.which("unshare"):
        prefix = ["unshare", "--map-root-user", "--mount", "sh", "-c",
                  'mount -t tmpfs -o ro tmpfs "$0" && exec "$@"', str(folder)]
        probe = subprocess.run(prefix + ["touch", str(folder / "probe")], capture_output=True, text=True)
        if probe.returncode != 0 and "Read-only" in probe.stderr:
            yield folder, prefix
            return
    if os.geteuid() == 0:
        pytest.skip("needs unshare (a private read-only mount) or a non-root user")
    folder.chmod(0o555)
    yield folder, []
    folder.chmod(0o755)


@pytest.fixture
def folders(tmp_path, monkeypatch, megamind_path):
    """ComfyUI's input and output folders for node tests: ``<tmp>/input`` (with Megamind.avi and a text file
    that is no video) and ``<tmp>/output``."""
    import shutil

    from rerender_video.nodes import _comfy

    input_dir, output_dir = tmp_path / "input", tmp_path / "output"
    input_dir.mkdir()
    output_dir.mkdir()
    shutil.copy(megamind_path, input_dir / "Megamind.avi")
    (input_dir / "readme.txt").write_text("not a video")
    monkeypatch.setattr(_comfy, "input_directory", lambda: input_dir)
    monkeypatch.setattr(_comfy, "output_directory", lambda: output_dir)
    return input_dir, output_dir
