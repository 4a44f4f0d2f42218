"""The one place where nodes touch ComfyUI's runtime: progress, interruption, folders.

Every import of ComfyUI modules is lazy and guarded, so node modules import and run in tests
without ComfyUI (``comfy`` and ``folder_paths`` absent): progress is then silent, interruption
never fires and folders fall back to ``./input``, ``./output`` and ``./models``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch

MAX_PREVIEW_RESOLUTION = 512


def _comfy_utils():
    try:
        import comfy.utils  # type: ignore[import-not-found]
        return comfy.utils
    except ImportError:
        return None


def folder_paths_module():
    """Return ComfyUI's ``folder_paths`` module, or ``None`` outside ComfyUI."""
    try:
        import folder_paths  # type: ignore[import-not-found]
        return folder_paths
    except ImportError:
        return None


def check_interrupted() -> None:
    """Raise ComfyUI's ``InterruptProcessingException`` if the user pressed Cancel; no-op outside ComfyUI."""
    try:
        import comfy.model_management  # type: ignore[import-not-found]
    except ImportError:
        return
    comfy.model_management.throw_exception_if_processing_interrupted()


def _preview(image: torch.Tensor | None):
    if image is None:
        return None
    from PIL import Image

    pixels = image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
    return ("JPEG", Image.fromarray(pixels), MAX_PREVIEW_RESOLUTION)


class Progress:
    """A progress bar that is also an interruption point.

    Args:
        total: number of steps.
        node_id: the node's ``UNIQUE_ID`` (optional; ComfyUI finds the executing node itself).

    Call the instance (or :meth:`update`) with the number of steps done and, optionally, an
    IMAGE ``[H,W,3]`` preview. Algorithm functions take it as their ``progress`` callback.
    """

    def __init__(self, total: int, node_id: str | None = None) -> None:
        utils = _comfy_utils()
        self.total = max(int(total), 1)
        self._bar = utils.ProgressBar(self.total, node_id=node_id) if utils else None

    def update(self, done: int, preview: torch.Tensor | None = None) -> None:
        """Report ``done`` of ``total`` steps finished; checks for interruption."""
        check_interrupted()
        if self._bar is not None:
            self._bar.update_absolute(min(int(done), self.total), self.total, _preview(preview))

    __call__ = update


ProgressCallback = Callable[..., None]


def input_directory() -> Path:
    """ComfyUI's input folder, or ``./input`` outside ComfyUI."""
    module = folder_paths_module()
    return Path(module.get_input_directory()) if module else Path(os.getcwd(), "input")


def output_directory() -> Path:
    """ComfyUI's output folder, or ``./output`` outside ComfyUI."""
    module = folder_paths_module()
    return Path(module.get_output_directory()) if module else Path(os.getcwd(), "output")


def temp_directory() -> Path:
    """ComfyUI's temp folder (UI previews, cleared at start), or ``./temp`` outside ComfyUI."""
    module = folder_paths_module()
    return Path(module.get_temp_directory()) if module else Path(os.getcwd(), "temp")


def model_folders(folder_name: str) -> list[Path]:
    """Folders registered for ``folder_name`` (e.g. ``"optical_flow"``), ``models/<name>`` by default.

    Registers ``models/<folder_name>`` with ComfyUI on first use, so ``extra_model_paths.yaml``
    entries of that name are honoured too.
    """
    module = folder_paths_module()
    if module is None:
        return [Path(os.getcwd(), "models", folder_name)]
    if folder_name not in module.folder_names_and_paths:
        module.add_model_folder_path(folder_name, os.path.join(module.models_dir, folder_name), is_default=True)
    return [Path(p) for p in module.get_folder_paths(folder_name)]


def torch_device() -> torch.device:
    """ComfyUI's compute device (honours ``--cpu``), or CUDA when available outside ComfyUI, else CPU."""
    try:
        import comfy.model_management  # type: ignore[import-not-found]
    except ImportError:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return comfy.model_management.get_torch_device()


def free_model_memory() -> None:
    """Unload every model ComfyUI holds (diffusion model, ControlNets, VAE) and release the allocator's
    cached memory, e.g. before a memory-hungry stage; no-op outside ComfyUI."""
    try:
        import comfy.model_management  # type: ignore[import-not-found]
    except ImportError:
        return
    comfy.model_management.unload_all_models()
    comfy.model_management.soft_empty_cache()


def metadata_disabled() -> bool:
    """True when ComfyUI runs with ``--disable-metadata`` (saved files then carry no workflow)."""
    try:
        from comfy.cli_args import args  # type: ignore[import-not-found]
    except ImportError:
        return False
    return bool(getattr(args, "disable_metadata", False))
