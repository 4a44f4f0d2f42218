"""The segment plan: which pieces of work a video splits into between its keyframes (pure, no I/O).

A *segment* is the run of frames between two keyframes (``Keyframes.segments()``: two-sided segments,
the one-sided head before the first keyframe and tail after the last, and the pieces a shot start
splits off, so no segment crosses a cut). Its job needs the loaded frames from its left keyframe to its
right one (both keyframes' frames included: the chains start there), the stylized keyframes its chains
start from, and it outputs the frames strictly between. The chains are those of
:func:`propagation.sequence.plan_chains` (the same rule as EbSynth Propagate), renumbered from the
segment's first loaded frame (*local* numbering), so a job never sees the video's other frames.

A segment whose only chain runs forward (a tail, or every segment with ``direction="forward"``) is
*streamed*: its frames are decoded, flowed and synthesized in order, a chunk at a time, so even a
4,000-frame tail after a single keyframe holds a chunk in memory. Other segments hold their frames,
flows and both chains (bounded by the keyframe interval; see :mod:`segments.memory`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..common.errors import input_error
from ..common.keyframes import Keyframes
from ..propagation.result import FORWARD
from ..propagation.sequence import plan_chains


@dataclass(frozen=True)
class ChainPlan:
    """One chain of a segment, in local numbering.

    Attributes:
        key: local index of the keyframe the chain starts from.
        direction: ``"forward"`` or ``"backward"``.
        targets: local indices of the frames it synthesizes, nearest to the keyframe first.
        keyframe_position: position of its keyframe in the KEYFRAMES (its stylized image's row).
    """

    key: int
    direction: str
    targets: tuple[int, ...]
    keyframe_position: int


@dataclass(frozen=True)
class SegmentPlan:
    """One segment of the video.

    Attributes:
        number: position in the plan (0-based).
        previous_key: the left keyframe's loaded index, or ``None`` (head, or after a shot start).
        next_key: the right keyframe's loaded index, or ``None`` (tail, or before a shot start).
        frames: the loaded indices it outputs (ascending, no keyframe).
        start: first loaded index the job decodes (local index 0).
        stop: one past the last loaded index it decodes.
        chains: its chains in local numbering.
    """

    number: int
    previous_key: int | None
    next_key: int | None
    frames: range
    start: int
    stop: int
    chains: tuple[ChainPlan, ...]

    @property
    def loaded(self) -> range:
        """Loaded indices the job decodes: ``range(start, stop)``."""
        return range(self.start, self.stop)

    @property
    def streamed(self) -> bool:
        """True when the segment's one chain runs forward: it is computed and output frame by frame."""
        return len(self.chains) == 1 and self.chains[0].direction == FORWARD

    @property
    def local_frames(self) -> range:
        """The output frames in local numbering."""
        return range(self.frames.start - self.start, self.frames.stop - self.start)

    def local(self, index: int | None) -> int | None:
        """A loaded index in local numbering (``None`` stays ``None``)."""
        return None if index is None else index - self.start

    def describe(self) -> str:
        """e.g. ``frames 13-23 (keyframes 12, 24; forward + backward)``."""
        keys = ", ".join("-" if key is None else str(key) for key in (self.previous_key, self.next_key))
        chains = " + ".join(chain.direction for chain in self.chains)
        return f"frames {self.frames.start}-{self.frames.stop - 1} (keyframes {keys}; {chains})"


def plan_segments(keyframes: Keyframes, direction: str = "both") -> list[SegmentPlan]:
    """Split a video into segments (module docstring).

    Args:
        keyframes: the KEYFRAMES of the loaded video.
        direction: ``"both"``, ``"forward"`` or ``"backward"`` between keyframes (as EbSynth Propagate).

    Returns:
        The segments in frame order; together with the keyframes they cover every loaded frame once.

    Raises:
        InputError: an unknown direction; frames that no keyframe reaches (a shot without a keyframe).

    Example:
        >>> from rerender_video.common.keyframes import Keyframes
        >>> plans = plan_segments(Keyframes((2, 6), 9))
        >>> for plan in plans: print(plan.describe())
        frames 0-1 (keyframes -, 2; backward)
        frames 3-5 (keyframes 2, 6; backward + forward)
        frames 7-8 (keyframes 6, -; forward)
        >>> plans[1].loaded, plans[1].chains[0].targets, plans[2].streamed
        (range(2, 7), (3, 2, 1), True)
    """
    chains = plan_chains(keyframes, direction)
    positions = {key: position for position, key in enumerate(keyframes.indices)}
    plans = []
    for previous_key, next_key, frames in keyframes.segments():
        mine = [(key, chain_direction, targets) for key, chain_direction, targets in chains if targets[0] in frames]
        if not mine:
            raise input_error("keyframes", f"a keyframe in the shot of frames {frames.start}-{frames.stop - 1}",
                              f"keyframes {list(keyframes.indices)} with shot starts {list(keyframes.shot_starts)}",
                              "add a keyframe inside that shot (Keyframe Selection's scene_cuts mode does)")
        start = min(min(key, *targets) for key, _, targets in mine)
        stop = max(max(key, *targets) for key, _, targets in mine) + 1
        local = tuple(ChainPlan(key - start, chain_direction, tuple(t - start for t in targets), positions[key])
                      for key, chain_direction, targets in mine)
        plans.append(SegmentPlan(len(plans), previous_key, next_key, frames, start, stop, local))
    return plans


def output_order(keyframes: Keyframes, plans: list[SegmentPlan]) -> list[tuple[str, int]]:
    """The video in frame order as ``("keyframe", position)`` and ``("segment", number)`` items.

    Example:
        >>> from rerender_video.common.keyframes import Keyframes
        >>> k = Keyframes((2, 6), 9)
        >>> output_order(k, plan_segments(k))
        [('segment', 0), ('keyframe', 0), ('segment', 1), ('keyframe', 1), ('segment', 2)]
    """
    items = [(key, ("keyframe", position)) for position, key in enumerate(keyframes.indices)]
    items += [(plan.frames.start, ("segment", plan.number)) for plan in plans]
    return [item for _, item in sorted(items)]
