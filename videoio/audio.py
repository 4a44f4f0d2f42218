"""Audio for the loaded span: decode it to ComfyUI's AUDIO, stream-copy it, or encode a waveform.

* :func:`read_audio` decodes the source's audio for ``[start, end)`` seconds (the span of the
  loaded frames) to AUDIO ``{"waveform": [1,C,S] float32, "sample_rate": int}``. Audio that starts
  after ``start`` is preceded by silence so sample 0 stays in sync with frame 0.
* :class:`AudioCopy` copies the source's compressed audio packets into the output container
  without re-encoding (stream copy), trimmed to the packets nearest to the span boundaries: the
  copied audio starts within half an audio frame of the first video frame (an AAC frame of 1024
  samples is 21 ms at 48 kHz) and its length matches the span within one audio frame.
* :class:`AudioEncode` encodes an AUDIO waveform (or a source whose codec MP4 cannot hold, such
  as PCM) to AAC, cut to the video's duration like core SaveVideo does.

Both writers mux interleaved with the video: the save loop calls ``mux_until(seconds)`` after each
video frame and ``finish(video_seconds)`` at the end.
"""

from __future__ import annotations

import logging
import math
from fractions import Fraction
from typing import Mapping

import av
import numpy as np
import torch

from ..common.errors import input_error
from .info import AudioTrack

LOG = logging.getLogger(__name__)

#: Audio codecs the MP4 muxer accepts as they are; anything else is re-encoded to AAC.
MP4_COPYABLE_CODECS = frozenset({"aac", "mp3", "ac3", "eac3", "opus", "flac", "alac"})
#: Channel layouts by channel count for the AAC encoder.
LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 8: "7.1"}
AAC_BIT_RATE = 192_000


def audio_track(container: av.container.InputContainer) -> AudioTrack | None:
    """The first audio stream of an open container as an :class:`AudioTrack`, or ``None``."""
    if not container.streams.audio:
        return None
    stream = container.streams.audio[0]
    context = stream.codec_context
    return AudioTrack(stream.index, context.codec.canonical_name, int(context.sample_rate or 0),
                      int(context.channels or 0))


def read_audio(path: str, track: AudioTrack, start: Fraction, end: Fraction | None = None) -> dict | None:
    """Decode the audio of ``[start, end)`` seconds (source clock) to a ComfyUI AUDIO dict.

    Args:
        path: the video file.
        track: its audio stream (:attr:`VideoInfo.audio`).
        start: span start in seconds (the first loaded frame's time).
        end: span end in seconds, or ``None`` for the end of the stream.

    Returns:
        ``{"waveform": [1,C,S] float32, "sample_rate": int}``, or ``None`` if the span holds no
        audio samples (e.g. the audio track ends before the span starts).
    """
    with av.open(str(path)) as container:
        stream = container.streams[track.stream_index]
        rate = int(stream.codec_context.sample_rate)
        first_sample = round(start * rate)
        last_sample = None if end is None else round(end * rate)
        resampler = None
        chunks: list[np.ndarray] = []
        position = None  # absolute sample index of the next decoded sample
        collected = 0
        for frame in _decoded(container, stream):
            if resampler is None:
                resampler = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=rate)
            if position is None:
                position = round(Fraction(frame.pts) * stream.time_base * rate) if frame.pts is not None else 0
                silence = (position if last_sample is None else min(position, last_sample)) - first_sample
                if silence > 0:  # audio starts late: keep frame 0 and sample 0 in sync
                    chunks.append(np.zeros((len(frame.layout.channels), silence), np.float32))
                    collected = silence
            for converted in resampler.resample(frame):
                samples = converted.to_ndarray()
                begin, stop = position, position + samples.shape[1]
                position = stop
                low = max(begin, first_sample)
                high = stop if last_sample is None else min(stop, last_sample)
                if high > low:
                    chunks.append(samples[:, low - begin:high - begin])
                    collected += high - low
            if last_sample is not None and position >= last_sample:
                break
    if not chunks or collected == 0:
        return None
    waveform = torch.from_numpy(np.ascontiguousarray(np.concatenate(chunks, axis=1), dtype=np.float32))
    return {"waveform": waveform.unsqueeze(0), "sample_rate": rate}


def _decoded(container, stream):
    """Decoded audio frames; a packet the decoder rejects is skipped (as ffmpeg does) and logged."""
    skipped = 0
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.error.InvalidDataError:
            skipped += 1
            continue
        yield from frames
    if skipped:
        LOG.info("audio: skipped %d undecodable %s packet(s) of %s", skipped, stream.codec_context.name,
                 container.name)


