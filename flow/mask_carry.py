r"""Carry one first-frame region mask through a clip by optical flow, with the occlusion masks.

A user without a segmentation model paints one MASK ``[1,H,W]`` on the first frame; this module gives
every frame its mask by following the motion, as Rerender-A-Video follows its keyframes' content
through the clip with the optical flow and the occlusion masks (Yang et al. 2023, Sec. 4; occlusion
by the forward–backward check of :mod:`flow.occlusion`).

Rule, for frame :math:`t \ge 1` with the backward flow :math:`w_{t \to t-1}` on frame ``t``'s grid
(:func:`flow.warp.warp`'s convention) and its occlusion mask :math:`O_t` (1 = frame ``t``'s pixel
has no reliable match in frame ``t-1``):

* **Composed flow.** The state is the flow :math:`c_t` from frame ``t`` back to frame 0,
  :math:`c_t(x) = w(x) + c_{t-1}(x + w(x))` (:math:`c_0 = 0`), and the mask of frame ``t`` is the
  first-frame mask sampled once at :math:`x + c_t(x)` (bilinear). Warping the previous *mask* frame
  after frame would blur its edge a little at every sub-pixel step and, once thresholded, stop it
  moving on slow motion; sampling the original mask once keeps the painted edge as sharp as painted.
* **Occluded / disoccluded pixels** (:math:`O_t = 1`: content that was hidden or outside frame
  ``t-1``, e.g. the strip entering at the border or the background behind a moving subject) take the
  composed flow — hence the mask value — of the **nearest non-occluded pixel** of the same frame
  (Euclidean distance, :func:`scipy.ndimage.distance_transform_edt`). Newly revealed content is
  most likely the same region as what surrounds it; keeping the pixel's previous value instead would
  leave a trail behind a subject that moves away. When every pixel is occluded (a shot change), no
  pixel has a match and the previous frame's mapping is kept (the region stays where it was).
* Samples landing outside frame 0 repeat its edge (``padding="border"``).

The masks are soft only where the painted mask is soft (and within a pixel of its edges, from the
bilinear sample). Streaming: :func:`iter_carried_masks` holds one frame, one ``[H,W,2]`` state and
the mask, so a long video's engine can carry a mask without holding the clip.

Example:
    >>> frames = torch.rand(3, 32, 48, 3)
    >>> carry_mask(frames, torch.ones(1, 32, 48)).shape
    torch.Size([3, 32, 48])
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch
from scipy import ndimage

from ..common.errors import input_error
from ..common.masks import check_mask
from .backend import FlowBackend
from .occlusion import ALPHA, BETA, check_thresholds, occlusion_masks
from .types import FlowPairs
from .warp import warp

__all__ = ["carry_mask", "carry_step", "iter_carried_masks", "iter_carried_masks_flow", "iter_carried_masks_steps"]


def _first_mask(mask: object, height: int, width: int, name: str) -> torch.Tensor:
    """``mask`` checked as the single first-frame mask ``[1,H,W]`` of frames ``H×W``; returns ``[1,1,H,W]``."""
    if isinstance(mask, (torch.Tensor, np.ndarray)) and mask.ndim == 3 and mask.shape[0] != 1:
        raise input_error(name, "one mask [1,H,W] for the first frame, to carry through the clip",
                          f"a batch of {mask.shape[0]} masks",
                          ["pass only the first frame's mask", "use a per-frame MASK batch directly, without "
                           "carrying it"])
    return check_mask(mask, 1, height, width, name)[None]


def _frame_tensor(frame: object, index: int, name: str) -> torch.Tensor:
    """One frame as ``[H,W,3]`` float32 (accepts ``[1,H,W,3]`` and numpy)."""
    if isinstance(frame, np.ndarray):
        frame = torch.from_numpy(frame)
    if isinstance(frame, torch.Tensor) and frame.ndim == 4 and frame.shape[0] == 1:
        frame = frame[0]
    if not isinstance(frame, torch.Tensor) or frame.ndim != 3 or frame.shape[-1] != 3:
        got = list(frame.shape) if isinstance(frame, torch.Tensor) else type(frame).__name__
        raise input_error(name, "frames [H,W,3] or [1,H,W,3] float32 in [0,1]", f"frame {index}: {got}",
                          "pass RGB IMAGE frames")
    if not frame.is_floating_point():
        raise input_error(name, "float frames in [0,1]", f"frame {index}: {frame.dtype}",
                          "convert with frame.float() / 255")
    return frame.float()


def _nearest_reliable(occluded: torch.Tensor) -> tuple[np.ndarray, np.ndarray] | None:
    """For an occlusion mask ``[H,W]`` (1 = occluded): row and column of each pixel's nearest reliable pixel.

    ``None`` when no pixel is occluded (nothing to fill) or every pixel is (nothing to fill from).
    """
    occluded_np = occluded.cpu().numpy() > 0.5
    if not occluded_np.any() or occluded_np.all():
        return None
    _, (rows, cols) = ndimage.distance_transform_edt(occluded_np, return_distances=True, return_indices=True)
    return rows, cols


def carry_step(composed: torch.Tensor, flow: torch.Tensor, occlusion: torch.Tensor) -> torch.Tensor:
    r"""One step of the composed flow to frame 0: :math:`c_t(x) = w(x) + c_{t-1}(x + w(x))`, occluded pixels filled.

    Args:
        composed: ``[H,W,2]`` float32, :math:`c_{t-1}`, flow from frame ``t-1`` to frame 0 on ``t-1``'s grid
            (zeros for frame 0).
        flow: ``[H,W,2]`` float32, flow ``t → t-1`` on frame ``t``'s grid, pixels ``(x, y)``
            (:meth:`flow.types.FlowPairs.between` ``(t-1, t)``).
        occlusion: ``[H,W]`` float32, 1 where frame ``t``'s pixel has no reliable match in ``t-1``.

    Returns:
        ``[H,W,2]`` float32 :math:`c_t`; occluded pixels hold the value of their nearest non-occluded
        pixel; if every pixel is occluded, ``composed`` unchanged (see the module docstring).
    """
    if bool((occlusion > 0.5).all()):
        return composed
    flow = flow.float()
    sampled = warp(composed.permute(2, 0, 1)[None].contiguous(), flow[None]).permute(0, 2, 3, 1)[0]
    carried = flow + sampled
    nearest = _nearest_reliable(occlusion)
    if nearest is not None:
        rows, cols = (torch.from_numpy(index).to(carried.device) for index in nearest)
        carried = carried[rows, cols]
    return carried


def _mask_at(first: torch.Tensor, composed: torch.Tensor) -> torch.Tensor:
    """The first-frame mask ``[1,1,H,W]`` sampled at ``x + composed(x)``: ``[H,W]`` float32 in [0,1]."""
    return warp(first, composed[None]).clamp_(0.0, 1.0)[0, 0]


def iter_carried_masks_steps(mask: object, steps: Iterable[tuple[torch.Tensor, torch.Tensor]],
                             frame_size: tuple[int, int] | None = None, name: str = "mask") -> Iterator[torch.Tensor]:
    """Carry a first-frame mask along flows the caller already has: yields frame 0's mask, then one per step.

    For an engine that computes the consecutive flows anyway (e.g. for propagation): it hands each pair's
    ``(flow, occlusion)`` as it goes, and nothing is computed twice.

    Args:
        mask: MASK ``[1,H,W]`` (or ``[H,W]``) float32 in [0,1], the first frame's region.
        steps: for ``t = 1, 2, …``: flow ``t → t-1`` ``[H,W,2]`` on frame ``t``'s grid (pixels ``(x, y)``) and
            frame ``t``'s occlusion mask ``[H,W]`` (1 = no reliable match in ``t-1``), i.e.
            :meth:`flow.types.FlowPairs.between` ``(t-1, t)``.
        frame_size: ``(H, W)`` the mask must have; ``None`` = the mask's own size.
        name: the mask input's name in error messages.

    Yields:
        ``[H,W]`` float32 in [0,1]: ``mask`` itself, then one mask per step.

    Raises:
        InputError: the mask checks of :func:`iter_carried_masks`; a flow of another size than the mask.
    """
    if frame_size is None:
        shape = getattr(mask, "shape", ())
        frame_size = tuple(shape[-2:]) if len(shape) in (2, 3) else (0, 0)
    height, width = (int(side) for side in frame_size)
    first = _first_mask(mask, height, width, name)
    composed = torch.zeros(height, width, 2)
    yield first[0, 0].clone()
    for index, (flow, occlusion) in enumerate(steps, start=1):
        flow, occlusion = torch.as_tensor(flow).float(), torch.as_tensor(occlusion).float()
        if tuple(flow.shape) != (height, width, 2) or tuple(occlusion.shape) != (height, width):
            raise input_error("flow", f"a flow [{height},{width},2] and an occlusion mask [{height},{width}] per "
                              f"frame, the mask's size", f"step {index}: {list(flow.shape)}, {list(occlusion.shape)}",
                              "compute the flow on frames of the mask's size")
        composed = carry_step(composed.to(flow.device), flow, occlusion)
        yield _mask_at(first.to(flow.device), composed)


def iter_carried_masks(frames: Iterable, mask: object, backend: FlowBackend | None = None,
                       alpha: float = ALPHA, beta: float = BETA, name: str = "mask") -> Iterator[torch.Tensor]:
    """Carry a first-frame mask through frames read one at a time: yields each frame's mask ``[H,W]``.

    Args:
        frames: an iterable of frames ``[H,W,3]`` or ``[1,H,W,3]`` float32 in [0,1] (a list, a tensor
            ``[N,H,W,3]``, or a reader's generator); only the current and previous frame are held.
        mask: MASK ``[1,H,W]`` (or ``[H,W]``) float32 in [0,1], the first frame's region.
        backend: optical flow estimator; ``None`` = :class:`flow.dis.DisFlow` ``("medium")``.
        alpha, beta: thresholds of the forward–backward occlusion check (:mod:`flow.occlusion`).
        name: the mask input's name in error messages.

    Yields:
        ``[H,W]`` float32 in [0,1], one per frame, the first being ``mask`` itself.

    Raises:
        InputError: a mask batch that is not 1 long, a mask of another size than the frames (checked when
            the first frame arrives), values outside [0,1], frames that are not RGB float, frames changing
            size, negative thresholds.
    """
    check_thresholds(alpha, beta)
    if backend is None:
        from .dis import DisFlow

        backend = DisFlow()
    frames = iter(frames)
    try:
        first_frame = _frame_tensor(next(frames), 0, "frames")
    except StopIteration:
        return
    height, width = first_frame.shape[:2]
    _first_mask(mask, height, width, name)  # the mask's errors before the first flow
    backend.check_size(height, width)

    def steps() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        previous = first_frame
        for index, frame in enumerate(frames, start=1):
            frame = _frame_tensor(frame, index, "frames")
            if frame.shape != previous.shape:
                raise input_error("frames", f"frames of one size ({width}×{height} W×H)",
                                  f"frame {index}: {frame.shape[1]}×{frame.shape[0]}", "resize the frames alike")
            _, forward, backward = next(iter(backend.iter_flows(torch.stack([previous, frame]), [(0, 1)])))
            forward_t = torch.from_numpy(np.asarray(forward, np.float32))[None]
            backward_t = torch.from_numpy(np.asarray(backward, np.float32))[None]
            _, occlusion = occlusion_masks(forward_t, backward_t, alpha, beta)
            previous = frame
            yield backward_t[0].to(frame.device), occlusion[0].to(frame.device)

    yield from iter_carried_masks_steps(mask, steps(), (height, width), name)


def iter_carried_masks_flow(flows: FlowPairs, mask: object, frame_count: int | None = None,
                            name: str = "mask") -> Iterator[torch.Tensor]:
    """:func:`iter_carried_masks` on a precomputed FLOW (pairs ``(t-1, t)``, e.g. pair_mode consecutive).

    Args:
        flows: a :class:`~flow.types.FlowPairs` holding every consecutive pair of the clip.
        mask: MASK ``[1,H,W]`` float32 in [0,1] of the FLOW's frame size, the first frame's region.
        frame_count: frames to yield; ``None`` = the FLOW's ``frame_count``.
        name: the mask input's name in error messages.

    Yields:
        ``[H,W]`` float32 in [0,1], one per frame.

    Raises:
        InputError: the mask checks of :func:`iter_carried_masks`; a FLOW without a consecutive pair
            (raised by :meth:`~flow.types.FlowPairs.between`, naming the pair mode to use).
    """
    height, width = flows.frame_size
    _first_mask(mask, height, width, name)
    count = flows.frame_count if frame_count is None else int(frame_count)
    if count > 1 and not flows.has(0, 1):
        flows.between(0, 1)  # raises the FLOW's own error naming pair_mode
    steps = (flows.between(index - 1, index) for index in range(1, count))
    yield from iter_carried_masks_steps(mask, steps, (height, width), name)


def carry_mask(frames: torch.Tensor, mask: object, backend: FlowBackend | None = None, alpha: float = ALPHA,
               beta: float = BETA, name: str = "mask") -> torch.Tensor:
    """Every frame's mask: a first-frame mask carried through an IMAGE batch (:func:`iter_carried_masks`).

    Args:
        frames: IMAGE ``[N,H,W,3]`` float32 in [0,1].
        mask: MASK ``[1,H,W]`` float32 in [0,1].
        backend, alpha, beta, name: as for :func:`iter_carried_masks`.

    Returns:
        MASK ``[N,H,W]`` float32 in [0,1]; ``[0]`` is ``mask``.

    Raises:
        InputError: as :func:`iter_carried_masks`.
    """
    return torch.stack(list(iter_carried_masks(frames, mask, backend, alpha, beta, name)))
