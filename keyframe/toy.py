"""A small deterministic stand-in for ComfyUI's SD1.5 MODEL + VAE + sampler, in pure torch.

For tests and examples without ComfyUI: :class:`ToyUNet` calls ``attn1_patch`` functions exactly as
ComfyUI's ``BasicTransformerBlock`` does (layer-normed hidden states in, replacement K/V sources
out, ``extra_options`` with ``block = ("output", 3…11)``, ``cond_or_uncond``, ``sigmas``), with the
decoder self-attention layers at SD1.5's relative resolutions (blocks 3–5 at latent/4, 6–8 at
latent/2, 9–11 at the latent size). :class:`ToyAdapter` implements
:class:`keyframe.render.ModelAdapter`: CFG batched like ComfyUI (uncond chunk first) or in
separate calls, a post-CFG hook, a lossy 8× "VAE", and the DDIM loop of :mod:`keyframe.sampler`.

Random weights from a fixed seed: outputs mean nothing, but every code path and every equality
(resume vs. full pass 2, order independence, backend independence) is exercised.

Example:
    >>> adapter = ToyAdapter(steps=4)
    >>> frame = torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    >>> from rerender_video.keyframe.render import render_keyframe
    >>> anchor = render_keyframe(adapter, frame, 0)
    >>> anchor.image.shape, anchor.reference.keyframes_rendered
    (torch.Size([1, 32, 32, 3]), 0)
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .constraints import KeyframeConstraints
from .sampler import sdedit_start

#: Output blocks with self-attention and their down-sampling factor relative to the latent.
TOY_BLOCKS = {3: 4, 4: 4, 5: 4, 6: 2, 7: 2, 8: 2, 9: 1, 10: 1, 11: 1}


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, backend: str = "manual") -> torch.Tensor:
    """Multi-head attention ``[B,Nq,D] × [B,Nk,D] → [B,Nq,D]``; ``backend`` "manual" or "sdpa"."""
    batch, _, dim = q.shape
    split = [t.view(batch, -1, heads, dim // heads).transpose(1, 2) for t in (q, k, v)]
    if backend == "sdpa":
        out = F.scaled_dot_product_attention(*split)
    else:
        logits = split[0] @ split[1].transpose(-1, -2) / math.sqrt(dim // heads)
        out = logits.float().softmax(-1).to(q.dtype) @ split[2]
    return out.transpose(1, 2).reshape(batch, -1, dim)


class ToyTransformerBlock(nn.Module):
    """Self-attention half of ComfyUI's ``BasicTransformerBlock`` with its ``attn1_patch`` protocol."""

    def __init__(self, dim: int, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, transformer_options: dict, backend: str = "manual") -> torch.Tensor:
        n = self.norm1(x)
        context, value = n, n
        extra = {k: v for k, v in transformer_options.items() if k != "patches"}
        for patch in transformer_options.get("patches", {}).get("attn1_patch", []):
            n, context, value = patch(n, context, value, extra)
        out = attention(self.to_q(n), self.to_k(context), self.to_v(value), self.heads, backend)
        return x + self.to_out(out)


class ToyUNet(nn.Module):
    """ε-prediction network with SD1.5-like decoder self-attention blocks (random fixed weights)."""

    def __init__(self, channels: int = 32, seed: int = 0) -> None:
        super().__init__()
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        self.conv_in = nn.Conv2d(4, channels, 3, padding=1)
        self.time = nn.Linear(1, channels)
        self.cond = nn.Embedding(2, channels)
        self.blocks = nn.ModuleDict({str(b): ToyTransformerBlock(channels) for b in TOY_BLOCKS})
        self.conv_out = nn.Conv2d(channels, 4, 3, padding=1)
        with torch.no_grad():
            self.conv_out.weight.mul_(0.3)
        torch.random.set_rng_state(generator_state)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, branch: torch.Tensor, transformer_options: dict,
                backend: str = "manual") -> torch.Tensor:
        scale = (1 / torch.sqrt(sigma ** 2 + 1)).view(-1, 1, 1, 1)
        h = self.conv_in(x * scale) + self.time(torch.log(sigma).view(-1, 1))[..., None, None]
        h = h + self.cond(branch)[..., None, None]
        options = dict(transformer_options, sigmas=sigma)
        for number, factor in TOY_BLOCKS.items():
            pooled = F.avg_pool2d(h, factor) if factor > 1 else h
            batch, channels, height, width = pooled.shape
            tokens = pooled.flatten(2).transpose(1, 2)
            options["block"] = ("output", number)
            options["block_index"] = 0
            tokens = self.blocks[str(number)](tokens, options, backend)
            delta = tokens.transpose(1, 2).reshape(batch, channels, height, width) - pooled
            h = h + (F.interpolate(delta, scale_factor=factor, mode="nearest") if factor > 1 else delta)
        return self.conv_out(F.silu(h))


