"""Temporal-aware blending of the forward and backward candidates (Rerender §4.2; ALGORITHM.md §17).

For a frame ``n = a + d`` between keyframes ``a`` and ``b = a + L`` (``0 < d < L``) there are two
stylized candidates: ``P_f`` propagated forward from ``a`` and ``P_b`` backward from ``b``, each with
a per-pixel NNF error ``E_f``, ``E_b``. Per frame:

1. **Selection** (``S`` = 1 where the backward candidate is taken). With the time position
   ``t = d / L``, a pixel takes the backward candidate where ``t·E_f > (1 − t)·E_b``: each
   candidate's error is weighted by its distance to its own keyframe, in units of the segment.

   *Choice of the time weights.* The reference uses ``w = (d − 1)/(K − 1)``, which is 0 on the first
   frame (that frame is 100 % forward whatever the errors) and never reaches 1 (the last frame is
   never 100 % backward) (ALGORITHM.md §17). ``t = d / L`` is symmetric: frame ``a + d`` treats the
   forward candidate exactly as frame ``b − d`` treats the backward one, both candidates compete on
   every frame, and the midpoint compares plain errors. It also handles segments of any length.

2. **Persistence along the motion**: once a pixel switched to the backward candidate it stays
   switched on the same scene point: ``S_n = S_n^raw OR warp_nearest(S_{n−1})`` (the previous mask
   carried into frame ``n`` by the consecutive flow), as in the reference, except that the carried
   mask is dropped where frame ``n``'s occlusion mask is set (newly visible content has no history,
   so it is decided by its own errors). Flicker between the two candidates is thus avoided.

3. **Min-error composite** ``C = P_f where S = 0, P_b where S = 1``.

4. **Histogram-preserving blend** (ALGORITHM.md §17.4) in CIE Lab (OpenCV float conversion, values on the
   8-bit Lab scale: L ×255/100, a and b +128): per channel, standardise both candidates
   (``z = (x − μ)/σ``), mix ``m = (1 − t)·z_f + t·z_b``, and give ``m`` the mean and standard deviation
   of ``C``. A linear mix of two images loses contrast (its std is below both); re-imposing the
   composite's statistics restores it (Gaussian form of the Heitz–Neyret histogram-preserving blend).
   Channels with σ = 0 standardise to 0; if the mix itself is flat the composite's channel is used.

5. **Optional screened Poisson** (ALGORITHM.md §17.5, :mod:`propagation.poisson`, off by default as in the
   paper): the result's gradients follow the selected candidate's, the values the histogram blend.

Keyframes are output exactly as given (the stylized keyframe tensor values), unless a region (mask) is
given: then every frame, keyframes included, is composited over the source frame (:func:`composite_region`).
Frames with a candidate from one direction only (before the first keyframe, after the last, or when
propagation ran in one direction) output that candidate unchanged.
"""

from __future__ import annotations

from typing import Callable, Iterator, Protocol, Sequence

import cv2
import numpy as np
import torch

from ..common.errors import input_error
from ..common.masks import composite
from ..common.memory import check_allocation
from ..flow.warp import warp
from .poisson import GRADIENT_WEIGHTS, poisson_blend
from .result import BACKWARD, FORWARD, Propagation

#: Standard deviations below this (8-bit Lab units) count as a flat channel.
FLAT_STD = 1e-6


