"""Exact random access to the decoded frames of a video: the frames a load selects, from any position.

Long videos are processed a segment at a time (:mod:`segments`), so a segment must be able to decode
just its frames, and get exactly the pixels a sequential load (:func:`videoio.reader.load_frames`) gives
for them — then a segment is a pure function of (source file, frame range).

**The index** (:func:`index_video`): one streaming pass over the source decodes every frame, without
RGB conversion, and records per decoded frame (in the decoder's display order, the *source index*)
its raw ``pts``, its key-frame flag, a CRC-32 of its decoded planes (visible bytes only) and its time
as :class:`videoio.reader._Decoder` stamps it (the same timestamp fix-up for shuffled pts as a load).
That table is cached on disk under the file's *fingerprint* (size, modification time, BLAKE2b of the
bytes): a changed file gets a new index. The load widgets are then applied to the table with the same
code as a load (:meth:`videoio.selection.Selection.slots`, :func:`videoio.reader.loaded_info`,
:func:`videoio.sizing.plan_size`), giving the loaded index → source index mapping and the VideoInfo.

**Reading** (:func:`read_frames`, :func:`iter_read_frames`): seek to the last key frame at or before the
first needed source frame, decode forward, identify each frame by its pts and verify it by its CRC.
If anything does not match (a seek that lands late, frames without a usable pts, an open-GOP key frame
whose leading frames decode differently), the read falls back to the key frame before, then to a
sequential decode from the start, with one log line. Frames are RGB-converted, resized and cropped
exactly as a load does, so the result equals the rows of ``load_frames`` bit for bit. A source that can
no longer give an indexed frame (truncated or replaced while a run goes on) raises an error naming
the frame.

Example:
    >>> index = index_video(VIDEO, frame_load_cap=20, custom_width=128)   # doctest: +SKIP
    >>> read_frames(index, [12, 13, 14]).shape                            # doctest: +SKIP
    (3, 88, 128, 3)
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import zlib
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from pathlib import Path
from typing import Iterator, Sequence, Union

import av
import numpy as np

from ..common import cache
from ..common.errors import InputError, input_error
from .info import VideoInfo
from .reader import _Decoder, _open_load, loaded_info
from .sizing import SizePlan

LOG = logging.getLogger(__name__)

CACHE_NAMESPACE = "frame_index"
#: Bump when the index layout or what it records changes.
INDEX_VERSION = 1
_HASH_BLOCK = 1 << 20

#: Where a read takes the file from: a path, or the file's bytes (workers that cannot see the path).
Source = Union[str, os.PathLike, bytes]


def fingerprint(path: str | os.PathLike) -> str:
    """The file's identity for caches: size, modification time and BLAKE2b of its bytes (streamed).

    Returns:
        A 32-hex-digit key; any change to the file (content, or even only its time) changes it.
    """
    file = Path(path)
    stat = file.stat()
    digest = hashlib.blake2b(digest_size=16)
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(_HASH_BLOCK), b""):
            digest.update(block)
    return cache.content_key("video-file", stat.st_size, stat.st_mtime_ns, digest.hexdigest())


@dataclass(frozen=True)
class FrameIndex:
    """The index of one load: the source's decoded-frame table and what the load widgets select from it.

    Attributes:
        path: absolute path of the source file.
        fingerprint: :func:`fingerprint` of the file when it was indexed.
        info: the :class:`VideoInfo` the same load gives (``frame_indices``: source index of every
            loaded frame, output size, loaded fps, audio span).
        plan: the :class:`SizePlan` (turn, resize, crop) applied to every frame.
        widgets: the load widgets (``frame_load_cap``, ``skip_first_frames``, ``select_every_nth``,
            ``force_rate``, ``custom_width``, ``custom_height``, ``size_multiple``).
        pts: ``[S]`` int64 raw pts of every decoded source frame (``has_pts`` False where there was none).
        has_pts: ``[S]`` bool.
        key_frame: ``[S]`` bool, the decoder's key-frame flag.
        crc: ``[S]`` uint32 CRC-32 of the frame's decoded planes.
    """

    path: str
    fingerprint: str
    info: VideoInfo
    plan: SizePlan
    widgets: dict
    pts: np.ndarray
    has_pts: np.ndarray
    key_frame: np.ndarray
    crc: np.ndarray

    @property
    def frame_count(self) -> int:
        """Number of loaded frames ``N``."""
        return self.info.frame_count

    @property
    def frame_size(self) -> tuple[int, int]:
        """``(H, W)`` of the loaded frames in pixels."""
        return self.info.output_size

    @property
    def source_indices(self) -> tuple[int, ...]:
        """Source index of every loaded frame."""
        return tuple(self.info.frame_indices)

    def key(self) -> str:
        """Content key of what this index loads (source fingerprint, load widgets): for caches."""
        return cache.content_key("frame-index-load", INDEX_VERSION, self.fingerprint, self.widgets)

    @cached_property
    def pts_lookup(self) -> dict[int, int]:
        """Raw pts → source index, for the pts that occur once (a repeated pts cannot identify a frame)."""
        values, counts = np.unique(self.pts[self.has_pts], return_counts=True)
        unique = set(values[counts == 1].tolist())
        return {int(pts): source for source, (pts, has) in enumerate(zip(self.pts, self.has_pts))
                if has and int(pts) in unique}


def _plane_crc(frame: av.VideoFrame) -> int:
    """CRC-32 of the visible bytes of every plane (line padding excluded: it is not part of the picture)."""
    components = frame.format.components
    value = 0
    for number, plane in enumerate(frame.planes):
        pixel_bytes = sum(-(-component.bits // 8) for component in components if component.plane == number)
        row_bytes = min(plane.line_size, plane.width * pixel_bytes) if pixel_bytes else plane.line_size
        rows = np.frombuffer(plane, np.uint8)[:plane.height * plane.line_size].reshape(plane.height, plane.line_size)
        value = zlib.crc32(np.ascontiguousarray(rows[:, :row_bytes]), value)
    return value


@dataclass(frozen=True)
class _SourceTable:
    """Per decoded source frame: stamped time, raw pts, key flag, CRC; plus how the decode ended."""

    times: tuple[Fraction, ...]
    pts: np.ndarray
    has_pts: np.ndarray
    key_frame: np.ndarray
    crc: np.ndarray
    reached_end: bool
    error: str

    def to_json(self) -> str:
        return json.dumps({"times": [f"{t.numerator}/{t.denominator}" for t in self.times],
                           "pts": self.pts.tolist(), "has_pts": self.has_pts.tolist(),
                           "key_frame": self.key_frame.tolist(), "crc": self.crc.tolist(),
                           "reached_end": self.reached_end, "error": self.error})

    @classmethod
    def from_json(cls, text: str) -> "_SourceTable":
        data = json.loads(text)
        return cls(tuple(Fraction(t) for t in data["times"]), np.asarray(data["pts"], np.int64),
                   np.asarray(data["has_pts"], bool), np.asarray(data["key_frame"], bool),
                   np.asarray(data["crc"], np.uint32), data["reached_end"], data["error"])


def _scan(container, fps: Fraction, progress) -> _SourceTable:
    """Decode every frame once (no RGB conversion) and record the table."""
    decoder = _Decoder(container, fps)
    times, pts, has_pts, keys, crcs = [], [], [], [], []
    error = ""
    try:
        for time, frame in decoder:
            times.append(time)
            pts.append(frame.pts if frame.pts is not None else 0)
            has_pts.append(frame.pts is not None)
            keys.append(bool(frame.key_frame))
            crcs.append(_plane_crc(frame))
            if progress is not None:
                progress(len(times))
    except InputError as failure:  # a decoding error: frames up to it stay usable
        error = str(failure)
    return _SourceTable(tuple(times), np.asarray(pts, np.int64), np.asarray(has_pts, bool),
                        np.asarray(keys, bool), np.asarray(crcs, np.uint32), decoder.reached_end, error)


def _source_table(file: Path, container, info: VideoInfo, print_key: str, progress) -> _SourceTable:
    key = cache.content_key("frame-index", INDEX_VERSION, print_key)
    entry = cache.lookup(CACHE_NAMESPACE, key)
    if entry is not None:
        return _SourceTable.from_json((entry / "index.json").read_text())
    LOG.info("indexing %s (one decoding pass; cached for later runs)", file.name)
    table = _scan(container, info.source_fps, progress)
    with cache.new_entry(CACHE_NAMESPACE, key) as staging:
        (staging / "index.json").write_text(table.to_json())
    return table


def index_video(path: str | os.PathLike, frame_load_cap: int = 0, skip_first_frames: int = 0,
                select_every_nth: int = 1, force_rate: float = 0.0, custom_width: int = 0, custom_height: int = 0,
                size_multiple: int = 8, progress=None) -> FrameIndex:
    """Index a video for exact random access to the frames a load with these widgets selects.

    Arguments are those of :func:`videoio.reader.load_frames` (same names, same rules, same errors).
    The decoding pass is cached by the file's :func:`fingerprint`; a second call on the same file
    with other widgets only re-applies the selection.

    Args:
        progress: optional ``progress(decoded_frames)`` during the indexing pass.

    Returns:
        :class:`FrameIndex`; ``index.info`` equals the VideoInfo of the same load.

    Raises:
        InputError: as :func:`videoio.reader.load_frames` (missing or unreadable file, invalid widget
            values, an empty selection, a cap past the end, a ``size_multiple`` larger than the frame), and
            a decoding error in the frames the selection needs (the message names the frame).
    """
    selection, container, info, plan, _ = _open_load(path, frame_load_cap, skip_first_frames, select_every_nth,
                                                     force_rate, custom_width, custom_height, size_multiple)
    file = Path(info.source_path)
    with container:
        print_key = fingerprint(file)
        table = _source_table(file, container, info, print_key, progress)
    slots = list(selection.slots(zip(table.times, range(len(table.times))), info.source_fps))
    satisfied = bool(selection.frame_load_cap) and len(slots) == selection.frame_load_cap
    if table.error and not satisfied:
        raise InputError(table.error)
    indices = [slot.source_index for slot in slots]
    start_time = slots[0].time if slots else None
    loaded = loaded_info(info, selection, plan, indices, start_time, len(table.times), table.reached_end)
    widgets = {"frame_load_cap": frame_load_cap, "skip_first_frames": skip_first_frames,
               "select_every_nth": select_every_nth, "force_rate": str(selection.force_rate or 0),
               "custom_width": custom_width, "custom_height": custom_height, "size_multiple": size_multiple}
    return FrameIndex(str(file), print_key, loaded, plan, widgets, table.pts, table.has_pts, table.key_frame,
                      table.crc)


class _Mismatch(Exception):
    """A decoding attempt did not give the indexed frames (the read falls back)."""


def _open_source(index: FrameIndex, source: Source | None):
    if isinstance(source, (bytes, bytearray, memoryview)):
        return av.open(io.BytesIO(source))
    return av.open(str(source if source is not None else index.path))


def _attempt(index: FrameIndex, source: Source | None, start: int | None,
             wanted: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
    """Decode from key frame ``start`` (``None``: sequentially from the first frame) and yield
    ``(source_index, uint8 [h,w,3])`` for the ``wanted`` source indices (ascending, unique).

    Raises:
        _Mismatch: a wanted frame was skipped, could not be identified, or differs from the index.
    """
    with _open_source(index, source) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        sequential = start is None or start == 0
        if not sequential:
            container.seek(int(index.pts[start]), stream=stream, backward=True, any_frame=False)
        by_pts = index.pts_lookup
        targets = iter(wanted)
        target = next(targets)
        try:
            for position, frame in enumerate(container.decode(stream)):
                found = position if sequential else by_pts.get(frame.pts) if frame.pts is not None else None
                if found is None:
                    raise _Mismatch(f"a frame with pts {frame.pts} that is not in the index")
                if found < target:
                    continue
                if found > target:
                    raise _Mismatch(f"source frame {target} was not decoded after the seek")
                if _plane_crc(frame) != int(index.crc[found]):
                    raise _Mismatch(f"source frame {found} decodes to other pixels than when indexed")
                yield found, index.plan.apply(frame.to_ndarray(format="rgb24"))
                target = next(targets, None)
                if target is None:
                    return
        except av.error.FFmpegError as error:
            raise _Mismatch(f"a decoding error before source frame {target} ({error})") from None
        raise _Mismatch(f"decoding ended before source frame {target}")


def _start_keys(index: FrameIndex, first: int) -> list[int | None]:
    """Where to start decoding for source frame ``first``: the last key frame at or before it, the key frame
    before that, then ``None`` (sequential from the start)."""
    keys = [key for key in np.flatnonzero(index.key_frame[:first + 1])[::-1][:2].tolist() if key != 0]
    return [*keys, None]


def _decode_sources(index: FrameIndex, wanted: Sequence[int], source: Source | None,
                    loaded_of: dict[int, int]) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(source_index, pixels)`` for ascending unique ``wanted``, falling back as the module doc says."""
    position = 0
    while position < len(wanted):
        starts = _start_keys(index, wanted[position])
        for start, fallback in zip(starts, [*starts[1:], "end"]):
            try:
                for found, pixels in _attempt(index, source, start, wanted[position:]):
                    yield found, pixels
                    position += 1
                break
            except _Mismatch as why:
                if start is None:
                    frame = wanted[position]
                    raise input_error(
                        "video", f"loaded frame {loaded_of[frame]} (source frame {frame}) as it was when the "
                        f"video was indexed", f"{why} in {Path(index.path).name}",
                        ["the file was truncated or replaced while the run went on: restore it, or run again "
                         "to index the new file", "check that the disk holding the video is readable"]) from None
                LOG.info("frame index: decoding from key frame %d failed (%s); trying %s", start, why,
                         "a sequential decode" if fallback is None else f"key frame {fallback}")


