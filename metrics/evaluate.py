"""Measure a stylized video in one streaming pass: warp error, flicker, PSNR/SSIM, Tem-Con, Fram-Acc.

For each frame ``t`` the pass holds frames ``t`` and ``t+1`` of the output and of the source (and one
reference frame), so memory does not grow with the length. Per pair ``(t, t+1)``:

1. a shot cut in the **source** (:func:`common.scene_cuts.detect_scene_cuts`'s rule) marks the pair
   *excluded*: optical flow across a cut is meaningless and no method should be steady there, so it is
   left out of the warp error, flicker and Tem-Con (``cut_threshold=0`` keeps every pair);
2. the optical flow ``t → t+1`` of the source and the occlusion mask of frame ``t`` (DIS and the
   forward–backward check of :mod:`flow`, or a FLOW computed before), then the warp error
   (:func:`metrics.consistency.warp_error`) and the flicker (:func:`metrics.consistency.flicker`);

and per frame, with a reference, PSNR and SSIM (:mod:`metrics.reference`); with CLIP encoders, the
embeddings for Tem-Con and Fram-Acc (:mod:`metrics.clip`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..common.checks import check_indices
from ..common.errors import input_error
from ..common.scene_cuts import DEFAULT_THRESHOLD, detect_scene_cuts
from ..common.threads import torch_threads
from ..flow.dis import DEFAULT_PRESET, DisFlow
from ..flow.types import FlowPairs
from . import clip as clip_metrics
from .consistency import flicker, source_motion, warp_error
from .reference import psnr_ssim
from .report import TemporalReport
from .streams import FrameStream, check_matching, from_images, zip_streams

Progress = Callable[..., None]


def _stream(frames: FrameStream | torch.Tensor, name: str) -> FrameStream:
    return frames if isinstance(frames, FrameStream) else from_images(frames, name)


def _check_flow(flow: FlowPairs, stream: FrameStream) -> None:
    if not isinstance(flow, FlowPairs):
        raise input_error("flow", "a FLOW object (Rerender Estimate Flow)", type(flow).__name__)
    flow.check_video(stream.count, stream.size)
    missing = [t for t in range(stream.count - 1) if not flow.has(t, t + 1)]
    if missing:
        raise input_error("flow", "a FLOW with the consecutive frame pairs (t, t+1)",
                          f"no pair ({missing[0]}, {missing[0] + 1}) ({flow.describe()})",
                          ["set pair_mode to 'consecutive' or 'consecutive+keyframes' on Rerender Estimate Flow",
                           "disconnect the flow: the pairs are then computed here"])


class _ClipRun:
    """Batches output frames through the CLIP image encoder; keeps the last embedding for the next pair."""

    def __init__(self, metrics: clip_metrics.ClipMetrics, per_frame: dict[str, list]) -> None:
        self.metrics, self.per_frame = metrics, per_frame
        self.pending: list[torch.Tensor] = []
        self.previous: torch.Tensor | None = None
        per_frame["tem_con"] = []
        if metrics.frame_accuracy:
            per_frame["fram_acc"] = []

    def add(self, frame: torch.Tensor) -> None:
        self.pending.append(frame)
        if len(self.pending) >= self.metrics.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        embeddings = self.metrics.embed_frames(torch.stack(self.pending))
        self.pending = []
        chained = embeddings if self.previous is None else torch.cat([self.previous, embeddings])
        self.per_frame["tem_con"].extend(clip_metrics.consecutive_similarity(chained))
        self.previous = embeddings[-1:]
        prompts = self.metrics.prompt_embeddings()
        if prompts is not None:
            self.per_frame["fram_acc"].extend(clip_metrics.prefers_target(embeddings, prompts))


def _measure_pair(pair: int, previous: tuple[torch.Tensor, ...], current: tuple[torch.Tensor, ...],
                  flow: FlowPairs | None, estimator: DisFlow | None, cut_threshold: float,
                  per_frame: dict[str, list], excluded: list[int]) -> None:
    """Warp error and flicker of the pair ``(pair, pair+1)``; ``None`` for both across a source cut."""
    source_pair = torch.stack([previous[1], current[1]])
    if cut_threshold > 0 and detect_scene_cuts(source_pair, cut_threshold):
        excluded.append(pair)
        per_frame["warp_error"].append(None)
        per_frame["flicker"].append(None)
        return
    if flow is None:
        motion, occluded = source_motion(previous[1], current[1], estimator)
    else:
        motion, occluded = flow.between(pair + 1, pair)
    per_frame["warp_error"].append(warp_error(previous[0], current[0], motion, occluded))
    per_frame["flicker"].append(flicker(previous[0], current[0]))


def evaluate_video(output: FrameStream | torch.Tensor, source: FrameStream | torch.Tensor,
                   reference: FrameStream | torch.Tensor | None = None, flow: FlowPairs | None = None,
                   clip: clip_metrics.ClipMetrics | None = None, keyframes: Sequence[int] = (),
                   cut_threshold: float = DEFAULT_THRESHOLD, flow_preset: str = DEFAULT_PRESET,
                   progress: Progress | None = None) -> TemporalReport:
    """Temporal quality of ``output``, a stylization of ``source`` (module docstring).

    Args:
        output: the stylized video: IMAGE ``[N,H,W,3]`` float32 in [0, 1] or a :class:`FrameStream`.
        source: the video it was made from, same size and length (its motion defines the warp).
        reference: optional video to compare with frame by frame (PSNR, SSIM), same size and length.
        flow: optional FLOW of the source with the consecutive pairs; computed pair by pair when absent.
        clip: optional CLIP encoders and prompts (Tem-Con; Fram-Acc with a text encoder and prompts).
        keyframes: keyframe indices, marked in the report (and left out of the ``*_non_key`` means).
        cut_threshold: shot-cut threshold (grey levels, :mod:`common.scene_cuts`); 0 measures every pair.
        flow_preset: DIS preset when the flow is computed here.
        progress: optional ``progress(done_frames)``; may raise to interrupt.

    Returns:
        The :class:`~metrics.report.TemporalReport`.

    Raises:
        InputError: inputs of different sizes or lengths (naming both), a FLOW of another video or without
            consecutive pairs, keyframe indices out of range, a negative cut threshold, Fram-Acc prompts
            missing, CLIP image and text embeddings of different widths.

    Example:
        >>> video = torch.rand(1, 24, 32, 3).expand(3, -1, -1, -1)          # a frozen video
        >>> report = evaluate_video(video, video, cut_threshold=0)
        >>> report.means()["flicker"], report.means()["warp_error"] < 1e-4
        (1.0, True)
    """
    output, source = _stream(output, "output"), _stream(source, "source")
    streams = [output, source]
    check_matching(output, source)
    if reference is not None:
        reference = _stream(reference, "reference")
        check_matching(output, reference)
        streams.append(reference)
    if flow is not None:
        _check_flow(flow, output)
    keyframes = tuple(check_indices(keyframes, output.count, "keyframes")) if len(keyframes) else ()
    if cut_threshold < 0:
        raise input_error("cut_threshold", "a grey-level difference >= 0 (0 measures across cuts too)",
                          cut_threshold, f"use {DEFAULT_THRESHOLD}")
    if clip is not None:
        clip.check()
    estimator = DisFlow(flow_preset) if flow is None else None
    if estimator is not None:
        estimator.check_size(*output.size)

    per_frame: dict[str, list] = {"warp_error": [], "flicker": []}
    if reference is not None:
        per_frame["psnr"], per_frame["ssim"] = [], []
    clip_run = _ClipRun(clip, per_frame) if clip is not None else None
    excluded: list[int] = []
    previous = None
    for index, frames in enumerate(zip_streams(streams)):
        with torch_threads(1):  # small tensors: extra torch threads only spin-wait (common/threads.py)
            if previous is not None:
                _measure_pair(index - 1, previous, frames, flow, estimator, cut_threshold, per_frame, excluded)
            if reference is not None:
                psnr, ssim = psnr_ssim(frames[0], frames[2])
                per_frame["psnr"].append(psnr)
                per_frame["ssim"].append(ssim)
        if clip_run is not None:
            clip_run.add(frames[0])
        previous = frames
        if progress is not None:
            progress(index + 1)
    if clip_run is not None:
        clip_run.flush()
        for pair in excluded:
            per_frame["tem_con"][pair] = None
    count = len(per_frame["flicker"]) + 1
    method = flow.method if flow is not None else {"backend": "dis", "preset": flow_preset}
    return TemporalReport(count, output.size, per_frame, keyframes, tuple(excluded),
                          {"flow": method, "cut_threshold": float(cut_threshold)})
