"""Pictures of optical flow: the Middlebury colour wheel (Baker et al., IJCV 2011) and occlusion overlays.

Colour coding: the hue gives the direction of motion, the saturation its length relative to
``max_magnitude`` (white = no motion, full colour = ``max_magnitude``; longer flows are drawn
darker). Directions (image axes, y down): right = red, down = yellow, left = sky blue,
up = violet, as in the Middlebury benchmark and most flow papers. The wheel has 55 hues in six
ramps (red→yellow 15, yellow→green 6, green→cyan 4, cyan→blue 11, blue→magenta 13, magenta→red 6).
"""

from __future__ import annotations

import numpy as np
import torch

from ..common.errors import input_error
from .types import FlowPairs

_RAMPS = (  # (steps, start RGB, end RGB)
    (15, (1.0, 0.0, 0.0), (1.0, 1.0, 0.0)),
    (6, (1.0, 1.0, 0.0), (0.0, 1.0, 0.0)),
    (4, (0.0, 1.0, 0.0), (0.0, 1.0, 1.0)),
    (11, (0.0, 1.0, 1.0), (0.0, 0.0, 1.0)),
    (13, (0.0, 0.0, 1.0), (1.0, 0.0, 1.0)),
    (6, (1.0, 0.0, 1.0), (1.0, 0.0, 0.0)),
)


def color_wheel() -> torch.Tensor:
    """The 55 hues of the Middlebury wheel, ``[55,3]`` float32 RGB in [0,1]."""
    rows = []
    for steps, start, end in _RAMPS:
        t = (torch.arange(steps, dtype=torch.float32) / steps).unsqueeze(1)
        rows.append(torch.tensor(start) + t * (torch.tensor(end) - torch.tensor(start)))
    return torch.cat(rows)


def flow_to_color(flow: torch.Tensor, max_magnitude: float | None = None) -> torch.Tensor:
    """Colour-code a flow field (see the module docstring).

    Args:
        flow: ``[...,H,W,2]`` flow in pixels ``(x, y)``.
        max_magnitude: flow length in pixels drawn at full saturation; ``None`` = the largest
            length in ``flow``.

    Returns:
        ``[...,H,W,3]`` float32 RGB in [0,1] (an IMAGE when ``flow`` is ``[B,H,W,2]``).

    Example:
        >>> flow = torch.tensor([[[0.0, 0.0], [1.0, 0.0]]])   # still, then 1 px to the right
        >>> flow_to_color(flow).tolist()
        [[[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]]
    """
    if not isinstance(flow, torch.Tensor) or flow.ndim < 3 or flow.shape[-1] != 2:
        got = list(flow.shape) if isinstance(flow, torch.Tensor) else type(flow).__name__
        raise input_error("flow", "a flow tensor [...,H,W,2]", got)
    flow = flow.float()
    u, v = flow[..., 0], flow[..., 1]
    length = torch.sqrt(u * u + v * v)
    scale = float(length.max()) if max_magnitude is None else float(max_magnitude)
    radius = length / max(scale, 1e-6)
    wheel = color_wheel().to(flow.device)
    count = wheel.shape[0]
    # Angle → wheel position in [0, count]; the last hue blends back into the first (no seam).
    position = (torch.atan2(-v, -u) / torch.pi + 1) / 2 * count
    lower = position.floor().long()
    weight = (position - lower).unsqueeze(-1)
    lower = lower % count
    upper = (lower + 1) % count
    hue = (1 - weight) * wheel[lower] + weight * wheel[upper]
    radius = radius.unsqueeze(-1)
    return torch.where(radius <= 1, 1 - radius * (1 - hue), hue * 0.75).clamp(0, 1)


def wheel_legend(size: int = 64) -> torch.Tensor:
    """A key for :func:`flow_to_color`: a disc of all directions and lengths, ``[size,size,3]``, white outside."""
    coords = torch.linspace(-1, 1, size)
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    legend = flow_to_color(torch.stack((x, y), dim=-1), max_magnitude=1.0)
    return torch.where((x * x + y * y <= 1).unsqueeze(-1), legend, torch.ones_like(legend))


def motion_scale(flows: FlowPairs, quantile: float = 0.99) -> float:
    """A colour scale for a whole FLOW: the largest per-pair ``quantile`` of motion length, in pixels.

    A quantile rather than the maximum, so a few outlier vectors do not wash the colours out.
    """
    scale = 0.0
    for row in range(len(flows)):
        backward = torch.from_numpy(np.array(flows.backward[row], dtype=np.float32))
        lengths = backward.reshape(-1, 2)[::3].square().sum(-1).sqrt()  # every 3rd pixel is plenty
        scale = max(scale, float(torch.quantile(lengths, quantile)))
    return scale


def flow_preview(flows: FlowPairs, max_magnitude: float | None = None) -> torch.Tensor:
    """One colour image per pair: the motion from frame ``i`` to ``j`` drawn on ``j``'s grid.

    The picture is the negated backward flow, so it lines up with ``occlusion_backward`` (the MASK
    output of the node) and with frame ``j``, and its colours mean the usual forward direction.

    Args:
        flows: the FLOW object.
        max_magnitude: full-saturation length in pixels; ``None`` = :func:`motion_scale` of all
            pairs, so colours compare across the batch.

    Returns:
        IMAGE ``[P,H,W,3]`` float32 in [0,1].
    """
    scale = motion_scale(flows) if max_magnitude is None else max_magnitude
    height, width = flows.frame_size
    preview = torch.empty(len(flows), height, width, 3)
    for row in range(len(flows)):
        preview[row] = flow_to_color(-torch.from_numpy(np.array(flows.backward[row], dtype=np.float32)), scale)
    return preview


def occlusion_overlay(frames: torch.Tensor, masks: torch.Tensor, strength: float = 0.7) -> torch.Tensor:
    """Frames dimmed to grey with occluded pixels painted red.

    Args:
        frames: IMAGE ``[B,H,W,3]`` float32 in [0,1].
        masks: MASK ``[B,H,W]``, 1 = occluded.
        strength: opacity of the red.

    Returns:
        IMAGE ``[B,H,W,3]``.

    Example:
        >>> overlay = occlusion_overlay(torch.ones(1, 1, 2, 3), torch.tensor([[[0.0, 1.0]]]))
        >>> overlay[0, 0].mul(100).round().int().tolist()   # reliable: grey; occluded: red
        [[60, 60, 60], [88, 18, 18]]
    """
    grey = frames.float().mean(-1, keepdim=True).expand(*frames.shape[:-1], 3) * 0.6
    red = torch.tensor([1.0, 0.0, 0.0], device=frames.device)
    alpha = masks.float().unsqueeze(-1) * strength
    return grey * (1 - alpha) + red * alpha