class ToyAdapter:
    """:class:`keyframe.render.ModelAdapter` over :class:`ToyUNet` and a lossy 8× toy VAE.

    Args:
        steps: sampled steps ``S`` (geometric σ from ``sigma_max`` to ``sigma_min``, then 0).
        seed: noise seed.
        cfg: guidance scale (1 → only the cond branch is evaluated, as ComfyUI does).
        batch_cfg: evaluate cond and uncond in one batch (``cond_or_uncond = [1, 0]``) or apart.
        step_hooks: run the DDIM loop with hooks (True) or a plain Euler loop that ignores the
            sampler-level hooks (to test the refusal of pixel fusion).
        backend: attention kernel, "manual" or "sdpa".
    """

    def __init__(self, steps: int = 6, seed: int = 0, cfg: float = 3.0, batch_cfg: bool = True,
                 step_hooks: bool = True, backend: str = "manual", sigma_max: float = 8.0,
                 sigma_min: float = 0.1, channels: int = 32) -> None:
        self.unet = ToyUNet(channels).eval()
        ramp = torch.linspace(0, 1, steps)
        sigmas = sigma_max * (sigma_min / sigma_max) ** ramp
        self.sigmas = torch.cat([sigmas, torch.zeros(1)])
        self.seed = seed
        self.cfg = cfg
        self.batch_cfg = batch_cfg
        self.supports_step_hooks = step_hooks
        self.backend = backend
        self.branches = (0,) if cfg == 1 else (0, 1)
        mix = torch.tensor([[0.6, 0.3, 0.1], [-0.2, 0.5, -0.3], [0.1, -0.4, 0.3], [0.3, 0.2, -0.5]])
        self.encoder = mix                      # [4,3]
        self.decoder = torch.linalg.pinv(mix)   # [3,4]
        self.model_calls = 0

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(images[..., :3].permute(0, 3, 1, 2).float() * 2 - 1, 8)
        return torch.einsum("oc,bchw->bohw", self.encoder, pooled)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        rgb = torch.einsum("co,bohw->bchw", self.decoder, latent.float())
        rgb = F.interpolate(rgb, scale_factor=8, mode="bilinear", align_corners=False)
        return ((rgb + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, constraints: KeyframeConstraints | None) -> torch.Tensor:
        """CFG x̂0 of one step, with the constraints' attention patch and post-CFG hook."""
        patches = {"attn1_patch": [constraints.attention_patch]} if constraints and constraints.attention_patch else {}
        options = {"patches": patches}
        sigma = sigma.flatten()[:1].expand(x.shape[0])
        if self.cfg == 1:
            chunks = [[0]]
        elif self.batch_cfg:
            chunks = [[1, 0]]
        else:
            chunks = [[0], [1]]
        eps = {}
        for branches in chunks:
            batch_x = torch.cat([x] * len(branches))
            batch_sigma = torch.cat([sigma] * len(branches))
            branch = torch.tensor(branches).repeat_interleave(x.shape[0])
            out = self.unet(batch_x, batch_sigma, branch, dict(options, cond_or_uncond=list(branches)), self.backend)
            self.model_calls += 1
            for i, b in enumerate(branches):
                eps[b] = out[i * x.shape[0]:(i + 1) * x.shape[0]]
        combined = eps[0] if self.cfg == 1 else eps[1] + self.cfg * (eps[0] - eps[1])
        denoised = x - sigma.view(-1, 1, 1, 1) * combined
        if constraints is not None:
            denoised = constraints.post_cfg({"denoised": denoised, "sigma": sigma, "input": x})
        return denoised

    def noise(self, latent: torch.Tensor) -> torch.Tensor:
        """The seeded unit noise (the same for every call)."""
        return torch.randn(latent.shape, generator=torch.Generator().manual_seed(self.seed))

    @torch.no_grad()
    def sample(self, latent: torch.Tensor, constraints: KeyframeConstraints, control: Any = None,
               on_step: Callable[[int], None] | None = None) -> torch.Tensor:
        x = sdedit_start(latent, self.noise(latent), self.sigmas[0])

        def model(x, sigma, **_):
            return self.denoise(x, sigma, constraints)

        def callback(info):
            if on_step is not None:
                on_step(info["i"])

        if self.supports_step_hooks:
            return constraints.sampler_function(model, x, self.sigmas, callback=callback)
        for i in range(len(self.sigmas) - 1):  # a "foreign" sampler: Euler without the hooks
            denoised = model(x, self.sigmas[i:i + 1])
            x = denoised + self.sigmas[i + 1] * (x - denoised) / self.sigmas[i]
            callback({"i": i})
        return x
