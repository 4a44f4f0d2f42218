"""Guide images for propagating a stylized keyframe along a chain of frames (Rerender §4.2).

EbSynth transfers the keyframe's style to a target frame by matching patches of *guide* images:
each guide is a pair (image of the keyframe, image of the target frame) that should look alike
where the style should be copied. Rerender-A-Video uses four (paper §4.2; the weights of the authors'
configuration, propagation/ALGORITHM.md §15):

============  ======  =====================================================================
guide         weight  source (keyframe) → target (frame ``j``)
============  ======  =====================================================================
colour        6       original keyframe → original frame ``j``
edge          0.5     :func:`edge_image` of both (3×3 4-neighbour Laplacian, uint8-saturated)
positional    2       coordinate grid → the grid advected along the chain by the optical flow
temporal      0.5     stylized keyframe → the previous propagated output warped into frame ``j``
============  ======  =====================================================================

Choices made here (and why they differ from the reference where they do):

* **Warps** use :func:`flow.warp.warp` with the flow from :meth:`flow.types.FlowPairs.between`,
  **bilinear** for the positional and temporal guides (the reference warps both with nearest
  neighbour). The positional guide is advected frame after frame; a nearest warp rounds every
  step's displacement to whole pixels, so motion slower than half a pixel per frame never moves
  the grid at all, and faster motion accumulates rounding error along the chain.
* **Coordinates are kept in float32** (the reference stores the grid as uint8, i.e. 256 levels,
  ≈ 3 px steps on a 720 px frame).
* **Occluded pixels** (occlusion mask of the pair = 1) are filled with OpenCV's Telea inpainting
  with a **5 px radius** (the reference uses 30 px). Telea's fast marching fills every hole
  whatever the radius; the radius only sets the neighbourhood averaged per filled pixel, so a large
  radius costs time that grows with its area and blurs the fill more. Channels are inpainted as uint16
  (OpenCV's float32 Telea path returns values outside the input range).
* The positional guide keeps the reference's three-channel layout ``(x/(W-1), y/(H-1), 0)`` so
  that its weight splits over three channels exactly as in the reference (2 → 2/3 per channel).

Arrays here are NumPy ``[H,W,C]`` float32 in [0, 1]; flows and occlusion masks are the torch
tensors :meth:`FlowPairs.between` returns.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch

from ..common.errors import input_error
from ..common.settings import setting
from ..flow.warp import warp

#: 3×3 4-neighbour Laplacian of the edge guide (Rerender ``blender/guide.py``, EbSynth anchor §5.2).
LAPLACIAN_4 = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], dtype=np.float32)

#: Telea inpainting radius in pixels for occluded pixels of the advected guides (see module docstring).
INPAINT_RADIUS = 5

#: Weight of the region guide of a masked propagation (ALGORITHM.md §19): one channel, the grown region
#: (1 inside, 0 outside) on the keyframe → on the target frame. One pixel whose region value differs
#: costs ``50·255²``, five times the most that all of Rerender's other guides and the style channels
#: together (total weight 10) can cost at one pixel, so a target pixel inside the region is not matched
#: to a keyframe patch whose pixels lie outside it, and the region's edge in the output follows the
#: region's edge in the target frame instead of smearing.
MASK_GUIDE_WEIGHT = 50.0


@dataclass(frozen=True)
class GuideWeights:
    """Weights of the four guides (Rerender's defaults, propagation/ALGORITHM.md §15).

    Each weight is split evenly over its guide's channels by the synthesis; 0 drops the guide. Each
    field declares its setting (input name ``<guide>_weight``, range, tooltip) for the node and the CLI.

    Attributes:
        colour: original keyframe → original target frame.
        edge: Laplacian edges of both frames.
        positional: coordinate grid advected by the optical flow.
        temporal: the previous propagated output warped into the target frame.
    """

    colour: float = setting(6.0, "Weight of the colour guide: original keyframe → original frame (Rerender 6).",
                            name="colour_weight", min=0.0, max=100.0, step=0.1)
    edge: float = setting(0.5, "Weight of the edge guide: 3×3 Laplacian of both frames (Rerender 0.5).",
                          name="edge_weight", min=0.0, max=100.0, step=0.1)
    positional: float = setting(2.0, "Weight of the positional guide: keyframe coordinates carried by the flow "
                                     "(Rerender 2).", name="positional_weight", min=0.0, max=100.0, step=0.1)
    temporal: float = setting(0.5, "Weight of the temporal guide: the previous propagated frame warped by the flow "
                                   "(Rerender 0.5).", name="temporal_weight", min=0.0, max=100.0, step=0.1)

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not np.isfinite(value) or value < 0:
                raise input_error(f"{name}_weight", "a finite weight >= 0", value,
                                  f"use the default {getattr(GuideWeights, name)} or 0 to drop the guide")

    def as_dict(self) -> dict[str, float]:
        """The weights by guide name (for cache keys and logs)."""
        return {name: float(value) for name, value in asdict(self).items()}


def to_uint8(image: np.ndarray) -> np.ndarray:
    """``[H,W,C]`` float in [0,1] → uint8 with rounding (values outside [0,1] are clipped)."""
    return np.clip(np.rint(np.asarray(image, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def edge_image(frame: np.ndarray) -> np.ndarray:
    """Edge guide image: per-channel 3×3 4-neighbour Laplacian on the uint8 frame, saturated.

    As in Rerender's edge guide: ``cv2.filter2D`` with the kernel ``[[0,-1,0],[-1,4,-1],[0,-1,0]]``
    on the 8-bit frame keeps the 8-bit depth, so negative responses clip to 0 and responses above
    255 clip to 255 (only bright sides of edges remain). Border: OpenCV's default (reflect-101).

    Args:
        frame: ``[H,W,3]`` float32 in [0, 1].

    Returns:
        ``[H,W,3]`` float32 in [0, 1] (the 8-bit response / 255).

    Example:
        >>> frame = np.zeros((5, 5, 3), np.float32); frame[2, 2] = 1.0
        >>> edges = edge_image(frame)
        >>> float(edges[2, 2, 0]), float(edges[2, 1, 0])   # centre saturates, neighbours clip to 0
        (1.0, 0.0)
    """
    response = cv2.filter2D(to_uint8(frame), -1, LAPLACIAN_4)
    return response.astype(np.float32) / 255.0


def coordinate_grid(height: int, width: int) -> np.ndarray:
    """Positional guide of the keyframe: ``[H,W,3]`` float32, channels ``(x/(W-1), y/(H-1), 0)``.

    Example:
        >>> grid = coordinate_grid(3, 5)
        >>> grid[2, 4].tolist(), grid[0, 0].tolist()
        ([1.0, 1.0, 0.0], [0.0, 0.0, 0.0])
    """
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32) if width > 1 else np.zeros(1, np.float32)
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32) if height > 1 else np.zeros(1, np.float32)
    grid = np.zeros((height, width, 3), dtype=np.float32)
    grid[..., 0] = xs[None, :]
    grid[..., 1] = ys[:, None]
    return grid


def fill_occluded(image: np.ndarray, occlusion: np.ndarray | torch.Tensor,
                  radius: int = INPAINT_RADIUS) -> np.ndarray:
    """Fill the pixels where ``occlusion`` > 0.5 by Telea inpainting, channel by channel.

    Args:
        image: ``[H,W,C]`` float32 in [0, 1].
        occlusion: ``[H,W]`` mask, 1 = unreliable pixel to fill.
        radius: Telea neighbourhood radius in pixels.

    Returns:
        ``[H,W,C]`` float32; pixels outside the mask are unchanged up to uint16 quantisation
        (1/65535). With no occluded pixel the input is returned as is; with every pixel occluded
        there is nothing to inpaint from and the input is returned as is too.

    Example:
        >>> ramp = np.tile(np.linspace(0, 1, 8, dtype=np.float32), (8, 1))[..., None]
        >>> hole = np.zeros((8, 8), np.float32); hole[3:5, 3:5] = 1
        >>> bool(abs(fill_occluded(ramp, hole)[3, 3, 0] - ramp[3, 3, 0]) < 0.1)
        True
    """
    mask = (np.asarray(occlusion) > 0.5).astype(np.uint8)
    if not mask.any() or mask.all():
        return image
    levels = np.clip(np.rint(image * 65535.0), 0, 65535).astype(np.uint16)
    filled = np.empty_like(image, dtype=np.float32)
    for channel in range(image.shape[2]):
        plane = np.ascontiguousarray(levels[..., channel])
        filled[..., channel] = cv2.inpaint(plane, mask, radius, cv2.INPAINT_TELEA).astype(np.float32) / 65535.0
    return filled


def warp_into(image: np.ndarray, flow: torch.Tensor, occlusion: torch.Tensor,
              radius: int = INPAINT_RADIUS) -> np.ndarray:
    """Warp ``image`` of one frame into the next frame of a chain and fill its occluded pixels.

    Args:
        image: ``[H,W,C]`` float32 on the previous frame's grid.
        flow: ``[H,W,2]`` from :meth:`FlowPairs.between` ``(previous, next)``: on the next frame's
            grid, pointing into the previous frame, pixels ``(x, y)``.
        occlusion: ``[H,W]`` on the next frame's grid, 1 = no reliable match in the previous frame.
        radius: Telea radius for the fill (pixels).

    Returns:
        ``[H,W,C]`` float32 on the next frame's grid (bilinear warp, border padding, occluded pixels
        inpainted).
    """
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    warped = warp(tensor, flow[None].to(torch.float32), mode="bilinear", padding="border")
    warped = warped[0].permute(1, 2, 0).contiguous().numpy()
    return fill_occluded(warped, occlusion.numpy(), radius)


def advect_nnf(nnf: np.ndarray, flow: torch.Tensor, source_size: tuple[int, int]) -> np.ndarray:
    """Carry a nearest-neighbour field to the next frame of a chain (temporal NNF initialisation).

    The NNF of frame ``j-1`` gives, per pixel, the keyframe (source) coordinates its patch copies.
    Frame ``j``'s pixel ``p`` shows the content of frame ``j-1`` at ``p + flow(p)``, so it starts
    from that pixel's source coordinates (nearest-neighbour warp: coordinates are labels, not
    values to interpolate).

    Args:
        nnf: ``[H,W,2]`` int32 source coordinates ``(x, y)`` on frame ``j-1``'s grid.
        flow: ``[H,W,2]`` from :meth:`FlowPairs.between` ``(j-1, j)``.
        source_size: ``(height, width)`` of the source (keyframe) image, to clamp the result.

    Returns:
        ``[H,W,2]`` int32 on frame ``j``'s grid.

    Example:
        >>> identity = np.stack(np.meshgrid(np.arange(4), np.arange(3)), -1).astype(np.int32)
        >>> shift = torch.zeros(3, 4, 2); shift[..., 0] = -1   # content moved one pixel right
        >>> advect_nnf(identity, shift, (3, 4))[0].tolist()
        [[0, 0], [0, 0], [1, 0], [2, 0]]
    """
    tensor = torch.from_numpy(np.ascontiguousarray(nnf, dtype=np.float32)).permute(2, 0, 1)[None]
    warped = warp(tensor, flow[None].to(torch.float32), mode="nearest", padding="border")[0]
    warped = warped.permute(1, 2, 0).round().numpy()
    height, width = source_size
    np.clip(warped[..., 0], 0, width - 1, out=warped[..., 0])
    np.clip(warped[..., 1], 0, height - 1, out=warped[..., 1])
    return warped.astype(np.int32)


def region_guide(alpha: np.ndarray) -> np.ndarray:
    """The region guide image of one frame: ``[H,W,1]`` float32, 1 inside the grown region, else 0.

    Args:
        alpha: ``[H,W]`` float32 compositing weight from :func:`common.masks.region_alpha`: exactly 1 inside
            the grown mask, falling to 0 over the feather. The feather band counts as outside, so its
            content is matched to the keyframe's surroundings like the rest of the outside.

    Example:
        >>> region_guide(np.array([[1.0, 0.5, 0.0]], np.float32))[..., 0].tolist()
        [[1.0, 0.0, 0.0]]
    """
    return (np.asarray(alpha) >= 1.0).astype(np.float32)[..., None]


def identity_nnf(height: int, width: int) -> np.ndarray:
    """NNF mapping every pixel to itself: ``[H,W,2]`` int32 ``(x, y)``; the keyframe's own NNF."""
    xs, ys = np.meshgrid(np.arange(width, dtype=np.int32), np.arange(height, dtype=np.int32))
    return np.stack((xs, ys), axis=-1)
