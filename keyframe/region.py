"""Restyle only a region of a keyframe: the noise-mask rule in the keyframe's latent loop (issue 16).

A region MASK (1 = restyle) is grown by ``mask_grow`` and feathered by ``feather`` pixels
(:func:`common.masks.region_alpha`); the keyframe's diffusion then changes only that region:

* **latent** — the pixel weight is brought to the latent grid by a max over each latent cell
  (:func:`latent_weight`): a cell is denoised as much as its most-restyled pixel, so the whole
  grown region is restyled and a cell with no pixel in the region is kept exactly. After every
  model call the x̂0 outside is the source latent (:meth:`RegionGuide.keep`): ``x̂0 ←
  source + w·(x̂0 − source)``, for the x̂0 the next latent is built from *and* the one ``ε̂`` is taken
  from. With ``x = x̂0 + σ·ε̂`` the running latent outside then stays the source latent noised to
  each step's σ with the pass's own start noise (``source + σ_i·z``) and ends at the source latent,
  which is what ComfyUI's noise mask does (``KSamplerX0Inpaint``: model input outside =
  ``source + σ·noise``, model output outside = ``source``). Under ComfyUI the adapter also passes
  the region as a binary ``denoise_mask`` (``w > 0``), so ComfyUI's own samplers keep the source where
  ``w = 0`` without weighting the feathered cells a second time.
  The cross-frame constraints (attention, AdaIN, shape and pixel fusion) act as without a mask;
  their edits are then overruled outside the region (pixel fusion's latent edit is undone there:
  :meth:`RegionGuide.keep_latent`).
* **pixels** — the decoded render is put over the source frame with the pixel weight
  (:func:`common.masks.composite`), so outside grown mask + feather the keyframe *is* the source
  frame, bit for bit (the VAE decoder would otherwise smear the region's edge by a few pixels).

An empty region (no pixel above 0.5) leaves the latent and the render equal to the source.

Example:
    >>> mask = torch.zeros(1, 32, 32); mask[0, 8:16, 8:16] = 1
    >>> latent_weight(mask, (4, 4), mask_grow=0, feather=0)[0, 0].tolist()
    [[0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..common.masks import composite, region_alpha


def pixel_weight(mask: torch.Tensor, mask_grow: int, feather: int) -> torch.Tensor:
    """Compositing weight ``[1,H,W]`` float32 in [0,1] of a keyframe's mask ``[1,H,W]``: grown, then feathered."""
    return region_alpha(mask.float().cpu(), int(mask_grow), int(feather))


def latent_weight(mask: torch.Tensor, latent_size: tuple[int, int], mask_grow: int, feather: int) -> torch.Tensor:
    """The denoise weight on the latent grid ``[1,1,h,w]`` float32 in [0,1] (1 = denoise, 0 = keep the source).

    Args:
        mask: the keyframe's MASK ``[1,H,W]`` float32 in [0,1] (checked by the caller,
            :func:`common.masks.check_mask`).
        latent_size: ``(h, w)`` of the latent (``H/8, W/8`` for SD); H and W multiples of them.
        mask_grow, feather: pixels (:data:`common.masks.MASK_GROW`, :data:`common.masks.FEATHER`).
    """
    alpha = pixel_weight(mask, mask_grow, feather)[None]
    return F.adaptive_max_pool2d(alpha, tuple(int(side) for side in latent_size))


@dataclass
class RegionGuide:
    """The region of one keyframe's sampling passes.

    Attributes:
        weight: ``[1,1,h,w]`` float32 in [0,1], 1 = denoise as usual, 0 = keep the source latent
            (:func:`latent_weight`).
        source: the SDEdit source latent ``[1,4,h,w]``, model space.
    """

    weight: torch.Tensor
    source: torch.Tensor

    def keep(self, x0: torch.Tensor) -> torch.Tensor:
        """x̂0 ``[B,4,h,w]`` with the source latent outside the region: ``source + w·(x̂0 − source)``."""
        weight = self.weight.to(x0.device, x0.dtype)
        source = self.source.to(x0.device, x0.dtype)
        return source + weight * (x0 - source)

    def keep_latent(self, edited: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
        """A running latent edited between model calls (pixel fusion), with the edit undone outside the region."""
        weight = self.weight.to(edited.device, edited.dtype)
        return before + weight * (edited - before)


def composite_render(render: torch.Tensor, frame: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The decoded render IMAGE ``[1,H,W,3]`` over the source frame ``[1,H,W,3]``, weight :func:`pixel_weight`."""
    return composite(render.float().cpu(), frame.float().cpu(), weight.cpu())
