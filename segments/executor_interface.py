"""The executor interface: what the segment engine needs from an executor, in types both executors share.

The engine hands an executor the jobs of the segments not yet stored, in frame order, and consumes the
results in that order, writing each to the store and the video as it comes. An executor needs only

* ``map_ordered(fn, jobs, max_in_flight, progress) → iterator of results in job order``, where a result
  is an iterable of the segment's uint8 ``[H,W,3]`` frames, and at most ``max_in_flight`` jobs run or
  wait finished ahead of the one being consumed;
* ``cancel()``, which stops outstanding work (called when the run ends early: an error, Ctrl-C, Cancel).

``map_ordered`` may also take ``finished(position, frames) → frames``: an executor that finishes segments
out of order calls it as each arrives (the engine stores the segment there and hands back the stored
frames), so a driver that dies loses no finished segment.

``fn`` is :func:`segments.job.run_segment` (a module-level function, so it pickles by reference). The
executors themselves and the choice between them live in :mod:`segments.executors`; this module holds only
the types, so the Ray executor (:mod:`segments.ray_executor`) and the chooser import them from one place
without importing each other.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Protocol

import numpy as np

from .job import SegmentJob

SegmentFunction = Callable[..., Iterable[np.ndarray]]
#: ``finished(position, frames) → frames``: store a segment that arrived (position = index in ``jobs``).
Finished = Callable[[int, np.ndarray], Iterable[np.ndarray]]

#: Where Ray workers read the source video from.
RAY_SOURCES = ("shared_path", "object_store")


class Executor(Protocol):
    """What the engine needs from an executor (module docstring)."""

    name: str

    def map_ordered(self, fn: SegmentFunction, jobs: Iterable[SegmentJob], max_in_flight: int = 1,
                    progress: Callable[[], None] | None = None,
                    finished: Finished | None = None) -> Iterator[Iterable[np.ndarray]]: ...

    def cancel(self) -> None: ...
