"""Progress of a command-line run: a tqdm bar on a terminal, plain lines with percentage and ETA otherwise.

One :class:`Progress` per step (``flow pairs``, ``propagated frames``, …), passed as the step's
``progress(done, preview=None)`` callback. The latest one is remembered, so an interrupted run can
say where it stopped (:func:`last_step`).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

#: Seconds between two plain progress lines.
LINE_SECONDS = 5.0

_last: "Progress | None" = None


def duration(seconds: float) -> str:
    """``"42 s"``, ``"3 min 05 s"`` or ``"1 h 02 min"``.

    Example:
        >>> duration(185.4), duration(42), duration(3725)
        ('3 min 05 s', '42 s', '1 h 02 min')
    """
    seconds = max(int(round(seconds)), 0)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """Progress of one step of ``total`` units.

    On a terminal (``stream.isatty()``) a tqdm bar; otherwise (a log file, a pipe, CI) a line at
    most every ``seconds``, and at the end: ``  propagated frames 120/484 (25%, 48 s, ETA 2 min 25 s)``.
    The ETA assumes the remaining units take as long as those since the first update did on average
    (the first unit also pays for warm-up such as compiling kernels, so it would inflate the estimate).

    Args:
        label: what is counted, e.g. ``"propagated frames"``.
        total: units in the step.
        stream: where to write (default ``sys.stdout``).
        seconds: least time between two plain lines.
    """

    def __init__(self, label: str, total: int, stream: TextIO | None = None, seconds: float = LINE_SECONDS) -> None:
        global _last
        self.label, self.total, self.seconds = label, max(int(total), 1), seconds
        self.stream = stream or sys.stdout
        self.done = 0
        self.started = self.printed = time.perf_counter()
        self.first: tuple[float, int] | None = None  # (time, done) of the first update: the ETA's origin
        self.bar = None
        if self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=f"  {label}", unit="", file=self.stream, leave=True,
                            dynamic_ncols=True, bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                                           "[{elapsed}<{remaining}]")
        _last = self

    def __call__(self, done: int, preview=None) -> None:
        done = min(int(done), self.total)
        if self.bar is not None:
            self.bar.update(done - self.done)
            self.done = done
            if done >= self.total:
                self.close()
            return
        self.done = done
        now = time.perf_counter()
        if self.first is None:
            self.first = (now, done)
        if done >= self.total or now - self.printed >= self.seconds:
            self.printed = now
            print(f"  {self.label} {self.line(now)}", file=self.stream, flush=True)

    def line(self, now: float | None = None) -> str:
        """``"120/484 (25%, 48 s, ETA 2 min 25 s)"``: done, percentage, elapsed and estimated time left."""
        now = now or time.perf_counter()
        text = f"{self.done}/{self.total} ({100 * self.done // self.total}%, {duration(now - self.started)}"
        if self.first is not None and self.first[1] < self.done < self.total:
            per_unit = (now - self.first[0]) / (self.done - self.first[1])
            text += f", ETA {duration(per_unit * (self.total - self.done))}"
        return text + ")"

    def close(self) -> None:
        """End the bar (on a terminal); plain lines need nothing."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def last_step() -> str | None:
    """Where the latest step stood, e.g. ``"propagated frames 120/484"``, or ``None`` before the first step."""
    if _last is None:
        return None
    _last.close()
    return f"{_last.label} {_last.done}/{_last.total}"


def reset() -> None:
    """Forget the latest step (a new run starts)."""
    global _last
    _last = None


def note_kernel_compile(stream: TextIO | None = None) -> bool:
    """Say once, before the first synthesis, that numba compiles the CPU kernels (silent for 15–30 s);
    returns whether it did."""
    from ..propagation.backends.passes import kernels_cached

    if kernels_cached():
        return False
    print("compiling the CPU kernels, once per install (about 30 s) …", file=stream or sys.stdout, flush=True)
    return True
