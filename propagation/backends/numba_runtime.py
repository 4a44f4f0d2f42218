"""The CPU runtime: numpy arrays, each kernel launched as its numba twin (cpu_kernels.py, via :mod:`.passes`).

The synthesis backend (:mod:`.backend`) launches the same kernel sequence here as on the CUDA runtimes
(kernels/runtime.py); the launch grid means nothing on the CPU (numba's ``prange`` splits the rows over
``numba.get_num_threads()`` threads) and is ignored.
"""

from __future__ import annotations

from typing import Any

from ...kernels.runtime import NumpyRuntime
from .passes import pass_of


class NumbaRuntime(NumpyRuntime):
    """Runtime of the synthesis backend ``"cpu"``: the numba twins of the kernels on numpy arrays.

    Example:
        >>> import numpy as np
        >>> runtime = NumbaRuntime()
        >>> flags = runtime.upload([1], np.int32)
        >>> runtime.launch("flag_clear", (1, 1, 1), (1, 1, 1), flags)
        >>> runtime.read_int(flags)
        0
    """

    name = "cpu"

    def launch(self, name: str, grid: tuple[int, int, int], block: tuple[int, int, int], *args: Any) -> None:
        pass_of(name).numba(*args)
