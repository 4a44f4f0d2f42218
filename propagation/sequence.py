"""Propagate stylized keyframes through a video, forward and backward (Rerender §4.2; ALGORITHM.md §13).

Every keyframe ``k`` is carried along two *chains*: forward to the frames ``k+1 …`` up to the next
keyframe, backward to the frames ``k−1 …`` down to the previous keyframe. Frames before the first
keyframe can only be reached backward and frames after the last keyframe only forward, so those
chains are always run; ``direction`` (``both`` / ``forward`` / ``backward``) selects the chains
between two keyframes. Each frame of a chain is one guided synthesis (:func:`synthesize`) from the
stylized keyframe with the four guides of :mod:`propagation.guides`; the positional guide, the
temporal guide and (optionally) the NNF are carried from the chain's previous frame by the
consecutive optical flow.

**Temporal NNF initialisation** (``temporal_nnf_init``, on by default): frame ``j``'s NNF starts from
frame ``j−1``'s final NNF advected by the flow (:func:`~propagation.guides.advect_nnf`; for the first
frame, the identity advected from the keyframe), and the synthesis then runs only the finest
``SynthesisParams.initial_nnf_levels`` pyramid level(s) (default 1) instead of the whole coarse-to-fine
pyramid (ALGORITHM.md §13): about a fifth less work for a tenth of a dB and steadier frames; with
``initial_nnf_levels = 2`` the quality and the time are those without initialisation (figures in the README,
``python benchmarks/propagation_video.py``).

Caching: each finished chain is stored in a content-keyed cache entry (namespace ``propagation``)
keyed by everything it depends on (stylized keyframe, the frames, the flows along the chain, the
synthesis parameters, guide weights and options); the backend is not part of the key since all
backends follow the same algorithm. A re-run, or a run resumed after an interruption, reuses every
finished chain and recomputes only the missing ones.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from ..common import cache
from ..common.checks import check_image_batch, check_same_size
from ..common.errors import input_error
from ..common.keyframes import Keyframes
from ..common.masks import FEATHER, MASK_GROW
from ..flow.types import FlowPairs
from .backends.select import choose_backend
from .guides import (INPAINT_RADIUS, MASK_GUIDE_WEIGHT, GuideWeights, advect_nnf, coordinate_grid, edge_image,
                     identity_nnf, region_guide, warp_into)
from .params import SynthesisParams
from .region import Region
from .result import BACKWARD, FORWARD, Chain, Propagation
from .synthesis import Guide, synthesize

logger = logging.getLogger(__name__)

DIRECTION_MODES = ("both", "forward", "backward")

#: Candidates + errors above this many bytes are memory-mapped from the cache instead of held in RAM.
DEFAULT_RAM_LIMIT = 1 << 30

CACHE_NAMESPACE = "propagation"
#: Bump when the chain computation changes, so older cache entries are not reused.
CACHE_VERSION = 1


def plan_chains(keyframes: Keyframes, direction: str = "both") -> list[tuple[int, str, tuple[int, ...]]]:
    """The chains to run: ``(keyframe, "forward"|"backward", target frames in propagation order)``.

    Raises:
        InputError: an unknown ``direction``.

    Example:
        >>> from rerender_video.common.keyframes import Keyframes
        >>> plan_chains(Keyframes((2, 5), 8), "forward")
        [(2, 'backward', (1, 0)), (2, 'forward', (3, 4)), (5, 'forward', (6, 7))]
    """
    if direction not in DIRECTION_MODES:
        raise input_error("direction", f"one of {DIRECTION_MODES}", repr(direction), "use 'both'")
    chains = []
    for previous_key, next_key, frames in keyframes.segments():
        if next_key is not None and (previous_key is None or direction in ("both", "backward")):
            chains.append((next_key, BACKWARD, tuple(reversed(frames))))
        if previous_key is not None and (next_key is None or direction in ("both", "forward")):
            chains.append((previous_key, FORWARD, tuple(frames)))
    return chains


def _numpy(image: torch.Tensor) -> np.ndarray:
    return image.detach().to("cpu", torch.float32).contiguous().numpy()


def _torch(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _view(array: np.ndarray) -> torch.Tensor:
    """A float32 array (a box of a frame: strided) as a tensor without copying it (synthesize packs its inputs)."""
    return torch.from_numpy(np.asarray(array, dtype=np.float32))


#: Pixels around a region's support (compositing weight > 0) that a masked synthesis also covers, on the
#: target frame and on the keyframe (ALGORITHM.md §19): room for whole patches and for the motion of the edge.
REGION_MARGIN = 24


def region_box(alpha: np.ndarray, margin: int, minimum: int) -> tuple[slice, slice] | None:
    """Bounding box of ``alpha > 0`` widened by ``margin`` pixels (clipped to the frame), at least ``minimum``
    pixels per side where the frame allows; ``None`` when ``alpha`` is 0 everywhere.

    Args:
        alpha: ``[H,W]`` float32 compositing weight (:func:`common.masks.region_alpha`).

    Returns:
        ``(rows, columns)`` slices.

    Example:
        >>> alpha = np.zeros((40, 60), np.float32); alpha[10:12, 30:31] = 1
        >>> region_box(alpha, 2, 11)
        (slice(5, 16, None), slice(25, 36, None))
    """
    rows = np.flatnonzero(np.asarray(alpha).max(axis=1) > 0)
    if rows.size == 0:
        return None
    columns = np.flatnonzero(np.asarray(alpha).max(axis=0) > 0)
    height, width = alpha.shape

    def span(first: int, last: int, size: int) -> slice:
        start, stop = max(first - margin, 0), min(last + 1 + margin, size)
        short = minimum - (stop - start)
        if short > 0:
            start = max(start - (short + 1) // 2, 0)
            stop = min(start + minimum, size)
            start = max(stop - minimum, 0)
        return slice(start, stop)

    return span(int(rows[0]), int(rows[-1]), height), span(int(columns[0]), int(columns[-1]), width)


def iter_chain(frame: Callable[[int], np.ndarray], style: torch.Tensor | np.ndarray, key: int,
               targets: Sequence[int], between: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]],
               params: SynthesisParams = SynthesisParams(), weights: GuideWeights = GuideWeights(),
               temporal_nnf_init: bool = True, backend: str = "auto",
               inpaint_radius: int = INPAINT_RADIUS,
               region: Callable[[int], np.ndarray] | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Propagate one stylized keyframe along a chain of frames, one frame at a time (a generator).

    The frames and flows are asked for as the chain advances, so a caller can stream them (the
    segment engine decodes a long one-sided segment in chunks); :func:`propagate_chain` is this
    over an IMAGE batch and a FLOW.

    Args:
        frame: ``frame(index)`` → the original frame ``[H,W,3]`` float32 in [0, 1]; called for
            ``key`` first, then for each target in order.
        style: ``[H,W,3]`` float32, the stylized keyframe ``key``.
        key: the keyframe's frame index.
        targets: frames to synthesize in order; each must be adjacent to the previous one (the first to
            ``key``), i.e. ``key±1, key±2, …``.
        between: ``between(previous, target)`` → ``(flow [H,W,2], occlusion [H,W])`` as
            :meth:`FlowPairs.between` gives them.
        params, weights, temporal_nnf_init, backend, inpaint_radius: as :func:`propagate_chain`.
        region: optional ``region(index)`` → ``[H,W]`` float32 compositing weight of that frame
            (:func:`common.masks.region_alpha`), called for ``key`` then each target. A masked chain adds the
            region guide (:func:`~propagation.guides.region_guide`, weight
            :data:`~propagation.guides.MASK_GUIDE_WEIGHT`) and synthesizes only the box around the target's
            region (:func:`region_box`, :data:`REGION_MARGIN`) from the box around the keyframe's region;
            outside the box the candidate is the previous one carried by the flow, with error 0, and a frame
            whose weight is 0 everywhere is not synthesized at all (ALGORITHM.md §19).

    Yields:
        Per target, ``(image [H,W,3] float32, error [H,W] float32)``: the stylized candidate and its NNF
        error (read-only: the chain keeps reading the image for the next frame's temporal guide).

    Raises:
        InputError: a consecutive flow pair along the chain is missing.
    """
    key_frame = frame(key)
    height, width = key_frame.shape[:2]
    style_array = _numpy(style) if isinstance(style, torch.Tensor) else np.asarray(style, dtype=np.float32)
    edge_key = edge_image(key_frame) if weights.edge > 0 else None
    grid = coordinate_grid(height, width)
    position, previous_output, previous_nnf, previous = grid, style_array, identity_nnf(height, width), key
    margin, minimum = max(REGION_MARGIN, 2 * params.patch_size), 2 * params.patch_size + 1
    full = (slice(0, height), slice(0, width))
    if region is not None:
        key_alpha = np.asarray(region(key), dtype=np.float32)
        key_guide = region_guide(key_alpha)
        source_box = region_box(key_alpha, margin, minimum) or full
    for target in targets:
        step_flow, occlusion = between(previous, target)
        target_frame = frame(target)
        pairs = []
        if weights.colour > 0:
            pairs.append((key_frame, target_frame, weights.colour))
        if weights.edge > 0:
            pairs.append((edge_key, edge_image(target_frame), weights.edge))
        if weights.positional > 0:
            position = warp_into(position, step_flow, occlusion, inpaint_radius)
            pairs.append((grid, position, weights.positional))
        warped_output = None
        if weights.temporal > 0 or region is not None:
            warped_output = warp_into(previous_output, step_flow, occlusion, inpaint_radius)
        if weights.temporal > 0:
            pairs.append((style_array, warped_output, weights.temporal))
        advected = advect_nnf(previous_nnf, step_flow, (height, width)) if temporal_nnf_init or region else None
        if region is None:
            guides = [Guide(_torch(source), _torch(target_image), weight) for source, target_image, weight in pairs]
            initial = torch.from_numpy(advected) if temporal_nnf_init else None
            result = synthesize(_torch(style_array), guides, params, initial_nnf=initial, backend=backend)
            previous_output = _numpy(result.image)
            previous_nnf = result.nnf.detach().cpu().numpy()
            error = _numpy(result.error)
        else:
            alpha = np.asarray(region(target), dtype=np.float32)
            pairs.append((key_guide, region_guide(alpha), MASK_GUIDE_WEIGHT))
            previous_output = warped_output   # a new array per frame (warp_into); the box is pasted into it
            previous_nnf = advected
            error = np.zeros((height, width), np.float32)
            box = region_box(alpha, margin, minimum)
            if box is not None:
                origin = np.array([source_box[1].start, source_box[0].start], np.int32)
                guides = [Guide(_view(source[source_box]), _view(target_image[box]), weight)
                          for source, target_image, weight in pairs]
                initial = torch.from_numpy(advected[box] - origin) if temporal_nnf_init else None
                result = synthesize(_view(style_array[source_box]), guides, params, initial_nnf=initial,
                                    backend=backend)
                previous_output[box] = _numpy(result.image)
                error[box] = _numpy(result.error)
                previous_nnf[box] = result.nnf.detach().cpu().numpy() + origin
        previous = target
        yield previous_output, error


