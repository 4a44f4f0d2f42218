"""Render one keyframe with the hierarchical cross-frame constraints (paper §4.1; ``keyframe/ALGORITHM.md`` §6–7).

:func:`render_keyframe` is the one entry point the nodes (Rerender Cross-Frame Sampler, and the
Keyframe Renderer's loop) call:

* **anchor** (``reference=None``): one pass that records the anchor's attention features and x̂0
  trajectory → a new REFERENCE;
* **later keyframe**: pass 1 (cross-frame attention + AdaIN + shape-aware fusion) → rough render
  ``Ī'`` → fused reference image ``Ĩ'`` (warped anchor > warped previous keyframe > ``Ī'``) →
  ``x̃ = E*(Ĩ')·V_p`` → pass 2 = pass 1 + pixel-aware fusion → final render and the updated REFERENCE.

Pass 2 equals pass 1 step for step until the pixel-fusion window starts (same noise, same
constraints, nothing differs before), so pass 2 **resumes** from pass 1's state at that step
instead of sampling from scratch: at the default windows and 20 steps a keyframe costs 29 model
steps with the full rough render (20 with the default early one) instead of the reference's 40. Only the "previous" attention features that pass 2 records
for the next keyframe need care: those of the steps before the window come from pass 1's recording
(identical by the same argument). ``resume=False`` runs pass 2 from scratch (tests prove both agree).

Rough render (``ConstraintSettings.rough_render``):

* ``"early"`` (default): pass 1 stops at the pixel-fusion window's first step ``split`` and ``Ī'`` is the
  decoded x̂0 that pass 1's last step (``split − 1``) predicted — the clean part of the latent
  pass 2 resumes from. Pass 1 + pass 2 then run ``S`` model steps, as one plain sampler run.
  ``Ī'`` enters the fused image only with weight ``B_0·B_p`` (pixels occluded from the anchor *and*
  the previous keyframe, Eq. 10), where the inpainting weight ``w = mask_strength·V_p`` is 0, so it
  reaches the result only through the soft band around those regions and the VAE's receptive
  field in ``E*``. The early x̂0 is blurrier and precedes AdaIN's steps; the render changes
  slightly while the model steps drop from 29 to 20 (measured figures and their command: the README,
  "Keyframe speed and memory");
* ``"full"`` (the paper's and the reference's ``Ī'``): pass 1 runs to the end and ``Ī'`` is its
  decoded result — ``S + (S − split)`` model steps (29 at 20 steps).

Region (optional ``mask``, issue 16): only the grown, feathered region is restyled; outside it every
step keeps the source latent noised to that step's σ and the render is the source frame
(:mod:`.region`). The cross-frame constraints act inside as without a mask.

The model is reached through a :class:`ModelAdapter`; ComfyUI's lives in ``nodes/_keyframe_adapter.py``.

Latent space (every latent here): the model's space — what ComfyUI's samplers see, raw VAE latents
after the latent format's scale (×0.18215 for SD1.5, ×0.13025 for SDXL; :mod:`.latent`) — because the σ-space
mixing of pixel fusion (``x̃ + σ·z``) is only right where ``x = x̂0 + σ·ε`` holds. ``E*`` (affine) and AdaIN (per-channel
affine-invariant) give the same result in either space; warps are linear.

Deliberate differences from the reference code (``keyframe/ALGORITHM.md`` §10 lists them with reasons):

* windows count the *sampled* steps (:mod:`.windows`);
* ``style_update_freq`` counts keyframes (:mod:`.reference`);
* shape fusion always uses the anchor (as the paper); AdaIN defaults on at ``(0.8, 1)`` (the paper's
  and web UI's value);
* features keyed by (step, branch, block), backend-independent attention;
* the target ``x̃`` is pre-multiplied by ``V_p`` and then weighted again by ``w = 0.5·V_p`` — kept:
  it is the reference's tuned, softened inpainting;
* VAE encodes use ComfyUI's posterior mode; decoded renders are clamped to [0,1] by ComfyUI's VAE
  (the reference keeps unclamped floats);
* pixel-fusion noise is seeded per step (:func:`~keyframe.fusion.step_noise`) instead of drawn from
  the global RNG, so a resumed pass 2 is bit-identical to a full one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Protocol

import torch

from ..common.checks import check_image_batch
from ..common.errors import input_error
from ..common.masks import FEATHER, MASK_GROW, check_mask, warn_if_empty
from ..flow.warp import warp_hwc
from .attention import CrossFrameAttention, FeatureStore, attention_blocks
from .constraints import ColourGuide, KeyframeConstraints, PixelGuide, ShapeGuide
from .fidelity import fidelity_encode
from .layout import SD15_LAYOUT
from .fusion import (check_latent_size, flat_region, fused_reference_image, inpainting_validity, latent_flow,
                     latent_validity, soft_occlusion)
from .plan import KeyframePlan, check_flow
from .reference import ReferenceState
from .region import RegionGuide, composite_render, latent_weight, pixel_weight
from .settings import ConstraintSettings
from .windows import StepClock


class ModelAdapter(Protocol):
    """What :func:`render_keyframe` needs from a diffusion model, VAE and sampler.

    Attributes:
        sigmas: the sampled σ schedule ``[S+1]`` (descending, usually ending with 0).
        seed: the noise seed (the same noise for every keyframe and both passes).
        branches: CFG branches each step evaluates: ``(0,)`` at cfg 1, else ``(0, 1)``.
        supports_step_hooks: True when :meth:`sample` runs ``constraints.sampler_function``
            (DDIM/Euler/LCM): needed by pixel-aware fusion and the pass-2 resume.
        unet_layout: the UNet's decoder (:class:`~keyframe.layout.UNetLayout`); an adapter without
            it is taken as SD1.5.
    """

    sigmas: torch.Tensor
    seed: int
    branches: tuple[int, ...]
    supports_step_hooks: bool

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """IMAGE ``[B,H,W,3]`` in [0,1] → model-space latent ``[B,4,H/8,W/8]``."""

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Model-space latent → IMAGE ``[B,H,W,3]`` in [0,1]."""

    def sample(self, latent: torch.Tensor, constraints: KeyframeConstraints, control: Any = None,
               on_step: Callable[[int], None] | None = None) -> torch.Tensor:
        """Run one sampling pass from the SDEdit source ``latent`` (model space, noised to
        ``sigmas[0]`` with the seeded noise) with ``constraints.attention_patch`` installed as the
        ``attn1_patch``, ``constraints.post_cfg`` as post-CFG function and, when
        ``supports_step_hooks``, ``constraints.sampler_function`` as the sampler; ``control`` is
        adapter-specific conditioning (ComfyUI: ``(positive, negative)``) or ``None`` for the
        adapter's own; ``on_step(i)`` after each step. ``constraints.region`` (a
        :class:`~keyframe.region.RegionGuide` or ``None``) may be passed on as the sampler's noise mask
        (ComfyUI: ``noise_mask=region.weight``). Returns the final model-space latent."""


