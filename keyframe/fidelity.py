"""Fidelity-oriented image encoding ``E*`` (paper §4.1.3, Eqs. 8–9; ``keyframe/ALGORITHM.md`` §5).

Each VAE encode–decode round loses detail and drifts colours; repeated rounds (keyframe → render →
encode again) accumulate that loss. ``E*`` estimates the loss of one round in latent space and
pre-compensates it:

1. ``x_r = E(I)``, ``I_r = D(x_r)``, ``x_rr = E(I_r)``;
2. compensated code ``x_c = x_r + λ·(x_r − x_rr)`` (``λ = 1``, hard-coded in the reference);
3. where the compensation itself makes artefacts — mean-RGB ``|D(x_c) − I| > 0.25`` in [-1,1] units
   (0.125 in IMAGE units, ≈ 32/255), sampled bilinearly ×1/8 (no antialias: the central pixels of
   each 8×8 block) and dilated by a 3×3 max-pool — fall back to ``x_r``;
4. ``E*(I) = x_r + M_E·λ·(x_r − x_rr)`` with ``M_E`` = 1 where the compensation is kept.

Cost: 2 encodes + 2 decodes. Space: ``(1+λ)·x_r − λ·x_rr`` is an affine combination (weights sum
to 1), so it commutes with the latent format's affine ``process_in``: ``E*`` computed on raw VAE
latents and then scaled equals ``E*`` computed on scaled latents. The encoder here is whatever
``encode`` does — ComfyUI's ``VAE.encode`` returns the posterior *mode* (deterministic), the
reference samples the posterior (ALGORITHM.md §10 item 8); the mode is kept on purpose (reproducible, and
sampling noise would only add to the drift ``E*`` corrects).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..common.checks import check_image_batch
from ..common.errors import input_error
from .fusion import LATENT_FACTOR, check_latent_size

#: Compensation strength λ_E of Eq. 9 (reference: 1, hard-coded).
DEFAULT_STRENGTH = 1.0
#: Artefact threshold on the mean-RGB error, in [-1,1] image units (reference: 0.25).
DEFAULT_THRESHOLD = 0.25

Encoder = Callable[[torch.Tensor], torch.Tensor]
Decoder = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class FidelityEncoding:
    """Result of :func:`fidelity_encode`.

    Attributes:
        latent: ``E*(I)`` ``[B,4,H/8,W/8]`` in the encoder's latent space.
        plain: ``E(I)`` (the plain encoding ``x_r``).
        keep: ``M_E`` ``[B,1,H/8,W/8]`` float, 1 where the compensation was kept.
        error: mean-RGB ``|D(x_c) − I|`` ``[B,H,W]`` in [-1,1] units (for display and tests).
    """

    latent: torch.Tensor
    plain: torch.Tensor
    keep: torch.Tensor
    error: torch.Tensor

    def keep_pixels(self) -> torch.Tensor:
        """``M_E`` at pixel size ``[B,H,W]`` (each latent cell covers its 8×8 pixels; nearest)."""
        return self.keep[:, 0].repeat_interleave(LATENT_FACTOR, 1).repeat_interleave(LATENT_FACTOR, 2)


def compensation_mask(decoded: torch.Tensor, images: torch.Tensor, threshold: float = DEFAULT_THRESHOLD
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """``M_E`` from the decode of the compensated code (step 3 of the module docstring).

    Args:
        decoded: ``D(x_c)`` IMAGE ``[B,H,W,3]``; images: the input ``I``, same shape.
        threshold: mean-RGB error in [-1,1] units above which a pixel is an artefact.

    Returns:
        ``(keep [B,1,H/8,W/8], error [B,H,W])``.

    Example:
        >>> img = torch.zeros(1, 32, 32, 3); bad = img.clone(); bad[:, 12:14, 12:14] = 0.5
        >>> keep, _ = compensation_mask(bad, img)
        >>> keep[0, 0].tolist()
        [[0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]]
    """
    error = (decoded.float() - images.float()).abs().mean(-1) * 2.0  # IMAGE units → [-1,1] units
    height, width = check_latent_size(images.shape[1], images.shape[2], "images")
    hard = (error > threshold).float()[:, None]
    sampled = F.interpolate(hard, size=(height, width), mode="bilinear", align_corners=False) > 0
    unsafe = F.max_pool2d(sampled.float(), 3, stride=1, padding=1)
    return 1 - unsafe, error


def fidelity_encode(images: torch.Tensor, encode: Encoder, decode: Decoder, strength: float = DEFAULT_STRENGTH,
                    threshold: float = DEFAULT_THRESHOLD) -> FidelityEncoding:
    """``E*(I)``: VAE encoding with latent-space compensation of the encode–decode loss (Eq. 9).

    Args:
        images: IMAGE ``[B,H,W,3]`` float in [0,1], H and W multiples of 8.
        encode: IMAGE → latent ``[B,4,H/8,W/8]`` (e.g. ComfyUI ``vae.encode``).
        decode: latent → IMAGE ``[B,H,W,3]`` in [0,1] (e.g. ComfyUI ``vae.decode``).
        strength: ``λ_E`` (0 = plain encoding).
        threshold: artefact threshold in [-1,1] units (0.25 as the reference).

    Returns:
        :class:`FidelityEncoding`.

    Raises:
        InputError: not an IMAGE batch, a size that is not a multiple of 8, a negative strength or
            threshold.

    Example:
        >>> enc = lambda im: im.permute(0, 3, 1, 2)[:, :1].repeat(1, 4, 1, 1)[:, :, ::8, ::8] * 0.9
        >>> dec = lambda z: (z[:, :3] / 0.9 * 0.8).repeat_interleave(8, 2).repeat_interleave(8, 3).permute(0, 2, 3, 1)
        >>> img = torch.full((1, 16, 16, 3), 0.5)
        >>> result = fidelity_encode(img, enc, dec)
        >>> round(dec(result.plain)[0, 0, 0, 0].item(), 3), round(dec(result.latent)[0, 0, 0, 0].item(), 3)
        (0.4, 0.48)
    """
    check_image_batch(images, "images")
    check_latent_size(images.shape[1], images.shape[2], "images")
    if strength < 0:
        raise input_error("strength", "a compensation strength λ >= 0", strength, "use 1.0 (the paper's value)")
    if threshold <= 0:
        raise input_error("threshold", "an artefact threshold > 0 (in [-1,1] image units)", threshold,
                          "use 0.25 (the reference's value)")
    images = images[..., :3]
    plain = encode(images)
    re_encoded = encode(decode(plain))
    compensation = (plain - re_encoded) * strength
    keep, error = compensation_mask(decode(plain + compensation), images.to(plain.device), threshold)
    latent = plain + keep.to(plain.device, plain.dtype) * compensation
    return FidelityEncoding(latent=latent, plain=plain, keep=keep, error=error)
