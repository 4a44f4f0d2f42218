r"""Backward warping by a dense optical flow: the one warp every stage of the pack uses.

Convention: ``flow`` is defined on the *output* pixel grid and points into the *input* image,

.. math::  \text{out}(x) = \text{image}(x + \text{flow}(x)),

so to bring the content of frame ``i`` into frame ``j`` one warps frame ``i`` with the flow
``j → i`` (the "backward" flow of the pair ``(i, j)``). Flow is in pixels, channel order ``(x, y)``.

Sampling uses :func:`torch.nn.functional.grid_sample` with ``align_corners=True`` and the pixel
centres at integer coordinates ``0 … W-1``.

Border rule: ``padding="border"`` (default) repeats the edge pixel for samples that land outside the
input; ``padding="zeros"`` returns 0 there, as the reference code does. Out-of-frame samples are
unreliable either way: :func:`out_of_frame` marks them, and the forward–backward occlusion check of
:mod:`flow.occlusion` flags them too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..common.errors import input_error


def _check(image: torch.Tensor, flow: torch.Tensor) -> None:
    if image.ndim != 4:
        raise input_error("image", "shape [B,C,H,W]", list(image.shape))
    if flow.ndim != 4 or flow.shape[-1] != 2:
        raise input_error("flow", "shape [B,H,W,2]", list(flow.shape))
    if flow.shape[0] not in (1, image.shape[0]) or flow.shape[1:3] != image.shape[2:4]:
        raise input_error("flow", f"[{image.shape[0]},{image.shape[2]},{image.shape[3]},2] to match the image",
                          list(flow.shape), "compute the flow on frames of the image's size")


def sampling_grid(flow: torch.Tensor) -> torch.Tensor:
    """Normalised ``grid_sample`` grid ``[B,H,W,2]`` for a pixel flow ``[B,H,W,2]`` (align_corners=True)."""
    _, height, width, _ = flow.shape
    scale_x, scale_y = 2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)
    xs = torch.arange(width, device=flow.device, dtype=flow.dtype) * scale_x - 1.0
    ys = torch.arange(height, device=flow.device, dtype=flow.dtype) * scale_y - 1.0
    identity = torch.stack(torch.broadcast_tensors(xs.view(1, width), ys.view(height, 1)), dim=-1)
    # One fused pass over the flow (slicing its channels and stacking them back costs 3x more on the CPU).
    return torch.addcmul(identity, flow, torch.tensor([scale_x, scale_y], device=flow.device, dtype=flow.dtype))


def warp(image: torch.Tensor, flow: torch.Tensor, mode: str = "bilinear", padding: str = "border") -> torch.Tensor:
    """Backward-warp ``image`` by ``flow``: ``out(x) = image(x + flow(x))``.

    Args:
        image: ``[B,C,H,W]`` float tensor (any channel count: colours, latents, masks, coordinates).
        flow: ``[B,H,W,2]`` or ``[1,H,W,2]`` float tensor in pixels ``(x, y)``, on the output grid.
        mode: ``"bilinear"`` for images, ``"nearest"`` for labels, masks and latents that must not blur.
        padding: ``"border"`` (repeat the edge pixel) or ``"zeros"``.

    Returns:
        ``[B,C,H,W]`` tensor of the image's dtype.

    Raises:
        InputError: shapes that do not match.

    Example:
        >>> img = torch.arange(16.).view(1, 1, 4, 4)
        >>> shift = torch.zeros(1, 4, 4, 2); shift[..., 0] = 1  # sample one pixel to the right
        >>> warp(img, shift)[0, 0, 0].tolist()
        [1.0, 2.0, 3.0, 3.0]
    """
    _check(image, flow)
    grid = sampling_grid(flow.to(torch.float32)).expand(image.shape[0], -1, -1, -1)
    warped = F.grid_sample(image.to(torch.float32), grid, mode=mode, padding_mode=padding, align_corners=True)
    return warped.to(image.dtype)


def warp_hwc(image: torch.Tensor, flow: torch.Tensor, mode: str = "bilinear", padding: str = "border") -> torch.Tensor:
    """:func:`warp` for channels-last tensors: ``image`` ``[B,H,W,C]`` (e.g. an IMAGE batch) → ``[B,H,W,C]``."""
    return warp(image.permute(0, 3, 1, 2), flow, mode, padding).permute(0, 2, 3, 1)


def out_of_frame(flow: torch.Tensor) -> torch.Tensor:
    """Pixels whose flow target ``x + flow(x)`` lies outside the frame: bool ``[B,H,W]``."""
    _, height, width, _ = flow.shape
    ys = torch.arange(height, device=flow.device).view(1, height, 1)
    xs = torch.arange(width, device=flow.device).view(1, 1, width)
    x = xs + flow[..., 0]
    y = ys + flow[..., 1]
    return (x < 0) | (x > width - 1) | (y < 0) | (y > height - 1)
