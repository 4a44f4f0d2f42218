r"""Predicted propagation error from the source video: the cost the ``adaptive`` keyframe mode minimises.

**Rule.** Propagating keyframe ``k`` to frame ``n`` fails where the content of ``n`` is not the content
of ``k`` moved along the optical flow (new content, flow errors, lighting). The pack predicts that
failure on the *source* frames, before anything is rendered: frame ``k`` is carried to ``n`` by
chaining the consecutive backward warps (the way propagation's guides travel), and

.. math::  r(k \to n) = \operatorname{mean}_p \lvert W_{n \leftarrow k}(I_k)(p) - I_n(p) \rvert
           \quad (\text{RGB in } [0,1]),

at :data:`ANALYSIS_WIDTH` px wide with DIS medium flow. A frame's cost is its predicted PSNR loss,
:math:`\log(1 + r/\varepsilon)`, with :math:`\varepsilon` = :data:`EPSILON` the error propagation leaves
even where the prediction is perfect; :mod:`common.adaptive_keyframes` places the keyframes.

**Why this rule** (measured by ``benchmarks/video_quality.py --rule-study``: Megamind, 269 frames at
192×136, uniform keyframes every 20 frames propagated both ways with the pack's defaults, the 445
candidates within shots scored against the per-frame filter): the mean squared error of a propagated
frame is explained with R² 0.74 (Spearman 0.89) by :math:`r`, against 0.50 (0.80) by FRESCO's frame
difference to the keyframe, 0.44 (0.71) by the distance in frames alone and 0.29 (0.64) by the area
disoccluded since the keyframe (forward–backward check). Between candidates at the *same* distance —
what decides where keyframes go at a fixed count — the rank correlation is 0.74 for :math:`r`, 0.57 for
the frame difference and 0.38 for the disoccluded area. The fit ``MSE ≈ 3.8·10⁻⁴ + 0.059·r`` gives
:math:`\varepsilon \approx 0.0065`; a first look at 256×184 (frames 1–97, 168 candidates) gave 0.006.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np
import torch

from ..common.adaptive_keyframes import adaptive
from ..common.checks import check_image_batch
from ..common.errors import input_error
from ..common.keyframes import Keyframes
from ..common.scene_cuts import DEFAULT_THRESHOLD, detect_scene_cuts
from ..common.threads import torch_threads
from ..flow.dis import DisFlow
from ..flow.pairs import consecutive_pairs
from ..flow.warp import warp

#: Width in pixels of the frames the prediction runs on (the correlation above holds from 64 to 256 px).
ANALYSIS_WIDTH = 96
#: Residual error of a perfectly predicted frame, RGB [0,1] units (fit on Megamind, module docstring).
EPSILON = 0.006
Progress = Callable[..., None]


def analysis_frames(frames: torch.Tensor, width: int = ANALYSIS_WIDTH) -> torch.Tensor:
    """IMAGE ``[N,H,W,3]`` → ``[N,h,width,3]`` float32 (OpenCV area resize, aspect kept; no resize if smaller).

    Example:
        >>> analysis_frames(torch.zeros(2, 48, 192, 3)).shape
        torch.Size([2, 24, 96, 3])
    """
    height, source_width = frames.shape[1:3]
    if source_width <= width:
        return frames.to("cpu", torch.float32)
    size = (width, max(16, round(height * width / source_width)))
    small = [cv2.resize(np.ascontiguousarray(frame), size, interpolation=cv2.INTER_AREA)
             for frame in frames.detach().to("cpu", torch.float32).numpy()]
    return torch.from_numpy(np.stack(small))


def propagation_residuals(frames: torch.Tensor, max_distance: int, shot_starts: tuple[int, ...] = (),
                          progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:math:`r(k \\to k \\pm d)` for every frame ``k`` and ``d = 1 … max_distance`` (module docstring).

    Args:
        frames: IMAGE ``[N,H,W,3]`` float32 in [0,1], the source video (resized to the analysis width here).
        max_distance: the longest propagation considered, frames.
        shot_starts: first frames of later shots; nothing is carried across them.
        progress: optional ``progress(done, total)`` over the flow pairs and the warp steps.

    Returns:
        ``(forward, backward)``, float64 ``[N, max_distance]``: ``forward[k, d−1]`` predicts frame ``k+d``
        from ``k``, ``backward[k, d−1]`` frame ``k−d``; ``inf`` past the video's ends or across a cut.
    """
    small = analysis_frames(frames)
    count = small.shape[0]
    total = count - 1 + 2 * max_distance
    forward_flows = torch.empty(count - 1, *small.shape[1:3], 2)   # i → i+1 on frame i's grid
    backward_flows = torch.empty(count - 1, *small.shape[1:3], 2)  # i+1 → i on frame i+1's grid
    for done, (row, forward, backward) in enumerate(DisFlow("medium").iter_flows(small, consecutive_pairs(count)), 1):
        forward_flows[row], backward_flows[row] = torch.from_numpy(forward), torch.from_numpy(backward)
        if progress is not None:
            progress(done, total)
    shot = np.searchsorted(np.asarray(sorted(shot_starts), dtype=np.int64), np.arange(count), side="right")
    images = small.permute(0, 3, 1, 2).contiguous()
    results = []
    with torch_threads(1):
        for direction in (1, -1):
            residual = np.full((count, max_distance), np.inf)
            carried = images.clone()
            for distance in range(1, min(max_distance, count - 1) + 1):
                if direction == 1:   # keyframes 0 … N−1−d move from frame k+d−1 to k+d
                    carried[:count - distance] = warp(carried[:count - distance], backward_flows[distance - 1:])
                    moved, targets = carried[:count - distance], images[distance:]
                    starts = np.arange(count - distance)
                else:                # keyframes d … N−1 move from frame k−d+1 to k−d
                    carried[distance:] = warp(carried[distance:], forward_flows[:count - distance])
                    moved, targets = carried[distance:], images[:count - distance]
                    starts = np.arange(distance, count)
                error = (moved - targets).abs().mean(dim=(1, 2, 3)).double().numpy()
                same_shot = shot[starts] == shot[starts + direction * distance]
                residual[starts[same_shot], distance - 1] = error[same_shot]
                if progress is not None:
                    progress(count - 1 + (0 if direction == 1 else max_distance) + distance, total)
            results.append(residual)
    return results[0], results[1]