def iter_read_frames(index: FrameIndex, loaded_indices: Sequence[int],
                     source: Source | None = None) -> Iterator[np.ndarray]:
    """Stream the loaded frames ``loaded_indices`` (non-decreasing) as uint8 ``[H,W,3]``, decoding forward
    once (see the module docstring for seeking, verification and fallbacks).

    Args:
        index: from :func:`index_video`.
        loaded_indices: loaded-frame indices in ``[0, N)``, non-decreasing (repeats allowed).
        source: the file's bytes or another path to read instead of ``index.path`` (workers that cannot
            see the original path); the frames are verified against the index either way.

    Yields:
        uint8 ``[H,W,3]`` RGB frames, the loaded pixels (``load_frames`` rows × 255, exactly).

    Raises:
        InputError: indices out of range or decreasing; an indexed frame that cannot be decoded any more
            (the message names the loaded and the source frame).
    """
    loaded = [int(value) for value in loaded_indices]
    count = index.frame_count
    if any(not 0 <= value < count for value in loaded):
        raise input_error("loaded_indices", f"indices in [0, {count - 1}] (the load has {count} frames)",
                          [value for value in loaded if not 0 <= value < count][:5],
                          "ask for frames of this load only")
    if any(later < earlier for earlier, later in zip(loaded, loaded[1:])):
        raise input_error("loaded_indices", "non-decreasing indices", loaded[:8], "sort them")
    sources = [index.source_indices[value] for value in loaded]
    wanted = sorted(set(sources))
    loaded_of = {}
    for value, frame in zip(loaded, sources):
        loaded_of.setdefault(frame, value)
    pending = iter(zip(loaded, sources))
    current = next(pending, None)
    for found, pixels in _decode_sources(index, wanted, source, loaded_of):
        while current is not None and current[1] == found:
            yield pixels.copy()
            current = next(pending, None)


