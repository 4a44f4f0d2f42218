"""The CPU runtime: numpy arrays, each kernel launched as its numba twin (cpu_kernels.py, via :mod:`.passes`).

The synthesis backend (:mod:`.backend`) launches the same kernel sequence here as on the CUDA runtimes
(kernels/runtime.py); numba's ``prange`` splits the rows over the threads :func:`common.threads.synthesis_threads`
chooses (at most ``numba.get_num_threads()``: all cores unless ``NUMBA_NUM_THREADS`` says less). Launches over
fewer than :data:`SERIAL_BELOW` pixels (coarse pyramid levels) run on one thread: waking a second thread costs
more than it saves there. The number of threads never changes a result.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numba

from ...common.threads import sleep_idle_openmp_threads, synthesis_threads
from ...kernels.runtime import NumpyRuntime
from .passes import pass_of

#: Launches covering fewer pixels than this run on one thread (a 64×64 level and smaller).
SERIAL_BELOW = 64 * 64
#: Choose the thread count from the machine's load (False: always ``numba.get_num_threads()``).
ADAPT_THREADS = True
#: Whether numba's idle OpenMP threads sleep (decided once, when this module is imported).
IDLE_THREADS_SLEEP = sleep_idle_openmp_threads()
_clock = {"wall": time.monotonic(), "cpu": time.process_time(), "rate": 0.0}


def _own_load() -> float:
    """This process's CPU seconds per second since the last call (at least 1 s apart; else the last value)."""
    wall, cpu = time.monotonic(), time.process_time()
    if wall - _clock["wall"] >= 1.0:
        _clock["rate"] = (cpu - _clock["cpu"]) / (wall - _clock["wall"])
        _clock.update(wall=wall, cpu=cpu)
    return _clock["rate"]


class NumbaRuntime(NumpyRuntime):
    """Runtime of the synthesis backend ``"cpu"``: the numba twins of the kernels on numpy arrays.

    Attributes:
        threads: the thread count of this runtime's launches over :data:`SERIAL_BELOW` pixels or more.

    Example:
        >>> import numpy as np
        >>> runtime = NumbaRuntime()
        >>> flags = runtime.upload([1], np.int32)
        >>> runtime.launch("flag_clear", (1, 1, 1), (1, 1, 1), flags)
        >>> runtime.read_int(flags)
        0
    """

    name = "cpu"

    def __init__(self):
        self.allowed = numba.get_num_threads()
        self.threads = self.allowed
        if ADAPT_THREADS:
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
            self.threads = synthesis_threads(self.allowed, os.cpu_count() or 1, load, _own_load(),
                                             IDLE_THREADS_SLEEP)

    def launch(self, name: str, grid: tuple[int, int, int], block: tuple[int, int, int], *args: Any) -> None:
        kernel = pass_of(name).numba
        pixels = grid[0] * grid[1] * grid[2] * block[0] * block[1] * block[2]
        threads = self.threads if pixels >= SERIAL_BELOW else 1
        if threads == self.allowed:
            kernel(*args)
            return
        numba.set_num_threads(threads)
        try:
            kernel(*args)
        finally:
            numba.set_num_threads(self.allowed)
