"""ComfyUI's MODEL, VAE, CONDITIONING and samplers as a :class:`keyframe.render.ModelAdapter`.

The keyframe maths never imports ComfyUI; this thin adapter does, inside functions only (the module
imports without ComfyUI, so tests can check the model detection on stand-in objects).

* Sampling: ``model.clone()`` + ``set_model_attn1_patch`` (cross-frame attention) +
  ``set_model_sampler_post_cfg_function`` (x̂0 edits), run through ``comfy.sample.sample_custom``
  with ComfyUI's σ schedule (``comfy.samplers.KSampler``'s ``steps``/``scheduler``/``denoise``
  semantics), ComfyUI's seeded noise (``comfy.sample.prepare_noise``) and ComfyUI's SDEdit start
  (``model_sampling.noise_scaling``). ``ddim`` and ``euler`` run :func:`keyframe.sampler.sample_ddim`
  (DDIM η = 0 = Euler in σ-space) and ``lcm`` its LCM steps, through ``comfy.samplers.KSAMPLER``; other
  sampler names run ComfyUI's own sampler with the model-level hooks only.
* Latents: LATENT holds raw VAE latents; the adapter converts to and from the model's space with
  the scale and shift of the model's ``latent_format`` (:class:`keyframe.latent.LatentScale`), as
  ComfyUI's samplers do.
* Model: :func:`check_model` accepts the SD1.5 and SDXL families and gives the decoder layout that
  cross-frame attention is mapped onto (``keyframe/layout.py``).
* Region: a keyframe's region (:mod:`keyframe.region`) is passed as a binary ``noise_mask`` (ComfyUI's
  ``denoise_mask``, ``w > 0``), so ComfyUI's own samplers keep the source outside it too.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from ..common.errors import input_error
from ..keyframe.latent import latent_scale_of
from ..keyframe.layout import SD15_LAYOUT, SDXL_LAYOUT, UNetLayout, decoder_layout
from ..keyframe.settings import DENOISE, SAMPLER_NAME, SCHEDULER

#: Sampler names that run the pack's loop (all constraints, pass-2 resume): DDIM steps, or LCM steps for ``lcm``.
STEP_HOOK_SAMPLERS = ("ddim", "euler", "lcm")
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


#: Families the keyframe stage supports (``keyframe/layout.py`` maps cross-frame attention onto each).
SUPPORTED_FAMILIES = ("SD1.5", "SDXL")
#: Prediction types of the supported families (σ-space ε or v; ComfyUI's ``model_type`` names).
SUPPORTED_PREDICTIONS = ("EPS", "V_PREDICTION")
#: Text-context width → UNet family (ComfyUI detects the same way, ``comfy/supported_models.py``).
FAMILY_BY_CONTEXT = {768: "SD1.5", 1024: "SD2", 2048: "SDXL", 1280: "SDXL refiner"}
#: What the refusal says is supported.
SUPPORTED_TEXT = ("an SD1.5- or SDXL-family MODEL (SD1.5, SDXL, Pony, Illustrious and their fine-tunes, "
                  "ε or v prediction)")


def _family(config_name: str, unet_config: dict, output_blocks: int | None) -> str:
    if unet_config.get("use_temporal_attention") or unet_config.get("use_temporal_resblock") \
            or "vid" in config_name.lower():
        return "video"
    if output_blocks is None:
        return {"SD3": "SD3", "Flux": "Flux", "FluxSchnell": "Flux"}.get(config_name, config_name)
    return FAMILY_BY_CONTEXT.get(unet_config.get("context_dim"), f"unknown (context_dim {unet_config.get('context_dim')})")


def _layout(family: str, unet_config: dict) -> UNetLayout | None:
    """The decoder layout from the UNet config (``channel_mult``, ``num_res_blocks``,
    ``transformer_depth_output``); a config without them (a stand-in) gets its family's real layout."""
    keys = ("channel_mult", "num_res_blocks", "transformer_depth_output")
    if all(unet_config.get(key) is not None for key in keys):
        try:
            return decoder_layout(family, int(unet_config.get("model_channels") or 320), unet_config["channel_mult"],
                                  unet_config["num_res_blocks"], unet_config["transformer_depth_output"])
        except ValueError:
            return None
    return {"SD1.5": SD15_LAYOUT, "SDXL": SDXL_LAYOUT}.get(family)


