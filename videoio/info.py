"""The VIDEO_INFO object: what was loaded from which video, with exact rates and the audio span.

Rerender Load Video returns it next to the frames; Rerender Save Video reads it to copy the
source's audio track for exactly the loaded span (stream copy, no re-encode). Rates are
:class:`fractions.Fraction` (see :mod:`videoio.rate`); times are seconds on the source
container's clock, so ``start_time`` of a clip whose first frame has pts 0 is 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Sequence


@dataclass(frozen=True)
class AudioTrack:
    """The source's first audio stream, as needed to decode or stream-copy it.

    Attributes:
        stream_index: the stream's index in the container (``container.streams[stream_index]``).
        codec: codec name (``"aac"``, ``"mp3"``, ``"pcm_s16le"``, …).
        sample_rate: samples per second.
        channels: channel count.
    """

    stream_index: int
    codec: str
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class VideoInfo:
    """Source facts and the selection of one load (the VIDEO_INFO socket type).

    Attributes:
        source_path: absolute path of the video file.
        source_fps: the source's frame rate, exact (e.g. ``Fraction(24000, 1001)``).
        source_frame_count: frames in the source: exact after a load that decoded to the end,
            else as the container states it (estimated from duration × fps when it does not).
        duration: source duration in seconds.
        source_width: source frame width in pixels, upright (after ``rotation``).
        source_height: source frame height in pixels, upright.
        loaded_fps: rate of the loaded frames: ``force_rate`` (or ``source_fps``) divided by
            ``select_every_nth``.
        output_width: width of the loaded frames in pixels (after resize and crop).
        output_height: height of the loaded frames in pixels.
        frame_indices: for each loaded frame, the 0-based index of the source frame it shows
            (decode order; repeats when ``force_rate`` is above the source rate).
        start_time: time of the first loaded frame on the source clock, in seconds. The loaded
            clip covers ``[start_time, start_time + loaded_duration)``; that is the audio span.
        video_codec: the source's video codec name.
        audio: the source's audio stream, or ``None`` for a silent video.
        rotation: counter-clockwise turn (degrees, multiple of 90) applied to the decoded frames to
            show them upright, from the container's display matrix (phone videos); 0 for most.
        load_widgets: ``(name, value)`` pairs of the load widgets (``frame_load_cap`` … ``size_multiple``,
            the arguments of :func:`videoio.reader.load_frames`) that reproduce this load, e.g. to index the
            same frames for the segment engine (:func:`videoio.frame_index.index_for_info`).
    """

    source_path: str
    source_fps: Fraction
    source_frame_count: int
    duration: float
    source_width: int
    source_height: int
    loaded_fps: Fraction
    output_width: int
    output_height: int
    frame_indices: Sequence[int] = field(default_factory=tuple)
    start_time: Fraction = Fraction(0)
    video_codec: str = ""
    audio: AudioTrack | None = None
    rotation: int = 0
    load_widgets: tuple[tuple[str, object], ...] = ()

    @property
    def frame_count(self) -> int:
        """Number of loaded frames."""
        return len(self.frame_indices)

    @property
    def loaded_duration(self) -> Fraction:
        """Duration of the loaded clip in seconds: ``frame_count / loaded_fps``."""
        return Fraction(self.frame_count) / self.loaded_fps

    @property
    def audio_span(self) -> tuple[Fraction, Fraction]:
        """``(start, end)`` in seconds on the source clock of the audio matching the loaded frames."""
        return self.start_time, self.start_time + self.loaded_duration

    @property
    def source_size(self) -> tuple[int, int]:
        """``(H, W)`` of the source frames in pixels (the order of ``FlowPairs.frame_size``)."""
        return self.source_height, self.source_width

    @property
    def output_size(self) -> tuple[int, int]:
        """``(H, W)`` of the loaded frames in pixels."""
        return self.output_height, self.output_width

    @property
    def has_audio(self) -> bool:
        """True if the source has an audio stream."""
        return self.audio is not None

    def as_dict(self) -> dict:
        """Plain values with VideoHelperSuite's VHS_VIDEOINFO keys plus this pack's extras.

        Example:
            >>> info = VideoInfo("a.mp4", Fraction(24000, 1001), 270, 11.26, 720, 528,
            ...                  Fraction(24000, 1001), 720, 528, (0, 1, 2))
            >>> info.as_dict()["loaded_frame_count"], round(info.as_dict()["loaded_fps"], 3)
            (3, 23.976)
        """
        values = asdict(self)
        values["frame_indices"] = list(self.frame_indices)
        values["load_widgets"] = dict(self.load_widgets)
        values.update({
            "source_fps": float(self.source_fps), "source_fps_fraction": str(self.source_fps),
            "loaded_fps": float(self.loaded_fps), "loaded_fps_fraction": str(self.loaded_fps),
            "source_duration": self.duration, "start_time": float(self.start_time),
            "loaded_frame_count": self.frame_count, "loaded_duration": float(self.loaded_duration),
            "loaded_width": self.output_width, "loaded_height": self.output_height,
        })
        return values

    def describe(self) -> str:
        """One line for logs and node info.

        Example:
            >>> VideoInfo("/v/a.mp4", Fraction(25), 100, 4.0, 640, 360, Fraction(25), 640, 360,
            ...           range(10)).describe()
            'a.mp4: 10 of 100 frames at 640x360, 25 fps (source 640x360 at 25 fps), no audio'
        """
        name = self.source_path.replace("\\", "/").rsplit("/", 1)[-1]
        audio = f"audio {self.audio.codec} {self.audio.sample_rate} Hz" if self.audio else "no audio"
        return (f"{name}: {self.frame_count} of {self.source_frame_count} frames at "
                f"{self.output_width}x{self.output_height}, {_rate_text(self.loaded_fps)} fps (source "
                f"{self.source_width}x{self.source_height} at {_rate_text(self.source_fps)} fps), {audio}")


def _rate_text(rate: Fraction) -> str:
    return str(rate.numerator) if rate.denominator == 1 else f"{rate} (= {float(rate):.3f})"
