"""Read videos with PyAV: probe, stream selected frames, or load them as a ComfyUI IMAGE batch.

* :func:`probe` reads the container header (and decodes one frame for the display rotation):
  exact fps, frame count, size, audio stream.
* :func:`iter_frames` streams the selected frames as uint8 ``[H,W,3]`` RGB arrays.
* :func:`load_frames` loads them into one IMAGE ``[N,H,W,3]`` float32 tensor in [0, 1] plus the
  fps, a :class:`~videoio.info.VideoInfo` and the matching AUDIO, like Rerender Load Video.

Selection widgets and their order: :mod:`videoio.selection` (``force_rate`` → ``skip_first_frames``
→ ``select_every_nth`` → ``frame_load_cap``, as in VideoHelperSuite). Size rule: :mod:`videoio.sizing`
(resize to cover ``custom_width`` × ``custom_height``, centre-crop to a multiple of ``size_multiple``).

Frames are decoded one at a time (a generator; PyAV ``thread_type="AUTO"``). Only selected frames
are converted to RGB uint8, resized and cropped in uint8 (OpenCV) and divided by 255 straight into
their row of a float32 batch, on worker threads while decoding goes on. The batch is allocated
once, after :func:`common.memory.check_allocation` confirmed it fits. Pixel values match core
LoadVideo: ``uint8 / 255`` of PyAV's ``rgb24`` conversion (which honours the stream's colour
matrix and range tags).
"""

from __future__ import annotations

import heapq
import logging
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import av
import numpy as np
import torch

from ..common.errors import InputError, NodeFix, input_error
from ..common.memory import check_allocation
from .audio import audio_track, read_audio
from .info import VideoInfo
from .rate import exact_fps
from .selection import Selection, Slot
from .sizing import SizePlan, plan_size

LOG = logging.getLogger(__name__)

#: Frames added when the batch outgrows the container's frame count (a header that under-counts).
GROW_STEP = 16
#: Frames of look-ahead used to put shuffled frame timestamps back in order.
REORDER_DEPTH = 4
#: Frames a decode may fall short of the container's count (and frame periods of its duration)
#: before the file counts as cut short: headers of real files are off by a frame or two.
TRUNCATION_SLACK = 2
#: Threads converting decoded frames to float32 while the main thread decodes.
CONVERT_THREADS = 2
#: Frames queued for conversion at most (each holds one decoded frame).
MAX_PENDING = 8
_UINT8_MAX = np.float32(255.0)

Progress = Callable[..., None]


@dataclass
class LoadedVideo:
    """Result of :func:`load_frames`.

    Attributes:
        images: IMAGE ``[N,H,W,3]`` float32 in [0, 1].
        fps: loaded frame rate in frames per second (``float(info.loaded_fps)``).
        info: the :class:`VideoInfo` (exact rates, selected source indices, audio span).
        audio: AUDIO ``{"waveform": [1,C,S] float32, "sample_rate": int}`` for the loaded span, or
            ``None`` when the video has no audio.
    """

    images: torch.Tensor
    fps: float
    info: VideoInfo
    audio: dict | None

    @property
    def frame_count(self) -> int:
        """Number of loaded frames ``N``."""
        return int(self.images.shape[0])