@dataclass
class KeyframeResult:
    """What :func:`render_keyframe` returns.

    Attributes:
        latent: final latent ``[1,4,H/8,W/8]``, model space.
        image: decoded final render, IMAGE ``[1,H,W,3]``.
        reference: the REFERENCE to pass to the next keyframe.
        rough_image: rough render ``Ī'`` (``None`` for single-pass renders): pass 1's final render,
            or with ``rough_render="early"`` the decoded x̂0 of pass 1's last step.
        fused_image: fused reference image ``Ĩ'`` (``None`` without pixel fusion).
        info: diagnostics — passes, model steps run, resume step, whether "previous" features were
            updated, and on which steps each constraint acted.
    """

    latent: torch.Tensor
    image: torch.Tensor
    reference: ReferenceState
    rough_image: torch.Tensor | None = None
    fused_image: torch.Tensor | None = None
    info: dict = field(default_factory=dict)


@dataclass
class _FlowPair:
    flow: torch.Tensor       # [H,W,2] on the current frame's grid, pointing into the source frame
    occlusion: torch.Tensor  # [H,W], 1 = occluded


def _read_flow(flow: Any, source: int, target: int, frame_size: tuple[int, int]) -> _FlowPair:
    """The flow and occlusion of a pair :func:`~keyframe.plan.check_flow` accepted (zeros when the source is
    the keyframe itself, a pair no plan lists)."""
    if source == target:
        return _FlowPair(torch.zeros(*frame_size, 2), torch.zeros(*frame_size))
    vectors, occlusion = flow.between(source, target)
    return _FlowPair(vectors.float(), occlusion.float())


