"""Optical flow and occlusion masks made with OpenCV alone, for keyframe tests that need a FLOW.

Independent of the pack's ``flow/`` package on purpose: the keyframe tests then check the keyframe
maths against flows that the code under test did not produce. Import it as
``rerender_video.tests.flow_fixtures`` (tests/conftest.py makes the pack importable).
"""

from __future__ import annotations

import cv2
import numpy as np


def dis_flow(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """DIS medium flow ``[H,W,2]`` float32 in pixels from ``source`` to ``target`` (RGB uint8 ``[H,W,3]``)."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(cv2.cvtColor(source, cv2.COLOR_RGB2GRAY), cv2.cvtColor(target, cv2.COLOR_RGB2GRAY), None)


def occlusion(flow: np.ndarray, back: np.ndarray) -> np.ndarray:
    """Forward–backward check (squared form, α = 0.01, β = 0.5) plus out-of-frame targets; ``[H,W]``, 1 = occluded."""
    height, width = flow.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    map_x, map_y = xs + flow[..., 0], ys + flow[..., 1]
    back_at = cv2.remap(back, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    total = flow + back_at
    bad = (total ** 2).sum(-1) > 0.01 * ((flow ** 2).sum(-1) + (back_at ** 2).sum(-1)) + 0.5
    bad |= (map_x < 0) | (map_x > width - 1) | (map_y < 0) | (map_y > height - 1)
    return bad.astype(np.float32)
