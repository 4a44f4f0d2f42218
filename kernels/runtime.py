"""Where the kernels run: memory and launches for the synthesis backend (propagation/backends/backend.py).

A *runtime* owns the arrays of a level and launches kernels by name with the argument lists of
``propagation.cu``: ``upload / empty / zeros / fill / download / read_int / count_nonzero / scope / launch``.
The synthesis backend drives every pass through this interface, so one launch sequence (and one occupancy
bookkeeping) serves every runtime:

* :class:`NumpyRuntime` — numpy arrays; ``launch`` is left to a subclass (the numba runtime of
  propagation/backends/numba_runtime.py calls the numba twin of each kernel);
* :class:`HostRuntime` — numpy arrays, the CUDA C kernels compiled for the CPU through ``host_shim.h``
  (:mod:`.host_build`): backend ``"host"``, what CI runs to check the GPU code;
* ``CudaRuntime`` (:mod:`.cuda_runtime`) — torch CUDA tensors, the same kernels compiled by NVRTC and
  launched with CuPy on torch's current stream: backend ``"cuda"``.

Runtimes that run the CUDA C kernels carry their limits (``kernel_limits``): int32 indices, the launch grid,
and the float range in which the GPU's flush-to-zero cannot change the weighted vote.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from ..common.errors import input_error
from .source import BLOCK

#: Largest element count of one image: kernels index with int32.
MAX_ELEMENTS = (1 << 31) - 1
#: Largest grid y dimension of a CUDA launch (65535 blocks of BLOCK[1] rows).
MAX_GRID_Y = 65535


class NumpyRuntime:
    """Arrays are C-contiguous numpy arrays; :meth:`launch` is a subclass's."""

    name = "numpy"
    #: Whether the CUDA C kernels' limits apply (:func:`check_kernel_limits`, :func:`check_vote_scale`).
    kernel_limits = False

    def scope(self):
        return contextlib.nullcontext()

    def upload(self, array, dtype, copy: bool = True) -> np.ndarray:
        return np.array(_to_numpy(array), dtype=dtype, order="C", copy=True)

    def empty(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        return np.empty(shape, dtype)

    def zeros(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        return np.zeros(shape, dtype)

    def fill(self, array: np.ndarray, value: int) -> None:
        array[...] = value

    def download(self, array: np.ndarray) -> np.ndarray:
        return np.array(array, copy=True)

    def read_int(self, array: np.ndarray) -> int:
        return int(array.reshape(-1)[0])

    def count_nonzero(self, array: np.ndarray) -> int:
        return int(np.count_nonzero(array))

    def launch(self, name: str, grid: tuple[int, int, int], block: tuple[int, int, int], *args: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot launch {name}")


class HostRuntime(NumpyRuntime):
    """The CUDA C kernels built for the CPU (:mod:`.host_build`), launched on numpy arrays.

    Raises:
        HostBuildError: no C++ compiler, or the kernels did not compile.
    """

    name = "host"
    kernel_limits = True

    def __init__(self):
        from .host_build import host_kernels

        self.kernels = host_kernels()

    def launch(self, name: str, grid: tuple[int, int, int], block: tuple[int, int, int], *args: Any) -> None:
        self.kernels.launch(name, grid, block, *args)


def check_kernel_limits(height: int, width: int, channels: int, name: str) -> None:
    """Refuse an image the kernels cannot index: ``H·W·C`` must fit int32 and ``H`` one launch grid.

    Raises:
        InputError: naming the image, the limit and the size got.

    Example:
        >>> check_kernel_limits(528, 720, 13, "target")
        >>> check_kernel_limits(20000, 20000, 13, "target")
        Traceback (most recent call last):
        ...
        rerender_video.common.errors.InputError: target: Expected ...
    """
    elements = height * width * channels
    if elements > MAX_ELEMENTS:
        raise input_error(name, f"height × width × channels <= {MAX_ELEMENTS} (the kernels index with int32)",
                          f"{height} × {width} × {channels} = {elements}",
                          ["downscale the frames (e.g. to 2048 px on the long side)", "use fewer guide channels",
                           "use backend 'cpu'"])
    if -(-height // BLOCK[1]) > MAX_GRID_Y:
        raise input_error(name, f"at most {MAX_GRID_Y * BLOCK[1]} rows (CUDA grid limit)", f"{height} rows",
                          "downscale the frames")


def check_vote_scale(weighted_vote: bool, vote_error_scale: float) -> None:
    """Refuse a weighted-vote error scale outside [2^-120, 2^90]: inside it no float32 value of the vote is
    subnormal (errors are integers in [1, 2^31)), so the GPU's forced flush-to-zero cannot change a result.

    Raises:
        InputError: naming ``vote_error_scale`` (in practice: guide/style weights around 1e30 or 1e-30).

    Example:
        >>> check_vote_scale(True, 1e-4)
        >>> check_vote_scale(False, 1e-38)      # the plain vote has no float arithmetic
    """
    scale = float(vote_error_scale)
    if weighted_vote and not (2.0 ** -120 <= scale <= 2.0 ** 90):
        raise input_error("vote_error_scale", "a value in [2^-120, 2^90] for the weighted vote", scale,
                          "use style and guide weights within a few orders of magnitude of 1")


def _to_numpy(array) -> np.ndarray:
    if isinstance(array, np.ndarray):
        return array
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is always there inside ComfyUI
        torch = None
    if torch is not None and isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)