def _check_frame(frame: torch.Tensor) -> tuple[int, int]:
    check_image_batch(frame, "frames")
    if frame.shape[0] != 1:
        raise input_error("frames", "one frame [1,H,W,3] per keyframe", list(frame.shape),
                          "pick the frame with its index (the node does this from frame_index)")
    check_latent_size(frame.shape[1], frame.shape[2], "frames")
    return int(frame.shape[1]), int(frame.shape[2])


class _StepCounter:
    def __init__(self, total: int, progress: Callable | None) -> None:
        self.total, self.done, self.progress = total, 0, progress

    def __call__(self, _step: int) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(min(self.done, self.total))


def render_keyframe(adapter: ModelAdapter, frame: torch.Tensor, frame_index: int,
                    reference: ReferenceState | None = None, flow: Any = None,
                    settings: ConstraintSettings | None = None, *, latent: torch.Tensor | None = None,
                    control: Any = None, anchor_index: int | None = None, previous_index: int | None = None,
                    resume: bool = True, release_reference: bool = False,
                    progress: Callable | None = None, mask: torch.Tensor | None = None,
                    mask_grow: int = MASK_GROW.default, feather: int = FEATHER.default) -> KeyframeResult:
    """Render one keyframe (the anchor when ``reference`` is ``None``).

    Args:
        adapter: the model, VAE and sampler (:class:`ModelAdapter`).
        frame: IMAGE ``[1,H,W,3]`` float in [0,1], H and W multiples of 8.
        frame_index: this frame's index in the video (to look up flow pairs).
        reference: the REFERENCE from the anchor or the previous keyframe; ``None`` renders the
            anchor and records the reference.
        flow: FLOW (:class:`flow.types.FlowPairs` or anything with ``between(source, target)`` and
            ``frame_size``) holding the pairs (anchor, frame) and (previous, frame); needed when
            shape or pixel fusion is on.
        settings: :class:`ConstraintSettings` (defaults when ``None``).
        latent: SDEdit source in model space ``[1,4,H/8,W/8]``; default ``adapter.encode(frame)``.
        control: adapter-specific conditioning for this frame (e.g. with this frame's ControlNet hint).
        anchor_index, previous_index: override the reference's frame indices (``None`` or < 0: use
            the reference's).
        resume: resume pass 2 from pass 1's state at the pixel-fusion window (False: from scratch).
        release_reference: the caller will not use ``reference`` again (a keyframe loop that owns
            it): the old "previous keyframe" features it replaces are dropped step by step as they are
            read, so at most one store plus one step of it is held next to the anchor's and the new
            one (peak ≈ 2 stores instead of 3). Never set it for a REFERENCE ComfyUI may reuse.
        progress: ``progress(done)`` after each model step (total = ``info["steps_planned"]``).
        mask: MASK ``[1,H,W]`` float32 in [0,1] of this keyframe (1 = restyle), or ``None`` (the
            whole frame): the diffusion changes only the region grown by ``mask_grow`` and feathered
            by ``feather`` pixels; outside it the latent is the source latent noised to each step's σ
            and the render is ``frame`` (:mod:`keyframe.region`).
        mask_grow, feather: pixels (:data:`common.masks.MASK_GROW`, :data:`common.masks.FEATHER`).

    Returns:
        :class:`KeyframeResult`.

    Raises:
        InputError: a frame that is not one ``[1,H,W,3]`` IMAGE with sides multiple of 8, a
            REFERENCE of another size / schedule / block set / CFG branches, a missing FLOW or flow
            pair, pixel fusion with an adapter without step hooks, a mask that is not one ``[1,H,W]``
            mask of the frame's size in [0, 1].
    """
    settings = settings or ConstraintSettings()
    frame_size = _check_frame(frame)
    if mask is not None:
        mask = check_mask(mask, 1, *frame_size, "mask")
        warn_if_empty(mask)
    sigmas = torch.as_tensor(adapter.sigmas).detach().float().cpu()
    plan = None
    if reference is not None:  # validate everything before the first VAE or model call
        plan = _plan(adapter, reference, flow, settings, frame_size, sigmas, int(frame_index), anchor_index,
                     previous_index, resume, release_reference)
    source = adapter.encode(frame) if latent is None else latent
    latent_size = check_latent_size(*frame_size)
    if tuple(source.shape[-2:]) != latent_size or source.shape[0] != 1:
        raise input_error("latent", f"a latent [1,4,{latent_size[0]},{latent_size[1]}] for this frame",
                          list(source.shape), "encode the same frame, or leave latent unconnected")
    region = None if mask is None else _Region(frame, source, mask, mask_grow, feather)
    if plan is None:
        return _render_anchor(adapter, int(frame_index), frame_size, source, sigmas, settings, control, progress,
                              region)
    return _render_later(adapter, plan, source, control, progress, region)


