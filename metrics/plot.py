"""The per-frame chart of a :class:`~metrics.report.TemporalReport`, drawn with OpenCV (no plotting library).

Panels, top to bottom: warp error per frame pair, flicker score per pair, and PSNR per frame when a
reference was given. The x axis is the frame index; keyframes are blue vertical lines, pairs left out
at shot cuts grey ones. Each panel is scaled to its own range, printed at its left edge.
"""

from __future__ import annotations

import cv2
import numpy as np

from .report import TemporalReport

WIDTH = 960
PANEL_HEIGHT = 150
MARGIN = 8
LABEL_HEIGHT = 18
BACKGROUND = (255, 255, 255)
AXIS = (160, 160, 160)
KEYFRAME = (70, 130, 230)
CUT = (200, 200, 200)
LINE = {"warp_error": (200, 60, 40), "flicker": (40, 140, 60), "psnr": (120, 60, 160)}
TITLES = {"warp_error": "warp error (lower is steadier)", "flicker": "flicker score (1 = no change)",
          "psnr": "PSNR vs reference, dB"}


def _x(index: float, count: int, left: int, right: int) -> int:
    return int(round(left + (right - left) * index / max(count - 1, 1)))


def _panel(values: list, count: int, offset: float, name: str, report: TemporalReport) -> np.ndarray:
    """One panel ``[PANEL_HEIGHT, WIDTH, 3]`` uint8 RGB; pair values sit between their two frames."""
    panel = np.full((PANEL_HEIGHT, WIDTH, 3), BACKGROUND, np.uint8)
    left, right = 70, WIDTH - MARGIN
    top, bottom = LABEL_HEIGHT + 4, PANEL_HEIGHT - MARGIN
    cv2.rectangle(panel, (left, top), (right, bottom), AXIS, 1)
    for pair in report.excluded_pairs:
        x = _x(pair + 0.5, count, left, right)
        cv2.line(panel, (x, top), (x, bottom), CUT, 3)
    for key in report.keyframes:
        x = _x(key, count, left, right)
        cv2.line(panel, (x, top), (x, bottom), KEYFRAME, 1)
    known = [float(value) for value in values if value is not None]
    cv2.putText(panel, TITLES[name], (left, LABEL_HEIGHT - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                cv2.LINE_AA)
    if not known:
        return panel
    low, high = min(known), max(known)
    if high - low < 1e-12:
        low, high = low - 1e-6, high + 1e-6
    for text, y in ((f"{high:.4g}", top + 10), (f"{low:.4g}", bottom - 2)):
        cv2.putText(panel, text, (4, y), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    points = []
    for index, value in enumerate(values):
        if value is None:
            if len(points) > 1:
                cv2.polylines(panel, [np.array(points, np.int32)], False, LINE[name], 1, cv2.LINE_AA)
            points = []
            continue
        y = bottom - (bottom - top) * (float(value) - low) / (high - low)
        points.append((_x(index + offset, count, left, right), int(round(y))))
    if len(points) > 1:
        cv2.polylines(panel, [np.array(points, np.int32)], False, LINE[name], 1, cv2.LINE_AA)
    elif points:
        cv2.circle(panel, points[0], 2, LINE[name], -1)
    return panel


def plot_report(report: TemporalReport) -> np.ndarray:
    """The chart of a report as RGB uint8 ``[H, 960, 3]`` (2 or 3 panels of 150 px).

    Example:
        >>> from rerender_video.metrics.report import TemporalReport
        >>> report = TemporalReport(3, (8, 8), {"warp_error": [0.1, 0.2], "flicker": [0.9, 0.95]}, (0,))
        >>> plot_report(report).shape
        (300, 960, 3)
    """
    panels = [_panel(report.per_frame[name], report.frame_count, 0.5 if name != "psnr" else 0.0, name, report)
              for name in ("warp_error", "flicker", "psnr") if name in report.per_frame]
    return np.concatenate(panels, axis=0)
