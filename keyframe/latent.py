"""The model's latent space: scale and shift of a 4-channel, 8× VAE latent (``keyframe/ALGORITHM.md`` §1).

Every latent the constraints touch is in the model's space, ``x = (z − shift)·scale`` with ``z`` the raw
VAE latent; ``scale`` and ``shift`` come from the model's latent format (ComfyUI
``model.latent_format.scale_factor`` / ``shift_factor``, read by the adapter: SD1.5 0.18215, SDXL
0.13025, no shift), never from a hard-coded SD1.5 factor. Where it matters and where it does not:

* pixel-aware fusion mixes the target with noise, ``x̃ + σ·z`` (Eq. 11): only right in the model's space,
  where ``x = x̂0 + σ·ε`` holds — the scale changes the result;
* shape-aware fusion and warps (linear), ``E*`` (an affine combination of codes) and AdaIN (per-channel
  affine-invariant) give the same result on raw or scaled latents — ``tests/test_keyframe_sdxl.py`` checks both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..common.errors import input_error

#: Channels and spatial down-sampling of the VAEs the keyframe stage supports (SD1.5 and SDXL KL VAEs).
LATENT_CHANNELS = 4


@dataclass(frozen=True)
class LatentScale:
    """``x = (z − shift)·scale``: raw VAE latent ``z`` ↔ the model's latent ``x``.

    Attributes:
        scale: the latent format's scale factor (SD1.5 0.18215, SDXL 0.13025).
        shift: its shift factor (0 for SD1.5 and SDXL).

    Raises:
        InputError: a scale that is not a positive finite number.

    Example:
        >>> sdxl = LatentScale(0.13025)
        >>> round(sdxl.to_model(torch.ones(1)).item(), 5), round(sdxl.to_raw(torch.tensor([0.13025])).item(), 5)
        (0.13025, 1.0)
    """

    scale: float
    shift: float = 0.0

    def __post_init__(self) -> None:
        if not (float(self.scale) > 0 and torch.isfinite(torch.tensor(float(self.scale)))):
            raise input_error("model", "a latent format with a positive scale factor", self.scale,
                              "load an SD1.5 or SDXL checkpoint")

    def to_model(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw VAE latent ``[B,4,h,w]`` → the model's space (ComfyUI ``latent_format.process_in``)."""
        return (raw.float() - self.shift) * self.scale

    def to_raw(self, latent: torch.Tensor) -> torch.Tensor:
        """The model's latent → raw VAE latent (``process_out``)."""
        return latent.float() / self.scale + self.shift


def latent_scale_of(latent_format: object) -> LatentScale:
    """:class:`LatentScale` of a ComfyUI latent format (duck-typed: ``scale_factor``, optional ``shift_factor``,
    ``latent_channels``).

    Raises:
        InputError: a latent format whose latents do not have 4 channels (SD3, Flux, video VAEs).
    """
    channels = int(getattr(latent_format, "latent_channels", LATENT_CHANNELS))
    if channels != LATENT_CHANNELS:
        raise input_error("model", f"a model with {LATENT_CHANNELS}-channel latents (SD1.5 or SDXL VAE)",
                          f"{type(latent_format).__name__} latents with {channels} channels",
                          "load an SD1.5- or SDXL-family checkpoint")
    return LatentScale(float(getattr(latent_format, "scale_factor")),
                       float(getattr(latent_format, "shift_factor", None) or 0.0))