class _Region:
    """A keyframe's region: the latent guide of its passes and the pixel composite of its render."""

    def __init__(self, frame: torch.Tensor, source: torch.Tensor, mask: torch.Tensor, mask_grow: int,
                 feather: int) -> None:
        self.frame = frame
        self.pixels = pixel_weight(mask, mask_grow, feather)
        self.guide = RegionGuide(latent_weight(mask, tuple(source.shape[-2:]), mask_grow, feather), source)

    def image(self, render: torch.Tensor) -> torch.Tensor:
        return composite_render(render, self.frame, self.pixels)


def _guide(region: _Region | None) -> RegionGuide | None:
    return None if region is None else region.guide


def _image(region: _Region | None, render: torch.Tensor) -> torch.Tensor:
    return render if region is None else region.image(render)


@dataclass
class _Plan:
    """Everything a later keyframe's passes need, validated up front: its :class:`KeyframePlan` and the
    guides built from the flow pairs that plan reads."""

    steps: KeyframePlan
    reference: ReferenceState
    frame_index: int
    clock: StepClock
    blocks: tuple[int, ...]
    update_due: bool
    releasable: bool
    colour: ColourGuide | None
    shape: ShapeGuide | None
    anchor_pair: _FlowPair | None
    previous_pair: _FlowPair | None
    soft_anchor: torch.Tensor | None

    @property
    def settings(self) -> ConstraintSettings:
        return self.steps.settings

    @property
    def total(self) -> int:
        return self.clock.total

    @property
    def cross_steps(self) -> list[int]:
        return self.steps.cross_steps

    @property
    def split(self) -> int | None:
        """First pixel-fusion step (``None``: one pass)."""
        return self.steps.split

    @property
    def resume(self) -> bool:
        return self.steps.resumes

    @property
    def rough_early(self) -> bool:
        return self.steps.rough_early

    @property
    def planned_steps(self) -> int:
        return self.steps.steps(later=True)

    def attention(self, record: FeatureStore | None, record_steps: set[int],
                  discard_limit: int) -> CrossFrameAttention | None:
        """The pass's attention patch: replay [anchor; previous], record the next "previous"."""
        if not self.cross_steps and record is None:
            return None
        reference = self.reference
        return CrossFrameAttention(self.clock, self.blocks, self.settings.cross_period,
                                   replay=(reference.anchor_features, reference.previous_features),
                                   record=record, record_steps=record_steps,
                                   discard=reference.previous_features if self.releasable else None,
                                   discard_limit=discard_limit)

    def new_store(self) -> FeatureStore:
        return FeatureStore(self.settings.feature_dtype, self.settings.offload)


