"""One sampling pass's cross-frame constraints, as the hooks ComfyUI (or a test model) calls.

:class:`KeyframeConstraints` bundles, for one pass over one keyframe:

* the ``attn1_patch`` (:class:`~keyframe.attention.CrossFrameAttention`): cross-frame attention and
  feature recording;
* the post-CFG function :meth:`KeyframeConstraints.post_cfg` (ComfyUI
  ``set_model_sampler_post_cfg_function``): records the anchor's x̂0 trajectory, applies AdaIN
  (§4.1.4) and then shape-aware fusion (§4.1.2) to the CFG-combined x̂0 — the reference's order;
* the sampler-level hooks of :func:`~keyframe.sampler.sample_ddim`: pixel-aware fusion at the start
  of the steps of its window (§4.1.3), ``ε̂`` from the unedited x̂0, the capture of the state
  that pass 2 resumes from, and the early stop of pass 1 (``rough_render="early"``);
* with a region mask (:class:`~keyframe.region.RegionGuide`), the source latent outside the region
  in every x̂0, after the edits above, and pixel fusion's edit undone there (the noise-mask rule).

The attention patch and the post-CFG function find the step from the σ they receive
(:class:`~keyframe.windows.StepClock`), so they work under any ComfyUI sampler; the sampler-level
hooks need :func:`~keyframe.sampler.sample_ddim`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .adain import adain
from .attention import CrossFrameAttention
from .fusion import pixel_fusion_step, shape_fusion, step_noise, warp_latent
from .region import RegionGuide
from .sampler import ResumeState, SamplerHooks, sample_ddim
from .windows import StepClock, StepWindow


@dataclass
class ShapeGuide:
    """Inputs of shape-aware fusion: the anchor's x̂0 per step, warped into this frame.

    Attributes:
        anchor_x0: step → anchor x̂0 ``[1,4,h,w]``.
        flow: latent flow ``[1,h,w,2]`` on this frame's grid pointing into the anchor.
        validity: ``V`` ``[1,1,h,w]`` (1 − maxpool8 of the soft anchor occlusion).
        window: ``warp_period``.
    """

    anchor_x0: dict[int, torch.Tensor]
    flow: torch.Tensor
    validity: torch.Tensor
    window: StepWindow


@dataclass
class ColourGuide:
    """Inputs of AdaIN: the anchor's x̂0 channel statistics per step and ``ada_period``."""

    stats: dict[int, tuple[torch.Tensor, torch.Tensor]]
    window: StepWindow


@dataclass
class PixelGuide:
    """Inputs of pixel-aware fusion (pass 2).

    Attributes:
        target: ``x̃ = E*(Ĩ')·V_p`` ``[1,4,h,w]``.
        weight: ``w = mask_strength·V_p`` ``[1,1,h,w]``.
        boundary: ``ρ`` ``[1,1,h,w]`` (all ones without ``smooth_boundary``).
        inner_strength: noise-direction rescale (0.9).
        seed: seed of the per-step noise (:func:`keyframe.fusion.step_noise`).
        window: ``mask_period`` (strict).
    """

    target: torch.Tensor
    weight: torch.Tensor
    boundary: torch.Tensor
    inner_strength: float
    seed: int
    window: StepWindow


