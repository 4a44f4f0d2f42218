"""Megamind frames, optical flow and occlusion masks made with PyAV and OpenCV alone, for the keyframe tests
and benchmarks.

Independent of the pack's ``flow/`` package on purpose: the keyframe tests then check the keyframe
maths against flows that the code under test did not produce. Import it as
``rerender_video.tests.keyframe_data`` (tests/conftest.py makes the pack importable).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import av
import cv2
import numpy as np
import torch

from rerender_video.flow.types import FlowPairs


def megamind_squares(path: str | Path, indices: Sequence[int], size: int) -> list[np.ndarray]:
    """Frames ``indices`` of Megamind.avi, centre 528×528 crop resized to ``size``² (INTER_AREA): RGB uint8."""
    container = av.open(str(path))
    frames = {}
    for index, frame in enumerate(container.decode(video=0)):
        if index in indices:
            image = frame.to_ndarray(format="rgb24")[:, 96:624]
            frames[index] = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        if index >= max(indices):
            break
    container.close()
    return [frames[i] for i in indices]


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


def make_flow(frames: Sequence[np.ndarray], pairs: list[tuple[int, int]], method: str = "test") -> FlowPairs:
    """A FLOW of ``pairs`` of ``frames`` (RGB uint8 ``[H,W,3]``): DIS both ways and their occlusion masks."""
    forward = [dis_flow(frames[i], frames[j]) for i, j in pairs]
    backward = [dis_flow(frames[j], frames[i]) for i, j in pairs]
    return FlowPairs(pairs, np.stack(forward), np.stack(backward),
                     np.stack([occlusion(f, b) for f, b in zip(forward, backward)]),
                     np.stack([occlusion(b, f) for f, b in zip(forward, backward)]),
                     frames[0].shape[:2], len(frames), method)


def keyframe_video(path: str | Path, size: int) -> tuple[torch.Tensor, FlowPairs]:
    """Megamind frames 30, 40, 50 as IMAGE ``[3,size,size,3]`` float32 and a FLOW of the keyframe pairs (0,1), (0,2),
    (1,2): the anchor, a keyframe and the next one, as the keyframe render tests use them."""
    frames = megamind_squares(path, (30, 40, 50), size)
    images = torch.from_numpy(np.stack(frames)).float() / 255
    return images, make_flow(frames, [(0, 1), (0, 2), (1, 2)])


def write_two_frame_inputs(inputs: Path, megamind_path: str | Path, size: int) -> list[np.ndarray]:
    """Write what the ComfyUI keyframe integration tests load into ``inputs``: Megamind frames 30 and 40 as
    ``frame0.png``/``frame1.png`` (``size``² squares), their Canny hints ``hint0.png``/``hint1.png`` and the
    FLOW of the pair (0, 1) as ``flow.npz``. Returns the two RGB uint8 frames."""
    frames = megamind_squares(megamind_path, (30, 40), size)
    for index, frame in enumerate(frames):
        cv2.imwrite(str(inputs / f"frame{index}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        edges = cv2.Canny(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), 50, 100)
        cv2.imwrite(str(inputs / f"hint{index}.png"), cv2.cvtColor(edges, cv2.COLOR_GRAY2BGR))
    forward, backward = dis_flow(frames[0], frames[1]), dis_flow(frames[1], frames[0])
    np.savez(inputs / "flow.npz", pairs=np.array([[0, 1]]), forward=forward[None], backward=backward[None],
             occlusion_forward=occlusion(forward, backward)[None],
             occlusion_backward=occlusion(backward, forward)[None],
             frame_size=np.array([size, size]), frame_count=np.array(2))
    return frames