def _plan(adapter: ModelAdapter, reference: ReferenceState, flow: Any, settings: ConstraintSettings,
          frame_size: tuple[int, int], sigmas: torch.Tensor, frame_index: int, anchor_index: int | None,
          previous_index: int | None, resume: bool, release_reference: bool) -> _Plan:
    clock = StepClock(sigmas)
    steps = KeyframePlan(settings, clock.total, bool(resume))
    blocks = _layers(adapter, settings)
    reference.check_frame_size(frame_size)
    reference.check_schedule(sigmas)
    if steps.cross_steps:
        reference.check_attention(blocks, tuple(adapter.branches), steps.cross_steps)
    anchor_index = reference.anchor_index if anchor_index is None or anchor_index < 0 else int(anchor_index)
    previous_index = reference.previous_index if previous_index is None or previous_index < 0 else int(previous_index)
    if steps.pixel_steps and not adapter.supports_step_hooks:
        raise input_error("sampler_name", "ddim, euler or lcm (the pack's loop, whose latent pixel-aware fusion edits)",
                          getattr(adapter, "sampler_name", "a sampler without step hooks"),
                          ["choose ddim (the default)", "or switch pixel_fusion off"])
    check_flow(flow, steps.flow_pairs(anchor_index, previous_index, frame_index), frame_size)

    anchor_pair = previous_pair = soft_anchor = shape = None
    if steps.reads_anchor_flow:
        anchor_pair = _read_flow(flow, anchor_index, frame_index, frame_size)
        soft_anchor = soft_occlusion(anchor_pair.occlusion)
    if steps.reads_previous_flow:
        previous_pair = anchor_pair if previous_index == anchor_index else \
            _read_flow(flow, previous_index, frame_index, frame_size)
    if steps.shape_steps:
        shape = ShapeGuide(reference.anchor_x0, latent_flow(anchor_pair.flow), latent_validity(soft_anchor),
                           settings.warp_period)
    colour = ColourGuide(reference.anchor_stats(), settings.ada_period) if steps.colour_steps else None
    update_due = reference.keyframes_rendered % int(settings.style_update_freq) == 0
    return _Plan(steps=steps, reference=reference, frame_index=frame_index, clock=clock, blocks=blocks,
                 update_due=update_due,
                 releasable=(release_reference and update_due
                             and reference.previous_features is not reference.anchor_features),
                 colour=colour, shape=shape, anchor_pair=anchor_pair, previous_pair=previous_pair,
                 soft_anchor=soft_anchor)


def _layers(adapter: ModelAdapter, settings: ConstraintSettings) -> tuple[int, ...]:
    """The layer ids cross-frame attention acts on for this adapter's UNet (``keyframe/layout.py``)."""
    return attention_blocks(settings.loose_cfattn, getattr(adapter, "unet_layout", None) or SD15_LAYOUT,
                            settings.cfattn_depth)


def constraint_steps(info: dict) -> dict[str, list[int]]:
    """Steps on which each constraint acted in one keyframe's render (from its ``info``), for reports.

    Keys: ``cross_attention``, ``shape_fusion``, ``pixel_fusion``, ``adain``; a step counts once even
    when both passes ran it.
    """
    names = {"shape": "shape_fusion", "pixel": "pixel_fusion", "adain": "adain"}
    steps: dict[str, set[int]] = {"cross_attention": set(), **{name: set() for name in names.values()}}
    for key in ("applied_pass1", "applied_pass2"):
        for name, applied in (info.get(key) or {}).items():
            steps[names[name]].update(applied)
    for key in ("cross_pass1", "cross_pass2"):
        steps["cross_attention"].update(info.get(key) or ())
    return {name: sorted(found) for name, found in steps.items()}


