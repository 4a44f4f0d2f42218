"""Write H.264 MP4 files with PyAV: exact frame rate, optional audio, atomic.

:func:`save_video` encodes frames with libx264 (``yuv420p``, BT.709 matrix and tags, CRF rate
control) at an exact :class:`~fractions.Fraction` rate (:func:`videoio.rate.exact_fps`, so
23.976… stays 24000/1001), and adds audio in one of two ways:

* ``audio_source`` (a :class:`~videoio.info.VideoInfo` from a load): the source's audio packets
  for the loaded span are **stream-copied** (no re-encode, :class:`videoio.audio.AudioCopy`).
  Only when MP4 cannot hold the source codec (e.g. PCM from AVI/MOV) is that span decoded and
  re-encoded to AAC; a log line says so.
* ``audio`` (a ComfyUI AUDIO dict): encoded to AAC 192 kb/s, cut to the video's duration.

If both are given, ``audio_source`` wins when its source has an audio track.

The file is written under a temporary name in the target folder and renamed when complete
(:func:`common.cache.atomic_path`): an exception while writing, e.g. from a frame generator,
leaves no partial file, and a partial file left by a killed run is removed by the next save of the
same path. An unwritable folder or a full disk raises :class:`~common.errors.OutputError`
(where, why, the fix). ``yuv420p`` needs even sizes: odd widths/heights are padded by one pixel
(the last row/column repeated), with a warning. Frames holding NaN or infinity are refused.

Reproducible files: the bytes written are a function of the frames, the settings (fps, crf,
preset, audio, metadata) and the PyAV build (its FFmpeg and x264 versions), on any machine:
RGB → Y'CbCr 4:2:0 is integer arithmetic here (:func:`rgb_to_yuv420`, not FFmpeg's swscale,
whose SIMD paths differ between CPUs), and x264 runs with a fixed number of frame threads
(:data:`X264_THREADS`; by default x264 cuts each frame into one slice per CPU core, so the file
depended on the machine and on the process's CPU affinity). AAC-encoded audio is made by FFmpeg's
floating-point encoder and is reproducible on the same machine only; copied audio is exact.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

import av
import numpy as np
import torch

from ..common.cache import atomic_path
from ..common.errors import InputError, RerenderError, input_error, write_error
from .audio import MP4_COPYABLE_CODECS, AudioCopy, AudioEncode, check_audio, read_audio
from .info import VideoInfo
from .rate import exact_fps

LOG = logging.getLogger(__name__)

#: File suffixes :func:`save_video` writes (PyAV picks the container from the suffix).
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv")
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
#: Frames converted from float to uint8 per step when ``images`` is a tensor.
CHUNK = 16
#: BT.709 in FFmpeg's colour enums (AVCOL_SPC / AVCOL_PRI / AVCOL_TRC) and limited ("tv") range.
BT709, TV_RANGE = 1, 1
#: x264 frame threads, fixed so that the bitstream does not depend on the machine's core count.
X264_THREADS = 4
#: BT.709 limited-range R'G'B' → Y'CbCr rows (Rec. ITU-R BT.709-6 item 3.2-3.5), in 1/2^16 units, for
#: 8-bit R'G'B' in [0, 255]: Y' = 16 + 219·E'Y/255, Cb = 128 + 224·E'Cb/255, Cr = 128 + 224·E'Cr/255.
_FIXED_SHIFT = 16
_KR, _KB = 0.2126, 0.0722
_YUV_ROWS = np.array([
    [219 * _KR, 219 * (1 - _KR - _KB), 219 * _KB],
    [-224 * _KR / (2 - 2 * _KB), -224 * (1 - _KR - _KB) / (2 - 2 * _KB), 112.0],
    [112.0, -224 * (1 - _KR - _KB) / (2 - 2 * _KR), -224 * _KB / (2 - 2 * _KR)],
]) / 255 * (1 << _FIXED_SHIFT)
_YUV_FIXED = np.rint(_YUV_ROWS).astype(np.int64)
_HALF = 1 << (_FIXED_SHIFT - 1)


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """Float frames in [0,1] (any shape, torch) → uint8 the way every saved video gets them:
    ``clamp(0, 1) · 255``, rounded half to even, in float32. Streaming writers (the segment engine)
    convert with this so their files match a saved IMAGE batch bit for bit.

    Example:
        >>> to_uint8(torch.tensor([0.0, 0.5, 1.2, 2.5 / 255])).tolist()
        [0, 128, 255, 2]
    """
    return frames.detach().clamp(0, 1).mul(255).round_().to(torch.uint8)


def check_output_path(path: str | os.PathLike, name: str = "output") -> Path:
    """Check before any long work that a video can be written at ``path``; returns it as a Path.

    The folder is created if missing, and a file is created and removed in it to prove it is writable.

    Raises:
        InputError: a suffix that is not a video container this writer produces, a path that is a folder,
            or a folder that cannot be created or written (read-only file system, permissions).
    """
    target = Path(path).expanduser()
    if target.suffix.lower() not in VIDEO_SUFFIXES:
        raise input_error(name, f"a video file name ending in {', '.join(VIDEO_SUFFIXES)}", str(target),
                          f"name the output e.g. {target.stem or 'output'}.mp4")
    if target.is_dir():
        raise input_error(name, "a file path", f"{target} (a folder)",
                          f"give a file name, e.g. {target / 'output.mp4'}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, probe_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".probe", dir=target.parent)
        os.close(handle)
        os.unlink(probe_name)
    except OSError as error:
        raise input_error(name, "a folder where the video can be written", f"{target.parent} ({error.strerror})",
                          ["pick a writable folder", "check the permissions and the free space of this one"]) from None
    return target


def _uint8(frame: object, index: int) -> np.ndarray:
    """One frame ``[H,W,3]`` (float in [0,1] or uint8; numpy or torch) as a uint8 array."""
    if isinstance(frame, torch.Tensor):
        if frame.is_floating_point():
            frame = to_uint8(frame)
        frame = frame.detach().cpu().numpy()
    array = np.asarray(frame)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise input_error("images", "frames of shape [H,W,3]", f"frame {index} of shape {list(array.shape)}",
                          "pass an IMAGE batch [N,H,W,3] or RGB frames")
    array = array[..., :3]
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise input_error("images", "float frames in [0,1] or uint8 frames", f"frame {index} of dtype {array.dtype}",
                          "convert the frames with .float() / 255 or .astype(np.uint8)")
    if not np.isfinite(array).all():
        raise _not_finite([index])
    return np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)


def _not_finite(indices: list[int]) -> InputError:
    shown = ", ".join(map(str, indices[:20])) + (f", … ({len(indices)} frames)" if len(indices) > 20 else "")
    return input_error("images", "finite values in [0,1]", f"NaN or infinity in frame{'s' if len(indices) > 1 else ''} "
                       f"{shown}", ["find the node that made them (a NaN often comes from a VAE decode in fp16: "
                                    "try --fp32-vae or a fixed VAE)", "replace or drop those frames before saving"])


def _check_finite(images: torch.Tensor) -> None:
    """Raise naming every frame of an IMAGE batch that holds NaN or ±inf (checked in chunks)."""
    if not images.is_floating_point():
        return
    bad = []
    for start in range(0, images.shape[0], CHUNK):
        chunk = images[start:start + CHUNK, ..., :3]
        rows = (~torch.isfinite(chunk)).flatten(1).any(dim=1)
        bad.extend(start + int(row) for row in rows.nonzero().flatten())
    if bad:
        raise _not_finite(bad)


def _frames(images: object) -> Iterator[np.ndarray]:
    """uint8 ``[H,W,3]`` frames from an IMAGE tensor (converted in chunks) or an iterable of frames."""
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[-1] not in (3, 4):
            raise input_error("images", "an IMAGE tensor [N,H,W,3]", list(images.shape),
                              "connect an IMAGE output (e.g. Rerender Load Video)")
        _check_finite(images)
        for start in range(0, images.shape[0], CHUNK):
            chunk = images[start:start + CHUNK, ..., :3]
            if chunk.is_floating_point():
                chunk = to_uint8(chunk)
            yield from chunk.cpu().numpy()
        return
    if isinstance(images, (str, bytes)) or not isinstance(images, Iterable):
        raise input_error("images", "an IMAGE tensor [N,H,W,3] or an iterable of [H,W,3] frames",
                          type(images).__name__, "connect an IMAGE output (e.g. Rerender Load Video)")
    for index, frame in enumerate(images):
        yield _uint8(frame, index)


def _check_settings(crf: int, preset: str) -> None:
    if isinstance(crf, bool) or not isinstance(crf, (int, float)) or not 0 <= crf <= 51:
        raise input_error("crf", "a constant rate factor from 0 (lossless) to 51", repr(crf),
                          "use 19 (visually lossless) or 23 (smaller files)")
    if preset not in PRESETS:
        raise input_error("preset", f"one of {', '.join(PRESETS)}", repr(preset), "use 'medium'")


def _video_stream(output, rate: Fraction, width: int, height: int, crf: int, preset: str):
    try:
        stream = output.add_stream("libx264", rate=rate)
    except (av.error.FFmpegError, ValueError) as error:  # a PyAV build without libx264
        raise RerenderError(f"save: this PyAV build has no libx264 H.264 encoder ({error}). Fix: install the "
                            "PyAV wheel from PyPI (pip install -U av), which bundles libx264.") from None
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.options = {"crf": str(crf), "preset": preset}
    context = stream.codec_context
    context.thread_count, context.thread_type = X264_THREADS, "FRAME"
    context.colorspace = context.color_primaries = context.color_trc = BT709
    context.color_range = TV_RANGE
    return stream


def rgb_to_yuv420(pixels: np.ndarray) -> np.ndarray:
    """Convert RGB to BT.709 limited-range Y'CbCr 4:2:0 in integer arithmetic (the same bytes on every CPU).

    Chroma is computed from the mean R'G'B' of each 2×2 block (centred siting), rounded to nearest.

    Args:
        pixels: uint8 ``[H,W,3]`` R'G'B', ``H`` and ``W`` even.

    Returns:
        uint8 ``[H*3/2, W]``: the Y' plane, then Cb and Cr (``H/2 × W/2`` each), as
        ``av.VideoFrame.from_ndarray(..., format="yuv420p")`` takes them.

    Example:
        >>> rgb_to_yuv420(np.full((2, 2, 3), 255, np.uint8)).ravel().tolist()  # white: Y' 235, Cb = Cr = 128
        [235, 235, 235, 235, 128, 128]
    """
    height, width = pixels.shape[:2]
    rgb = pixels.astype(np.int64)
    luma = (rgb @ _YUV_FIXED[0] + _HALF >> _FIXED_SHIFT) + 16
    blocks = rgb.reshape(height // 2, 2, width // 2, 2, 3).sum(axis=(1, 3))  # 4 × the block mean
    chroma = (blocks @ _YUV_FIXED[1:].T + (_HALF << 2) >> (_FIXED_SHIFT + 2)) + 128
    planes = (luma.ravel(), chroma[..., 0].ravel(), chroma[..., 1].ravel())
    return np.clip(np.concatenate(planes), 0, 255).astype(np.uint8).reshape(height * 3 // 2, width)


def _audio_writer(output, audio: Mapping | None, audio_source: VideoInfo | None, rate: Fraction):
    """Add the audio stream (copy or encode) to ``output``; returns the writer or ``None``."""
    if audio_source is not None and not isinstance(audio_source, VideoInfo):
        raise input_error("audio_source", "a VIDEO_INFO from Rerender Load Video", type(audio_source).__name__,
                          "connect the video_info output of Rerender Load Video")
    if audio_source is not None and audio_source.audio is not None:
        if audio is not None:
            LOG.info("save: both audio and video_info given; copying the source audio from video_info "
                     "(disconnect video_info to use the audio input)")
        if rate != audio_source.loaded_fps:
            LOG.warning("save: fps %s differs from the loaded rate %s; the copied audio keeps its speed "
                        "and will not match the frames", rate, audio_source.loaded_fps)
        track, (start, end) = audio_source.audio, audio_source.audio_span
        if not Path(audio_source.source_path).is_file():
            raise input_error("video_info", "the source video to copy the audio from", audio_source.source_path,
                              "keep the source video where it was loaded from, or connect audio instead")
        if track.codec in MP4_COPYABLE_CODECS:
            return AudioCopy(output, audio_source.source_path, track, start, end)
        LOG.warning("save: MP4 cannot hold %s audio; re-encoding the loaded span to AAC (no stream copy)",
                    track.codec)
        audio = read_audio(audio_source.source_path, track, start, end)
    if audio is None:
        return None
    waveform, sample_rate = check_audio(audio)
    return AudioEncode(output, waveform, sample_rate)


def save_video(images: torch.Tensor | Iterable, path: str | os.PathLike, fps: float | Fraction, crf: int = 19,
               audio: Mapping | None = None, audio_source: VideoInfo | None = None,
               metadata: Mapping[str, object] | None = None, preset: str = "medium",
               progress: Callable[..., None] | None = None, path_name: str = "path") -> Path:
    """Encode frames to an H.264 ``yuv420p`` MP4 (atomically), with optional audio.

    Args:
        images: IMAGE ``[N,H,W,3]`` float32 in [0,1], or an iterable of ``[H,W,3]`` frames
            (float in [0,1] or uint8, numpy or torch), consumed one at a time.
        path: the output file (``.mp4``; ``.mov`` / ``.mkv`` also work).
        fps: frames per second, float or Fraction; made exact by :func:`videoio.rate.exact_fps`.
        crf: x264 constant rate factor, 0 (lossless) to 51; 19 is visually lossless.
        audio: AUDIO ``{"waveform": [1,C,S], "sample_rate": int}`` to encode as AAC.
        audio_source: a load's :class:`VideoInfo`; its source audio for the loaded span is
            stream-copied (see the module docstring).
        metadata: container tags (e.g. ``{"prompt": json, "workflow": json}``); values that are
            not strings are stored as JSON.
        preset: x264 speed preset (``"medium"`` default; slower = smaller file).
        progress: optional ``progress(done_frames)`` callback.
        path_name: the input that chose ``path``, named in an :class:`OutputError` (``"output"``
            on the command line, ``"filename_prefix"`` on the node).

    Returns:
        ``Path(path)``, complete.

    Raises:
        InputError: no frames, frames of different sizes or types, frames holding NaN or infinity
            (all their indices for a tensor; the first for an iterable), invalid fps/crf/preset,
            invalid audio, or a ``video_info`` whose source file is gone. Any error leaves no file.
        OutputError: the file cannot be written (read-only or missing permission, disk full): the
            message names ``path_name``, the folder and the reason.
    """
    rate = exact_fps(fps)
    _check_settings(crf, preset)
    frames = _frames(images)
    first = next(frames, None)
    if first is None:
        raise input_error("images", "at least one frame", "an empty batch", "connect a non-empty IMAGE batch")
    height, width = first.shape[:2]
    pad_height, pad_width = height % 2, width % 2
    if pad_height or pad_width:
        LOG.warning("save: yuv420p needs even sizes; padding %dx%d to %dx%d by repeating the last %s",
                    width, height, width + pad_width, height + pad_height,
                    "row and column" if pad_height and pad_width else "row" if pad_height else "column")
    target = Path(path)
    try:
        _write(target, itertools.chain([first], frames), (width, height), rate, int(crf), preset, audio,
               audio_source, metadata, progress)
    except OSError as error:
        raise write_error(path_name, target, error) from error
    return target


def _write(target: Path, frames: Iterator[np.ndarray], size: tuple[int, int], rate: Fraction, crf: int,
           preset: str, audio: Mapping | None, audio_source: VideoInfo | None,
           metadata: Mapping[str, object] | None, progress: Callable[..., None] | None) -> None:
    """Encode ``frames`` (uint8 ``[H,W,3]`` of ``size`` = (W, H)) into ``target`` (see :func:`save_video`)."""
    width, height = size
    pad_height, pad_width = height % 2, width % 2
    with atomic_path(target) as temp:
        output = av.open(str(temp), mode="w", options={"movflags": "use_metadata_tags"})
        sound = None
        failed = True
        try:
            for key, value in (metadata or {}).items():
                output.metadata[str(key)] = value if isinstance(value, str) else json.dumps(value)
            stream = _video_stream(output, rate, width + pad_width, height + pad_height, crf, preset)
            sound = _audio_writer(output, audio, audio_source, rate)
            count = 0
            for pixels in frames:
                if pixels.shape[:2] != (height, width):
                    raise input_error("images", f"frames of one size ({width}x{height})",
                                      f"frame {count} of {pixels.shape[1]}x{pixels.shape[0]}",
                                      "resize all frames to one size before saving")
                if pad_height or pad_width:
                    pixels = np.pad(pixels, ((0, pad_height), (0, pad_width), (0, 0)), mode="edge")
                frame = av.VideoFrame.from_ndarray(rgb_to_yuv420(pixels), format="yuv420p")
                frame.pts = count
                output.mux(stream.encode(frame))
                count += 1
                if sound is not None:
                    sound.mux_until(count / rate)
                if progress is not None:
                    progress(count)
            output.mux(stream.encode(None))
            if sound is not None:
                sound.finish(count / rate)
            failed = False
        finally:
            if isinstance(sound, AudioCopy):
                sound.close()
            try:
                output.close()
            except av.error.FFmpegError:
                if not failed:
                    raise
