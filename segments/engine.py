"""The segment engine: stylized keyframes → the whole output video, from the source file, in bounded memory.

:func:`propagate_to_video` (or :func:`prepare_video` then :meth:`VideoRun.write`) does what Load Video →
Estimate Flow → EbSynth Propagate → Temporal Blend → Save Video do, with the same result bit for bit,
but one segment between keyframes at a time (Rerender §4.2), so its memory is set by the keyframe
interval and the frame size, not by the video's length:

1. **Checks first**, before any long work: the output location is writable, the keyframes fit the
   loaded frames (count, indices, size), the settings are valid, every frame is reached by a keyframe,
   the largest segment fits in memory (:mod:`segments.memory`) and the store fits on the cache disk.
2. **Plan** (:mod:`segments.plan`) and look up which segments are already stored (:mod:`segments.store`).
3. **Run** the others through an executor (:mod:`segments.executors`; ``local``: in process, one at a
   time), each a pure :func:`~segments.job.run_segment`.
4. **Write**: keyframes (converted to uint8 as Save Video converts them) and segment frames go in frame
   order into :func:`videoio.writer.save_video` as a stream, at the loaded frame rate with the source's
   audio for the loaded span; the file appears at its path only when complete.

**Masks** (issue 16, ``mask=``): per-frame masks are read per segment (:mod:`segments.masks`), each segment's
frames and the keyframes are composited over the source frames before the uint8 conversion, and the store key
includes the masks' content and ``mask_grow``/``feather``.

**Resume**: a segment is stored as soon as its last frame is computed. An interrupted run (Ctrl-C,
kill -9, Cancel, an error) loses only the segment that was running; the next run with the same inputs
reads the stored ones and writes the same file.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np
import torch

from ..common.cache import check_free_space
from ..common.errors import input_error
from ..common.keyframes import Keyframes
from ..common.masks import FEATHER, MASK_GROW
from ..propagation.blend import composite_region
from ..propagation.region import MaskFiles, Region
from ..propagation.sequence import check_keyframes
from ..videoio.frame_index import FrameIndex, index_video, read_frames
from ..videoio.reader import to_float
from ..videoio.writer import _check_settings, check_output_path, save_video, to_uint8
from .executors import Executor, get_executor
from .job import STREAM_CHUNK, SegmentJob, SegmentSettings, run_segment
from .masks import mask_files, mask_image_file
from .memory import FLOW_BYTES, check_memory
from .plan import SegmentPlan, output_order, plan_segments
from .store import BYTES_PER_PIXEL, SegmentStore, segment_key

LOG = logging.getLogger(__name__)

def _style(images, position: int) -> np.ndarray:
    """Keyframe ``position`` as float32 ``[H,W,3]``, the values an IMAGE batch row holds."""
    image = images[position]
    if isinstance(image, torch.Tensor):
        return image.detach().to("cpu", torch.float32).contiguous().numpy()
    return np.ascontiguousarray(image, dtype=np.float32)


def _checked_style(images, position: int, keyframes: Keyframes, size: tuple[int, int]) -> np.ndarray:
    style = _style(images, position)
    if style.shape != (*size, 3):
        height, width = size
        raise input_error(
            "keyframes", f"stylized keyframes of the loaded frames' size (H×W = {height}×{width}) with 3 channels",
            f"keyframe {keyframes.indices[position]} of shape {list(style.shape)}",
            [f"resize the keyframes to {width}×{height} (W×H)", "load the video at the keyframes' size"])
    return style


@dataclass
class VideoRun:
    """A checked, planned run (from :func:`prepare_video`); :meth:`write` does the work.

    Attributes:
        index: the source's frame index (what is loaded, at which size).
        keyframes: the KEYFRAMES.
        keyframe_images: the stylized keyframes (IMAGE batch or a sequence read on use).
        output: the video to write.
        settings: propagation and blend settings.
        plans: the segments, in frame order.
        keys: their store keys.
        peak_bytes: estimated peak memory of one segment.
        crf, preset, metadata: as :func:`videoio.writer.save_video`.
        executor: where segments run.
        max_in_flight: segments an executor may run ahead of the writer.
        chunk: frames per step of streamed segments.
        region: per-frame masks (:class:`~propagation.region.MaskFiles`, or a MASK batch held as a
            :class:`~propagation.region.Region`) of a masked run, else ``None``: every
            output frame, keyframes included, is the stylized frame composited over the source frame.
    """

    index: FrameIndex
    keyframes: Keyframes
    keyframe_images: object
    output: Path
    settings: SegmentSettings
    plans: list[SegmentPlan]
    keys: list[str]
    peak_bytes: int
    crf: int = 19
    preset: str = "medium"
    metadata: Mapping[str, object] | None = None
    executor: str | Executor = "local"
    max_in_flight: int = 2
    chunk: int = STREAM_CHUNK
    region: MaskFiles | Region | None = None

    def stored(self) -> list[bool]:
        """Per segment, whether the store already holds it."""
        store, size = SegmentStore(), self.index.frame_size
        return [store.has(key, len(plan.frames), size) for plan, key in zip(self.plans, self.keys)]

    def describe(self) -> str:
        """One line: frames, size, segments stored / to compute, memory per segment."""
        height, width = self.index.frame_size
        stored = sum(self.stored())
        return (f"{self.index.frame_count} frames at {width}x{height}, {len(self.keyframes.indices)} keyframes, "
                f"{len(self.plans)} segments ({stored} stored, {len(self.plans) - stored} to compute), "
                f"about {self.peak_bytes / 2**20:.0f} MiB per segment")

    def job(self, plan: SegmentPlan) -> SegmentJob:
        """The job of one segment (reads its keyframe images)."""
        styles = {chain.key: _style(self.keyframe_images, chain.keyframe_position) for chain in plan.chains}
        region = None if self.region is None else self.region.segment(plan.start, plan.stop)
        return SegmentJob(self.index, plan, styles, self.settings, chunk=self.chunk, region=region)

    def keyframe(self, position: int) -> np.ndarray:
        """Keyframe ``position`` as written: uint8 ``[H,W,3]``; with a region, over the source frame."""
        image = torch.from_numpy(_style(self.keyframe_images, position))
        if self.region is not None:
            key = self.keyframes.indices[position]
            source = torch.from_numpy(to_float(read_frames(self.index, [key])[0]))
            image = composite_region(image, source, self.region.alpha(key))
        return to_uint8(image).numpy()

    def write(self, progress: Callable[..., None] | None = None) -> Path:
        """Compute the missing segments and write the video (module docstring, steps 3–4).

        Args:
            progress: optional ``progress(done_frames, preview)`` after each written frame (``preview``: that
                frame as IMAGE ``[H,W,3]`` float32), and ``progress(done_frames)`` after each synthesized
                frame and each segment an executor finishes ahead of the writer; ``done_frames`` counts the
                written frames plus those of segments finished ahead (never decreasing). It may raise to
                interrupt (finished segments stay stored; no file is written).

        Returns:
            The output path, complete.

        Raises:
            InputError: the source no longer gives the indexed frames (names the frame; no file is written,
                finished segments are kept).
        """
        store, size = SegmentStore(), self.index.frame_size
        pending = [number for number, stored in enumerate(self.stored()) if not stored]
        LOG.info("segment engine: %s", self.describe())
        executor = get_executor(self.executor)
        written = {"count": 0, "last": None, "shown": 0}
        recorded: set[int] = set()
        ahead: set[int] = set()  # segments finished out of order that the writer has not reached yet

        def done() -> int:
            """Frames finished: written ones plus those of segments stored ahead of the writer. Never goes back
            (when the writer reaches a segment counted ahead, its frames were already counted)."""
            count = written["count"] + sum(len(self.plans[number].frames) for number in ahead)
            written["shown"] = max(written["shown"], count)
            return written["shown"]

        def tick() -> None:
            if progress is not None:
                progress(done())

        def finished(position: int, frames: np.ndarray) -> np.ndarray:
            """Store a segment as it arrives (an executor may finish segments ahead of the writer)."""
            number = pending[position]
            plan = self.plans[number]
            for _ in store.record(self.keys[number], frames, len(plan.frames), size,
                                  {"segment": plan.describe(), "video": self.index.path}):
                pass
            recorded.add(number)
            ahead.add(number)
            tick()
            return store.lookup(self.keys[number], len(plan.frames), size)

        jobs = (self.job(self.plans[number]) for number in pending)
        if executor.name != "local":  # mask files are the driver's: a worker elsewhere gets the masks themselves
            jobs = (_with_loaded_masks(job) for job in jobs)
        results = executor.map_ordered(run_segment, jobs, self.max_in_flight, tick, finished)

        def frames() -> Iterator[np.ndarray]:
            for kind, number in output_order(self.keyframes, self.plans):
                if kind == "keyframe":
                    items = [self.keyframe(number)]
                elif number in pending:
                    plan = self.plans[number]
                    items = next(results)
                    ahead.discard(number)
                    if number not in recorded:
                        items = store.record(self.keys[number], items, len(plan.frames), size,
                                             {"segment": plan.describe(), "video": self.index.path})
                else:
                    items = store.lookup(self.keys[number], len(self.plans[number].frames), size)
                    if items is None:
                        raise input_error("segments", f"the stored {self.plans[number].describe()}",
                                          "an entry removed from the cache during the run", "run again")
                try:
                    for frame in items:
                        written["last"] = frame
                        yield np.asarray(frame)
                finally:
                    if hasattr(items, "close"):
                        items.close()

        def on_written(count: int) -> None:
            written["count"] = count
            if progress is not None:
                progress(done(), torch.from_numpy(to_float(written["last"])))

        info, stream = self.index.info, frames()
        try:
            return save_video(stream, self.output, info.loaded_fps, self.crf, audio_source=info,
                              metadata=self.metadata, preset=self.preset, progress=on_written)
        finally:
            stream.close()
            results.close()
            executor.cancel()


def _with_loaded_masks(job: SegmentJob) -> SegmentJob:
    """``job`` with its mask files read into the job (same masks, same frames; the store key is unchanged)."""
    return replace(job, region=job.region.loaded()) if isinstance(job.region, MaskFiles) else job


def _check_disk(run: VideoRun) -> None:
    height, width = run.index.frame_size
    missing = sum(len(plan.frames) for plan, stored in zip(run.plans, run.stored()) if not stored)
    longest = max(len(plan.loaded) for plan in run.plans)
    check_free_space(height * width * (missing * BYTES_PER_PIXEL + longest * FLOW_BYTES), "finished segments",
                     f"{missing} frames at {width}x{height}")


def _region(mask, index: FrameIndex, mask_grow: int, feather: int,
            settings: SegmentSettings) -> MaskFiles | Region | None:
    """The run's region from a path (:func:`segments.masks.mask_files`), a MASK tensor (one per frame: held as
    given; one for several frames: saved and carried by the flow like a single mask image) or as given."""
    if mask is None or isinstance(mask, (MaskFiles, Region)):
        return mask
    carry = dict(flow=settings.flow, alpha=settings.occlusion_alpha, beta=settings.occlusion_beta)
    if isinstance(mask, (str, os.PathLike)):
        return mask_files(mask, index, mask_grow, feather, **carry)
    count, (height, width) = index.frame_count, index.frame_size
    region = Region.from_mask(mask, count, height, width, mask_grow, feather)
    if region.masks.shape[0] == 1 and count > 1 and bool((region.masks > 0).any()):
        return mask_files(mask_image_file(region.masks[0]), index, mask_grow, feather, **carry)
    return region


def prepare_video(source: FrameIndex | str | os.PathLike, keyframe_images, keyframes: Keyframes,
                  output_path: str | os.PathLike, settings: SegmentSettings = SegmentSettings(), crf: int = 19,
                  preset: str = "medium", metadata: Mapping[str, object] | None = None,
                  executor: str | Executor = "local", max_in_flight: int | None = None,
                  chunk: int = STREAM_CHUNK, mask: str | os.PathLike | MaskFiles | None = None,
                  mask_grow: int = MASK_GROW.default, feather: int = FEATHER.default) -> VideoRun:
    """Check everything and plan the run (module docstring, steps 1–2); nothing long runs here.

    Args: as :func:`propagate_to_video`.

    Returns:
        The :class:`VideoRun`; call :meth:`VideoRun.write`.

    Raises:
        InputError: see :func:`propagate_to_video`.
    """
    output = check_output_path(output_path)
    _check_settings(crf, preset)
    index = source if isinstance(source, FrameIndex) else index_video(source)
    if output.resolve() == Path(index.path).resolve():
        raise input_error("output", "a file other than the source video", str(output), "pick another output name")
    if not isinstance(keyframes, Keyframes):
        raise input_error("keyframes", "a KEYFRAMES object (Rerender Keyframe Selection)", type(keyframes).__name__)
    if isinstance(keyframe_images, torch.Tensor) and (keyframe_images.ndim != 4 or keyframe_images.shape[-1] != 3):
        raise input_error("keyframes", "an IMAGE batch [M,H,W,3]", list(keyframe_images.shape),
                          "connect the stylized keyframes (e.g. Rerender Keyframe Renderer)")
    check_keyframes(keyframes, len(keyframe_images), index.frame_count)
    size = index.frame_size
    settings.check(*size)
    plans = plan_segments(keyframes, settings.direction)
    executor = get_executor(executor)
    if max_in_flight is None:
        max_in_flight = executor.suggested_in_flight() if hasattr(executor, "suggested_in_flight") else 2
    local = executor.name == "local"
    peak = check_memory(plans, *size, chunk, 1 if local else max_in_flight, whole_output=not local)
    used = {chain.keyframe_position for plan in plans for chain in plan.chains}
    for position in range(len(keyframes.indices)):
        if position not in used:
            _checked_style(keyframe_images, position, keyframes, size)
    for plan in plans:
        for chain in plan.chains:
            _checked_style(keyframe_images, chain.keyframe_position, keyframes, size)
    region = _region(mask, index, mask_grow, feather, settings)
    run = VideoRun(index, keyframes, keyframe_images, output, settings, plans, [], peak, crf, preset, metadata,
                   executor, max_in_flight, chunk, region)
    for plan in plans:
        run.keys.append(segment_key(run.job(plan)))
    _check_disk(run)
    return run


def propagate_to_video(source: FrameIndex | str | os.PathLike, keyframe_images, keyframes: Keyframes,
                       output_path: str | os.PathLike, settings: SegmentSettings = SegmentSettings(),
                       crf: int = 19, preset: str = "medium", metadata: Mapping[str, object] | None = None,
                       executor: str | Executor = "local", progress: Callable[..., None] | None = None,
                       max_in_flight: int | None = None, chunk: int = STREAM_CHUNK,
                       mask: str | os.PathLike | MaskFiles | None = None, mask_grow: int = MASK_GROW.default,
                       feather: int = FEATHER.default) -> Path:
    """Propagate stylized keyframes through a video file and write the result, segment by segment.

    The frames of the written video equal those of Load Video → Estimate Flow (consecutive) → EbSynth
    Propagate → Temporal Blend → Save Video on the same inputs, bit for bit (module docstring).

    Args:
        source: a :class:`~videoio.frame_index.FrameIndex` (:func:`~videoio.frame_index.index_video` with Load
            Video's widgets), or a video path (all frames at the source size).
        keyframe_images: the stylized keyframes in index order: IMAGE ``[M,H,W,3]`` float32 in [0, 1], or a
            sequence of ``[H,W,3]`` float images read on use (e.g. :class:`propagation.keyframe_files.KeyframeFolder`),
            at the loaded frames' size.
        keyframes: the KEYFRAMES of the loaded frames (``M`` indices).
        output_path: the video to write (``.mp4``, ``.mov`` or ``.mkv``).
        settings: propagation, flow and blend settings (:class:`~segments.job.SegmentSettings`).
        crf, preset, metadata: as :func:`videoio.writer.save_video`.
        executor: ``"local"``, ``"ray"`` or an executor object (:func:`segments.executors.make_executor`); a
            Ray executor is connected here, before any work.
        progress: as :meth:`VideoRun.write`.
        max_in_flight: segments an executor may run ahead of the writer (the local one runs one); ``None``:
            the executor's suggestion (Ray: its task slots + 1), else 2.
        chunk: frames per step of streamed segments.
        mask: optional region to restyle (issue 16): a folder of per-frame mask images named by frame index,
            one image (the first frame's mask, carried by the optical flow), a MASK ``[N,H,W]`` or ``[1,H,W]``
            (carried likewise), or :class:`~propagation.region.MaskFiles`; see :mod:`segments.masks`. Outside
            the mask grown by
            ``mask_grow`` pixels plus ``feather`` pixels the written frames are the source frames (before
            encoding).
        mask_grow, feather: pixels (:data:`common.masks.MASK_SETTINGS`).

    Returns:
        The output path, complete.

    Raises:
        InputError: before any work: a mask folder missing frames, a mask of another size (an all-zero
            mask warns); an output location that cannot be written or is the source; invalid
            crf/preset/executor/settings; KEYFRAMES of another frame count or with another number of images;
            keyframe images of another size; frames no keyframe reaches; a segment too large for the memory
            (the message names the frames and the settings to change); too little cache disk. While running:
            a source that no longer gives its indexed frames (names the frame; nothing written, finished
            segments kept).

    Example:
        >>> from rerender_video.common.keyframes import uniform                             # doctest: +SKIP
        >>> index = index_video("clip.mp4", custom_width=256)                               # doctest: +SKIP
        >>> propagate_to_video(index, stylized, uniform(index.frame_count, 12), "out.mp4")  # doctest: +SKIP
        PosixPath('out.mp4')
    """
    run = prepare_video(source, keyframe_images, keyframes, output_path, settings, crf, preset, metadata, executor,
                        max_in_flight, chunk, mask, mask_grow, feather)
    return run.write(progress)