def _render_later(adapter: ModelAdapter, plan: _Plan, source: torch.Tensor, control: Any,
                  progress: Callable | None, region: _Region | None = None) -> KeyframeResult:
    """Pass 1 → rough render → fused image → ``E*`` → pass 2 (resumed), for a keyframe after the anchor."""
    reference, split, resume, total, early = plan.reference, plan.split, plan.resume, plan.total, plan.rough_early
    sigmas = plan.clock.sigmas
    counter = _StepCounter(plan.planned_steps, progress)
    info: dict = {"passes": 1 if split is None else 2, "steps_planned": plan.planned_steps,
                  "resumed_at": split if resume else None, "updated_previous": plan.update_due,
                  "rough_render": None if split is None else plan.settings.rough_render}
    record_cross = set(plan.cross_steps)

    # Pass 1: every constraint but pixel fusion. It records the next "previous" features for the
    # steps pass 2 will not run again (all of them when there is no pass 2).
    store1 = plan.new_store() if plan.update_due and (resume or split is None) else None
    steps1 = {s for s in record_cross if s < split} if resume else record_cross
    discard1 = total if split is None else split if resume else 0  # steps pass 2 will not read again
    pass1 = KeyframeConstraints(sigmas, attention=plan.attention(store1, steps1, discard1), colour=plan.colour,
                                shape=plan.shape, capture_step=split if resume or early else None,
                                stop_step=split if early else None, region=_guide(region))
    latent1 = adapter.sample(source, pass1, control, counter)
    info["applied_pass1"] = pass1.applied
    info["cross_pass1"] = _cross_applied(pass1)
    info["steps_pass1"] = counter.done
    if split is None:
        image = _image(region, adapter.decode(latent1))
        info["steps_run"] = counter.done
        info["constraint_steps"] = constraint_steps(info)
        previous = store1.freeze() if plan.update_due else reference.previous_features
        return KeyframeResult(latent1, image, _next_reference(plan, image, previous), info=info)

    rough = adapter.decode(pass1.captured.denoised_prev if early else latent1)
    pixel, fused, keep = _pixel_guide(adapter, plan, rough)
    info["fidelity_kept"] = float(keep.mean())

    # Pass 2: pass 1 + pixel-aware fusion, from pass 1's state at the window's first step.
    store2 = plan.new_store() if plan.update_due else None
    steps2 = {s for s in record_cross if s >= split} if resume else record_cross
    pass2 = KeyframeConstraints(sigmas, attention=plan.attention(store2, steps2, total), colour=plan.colour,
                                shape=plan.shape, pixel=pixel, resume_from=pass1.captured if resume else None,
                                region=_guide(region))
    latent2 = adapter.sample(source, pass2, control, counter)
    info["applied_pass2"] = pass2.applied
    info["cross_pass2"] = _cross_applied(pass2)
    info["steps_run"] = counter.done
    info["constraint_steps"] = constraint_steps(info)
    image = _image(region, adapter.decode(latent2))
    if plan.update_due:
        previous = FeatureStore.merged(store1, store2, split) if resume else store2.freeze()
    else:
        previous = reference.previous_features
    return KeyframeResult(latent2, image, _next_reference(plan, image, previous), rough_image=rough,
                          fused_image=fused, info=info)


def _cross_applied(hooks: KeyframeConstraints) -> list[int]:
    """The steps on which cross-frame attention replaced K/V in one pass."""
    return list(hooks.attention.applied) if hooks.attention is not None else []


