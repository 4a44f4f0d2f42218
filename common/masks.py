"""Region masks: the one place for a mask's checks, growth, feathering and compositing.

A MASK is ComfyUI's type: ``[N, H, W]`` float32 in [0, 1], 1 = restyle, 0 = keep the source. The
keyframe stage, the propagation and the blend all read a region through these functions, so "what
lies outside the region is the source video, exactly" is one rule:

* :func:`grow` widens (or, negative, shrinks) the region by whole pixels before it is used
  (``mask_grow``), so the restyled region covers the subject's outline with a margin;
* :func:`feather_alpha` turns the grown region into a compositing weight that is 1 inside it and falls
  linearly to exactly 0 at ``feather`` pixels outside it (distance transform, so the fall-off is
  measured in pixels, not in blur sigmas, and nothing beyond ``feather`` pixels is touched);
* :func:`composite` puts the stylized frames over the source frames with that weight; where the weight
  is 0 the output is the source tensor's value, bit for bit.

Example:
    >>> import torch
    >>> region = torch.zeros(1, 9, 9); region[0, 4, 4] = 1
    >>> alpha = feather_alpha(region, feather=2)
    >>> float(alpha[0, 4, 4]), float(alpha[0, 4, 5]), float(alpha[0, 4, 7])
    (1.0, 0.5, 0.0)
"""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import torch

from .errors import input_error
from .settings import declare

#: Threshold above which a soft mask value counts as inside the region (grow, feather, emptiness).
INSIDE = 0.5

MASK_GROW = declare("mask_grow", 8, "Widen the mask by this many pixels before it is used (negative shrinks it), so "
                    "the restyled region covers the subject's outline with a margin.", min=-256, max=256, step=1)
FEATHER = declare("feather", 8, "Soft edge, in pixels, outside the grown mask where the stylized frames fade into the "
                  "source; beyond it the output is the source video, bit for bit.", min=0, max=256, step=1)
MASK_SETTINGS = (MASK_GROW, FEATHER)


def check_mask(mask: object, frames: int, height: int, width: int, name: str = "mask") -> torch.Tensor:
    """Check a MASK against the video it restyles and return it as ``[M, H, W]`` float32, M = 1 or ``frames``.

    Args:
        mask: ``[M, H, W]`` (or ``[H, W]``) tensor or array, values in [0, 1].
        frames, height, width: the video's frame count and frame size in pixels.
        name: the input's name for error messages (node socket or CLI option).

    Raises:
        InputError: not a tensor/array, wrong rank, another size, a batch that is neither 1 nor
            ``frames`` long, or values outside [0, 1].

    Example:
        >>> check_mask(torch.ones(4, 6), frames=3, height=4, width=6).shape
        torch.Size([1, 4, 6])
    """
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(mask)
    if not isinstance(mask, torch.Tensor):
        raise input_error(name, "a MASK tensor [N,H,W]", type(mask).__name__,
                          "connect a MASK output (a segmentation node, Load Image's MASK, or Rerender Propagate Mask)")
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3:
        raise input_error(name, "shape [N,H,W] or [H,W]", list(mask.shape), "pass a single-channel mask")
    if tuple(mask.shape[1:]) != (height, width):
        raise input_error(name, f"masks of the frames' size H×W = {height}×{width}",
                          f"{mask.shape[1]}×{mask.shape[2]}",
                          [f"resize the mask to {width}×{height} (W×H)", "load the frames at the mask's size"])
    if mask.shape[0] not in (1, frames):
        raise input_error(name, f"1 mask (carried through the clip by the optical flow) or one per frame ({frames})",
                          f"{mask.shape[0]} masks",
                          ["pass one mask per frame", "pass only the first frame's mask"])
    mask = mask.float()
    if mask.numel() and (float(mask.min()) < 0.0 or float(mask.max()) > 1.0):
        raise input_error(name, "values in [0, 1]", f"[{float(mask.min()):g}, {float(mask.max()):g}]",
                          "divide an 8-bit mask by 255")
    return mask


def warn_if_empty(mask: torch.Tensor, name: str = "mask") -> bool:
    """Warn (and return True) when no pixel of ``mask`` ``[M,H,W]`` is inside the region: the output is the source."""
    empty = not bool((mask > INSIDE).any())
    if empty:
        warnings.warn(f"{name}: the mask is empty (all zero), so the output equals the source video; paint or "
                      f"select the region to restyle", stacklevel=2)
    return empty


def _disc(radius: int) -> np.ndarray:
    """Pixels within ``radius`` (Euclidean) of the centre: growth is measured in pixels in every direction."""
    offsets = np.arange(-radius, radius + 1)
    return (np.hypot(offsets[:, None], offsets[None, :]) <= radius).astype(np.uint8)


def grow(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Binarise ``mask`` ``[M,H,W]`` at 0.5 and widen it by ``pixels`` (a disc; negative shrinks). float32 {0, 1}.

    Example:
        >>> region = torch.zeros(1, 7, 7); region[0, 3, 3] = 1
        >>> int(grow(region, 2).sum())
        13
    """
    binary = (mask > INSIDE).to(torch.uint8).cpu().numpy()
    if pixels:
        op = cv2.dilate if pixels > 0 else cv2.erode
        kernel = _disc(abs(int(pixels)))
        binary = np.stack([op(frame, kernel) for frame in binary])
    return torch.from_numpy(binary.astype(np.float32)).to(mask.device)


def feather_alpha(region: torch.Tensor, feather: int) -> torch.Tensor:
    """Compositing weight of a (grown) region ``[M,H,W]``: 1 inside, linear fall-off to exactly 0 at ``feather`` px.

    The distance is Euclidean (OpenCV's exact distance transform) from the nearest inside pixel.
    Returns float32 ``[M,H,W]`` in [0, 1]; ``feather = 0`` gives the binary region.
    """
    binary = (region > INSIDE).cpu().numpy()
    if feather <= 0:
        return torch.from_numpy(binary.astype(np.float32)).to(region.device)
    alphas = []
    for frame in binary:
        if not frame.any():
            alphas.append(np.zeros(frame.shape, np.float32))
            continue
        distance = cv2.distanceTransform((~frame).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        alphas.append(np.clip(1.0 - distance / float(feather), 0.0, 1.0).astype(np.float32))
    return torch.from_numpy(np.stack(alphas)).to(region.device)


def region_alpha(mask: torch.Tensor, mask_grow: int, feather: int) -> torch.Tensor:
    """The weight a mask ``[M,H,W]`` gives the stylized frames: :func:`grow` then :func:`feather_alpha`."""
    return feather_alpha(grow(mask, mask_grow), feather)


def composite(stylized: torch.Tensor, source: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Stylized frames over source frames: ``source + alpha·(stylized − source)``; source exactly where alpha = 0.

    Args:
        stylized, source: IMAGE ``[N,H,W,3]`` float32 in [0, 1], same shape.
        alpha: ``[N,H,W]`` or ``[1,H,W]`` float32 in [0, 1].

    Returns:
        IMAGE ``[N,H,W,3]`` float32.
    """
    weight = alpha[..., None].to(stylized.dtype)
    mixed = source + weight * (stylized - source)
    return torch.where(weight > 0, mixed, source)