def check_audio(audio: object, name: str = "audio") -> tuple[torch.Tensor, int]:
    """Check a ComfyUI AUDIO value and return ``(waveform [C,S] float32 CPU, sample_rate)``.

    Raises:
        InputError: not a mapping with ``waveform`` ``[1,C,S]`` / ``[C,S]`` and a positive
            ``sample_rate``.
    """
    if not isinstance(audio, Mapping) and not hasattr(audio, "__getitem__"):
        raise input_error(name, "an AUDIO dict {'waveform': [1,C,S], 'sample_rate': int}", type(audio).__name__,
                          "connect an AUDIO output (e.g. Rerender Load Video's audio)")
    try:
        waveform, rate = audio["waveform"], int(audio["sample_rate"])
    except (KeyError, TypeError, ValueError) as error:
        raise input_error(name, "an AUDIO dict with 'waveform' and 'sample_rate'", repr(error),
                          "connect an AUDIO output (e.g. Rerender Load Video's audio)") from None
    if not isinstance(waveform, torch.Tensor) or waveform.ndim not in (2, 3) or rate <= 0:
        raise input_error(name, "a waveform [1,C,S] and a sample rate > 0",
                          f"{getattr(waveform, 'shape', type(waveform).__name__)} at {rate} Hz",
                          "connect an AUDIO output (e.g. Rerender Load Video's audio)")
    if waveform.ndim == 3:
        waveform = waveform[0]
    if waveform.shape[0] not in LAYOUTS:
        raise input_error(name, f"1 to 8 channels ({sorted(LAYOUTS)})", waveform.shape[0],
                          "mix the audio down to stereo first")
    return waveform.detach().to("cpu", torch.float32).contiguous(), rate


class AudioEncode:
    """Encode a waveform to AAC into ``output``, muxed as the video progresses.

    Args:
        output: the output container (no packet muxed yet).
        waveform: ``[C,S]`` float32 samples in [-1, 1].
        sample_rate: samples per second.
    """

    def __init__(self, output: av.container.OutputContainer, waveform: torch.Tensor, sample_rate: int) -> None:
        self.samples = waveform.numpy()
        self.rate = int(sample_rate)
        self.stream = output.add_stream("aac", rate=self.rate)
        self.stream.layout = LAYOUTS[self.samples.shape[0]]
        self.stream.bit_rate = AAC_BIT_RATE
        self.output = output
        self.sent = 0

    def mux_until(self, seconds: Fraction) -> None:
        """Encode and mux samples up to ``seconds`` (output clock)."""
        self._send(min(self.samples.shape[1], math.ceil(seconds * self.rate)))

    def finish(self, seconds: Fraction) -> None:
        """Encode up to the video's end ``seconds`` (output clock), then flush the encoder."""
        self.mux_until(seconds)
        self.output.mux(self.stream.encode(None))

    def _send(self, stop: int) -> None:
        if stop <= self.sent:
            return
        chunk = np.ascontiguousarray(self.samples[:, self.sent:stop])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=self.stream.layout.name)
        frame.sample_rate = self.rate
        frame.pts = self.sent
        frame.time_base = Fraction(1, self.rate)
        self.output.mux(self.stream.encode(frame))
        self.sent = stop


class AudioCopy:
    """Stream-copy the source audio packets of ``[start, end)`` (source clock) into ``output``.

    Packets are chosen by nearest boundary: the first one kept is the one whose start is nearest
    to ``start``, and a packet is kept while more than half of it lies before the end. Timestamps
    are shifted so the first kept packet starts at output time 0.

    Args:
        output: the output container (no packet muxed yet).
        path: the source video file.
        track: its audio stream.
        start, end: the span in seconds on the source clock (:attr:`VideoInfo.audio_span`).
    """

    def __init__(self, output: av.container.OutputContainer, path: str, track: AudioTrack,
                 start: Fraction, end: Fraction) -> None:
        self.source = av.open(str(path))
        self.source_stream = self.source.streams[track.stream_index]
        self.stream = output.add_stream_from_template(self.source_stream, opaque=True)
        self.output = output
        self.start, self.end = Fraction(start), Fraction(end)
        self.time_base = self.source_stream.time_base
        default = self.source_stream.codec_context.frame_size or 1024
        self.default_duration = Fraction(default, int(self.source_stream.codec_context.sample_rate or 48000))
        self.packets = self.source.demux(self.source_stream)
        self.pending = None
        self.offset: int | None = None
        self.offset_time = Fraction(0)
        self.copied = 0

    def mux_until(self, seconds: Fraction, end: Fraction | None = None) -> None:
        """Mux the span's packets that start before ``seconds`` on the output clock.

        ``end`` (source clock) cuts the span shorter than :attr:`end`, e.g. at the video's end.
        """
        limit = self.end if end is None else min(self.end, end)
        while (packet := self._peek()) is not None:
            begin, length = self._timing(packet)
            if begin + length / 2 <= self.start:  # mostly before the span: drop
                self.pending = None
                continue
            if begin + length / 2 > limit:  # mostly after the end: stop (kept for a later call)
                return
            if self.offset is None:
                self.offset, self.offset_time = packet.pts, begin
            if begin - self.offset_time >= seconds:  # later than the video muxed so far
                return
            self.pending = None
            packet.dts = packet.pts - self.offset if packet.dts is None else packet.dts - self.offset
            packet.pts -= self.offset
            packet.stream = self.stream
            self.output.mux(packet)
            self.copied += 1

    def finish(self, seconds: Fraction) -> None:
        """Mux the rest of the span, cut at the video's end ``seconds`` (output clock)."""
        self.mux_until(Fraction(10**9), end=self.start + seconds)
        self.close()

    def close(self) -> None:
        """Close the source file."""
        self.source.close()

    def _peek(self):
        if self.pending is None:
            for packet in self.packets:
                if packet.pts is not None and packet.size:
                    self.pending = packet
                    break
        return self.pending

    def _timing(self, packet) -> tuple[Fraction, Fraction]:
        begin = Fraction(packet.pts) * self.time_base
        length = Fraction(packet.duration) * self.time_base if packet.duration else self.default_duration
        return begin, length