def _pixel_guide(adapter: ModelAdapter, plan: _Plan, rough: torch.Tensor
                 ) -> tuple[PixelGuide, torch.Tensor, torch.Tensor]:
    """Fused reference image (Eq. 10) → ``x̃ = E*(Ĩ')·V_p``, ``w``, ``ρ`` (``keyframe/ALGORITHM.md`` §6)."""
    reference, settings = plan.reference, plan.settings
    anchor_pair, previous_pair = plan.anchor_pair, plan.previous_pair
    rough = rough.float().cpu()
    warped_anchor = warp_hwc(reference.anchor_render.float(), anchor_pair.flow[None], "bilinear", "zeros")
    warped_previous = warp_hwc(reference.previous_render.float(), previous_pair.flow[None], "bilinear", "zeros")
    soft_previous = soft_occlusion(previous_pair.occlusion)
    fused = fused_reference_image(rough, warped_anchor, plan.soft_anchor, warped_previous, soft_previous).clamp(0, 1)
    _, validity = inpainting_validity(anchor_pair.occlusion, previous_pair.occlusion)
    encoding = fidelity_encode(fused, adapter.encode, adapter.decode, settings.fidelity_strength,
                               settings.fidelity_threshold)
    target = encoding.latent * validity.to(encoding.latent.device, encoding.latent.dtype)
    weight = validity * settings.mask_strength
    boundary = flat_region(validity) if settings.smooth_boundary else torch.ones_like(validity)
    guide = PixelGuide(target=target, weight=weight, boundary=boundary, inner_strength=settings.inner_strength,
                       seed=int(adapter.seed), window=settings.mask_period)
    return guide, fused, encoding.keep


def _render_anchor(adapter: ModelAdapter, frame_index: int, frame_size: tuple[int, int], source: torch.Tensor,
                   sigmas: torch.Tensor, settings: ConstraintSettings, control: Any,
                   progress: Callable | None, region: _Region | None = None) -> KeyframeResult:
    """One pass that records the anchor's features and x̂0 trajectory → a new REFERENCE."""
    clock = StepClock(sigmas)
    blocks = _layers(adapter, settings)
    store = FeatureStore(settings.feature_dtype, settings.offload)
    attention = CrossFrameAttention(clock, blocks, settings.cross_period, record=store,
                                    record_steps=set(settings.cross_period.steps(clock.total)))
    hooks = KeyframeConstraints(sigmas, attention=attention, record_x0=True, region=_guide(region))
    counter = _StepCounter(clock.total, progress)
    final = adapter.sample(source, hooks, control, counter)
    image = _image(region, adapter.decode(final))
    store.freeze()
    render = image.detach().float().cpu()
    reference = ReferenceState(
        anchor_index=int(frame_index), previous_index=int(frame_index), previous_features_index=int(frame_index),
        keyframes_rendered=0, frame_size=frame_size, sigmas=sigmas, blocks=tuple(blocks),
        branches=tuple(store.branches()) if len(store) else tuple(adapter.branches),
        anchor_features=store, previous_features=store, anchor_x0=hooks.x0_trajectory,
        anchor_render=render, previous_render=render)
    info = {"passes": 1, "steps_planned": clock.total, "steps_run": counter.done, "anchor": True,
            "recorded_features": len(store), "feature_bytes": store.nbytes,
            "constraint_steps": constraint_steps({})}
    return KeyframeResult(final, image, reference, info=info)


def _next_reference(plan: _Plan, image: torch.Tensor, previous_features: FeatureStore) -> ReferenceState:
    """The REFERENCE after this keyframe: its render always, its features when the update was due."""
    reference = plan.reference
    return replace(reference, previous_index=plan.frame_index, previous_render=image.detach().float().cpu(),
                   previous_features=previous_features,
                   previous_features_index=plan.frame_index if plan.update_due else reference.previous_features_index,
                   keyframes_rendered=reference.keyframes_rendered + 1, _stats=reference._stats)