def _open(path: str | os.PathLike, name: str = "video") -> tuple[Path, av.container.InputContainer]:
    """Open a video file, raising :class:`InputError` for a missing file or one PyAV cannot read."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise input_error(name, "an existing video file", str(file),
                          ["check the path (absolute, or relative to the current folder)",
                           NodeFix("put the video in ComfyUI's input folder, or upload it with Rerender Load "
                                   "Video's upload button")])
    try:
        container = av.open(str(file))
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as error:
        raise input_error(name, "a video file FFmpeg/PyAV can read (mp4, mov, mkv, webm, avi, …)",
                          f"{file.name} ({error.__class__.__name__}: {error})",
                          "convert the file to H.264 mp4, or pick another file") from None
    if not container.streams.video:
        container.close()
        raise input_error(name, "a file with a video stream", f"{file.name} with no video stream",
                          "pick a video file (this one holds only audio or data)")
    return file.resolve(), container


def _source_rate(stream) -> Fraction:
    for candidate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if candidate:
            return exact_fps(Fraction(candidate))
    raise input_error("video", "a stream with a known frame rate", "no rate in the container",
                      "re-mux the file with ffmpeg (ffmpeg -i in.xxx -c copy out.mp4)")


def _display_rotation(file: Path) -> int:
    """Counter-clockwise turn (0/90/180/270) that shows the video upright, read from its first frame."""
    try:
        with av.open(str(file)) as container:
            frame = next(container.decode(video=0), None)
    except av.error.FFmpegError:
        return 0
    angle = int(round(getattr(frame, "rotation", 0) or 0)) % 360 if frame is not None else 0
    if angle % 90:
        LOG.warning("video: display rotation of %d degrees is not a multiple of 90; ignored", angle)
        return 0
    return angle


def _probe_open(file: Path, container) -> VideoInfo:
    stream = container.streams.video[0]
    fps = _source_rate(stream)
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / av.time_base
    else:
        duration = (stream.frames or 0) / float(fps)
    frame_count = int(stream.frames or 0) or max(round(duration * fps), 0)
    rotation = _display_rotation(file)
    width, height = stream.codec_context.width, stream.codec_context.height
    if rotation in (90, 270):
        width, height = height, width
    return VideoInfo(str(file), fps, frame_count, duration, width, height, fps, width, height,
                     frame_indices=range(frame_count), video_codec=stream.codec_context.name,
                     audio=audio_track(container), rotation=rotation)


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read a video's header (no full decode).

    Args:
        path: the video file.

    Returns:
        :class:`VideoInfo` of the whole video: ``loaded_fps == source_fps``, output size = source
        size, ``frame_indices = range(source_frame_count)``, ``start_time`` 0. The frame count is
        the container's (estimated from duration × fps when it does not state one).

    Raises:
        InputError: missing file, a file PyAV cannot open, or a file without a video stream.
    """
    file, container = _open(path)
    with container:
        return _probe_open(file, container)


class _Decoder:
    """Decodes the first video stream, yielding ``(timestamp_seconds, av.VideoFrame)`` in display order.

    Timestamps are made increasing: some containers label decoded frames with shuffled pts (XVID
    with packed B-frames in AVI gives 1, 2, 3, 5, 4, 6, …), so each frame gets the smallest pts
    among itself and the next :data:`REORDER_DEPTH` frames; a frame without a usable pts gets the
    previous time plus one frame period. After iteration, ``decoded`` is the number of frames
    decoded and ``reached_end`` tells whether the stream was read to its end (then ``decoded``
    is the exact frame count).

    A stream that ends well before the frame count and duration its container declares raises
    :class:`InputError` at the end (a file cut short: threaded decoding drops the error FFmpeg
    raises for the torn last packet, so the count is what tells).
    """

    def __init__(self, container, fps: Fraction) -> None:
        self.container = container
        self.stream = container.streams.video[0]
        self.stream.thread_type = "AUTO"
        self.period = 1 / fps
        self.decoded = 0
        self.reached_end = False
        self._first: Fraction | None = None
        self._last: Fraction | None = None

    def __iter__(self):
        time_base = self.stream.time_base
        waiting: deque = deque()
        times: list[Fraction] = []  # heap of the waiting frames' pts, in seconds
        try:
            for frame in self.container.decode(self.stream):
                self.decoded += 1
                waiting.append(frame)
                if frame.pts is not None and time_base:
                    heapq.heappush(times, Fraction(frame.pts) * time_base)
                if len(waiting) > REORDER_DEPTH:
                    yield self._stamp(times), waiting.popleft()
        except av.error.FFmpegError as error:
            raise input_error("video", "a video that decodes to the end",
                              f"a decoding error after frame {self.decoded} ({error})",
                              ["re-encode the file (ffmpeg -i in.xxx -c:v libx264 out.mp4)",
                               "load fewer frames with frame_load_cap"]) from None
        while waiting:
            yield self._stamp(times), waiting.popleft()
        self._check_complete()
        self.reached_end = True

    def _check_complete(self) -> None:
        """Raise if the decode stopped well short of the container's declared frame count and duration."""
        declared = int(self.stream.frames or 0)
        if not declared or self.decoded >= declared - TRUNCATION_SLACK:
            return
        duration = float(self.stream.duration * self.stream.time_base) if self.stream.duration else 0.0
        span = float(self._last - self._first + self.period) if self._last is not None else 0.0
        if duration and span >= duration - TRUNCATION_SLACK * float(self.period):
            return  # the timestamps reach the end: frames were merged or dropped, nothing is missing
        last = f"frame {self.decoded - 1}" if self.decoded else "no frame"
        raise input_error("video", "a video that decodes to the end",
                          f"the data stops after {last}: {self.decoded} of the {declared} frames the container "
                          f"declares" + (f" ({span:.2f} of {duration:.2f} s)" if duration else ""),
                          ["copy or download the file again (it was cut short)",
                           f"load at most {self.decoded} frames with frame_load_cap"] if self.decoded else
                          ["copy or download the file again (it was cut short)"])

    def _stamp(self, times: list[Fraction]) -> Fraction:
        time = heapq.heappop(times) if times else None
        if time is None or (self._last is not None and time <= self._last):
            time = Fraction(0) if self._last is None else self._last + self.period
        if self._first is None:
            self._first = time
        self._last = time
        return time


