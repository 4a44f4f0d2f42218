"""How idle CPU threads wait, and how many the patch synthesis uses on a machine shared with other work.

A synthesized frame is thousands of short parallel regions (numba ``prange`` kernels) with a little Python
between them. numba's OpenMP threading layer runs them on GNU OpenMP, whose idle threads *spin* by default:
between two regions, and at the end of a region while the other threads wait for a core. In a process that
imported torch first (ComfyUI, the pack's own tools), numba's OpenMP calls bind to torch's OpenMP runtime,
which read its wait policy when torch was imported. ``python benchmarks/propagation_threads.py`` measures the
effect (figures in the README): on a busy 2-core machine two spinning threads took several times the CPU
seconds of one and ran slower, while with ``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep) two threads cost no
more CPU than one.

Hence :func:`sleep_idle_openmp_threads` (the pack's own processes call it before torch is imported) and
:func:`synthesis_threads` (the thread count of a synthesis: all threads numba allows where idle threads sleep,
else the cores the rest of the machine leaves free). The thread count never changes a result.
:func:`torch_threads` limits torch's own intra-op threads for a block of small tensor work.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

#: Environment variables by which a user chooses how OpenMP threads wait (the pack then leaves them alone).
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def _openmp_started() -> bool:
    """Whether an OpenMP runtime numba could use has read its environment already (torch, or numba's threads)."""
    parallel = sys.modules.get("numba.np.ufunc.parallel")
    return "torch" in sys.modules or bool(parallel is not None and getattr(parallel, "_is_initialized", False))


def sleep_idle_openmp_threads() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user chose a wait policy or an OpenMP runtime has started.

    Returns:
        Whether the OpenMP threads numba uses sleep when idle: the policy is passive and was in the
        environment before any OpenMP runtime read it (the user's environment, or set here in time).

    Example:
        >>> sleep_idle_openmp_threads() in (True, False)
        True
    """
    policy = os.environ.get("OMP_WAIT_POLICY")
    if policy is None and "GOMP_SPINCOUNT" not in os.environ:
        if _openmp_started():
            return False
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        return True
    return (policy or "").strip().upper() == "PASSIVE"


def synthesis_threads(allowed: int, cores: int, load: float | None, own_load: float, idle_threads_sleep: bool) -> int:
    """Threads for the next synthesis: ``allowed`` (numba's thread count) where idle threads sleep; where they
    spin, only the cores the other processes leave free (at least 1), so a spinning thread never waits for a
    core that another job holds.

    Args:
        allowed: ``numba.get_num_threads()`` (all cores unless ``NUMBA_NUM_THREADS`` or the caller says less).
        cores: CPU count.
        load: 1-minute load average (``None`` where the system has none, e.g. Windows: then ``allowed``).
        own_load: this process's recent CPU seconds per second (its own share of the load).
        idle_threads_sleep: what :func:`sleep_idle_openmp_threads` returned.

    Example:
        >>> synthesis_threads(2, 2, 12.0, 1.0, idle_threads_sleep=False)   # busy shared machine, spinning
        1
        >>> synthesis_threads(2, 2, 12.0, 1.0, idle_threads_sleep=True)
        2
        >>> synthesis_threads(8, 8, 2.1, 2.0, idle_threads_sleep=False)    # only this process is busy
        8
    """
    if idle_threads_sleep or allowed <= 1 or load is None:
        return max(1, allowed)
    others = max(0.0, load - own_load)
    return max(1, min(allowed, cores - int(others + 0.5)))


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with torch limited to ``count`` intra-op threads (``None``: unchanged); restores after.

    On a shared CPU torch's OpenMP threads spin-wait for each other on small tensors (a 360×264 warp, an
    occlusion check) and lose to other processes: on the project's 2-core VM under a load of 6, a streaming
    metric pass took 19 s wall on 2 torch threads and 2.5 s on one. torch is imported here, not at the top,
    so that :func:`sleep_idle_openmp_threads` can still run before torch is first imported.

    Example:
        >>> import torch
        >>> before = torch.get_num_threads()
        >>> with torch_threads(1):
        ...     torch.get_num_threads()
        1
        >>> torch.get_num_threads() == before
        True
    """
    import torch

    previous = torch.get_num_threads()
    if count is not None and count < previous:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
