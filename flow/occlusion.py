r"""Occlusion masks from the forward–backward consistency check (Sundaram, Brox & Keutzer, ECCV 2010).

A pixel ``x`` of the first frame, with forward flow :math:`w_f(x)` and the backward flow sampled
where it lands, :math:`\hat w_b(x) = w_b(x + w_f(x))`, is **occluded** (no reliable match) when

.. math::  |w_f + \hat w_b|^2 > \alpha \, (|w_f|^2 + |\hat w_b|^2) + \beta,
           \qquad \alpha = 0.01,\ \beta = 0.5\ \text{px}^2,

or when its target :math:`x + w_f(x)` lies outside the frame. This is the paper's **squared** form
(also UnFlow's); Rerender's reference code drops the squares and measures the magnitudes at the
same pixel (propagation/ALGORITHM.md §14). The squared form tolerates about 0.7 px of round-trip
error for small motions and grows with the motion (about 2.9 px at 20 px), which suits DIS, whose
error grows with the motion too. The same check run with the roles swapped gives the mask of the
second frame.

Masks are float32, 1 = occluded / unreliable, 0 = reliable (propagation/ALGORITHM.md §14).
"""

from __future__ import annotations

import torch

from ..common.errors import input_error
from .warp import out_of_frame, warp

#: Sundaram et al. 2010 thresholds (relative, and absolute in px²).
ALPHA = 0.01
BETA = 0.5


def _check_flow(flow: torch.Tensor, name: str) -> None:
    if not isinstance(flow, torch.Tensor) or flow.ndim != 4 or flow.shape[-1] != 2:
        got = list(flow.shape) if isinstance(flow, torch.Tensor) else type(flow).__name__
        raise input_error(name, "a flow tensor [B,H,W,2] in pixels", got)


def check_thresholds(alpha: float, beta: float) -> None:
    """Raise :class:`~common.errors.InputError` naming the widget if α or β is negative (or NaN)."""
    if not alpha >= 0:
        raise input_error("occlusion_alpha", "a relative threshold >= 0 (paper: 0.01)", alpha, "use 0.01")
    if not beta >= 0:
        raise input_error("occlusion_beta", "an absolute threshold >= 0 in px² (paper: 0.5)", beta, "use 0.5")


def inconsistent(flow: torch.Tensor, flow_back: torch.Tensor, alpha: float = ALPHA, beta: float = BETA) -> torch.Tensor:
    r"""Forward–backward check on ``flow``'s grid (see the module docstring for the rule).

    Args:
        flow: ``[B,H,W,2]`` flow from frame a to frame b, on a's grid, pixels ``(x, y)``.
        flow_back: ``[B,H,W,2]`` flow from b to a, on b's grid.
        alpha: relative threshold :math:`\alpha`.
        beta: absolute threshold :math:`\beta` in px².

    Returns:
        bool ``[B,H,W]``: True where a's pixel has no consistent match in b or lands outside b.

    Raises:
        InputError: shapes that are not ``[B,H,W,2]`` or differ, negative thresholds.

    Example:
        >>> right = torch.zeros(1, 4, 6, 2); right[..., 0] = 2   # everything moves 2 px right
        >>> inconsistent(right, -right)[0].int().tolist()[0]      # the last 2 columns leave the frame
        [0, 0, 0, 0, 1, 1]
    """
    _check_flow(flow, "flow")
    _check_flow(flow_back, "flow_back")
    if flow.shape != flow_back.shape:
        raise input_error("flow_back", f"the shape of flow {list(flow.shape)}", list(flow_back.shape))
    check_thresholds(alpha, beta)
    flow = flow.float()
    back_sampled = warp(flow_back.float().permute(0, 3, 1, 2).contiguous(), flow).permute(0, 2, 3, 1)
    residual = _squared_length(flow + back_sampled)
    magnitude = _squared_length(flow) + _squared_length(back_sampled)
    return (residual > alpha * magnitude + beta) | out_of_frame(flow)


def _squared_length(vectors: torch.Tensor) -> torch.Tensor:
    # x² + y² from the two channel views: a sum over a last dimension of 2 is about 10x slower on the CPU.
    return vectors[..., 0].square() + vectors[..., 1].square()


def occlusion_masks(forward: torch.Tensor, backward: torch.Tensor, alpha: float = ALPHA,
                    beta: float = BETA) -> tuple[torch.Tensor, torch.Tensor]:
    """Occlusion masks of both frames of a pair.

    Args:
        forward: ``[B,H,W,2]`` flow ``i → j`` on frame ``i``'s grid.
        backward: ``[B,H,W,2]`` flow ``j → i`` on frame ``j``'s grid.
        alpha, beta: thresholds of :func:`inconsistent`.

    Returns:
        ``(occlusion_forward, occlusion_backward)``, float32 ``[B,H,W]``, 1 = occluded: pixels of
        frame ``i`` without a reliable match in ``j``, and pixels of ``j`` without one in ``i``
        (the mask to use when warping frame ``i`` into ``j``).

    Example:
        >>> right = torch.zeros(1, 4, 6, 2); right[..., 0] = 2
        >>> occ_i, occ_j = occlusion_masks(right, -right)
        >>> occ_j[0, 0].tolist()   # j's first 2 columns were outside frame i
        [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    """
    return (inconsistent(forward, backward, alpha, beta).float(),
            inconsistent(backward, forward, alpha, beta).float())