def rgb_to_lab(image: np.ndarray) -> np.ndarray:
    """``[H,W,3]`` RGB float in [0,1] → CIE Lab on the 8-bit scale (L 0–255, a/b offset 128), float32.

    Example:
        >>> rgb_to_lab(np.ones((1, 1, 3), np.float32)).round(1).tolist()
        [[[255.0, 128.0, 128.0]]]
    """
    lab = cv2.cvtColor(np.ascontiguousarray(image, dtype=np.float32), cv2.COLOR_RGB2Lab)
    lab[..., 0] *= 255.0 / 100.0
    lab[..., 1:] += 128.0
    return lab


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_lab`; the RGB result is clipped to [0, 1] (float32)."""
    scaled = np.array(lab, dtype=np.float32)
    scaled[..., 0] *= 100.0 / 255.0
    scaled[..., 1:] -= 128.0
    return np.clip(cv2.cvtColor(scaled, cv2.COLOR_Lab2RGB), 0.0, 1.0)


def time_position(frame: int, previous_key: int, next_key: int) -> float:
    """``t = d / L`` of ``frame`` in the segment ``(previous_key, next_key)``; 0 at ``a``, 1 at ``b``.

    Example:
        >>> [time_position(n, 10, 20) for n in (11, 15, 19)]
        [0.1, 0.5, 0.9]
    """
    return (frame - previous_key) / (next_key - previous_key)


def select_backward(forward_error: np.ndarray, backward_error: np.ndarray, t: float,
                    carried: np.ndarray | None = None) -> np.ndarray:
    """Selection mask ``[H,W]`` bool, True = take the backward candidate (step 1–2 of the module doc).

    Args:
        forward_error: ``[H,W]`` NNF error of the forward candidate.
        backward_error: ``[H,W]`` NNF error of the backward candidate.
        t: time position ``d / L`` in (0, 1).
        carried: ``[H,W]`` bool, the previous frame's selection carried into this frame (OR-ed in).

    Example:
        >>> select_backward(np.array([[1.0, 9.0]]), np.array([[1.0, 1.0]]), 0.2).tolist()
        [[False, True]]
    """
    chosen = t * np.asarray(forward_error) > (1.0 - t) * np.asarray(backward_error)
    if carried is not None:
        chosen |= carried
    return chosen


def carry_selection(previous: np.ndarray, flow: torch.Tensor, occlusion: torch.Tensor) -> np.ndarray:
    """Carry the previous frame's selection into this frame along the flow (nearest warp).

    Args:
        previous: ``[H,W]`` bool selection of frame ``n−1``.
        flow: ``[H,W,2]`` from :meth:`FlowPairs.between` ``(n−1, n)``.
        occlusion: ``[H,W]`` occlusion of frame ``n`` (1 = no match in ``n−1``): not carried there.

    Returns:
        ``[H,W]`` bool.
    """
    mask = torch.from_numpy(np.ascontiguousarray(previous, dtype=np.float32))[None, None]
    carried = warp(mask, flow[None].to(torch.float32), mode="nearest", padding="zeros")[0, 0]
    return ((carried > 0.5) & (occlusion < 0.5)).numpy()


def _standardise(channel: np.ndarray) -> np.ndarray:
    std = channel.std()
    if std < FLAT_STD:
        return np.zeros_like(channel)
    return (channel - channel.mean()) / std


def histogram_blend(forward_lab: np.ndarray, backward_lab: np.ndarray, composite_lab: np.ndarray,
                    backward_weight: float) -> np.ndarray:
    """Histogram-preserving blend of two Lab images with the statistics of the composite (ALGORITHM.md §17.4).

    Args:
        forward_lab: ``[H,W,3]`` forward candidate in Lab (any consistent scale).
        backward_lab: ``[H,W,3]`` backward candidate, same scale.
        composite_lab: ``[H,W,3]`` min-error composite whose per-channel mean and std the result gets.
        backward_weight: weight of the backward candidate, ``t`` in [0, 1]; forward gets ``1 − t``.

    Returns:
        ``[H,W,3]`` float64 whose per-channel mean and (population) std equal the composite's.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> f, b, c = (rng.random((4, 5, 3)) for _ in range(3))
        >>> out = histogram_blend(f, b, c, 0.3)
        >>> bool(np.allclose(out.mean((0, 1)), c.mean((0, 1))) and np.allclose(out.std((0, 1)), c.std((0, 1))))
        True
    """
    out = np.empty(composite_lab.shape, dtype=np.float64)
    for channel in range(composite_lab.shape[2]):
        target = composite_lab[..., channel].astype(np.float64)
        mixed = ((1.0 - backward_weight) * _standardise(forward_lab[..., channel].astype(np.float64))
                 + backward_weight * _standardise(backward_lab[..., channel].astype(np.float64)))
        mixed_std = mixed.std()
        if mixed_std < FLAT_STD:
            out[..., channel] = target
        else:
            out[..., channel] = (mixed - mixed.mean()) / mixed_std * target.std() + target.mean()
    return out


def blend_frame(forward: np.ndarray, backward: np.ndarray, selection: np.ndarray, t: float,
                histogram: bool = True, poisson: bool = False,
                poisson_weights: tuple[float, float, float] = GRADIENT_WEIGHTS) -> np.ndarray:
    """Blend one frame's two candidates given the selection mask (steps 3–5 of the module doc).

    Args:
        forward: ``[H,W,3]`` float32 RGB in [0, 1].
        backward: ``[H,W,3]`` float32 RGB in [0, 1].
        selection: ``[H,W]`` bool, True = backward.
        t: time position, the backward candidate's weight in the histogram blend.
        histogram: apply the histogram-preserving blend; off → the min-error composite.
        poisson: apply screened Poisson gradient fusion afterwards.
        poisson_weights: gradient weights λ for (L, a, b).

    Returns:
        ``[H,W,3]`` float32 RGB in [0, 1].
    """
    composite = np.where(selection[..., None], backward, forward)
    if not histogram and not poisson:
        return composite.astype(np.float32)
    forward_lab, backward_lab = rgb_to_lab(forward), rgb_to_lab(backward)
    blended_lab = rgb_to_lab(composite)
    if histogram:
        blended_lab = histogram_blend(forward_lab, backward_lab, blended_lab, t)
    if poisson:
        blended_lab = poisson_blend(blended_lab, forward_lab, backward_lab, selection, poisson_weights)
    return lab_to_rgb(blended_lab)


def blend_video(propagation: Propagation, histogram: bool = True, poisson: bool = False,
                poisson_weights: tuple[float, float, float] = GRADIENT_WEIGHTS,
                progress: Callable[..., None] | None = None, region=None,
                source_frames: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend every frame of a PROPAGATION into the output video (module doc, Rerender §4.2.1).

    With a region (``region``, else the PROPAGATION's own from a masked EbSynth Propagate) every frame,
    keyframes included, is composited over the source frames with the region's weight
    (:func:`composite_region`): outside the grown mask + feather the output is the source, bit for bit.

    Args:
        propagation: forward/backward candidates and errors (:class:`~propagation.result.Propagation`).
        histogram: histogram-preserving blend (on in the reference); off → the min-error composite.
        poisson: screened Poisson gradient fusion (off by default, as in the paper).
        poisson_weights: gradient weights λ for (L, a, b).
        progress: optional ``progress(done_frames, preview [H,W,3])`` callback.
        region: optional :class:`~propagation.region.Region` (``alpha(index)`` → ``[H,W]`` weight); ``None``:
            ``propagation.region``.
        source_frames: IMAGE ``[N,H,W,3]`` the region composites over; ``None``: ``propagation.source_frames``.

    Returns:
        ``(frames, selection)``: IMAGE ``[N,H,W,3]`` float32 in [0, 1] with the keyframes bit-exact (without a
        region), and MASK ``[N,H,W]`` float32, 1 where the backward candidate was selected (0 on keyframes).

    Raises:
        InputError: the output would not fit in memory, a consecutive flow pair is missing, or a region
            without source frames of the video's size (naming ``frames``).
    """
    region = propagation.region if region is None else region
    source_frames = propagation.source_frames if source_frames is None else source_frames
    if region is not None:
        if not isinstance(source_frames, torch.Tensor) or tuple(source_frames.shape[:3]) != (
                propagation.frame_count, *propagation.frame_size):
            raise input_error("frames", f"the {propagation.frame_count} source frames of the propagated video "
                              "to composite the region over", "none" if source_frames is None
                              else list(source_frames.shape), "connect the frames given to EbSynth Propagate")
    count = propagation.frame_count
    height, width = propagation.frame_size
    check_allocation(height * width * 4 * 4, count, "blended frames", "frames",
                     ["load fewer frames", "lower the resolution"])
    frames = torch.empty((count, height, width, 3), dtype=torch.float32)
    selections = torch.zeros((count, height, width), dtype=torch.float32)
    for position, key in enumerate(propagation.keyframes.indices):
        frames[key] = propagation.keyframe_images[position]
        if region is not None:
            frames[key] = composite_region(frames[key], source_frames[key], region.alpha(key))
    done = len(propagation.keyframes.indices)

    for previous_key, next_key, segment in propagation.keyframes.segments():
        blended = blend_segment(propagation, propagation.flow, previous_key, next_key, segment, histogram, poisson,
                                poisson_weights)
        for frame, (result, selection) in zip(segment, blended):
            frames[frame] = torch.from_numpy(result)
            if region is not None:
                frames[frame] = composite_region(frames[frame], source_frames[frame], region.alpha(frame))
            selections[frame] = torch.from_numpy(selection.astype(np.float32))
            done += 1
            if progress is not None:
                progress(done, frames[frame])
    return frames, selections


def composite_region(stylized: torch.Tensor, source: torch.Tensor, alpha: np.ndarray) -> torch.Tensor:
    """One frame: the stylized frame ``[H,W,3]`` over the source frame ``[H,W,3]`` (float32 in [0, 1]) with the
    region's weight ``[H,W]`` (:func:`common.masks.composite`); the source, bit for bit, where the weight is 0.

    Example:
        >>> alpha = np.array([[1.0, 0.0]], np.float32)
        >>> composite_region(torch.ones(1, 2, 3), torch.zeros(1, 2, 3), alpha)[..., 0].tolist()
        [[1.0, 0.0]]
    """
    source = source.to(torch.float32)
    return composite(stylized.to(torch.float32)[None], source[None], torch.from_numpy(np.asarray(alpha))[None])[0]


class Candidates(Protocol):
    """Where :func:`blend_segment` reads each frame's candidates (a PROPAGATION, or the segment engine's)."""

    def has(self, frame: int, direction: str) -> bool: ...

    def candidate(self, frame: int, direction: str) -> tuple[np.ndarray, np.ndarray]: ...


class Flows(Protocol):
    """Where :func:`blend_segment` reads the consecutive flows (a FLOW: :class:`~flow.types.FlowPairs`)."""

    def between(self, source: int, target: int) -> tuple[torch.Tensor, torch.Tensor]: ...


def blend_segment(candidates: Candidates, flow: Flows, previous_key: int | None, next_key: int | None,
                  frames: Sequence[int], histogram: bool = True, poisson: bool = False,
                  poisson_weights: tuple[float, float, float] = GRADIENT_WEIGHTS
                  ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Blend the frames of one segment between keyframes, in order (the per-segment step of :func:`blend_video`).

    Frame numbers are those of ``candidates`` and ``flow`` (the whole video's, or a segment's own),
    since only differences to the keyframes enter the blend. A segment with both candidates on its
    frames is blended (module doc, steps 1–5); otherwise each frame passes its one candidate unchanged.

    Args:
        candidates: ``has(frame, direction)`` and ``candidate(frame, direction) → (image [H,W,3] float32,
            error [H,W] float32)``, e.g. a :class:`~propagation.result.Propagation`.
        flow: ``between(frame - 1, frame)`` for the selection tracking (two-sided segments only).
        previous_key, next_key: the segment's keyframes (``None`` on an open side).
        frames: the segment's frames, ascending and consecutive.
        histogram, poisson, poisson_weights: as :func:`blend_video`.

    Yields:
        Per frame, ``(image [H,W,3] float32 in [0, 1], selection [H,W] bool)`` (True = backward candidate).

    Raises:
        InputError: a frame without any candidate, or a consecutive flow pair missing.
    """
    two_sided = (previous_key is not None and next_key is not None
                 and candidates.has(frames[0], FORWARD) and candidates.has(frames[0], BACKWARD))
    carried = None
    for frame in frames:
        if two_sided:
            t = time_position(frame, previous_key, next_key)
            forward, forward_error = candidates.candidate(frame, FORWARD)
            backward, backward_error = candidates.candidate(frame, BACKWARD)
            if carried is not None:
                step_flow, occlusion = flow.between(frame - 1, frame)
                carried = carry_selection(carried, step_flow, occlusion)
            selection = select_backward(forward_error, backward_error, t, carried)
            result = blend_frame(forward, backward, selection, t, histogram, poisson, poisson_weights)
            carried = selection
        else:
            direction = FORWARD if candidates.has(frame, FORWARD) else BACKWARD
            if not candidates.has(frame, direction):
                raise input_error("propagation", f"a candidate for frame {frame}", "none",
                                  "run Rerender EbSynth Propagate on the same frames and keyframes")
            result = candidates.candidate(frame, direction)[0]
            selection = np.full(result.shape[:2], direction == BACKWARD)
        yield result, selection
