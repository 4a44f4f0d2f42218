"""Keyframe selection shared by flow, propagation and the keyframe renderer: the KEYFRAMES object.

Rules (Rerender §4; propagation/ALGORITHM.md §13):

* **uniform**: every ``interval``-th frame starting at frame 0 (``0, K, 2K, …``). Frame 0 is the
  *anchor*. Frames after the last keyframe are propagated forward only; no extra keyframe is forced
  at the end (that would cost a diffusion render for a short tail).
* **explicit**: a user list such as ``"0, 12, 30"``; frames before the first keyframe are propagated
  backward only.
* **scene_cuts**: uniform within each shot, restarting at every shot start found by
  :func:`common.scene_cuts.detect_scene_cuts`; no frame is propagated across a cut.
* **adaptive**: a keyframe budget placed where propagation is predicted to fail, with a keyframe on
  each side of every cut (:mod:`common.adaptive_keyframes`, costs from :mod:`metrics.keyframe_cost`).

Intervals between consecutive keyframes may differ; propagation and blending handle that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from .checks import check_indices
from .errors import input_error
from .settings import declare


@dataclass(frozen=True)
class Keyframes:
    """The KEYFRAMES object: sorted, unique keyframe indices into a video of ``frame_count`` frames.

    Attributes:
        indices: sorted frame indices (0-based, in loaded-frame numbering).
        frame_count: number of frames of the video.
        mode: how they were chosen (``"uniform"``, ``"explicit"``, ``"scene_cuts"``, ``"adaptive"``).
        shot_starts: frames that start a new shot (after a cut); propagation never crosses them.
    """

    indices: tuple[int, ...]
    frame_count: int
    mode: str = "explicit"
    shot_starts: tuple[int, ...] = ()

    @property
    def anchor(self) -> int:
        """The first keyframe, rendered first; every later keyframe attends to it."""
        return self.indices[0]

    def segments(self) -> list[tuple[int | None, int | None, range]]:
        """Frames between keyframes: ``(previous_key, next_key, frames)`` triples covering the video.

        ``previous_key`` is ``None`` for frames before the first keyframe (and for frames of a shot
        that starts after ``previous_key``), ``next_key`` is ``None`` after the last keyframe (and
        when a shot starts between the frames and ``next_key``). Keyframes are in no ``frames`` range.

        Example:
            >>> Keyframes((0, 4), 7).segments()
            [(0, 4, range(1, 4)), (4, None, range(5, 7))]
            >>> Keyframes((0, 3, 5), 8, "scene_cuts", shot_starts=(5,)).segments()
            [(0, 3, range(1, 3)), (3, None, range(4, 5)), (5, None, range(6, 8))]
        """
        bounds = [None, *self.indices, None]
        segments = []
        for previous_key, next_key in zip(bounds[:-1], bounds[1:]):
            start = 0 if previous_key is None else previous_key + 1
            stop = self.frame_count if next_key is None else next_key
            segments.extend(self._split_at_shots(previous_key, next_key, start, stop))
        return segments

    def _split_at_shots(self, previous_key, next_key, start, stop):
        cuts = [cut for cut in self.shot_starts if start < cut <= stop]
        edges = [start, *cuts, stop]
        pieces = []
        for piece, (first, end) in enumerate(zip(edges[:-1], edges[1:])):
            before = previous_key if piece == 0 else None
            after = next_key if piece == len(edges) - 2 and end == stop and stop not in cuts else None
            if end > first:
                pieces.append((before, after, range(first, end)))
        return pieces


def uniform(frame_count: int, interval: int) -> Keyframes:
    """Every ``interval``-th frame from frame 0.

    Raises:
        InputError: ``interval`` < 1, or ``interval`` ≥ ``frame_count`` with more than one frame
            (only one keyframe: nothing to blend between).

    Example:
        >>> uniform(25, 10).indices
        (0, 10, 20)
    """
    if interval < 1:
        raise input_error("keyframe_interval", "an interval K >= 1", interval, "use 5 to 20, as the paper does")
    if frame_count > 1 and interval >= frame_count:
        raise input_error("keyframe_interval", f"an interval smaller than the frame count ({frame_count})",
                          interval, f"use at most {frame_count - 1}, or list keyframes explicitly")
    return Keyframes(tuple(range(0, frame_count, interval)), frame_count, "uniform")


def parse_list(text: str, frame_count: int) -> Keyframes:
    """Keyframes from a comma- or space-separated list, e.g. ``"0, 12, 30"``.

    Raises:
        InputError: text that is not a list of integers, an empty list, an index out of range or a
            duplicate.

    Example:
        >>> parse_list("0, 8 16", 20).indices
        (0, 8, 16)
    """
    tokens = [token for token in re.split(r"[,\s;]+", text.strip()) if token]
    bad = [token for token in tokens if not re.fullmatch(r"\d+", token)]
    if bad:
        raise input_error("keyframe_indices", "comma-separated frame numbers such as '0, 10, 20'", bad,
                          "write whole, non-negative frame numbers")
    indices = check_indices([int(token) for token in tokens], frame_count, "keyframe_indices")
    return Keyframes(tuple(indices), frame_count, "explicit")


def scene_aware(frame_count: int, interval: int, shot_starts: Sequence[int]) -> Keyframes:
    """Uniform keyframes restarted at every shot start, so a cut always begins a new keyframe.

    Example:
        >>> scene_aware(30, 10, [12]).indices
        (0, 10, 12, 22)
    """
    if interval < 1:
        raise input_error("keyframe_interval", "an interval K >= 1", interval, "use 5 to 20, as the paper does")
    starts = sorted({0, *(int(s) for s in shot_starts if 0 < int(s) < frame_count)})
    ends = [*starts[1:], frame_count]
    indices = [index for start, end in zip(starts, ends) for index in range(start, end, interval)]
    return Keyframes(tuple(indices), frame_count, "scene_cuts", tuple(starts[1:]))


def resolve(frame_count: int, interval: int = 0, explicit: str = "",
            keyframes: Keyframes | None = None) -> Keyframes:
    """Pick keyframes the way the nodes expose them: a KEYFRAMES input wins, then an explicit list,
    then the uniform interval.

    Raises:
        InputError: from :func:`uniform` / :func:`parse_list`, or a KEYFRAMES object made for a video
            of another length.
    """
    if keyframes is not None:
        if keyframes.frame_count != frame_count:
            raise input_error("keyframes", f"KEYFRAMES for {frame_count} frames",
                              f"KEYFRAMES for {keyframes.frame_count} frames",
                              "connect the Keyframe Selection node to the same frames")
        return keyframes
    if explicit.strip():
        return parse_list(explicit, frame_count)
    return uniform(frame_count, interval)


def resolve_batch(batch_count: int, interval: int = 0, explicit: str = "",
                  keyframes: Keyframes | None = None) -> tuple[Keyframes, tuple[int, ...]]:
    """:func:`resolve` for an IMAGE batch that is the whole video or only its keyframes.

    A batch is *keyframes-only* when a KEYFRAMES input is given, the batch holds exactly one image per
    keyframe and the KEYFRAMES is of a longer video (Load Video with its ``keyframes`` input connected):
    row ``i`` is then keyframe ``i``, and frame indices stay the video's.

    Returns:
        ``(keyframes, rows)``: the keyframes and the video frame index of every row of the batch
        (``0 … N-1`` for a whole video).

    Raises:
        InputError: as :func:`resolve`.

    Example:
        >>> chosen, rows = resolve_batch(3, keyframes=uniform(25, 10))
        >>> chosen.frame_count, rows
        (25, (0, 10, 20))
    """
    if keyframes is not None and keyframes.frame_count != batch_count and batch_count == len(keyframes.indices):
        return keyframes, tuple(int(index) for index in keyframes.indices)
    chosen = resolve(batch_count, interval, explicit, keyframes)
    return chosen, tuple(range(batch_count))


def from_indices(indices: Sequence[int], frame_count: int, mode: str = "explicit") -> Keyframes:
    """Validated :class:`Keyframes` from a sequence of indices (sorted; no duplicates allowed)."""
    return Keyframes(tuple(check_indices(indices, frame_count, "keyframe_indices")), frame_count, mode)


#: The keyframe choice of the nodes that take one (interval K, or an explicit list; see :func:`resolve`).
KEYFRAME_INTERVAL = declare("keyframe_interval", 10, "K: keyframes at frames 0, K, 2K, … (used when keyframe_indices "
                                                     "is empty and no KEYFRAMES input is connected). The paper uses "
                                                     "5-20.", min=1, max=10000,
                            help="K: keyframes at frames 0, K, 2K, … (used when --keyframe-indices is empty); the "
                                 "paper uses 5-20")
KEYFRAME_INDICES = declare("keyframe_indices", "", "Explicit keyframe frame numbers, e.g. '0, 12, 30' (0-based); "
                                                   "overrides the interval. A KEYFRAMES input overrides both.",
                           help="explicit keyframe frame numbers, e.g. '0,12,30' (0-based); overrides the interval")
