"""Finished segments on disk, so an interrupted run resumes at the first unfinished segment.

Each finished segment is one entry of the disk cache (:mod:`common.cache`, namespace ``segments``):
``frames.npy``, its output frames as uint8 ``[n,H,W,3]`` — exactly the frames that go into the video,
3 bytes per pixel per frame (uncompressed, so an entry is written as the frames come and read back
memory-mapped without decoding) — and ``meta.json`` (what it is, for people). An entry appears only
when complete (:func:`common.cache.new_entry`).

The key (:func:`segment_key`) hashes everything the frames depend on: the source file's fingerprint
(a changed file never reuses a segment), the load widgets (selection and size), the segment's frame
range and chains, its stylized keyframes (by content) and every setting that changes pixels; not the
synthesis backend nor the executor, which give the same pixels.
"""

from __future__ import annotations

import json
from typing import Iterable, Iterator

import numpy as np

from ..common import cache
from .job import SegmentJob

CACHE_NAMESPACE = "segments"
#: Bump when a segment's frames for the same inputs change (algorithm or layout).
STORE_VERSION = 1
#: Disk bytes per pixel per stored frame.
BYTES_PER_PIXEL = 3


def segment_key(job: SegmentJob) -> str:
    """The store key of a job (module docstring): equal keys mean equal frames."""
    plan = job.plan
    chains = [[chain.key, chain.direction, list(chain.targets)] for chain in plan.chains]
    styles = {str(key): style for key, style in sorted(job.styles.items())}
    region = [] if job.region is None else ["region", job.region.key_parts(range(len(plan.loaded)))]
    return cache.content_key("segment", STORE_VERSION, job.index.fingerprint, job.index.widgets,
                             [plan.start, plan.stop, plan.frames.start, plan.frames.stop], chains, styles,
                             job.settings.pixel_parts(), *region)


class SegmentStore:
    """Read and write finished segments (module docstring)."""

    def __init__(self, namespace: str = CACHE_NAMESPACE) -> None:
        self.namespace = namespace

    def lookup(self, key: str, count: int, size: tuple[int, int]) -> np.ndarray | None:
        """The stored frames ``[count,H,W,3]`` uint8 (memory-mapped), or ``None`` if not stored (or of
        another shape)."""
        entry = cache.lookup(self.namespace, key)
        if entry is None:
            return None
        try:
            frames = np.load(entry / "frames.npy", mmap_mode="r")
        except (OSError, ValueError):
            return None
        return frames if frames.shape == (count, *size, 3) and frames.dtype == np.uint8 else None

    def has(self, key: str, count: int, size: tuple[int, int]) -> bool:
        """True if a complete entry of that shape exists."""
        return self.lookup(key, count, size) is not None

    def record(self, key: str, frames: Iterable[np.ndarray], count: int, size: tuple[int, int],
               about: dict | None = None) -> Iterator[np.ndarray]:
        """Pass ``frames`` on while storing them; the entry is published once the last frame is stored,
        before that frame is passed on (so a consumer that stops after it still finds the segment stored).

        Args:
            key: from :func:`segment_key`.
            frames: the segment's ``count`` uint8 ``[H,W,3]`` frames.
            count: frames expected.
            size: ``(H, W)``.
            about: JSON-able description written to ``meta.json``.

        Yields:
            The same frames. An exception (or closing this generator) before the last frame leaves nothing.

        Raises:
            RuntimeError: ``frames`` gave another number of frames than ``count``.
        """
        previous = None
        with cache.new_entry(self.namespace, key) as staging:
            stored = np.lib.format.open_memmap(staging / "frames.npy", mode="w+", dtype=np.uint8,
                                               shape=(count, *size, 3))
            written = 0
            for frame in frames:
                if written == count:
                    raise RuntimeError(f"segment gave more than the {count} frames planned")
                stored[written] = frame
                written += 1
                if previous is not None:
                    yield previous
                previous = frame
            if written != count:
                raise RuntimeError(f"segment gave {written} frames, {count} planned")
            stored.flush()
            del stored
            (staging / "meta.json").write_text(json.dumps({"frames": count, "size": list(size), **(about or {})},
                                                          indent=1))
        if previous is not None:
            yield previous
