"""RAFT optical flow (Teed & Deng, ECCV 2020) through torchvision's architectures, with local weights.

The networks are torchvision's ``raft_small`` / ``raft_large`` built with ``weights=None``; the
state dict comes from a file the user placed in ``ComfyUI/models/optical_flow/`` (``.pth`` read with
``torch.load(weights_only=True)``, or ``.safetensors``). Nothing is ever downloaded: a missing file
raises :class:`~common.errors.MissingWeightsError` naming the folders searched and the file names
expected. torchvision (installed with ComfyUI) is imported only when a RAFT flow is computed.

This module does not know ComfyUI: the node passes the folders (``nodes/_comfy.model_folders``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from ..common.cache import content_key
from ..common.errors import MissingWeightsError, format_input_error, input_error
from .backend import FlowBackend, FlowResult

RAFT_MODELS = ("raft_small", "raft_large")
#: torchvision's file names for the recommended weights (Raft_*_Weights.DEFAULT).
TORCHVISION_FILES = {
    "raft_small": "raft_small_C_T_V2-01064c6d.pth",
    "raft_large": "raft_large_C_T_SKHT_V2-ff5fadd5.pth",
}
DOWNLOAD_BASE = "https://download.pytorch.org/models/"
WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")
DEFAULT_ITERATIONS = 12
#: Frames are padded (edge replicate) to a multiple of 8 and at least this size: RAFT's
#: correlation pyramid needs 16×16 features at 1/8 resolution.
RAFT_MIN_PADDED = 128
MIN_SIDE = 16


def list_weight_files(folders: Sequence[Path]) -> list[str]:
    """Weight files (``.pth``, ``.pt``, ``.safetensors``) in ``folders`` and their sub-folders.

    Returns:
        Paths relative to their folder with ``/`` separators, sorted, without repeats (the names a
        ComfyUI combo shows).
    """
    names = set()
    for folder in map(Path, folders):
        if folder.is_dir():
            names.update(path.relative_to(folder).as_posix() for path in folder.rglob("*")
                         if path.is_file() and path.suffix.lower() in WEIGHT_SUFFIXES)
    return sorted(names)


def _missing(model: str, folders: Sequence[Path], expected: str) -> MissingWeightsError:
    where = ", ".join(str(folder) for folder in folders) or "(no folder registered)"
    url = DOWNLOAD_BASE + TORCHVISION_FILES[model]
    return MissingWeightsError(format_input_error(
        "raft_model", f"{model} weights: {expected}", f"no such file in {where}",
        [f"download {url} (torchvision's {model} weights) by hand into {Path(folders[0]) if folders else where}",
         "choose backend dis, which needs no weights"]))


def find_weights(model: str, folders: Sequence[Path], filename: str | None = None) -> Path:
    """Find the weight file for ``model`` in ``folders``.

    Args:
        model: ``"raft_small"`` or ``"raft_large"``.
        folders: folders to search (``models/optical_flow`` and any ``extra_model_paths`` entries).
        filename: a file relative to one of the folders; ``None`` picks torchvision's file name
            (:data:`TORCHVISION_FILES`) or else the first file whose name contains ``model``.

    Raises:
        InputError: an unknown model name.
        MissingWeightsError: no such file; the message names the folders and the expected names.
    """
    if model not in RAFT_MODELS:
        raise input_error("backend", f"one of {', '.join(RAFT_MODELS)}", repr(model))
    folders = [Path(folder) for folder in folders]
    if filename:
        for folder in folders:
            if (folder / filename).is_file():
                return folder / filename
        raise _missing(model, folders, f"the file {filename}")
    names = list_weight_files(folders)
    matching = sorted((name for name in names if model in Path(name).name.lower()),
                      key=lambda name: (Path(name).name != TORCHVISION_FILES[model], name))
    for name in matching:
        for folder in folders:
            if (folder / name).is_file():
                return folder / name
    raise _missing(model, folders, f"a file named {TORCHVISION_FILES[model]} or any {'/'.join(WEIGHT_SUFFIXES)} "
                   f"file whose name contains {model}")


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or ``.pth``/``.pt`` (``weights_only=True``) on the CPU.

    A checkpoint that wraps it (``{"state_dict": …}`` or ``{"model": …}``) or prefixes keys with
    ``module.`` (DataParallel) is unwrapped.
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated file, a pickled module instead of a state dict, …
        raise input_error("raft_model", "a RAFT state dict saved as .pth or .safetensors",
                          f"{path.name}, which could not be read ({type(error).__name__}: {error})",
                          "download the file again; convert whole pickled models to a state dict") from error
    if not isinstance(state, dict):
        raise input_error("raft_model", "a RAFT state dict (a dict of tensors)",
                          f"{path.name} holding a {type(state).__name__}")
    for wrapper in ("state_dict", "model"):
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    return {key.removeprefix("module."): value for key, value in state.items()}


def architecture_of(state_dict: dict[str, torch.Tensor], source: str = "weights") -> str:
    """``"raft_small"`` or ``"raft_large"`` from the first feature-encoder convolution (32 or 64 channels).

    Raises:
        InputError: not a torchvision RAFT state dict.
    """
    weight = state_dict.get("feature_encoder.convnormrelu.0.weight")
    channels = None if weight is None else int(weight.shape[0])
    if channels == 32:
        return "raft_small"
    if channels == 64:
        return "raft_large"
    raise input_error("raft_model", "a torchvision RAFT state dict (raft_small or raft_large)",
                      f"{source} without RAFT's feature_encoder keys",
                      f"use {TORCHVISION_FILES['raft_small']} or {TORCHVISION_FILES['raft_large']}")


def import_torchvision_raft():
    """torchvision's ``models.optical_flow`` module, imported on first use.

    Raises:
        InputError: torchvision is not installed or does not load with this torch.
    """
    try:
        from torchvision.models import optical_flow
    except Exception as error:  # ImportError, or RuntimeError from a torch/torchvision mismatch
        raise input_error("backend", "torchvision (installed with ComfyUI) for the RAFT backends",
                          f"import torchvision failed: {error}",
                          ["install the torchvision build that matches your torch",
                           "choose backend dis, which needs no torchvision"]) from error
    return optical_flow


def _pad(images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    height, width = images.shape[-2:]
    padded_h = max(-(-height // 8) * 8, RAFT_MIN_PADDED)
    padded_w = max(-(-width // 8) * 8, RAFT_MIN_PADDED)
    top, left = (padded_h - height) // 2, (padded_w - width) // 2
    pad = (left, padded_w - width - left, top, padded_h - height - top)
    return F.pad(images, pad, mode="replicate"), pad


class RaftFlow(FlowBackend):
    """RAFT flow from torchvision's architecture and a local state dict.

    Args:
        weights: path of the ``.pth`` / ``.safetensors`` file (see :func:`find_weights`).
        model: ``"raft_small"`` / ``"raft_large"`` to check the file against, or ``None`` to take
            the architecture from the file.
        iterations: refinement iterations (torchvision's ``num_flow_updates``; 12 as in the paper).
        device: where the network runs (frames are moved there pair by pair).

    Raises:
        InputError: ``model`` differs from the file's architecture, or iterations < 1.
        MissingWeightsError: ``weights`` does not exist.
    """

    def __init__(self, weights: str | Path, model: str | None = None, iterations: int = DEFAULT_ITERATIONS,
                 device: str | torch.device = "cpu") -> None:
        self.weights = Path(weights)
        if not self.weights.is_file():
            raise MissingWeightsError(format_input_error(
                "raft_model", "an existing RAFT weight file", str(self.weights),
                f"put {TORCHVISION_FILES.get(model or 'raft_small', TORCHVISION_FILES['raft_small'])} there"))
        if iterations < 1:
            raise input_error("iterations", "at least 1 RAFT refinement iteration", iterations, "use 12")
        self.iterations = int(iterations)
        self.device = torch.device(device)
        self._state = load_state_dict(self.weights)
        self.name = architecture_of(self._state, self.weights.name)
        if model is not None and model != self.name:
            raise input_error("raft_model", f"{model} weights for backend {model}",
                              f"{self.weights.name}, which holds {self.name} weights",
                              [f"choose backend {self.name}", f"pick a {model} file"])
        self._network: torch.nn.Module | None = None

    def method(self) -> dict:
        return {"backend": self.name, "weights": self.weights.name, "iterations": self.iterations}

    def cache_parts(self) -> dict:
        return {**self.method(), "weights_key": content_key(self.weights.read_bytes())}

    def check_size(self, height: int, width: int) -> None:
        if min(height, width) < MIN_SIDE:
            raise input_error("frames", f"frames of at least {MIN_SIDE}×{MIN_SIDE} pixels for RAFT",
                              f"{width}×{height} (W×H)", "load or resize the video to a larger size")

    def network(self) -> torch.nn.Module:
        """The RAFT module with the file's weights, in eval mode on :attr:`device` (built once)."""
        if self._network is None:
            optical_flow = import_torchvision_raft()
            network = getattr(optical_flow, self.name)(weights=None, progress=False)
            network.load_state_dict(self._state)
            self._network = network.eval().to(self.device)
            self._state = {}
        return self._network

    @torch.inference_mode()
    def flows(self, image_a: torch.Tensor, image_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flows ``a → b`` and ``b → a`` for IMAGE frames ``[H,W,3]``: two ``[H,W,2]`` float32 CPU tensors."""
        network = self.network()
        pair = torch.stack((image_a, image_b)).to(self.device, torch.float32).permute(0, 3, 1, 2) * 2 - 1
        padded, (left, right, top, bottom) = _pad(pair)
        # One batch of two: (a, b) gives a → b, (b, a) gives b → a.
        predictions = network(padded, padded.flip(0), num_flow_updates=self.iterations)
        flow = predictions[-1]
        flow = flow[:, :, top:flow.shape[2] - bottom, left:flow.shape[3] - right]
        flow = flow.permute(0, 2, 3, 1).float().cpu()
        return flow[0], flow[1]

    def iter_flows(self, frames: torch.Tensor, pairs: Sequence[tuple[int, int]]) -> Iterator[FlowResult]:
        for row, (source, target) in enumerate(pairs):
            forward, backward = self.flows(frames[source], frames[target])
            yield row, forward.numpy(), backward.numpy()
