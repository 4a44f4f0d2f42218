"""ComfyUI's MODEL, VAE, CONDITIONING and samplers as a :class:`keyframe.render.ModelAdapter`.

The keyframe maths never imports ComfyUI; this thin adapter does, inside functions only (the module
imports without ComfyUI, so tests can check the SD1.5 detection on stand-in objects).

* Sampling: ``model.clone()`` + ``set_model_attn1_patch`` (cross-frame attention) +
  ``set_model_sampler_post_cfg_function`` (x̂0 edits), run through ``comfy.sample.sample_custom``
  with ComfyUI's σ schedule (``comfy.samplers.KSampler``'s ``steps``/``scheduler``/``denoise``
  semantics), ComfyUI's seeded noise (``comfy.sample.prepare_noise``) and ComfyUI's SDEdit start
  (``model_sampling.noise_scaling``). ``ddim`` and ``euler`` run :func:`keyframe.sampler.sample_ddim`
  (DDIM η = 0 = Euler in σ-space) through ``comfy.samplers.KSAMPLER``; other sampler names run
  ComfyUI's own sampler with the model-level hooks only.
* Latents: LATENT holds raw VAE latents; the adapter converts to and from the model's space with
  the model's ``latent_format`` (``process_in`` / ``process_out``), as ComfyUI's samplers do.
* Region: a keyframe's region (:mod:`keyframe.region`) is passed as ``noise_mask`` (ComfyUI's
  ``denoise_mask``), so ComfyUI's own samplers keep the source outside it too.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from ..common.errors import input_error
from ..keyframe.settings import DENOISE, SAMPLER_NAME, SCHEDULER

#: Sampler names that run the pack's DDIM loop (all constraints, pass-2 resume).
STEP_HOOK_SAMPLERS = ("ddim", "euler")
#: SD1.5 decoder blocks that must hold a self-attention (SpatialTransformer).
SD15_ATTENTION_OUTPUT_BLOCKS = list(range(3, 12))
#: Fallback lists for INPUT_TYPES outside ComfyUI.
FALLBACK_SAMPLERS = ["ddim", "euler", "euler_ancestral", "dpmpp_2m", "uni_pc"]
FALLBACK_SCHEDULERS = ["ddim_uniform", "normal", "simple", "karras", "exponential", "sgm_uniform", "beta"]


def sampler_names() -> list[str]:
    """ComfyUI's sampler names (``ddim`` first), or a short fallback list outside ComfyUI."""
    try:
        import comfy.samplers  # type: ignore[import-not-found]
        names = list(comfy.samplers.KSampler.SAMPLERS)
    except ImportError:
        names = list(FALLBACK_SAMPLERS)
    return _default_first(names, SAMPLER_NAME.default)


def scheduler_names() -> list[str]:
    """ComfyUI's scheduler names (``ddim_uniform`` first: the reference's uniform DDIM timesteps)."""
    try:
        import comfy.samplers  # type: ignore[import-not-found]
        names = list(comfy.samplers.KSampler.SCHEDULERS)
    except ImportError:
        names = list(FALLBACK_SCHEDULERS)
    return _default_first(names, SCHEDULER.default)


def _default_first(names: list[str], default: str) -> list[str]:
    """The combo's names with the setting's default first (ComfyUI preselects the first)."""
    return [default] + [name for name in names if name != default]


def describe_model(model: Any) -> dict:
    """What a MODEL is, read by duck typing: config class, context dim, decoder attention blocks, prediction."""
    base = getattr(model, "model", None)
    config = getattr(base, "model_config", None)
    unet_config = dict(getattr(config, "unet_config", None) or {})
    diffusion = getattr(base, "diffusion_model", None)
    output_blocks = getattr(diffusion, "output_blocks", None)
    attention = None
    if output_blocks is not None:
        attention = [i for i, block in enumerate(output_blocks)
                     if any(hasattr(m, "transformer_blocks") for m in block.modules())]
    return {
        "config": type(config).__name__ if config is not None else type(model).__name__,
        "context_dim": unet_config.get("context_dim"),
        "output_blocks": None if output_blocks is None else len(output_blocks),
        "attention_output_blocks": attention,
        "prediction": getattr(getattr(base, "model_type", None), "name", None),
    }


