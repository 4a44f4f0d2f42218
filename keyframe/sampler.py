"""DDIM(η=0) in σ-space with per-step hooks, SDEdit start and resume (``keyframe/ALGORITHM.md`` §1).

With ``x^σ = x_t/√ᾱ_t`` (the space of k-diffusion and ComfyUI samplers, ``x = x̂0 + σ·ε``), the
deterministic DDIM update is the Euler step

    ``x_next = x̂0 + σ_next·ε̂``,   ``ε̂ = (x − x̂0_cfg)/σ``,

and the SDEdit start is ``x = x0 + σ_start·z``. A pass can start at a later step (``resume_from``) and
stop before the end (``stop_step``). :func:`sample_ddim` has the signature of a
k-diffusion sampler function, so ComfyUI runs it through ``comfy.samplers.KSAMPLER`` with all its
machinery (CFG, ControlNet, model patches, previews); outside ComfyUI any ``model(x, sigma)``
returning x̂0 works.

Reference parity (deliberate, ALGORITHM.md §1 and §10 item 9): ``ε̂`` is taken from the x̂0 *before*
the cross-frame edits of that step (AdaIN, shape fusion), and the edited x̂0 enters the next latent
through the first term only. The edits are made by ComfyUI's post-CFG hook, which hands the
unedited x̂0 to the hooks object; :meth:`SamplerHooks.epsilon` returns ``ε̂`` from it. (ComfyUI's
own samplers re-derive the direction from the edited x̂0, which damps every edit by ``σ_next/σ``.)

ComfyUI's schedules end at σ = 0, so the last step returns x̂0; the reference's last step lands at
``ᾱ(0)``, σ ≈ 0.029 — a negligible difference.

LCM (``lcm=True``, ComfyUI's ``lcm`` sampler for LCM/Hyper/Lightning/Turbo models): the step is
``x_next = x̂0 + σ_next·z_s`` with fresh noise ``z_s``, seeded per step (:func:`lcm_noise`, from
``extra_args["seed"]``) instead of drawn from one running generator, so a pass resumed at any step
reproduces a full one bit for bit. The hooks see ``z_s`` as the step's ``ε̂`` (``x_next = x̂0 +
σ_next·ε̂`` holds), which is what pixel-aware fusion takes as the noise part of the latent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

#: Noise stream of the LCM steps (pixel-aware fusion's per-step noise is stream 0).
LCM_NOISE_STREAM = 1


@dataclass
class ResumeState:
    """Where a pass stood at the start of ``step`` (before the step's hooks and model call).

    Attributes:
        step: the sampled-step index to resume at.
        x: the running latent ``[B,4,h,w]`` at that point.
        eps_prev: the previous step's ``ε̂`` (``None`` at step 0).
        denoised_prev: the previous step's x̂0 as it entered ``x`` (after the post-CFG edits), so
            ``x = denoised_prev + σ_step·eps_prev``; ``None`` at step 0.
    """

    step: int
    x: torch.Tensor
    eps_prev: torch.Tensor | None
    denoised_prev: torch.Tensor | None = None


class SamplerHooks:
    """No-op per-step hooks of :func:`sample_ddim`; :class:`keyframe.constraints.KeyframeConstraints`
    overrides them.

    Attributes:
        resume_from: a :class:`ResumeState` to start from instead of the given latent, or ``None``.
        stop_step: end the pass at the start of this step (before its hooks and model call) and
            return the running latent there, or ``None`` to run to the end.
    """

    resume_from: ResumeState | None = None
    stop_step: int | None = None

    def before_step(self, step: int, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Edit the running latent at the start of ``step`` (before the model call)."""
        return x

    def epsilon(self, step: int, x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
        """``ε̂`` of this step (default: from the x̂0 the model returned)."""
        return (x - denoised) / sigma

    def after_step(self, step: int, x_next: torch.Tensor, denoised: torch.Tensor, eps: torch.Tensor) -> None:
        """Observe the step's result."""


def sdedit_start(latent: torch.Tensor, noise: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """SDEdit initial latent ``x0 + σ_start·z`` (σ-space form of ``q_sample``).

    ComfyUI does this itself (``model_sampling.noise_scaling``; at full denoise it scales the noise
    by ``√(1+σ²)`` instead of ``σ``); pure-torch adapters use this.

    Example:
        >>> sdedit_start(torch.ones(1), torch.ones(1), 2.0).item()
        3.0
    """
    return latent + noise * sigma


def lcm_noise(seed: int, step: int, like: torch.Tensor) -> torch.Tensor:
    """The seeded noise ``z_s`` an LCM step adds (shaped, placed and typed like ``like``)."""
    from .fusion import step_noise

    return step_noise(seed, step, like.shape, like.device, like.dtype, stream=LCM_NOISE_STREAM)


@torch.no_grad()
def sample_ddim(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                callback: Callable | None = None, disable: bool | None = None,
                hooks: SamplerHooks | None = None, lcm: bool = False) -> torch.Tensor:
    """Deterministic DDIM (η = 0) in σ-space with per-step hooks; a k-diffusion sampler function.

    Args:
        model: ``model(x, sigma_batch, **extra_args) -> x̂0`` (CFG included).
        x: the initial latent ``[B,4,h,w]`` (already noised to ``sigmas[0]``); ignored when
            ``hooks.resume_from`` is set.
        sigmas: ``[S+1]`` descending schedule.
        extra_args: passed to ``model`` (ComfyUI: model_options, seed, denoise_mask).
        callback: k-diffusion callback, called with ``{"x", "i", "sigma", "sigma_hat", "denoised"}``.
        disable: unused (k-diffusion progress-bar flag).
        hooks: per-step hooks (:class:`SamplerHooks`).
        lcm: LCM steps (``x_next = x̂0 + σ_next·z_s``, module docstring) instead of DDIM.

    Returns:
        The final latent ``[B,4,h,w]`` (with ``hooks.stop_step``: the latent at the start of that step).

    Example:
        >>> sigmas = torch.tensor([2.0, 1.0, 0.0])
        >>> sample_ddim(lambda x, s: x * 0 + 0.5, torch.full((1, 1), 3.0), sigmas).item()
        0.5
    """
    extra_args = {} if extra_args is None else extra_args
    hooks = hooks if hooks is not None else SamplerHooks()
    s_in = x.new_ones([x.shape[0]])
    start = 0
    if hooks.resume_from is not None:
        start = hooks.resume_from.step
        x = hooks.resume_from.x.to(x.device, x.dtype)
    stop = len(sigmas) - 1 if hooks.stop_step is None else min(int(hooks.stop_step), len(sigmas) - 1)
    for i in range(start, stop):
        sigma = sigmas[i]
        x = hooks.before_step(i, x, sigma)
        denoised = model(x, sigma * s_in, **extra_args)
        eps = hooks.epsilon(i, x, sigma, denoised)
        if lcm and float(sigmas[i + 1]) > 0:
            eps = lcm_noise(int(extra_args.get("seed") or 0), i, x)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        x = denoised + sigmas[i + 1] * eps
        hooks.after_step(i, x, denoised, eps)
    return x
