"""Which source frames a load selects, and in what order the selection widgets apply.

The widgets apply in this order, the same as VideoHelperSuite's Load Video:

1. ``force_rate`` (0 = keep the source rate). When set, the video is resampled by timestamps to a
   grid of *slots* at ``force_rate`` fps starting at the first frame: slot ``k`` at
   ``t0 + k / force_rate`` shows the source frame whose timestamp is nearest (a tie goes to the
   earlier frame), and slots continue while their time is before the end of the last frame
   (its timestamp plus one source frame period). Below the source rate frames are dropped, above
   it frames repeat. Without ``force_rate`` every source frame is one slot.
2. ``skip_first_frames`` drops that many slots from the start, counted at the forced rate.
3. ``select_every_nth`` keeps slots ``skip, skip + n, skip + 2n, …``.
4. ``frame_load_cap`` stops after that many kept frames (0 = no cap).

So ``skip_first_frames=10, select_every_nth=2, frame_load_cap=3`` on a 24 fps video without
``force_rate`` loads source frames 10, 12 and 14, at 12 fps. The loaded rate is
``(force_rate or source fps) / select_every_nth``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Iterator, NamedTuple, TypeVar

from ..common.errors import input_error
from .rate import exact_fps

Payload = TypeVar("Payload")


class Slot(NamedTuple):
    """One selected frame: the source frame it shows, its time in seconds, and a payload."""

    source_index: int
    time: Fraction
    payload: object


@dataclass(frozen=True)
class Selection:
    """The four selection widgets, validated (see the module docstring for their order).

    Attributes:
        force_rate: the resampling rate in fps, or ``None`` to keep the source rate.
        skip_first_frames: slots dropped from the start.
        select_every_nth: keep every n-th slot after the skipped ones (1 = all).
        frame_load_cap: maximum number of frames to load (0 = no limit).
    """

    force_rate: Fraction | None = None
    skip_first_frames: int = 0
    select_every_nth: int = 1
    frame_load_cap: int = 0

    @classmethod
    def from_widgets(cls, frame_load_cap: int = 0, skip_first_frames: int = 0, select_every_nth: int = 1,
                     force_rate: float = 0.0) -> "Selection":
        """Validate the widget values (names as on Rerender Load Video) and build a Selection.

        Raises:
            InputError: a negative cap or skip, ``select_every_nth`` < 1, or a negative or
                non-finite ``force_rate``.
        """
        for name, value, minimum in (("frame_load_cap", frame_load_cap, 0),
                                     ("skip_first_frames", skip_first_frames, 0),
                                     ("select_every_nth", select_every_nth, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise input_error(name, f"a whole number >= {minimum}", repr(value),
                                  f"set {name} to {minimum} or more")
        rate = None
        if force_rate:
            rate = exact_fps(force_rate, "force_rate")
        elif force_rate is None or force_rate < 0:
            raise input_error("force_rate", "0 (keep the source rate) or a rate > 0", force_rate,
                              "set force_rate to 0 or to the rate you want, e.g. 12")
        return cls(rate, skip_first_frames, select_every_nth, frame_load_cap)

    def loaded_fps(self, source_fps: Fraction) -> Fraction:
        """Rate of the loaded frames: ``(force_rate or source_fps) / select_every_nth``.

        Example:
            >>> Selection(select_every_nth=2).loaded_fps(Fraction(24000, 1001))
            Fraction(12000, 1001)
        """
        return (self.force_rate or source_fps) / self.select_every_nth

    def slots(self, timed_frames: Iterable[tuple[Fraction, Payload]], source_fps: Fraction) -> Iterator[Slot]:
        """Apply the selection to a stream of ``(timestamp_seconds, payload)`` in presentation order.

        Stops pulling from ``timed_frames`` as soon as ``frame_load_cap`` frames were selected,
        so a decoder feeding it stops decoding there.

        Args:
            timed_frames: source frames in presentation order with their timestamps in seconds.
            source_fps: the source rate; one period of it is the last frame's display time.

        Yields:
            :class:`Slot` per selected frame; with ``force_rate`` above the source rate the same
            payload is yielded for consecutive slots.
        """
        kept = 0
        for position, slot in enumerate(self._resampled(timed_frames, source_fps)):
            if position < self.skip_first_frames or (position - self.skip_first_frames) % self.select_every_nth:
                continue
            yield slot
            kept += 1
            if self.frame_load_cap and kept >= self.frame_load_cap:
                return

    def _resampled(self, timed_frames: Iterable[tuple[Fraction, Payload]], source_fps: Fraction) -> Iterator[Slot]:
        if self.force_rate is None:
            for index, (time, payload) in enumerate(timed_frames):
                yield Slot(index, time, payload)
            return
        step = 1 / self.force_rate
        start: Fraction | None = None
        previous: Slot | None = None
        slot = 0
        for index, (time, payload) in enumerate(timed_frames):
            if previous is None:
                start, previous = time, Slot(index, time, payload)
                continue
            midpoint = (previous.time + time) / 2  # slots up to here are nearest to the previous frame
            while start + slot * step <= midpoint:
                yield Slot(previous.source_index, start + slot * step, previous.payload)
                slot += 1
            previous = Slot(index, time, payload)
        if previous is not None:
            end = previous.time + 1 / source_fps
            while start + slot * step < end:
                yield Slot(previous.source_index, start + slot * step, previous.payload)
                slot += 1

    def slot_count(self, frame_count: int, source_fps: Fraction) -> int:
        """Slots before skip/nth/cap for a constant-rate video of ``frame_count`` frames."""
        if self.force_rate is None:
            return frame_count
        return sum(1 for _ in self._resampled(_constant_rate_times(frame_count, source_fps), source_fps))


def _constant_rate_times(frame_count: int, fps: Fraction) -> Iterator[tuple[Fraction, None]]:
    period = 1 / fps
    return ((index * period, None) for index in range(frame_count))


def select_indices(frame_count: int, fps: float | Fraction, frame_load_cap: int = 0, skip_first_frames: int = 0,
                   select_every_nth: int = 1, force_rate: float = 0.0) -> list[int]:
    """Source frame indices a load selects from a constant-rate video (no decoding).

    Args:
        frame_count: frames in the source.
        fps: the source rate (float or Fraction; see :func:`videoio.rate.exact_fps`).
        frame_load_cap, skip_first_frames, select_every_nth, force_rate: the widgets of
            Rerender Load Video (see the module docstring for their order).

    Returns:
        One source index per loaded frame.

    Raises:
        InputError: invalid widget values (see :meth:`Selection.from_widgets`).

    Example:
        >>> select_indices(270, Fraction(24000, 1001), frame_load_cap=3, skip_first_frames=10, select_every_nth=2)
        [10, 12, 14]
        >>> select_indices(6, 30, force_rate=20)  # slot k at k/20 s; ties go to the earlier frame
        [0, 1, 3, 4]
        >>> select_indices(3, 10, force_rate=20)  # above the source rate frames repeat
        [0, 0, 1, 1, 2, 2]
    """
    rate = exact_fps(fps)
    selection = Selection.from_widgets(frame_load_cap, skip_first_frames, select_every_nth, force_rate)
    return [slot.source_index for slot in selection.slots(_constant_rate_times(frame_count, rate), rate)]