def propagate_chain(frames: torch.Tensor, style: torch.Tensor, key: int, targets: Sequence[int], flow: FlowPairs,
                    params: SynthesisParams = SynthesisParams(), weights: GuideWeights = GuideWeights(),
                    temporal_nnf_init: bool = True, backend: str = "auto", inpaint_radius: int = INPAINT_RADIUS,
                    on_frame: Callable[[int, torch.Tensor], None] | None = None,
                    region: Callable[[int], np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Propagate one stylized keyframe along a chain of frames.

    Args:
        frames: IMAGE ``[N,H,W,3]`` float32 in [0, 1], the original video frames.
        style: ``[H,W,3]`` float32, the stylized keyframe ``key``.
        key: the keyframe's frame index.
        targets: frames to synthesize in order; each must be adjacent to the previous one (the first to
            ``key``), i.e. ``key±1, key±2, …``.
        flow: FLOW holding the consecutive pairs along the chain.
        params: synthesis parameters.
        weights: guide weights.
        temporal_nnf_init: start each frame's NNF from the previous frame's, advected by the flow.
        backend: synthesis backend (``"auto"``, ``"cpu"``, ``"cuda"``).
        inpaint_radius: Telea radius (pixels) for occluded pixels of the advected guides.
        on_frame: called as ``on_frame(row, image [H,W,3])`` after each frame.
        region: optional ``region(index)`` → ``[H,W]`` compositing weight (masked propagation, :func:`iter_chain`).

    Returns:
        ``(images, errors)``: ``[n,H,W,3]`` float16 candidates and ``[n,H,W]`` float32 NNF errors.

    Raises:
        InputError: a consecutive flow pair along the chain is missing.
    """
    height, width = frames.shape[1:3]
    images = np.empty((len(targets), height, width, 3), dtype=np.float16)
    errors = np.empty((len(targets), height, width), dtype=np.float32)
    chain = iter_chain(lambda index: _numpy(frames[index]), style, key, targets, flow.between, params, weights,
                       temporal_nnf_init, backend, inpaint_radius, region)
    for row, (image, error) in enumerate(chain):
        images[row] = image
        errors[row] = error
        if on_frame is not None:
            on_frame(row, torch.from_numpy(image))
    return images, errors


def chain_key(frames: torch.Tensor, style: torch.Tensor, key: int, targets: Sequence[int], flow: FlowPairs,
              params: SynthesisParams, weights: GuideWeights, temporal_nnf_init: bool, inpaint_radius: int,
              region: Region | None = None) -> str:
    """Content key of one chain: everything its result depends on (the backend excepted; with a region, its
    masks on the chain's frames and the grow/feather settings)."""
    chain = [key, *targets]
    flows = [flow.between(source, target) for source, target in zip(chain[:-1], chain[1:])]
    parts = [] if region is None else ["region", region.key_parts(chain)]
    return cache.content_key("propagation-chain", CACHE_VERSION, style, frames[key], frames[list(targets)],
                             list(targets), flows, asdict(params), weights.as_dict(), bool(temporal_nnf_init),
                             int(inpaint_radius), *parts)


def check_keyframes(keyframes: Keyframes, image_count: int, frame_count: int) -> None:
    """Raise unless ``keyframes`` were made for ``frame_count`` frames and there is one image per index.

    Raises:
        InputError: naming ``keyframe_indices`` (another frame count) or ``keyframes`` (image count).
    """
    if keyframes.frame_count != frame_count:
        raise input_error("keyframe_indices", f"keyframes of a video of {frame_count} frames",
                          f"keyframes of a video of {keyframes.frame_count} frames",
                          "select the keyframes on the same frames")
    if len(keyframes.indices) != image_count:
        raise input_error("keyframes", f"one stylized image per keyframe index ({len(keyframes.indices)}: "
                          f"{list(keyframes.indices)})", f"{image_count} images",
                          ["render or load one image per keyframe index",
                           "change the keyframe interval or list to match the images"])


def check_settings(params: SynthesisParams, weights: GuideWeights) -> None:
    """Raise for invalid synthesis parameters or guide weights that are all 0 (InputError naming them)."""
    params.validate()
    if not any(value > 0 for value in weights.as_dict().values()):
        raise input_error("guide weights", "at least one guide weight > 0", weights.as_dict(),
                          "use the defaults: colour 6, edge 0.5, positional 2, temporal 0.5")


def _check_inputs(frames: torch.Tensor, keyframe_images: torch.Tensor, keyframes: Keyframes, flow: FlowPairs,
                  params: SynthesisParams, weights: GuideWeights) -> None:
    check_image_batch(frames, "frames")
    check_image_batch(keyframe_images, "keyframes")
    check_same_size(frames, keyframe_images, "frames", "keyframes")
    count = frames.shape[0]
    check_keyframes(keyframes, keyframe_images.shape[0], count)
    if not isinstance(flow, FlowPairs):
        raise input_error("flow", "a FLOW object (Rerender Estimate Flow)", type(flow).__name__)
    flow.check_video(count, tuple(frames.shape[1:3]))
    check_settings(params, weights)


def _check_pairs(flow: FlowPairs, chains: Sequence[tuple[int, str, tuple[int, ...]]]) -> None:
    for key, _, targets in chains:
        chain = [key, *targets]
        for source, target in zip(chain[:-1], chain[1:]):
            if not flow.has(source, target):
                raise input_error("flow", f"a FLOW with consecutive frame pairs (e.g. ({source}, {target}))",
                                  f"{len(flow)} pairs ({flow.describe()})",
                                  "set pair_mode to 'consecutive' (or 'consecutive+keyframes') on Rerender "
                                  "Estimate Flow")


def _check_disk(frame_count: int, height: int, width: int) -> None:
    cache.check_free_space(frame_count * height * width * (3 * 2 + 4), "propagated frames",
                           f"{frame_count} frames at {width}x{height}")


def propagate_video(frames: torch.Tensor, keyframe_images: torch.Tensor, keyframes: Keyframes, flow: FlowPairs,
                    params: SynthesisParams = SynthesisParams(), weights: GuideWeights = GuideWeights(),
                    direction: str = "both", temporal_nnf_init: bool = True, backend: str = "auto",
                    inpaint_radius: int = INPAINT_RADIUS, ram_limit_bytes: int = DEFAULT_RAM_LIMIT,
                    progress: Callable[..., None] | None = None, mask: object = None,
                    mask_grow: int = MASK_GROW.default, feather: int = FEATHER.default) -> Propagation:
    """Propagate every stylized keyframe forward and backward (module docstring; Rerender §4.2).

    Args:
        frames: IMAGE ``[N,H,W,3]`` float32 in [0, 1], the original frames.
        keyframe_images: IMAGE ``[M,H,W,3]`` float32, the stylized keyframes, in index order.
        keyframes: the keyframe indices (``M`` of them) for a video of ``N`` frames.
        flow: FLOW of these frames with consecutive pairs (Rerender Estimate Flow, pair mode consecutive).
        params: synthesis parameters (Rerender: patch 5, 12 search–vote × 6 PatchMatch iterations).
        weights: guide weights (Rerender: colour 6, edge 0.5, positional 2, temporal 0.5).
        direction: ``"both"``, ``"forward"`` or ``"backward"`` between keyframes (module docstring).
        temporal_nnf_init: start each frame's NNF from the previous frame's, advected by the flow.
        backend: synthesis backend (``"auto"``, ``"cpu"``, ``"cuda"``).
        inpaint_radius: Telea radius (pixels) for the occluded pixels of the advected guides.
        ram_limit_bytes: candidates + errors above this size are memory-mapped from the cache.
        progress: optional ``progress(done_frames, preview [H,W,3])``; also the interruption point.
        mask: optional MASK ``[N,H,W]`` or ``[1,H,W]`` float32 in [0, 1] (1 = restyle): only the region is
            propagated (ALGORITHM.md §19) and the PROPAGATION carries it, so Temporal Blend composites the
            result over the source frames. One mask on a multi-frame clip is carried through the clip by the
            optical flow (:func:`flow.mask_carry.iter_carried_masks_flow`, with the occlusion masks).
        mask_grow, feather: pixels the mask is widened by, and of the soft edge outside it
            (:data:`common.masks.MASK_SETTINGS`).

    Returns:
        The PROPAGATION object (:class:`~propagation.result.Propagation`).

    Raises:
        InputError: keyframes of another size than the frames, a keyframe count that differs from the
            index count, keyframes or a FLOW of another video, missing consecutive flow pairs, invalid
            synthesis parameters, an unknown direction, all guide weights 0, too little cache disk space; a
            ``mask`` of another size, a batch neither 1 nor N long, values outside [0, 1] (an all-zero mask
            warns: the output is the source).
    """
    _check_inputs(frames, keyframe_images, keyframes, flow, params, weights)
    region = None if mask is None else Region.for_video(mask, *frames.shape[:3], mask_grow, feather, flow)
    choice = choose_backend(backend)  # once: raises early for an unusable "cuda", logs which backend runs
    backend = choice.name
    chains_planned = plan_chains(keyframes, direction)
    _check_pairs(flow, chains_planned)
    height, width = frames.shape[1:3]
    total = sum(len(targets) for _, _, targets in chains_planned)
    memory_map = total * height * width * (3 * 2 + 4) > ram_limit_bytes
    styles = {key: keyframe_images[position] for position, key in enumerate(keyframes.indices)}
    entry_keys = [chain_key(frames, styles[key], key, targets, flow, params, weights, temporal_nnf_init,
                            inpaint_radius, region) for key, _, targets in chains_planned]
    missing = sum(len(targets) for (_, _, targets), entry_key in zip(chains_planned, entry_keys)
                  if cache.lookup(CACHE_NAMESPACE, entry_key) is None)
    _check_disk(missing, height, width)

    chains: list[Chain] = []
    done, computed, seconds = 0, 0, 0.0
    for (key, chain_direction, targets), entry_key in zip(chains_planned, entry_keys):
        entry = cache.lookup(CACHE_NAMESPACE, entry_key)
        if entry is None:
            def on_frame(row: int, image: torch.Tensor, start: int = done) -> None:
                if progress is not None:
                    progress(start + row + 1, image)

            started = time.perf_counter()
            images, errors = propagate_chain(frames, styles[key], key, targets, flow, params, weights,
                                             temporal_nnf_init, backend, inpaint_radius, on_frame,
                                             None if region is None else region.alpha)
            elapsed = time.perf_counter() - started
            seconds += elapsed
            computed += len(targets)
            logger.info("propagated keyframe %d %s to %d frames in %.1f s", key, chain_direction, len(targets),
                        elapsed)
            with cache.new_entry(CACHE_NAMESPACE, entry_key) as staging:
                np.save(staging / "images.npy", images)
                np.save(staging / "errors.npy", errors)
            entry = cache.lookup(CACHE_NAMESPACE, entry_key)
            if memory_map:
                images, errors = _load(entry, True)
        else:
            images, errors = _load(entry, memory_map)
            if progress is not None:
                progress(done + len(targets), torch.from_numpy(np.asarray(images[-1], dtype=np.float32)))
        done += len(targets)
        chains.append(Chain(key, chain_direction, tuple(targets), images, errors, entry))

    settings = {"params": asdict(params), "weights": weights.as_dict(), "temporal_nnf_init": temporal_nnf_init,
                "inpaint_radius": inpaint_radius, "backend": str(choice)}
    if region is not None:
        settings.update(mask_grow=region.mask_grow, feather=region.feather)
    stats = {"backend": str(choice), "frames_computed": computed, "frames_cached": total - computed, "seconds": seconds,
             "seconds_per_frame": seconds / computed if computed else 0.0}
    return Propagation(keyframes, keyframe_images.detach().to("cpu"), flow, chains, direction, settings, stats,
                       region, None if region is None else frames)


def _load(entry, memory_map: bool) -> tuple[np.ndarray, np.ndarray]:
    mode = "r" if memory_map else None
    return np.load(entry / "images.npy", mmap_mode=mode), np.load(entry / "errors.npy", mmap_mode=mode)
