"""What a keyframe reads and runs, derived once from the settings (paper §4.1; ``keyframe/ALGORITHM.md`` §9).

:class:`KeyframePlan` is pure (no tensor, no model): for ``S`` sampled steps and the
:class:`~keyframe.settings.ConstraintSettings` it gives

* the steps each constraint acts on, and the step where pass 2 (pixel-aware fusion) starts;
* the model steps of the anchor and of a later keyframe (the progress units);
* the flow pairs a later keyframe ``k`` reads: ``(anchor, k)`` when shape- or pixel-aware fusion
  acts on some step, ``(previous keyframe, k)`` when pixel-aware fusion does.

Every caller asks it: :func:`keyframe.render.render_keyframe` reads exactly :meth:`KeyframePlan.flow_pairs`,
the Keyframe Renderer checks those pairs before any model call and hashes exactly them into each
keyframe's cache key, the Cross-Frame Sampler sizes its progress bar with :meth:`KeyframePlan.steps`.
:func:`check_flow` is the one check of a FLOW input against the pairs a plan reads.

Example:
    >>> from .settings import ConstraintSettings
    >>> plan = KeyframePlan(ConstraintSettings(), 20)
    >>> plan.split, plan.steps(later=True), plan.flow_pairs(0, 4, 8)
    (11, 20, [(0, 8), (4, 8)])
    >>> shape_only = KeyframePlan(ConstraintSettings(pixel_fusion=False), 20)
    >>> shape_only.flow_pairs(0, 4, 8), shape_only.steps_per_keyframe(3)
    ([(0, 8)], [20, 20, 20])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ..common.errors import input_error
from .settings import ConstraintSettings

#: What to do when the FLOW lacks pairs (the same advice from the node check and from the render).
FLOW_FIXES = ["set pair_mode on Rerender Estimate Flow to keyframes or consecutive+keyframes, with the same "
              "keyframes (connect the same KEYFRAMES to both nodes)",
              "or switch shape-aware and pixel-aware fusion off (warp_start > warp_end, pixel_fusion off)"]


def planned_steps(total: int, split: int | None, resume: bool = True, rough_render: str = "full") -> int:
    """Model steps one later keyframe runs: pass 1 (to the end, or to ``split`` when ``"early"``) + pass 2.

    Args:
        total: sampled steps ``S``.
        split: first pixel-fusion step, or ``None`` (one pass).
        resume: pass 2 resumed at ``split`` (else from step 0).
        rough_render: ``"full"`` or ``"early"``.

    Example:
        >>> planned_steps(20, 11), planned_steps(20, 11, rough_render="early"), planned_steps(20, None)
        (29, 20, 20)
    """
    if split is None:
        return total
    first = split if rough_render == "early" else total
    return first + (total - split if resume else total)


@dataclass(frozen=True)
class KeyframePlan:
    """The steps and flow pairs of keyframes rendered with ``settings`` at ``total`` sampled steps.

    Attributes:
        settings: the constraint settings.
        total: sampled steps ``S`` (the σ schedule has ``S + 1`` values).
        resume: pass 2 resumes from pass 1's state at the pixel-fusion window (False: from step 0).
    """

    settings: ConstraintSettings
    total: int
    resume: bool = True

    @property
    def cross_steps(self) -> list[int]:
        """Steps with cross-frame attention (and the features the anchor records)."""
        return self.settings.cross_period.steps(self.total)

    @property
    def shape_steps(self) -> list[int]:
        """Steps with shape-aware fusion (they read the flow ``(anchor, k)``)."""
        return self.settings.warp_period.steps(self.total)

    @property
    def pixel_steps(self) -> list[int]:
        """Steps with pixel-aware fusion, in pass 2 (empty when ``pixel_fusion`` is off)."""
        return self.settings.mask_period.steps(self.total) if self.settings.pixel_fusion else []

    @property
    def colour_steps(self) -> list[int]:
        """Steps with AdaIN."""
        return self.settings.ada_period.steps(self.total)

    @property
    def split(self) -> int | None:
        """The first pixel-fusion step, where pass 2 starts differing from pass 1 (``None``: one pass)."""
        steps = self.pixel_steps
        return steps[0] if steps else None

    @property
    def resumes(self) -> bool:
        """Pass 2 resumes from pass 1 (there is a pass 2 and ``resume`` is on)."""
        return self.resume and self.split is not None

    @property
    def rough_early(self) -> bool:
        """Pass 1 stops at the pixel-fusion window (``rough_render="early"`` with a pass 2)."""
        return self.split is not None and self.settings.rough_render == "early"

    @property
    def reads_anchor_flow(self) -> bool:
        """A later keyframe reads the flow ``(anchor, k)``: shape- or pixel-aware fusion acts on some step."""
        return bool(self.shape_steps or self.pixel_steps)

    @property
    def reads_previous_flow(self) -> bool:
        """A later keyframe reads the flow ``(previous keyframe, k)``: pixel-aware fusion acts on some step."""
        return bool(self.pixel_steps)

    def steps(self, later: bool = True) -> int:
        """Model steps of one keyframe: ``S`` for the anchor, pass 1 + pass 2 for a later keyframe."""
        if not later:
            return self.total
        return planned_steps(self.total, self.split, self.resume, self.settings.rough_render)

    def steps_per_keyframe(self, count: int) -> list[int]:
        """Model steps of each of ``count`` keyframes, anchor first (the progress bar's units)."""
        return [self.steps(later=position > 0) for position in range(count)]

    def flow_pairs(self, anchor: int, previous: int, key: int) -> list[tuple[int, int]]:
        """The flow pairs ``(source, key)`` keyframe ``key`` reads, anchor first; none for a source that is
        the keyframe itself (the flow is zero), one when the previous keyframe is the anchor."""
        sources = []
        if self.reads_anchor_flow:
            sources.append(int(anchor))
        if self.reads_previous_flow and int(previous) not in sources:
            sources.append(int(previous))
        return [(source, int(key)) for source in sources if source != int(key)]

    def required_flow_pairs(self, indices: Sequence[int]) -> list[tuple[int, int]]:
        """Every flow pair the keyframe loop reads for keyframes ``indices`` (anchor first, each keyframe's
        previous one is the keyframe before it in the list).

        Example:
            >>> KeyframePlan(ConstraintSettings(), 20).required_flow_pairs([0, 4, 8, 12])
            [(0, 4), (0, 8), (4, 8), (0, 12), (8, 12)]
        """
        anchor = int(indices[0]) if len(indices) else 0
        return [pair for previous, key in zip(indices[:-1], indices[1:])
                for pair in self.flow_pairs(anchor, previous, key)]


def check_flow(flow: Any, pairs: Sequence[tuple[int, int]], frame_size: Sequence[int],
               frame_count: int | None = None) -> None:
    """Raise unless ``flow`` is a FLOW of these frames holding every pair of ``pairs`` (either order).

    Args:
        flow: FLOW (:class:`flow.types.FlowPairs`, or anything with ``between`` and ``frame_size``).
        pairs: the pairs a plan reads (:meth:`KeyframePlan.flow_pairs` / :meth:`KeyframePlan.required_flow_pairs`).
        frame_size: ``(H, W)`` of the frames.
        frame_count: the video's frame count, when known (a FLOW of another video is refused).

    Raises:
        InputError: no FLOW, not a FLOW, a FLOW of other frames or of another size, missing pairs —
            naming the pairs and the pair modes of Rerender Estimate Flow that compute them.
    """
    if not pairs:
        return
    wanted = "a FLOW holding the keyframe pairs (anchor, k) and (previous keyframe, k)"
    if flow is None:
        raise input_error("flow", f"{wanted} for shape- and pixel-aware fusion", "no FLOW connected", FLOW_FIXES)
    if not hasattr(flow, "between"):
        raise input_error("flow", "a FLOW object (Rerender Estimate Flow output)", type(flow).__name__)
    check_video = getattr(flow, "check_video", None)
    if frame_count is not None and check_video is not None:
        check_video(frame_count, tuple(frame_size))
    flow_size = tuple(getattr(flow, "frame_size", frame_size))
    if flow_size != tuple(frame_size):
        raise input_error("flow", f"a FLOW computed at the frames' size ({frame_size[1]}x{frame_size[0]})",
                          f"a FLOW at {flow_size[1]}x{flow_size[0]}", "compute the flow on the same frames")
    has = getattr(flow, "has", None)
    missing = [pair for pair in pairs if has is not None and not has(*pair)]
    if missing:
        shown = ", ".join(f"({a}, {b})" for a, b in missing[:6]) + (" …" if len(missing) > 6 else "")
        method = getattr(flow, "method", None)
        mode = method.get("pair_mode") if isinstance(method, dict) else None
        got = f"a FLOW without the pairs {shown}" + (f" (pair_mode {mode})" if mode else "")
        raise input_error("flow", wanted, got, FLOW_FIXES)
