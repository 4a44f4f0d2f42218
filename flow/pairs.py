"""Which frame pairs get an optical flow: the pair modes of Rerender Estimate Flow.

Each pair ``(source, target)`` stores both directions (:class:`flow.types.FlowPairs`), so a pair
serves warping either way. The modes (Rerender §4; propagation/ALGORITHM.md §14):

* ``consecutive``: ``(i, i+1)`` for every ``i`` — what propagation needs to chain frame to frame
  (``N-1`` pairs for ``N`` frames).
* ``keyframes``: every frame with its previous and its next keyframe (``(key, frame)``), every
  keyframe with the previous keyframe and with the anchor (``(previous_key, key)``,
  ``(anchor, key)``) — what the keyframe stage and direct keyframe-to-frame warps need.
* ``consecutive+keyframes``: both; a pair already present in the other order is not repeated.
"""

from __future__ import annotations

from ..common.errors import NodeFix, input_error
from ..common.keyframes import Keyframes

PAIR_MODES = ("consecutive", "keyframes", "consecutive+keyframes")


def _check_frame_count(frame_count: int) -> None:
    if frame_count < 2:
        raise input_error("frames", "at least 2 frames to compute optical flow between",
                          f"{frame_count} frame(s)", "load more frames (frame_load_cap 0 loads them all)")


def consecutive_pairs(frame_count: int) -> list[tuple[int, int]]:
    """Pairs ``(i, i+1)`` for ``i = 0 … N-2``.

    Raises:
        InputError: fewer than 2 frames.

    Example:
        >>> consecutive_pairs(4)
        [(0, 1), (1, 2), (2, 3)]
    """
    _check_frame_count(frame_count)
    return [(index, index + 1) for index in range(frame_count - 1)]


def keyframe_to_keyframe_pairs(keyframes: Keyframes) -> list[tuple[int, int]]:
    """The pairs of the keyframe stage only: for every keyframe after the anchor, ``(anchor, key)`` and
    ``(previous_key, key)`` (one pair when they coincide) — all a batch of just the keyframes can give.

    Raises:
        InputError: fewer than 2 frames.

    Example:
        >>> from rerender_video.common.keyframes import Keyframes
        >>> keyframe_to_keyframe_pairs(Keyframes((0, 3, 6), 8))
        [(0, 3), (0, 6), (3, 6)]
    """
    _check_frame_count(keyframes.frame_count)
    keys = keyframes.indices
    pairs: list[tuple[int, int]] = []
    for previous_key, key in zip(keys[:-1], keys[1:]):
        pairs.append((keyframes.anchor, key))
        if previous_key != keyframes.anchor:
            pairs.append((previous_key, key))
    return pairs


def keyframe_pairs(keyframes: Keyframes) -> list[tuple[int, int]]:
    """Pairs for the keyframe stage and keyframe-to-frame warps, keyframe first.

    In order: for every keyframe after the anchor, ``(anchor, key)`` and ``(previous_key, key)``
    (one pair when they coincide); then for every other frame ``(previous_key, frame)`` and
    ``(next_key, frame)`` where those keyframes exist.

    Raises:
        InputError: fewer than 2 frames.

    Example:
        >>> from rerender_video.common.keyframes import Keyframes
        >>> keyframe_pairs(Keyframes((0, 3, 6), 8))
        [(0, 3), (0, 6), (3, 6), (0, 1), (3, 1), (0, 2), (3, 2), (3, 4), (6, 4), (3, 5), (6, 5), (6, 7)]
    """
    pairs = keyframe_to_keyframe_pairs(keyframes)
    for previous_key, next_key, frames in keyframes.segments():
        for frame in frames:
            pairs.extend((key, frame) for key in (previous_key, next_key) if key is not None)
    return pairs


def pairs_for_mode(mode: str, frame_count: int, keyframes: Keyframes | None = None) -> list[tuple[int, int]]:
    """The pairs of a pair mode (see the module docstring), without repeats in either order.

    Args:
        mode: one of :data:`PAIR_MODES`.
        frame_count: number of frames ``N``.
        keyframes: required for the modes with keyframes (:func:`common.keyframes.resolve`).

    Raises:
        InputError: an unknown mode, fewer than 2 frames, missing keyframes, or keyframes made
            for another frame count.

    Example:
        >>> from rerender_video.common.keyframes import Keyframes
        >>> pairs_for_mode("consecutive+keyframes", 4, Keyframes((0, 2), 4))
        [(0, 1), (1, 2), (2, 3), (0, 2)]
    """
    if mode not in PAIR_MODES:
        raise input_error("pair_mode", f"one of {', '.join(PAIR_MODES)}", repr(mode),
                          "pick consecutive for propagation, keyframes for the keyframe stage")
    _check_frame_count(frame_count)
    candidates: list[tuple[int, int]] = []
    if "consecutive" in mode:
        candidates += consecutive_pairs(frame_count)
    if "keyframes" in mode:
        if keyframes is None:
            raise input_error("keyframes", f"keyframes for pair_mode {mode}", "none",
                              ["set keyframe_interval or keyframe_indices", NodeFix("connect a KEYFRAMES")])
        if keyframes.frame_count != frame_count:
            raise input_error("keyframes", f"KEYFRAMES for {frame_count} frames",
                              f"KEYFRAMES for {keyframes.frame_count} frames",
                              "make the keyframes from the same frames")
        candidates += keyframe_pairs(keyframes)
    pairs, seen = [], set()
    for source, target in candidates:
        unordered = (min(source, target), max(source, target))
        if unordered not in seen:
            seen.add(unordered)
            pairs.append((source, target))
    return pairs
