"""The memory guard: one segment's peak need, estimated before any work, against the memory available.

The engine holds one segment at a time (the local executor) or a few (``max_in_flight``), so its peak is
set by the longest segment, the frame size and the settings, never by the video's length. Per pixel:

* each frame a held segment decodes: uint8 + float32 RGB, 15 bytes;
* each consecutive flow pair: two flows and two occlusion masks in float32, 24 bytes (memory-mapped
  from the cache, but resident while the segment runs);
* each synthesized frame of a held chain: float16 candidate + float32 error, 10 bytes;
* the working set of one synthesis and blend (pyramids, guides, NNF, error, Lab images, Poisson
  transforms): :data:`WORK_BYTES`, measured with ``benchmarks/long_video.py --segment-memory``.

A streamed segment (one forward chain) holds one chunk of frames and flows whatever its length. An
executor that returns a segment's frames as one array (Ray: a task's result) also holds its whole output,
3 bytes per pixel per frame (``whole_output``), a streamed one included.
A held segment too long to fit is nearly always the head before the first keyframe or two keyframes far
apart; the message says which frames, how much they need, and which setting to change.
"""

from __future__ import annotations

from ..common.errors import InputError, format_input_error
from ..common.memory import DEFAULT_BUDGET_FRACTION, available_bytes
from .plan import SegmentPlan

FRAME_BYTES = 3 + 12
FLOW_BYTES = 24
CANDIDATE_BYTES = 10
OUTPUT_BYTES = 3
#: Working set of one synthesis + blend per pixel. Measured (``--segment-memory --fast``, 256², after numba
#: compiled): a held segment of K = 6 / 12 / 24 added 660 / 812 / 1592 bytes per pixel to the process, i.e.
#: about 52 per frame and 350 on top; the estimate (749 / 1103 / 1811) stays above that.
WORK_BYTES = 400


def segment_bytes(plan: SegmentPlan, height: int, width: int, chunk: int, whole_output: bool = False) -> int:
    """Estimated peak bytes of one segment's job at ``height × width`` (module docstring).

    Example:
        >>> from rerender_video.common.keyframes import Keyframes
        >>> from rerender_video.segments.plan import plan_segments
        >>> two_sided, tail = plan_segments(Keyframes((0, 12), 40))
        >>> segment_bytes(two_sided, 100, 100, 16) // 10_000, segment_bytes(tail, 100, 100, 16) // 10_000
        (1103, 1039)
    """
    pixels = height * width
    output = len(plan.frames) * OUTPUT_BYTES if whole_output else 0
    if plan.streamed:
        frames = min(chunk, len(plan.loaded) - 1) + 1
        return pixels * (frames * FRAME_BYTES + (frames - 1) * FLOW_BYTES + WORK_BYTES + output)
    frames = len(plan.loaded)
    targets = sum(len(chain.targets) for chain in plan.chains)
    return pixels * (frames * FRAME_BYTES + (frames - 1) * FLOW_BYTES + targets * CANDIDATE_BYTES + WORK_BYTES
                     + output)


def check_memory(plans: list[SegmentPlan], height: int, width: int, chunk: int, in_flight: int = 1,
                 budget_fraction: float = DEFAULT_BUDGET_FRACTION, whole_output: bool = False) -> int:
    """Raise before any work when the largest segment (times ``in_flight``) cannot fit in memory
    (``whole_output``: as :func:`segment_bytes`).

    Returns:
        The estimated peak bytes of the largest segment.

    Raises:
        InputError: naming the segment's frames, the bytes needed and available, and the settings to change.
    """
    largest = max(plans, key=lambda plan: segment_bytes(plan, height, width, chunk, whole_output))
    need = segment_bytes(largest, height, width, chunk, whole_output) * max(in_flight, 1)
    budget = int(available_bytes() * budget_fraction)
    if need <= budget:
        return need // max(in_flight, 1)
    frames = largest.frames
    fixes = []
    if largest.previous_key is None and largest.next_key is not None:
        fixes.append(f"add a keyframe at or near frame {frames.start}: frames {frames.start}-{frames.stop - 1} "
                     f"are propagated backward from keyframe {largest.next_key} in one piece")
    else:
        fixes.append(f"add keyframes between {largest.previous_key} and {largest.next_key} (lower the keyframe "
                     "interval K)")
        fixes.append("use direction 'forward': forward-only segments are streamed a chunk at a time")
    fixes.append(f"lower custom_width / custom_height (now {width}x{height})")
    raise InputError(format_input_error(
        "keyframes", f"segments whose frames, flows and candidates fit in memory ({budget / 2**30:.1f} GiB usable)",
        f"frames {frames.start}-{frames.stop - 1} needing {need / 2**30:.1f} GiB at {width}x{height}", fixes))