def check_sd15_model(model: Any, name: str = "model") -> dict:
    """Raise unless ``model`` is an SD1.5-family MODEL; returns :func:`describe_model`'s dict.

    SD1.5 family = text context dim 768, 12 output blocks with self-attention in blocks 3–11 (the
    layers cross-frame attention replaces) and ε- or v-prediction in σ-space.

    Raises:
        InputError: naming what was found (config class, context dim, attention blocks, prediction).
    """
    found = describe_model(model)
    ok = (found["context_dim"] == 768 and found["output_blocks"] == 12
          and found["attention_output_blocks"] == SD15_ATTENTION_OUTPUT_BLOCKS
          and found["prediction"] in ("EPS", "V_PREDICTION"))
    if not ok:
        raise input_error(
            name, "an SD1.5-family MODEL (text context dim 768, self-attention in output blocks 3–11 of 12, "
            "ε or v prediction)",
            f"{found['config']} (context_dim {found['context_dim']}, {found['output_blocks']} output blocks, "
            f"attention in output blocks {found['attention_output_blocks']}, prediction {found['prediction']})",
            "load an SD1.5 checkpoint or an SD1.5 fine-tune (SDXL, SD2, SD3, Flux have other layouts)")
    return found


class ComfyModelAdapter:
    """:class:`keyframe.render.ModelAdapter` over ComfyUI objects (see the module docstring).

    Args:
        model: MODEL (``ModelPatcher``), SD1.5 family.
        positive, negative: CONDITIONING (ControlNet applied upstream, e.g. ControlNetApplyAdvanced).
        vae: VAE.
        seed, steps, cfg, sampler_name, scheduler, denoise: as ComfyUI's KSampler.

    Raises:
        InputError: a non-SD1.5 model, an unknown sampler or scheduler, denoise ≤ 0.
    """

    def __init__(self, model: Any, positive: Any, negative: Any, vae: Any, seed: int, steps: int, cfg: float,
                 sampler_name: str, scheduler: str, denoise: float) -> None:
        import comfy.samplers  # type: ignore[import-not-found]

        check_sd15_model(model)
        if sampler_name not in comfy.samplers.KSampler.SAMPLERS:
            raise input_error("sampler_name", "one of ComfyUI's samplers", sampler_name, f"pick {SAMPLER_NAME.default}")
        if scheduler not in comfy.samplers.KSampler.SCHEDULERS:
            raise input_error("scheduler", "one of ComfyUI's schedulers", scheduler, f"pick {SCHEDULER.default}")
        if not denoise > 0:
            raise input_error("denoise", "a denoise strength in (0, 1]", denoise,
                              f"use {DENOISE.default} (the reference's default) or 1.0 to re-render fully")
        sampler = comfy.samplers.KSampler(model, steps=int(steps), device=model.load_device, sampler=sampler_name,
                                          scheduler=scheduler, denoise=float(denoise),
                                          model_options=model.model_options)
        self.sigmas = sampler.sigmas.detach().float().cpu()
        self.model, self.vae = model, vae
        self.positive, self.negative = positive, negative
        self.seed, self.cfg = int(seed), float(cfg)
        self.sampler_name = sampler_name
        self.latent_format = model.get_model_object("latent_format")
        self.supports_step_hooks = sampler_name in STEP_HOOK_SAMPLERS
        self.branches = (0,) if math.isclose(self.cfg, 1.0) else (0, 1)

    def to_model_space(self, raw: torch.Tensor) -> torch.Tensor:
        """LATENT ``samples`` (raw VAE latent) → the model's space."""
        return self.latent_format.process_in(raw.float())

    def to_raw(self, latent: torch.Tensor) -> torch.Tensor:
        """Model-space latent → LATENT ``samples``."""
        return self.latent_format.process_out(latent.float())

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.to_model_space(self.vae.encode(images[..., :3]).cpu())

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(self.to_raw(latent)).float().cpu()[..., :3]

    def sample(self, latent: torch.Tensor, constraints: Any, control: Any = None,
               on_step: Callable[[int], None] | None = None) -> torch.Tensor:
        import comfy.sample  # type: ignore[import-not-found]
        import comfy.samplers  # type: ignore[import-not-found]

        patched = self.model.clone()
        if constraints.attention_patch is not None:
            patched.set_model_attn1_patch(constraints.attention_patch)
        patched.set_model_sampler_post_cfg_function(constraints.post_cfg)
        if self.supports_step_hooks:
            sampler = comfy.samplers.KSAMPLER(constraints.sampler_function)
        else:
            sampler = comfy.samplers.sampler_object(self.sampler_name)
        positive, negative = control if control is not None else (self.positive, self.negative)
        raw = self.to_raw(latent.cpu())
        noise = comfy.sample.prepare_noise(raw, self.seed)
        callback = None
        if on_step is not None:
            def callback(step, _x0, _x, _total):
                on_step(step)
        region = getattr(constraints, "region", None)  # ComfyUI's noise mask: the same rule for its own samplers
        noise_mask = None if region is None else region.weight.float().cpu()
        samples = comfy.sample.sample_custom(patched, noise, self.cfg, sampler, self.sigmas.clone(), positive, negative,
                                             raw, noise_mask=noise_mask, callback=callback, disable_pbar=True,
                                             seed=self.seed)
        return self.to_model_space(samples.cpu())
