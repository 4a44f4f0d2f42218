"""Videos as frame streams for the metrics: in-memory IMAGE batches or files read frame by frame.

A :class:`FrameStream` knows its name (the input it came from, for error messages), its frame size and
its expected frame count before any frame is read, so that videos of different sizes or lengths are
refused before the long work starts (:func:`check_matching`). Files stream through
:func:`videoio.reader.iter_frames` (one decoded frame in memory at a time), so a long clip is measured
in bounded memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import torch

from ..common.checks import check_image_batch
from ..common.errors import input_error
from ..videoio.reader import estimate_frame_count, iter_frames, probe
from ..videoio.sizing import plan_size


@dataclass
class FrameStream:
    """Frames of one video, yielded one at a time as ``[H,W,3]`` float32 tensors in [0, 1].

    Attributes:
        name: the input the frames come from (``"output"``, ``"source"``, ``"reference"``).
        size: ``(H, W)`` in pixels.
        count: the expected number of frames (exact for batches; from the container header for files,
            checked again when the file ends).
        frames: the iterator.
    """

    name: str
    size: tuple[int, int]
    count: int
    frames: Iterator[torch.Tensor]

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self.frames


def from_images(images: torch.Tensor, name: str) -> FrameStream:
    """A stream over an IMAGE batch ``[N,H,W,3]`` (no copy).

    Raises:
        InputError: not an IMAGE batch, or an empty one.

    Example:
        >>> stream = from_images(torch.zeros(4, 8, 6, 3), "output"); stream.size, stream.count
        ((8, 6), 4)
    """
    images = check_image_batch(images, name)
    if images.shape[0] == 0:
        raise input_error(name, "at least one frame", "an empty batch", "connect the frames to measure")
    frames = (frame.to("cpu", torch.float32) for frame in images)
    return FrameStream(name, (int(images.shape[1]), int(images.shape[2])), int(images.shape[0]), frames)


def from_file(path: str | os.PathLike, name: str, frame_load_cap: int = 0, skip_first_frames: int = 0,
              width: int = 0, height: int = 0) -> FrameStream:
    """A stream over a video file, decoded frame by frame (:func:`videoio.reader.iter_frames`).

    Args:
        path: the video file.
        name: the input's name for messages (e.g. the command-line option).
        frame_load_cap: at most this many frames (0 = all).
        skip_first_frames: frames skipped at the start.
        width, height: frame size in pixels (0 = the file's own); a differing size is resized to cover
            and centre-cropped, as Rerender Load Video does.

    Raises:
        InputError: a missing or unreadable file, a selection past the end.
    """
    info = probe(path)
    plan = plan_size(info.source_width, info.source_height, width, height, 1, info.rotation)
    count = estimate_frame_count(path, frame_load_cap, skip_first_frames)
    frames = iter_frames(path, frame_load_cap, skip_first_frames, custom_width=width, custom_height=height,
                         size_multiple=1)
    tensors = (torch.from_numpy(frame).float().div_(255.0) for frame in frames)
    return FrameStream(name, (plan.output[1], plan.output[0]), count, tensors)


def check_matching(first: FrameStream, other: FrameStream) -> None:
    """Raise if two streams differ in frame size or frame count; the message names both.

    Raises:
        InputError: naming ``other`` and ``first`` with both sizes (W×H) or both counts.

    Example:
        >>> check_matching(from_images(torch.zeros(3, 8, 8, 3), "output"),
        ...                from_images(torch.zeros(2, 8, 8, 3), "source"))
        Traceback (most recent call last):
        ...
        rerender_video.common.errors.InputError: source: Expected 3 frames, as many as output has, Got: 2 frames...
    """
    if first.size != other.size:
        raise input_error(other.name, f"frames of {first.name}'s size ({first.size[1]}x{first.size[0]}, W×H)",
                          f"{other.size[1]}x{other.size[0]}",
                          [f"load {other.name} at {first.size[1]}x{first.size[0]}",
                           f"resize {first.name} to {other.size[1]}x{other.size[0]}"])
    if first.count != other.count:
        raise input_error(other.name, f"{first.count} frames, as many as {first.name} has",
                          f"{other.count} frames",
                          ["give both the same span of frames (the same frame_load_cap and skip_first_frames; "
                           "on the command line --frames and --skip)",
                           f"cut {first.name} or {other.name} to the shorter length"])


def zip_streams(streams: list[FrameStream]) -> Iterator[tuple[torch.Tensor, ...]]:
    """Frames of several streams side by side; raise if one ends before the others.

    Raises:
        InputError: a stream ended early (its container header over-stated its length), naming both.
    """
    iterators = [iter(stream) for stream in streams]
    index = 0
    while True:
        frames = [next(iterator, None) for iterator in iterators]
        ended = [stream for stream, frame in zip(streams, frames) if frame is None]
        if len(ended) == len(streams):
            return
        if ended:
            running = next(stream for stream, frame in zip(streams, frames) if frame is not None)
            raise input_error(ended[0].name, f"as many frames as {running.name}",
                              f"{index} frames (more in {running.name})",
                              "give both the same span of frames (frame_load_cap / skip_first_frames; --frames / --skip)")
        yield tuple(frames)
        index += 1
