"""Colour-aware adaptive latent adjustment (paper §4.1.4; ``keyframe/ALGORITHM.md`` §8).

At late steps, each channel of this frame's predicted clean latent x̂0 is renormalised to the
anchor's x̂0 statistics *at the same step*: ``x̂0 ← IN(x̂0)·σ_anchor + μ_anchor``. ``IN`` is instance
normalisation (biased variance, eps 1e-5, ``F.instance_norm``); the anchor's std uses the unbiased
variance + 1e-5, as the reference's ``calc_mean_std``.

Space: AdaIN commutes with any per-channel affine map of the latent (``a·x + b`` moves the mean by
``a·μ + b`` and the std by ``|a|·σ`` on both sides), so matching in the model's scaled space (×0.18215)
equals matching on raw VAE latents.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-5


def channel_stats(latent: torch.Tensor, eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and std ``[B,C,1,1]`` of ``[B,C,H,W]`` (std = √(unbiased var + eps)).

    Example:
        >>> mean, std = channel_stats(torch.tensor([[[[0.0, 2.0]]]]))
        >>> mean.item(), round(std.item(), 4)
        (1.0, 1.4142)
    """
    flat = latent.float().flatten(2)
    mean = flat.mean(-1)[..., None, None]
    std = (flat.var(-1, unbiased=True) + eps).sqrt()[..., None, None]
    return mean.to(latent.dtype), std.to(latent.dtype)


def adain(latent: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """``IN(latent)·std + mean``: give each channel of ``[B,C,H,W]`` the target statistics ``[1|B,C,1,1]``.

    Example:
        >>> x = torch.randn(1, 4, 8, 8)
        >>> y = adain(x, torch.full((1, 4, 1, 1), 3.0), torch.full((1, 4, 1, 1), 2.0))
        >>> round(y.mean().item(), 4), round(y.std(unbiased=False).item(), 2)
        (3.0, 2.0)
    """
    normed = F.instance_norm(latent.float(), eps=eps)
    return (normed * std.to(normed.device, normed.dtype) + mean.to(normed.device, normed.dtype)).to(latent.dtype)