def propagation_costs(frames: torch.Tensor, max_distance: int, shot_starts: tuple[int, ...] = (),
                      progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame costs :math:`\\log(1 + r/\\varepsilon)` of :func:`propagation_residuals` (same layout)."""
    forward, backward = propagation_residuals(frames, max_distance, shot_starts, progress)
    return np.log1p(forward / EPSILON), np.log1p(backward / EPSILON)


def adaptive_keyframes(frames: torch.Tensor, budget: int, min_spacing: int = 2, max_spacing: int = 0,
                       cut_threshold: float = DEFAULT_THRESHOLD, progress: Progress | None = None) -> Keyframes:
    """The ``adaptive`` Keyframe Selection: at most ``budget`` keyframes where propagation is predicted to fail.

    Args:
        frames: IMAGE ``[N,H,W,3]`` float32 in [0, 1], the source video.
        budget: the most keyframes (``max_keyframes``; uniform keyframes every K frames use ``ceil(N/K)``).
        min_spacing: fewest frames between consecutive keyframes (both sides of a cut excepted).
        max_spacing: most frames between consecutive keyframes; 0 = three times the average ``N / budget``.
        cut_threshold: shot-cut threshold (:mod:`common.scene_cuts`); a keyframe goes on each side of a cut.
        progress: optional ``progress(done, total)``.

    Returns:
        :class:`~common.keyframes.Keyframes`, ``mode="adaptive"``, with the shot starts.

    Raises:
        InputError: not an IMAGE batch, fewer than 2 frames, a budget below 1, and the placement's errors
            (:func:`common.adaptive_keyframes.adaptive`).

    Example:
        >>> frames = torch.rand(1, 32, 48, 3).expand(12, -1, -1, -1).clone()   # frozen: every frame predicts 0
        >>> keys = adaptive_keyframes(frames, budget=3, min_spacing=3, max_spacing=6, cut_threshold=0)
        >>> keys.mode, len(keys.indices), keys.indices[0]
        ('adaptive', 3, 0)
    """
    frames = check_image_batch(frames, "frames")
    count = frames.shape[0]
    if count < 2:
        raise input_error("frames", "at least 2 frames to choose keyframes among", f"{count} frame(s)",
                          "load more frames, or use mode 'uniform'")
    if budget < 1:
        raise input_error("max_keyframes", "at least 1 keyframe", budget, "use 0 to take the budget from "
                          "keyframe_interval")
    if max_spacing == 0:
        max_spacing = max(min_spacing + 1, min(count - 1, round(3 * count / budget)))
    max_spacing = min(max_spacing, count)
    cuts = tuple(detect_scene_cuts(frames, cut_threshold)) if cut_threshold > 0 else ()
    forward, backward = propagation_costs(frames, max_spacing, cuts, progress)
    return adaptive(count, forward, backward, budget, min_spacing, max_spacing, cuts)
