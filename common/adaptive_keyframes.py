"""Adaptive keyframe placement: the keyframes that minimise a predicted propagation cost, under a budget.

Given, for every frame ``k`` and distance ``d``, the predicted cost of a frame reached from keyframe
``k`` by propagating ``d`` frames forward (``forward[k, d−1]``, the frame ``k+d``) or backward
(``backward[k, d−1]``, the frame ``k−d``), a frame between keyframes ``a < n < b`` costs
``min(forward[a, n−a−1], backward[b, b−n−1])`` (the temporal blend keeps the better candidate) and a
frame after the last keyframe ``a`` costs ``forward[a, n−a−1]``; keyframes cost nothing. The placement
minimises the total over the video by dynamic programming, exactly, under these rules:

* at most ``budget`` keyframes (the comparison with uniform keyframes is at equal count);
* frame 0 is a keyframe (the anchor), and so are both sides of every shot cut — the last frame of a shot
  and the first of the next — so no propagation crosses a cut and no shot ends far from a keyframe;
* consecutive keyframes are at least ``min_spacing`` and at most ``max_spacing`` frames apart (two
  required keyframes of a cut are exempt from the minimum); the frames after the last keyframe are
  fewer than ``max_spacing``.

What the costs mean (a predicted error, from the source video) is up to the caller:
:mod:`metrics.keyframe_cost` gives the ones the ``adaptive`` mode uses. Time ``O(N·S²)`` for the segment
costs and ``O(N·S·M)`` for the search (``N`` frames, ``S = max_spacing``, ``M = budget``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import input_error
from .keyframes import Keyframes

MODE = "adaptive"


def required_keyframes(frame_count: int, shot_starts: Sequence[int]) -> list[int]:
    """Frame 0 and both sides of every cut: the keyframes every adaptive placement contains.

    Example:
        >>> required_keyframes(30, [12, 20])
        [0, 11, 12, 19, 20]
    """
    required = {0}
    for start in shot_starts:
        if 0 < int(start) < frame_count:
            required.update((int(start) - 1, int(start)))
    return sorted(required)


def segment_costs(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """``costs[a, g]``: total cost of the frames strictly between keyframes ``a`` and ``a+g`` (``g = 1…S``).

    Args:
        forward, backward: ``[N,S]`` per-frame costs (module docstring); ``inf`` where a frame cannot be
            reached (past the video's end or across a cut).

    Returns:
        float64 ``[N, S+1]``; column 0 is unused (``inf``), ``inf`` where ``a+g`` is past the end.

    Example:
        >>> f = np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]]); b = f.copy()
        >>> segment_costs(f, b)[0].tolist()    # a=0: g=1 has no frame between, g=2 has frame 1 at cost 1
        [inf, 0.0, 1.0]
    """
    count, span = forward.shape
    costs = np.full((count, span + 1), np.inf)
    for gap in range(1, span + 1):
        starts = np.arange(count - gap)
        total = np.zeros(len(starts))
        for step in range(1, gap):
            total += np.minimum(forward[starts, step - 1], backward[starts + gap, gap - step - 1])
        costs[starts, gap] = total
    return costs


def tail_costs(forward: np.ndarray) -> np.ndarray:
    """``costs[a]``: total cost of the frames after keyframe ``a`` to the end if ``a`` is the last keyframe.

    ``inf`` when the tail is longer than the ``S`` columns of ``forward`` or crosses a cut.

    Example:
        >>> tail_costs(np.array([[1.0, 5.0], [1.0, np.inf], [np.inf, np.inf]])).tolist()
        [6.0, 1.0, 0.0]
    """
    count, span = forward.shape
    costs = np.full(count, np.inf)
    for start in range(count):
        length = count - 1 - start
        if length <= span:
            costs[start] = float(forward[start, :length].sum())
    return costs


def _check(frame_count: int, forward: np.ndarray, backward: np.ndarray, budget: int, min_spacing: int,
           max_spacing: int, required: list[int]) -> None:
    if forward.shape != backward.shape or forward.ndim != 2 or forward.shape[0] != frame_count:
        raise input_error("costs", f"forward and backward costs [{frame_count}, S]",
                          f"{list(forward.shape)} and {list(backward.shape)}")
    if min_spacing < 1:
        raise input_error("min_spacing", "at least 1 frame between keyframes", min_spacing, "use 2")
    if max_spacing < max(min_spacing, 1) or max_spacing > forward.shape[1]:
        raise input_error("max_spacing", f"a spacing from min_spacing ({min_spacing}) to {forward.shape[1]}",
                          max_spacing, f"use {max(min_spacing, min(forward.shape[1], 30))}")
    if budget < len(required):
        raise input_error("max_keyframes", f"at least {len(required)} keyframes: frame 0 and both sides of "
                          f"each of the {(len(required) - 1) // 2} shot cuts need one", budget,
                          [f"allow {len(required)} keyframes or more (or lower keyframe_interval)",
                           "raise cut_threshold to find fewer cuts"])


def adaptive(frame_count: int, forward: np.ndarray, backward: np.ndarray, budget: int, min_spacing: int = 2,
             max_spacing: int = 30, shot_starts: Sequence[int] = ()) -> Keyframes:
    """Keyframes minimising the predicted cost under the budget and spacing rules (module docstring).

    Args:
        frame_count: frames of the video ``N``.
        forward, backward: ``[N,S]`` float per-frame costs, ``S >= max_spacing``; ``inf`` = unreachable.
        budget: the most keyframes to place (``max_keyframes``).
        min_spacing, max_spacing: allowed distance between consecutive keyframes, frames.
        shot_starts: first frames of the shots after the first (cuts), from :mod:`common.scene_cuts`.

    Returns:
        :class:`Keyframes` with ``mode="adaptive"`` and the shot starts. Equal costs are resolved the same
        way every time, so equal inputs give equal keyframes.

    Raises:
        InputError: costs of the wrong shape, a spacing out of range, a budget below the required keyframes,
            or rules that no placement satisfies (the message says which widget to relax).

    Example:
        >>> grow = np.tile(np.arange(1.0, 5.0), (10, 1))   # cost 1, 2, 3, 4 at 1, 2, 3, 4 frames away
        >>> adaptive(10, grow, grow, budget=3, min_spacing=2, max_spacing=4).indices
        (0, 4, 7)
        >>> adaptive(10, grow, grow, budget=4, min_spacing=1, max_spacing=4, shot_starts=[6]).indices
        (0, 3, 5, 6)
    """
    forward = np.asarray(forward, dtype=np.float64)
    backward = np.asarray(backward, dtype=np.float64)
    shot_starts = sorted({int(start) for start in shot_starts if 0 < int(start) < frame_count})
    required = required_keyframes(frame_count, shot_starts)
    _check(frame_count, forward, backward, budget, min_spacing, max_spacing, required)
    is_required = np.zeros(frame_count, dtype=bool)
    is_required[required] = True
    next_required = np.full(frame_count, frame_count, dtype=np.int64)  # first required keyframe after each frame
    for frame in range(frame_count - 2, -1, -1):
        next_required[frame] = frame + 1 if is_required[frame + 1] else next_required[frame + 1]
    segments = segment_costs(forward[:, :max_spacing], backward[:, :max_spacing])
    tails = tail_costs(forward[:, :max_spacing - 1])

    best = np.full((budget + 1, frame_count), np.inf)     # best[m, b]: m keyframes, the last at b
    parent = np.full((budget + 1, frame_count), -1, dtype=np.int64)
    best[1, 0] = 0.0
    for end in range(1, frame_count):
        for gap in range(1, min(max_spacing, end) + 1):
            start = end - gap
            if end > next_required[start] or (gap < min_spacing and not (is_required[start] and is_required[end])):
                continue
            candidate = best[:-1, start] + segments[start, gap]
            better = candidate < best[1:, end]
            best[1:, end][better] = candidate[better]
            parent[1:, end][better] = start
    last_required = required[-1]
    totals = best + tails[None, :]
    totals[:, :last_required] = np.inf
    if not np.isfinite(totals).any():
        raise input_error("max_spacing", f"room for keyframes at most {max_spacing} frames apart within "
                          f"{budget} keyframes over {frame_count} frames", f"max_spacing {max_spacing}, "
                          f"min_spacing {min_spacing}, max_keyframes {budget}",
                          ["raise max_spacing", "allow more keyframes (max_keyframes or a smaller "
                           "keyframe_interval)", "lower min_spacing"])
    count, last = np.unravel_index(int(np.argmin(totals)), totals.shape)
    indices = [int(last)]
    while count > 1:
        indices.append(int(parent[count, indices[-1]]))
        count -= 1
    return Keyframes(tuple(reversed(indices)), frame_count, MODE, tuple(shot_starts))