def _selected(container, fps: Fraction, selection: Selection, plan: SizePlan):
    """Decode and yield ``(Slot, uint8 [h,w,3])`` for the selected frames; returns the decoder."""
    decoder = _Decoder(container, fps)
    last_index, last_pixels = None, None

    def generate() -> Iterator[tuple[Slot, np.ndarray]]:
        nonlocal last_index, last_pixels
        for slot in selection.slots(decoder, fps):
            if slot.source_index == last_index:  # force_rate repeats a frame: convert it once
                yield slot, last_pixels.copy()
                continue
            pixels = plan.apply(slot.payload.to_ndarray(format="rgb24"))
            last_index, last_pixels = slot.source_index, pixels
            yield slot, pixels

    return decoder, generate()


def _check_first_frames(info: VideoInfo, selection: Selection, count_stated: bool = True) -> int:
    """Frames the selection gives on a constant-rate video of ``info``'s length (an estimate for
    sizing the batch and the progress bar).

    Raises:
        InputError: ``skip_first_frames`` at or past the end, when the container states its frame
            count (an estimated count is checked after decoding instead).
    """
    slots = selection.slot_count(info.source_frame_count, info.source_fps)
    if count_stated and info.source_frame_count and selection.skip_first_frames >= slots:
        unit = f"slots at force_rate {selection.force_rate}" if selection.force_rate else "frames"
        raise input_error("skip_first_frames", f"fewer than {slots} (the video has {slots} {unit})",
                          selection.skip_first_frames,
                          [f"set skip_first_frames to at most {max(slots - 1, 0)}",
                           "pick a longer video"])
    remaining = max(slots - selection.skip_first_frames, 0)
    count = -(-remaining // selection.select_every_nth)
    return min(count, selection.frame_load_cap) if selection.frame_load_cap else count


def _count_stated(container) -> bool:
    return bool(container.streams.video[0].frames)


def estimate_frame_count(path: str | os.PathLike, frame_load_cap: int = 0, skip_first_frames: int = 0,
                         select_every_nth: int = 1, force_rate: float = 0.0) -> int:
    """Frames :func:`load_frames` will load, from the header only (for sizing a progress bar).

    Exact for constant-rate videos whose container states the frame count.

    Raises:
        InputError: as :func:`probe`, invalid widget values, or ``skip_first_frames`` past the end.
    """
    selection = Selection.from_widgets(frame_load_cap, skip_first_frames, select_every_nth, force_rate)
    file, container = _open(path)
    with container:
        return _check_first_frames(_probe_open(file, container), selection, _count_stated(container))


def _zero_frames_error(selection: Selection, decoded: int) -> InputError:
    if decoded == 0:
        return input_error("video", "a video with at least one decodable frame", "no frames decoded",
                           "check the file plays in a video player; re-encode it if not")
    return input_error("skip_first_frames", f"fewer than the {decoded} frames the video has",
                       selection.skip_first_frames, f"set skip_first_frames below {decoded}")


def _open_load(path: str | os.PathLike, frame_load_cap: int, skip_first_frames: int, select_every_nth: int,
               force_rate: float, custom_width: int, custom_height: int, size_multiple: int):
    """Check a load's widgets and open its video (arguments of :func:`load_frames`).

    Returns:
        ``(selection, container, info, plan, expected_count)``; the open container is the caller's to close
        (it is closed here when a check fails).
    """
    selection = Selection.from_widgets(frame_load_cap, skip_first_frames, select_every_nth, force_rate)
    file, container = _open(path)
    try:
        info = replace(_probe_open(file, container), load_widgets=(
            ("frame_load_cap", frame_load_cap), ("skip_first_frames", skip_first_frames),
            ("select_every_nth", select_every_nth), ("force_rate", float(force_rate)),
            ("custom_width", custom_width), ("custom_height", custom_height), ("size_multiple", size_multiple)))
        plan = plan_size(info.source_width, info.source_height, custom_width, custom_height, size_multiple,
                         info.rotation)
        expected = _check_first_frames(info, selection, _count_stated(container))
    except BaseException:
        container.close()
        raise
    return selection, container, info, plan, expected


def iter_frames(path: str | os.PathLike, frame_load_cap: int = 0, skip_first_frames: int = 0,
                select_every_nth: int = 1, force_rate: float = 0.0, custom_width: int = 0,
                custom_height: int = 0, size_multiple: int = 8) -> Iterator[np.ndarray]:
    """Stream the selected frames of a video as RGB uint8 arrays ``[H,W,3]`` (one in memory at a time).

    Arguments are those of :func:`load_frames`; inputs are checked when this is called, not at
    the first ``next()``.

    Yields:
        ``[H,W,3]`` uint8 RGB frames (the loaded size; each array is the caller's to keep).

    Raises:
        InputError: as :func:`load_frames` (at the call; a selection that turns out empty while
            decoding raises at the end of the iteration).
    """
    selection, container, info, plan, _ = _open_load(path, frame_load_cap, skip_first_frames, select_every_nth,
                                                     force_rate, custom_width, custom_height, size_multiple)

    def generate() -> Iterator[np.ndarray]:
        with container:
            decoder, frames = _selected(container, info.source_fps, selection, plan)
            count = 0
            for _, pixels in frames:
                count += 1
                yield np.ascontiguousarray(pixels)
            if count == 0:
                raise _zero_frames_error(selection, decoder.decoded)

    return generate()


def to_float(pixels: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 RGB ``[...,3]`` → float32 in [0, 1], the loader's rule (``uint8 / 255`` in float32, as core
    LoadVideo); ``out`` receives the result when given. Streaming readers use it to get the pixels of
    :func:`load_frames` bit for bit."""
    return np.divide(pixels, _UINT8_MAX, out=out, dtype=np.float32)


def _convert_into(frame, plan: SizePlan, row: np.ndarray) -> None:
    """RGB-convert, resize/crop and scale one decoded frame into its float32 row ``[H,W,3]``."""
    to_float(plan.apply(frame.to_ndarray(format="rgb24")), out=row)


class _FrameBatch:
    """The IMAGE batch being filled: float32 ``[capacity,H,W,3]``, grown if the estimate was short.

    Decoded frames are converted on :data:`CONVERT_THREADS` worker threads while the caller keeps
    decoding (PyAV, OpenCV and NumPy release the GIL): each is converted to RGB, resized/cropped,
    and divided by 255 straight into its row (``numpy.divide`` with a float32 result, the same
    values as core LoadVideo's ``uint8 / 255.0``).
    """

    def __init__(self, capacity: int, plan: SizePlan, fixes: list[str]) -> None:
        self.plan, self.fixes = plan, fixes
        self.width, self.height = plan.output
        self.item_bytes = self.height * self.width * 3 * 4
        self.images = self._allocate(max(capacity, 1), 0)
        self.rows = self.images.numpy()
        self.count = 0
        self.pool = ThreadPoolExecutor(CONVERT_THREADS, thread_name_prefix="rerender-load")
        self.pending: deque = deque()

    def _allocate(self, capacity: int, keeping: int) -> torch.Tensor:
        check_allocation(self.item_bytes, capacity + keeping, "decoded frames (float32 IMAGE batch)",
                         "frame_load_cap", self.fixes)
        return torch.empty((capacity, self.height, self.width, 3), dtype=torch.float32)

    def add(self, frame, repeat: bool = False) -> None:
        """Schedule the conversion of one decoded ``av.VideoFrame`` into the next row.

        ``repeat`` (the same frame again, from ``force_rate``) copies the previous row instead:
        one frame object must not be converted on two threads at once.
        """
        if self.count == self.images.shape[0]:
            self._drain()
            grown = self._allocate(self.count + max(self.count // 4, GROW_STEP), self.count)
            grown[:self.count] = self.images
            self.images, self.rows = grown, grown.numpy()
        if repeat and self.count:
            if self.pending:
                self.pending[-1].result()
            np.copyto(self.rows[self.count], self.rows[self.count - 1])
        else:
            self.pending.append(self.pool.submit(_convert_into, frame, self.plan, self.rows[self.count]))
        self.count += 1
        while len(self.pending) > MAX_PENDING:
            self.pending.popleft().result()

    def _drain(self) -> None:
        while self.pending:
            self.pending.popleft().result()

    def close(self) -> None:
        """Wait for the workers (re-raising their errors) and stop them."""
        try:
            self._drain()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def result(self) -> torch.Tensor:
        """The filled batch ``[count,H,W,3]`` (call after :meth:`close`)."""
        if self.count == self.images.shape[0]:
            return self.images
        if self.count >= 0.9 * self.images.shape[0]:
            return self.images[:self.count]
        return self.images[:self.count].clone()


def _memory_fixes(count: int, selection: Selection, plan: SizePlan) -> list[str]:
    width, height = plan.output
    return [f"set frame_load_cap to load fewer than {count} frames and process the video in parts "
            "(skip_first_frames + frame_load_cap)",
            f"raise select_every_nth (now {selection.select_every_nth})",
            "set a lower force_rate",
            f"set custom_width / custom_height below {width}x{height}"]


def loaded_info(info: VideoInfo, selection: Selection, plan: SizePlan, indices: list[int],
                start_time: Fraction | None, decoded: int, reached_end: bool) -> VideoInfo:
    """The :class:`VideoInfo` of a finished load: the rules every reader of a selection applies once
    the decoder has run (an empty selection is an error; a cap past the end loads the frames there are,
    with a warning on the log).

    Args:
        info: the probed source info (:func:`probe`).
        selection: the selection widgets.
        plan: the size plan (gives the output size).
        indices: the source index of every selected frame.
        start_time: the time of the first selected slot, seconds.
        decoded: frames the decoder gave; reached_end: whether it read the stream to its end (then
            ``decoded`` is the exact source frame count).

    Raises:
        InputError: no frame selected.
    """
    if not indices:
        raise _zero_frames_error(selection, decoded)
    if selection.frame_load_cap and len(indices) < selection.frame_load_cap:
        LOG.warning("video: frame_load_cap %d is past the end of %s: loaded the %d frames there are",
                    selection.frame_load_cap, Path(info.source_path).name, len(indices))
    width, height = plan.output
    source_count = decoded if reached_end else info.source_frame_count
    return replace(info, source_frame_count=source_count, loaded_fps=selection.loaded_fps(info.source_fps),
                   output_width=width, output_height=height, frame_indices=tuple(indices),
                   start_time=start_time)


def load_frames(path: str | os.PathLike, frame_load_cap: int = 0, skip_first_frames: int = 0,
                select_every_nth: int = 1, force_rate: float = 0.0, custom_width: int = 0,
                custom_height: int = 0, size_multiple: int = 8, progress: Progress | None = None) -> LoadedVideo:
    """Load the selected frames of a video as an IMAGE batch, with fps, VideoInfo and audio.

    Args:
        path: the video file.
        frame_load_cap: load at most this many frames; 0 loads all. A cap past the end loads the
            frames there are, with a warning on the log (as VideoHelperSuite).
        skip_first_frames: frames skipped at the start (counted at ``force_rate`` when set).
        select_every_nth: keep every n-th frame after the skipped ones (1 = all).
        force_rate: resample to this many fps by timestamps (nearest frame); 0 keeps the rate.
        custom_width, custom_height: requested size in pixels; 0 keeps the aspect ratio (both 0:
            source size).
        size_multiple: output width and height are multiples of this (crop, see
            :mod:`videoio.sizing`).
        progress: optional ``progress(done_frames)`` callback, called per loaded frame.

    Returns:
        :class:`LoadedVideo`: ``images`` ``[N,H,W,3]`` float32 in [0, 1], ``fps`` (float),
        ``info`` (:class:`VideoInfo`, exact Fractions) and ``audio`` (AUDIO dict or ``None``).

    Raises:
        InputError: missing file; a file that is not a video; invalid widget values; a selection
            with no frames (``skip_first_frames`` past the end); a file cut short or damaged
            (the message names the last frame decoded); ``size_multiple`` larger than the
            frame; not enough memory for the batch (the message says how many frames fit and
            which widgets to change).
    """
    selection, container, info, plan, expected = _open_load(path, frame_load_cap, skip_first_frames, select_every_nth,
                                                            force_rate, custom_width, custom_height, size_multiple)
    with container:
        batch = _FrameBatch(expected, plan, _memory_fixes(expected, selection, plan))
        decoder = _Decoder(container, info.source_fps)
        slots = selection.slots(decoder, info.source_fps)
        indices: list[int] = []
        start_time = None
        try:
            for slot in slots:
                if start_time is None:
                    start_time = slot.time
                batch.add(slot.payload, repeat=bool(indices) and indices[-1] == slot.source_index)
                indices.append(slot.source_index)
                if progress is not None:
                    progress(len(indices))
        finally:
            slots.close()
            batch.close()
        images = batch.result()
    info = loaded_info(info, selection, plan, indices, start_time, decoder.decoded, decoder.reached_end)
    audio = read_audio(info.source_path, info.audio, *info.audio_span) if info.audio else None
    return LoadedVideo(images, float(info.loaded_fps), info, audio)
