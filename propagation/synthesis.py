"""Guided patch-based synthesis of one frame from a stylized keyframe (EbSynth; Jamriška et al. 2019).

This is the propagation step of Rerender-A-Video §4.2 (propagation/ALGORITHM.md §13–16): a multiscale texture
optimisation that alternates a PatchMatch nearest-neighbour-field (NNF) search with a vote, coarse to fine.
The cost of matching the target patch at ``t`` with the source patch at ``s`` is the weighted SSD over the
style channels (current estimate of the target vs. the keyframe) and over every guide pair, plus the
uniformity (occupancy) penalty ``λ·occ(s)`` that keeps the keyframe's texture from being re-used in a few
places (Jamriška et al. 2019 §3; ALGORITHM.md §4, §6.1).

The exact algorithm — the integer patch representation, every pass, the random generator, tie-breaking,
border and rounding rules — is specified in ``propagation/ALGORITHM.md``; every backend follows it bit for
bit. The level loop below runs on the host and calls the backend (:mod:`.backends.backend`) once per pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from ..common.errors import input_error
from . import pyramid
from .backends.backend import Backend
from .backends.level import LevelSpec, LevelState, NnfStart
from .backends.passes import pass_key
from .backends.select import get_backend
from .params import SynthesisParams

#: Propagation step per PatchMatch iteration (cycled): jump-flood order 4, 2, 1 (ALGORITHM.md §6.2).
JUMP_STEPS = (4, 2, 1)
#: Quantisation budget: the largest possible patch SSD of the packed int16 images stays below 2^30.
SSD_BUDGET = float(1 << 30)
#: Extra fixed-point bits of the occupancy multiplier.
OCC_SHIFT = 16


@dataclass
class Guide:
    """One guide pair: the same kind of image on the source (keyframe) and on the target frame.

    Attributes:
        source: ``[Hs,Ws,C]`` float32 in [0,1], the guide on the keyframe (e.g. the raw keyframe).
        target: ``[Ht,Wt,C]`` float32 in [0,1], the guide on the frame to synthesize.
        weight: total weight of the pair (>= 0), split evenly over its ``C`` channels (EbSynth convention:
            a 3-channel colour guide of weight 6 has 2 per channel).
    """

    source: torch.Tensor
    target: torch.Tensor
    weight: float


@dataclass
class SynthesisResult:
    """Output of :func:`synthesize`.

    Attributes:
        image: ``[Ht,Wt,Cs]`` float32 in [0,1], the synthesized frame.
        error: ``[Ht,Wt]`` float32, per-pixel patch error at the finest level in EbSynth units (0–255 scale,
            weighted SSD over the patch, no occupancy term) of the final NNF against the final image.
        nnf: ``[Ht,Wt,2]`` int32, source patch-centre coordinates ``(x, y)`` per target pixel (pixels of the
            source, in ``[r, Ws-1-r] × [r, Hs-1-r]`` with ``r = patch_size // 2``).
    """

    image: torch.Tensor
    error: torch.Tensor
    nnf: torch.Tensor


@dataclass(frozen=True)
class _Packing:
    """Quantisation of the packed channels (ALGORITHM.md §2)."""

    scales: np.ndarray        # float64 [C]: q = floor(v · scale_c + 0.5), v in [0, 1]
    style_channels: int
    fixed_point: float        # F: one 0–255 unit of a channel of weight w is sqrt(w)·F quantised units

    @property
    def error_scale(self) -> float:
        """Quantised SSD units per EbSynth error unit (``F²``)."""
        return self.fixed_point ** 2


def synthesize(style: torch.Tensor, guides: Sequence[Guide], params: SynthesisParams = SynthesisParams(),
               initial_nnf: torch.Tensor | None = None, backend: str = "auto", style_weight: float = 1.0,
               progress: Callable | None = None) -> SynthesisResult:
    """Synthesize the target frame in the style of ``style``, guided by ``guides`` (EbSynth, one frame).

    Args:
        style: ``[Hs,Ws,Cs]`` float32 in [0,1], the stylized keyframe (``Cs`` = 1–8 channels, e.g. RGB).
        guides: one or more :class:`Guide` pairs; sources ``[Hs,Ws,·]`` (the size of ``style``), targets
            ``[Ht,Wt,·]`` (all the same size: the size of the output). Values outside [0,1] are clipped.
        params: :class:`~.params.SynthesisParams` (defaults = Rerender's: p 5, 12×6, λ 3500, stop threshold 5).
        initial_nnf: optional ``[Ht,Wt,2]`` integer tensor of source patch centres ``(x, y)``, e.g. the previous
            frame's NNF advected by optical flow (temporal NNF initialisation). It changes exactly this: the
            coarsest ``L - params.initial_nnf_levels`` pyramid levels are skipped, and the first level that is
            run starts from this NNF (reduced to that level, ALGORITHM.md §5.3; entries are clamped to the
            valid centre range) instead of from the random coarsest-level NNF upsampled level by level.
            Everything else (schedule, freezing, search) is unchanged.
        backend: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"host"`` (see :func:`~.backends.select.get_backend`).
        style_weight: total weight of the style channels (> 0), split evenly over them (EbSynth: 1).
        progress: optional callback ``progress(done)`` called after every search–vote iteration; ``done``
            counts them up to :func:`progress_total` (it jumps when a level stops early because every pixel
            froze; the callback may raise to cancel).

    Returns:
        :class:`SynthesisResult` with tensors on the CPU.

    Raises:
        InputError: wrong types, shapes, sizes or parameters; the message names the input, both sizes when
            they disagree, and the fix.

    Example:
        >>> frame = torch.rand(24, 32, 3)
        >>> result = synthesize(frame, [Guide(frame, frame, 6.0)], SynthesisParams(search_vote_iters=2))
        >>> result.image.shape, result.error.shape, result.nnf.shape
        (torch.Size([24, 32, 3]), torch.Size([24, 32]), torch.Size([24, 32, 2]))
    """
    params = params.validate() if isinstance(params, SynthesisParams) else _bad_params(params)
    style_np, guide_pairs, weights = _check_inputs(style, guides, style_weight, params.patch_size)
    target_size = guide_pairs[0][1].shape[:2]
    start_nnf = None if initial_nnf is None else _check_initial_nnf(initial_nnf, target_size)
    engine = get_backend(backend)

    source = np.concatenate([style_np] + [pair[0] for pair in guide_pairs], axis=2)
    blank_style = np.zeros((*target_size, style_np.shape[2]), np.float32)   # replaced by the first vote
    target = np.concatenate([blank_style] + [pair[1] for pair in guide_pairs], axis=2)
    packing = _packing(style_np.shape[2], [pair[0].shape[2] for pair in guide_pairs], weights, style_weight,
                       params.patch_size)
    levels = pyramid.level_count(params.pyramid_levels, [style_np.shape[:2], target_size], params.patch_size)
    first = 0 if start_nnf is None else max(0, levels - params.initial_nnf_levels)
    source_pyr = pyramid.build(source, levels)
    target_pyr = pyramid.build(target, levels)

    ticker = _Ticker(progress)
    state = None
    for level in range(first, levels):
        src_q, tgt_q = _quantise(source_pyr[level], packing), _quantise(target_pyr[level], packing)
        spec = _level_spec(params, packing, level, src_q.shape[:2], tgt_q.shape[:2], params.patch_size,
                           params.uniformity, freeze=level >= levels - params.freeze_levels)
        start = _start_nnf(level, first, levels, state, start_nnf, params.seed)
        state = engine.prepare_level(spec, src_q, tgt_q, start)
        _run_level(engine, state, params, level, ticker)
    if params.extra_pass_3x3:
        spec = _level_spec(params, packing, levels, state.source_size, state.target_size, 3, 0.0,
                           freeze=params.freeze_levels > 0)
        engine.reset_patch(state, spec)
        _run_level(engine, state, params, levels, ticker)
    engine.patch_error(state, all_pixels=True)

    image = engine.image(state).astype(np.float64) / packing.scales[:packing.style_channels]
    error = engine.error(state).astype(np.float64) / packing.error_scale
    return SynthesisResult(image=torch.from_numpy(np.clip(image, 0.0, 1.0).astype(np.float32)),
                           error=torch.from_numpy(error.astype(np.float32)),
                           nnf=torch.from_numpy(engine.nnf(state)))


def progress_total(style_size: tuple[int, int], target_size: tuple[int, int],
                   params: SynthesisParams = SynthesisParams(), has_initial_nnf: bool = False) -> int:
    """Number of ``progress`` calls :func:`synthesize` makes for these sizes ``(H, W)`` and parameters.

    Example:
        >>> progress_total((512, 512), (512, 512))
        72
    """
    levels = pyramid.level_count(params.pyramid_levels, [style_size, target_size], params.patch_size)
    run = levels if not has_initial_nnf else min(levels, params.initial_nnf_levels)
    return (run + int(params.extra_pass_3x3)) * params.search_vote_iters


# ---------------------------------------------------------------------------------------------------- level loop
class _Ticker:
    def __init__(self, progress: Callable | None):
        self.progress = progress
        self.done = 0

    def tick(self, count: int = 1) -> None:
        self.done += count
        if self.progress is not None and count:
            self.progress(self.done)


def _run_level(engine: Backend, state: LevelState, params: SynthesisParams, level: int, ticker: _Ticker) -> None:
    """ALGORITHM.md §3: initial vote, then search–vote iterations until done or every pixel is frozen."""
    engine.vote(state, initial=True, update_mask=False)
    iters = params.search_vote_iters
    for em in range(iters):
        engine.patch_error(state, all_pixels=False)
        for pm in range(params.patchmatch_iters):
            engine.occupancy(state)
            engine.search(state, (JUMP_STEPS[pm % len(JUMP_STEPS)],), pass_key(params.seed, level, em, pm))
        active = engine.vote(state, initial=False, update_mask=em < iters - 1)
        ticker.tick()
        if active == 0 and em < iters - 1:
            ticker.tick(iters - 1 - em)      # nothing can change any more: the remaining iterations are no-ops
            break


def _start_nnf(level: int, first: int, levels: int, previous: LevelState | None, initial: np.ndarray | None,
               seed: int) -> NnfStart:
    """ALGORITHM.md §3 step 1: random (coarsest), reduced initial NNF (first run level) or upsampled parent."""
    if level > first:
        return NnfStart.upsample(previous)
    if initial is not None:
        return NnfStart.reduce(initial, levels - 1 - level)
    return NnfStart.random(pass_key(seed, level, 0xFFFF, 0xFFFF))


def _level_spec(params: SynthesisParams, packing: _Packing, level: int, source_size: tuple[int, int],
                target_size: tuple[int, int], patch_size: int, uniformity: float, freeze: bool) -> LevelSpec:
    """Host scalars of a level (ALGORITHM.md §3)."""
    source_pixels = source_size[0] * source_size[1]
    target_pixels = target_size[0] * target_size[1]
    occ = uniformity * packing.error_scale * source_pixels / (patch_size ** 4 * target_pixels)
    style_scale = packing.scales[0] / 255.0          # quantised units per 0–255 unit of a style channel
    threshold = int(math.ceil(params.stop_threshold * style_scale - 1e-9)) if freeze else 0
    half = max(source_size) // 2
    radii = tuple(half >> i for i in range(32) if half >> i >= 1)
    return LevelSpec(patch_size=patch_size, style_channels=packing.style_channels,
                     occupancy_multiplier=int(round(occ * (1 << OCC_SHIFT))), change_threshold=threshold,
                     weighted_vote=params.vote_mode == "weighted",
                     vote_error_scale=1.0 / (patch_size ** 2 * packing.style_channels * packing.error_scale),
                     random_radii=radii, level=level)


# ---------------------------------------------------------------------------------------------------- packing
def _packing(style_channels: int, guide_channels: list[int], weights: list[float], style_weight: float,
             patch_size: int) -> _Packing:
    """ALGORITHM.md §2: per-channel weights (item weight / channel count) and the fixed-point scale F."""
    channel_weights = [style_weight / style_channels] * style_channels
    for count, weight in zip(guide_channels, weights):
        channel_weights += [weight / count] * count
    total = sum(channel_weights)
    fixed_point = math.sqrt(SSD_BUDGET / (patch_size ** 2 * 255.0 ** 2 * total))
    scales = np.array([255.0 * math.sqrt(w) * fixed_point for w in channel_weights], np.float64)
    return _Packing(scales=scales, style_channels=style_channels, fixed_point=fixed_point)


def _quantise(image: np.ndarray, packing: _Packing) -> np.ndarray:
    """float32 ``[H,W,C]`` in [0,1] → int16 ``floor(v · scale_c + 0.5)`` (host, float64)."""
    return np.floor(image.astype(np.float64) * packing.scales + 0.5).astype(np.int16)


# ---------------------------------------------------------------------------------------------------- checks
def _bad_params(params: object) -> SynthesisParams:
    raise input_error("params", "a SynthesisParams", type(params).__name__, "pass SynthesisParams(...)")


def _as_image(value: object, name: str) -> np.ndarray:
    """A ``[H,W,C]`` float tensor → float32 numpy clipped to [0,1]; InputError otherwise."""
    if not isinstance(value, torch.Tensor):
        raise input_error(name, "a torch.Tensor [H,W,C] float32 in [0,1]", type(value).__name__,
                          "convert with torch.from_numpy(array).float() / 255")
    if value.ndim == 4 and value.shape[0] == 1:
        raise input_error(name, "one image [H,W,C]", f"a batch of shape {list(value.shape)}",
                          f"pass {name}[0]")
    if value.ndim != 3:
        raise input_error(name, "shape [H,W,C] (channels last)", list(value.shape),
                          "pass one image; for a gray image add a channel with image[..., None]")
    if value.shape[0] <= 4 and value.shape[2] > 4:
        raise input_error(name, "channels last [H,W,C]", f"{list(value.shape)} (looks channels-first [C,H,W])",
                          f"use {name}.permute(1, 2, 0)")
    if not value.is_floating_point():
        raise input_error(name, "a float tensor with values in [0,1]", value.dtype,
                          f"convert with {name}.float() / 255")
    array = value.detach().to("cpu", torch.float32).numpy()
    if not np.isfinite(array).all():
        raise input_error(name, "finite values in [0,1]", "NaN or infinite values", "check the producing node")
    return np.clip(array, 0.0, 1.0)


def _check_inputs(style: object, guides: Sequence[Guide], style_weight: float, patch_size: int):
    style_np = _as_image(style, "style")
    if style_np.shape[2] > 8:
        raise input_error("style", "at most 8 channels", style_np.shape[2], "pass RGB or RGBA")
    if not (isinstance(style_weight, (int, float)) and 0 < style_weight < float("inf")):
        raise input_error("style_weight", "a finite number > 0", style_weight, "use 1.0 (EbSynth's default)")
    if isinstance(guides, Guide) or not isinstance(guides, Sequence) or len(guides) == 0:
        raise input_error("guides", "a non-empty list of Guide", type(guides).__name__,
                          "pass e.g. [Guide(keyframe, frame, 6.0)]")
    pairs, weights = [], []
    target_size = None
    for index, guide in enumerate(guides):
        name = f"guides[{index}]"
        if not isinstance(guide, Guide):
            raise input_error(name, "a Guide", type(guide).__name__, "wrap the pair in Guide(source, target, w)")
        src = _as_image(guide.source, f"{name}.source")
        tgt = _as_image(guide.target, f"{name}.target")
        if src.shape[:2] != style_np.shape[:2]:
            raise input_error(f"{name}.source", f"the size of style (H×W = {style_np.shape[0]}×{style_np.shape[1]})",
                              f"{src.shape[0]}×{src.shape[1]}", "resize the guide's source to the keyframe's size")
        if src.shape[2] != tgt.shape[2]:
            raise input_error(f"{name}.target", f"{src.shape[2]} channels like {name}.source", tgt.shape[2],
                              "build source and target guides the same way")
        if target_size is None:
            target_size = tgt.shape[:2]
        elif tgt.shape[:2] != target_size:
            raise input_error(f"{name}.target", f"the size of guides[0].target (H×W = {target_size[0]}×"
                              f"{target_size[1]})", f"{tgt.shape[0]}×{tgt.shape[1]}",
                              "give every target guide the size of the frame to synthesize")
        weight = guide.weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < float("inf"):
            raise input_error(f"{name}.weight", "a finite number >= 0", weight, "use e.g. 6 (colour) or 0.5 (edge)")
        pairs.append((src, tgt))
        weights.append(float(weight))
    channels = style_np.shape[2] + sum(pair[0].shape[2] for pair in pairs)
    if channels > 64:
        raise input_error("guides", "at most 64 channels in style and guides together", channels,
                          "use fewer or gray guides")
    smallest = min(*style_np.shape[:2], *target_size)
    if smallest < patch_size:
        raise input_error("style" if min(style_np.shape[:2]) < patch_size else "guides[0].target",
                          f"images of at least patch_size = {patch_size} pixels per side",
                          f"style {style_np.shape[0]}×{style_np.shape[1]}, target {target_size[0]}×{target_size[1]}",
                          "use larger images or a smaller patch_size")
    return style_np, pairs, weights


def _check_initial_nnf(initial_nnf: object, target_size: tuple[int, int]) -> np.ndarray:
    if not isinstance(initial_nnf, torch.Tensor):
        raise input_error("initial_nnf", "a torch.Tensor [Ht,Wt,2] of int32 (x, y)", type(initial_nnf).__name__,
                          "pass the nnf of a previous SynthesisResult")
    expected = [target_size[0], target_size[1], 2]
    if list(initial_nnf.shape) != expected:
        raise input_error("initial_nnf", f"shape {expected} (the target's size)", list(initial_nnf.shape),
                          "advect the previous NNF to the target frame's size")
    if initial_nnf.is_floating_point() or initial_nnf.dtype == torch.bool:
        raise input_error("initial_nnf", "an integer tensor (int32 source coordinates)", initial_nnf.dtype,
                          "round it: nnf.round().to(torch.int32)")
    return initial_nnf.detach().to("cpu", torch.int64).clamp(0, 1 << 30).numpy().astype(np.int32)