@dataclass
class KeyframeConstraints(SamplerHooks):
    """Hooks of one sampling pass; see the module docstring.

    Attributes:
        sigmas: the sampled schedule ``[S+1]``.
        attention: the attention patch, or ``None`` (no cross-frame attention, no recording).
        record_x0: record the CFG x̂0 of every step into :attr:`x0_trajectory` (anchor pass).
        colour, shape, pixel: guides of AdaIN, shape fusion and pixel fusion, or ``None``.
        capture_step: capture :attr:`captured` at the start of this step (pass 1 → pass 2 resume);
            ≥ 1 and after the pass's first step (it is taken at the end of the step before).
        resume_from: start from this state (pass 2 resumed).
        stop_step: end the pass at the start of this step (pass 1 with an early rough render).
        region: restyle only this region (:class:`~keyframe.region.RegionGuide`), or ``None`` (all).
        applied: constraint name → steps on which it acted (diagnostics and tests).
    """

    sigmas: torch.Tensor
    attention: CrossFrameAttention | None = None
    record_x0: bool = False
    colour: ColourGuide | None = None
    shape: ShapeGuide | None = None
    pixel: PixelGuide | None = None
    capture_step: int | None = None
    resume_from: ResumeState | None = None
    stop_step: int | None = None
    region: RegionGuide | None = None
    x0_trajectory: dict[int, torch.Tensor] = field(default_factory=dict)
    captured: ResumeState | None = None
    applied: dict[str, list[int]] = field(default_factory=lambda: {"adain": [], "shape": [], "pixel": []})

    def __post_init__(self) -> None:
        self.clock = StepClock(self.sigmas)
        self._raw: tuple[int, torch.Tensor] | None = None
        self._eps_prev = self.resume_from.eps_prev if self.resume_from is not None else None
        self._warped: dict[tuple, torch.Tensor] = {}

    def __deepcopy__(self, memo: dict) -> "KeyframeConstraints":
        return self  # shared per-pass state; see CrossFrameAttention.__deepcopy__

    @property
    def total_steps(self) -> int:
        """Number of sampled steps ``S``."""
        return self.clock.total

    @property
    def attention_patch(self) -> CrossFrameAttention | None:
        """The ``attn1_patch`` to install, or ``None``."""
        return self.attention

    @property
    def sampler_function(self):
        """:func:`~keyframe.sampler.sample_ddim` bound to these hooks (a k-diffusion sampler function)."""
        return self.sampler()

    def sampler(self, lcm: bool = False):
        """:func:`~keyframe.sampler.sample_ddim` bound to these hooks, DDIM or (``lcm``) LCM steps."""
        def sample(model, x, sigmas, extra_args=None, callback=None, disable=None, **_):
            return sample_ddim(model, x, sigmas, extra_args, callback, disable, hooks=self, lcm=lcm)
        return sample

    # --- x̂0 edits (post-CFG) ---------------------------------------------------------------
    def post_cfg(self, args: dict) -> torch.Tensor:
        """ComfyUI post-CFG function: ``args["denoised"]`` (x̂0 after CFG) → edited x̂0."""
        return self.on_denoised(args["input"], args["sigma"], args["denoised"])

    def on_denoised(self, x: torch.Tensor, sigma: torch.Tensor | float, denoised: torch.Tensor) -> torch.Tensor:
        """Record and edit the CFG x̂0 of the model call at ``sigma``: AdaIN, then shape fusion."""
        step = self.clock.index(sigma)
        if self.region is not None:  # the model's x̂0 with the source outside: what ε̂ and the anchor record
            denoised = self.region.keep(denoised)
        self._raw = (step, denoised)
        if self.record_x0:
            self.x0_trajectory[step] = denoised.detach().float().cpu().clone()
        edited = denoised
        if self.colour is not None and self.colour.window.contains(step, self.total_steps):
            mean, std = self.colour.stats[step]
            edited = adain(edited, mean, std)
            self._mark("adain", step)
        if self.shape is not None and self.shape.window.contains(step, self.total_steps):
            edited = shape_fusion(edited, self._warped_anchor(step, edited), self.shape.validity)
            self._mark("shape", step)
        if self.region is not None and edited is not denoised:
            edited = self.region.keep(edited)
        return edited

    def _warped_anchor(self, step: int, like: torch.Tensor) -> torch.Tensor:
        key = (step, like.device, like.dtype)
        if key not in self._warped:
            self._warped.clear()
            anchor = self.shape.anchor_x0[step].to(like.device, torch.float32)
            self._warped[key] = warp_latent(anchor, self.shape.flow.to(like.device)).to(like.dtype)
        return self._warped[key]

    def _mark(self, name: str, step: int) -> None:
        if not self.applied[name] or self.applied[name][-1] != step:
            self.applied[name].append(step)

    # --- sampler-level hooks -------------------------------------------------------------------
    def before_step(self, step: int, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        pixel = self.pixel
        if pixel is not None and self._eps_prev is not None and pixel.window.contains(step, self.total_steps):
            noise = step_noise(pixel.seed, step, x.shape, x.device, x.dtype)
            fused = pixel_fusion_step(x, self._eps_prev, float(sigma), pixel.target, pixel.weight, pixel.boundary,
                                      pixel.inner_strength, noise)
            x = fused if self.region is None else self.region.keep_latent(fused, x)
            self._mark("pixel", step)
        return x

    def epsilon(self, step: int, x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
        raw = self._raw[1] if self._raw is not None and self._raw[0] == step else denoised
        return (x - raw) / sigma

    def after_step(self, step: int, x_next: torch.Tensor, denoised: torch.Tensor, eps: torch.Tensor) -> None:
        self._eps_prev = eps
        if self.capture_step == step + 1:  # the state at the start of the next step, before its hooks
            self.captured = ResumeState(step=step + 1, x=x_next.clone(), eps_prev=eps.clone(),
                                        denoised_prev=denoised.clone())
