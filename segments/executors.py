"""Where segment jobs run: the executor interface and the local (in-process) executor.

The engine hands an executor the jobs of the segments not yet stored, in frame order, and consumes the
results in that order, writing each to the store and the video as it comes. An executor needs only

* ``map_ordered(fn, jobs, max_in_flight, progress) → iterator of results in job order``, where a result
  is an iterable of the segment's uint8 ``[H,W,3]`` frames, and at most ``max_in_flight`` jobs run or
  wait finished ahead of the one being consumed;
* ``cancel()``, which stops outstanding work (called when the run ends early: an error, Ctrl-C, Cancel).

``fn`` is :func:`segments.job.run_segment` (a module-level function, so it pickles by reference).
The local executor is a plain generator: one segment at a time, computed lazily as the writer consumes
its frames, with ``progress`` passed through as the interruption point. A distributed executor (Ray,
issue 15) implements the same two methods with tasks and a bounded number in flight; the engine does not
change. ``progress`` is for executors that run ``fn`` in this process; others may ignore it.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Protocol

import numpy as np

from ..common.errors import input_error
from .job import SegmentJob

SegmentFunction = Callable[..., Iterable[np.ndarray]]

#: Executors that :func:`get_executor` knows by name.
EXECUTORS = ("local",)


class Executor(Protocol):
    """What the engine needs from an executor (module docstring)."""

    name: str

    def map_ordered(self, fn: SegmentFunction, jobs: Iterable[SegmentJob], max_in_flight: int = 1,
                    progress: Callable[[], None] | None = None) -> Iterator[Iterable[np.ndarray]]: ...

    def cancel(self) -> None: ...


class LocalExecutor:
    """Runs each job in this process when its result is consumed (``max_in_flight`` is always 1 here)."""

    name = "local"

    def map_ordered(self, fn: SegmentFunction, jobs: Iterable[SegmentJob], max_in_flight: int = 1,
                    progress: Callable[[], None] | None = None) -> Iterator[Iterable[np.ndarray]]:
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
        raise input_error("executor", f"one of {EXECUTORS}", repr(executor), "use 'local'")
    if not (callable(getattr(executor, "map_ordered", None)) and callable(getattr(executor, "cancel", None))):
        raise input_error("executor", "an executor name or an object with map_ordered and cancel",
                          type(executor).__name__, "use 'local'")
    return executor
