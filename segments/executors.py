"""Where segment jobs run: the local (in-process) executor, the Ray executor, and the choice between them.

The engine hands an executor the jobs of the segments not yet stored and consumes the results in frame
order (the interface and its types: :mod:`segments.executor_interface`). The local executor is a plain
generator: one segment at a time, computed lazily as the writer consumes its frames, with ``progress`` passed through as the interruption point. The Ray executor
(:mod:`segments.ray_executor`) runs each job as a Ray task with a bounded number in flight; it calls
``progress()`` while it waits, so Ctrl-C and Cancel interrupt it too.

Which executor runs is chosen by the settings :data:`EXECUTOR_SETTINGS` (declared once: the ``propagate``
command's options and the Propagate to Video node's widgets are generated from them) through
:func:`make_executor`; :func:`open_executor` builds it from such option / widget values and closes it after.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from ..common.errors import input_error
from ..common.settings import Setting, declare
from .executor_interface import RAY_SOURCES, Executor, Finished, SegmentFunction
from .job import SegmentJob

#: Executors that :func:`get_executor` knows by name.
EXECUTORS = ("local", "ray")

EXECUTOR = declare("executor", "local", "Where segments run: local = in this process, one at a time; ray = as Ray "
                                        "tasks on a Ray cluster (pip install ray), several at a time.",
                   choices=EXECUTORS)
RAY_ADDRESS = declare("ray_address", "", "Ray cluster to use (executor ray): empty = the one running on this "
                                         "machine, else a new local one; 'auto'; 'local' = always a new local one; "
                                         "or HOST:PORT of a head started with 'ray start --head'.")
CPUS_PER_TASK = declare("cpus_per_task", 1, "CPU cores per segment task (executor ray); the patch synthesis uses "
                                            "that many threads.", min=1, max=256)
GPUS_PER_TASK = declare("gpus_per_task", 0.0, "GPUs per segment task (executor ray); a task uses the CUDA backend "
                                              "where its worker has a GPU (backend auto).", min=0.0, max=16.0,
                        step=0.25)
RAY_SOURCE = declare("ray_source", "shared_path", "How Ray workers get the source video: shared_path = read it "
                                                  "at the same path on every node; object_store = the driver "
                                                  "sends the file's bytes once.", choices=RAY_SOURCES)
#: The executor settings, in widget / option order.
EXECUTOR_SETTINGS: tuple[Setting, ...] = (EXECUTOR, RAY_ADDRESS, CPUS_PER_TASK, GPUS_PER_TASK, RAY_SOURCE)


def make_executor(executor: str = EXECUTOR.default, ray_address: str = RAY_ADDRESS.default,
                  cpus_per_task: int = CPUS_PER_TASK.default, gpus_per_task: float = GPUS_PER_TASK.default,
                  ray_source: str = RAY_SOURCE.default) -> Executor:
    """The executor the settings :data:`EXECUTOR_SETTINGS` choose; for ``ray`` it connects now, so a missing
    install or an unreachable cluster is reported before any work.

    Raises:
        InputError: an unknown executor or ray_source; Ray not installed (names ``pip install ray``); a cluster
            that cannot be reached at ``ray_address`` (bounded wait).

    Example:
        >>> make_executor("local").name
        'local'
    """
    if executor == "ray":
        from .ray_executor import RayExecutor

        return RayExecutor(ray_address, cpus_per_task, gpus_per_task, ray_source)
    return get_executor(executor)


@contextlib.contextmanager
def open_executor(values: Mapping[str, Any]) -> Iterator[Executor]:
    """The executor that the values of :data:`EXECUTOR_SETTINGS` choose (:func:`make_executor`; a setting
    missing from ``values`` keeps its default, so no value means the local executor), closed when the block
    ends, however it ends (a Ray executor cancels its outstanding tasks and shuts down a Ray it started).

    Args:
        values: option / widget values by setting name (other names are ignored).

    Raises:
        InputError: as :func:`make_executor`, before the block runs.

    Example:
        >>> with open_executor({"executor": "local", "patch_size": 5}) as executor:
        ...     executor.name
        'local'
    """
    executor = make_executor(**{setting.name: values.get(setting.name, setting.default)
                                for setting in EXECUTOR_SETTINGS})
    try:
        yield executor
    finally:
        close = getattr(executor, "close", None)
        if close is not None:
            close()


class LocalExecutor:
    """Runs each job in this process when its result is consumed (``max_in_flight`` is always 1 here)."""

    name = "local"

    def map_ordered(self, fn: SegmentFunction, jobs: Iterable[SegmentJob], max_in_flight: int = 1,
                    progress: Callable[[], None] | None = None,
                    finished: Finished | None = None) -> Iterator[Iterable[np.ndarray]]:
        for job in jobs:
            yield fn(job, progress)

    def cancel(self) -> None:
        """Nothing runs ahead of the consumer: closing the result generator stops the work."""


def get_executor(executor: str | Executor = "local") -> Executor:
    """An executor by name, or the given executor object.

    Raises:
        InputError: an unknown name.

    Example:
        >>> get_executor("local").name
        'local'
    """
    if isinstance(executor, str):
        if executor == "local":
            return LocalExecutor()
        if executor == "ray":
            return make_executor("ray")
        raise input_error("executor", f"one of {EXECUTORS}", repr(executor), "use 'local'")
    if not (callable(getattr(executor, "map_ordered", None)) and callable(getattr(executor, "cancel", None))):
        raise input_error("executor", "an executor name or an object with map_ordered and cancel",
                          type(executor).__name__, "use 'local'")
    return executor
