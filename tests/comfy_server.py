"""A real, headless ComfyUI server for integration tests and benchmarks (not a test module).

:class:`ComfyServer` starts ComfyUI (``--cpu`` by default) from a checkout with
``--base-directory`` set to a folder of the caller, so custom nodes, models, input and output live
there and the checkout is never touched; :func:`make_base` builds such a folder with the pack (and
fixture packs) linked into ``custom_nodes`` and the random-weight models linked from the checkout's
``models/`` (made with the harness's ``make_tiny_sd15.py`` when the checkout lacks them). HTTP goes
through the pack's own client (:class:`cli.comfy_run.ComfyClient`).

Import it as ``rerender_video.tests.comfy_server`` (tests/conftest.py makes the pack importable).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from rerender_video.cli.comfy_run import ComfyClient, RunError, error_message

PACK_ROOT = Path(__file__).resolve().parents[1]
#: The random-weight model generator: ``$COMFYUI_HARNESS``, else ``../shared/tools/comfyui_harness`` next to
#: the checkout.
HARNESS = Path(os.environ.get("COMFYUI_HARNESS") or PACK_ROOT.parent / "shared" / "tools" / "comfyui_harness")
#: Random-weight models (``make_tiny_sd15.py`` presets) and how to make each.
MODEL_RECIPES = {
    ("checkpoints", "tiny_sd15_sd15layout_taesd.safetensors"):
        ["--preset", "sd15layout", "--vae", "taesd", "--name", "tiny_sd15_sd15layout_taesd", "--no-controlnet"],
    ("controlnet", "tiny_sd15_sd15layout_controlnet.safetensors"): ["--preset", "sd15layout", "--no-checkpoint"],
    ("checkpoints", "tiny_sd15_tiny.safetensors"):
        ["--preset", "tiny", "--vae", "taesd", "--name", "tiny_sd15_tiny", "--no-controlnet"],
    # SDXL block and transformer layout at 320 channels, full CLIP-L + bigG, KL VAE (2.4 GB; ~30 s to make)
    ("checkpoints", "tiny_sdxl_sdxllayout.safetensors"): ["--preset", "sdxllayout", "--no-controlnet"],
    ("controlnet", "tiny_sdxl_sdxllayout_controlnet.safetensors"): ["--preset", "sdxllayout", "--no-checkpoint"],
}

__all__ = ["ComfyServer", "ModelsUnavailable", "RunError", "error_message", "free_port", "link_models",
           "make_base"]


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ModelsUnavailable(RuntimeError):
    """The checkout lacks the random-weight models and the generator is not there to make them."""


def link_models(comfy_root: Path, base: Path, wanted: list[tuple[str, str]]) -> None:
    """Link ``(folder, file)`` models from the checkout into ``base/models``; make missing ones.

    Raises:
        ModelsUnavailable: a model is missing and ``make_tiny_sd15.py`` is not found (``COMFYUI_HARNESS``).
    """
    for folder, name in wanted:
        target = base / "models" / folder / name
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        source = Path(comfy_root) / "models" / folder / name
        if source.exists():
            target.symlink_to(source)
            continue
        generator = HARNESS / "make_tiny_sd15.py"
        if not generator.exists() or (folder, name) not in MODEL_RECIPES:
            raise ModelsUnavailable(f"no {folder}/{name} in {comfy_root}/models and no make_tiny_sd15.py in "
                                    f"{HARNESS} (set COMFYUI_HARNESS)")
        subprocess.run([sys.executable, str(generator), "--models-dir", str(base / "models"),
                        *MODEL_RECIPES[(folder, name)]], check=True)


def make_base(base: Path, comfy_root: Path, models: list[tuple[str, str]], fixture_packs: dict[str, str] = {},
              pack_name: str = "rerender_video") -> Path:
    """A ComfyUI base directory: the pack linked into ``custom_nodes``, fixture packs (name → the
    source of their ``__init__.py``), the models, and empty ``input``/``output`` folders."""
    (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
    (base / "custom_nodes" / pack_name).symlink_to(PACK_ROOT, target_is_directory=True)
    for name, source in fixture_packs.items():
        (base / "custom_nodes" / name).mkdir()
        (base / "custom_nodes" / name / "__init__.py").write_text(source)
    link_models(comfy_root, base, models)
    (base / "input").mkdir(exist_ok=True)
    (base / "output").mkdir(exist_ok=True)
    return base


class ComfyServer:
    """A ComfyUI server on a free loopback port with its own base directory.

    Args:
        comfy_root: the ComfyUI checkout (``main.py``).
        base: the base directory (:func:`make_base`); the server log goes to ``base/<log_name>``.
        env: extra environment variables (e.g. ``RERENDER_CACHE_DIR``).
        extra_args: extra ComfyUI flags.
        cpu: run with ``--cpu`` (the tests' default, also on a machine with a GPU).
        start_timeout: seconds to wait for ``/system_stats``.
    """

    def __init__(self, comfy_root: Path, base: Path, env: dict | None = None, extra_args: list[str] = (),
                 log_name: str = "server.log", start_timeout: float = 300, cpu: bool = True) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.base = Path(base)
        self.log_path = self.base / log_name
        self.log = open(self.log_path, "w")
        self.client = ComfyClient(self.url)
        environment = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", **(env or {}))
        device = ["--cpu"] if cpu else []
        self.process = subprocess.Popen(
            [sys.executable, str(Path(comfy_root) / "main.py"), *device, "--disable-auto-launch", "--listen",
             "127.0.0.1", "--port", str(self.port), "--base-directory", str(self.base), "--disable-api-nodes",
             *extra_args],
            cwd=str(comfy_root), stdout=self.log, stderr=subprocess.STDOUT, env=environment)
        deadline = time.time() + start_timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited at start:\n{self.log_text()[-4000:]}")
            try:
                self.get("/system_stats")
                return
            except RunError:
                time.sleep(1)
        self.stop()
        raise RuntimeError(f"ComfyUI did not start in {start_timeout:.0f} s")

    def get(self, path: str):
        return self.client.get_json(path)

    def queue(self, prompt: dict) -> str:
        try:
            return self.client.queue(prompt)
        except RunError as error:
            raise AssertionError(str(error)) from error

    def wait(self, prompt_id: str, timeout: float = 3600) -> dict:
        return self.client.wait(prompt_id, timeout)

    def interrupt(self) -> None:
        self.client.interrupt()

    def log_text(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        if not self.log.closed:
            self.log.close()