def read_frames(index: FrameIndex, loaded_indices: Sequence[int], source: Source | None = None) -> np.ndarray:
    """The loaded frames ``loaded_indices`` (any order, repeats allowed) as one uint8 batch.

    Args:
        index: from :func:`index_video`.
        loaded_indices: loaded-frame indices in ``[0, N)``.
        source: as :func:`iter_read_frames`.

    Returns:
        uint8 ``[n,H,W,3]``: row ``i`` is loaded frame ``loaded_indices[i]``, equal bit for bit to
        ``load_frames(...).images[loaded_indices[i]] * 255`` (the loader divides these by 255).

    Raises:
        InputError: as :func:`iter_read_frames`.
    """
    order = sorted(set(int(value) for value in loaded_indices))
    height, width = index.frame_size
    frames = dict(zip(order, iter_read_frames(index, order, source)))
    out = np.empty((len(loaded_indices), height, width, 3), np.uint8)
    for row, value in enumerate(loaded_indices):
        out[row] = frames[int(value)]
    return out


def index_for_info(info: VideoInfo, name: str = "video_info", progress=None) -> FrameIndex:
    """The index of the load a VIDEO_INFO describes (its source file and ``load_widgets``).

    Args:
        info: from Rerender Load Video (or :func:`videoio.reader.load_frames`).
        name: the input to name in errors.
        progress: as :func:`index_video`.

    Returns:
        :class:`FrameIndex` of the same frames (``index.info.frame_indices == info.frame_indices``).

    Raises:
        InputError: not a VIDEO_INFO, or one without its load widgets (made by another node); a source that
            changed since it was loaded (other frames selected now).
    """
    if not isinstance(info, VideoInfo) or not info.load_widgets:
        raise input_error(name, "the VIDEO_INFO of Rerender Load Video (it records how the frames were loaded)",
                          type(info).__name__ if not isinstance(info, VideoInfo) else "a VIDEO_INFO without its "
                          "load widgets", "connect Rerender Load Video's video_info output")
    index = index_video(info.source_path, **dict(info.load_widgets), progress=progress)
    if tuple(index.info.frame_indices) != tuple(info.frame_indices) or index.frame_size != info.output_size:
        raise input_error(name, f"the {info.frame_count} frames Load Video loaded from {Path(info.source_path).name}",
                          f"{index.frame_count} frames at {index.frame_size[1]}x{index.frame_size[0]} now",
                          "the video file changed since it was loaded: run Load Video again")
    return index
