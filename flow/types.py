"""The FLOW object passed between nodes: optical flow and occlusion masks for a list of frame pairs.

For every pair ``(i, j)`` of frame indices it holds both directions:

* ``forward[p]``  ``[H,W,2]`` float32, flow ``i → j`` on frame ``i``'s grid, pixels ``(x, y)``;
* ``backward[p]`` ``[H,W,2]`` float32, flow ``j → i`` on frame ``j``'s grid;
* ``occlusion_forward[p]``  ``[H,W]`` float32, 1 where a pixel of frame ``i`` has no reliable match
  in frame ``j`` (occluded, out of frame, or inconsistent flow), else 0;
* ``occlusion_backward[p]`` ``[H,W]`` float32, the same for the pixels of frame ``j``.

Arrays may be memory-mapped files of the flow cache, so a long video's flows are not all in RAM;
:meth:`FlowPairs.between` returns torch tensors for one pair.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ..common.errors import input_error


@dataclass
class FlowPairs:
    """Optical flow and occlusion masks for frame pairs (see the module docstring for the layout).

    Attributes:
        pairs: ``(i, j)`` frame indices, one per row of the arrays.
        forward: ``[P,H,W,2]`` flow ``i → j`` in pixels.
        backward: ``[P,H,W,2]`` flow ``j → i`` in pixels.
        occlusion_forward: ``[P,H,W]`` occlusion of frame ``i`` w.r.t. ``j`` (1 = occluded).
        occlusion_backward: ``[P,H,W]`` occlusion of frame ``j`` w.r.t. ``i`` (1 = occluded).
        frame_size: ``(H, W)`` in pixels.
        frame_count: number of frames of the video the flow was computed on.
        video_key: content hash of those frames (:func:`common.cache.content_key`).
        method: how it was computed (backend, preset, thresholds), for display and cache keys.
    """

    pairs: list[tuple[int, int]]
    forward: np.ndarray
    backward: np.ndarray
    occlusion_forward: np.ndarray
    occlusion_backward: np.ndarray
    frame_size: tuple[int, int]
    frame_count: int
    video_key: str
    method: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._index = {tuple(pair): row for row, pair in enumerate(self.pairs)}

    def __len__(self) -> int:
        return len(self.pairs)

    def has(self, source: int, target: int) -> bool:
        """True if the flow between frames ``source`` and ``target`` is stored (either order)."""
        return (source, target) in self._index or (target, source) in self._index

    def between(self, source: int, target: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Flow and occlusion for warping frame ``source`` into frame ``target``.

        Returns:
            ``(flow, occlusion)``: flow ``[H,W,2]`` float32 on ``target``'s grid pointing into
            ``source`` (pass it to :func:`flow.warp.warp`), occlusion ``[H,W]`` float32 on
            ``target``'s grid (1 = the warped value is unreliable).

        Raises:
            InputError: the pair was not computed; the message says which pair mode computes it.
        """
        if (source, target) in self._index:
            row = self._index[(source, target)]
            flow, occlusion = self.backward[row], self.occlusion_backward[row]
        elif (target, source) in self._index:
            row = self._index[(target, source)]
            flow, occlusion = self.forward[row], self.occlusion_forward[row]
        else:
            raise input_error("flow", f"a FLOW holding the pair ({source}, {target})",
                              f"{len(self.pairs)} other pairs ({self.describe()})",
                              "set pair_mode on Rerender Estimate Flow to one that computes this pair "
                              "(consecutive for propagation, keyframes for the keyframe stage)")
        return (torch.from_numpy(np.array(flow, dtype=np.float32)),
                torch.from_numpy(np.array(occlusion, dtype=np.float32)))

    def describe(self) -> str:
        """One line for logs and node info: pair count, size and method."""
        height, width = self.frame_size
        method = ", ".join(f"{k}={v}" for k, v in self.method.items())
        return f"{len(self.pairs)} pairs at {width}x{height} over {self.frame_count} frames ({method})"

    def check_video(self, frame_count: int, frame_size: Sequence[int], name: str = "flow") -> None:
        """Raise if this flow was computed on a video of another frame count or size.

        Raises:
            InputError: naming both frame counts / sizes and the fix.
        """
        if frame_count != self.frame_count or tuple(frame_size) != tuple(self.frame_size):
            raise input_error(
                name, f"a FLOW computed on these frames ({frame_count} frames at "
                f"{frame_size[1]}x{frame_size[0]})",
                f"a FLOW of {self.frame_count} frames at {self.frame_size[1]}x{self.frame_size[0]}",
                "connect Rerender Estimate Flow to the same frames that this node receives")
