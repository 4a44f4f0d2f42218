"""The keyframe stage of a long video without holding the whole clip: choose keyframes while streaming the
source once, and load just the keyframes (issue 12, item 4).

:func:`select_keyframes` applies the rules of Rerender Keyframe Selection (:mod:`common.keyframes`,
:mod:`common.scene_cuts`) to the frames a load selects, decoding them one at a time from the file
(:func:`videoio.frame_index.iter_read_frames`): the same keyframes as on the loaded IMAGE batch, since the
frames are the same pixels. :func:`load_keyframes` reads just the keyframes (the frames of the render
stage) as an IMAGE batch.

Example:
    >>> index = index_video("clip.mp4", custom_width=256)                    # doctest: +SKIP
    >>> keyframes = select_keyframes(index, "scene_cuts", interval=12)       # doctest: +SKIP
    >>> load_keyframes(index, keyframes).shape                               # doctest: +SKIP
    torch.Size([23, 144, 256, 3])
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch

from ..common import keyframes as rules
from ..common.errors import input_error
from ..common.keyframes import Keyframes
from ..common.scene_cuts import DEFAULT_THRESHOLD, detect_scene_cuts
from ..videoio.audio import read_audio
from ..videoio.frame_index import FrameIndex, index_video, iter_read_frames, read_frames
from ..videoio.reader import LoadedVideo, to_float

#: Modes that need no look at the frames, or one streaming pass.
STREAMING_MODES = ("uniform", "explicit", "scene_cuts")


def iter_images(index: FrameIndex, progress: Callable[[int], None] | None = None) -> Iterator[torch.Tensor]:
    """Every loaded frame as IMAGE ``[H,W,3]`` float32, one at a time, equal to the rows of the loaded batch."""
    for done, pixels in enumerate(iter_read_frames(index, range(index.frame_count)), start=1):
        if progress is not None:
            progress(done)
        yield torch.from_numpy(to_float(pixels))


def select_keyframes(index: FrameIndex, mode: str, interval: int = 10, explicit: str = "",
                     cut_threshold: float = DEFAULT_THRESHOLD,
                     progress: Callable[[int], None] | None = None) -> Keyframes:
    """Keyframes of the frames ``index`` loads, as Rerender Keyframe Selection chooses them on the loaded batch.

    Args:
        index: the load (:func:`videoio.frame_index.index_video` or :func:`~videoio.frame_index.index_for_info`).
        mode: ``"uniform"`` (every K-th frame), ``"explicit"`` (the list ``explicit``) or ``"scene_cuts"``
            (uniform within each shot; one streaming decoding pass over the frames).
        interval: K.
        explicit: comma-separated frame numbers (``explicit`` mode).
        cut_threshold: grey-level difference of a cut (:func:`common.scene_cuts.detect_scene_cuts`).
        progress: ``progress(decoded_frames)`` during the scene-cut pass.

    Returns:
        :class:`~common.keyframes.Keyframes` of ``index.frame_count`` frames.

    Raises:
        InputError: a mode that needs the whole batch (``adaptive``), and the errors of the rules.
    """
    count = index.frame_count
    if mode == "explicit":
        return rules.parse_list(explicit, count)
    if mode == "uniform":
        return rules.uniform(count, interval)
    if mode == "scene_cuts":
        return rules.scene_aware(count, interval, detect_scene_cuts(iter_images(index, progress), cut_threshold))
    raise input_error("mode", f"one of {', '.join(STREAMING_MODES)} when selecting from the video file", repr(mode),
                      ["connect the loaded frames for adaptive mode", "use scene_cuts"])


def load_keyframes(index: FrameIndex, keyframes: Keyframes) -> torch.Tensor:
    """Just the keyframes of a load as IMAGE ``[M,H,W,3]`` float32, row ``i`` = frame ``keyframes.indices[i]``
    exactly as Load Video gives it.

    Raises:
        InputError: KEYFRAMES of another frame count than the load.
    """
    if not isinstance(keyframes, Keyframes) or keyframes.frame_count != index.frame_count:
        got = f"KEYFRAMES for {keyframes.frame_count} frames" if isinstance(keyframes, Keyframes) else \
            type(keyframes).__name__
        raise input_error("keyframes", f"KEYFRAMES for the {index.frame_count} frames this load selects", got,
                          "connect Rerender Keyframe Selection made from the same video and load widgets")
    return torch.from_numpy(to_float(read_frames(index, keyframes.indices)))


def load_video_keyframes(path, keyframes: Keyframes, progress: Callable[[int], None] | None = None,
                         **widgets) -> LoadedVideo:
    """Load Video with its ``keyframes`` input: just the keyframes of the load ``widgets`` select.

    Args:
        path: the video file.
        keyframes: KEYFRAMES of that load (e.g. :func:`select_keyframes`).
        progress: ``progress(decoded_frames)`` during the indexing pass (first use of the file only).
        widgets: the load widgets of :func:`videoio.reader.load_frames`.

    Returns:
        :class:`~videoio.reader.LoadedVideo` whose ``images`` are the ``M`` keyframes ``[M,H,W,3]``; ``info``,
        ``fps`` and ``audio`` are those of the whole load (for Save Video and Rerender Propagate to Video).

    Raises:
        InputError: as :func:`videoio.frame_index.index_video` and :func:`load_keyframes`.
    """
    index = index_video(path, progress=progress, **widgets)
    images = load_keyframes(index, keyframes)
    info = index.info
    audio = read_audio(info.source_path, info.audio, *info.audio_span) if info.audio else None
    return LoadedVideo(images, float(info.loaded_fps), info, audio)
