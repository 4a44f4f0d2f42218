"""OpenCV DIS optical flow (Kroeger et al., ECCV 2016): the default backend, CPU only, no weights.

``cv2.DISOpticalFlow`` works on grayscale uint8 frames (BT.601 luma of the RGB frame). Each pair
takes two ``calc`` calls, ``i → j`` and ``j → i``. Pairs run on a thread pool, one DIS instance
per thread (OpenCV releases the GIL): OpenCV's own threads leave a core partly idle on a DIS pair,
a pool of whole pairs does not (``python benchmarks/flow.py`` prints both; figures in the README).
"""

from __future__ import annotations

import collections
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterator, Sequence

import cv2
import numpy as np
import torch

from ..common.errors import input_error
from .backend import FlowBackend, FlowResult

#: Preset names of the node widget → OpenCV constants (accuracy grows, speed drops, down the list).
PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
DEFAULT_PRESET = "medium"
#: Smallest frame side DIS is given (OpenCV refuses frames below about 8×12 pixels).
MIN_SIDE = 16


def to_gray_u8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """One IMAGE frame ``[H,W,3]`` float in [0,1] → grayscale ``[H,W]`` uint8 (BT.601 luma, rounded).

    Example:
        >>> to_gray_u8(torch.ones(2, 3, 3)).tolist()
        [[255, 255, 255], [255, 255, 255]]
    """
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    gray = cv2.cvtColor(np.ascontiguousarray(image, dtype=np.float32), cv2.COLOR_RGB2GRAY)
    return cv2.convertScaleAbs(gray, alpha=255.0)


def default_workers() -> int:
    """Threads for the pair pool: the CPUs this process may use, at most 8."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        count = os.cpu_count() or 1
    return max(1, min(count, 8))


class DisFlow(FlowBackend):
    """DIS optical flow on a pool of threads.

    Args:
        preset: ``"ultrafast"``, ``"fast"`` or ``"medium"`` (OpenCV's presets).
        workers: threads; ``None`` = :func:`default_workers`.

    Raises:
        InputError: an unknown preset or a worker count below 1.

    Example:
        >>> y, x = torch.meshgrid(torch.arange(48.0), torch.arange(64.0), indexing="ij")
        >>> pattern = ((torch.sin(x / 3) * torch.cos(y / 4) + 1) / 2).unsqueeze(-1).expand(-1, -1, 3)
        >>> before, after = pattern[:, 8:56], pattern[:, 6:54]     # the content moves 2 px right
        >>> forward, backward = DisFlow("medium").flows(before, after)
        >>> forward.shape, forward.dtype
        ((48, 48, 2), dtype('float32'))
        >>> round(float(np.median(forward[..., 0]))), round(float(np.median(backward[..., 0])))
        (2, -2)
    """

    name = "dis"

    def __init__(self, preset: str = DEFAULT_PRESET, workers: int | None = None) -> None:
        if preset not in PRESETS:
            raise input_error("dis_preset", f"one of {', '.join(PRESETS)}", repr(preset), "use medium")
        if workers is not None and workers < 1:
            raise input_error("workers", "at least 1 thread", workers)
        self.preset = preset
        self.workers = workers or default_workers()
        self.cpu_threads = self.workers

    def method(self) -> dict:
        return {"backend": self.name, "preset": self.preset}

    def check_size(self, height: int, width: int) -> None:
        if min(height, width) < MIN_SIDE:
            raise input_error("frames", f"frames of at least {MIN_SIDE}×{MIN_SIDE} pixels for DIS optical flow",
                              f"{width}×{height} (W×H)", "load or resize the video to a larger size")

    def flows(self, image_a: torch.Tensor, image_b: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Flows ``a → b`` (on ``a``'s grid) and ``b → a`` (on ``b``'s grid) of two IMAGE frames ``[H,W,3]``.

        Returns:
            Two ``[H,W,2]`` float32 numpy arrays in pixels ``(x, y)``.
        """
        return self._pair_flows(cv2.DISOpticalFlow_create(PRESETS[self.preset]), image_a, image_b)

    @staticmethod
    def _pair_flows(dis: cv2.DISOpticalFlow, image_a, image_b) -> tuple[np.ndarray, np.ndarray]:
        gray_a, gray_b = to_gray_u8(image_a), to_gray_u8(image_b)
        return dis.calc(gray_a, gray_b, None), dis.calc(gray_b, gray_a, None)

    def iter_flows(self, frames: torch.Tensor, pairs: Sequence[tuple[int, int]]) -> Iterator[FlowResult]:
        local = threading.local()
        preset = PRESETS[self.preset]

        def job(row: int) -> FlowResult:
            dis = getattr(local, "dis", None)
            if dis is None:
                dis = local.dis = cv2.DISOpticalFlow_create(preset)
            source, target = pairs[row]
            return (row, *self._pair_flows(dis, frames[source], frames[target]))

        rows = iter(range(len(pairs)))
        pending: collections.deque[Future] = collections.deque()
        # Keep a few pairs in flight per thread, so flows do not pile up in memory ahead of the consumer.
        with ThreadPoolExecutor(self.workers, thread_name_prefix="dis-flow") as pool:
            try:
                for row in rows:
                    pending.append(pool.submit(job, row))
                    if len(pending) >= 2 * self.workers:
                        break
                while pending:
                    result = pending.popleft().result()
                    row = next(rows, None)
                    if row is not None:
                        pending.append(pool.submit(job, row))
                    yield result
            finally:
                for future in pending:
                    future.cancel()
