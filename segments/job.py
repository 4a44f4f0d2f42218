"""One segment's work as a pure function: ``run_segment(job)`` → its output frames (Rerender §4.2–4.2.1).

A :class:`SegmentJob` is plain picklable data: the source's :class:`~videoio.frame_index.FrameIndex`
(path, load widgets, the decoded-frame table), the segment's plan, the stylized keyframes its chains
start from (float32, exactly as given) and the settings. :func:`run_segment` decodes the segment's
frames (:func:`videoio.frame_index.read_frames`: the pixels Load Video gives), computes their
consecutive optical flows (:func:`flow.estimate.estimate_flow`, per pair as Estimate Flow does, cached
while the segment runs), propagates the keyframes with :func:`propagation.sequence.iter_chain` (the chain
of EbSynth Propagate), blends with :func:`propagation.blend.blend_segment` (the blend of Temporal Blend)
and converts to uint8 with :func:`videoio.writer.to_uint8` (the conversion of Save Video). Hence its
frames equal, bit for bit, those frames of the in-RAM pipeline; it has no hidden state, so it can run in
process or as a task on another machine.

Candidates pass through float16 exactly as a PROPAGATION stores them, so the blend sees the same values.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch

from ..common.errors import input_error
from ..common.settings import field_values
from ..flow.backend import FlowBackend
from ..flow.dis import DisFlow
from ..flow.estimate import cache_location, estimate_flow
from ..flow.occlusion import ALPHA, BETA, check_thresholds
from ..flow.pairs import consecutive_pairs
from ..flow.types import FlowPairs
from ..propagation.backends.select import get_backend
from ..propagation.blend import blend_segment, composite_region
from ..propagation.guides import INPAINT_RADIUS, GuideWeights
from ..propagation.params import SynthesisParams
from ..propagation.poisson import GRADIENT_WEIGHTS
from ..propagation.region import MaskFiles, Region
from ..propagation.result import FORWARD
from ..propagation.settings import poisson_weights
from ..propagation.sequence import DIRECTION_MODES, check_settings, iter_chain
from ..videoio.frame_index import FrameIndex, Source, iter_read_frames, read_frames
from ..videoio.reader import to_float
from ..videoio.writer import to_uint8
from .plan import SegmentPlan

#: Frames decoded and flowed per step of a streamed segment (its memory is set by this, not its length).
STREAM_CHUNK = 16

Tick = Callable[[], None]


@dataclass(frozen=True)
class SegmentSettings:
    """Everything a segment's pixels depend on besides its frames and keyframes, plus the backend.

    Attributes:
        params: synthesis parameters (EbSynth Propagate's widgets).
        weights: guide weights.
        direction: ``"both"``, ``"forward"`` or ``"backward"`` between keyframes.
        temporal_nnf_init: start each frame's NNF from the previous frame's, advected by the flow.
        inpaint_radius: Telea radius (pixels) for occluded pixels of the advected guides.
        histogram: histogram-preserving blend (Temporal Blend's ``histogram_blend``).
        poisson: screened Poisson gradient blend (``poisson_blend``).
        poisson_weights: gradient weights λ for (L, a, b).
        flow: the optical flow backend (picklable; :class:`~flow.dis.DisFlow` is), as on Estimate Flow.
        occlusion_alpha, occlusion_beta: thresholds of the forward–backward occlusion check.
        backend: synthesis backend (``"auto"``, ``"cpu"``, ``"cuda"``); never changes the pixels.
    """

    params: SynthesisParams = SynthesisParams()
    weights: GuideWeights = GuideWeights()
    direction: str = "both"
    temporal_nnf_init: bool = True
    inpaint_radius: int = INPAINT_RADIUS
    histogram: bool = True
    poisson: bool = False
    poisson_weights: tuple[float, float, float] = GRADIENT_WEIGHTS
    flow: FlowBackend = field(default_factory=DisFlow)
    occlusion_alpha: float = ALPHA
    occlusion_beta: float = BETA
    backend: str = "auto"

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> "SegmentSettings":
        """The settings from widget / option values named as declared (:mod:`propagation.settings`:
        ``direction``, the synthesis and guide-weight settings, ``temporal_nnf_init``, ``backend``, the blend
        settings; :mod:`flow.settings`: ``dis_preset``, ``occlusion_alpha``, ``occlusion_beta``). Names not
        given keep their defaults; other names are ignored.

        Example:
            >>> SegmentSettings.from_values({"patch_size": 7, "poisson_blend": True}).params.patch_size
            7
        """
        default = cls()
        weights = (values.get("poisson_luma_weight", default.poisson_weights[0]),
                   values.get("poisson_chroma_weight", default.poisson_weights[1]))
        flow = DisFlow(values["dis_preset"]) if "dis_preset" in values else default.flow
        return cls(SynthesisParams(**field_values(SynthesisParams, values)),
                   GuideWeights(**field_values(GuideWeights, values)),
                   values.get("direction", default.direction),
                   bool(values.get("temporal_nnf_init", default.temporal_nnf_init)),
                   histogram=bool(values.get("histogram_blend", default.histogram)),
                   poisson=bool(values.get("poisson_blend", default.poisson)),
                   poisson_weights=poisson_weights(*weights), flow=flow,
                   occlusion_alpha=float(values.get("occlusion_alpha", default.occlusion_alpha)),
                   occlusion_beta=float(values.get("occlusion_beta", default.occlusion_beta)),
                   backend=values.get("backend", default.backend))

    def check(self, height: int, width: int) -> None:
        """Raise :class:`~common.errors.InputError` for any invalid setting, for frames of ``height × width``
        (this process's synthesis backend included)."""
        check_settings(self.params, self.weights)
        if self.direction not in DIRECTION_MODES:
            raise input_error("direction", f"one of {DIRECTION_MODES}", repr(self.direction), "use 'both'")
        if not isinstance(self.flow, FlowBackend):
            raise input_error("flow", "an optical flow backend (e.g. DisFlow('medium'))", type(self.flow).__name__)
        self.flow.check_size(height, width)
        check_thresholds(self.occlusion_alpha, self.occlusion_beta)
        get_backend(self.backend)  # an unusable "cuda" fails here, with the advice, not in the first segment

    def pixel_parts(self) -> dict:
        """The settings that change output pixels, for the segment store's key (the backend is not one)."""
        return {"params": asdict(self.params), "weights": self.weights.as_dict(), "direction": self.direction,
                "temporal_nnf_init": bool(self.temporal_nnf_init), "inpaint_radius": int(self.inpaint_radius),
                "histogram": bool(self.histogram), "poisson": bool(self.poisson),
                "poisson_weights": [float(w) for w in self.poisson_weights], "flow": self.flow.cache_parts(),
                "occlusion": [float(self.occlusion_alpha), float(self.occlusion_beta)]}


@dataclass(frozen=True)
class SegmentJob:
    """The inputs of one segment (plain data; pickles for other processes and machines).

    Attributes:
        index: the source's frame index (path, load widgets, decoded-frame table).
        plan: the segment (:class:`~segments.plan.SegmentPlan`).
        styles: stylized keyframe per chain keyframe, keyed by local index: ``[H,W,3]`` float32, as given.
        settings: the :class:`SegmentSettings`.
        source: where to read the video instead of ``index.path`` (its bytes, for workers that cannot see
            the path); ``None`` reads the path.
        chunk: frames per step of a streamed segment.
        region: the segment's masks in local numbering (:meth:`propagation.region.MaskFiles.segment` or
            :meth:`propagation.region.Region.segment`), or ``None`` to restyle the whole frame. The files are
            read where the job runs (a Ray worker on
            another machine needs them at the same path).
    """

    index: FrameIndex
    plan: SegmentPlan
    styles: dict[int, np.ndarray]
    settings: SegmentSettings
    source: Source | None = None
    chunk: int = STREAM_CHUNK
    region: MaskFiles | Region | None = None

    def alpha(self) -> Callable[[int], np.ndarray] | None:
        """``alpha(local index)`` → ``[H,W]`` compositing weight, or ``None`` without a region."""
        return None if self.region is None else self.region.alpha

    @property
    def frame_count(self) -> int:
        """Frames the job outputs."""
        return len(self.plan.frames)


class _HeldCandidates:
    """The chains of a held segment (float16 images, float32 errors), by local frame and direction."""

    def __init__(self) -> None:
        self._rows: dict[tuple[int, str], tuple[np.ndarray, np.ndarray, int]] = {}

    def add(self, direction: str, targets: tuple[int, ...], images: np.ndarray, errors: np.ndarray) -> None:
        for row, frame in enumerate(targets):
            self._rows[(frame, direction)] = (images, errors, row)

    def has(self, frame: int, direction: str) -> bool:
        return (frame, direction) in self._rows

    def candidate(self, frame: int, direction: str) -> tuple[np.ndarray, np.ndarray]:
        images, errors, row = self._rows[(frame, direction)]
        return np.asarray(images[row], dtype=np.float32), np.asarray(errors[row], dtype=np.float32)


def _remove_flow_entry(flow: FlowPairs | None) -> None:
    """Delete a segment's flow cache entry once the segment no longer needs it (the store keeps its frames)."""
    location = cache_location(flow) if flow is not None else None
    if location is not None:
        shutil.rmtree(location, ignore_errors=True)


def _held(job: SegmentJob, tick: Tick) -> Iterator[np.ndarray]:
    plan, settings = job.plan, job.settings
    frames = torch.from_numpy(to_float(read_frames(job.index, plan.loaded, job.source)))
    flow = estimate_flow(frames, consecutive_pairs(len(frames)), settings.flow, settings.occlusion_alpha,
                         settings.occlusion_beta)
    candidates = _HeldCandidates()
    for chain in plan.chains:
        images = np.empty((len(chain.targets), *frames.shape[1:]), np.float16)
        errors = np.empty((len(chain.targets), *frames.shape[1:3]), np.float32)
        steps = iter_chain(lambda index: frames[index].numpy(), job.styles[chain.key], chain.key, chain.targets,
                           flow.between, settings.params, settings.weights, settings.temporal_nnf_init,
                           settings.backend, settings.inpaint_radius, job.alpha())
        for row, (image, error) in enumerate(steps):
            images[row], errors[row] = image, error
            tick()
        candidates.add(chain.direction, chain.targets, images, errors)
    yield from _blended(job, candidates, flow, tick, lambda index: frames[index].numpy())
    _remove_flow_entry(flow)


class _Stream:
    """A streamed segment's frames and flows: decoded and flowed a chunk at a time, in order."""

    def __init__(self, job: SegmentJob) -> None:
        self.job = job
        self.decoded = iter_read_frames(job.index, job.plan.loaded, job.source)
        self.frames: dict[int, np.ndarray] = {}
        self.next = 0
        self.flow: FlowPairs | None = None
        self.flow_start = self.flow_stop = 0

    def frame(self, index: int) -> np.ndarray:
        while self.next <= index:
            self.frames[self.next] = to_float(next(self.decoded))
            self.next += 1
        return self.frames[index]

    def between(self, source: int, target: int) -> tuple[torch.Tensor, torch.Tensor]:
        first = min(source, target)
        if not (self.flow_start <= first and max(source, target) < self.flow_stop):
            self._advance(first)
        return self.flow.between(source - self.flow_start, target - self.flow_start)

    def _advance(self, first: int) -> None:
        last = min(first + self.job.chunk, len(self.job.plan.loaded) - 1)
        self.frame(last)
        for index in [index for index in self.frames if index < first]:
            del self.frames[index]
        batch = torch.from_numpy(np.stack([self.frames[index] for index in range(first, last + 1)]))
        _remove_flow_entry(self.flow)
        settings = self.job.settings
        self.flow = estimate_flow(batch, consecutive_pairs(len(batch)), settings.flow, settings.occlusion_alpha,
                                  settings.occlusion_beta)
        self.flow_start, self.flow_stop = first, last + 1

    def close(self) -> None:
        _remove_flow_entry(self.flow)
        self.decoded.close()


class _StreamedCandidates:
    """The forward chain of a streamed segment, advanced as the blend asks for its frames (in order)."""

    def __init__(self, chain, steps: Iterator[tuple[np.ndarray, np.ndarray]], tick: Tick) -> None:
        self.targets = chain.targets
        self.steps, self.tick = steps, tick
        self.position = 0

    def has(self, frame: int, direction: str) -> bool:
        return direction == FORWARD and frame in self.targets

    def candidate(self, frame: int, direction: str) -> tuple[np.ndarray, np.ndarray]:
        if direction != FORWARD or self.targets[self.position] != frame:
            raise RuntimeError(f"streamed chain asked for frame {frame} {direction} out of order")
        image, error = next(self.steps)
        self.position += 1
        self.tick()
        return image.astype(np.float16).astype(np.float32), error


def _streamed(job: SegmentJob, tick: Tick) -> Iterator[np.ndarray]:
    plan, settings = job.plan, job.settings
    chain = plan.chains[0]
    stream = _Stream(job)
    try:
        steps = iter_chain(stream.frame, job.styles[chain.key], chain.key, chain.targets, stream.between,
                           settings.params, settings.weights, settings.temporal_nnf_init, settings.backend,
                           settings.inpaint_radius, job.alpha())
        yield from _blended(job, _StreamedCandidates(chain, steps, tick), None, tick, stream.frame)
    finally:
        stream.close()


def _blended(job: SegmentJob, candidates, flow: FlowPairs | None, tick: Tick,
             source: Callable[[int], np.ndarray]) -> Iterator[np.ndarray]:
    """The blended frames as uint8; with a region, composited over the source frames (``source(local)``)."""
    plan, settings = job.plan, job.settings
    blended = blend_segment(candidates, flow, plan.local(plan.previous_key), plan.local(plan.next_key),
                            plan.local_frames, settings.histogram, settings.poisson, settings.poisson_weights)
    for frame, (image, _) in zip(plan.local_frames, blended):
        image = torch.from_numpy(image)
        if job.region is not None:
            image = composite_region(image, torch.from_numpy(source(frame)), job.region.alpha(frame))
        yield to_uint8(image).numpy()
        tick()


def run_segment(job: SegmentJob, progress: Tick | None = None) -> Iterator[np.ndarray]:
    """Compute one segment's output frames (module docstring), in frame order.

    Args:
        job: the :class:`SegmentJob`.
        progress: optional ``progress()`` called after every synthesized and every blended frame; it may raise
            to interrupt (nothing of the segment is kept then, except its cached flows).

    Yields:
        ``len(job.plan.frames)`` uint8 ``[H,W,3]`` RGB frames, the segment's frames of the output video.

    Raises:
        InputError: the source no longer gives the indexed frames (the message names the frame), or a setting
            the engine did not check first.
    """
    tick = progress or (lambda: None)
    if job.plan.streamed:
        return _streamed(job, tick)
    return _held(job, tick)