def describe_model(model: Any) -> dict:
    """What a MODEL is, read by duck typing: config class, family, context dim, decoder attention blocks,
    prediction and the decoder layout (``keyframe/layout.py``; ``None`` when it has no UNet decoder)."""
    base = getattr(model, "model", None)
    config = getattr(base, "model_config", None)
    unet_config = dict(getattr(config, "unet_config", None) or {})
    diffusion = getattr(base, "diffusion_model", None)
    output_blocks = getattr(diffusion, "output_blocks", None)
    attention = None
    if output_blocks is not None:
        attention = [i for i, block in enumerate(output_blocks)
                     if any(hasattr(m, "transformer_blocks") for m in block.modules())]
    config_name = type(config).__name__ if config is not None else type(model).__name__
    count = None if output_blocks is None else len(output_blocks)
    family = _family(config_name, unet_config, count) if base is not None else "not a model"
    layout = _layout(family, unet_config) if family in SUPPORTED_FAMILIES else None
    if layout is not None and attention is not None and (
            len(layout.blocks) != count or [b.number for b in layout.blocks if b.depth] != attention):
        layout = None  # the modules do not match the config: refuse rather than patch the wrong layers
    return {
        "config": config_name,
        "family": family,
        "context_dim": unet_config.get("context_dim"),
        "output_blocks": count,
        "attention_output_blocks": attention,
        "prediction": getattr(getattr(base, "model_type", None), "name", None),
        "layout": layout,
    }


def check_model(model: Any, name: str = "model") -> dict:
    """Raise unless ``model`` is an SD1.5- or SDXL-family MODEL; returns :func:`describe_model`'s dict.

    Supported: a UNet of the SD1.5 family (text context 768) or the SDXL family (context 2048: SDXL, Pony,
    Illustrious, …) whose decoder has self-attention at the resolutions cross-frame attention uses
    (``keyframe/layout.py``), ε- or v-prediction in σ-space. Refused: SD2, the SDXL refiner, SD3, Flux and
    other DiT models, video models, flow-matching models.

    Raises:
        InputError: naming the family found, its config class, context dim, attention blocks and
            prediction, and what is supported.
    """
    found = describe_model(model)
    layout = found["layout"]
    ok = (found["family"] in SUPPORTED_FAMILIES and layout is not None and bool(layout.layers())
          and found["prediction"] in SUPPORTED_PREDICTIONS)
    if not ok:
        raise input_error(
            name, SUPPORTED_TEXT,
            f"a {found['family']} model: {found['config']} (context_dim {found['context_dim']}, "
            f"{found['output_blocks']} output blocks, attention in output blocks {found['attention_output_blocks']}, "
            f"prediction {found['prediction']})",
            "load an SD1.5- or SDXL-family checkpoint (SD2, SD3, Flux and video models are not supported: their "
            "layers differ from the ones the cross-frame constraints address)")
    return found


class ComfyModelAdapter:
    """:class:`keyframe.render.ModelAdapter` over ComfyUI objects (see the module docstring).

    Args:
        model: MODEL (``ModelPatcher``), SD1.5 or SDXL family (:func:`check_model`).
        positive, negative: CONDITIONING (ControlNet applied upstream, e.g. ControlNetApplyAdvanced).
        vae: VAE.
        seed, steps, cfg, sampler_name, scheduler, denoise: as ComfyUI's KSampler.

    Raises:
        InputError: a model of another family, an unknown sampler or scheduler, denoise ≤ 0.
    """

    def __init__(self, model: Any, positive: Any, negative: Any, vae: Any, seed: int, steps: int, cfg: float,
                 sampler_name: str, scheduler: str, denoise: float) -> None:
        import comfy.samplers  # type: ignore[import-not-found]

        found = check_model(model)
        self.unet_layout = found["layout"]
        self.family = found["family"]
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
        self.latent_scale = latent_scale_of(model.get_model_object("latent_format"))
        self.supports_step_hooks = sampler_name in STEP_HOOK_SAMPLERS
        self.branches = (0,) if math.isclose(self.cfg, 1.0) else (0, 1)

    def to_model_space(self, raw: torch.Tensor) -> torch.Tensor:
        """LATENT ``samples`` (raw VAE latent) → the model's space."""
        return self.latent_scale.to_model(raw)

    def to_raw(self, latent: torch.Tensor) -> torch.Tensor:
        """Model-space latent → LATENT ``samples``."""
        return self.latent_scale.to_raw(latent)

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
            sampler = comfy.samplers.KSAMPLER(constraints.sampler(lcm=self.sampler_name == "lcm"))
        else:
            sampler = comfy.samplers.sampler_object(self.sampler_name)
        positive, negative = control if control is not None else (self.positive, self.negative)
        raw = self.to_raw(latent.cpu())
        noise = comfy.sample.prepare_noise(raw, self.seed)
        callback = None if on_step is None else (lambda step, _x0, _x, _total: on_step(step))
        region = getattr(constraints, "region", None)  # ComfyUI's noise mask: the same rule for its own samplers
        # binary: the post-CFG hook has already weighted x̂0 by the feathered weight; ComfyUI's blend with a soft
        # mask would weight it a second time (w² at the edge), with a binary one it only keeps w = 0 cells the source
        noise_mask = None if region is None else (region.weight > 0).float().cpu()
        samples = comfy.sample.sample_custom(patched, noise, self.cfg, sampler, self.sigmas.clone(), positive, negative,
                                             raw, noise_mask=noise_mask, callback=callback, disable_pbar=True,
                                             seed=self.seed)
        return self.to_model_space(samples.cpu())
