"""The result of a temporal-quality measurement: per-frame values, means, JSON and a text table.

JSON layout (:meth:`TemporalReport.to_json`; the ``evaluate`` command writes it with ``--json``)::

    {"warp_error": 0.0012, "flicker": 0.987,            # means over the measured frame pairs
     "psnr": 31.2, "ssim": 0.94,                          # with a reference: means over all frames
     "psnr_non_key": 30.1, "ssim_non_key": 0.93,          # ... and over the frames that are not keyframes
     "tem_con": 0.98, "fram_acc": 0.95,                   # with CLIP models
     "frame_count": 270, "frame_size": [264, 360], "keyframes": [0, 10, ...],
     "excluded_pairs": [97, ...],                         # pairs (t, t+1) across a shot cut, not measured
     "per_frame": {"warp_error": [...], "flicker": [...], # one value per pair (t, t+1), null when excluded
                   "psnr": [...], "ssim": [...],          # one per frame
                   "tem_con": [...], "fram_acc": [...]}}

A key is present only when its metric was measured (no reference → no ``psnr``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

#: How each metric reads: its direction and unit, for the table and the node's summary.
DESCRIPTIONS = {
    "warp_error": "warp error (lower = steadier along the motion; RGB [0,1], squared)",
    "flicker": "flicker score (VBench; 1 = no frame-to-frame change)",
    "psnr": "PSNR vs reference (dB, higher = closer)",
    "ssim": "SSIM vs reference (1 = identical)",
    "tem_con": "Tem-Con (CLIP similarity of consecutive frames, 1 = same content)",
    "fram_acc": "Fram-Acc (share of frames closer to the target prompt than the source prompt)",
}
PAIR_METRICS = ("warp_error", "flicker", "tem_con")
FRAME_METRICS = ("psnr", "ssim", "fram_acc")


def mean(values: Sequence[float | bool | None]) -> float | None:
    """Mean of the values that are not ``None`` (``None`` if there are none).

    Example:
        >>> mean([1.0, None, 3.0]), mean([None])
        (2.0, None)
    """
    kept = [float(value) for value in values if value is not None]
    return math.fsum(kept) / len(kept) if kept else None


@dataclass
class TemporalReport:
    """Per-frame temporal-quality values of one video (module docstring for the JSON form).

    Attributes:
        frame_count: frames measured.
        frame_size: ``(H, W)`` in pixels.
        per_frame: metric name → list; pair metrics have ``frame_count − 1`` entries (entry ``t`` is the
            pair ``(t, t+1)``, ``None`` when excluded), frame metrics ``frame_count`` entries.
        keyframes: keyframe indices, if known (marked in the plot; ``*_non_key`` means leave them out).
        excluded_pairs: pairs ``t`` (``(t, t+1)``) across a shot cut of the source, left out of every mean.
        source: where the numbers came from (paths, flow method), for the JSON.
    """

    frame_count: int
    frame_size: tuple[int, int]
    per_frame: dict[str, list] = field(default_factory=dict)
    keyframes: tuple[int, ...] = ()
    excluded_pairs: tuple[int, ...] = ()
    source: dict = field(default_factory=dict)

    def means(self) -> dict[str, float | None]:
        """Metric name → mean; frame metrics also as ``<name>_non_key`` when keyframes are known."""
        result = {name: mean(values) for name, values in self.per_frame.items()}
        if self.keyframes:
            keys = set(self.keyframes)
            for name in FRAME_METRICS:
                if name in self.per_frame:
                    result[f"{name}_non_key"] = mean([value for frame, value in enumerate(self.per_frame[name])
                                                      if frame not in keys])
        return result

    def to_json(self) -> dict:
        """The JSON-able summary (module docstring): means at the top level, lists under ``per_frame``."""
        return {**self.means(), "frame_count": self.frame_count, "frame_size": list(self.frame_size),
                "keyframes": list(self.keyframes), "excluded_pairs": list(self.excluded_pairs),
                "source": self.source, "per_frame": {name: list(values) for name, values in self.per_frame.items()}}

    def table(self) -> str:
        """A plain-text table of the means, one metric per line, for a terminal or the node's summary."""
        lines = [f"{self.frame_count} frames at {self.frame_size[1]}x{self.frame_size[0]}"
                 + (f", {len(self.excluded_pairs)} pair(s) across shot cuts left out" if self.excluded_pairs else "")]
        means = self.means()
        for name, description in DESCRIPTIONS.items():
            if name not in means:
                continue
            lines.append(f"  {name:<12} {_format(name, means[name]):>10}   {description}")
            if f"{name}_non_key" in means:
                lines.append(f"  {name + '_non_key':<12} {_format(name, means[name + '_non_key']):>10}   "
                             f"the same without the keyframes")
        return "\n".join(lines)


def _format(name: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if name == "warp_error":
        return f"{value:.6f}"
    if name == "psnr":
        return f"{value:.2f}"
    return f"{value:.4f}"
