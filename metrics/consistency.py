r"""Temporal consistency of consecutive output frames: warp error and flicker.

**Warp error** (Lai et al., *Learning Blind Video Temporal Consistency*, ECCV 2018, §4.1; the
"Pixel-MSE" of Rerender-A-Video Table 2 is of this kind). For output frames :math:`O_t`, the optical
flow :math:`f_{t\to t+1}` computed on the **source** video and the non-occlusion mask :math:`M_t` of
frame :math:`t` (forward–backward check, :mod:`flow.occlusion`):

.. math::  E_t = \frac{\sum_p M_t(p)\,\lVert O_t(p) - W(O_{t+1})(p)\rVert^2}{\sum_p M_t(p)},
           \qquad W(O_{t+1})(p) = O_{t+1}(p + f_{t\to t+1}(p)),

RGB in [0, 1], :math:`\lVert\cdot\rVert^2` summed over the three channels (so a constant error of
``e`` per channel gives ``3e²``). The video's value is the mean over its frame pairs. 0 is perfectly
consistent along the motion; what moves with the source is not penalised, what changes on its own
(flicker, popping texture, drift) is. :math:`W` is the pack's one backward warp (:func:`flow.warp.warp`).

**Flicker** (VBench temporal flickering, ``vbench/temporal_flickering.py``): the mean absolute
difference of consecutive frames in 8-bit units, reported as VBench does, :math:`(255 -
\mathrm{MAE}_t)/255`; 1.0 is a frozen video. Computed here on the float frames (VBench reads uint8; the
difference is below half an 8-bit step). It does not compensate motion, so it suits static shots and
compares renders of the *same* source (the source's own motion lowers every render's value alike).
"""

from __future__ import annotations

import numpy as np
import torch

from ..flow.dis import DisFlow
from ..flow.occlusion import ALPHA, BETA, inconsistent
from ..flow.warp import warp_hwc


def _tensor(image: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image))
    return image.detach().to("cpu", torch.float32)


def source_motion(source_t: torch.Tensor | np.ndarray, source_next: torch.Tensor | np.ndarray,
                  estimator: DisFlow, alpha: float = ALPHA, beta: float = BETA) -> tuple[torch.Tensor, torch.Tensor]:
    """Flow ``t → t+1`` of two source frames and the occlusion mask of frame ``t`` (Sundaram 2010 check).

    Args:
        source_t, source_next: source frames ``[H,W,3]`` float32 in [0, 1].
        estimator: the optical flow (:class:`flow.dis.DisFlow`).
        alpha, beta: forward–backward check thresholds (:mod:`flow.occlusion`).

    Returns:
        ``(flow, occluded)``: flow ``[H,W,2]`` float32 in pixels on frame ``t``'s grid, pointing into
        ``t+1``; occluded ``[H,W]`` bool, True where frame ``t``'s pixel has no reliable match in ``t+1``.
    """
    forward, backward = estimator.flows(_tensor(source_t), _tensor(source_next))
    forward_t = torch.from_numpy(forward)[None]
    occluded = inconsistent(forward_t, torch.from_numpy(backward)[None], alpha, beta)[0]
    return forward_t[0], occluded


def warp_error(output_t: torch.Tensor | np.ndarray, output_next: torch.Tensor | np.ndarray,
               flow: torch.Tensor | np.ndarray, occluded: torch.Tensor | np.ndarray) -> float | None:
    """Warp error :math:`E_t` of one frame pair (module docstring; Lai et al. 2018).

    Args:
        output_t, output_next: output frames ``t`` and ``t+1``, ``[H,W,3]`` float in [0, 1].
        flow: ``[H,W,2]`` flow ``t → t+1`` of the source in pixels, on frame ``t``'s grid.
        occluded: ``[H,W]`` bool or float (1 = occluded) mask of frame ``t``; those pixels are left out.

    Returns:
        The masked mean of the squared RGB distance (per pixel, summed over channels), or ``None``
        when every pixel is occluded.

    Example:
        >>> a = torch.full((4, 4, 3), 0.5); b = a + 0.1
        >>> round(warp_error(a, b, torch.zeros(4, 4, 2), torch.zeros(4, 4)), 6)   # 3 channels × 0.1²
        0.03
    """
    output_t, output_next, flow = _tensor(output_t), _tensor(output_next), _tensor(flow)
    visible = ~(_tensor(occluded) > 0.5)
    count = int(visible.sum())
    if count == 0:
        return None
    warped = warp_hwc(output_next[None], flow[None])[0]
    squared = (output_t - warped).square().sum(dim=-1)
    return float(squared[visible].double().sum() / count)


def flicker(frame_a: torch.Tensor | np.ndarray, frame_b: torch.Tensor | np.ndarray) -> float:
    """VBench temporal flickering of one pair: ``(255 − MAE)/255`` with MAE in 8-bit units.

    Args:
        frame_a, frame_b: consecutive frames ``[H,W,3]`` float in [0, 1].

    Returns:
        A value in [0, 1]; 1.0 for identical frames.

    Example:
        >>> a = torch.zeros(2, 2, 3); b = torch.full((2, 2, 3), 51 / 255)
        >>> round(flicker(a, b), 4)   # MAE 51 → (255 − 51) / 255
        0.8
    """
    difference = (_tensor(frame_a) - _tensor(frame_b)).abs().double().mean()
    return float(1.0 - difference)
