"""Soft occlusion masks and the cross-frame latent fusions (paper §4.1.2–4.1.3; ``keyframe/ALGORITHM.md`` §4, §6).

Conventions: hard occlusion masks come from :meth:`flow.types.FlowPairs.between` as ``[H,W]`` float
{0,1}, **1 = occluded** (the warped value is unreliable). *Validity* masks are the opposite
(1 = reliable). Pixel-space masks here are ``[B,1,H,W]``, latent-space ones ``[B,1,H/8,W/8]``;
images are IMAGE layout ``[B,H,W,3]`` float in [0,1]; latents ``[B,4,H/8,W/8]`` in the model's space.

* Soft occlusion (ALGORITHM.md §4): ``B = clamp(G(dilate9(O)) + O, 0, 1)`` with a 9×9
  max-pool (radius 4 px) and a 9×9 Gaussian blur of σ = 18 (reflect padding, as torchvision's),
  so the mask keeps 1 on occluded pixels and falls off over about 8 px.
* Shape-aware fusion (Eq. 7, ALGORITHM.md §4): ``x̂0 ← V·warp(x̂0_anchor) + (1−V)·x̂0`` with the
  anchor→frame flow at latent resolution (pixel flow ÷ 8, bilinearly resampled ×1/8 without
  antialias — a point sample, as the reference), validity ``V = 1 − maxpool8(B_anchor)`` (a latent cell is trusted as
  much as its least trusted pixel) and **nearest** warping with zero padding.
* Pixel-aware fusion (Eqs. 10–11, ALGORITHM.md §6): the fused reference image, the inpainting validity
  (a per-cell *min*-pool of the soft validity of pixels visible in at least one reference), the
  flat-region boundary map and the per-step latent blend.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..common.errors import input_error
from ..flow.warp import warp

#: Latent down-sampling factor of SD VAEs.
LATENT_FACTOR = 8
#: Dilation and blur of the soft occlusion mask (reference: 9×9 max-pool, 9×9 Gaussian σ=18).
DILATE_SIZE = 9
BLUR_SIZE = 9
BLUR_SIGMA = 18.0


def _as_mask4d(mask: torch.Tensor, name: str = "mask") -> torch.Tensor:
    if mask.ndim == 2:
        return mask[None, None].float()
    if mask.ndim == 3:
        return mask[:, None].float()
    if mask.ndim == 4 and mask.shape[1] == 1:
        return mask.float()
    raise input_error(name, "a mask [H,W], [B,H,W] or [B,1,H,W]", list(mask.shape))


def gaussian_kernel(size: int = BLUR_SIZE, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """Normalised 1-D Gaussian ``[size]`` (torchvision's sampling: centred integer offsets).

    Example:
        >>> [round(v, 4) for v in gaussian_kernel()[:2].tolist()]  # σ = 18 over 9 taps: almost a box
        [0.1095, 0.1107]
    """
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return (weights / weights.sum()).float()


def gaussian_blur(mask: torch.Tensor, size: int = BLUR_SIZE, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """Separable Gaussian blur of ``[B,C,H,W]`` with reflect padding (torchvision's ``gaussian_blur``)."""
    kernel = gaussian_kernel(size, sigma).to(mask.device, mask.dtype)
    channels = mask.shape[1]
    pad = size // 2
    out = F.pad(mask, (pad, pad, 0, 0), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, size).repeat(channels, 1, 1, 1), groups=channels)
    out = F.pad(out, (0, 0, pad, pad), mode="reflect")
    return F.conv2d(out, kernel.view(1, 1, size, 1).repeat(channels, 1, 1, 1), groups=channels)


def soft_occlusion(occlusion: torch.Tensor) -> torch.Tensor:
    """Softened occlusion mask ``clamp(G(dilate(O)) + O, 0, 1)`` → ``[B,1,H,W]`` (1 = occluded).

    Args:
        occlusion: hard mask ``[H,W]``, ``[B,H,W]`` or ``[B,1,H,W]``, 1 = occluded.

    Example:
        >>> hard = torch.zeros(32, 32); hard[16, 16] = 1
        >>> soft = soft_occlusion(hard)
        >>> soft[0, 0, 16, 16].item(), soft[0, 0, 16, 20].item() > 0, soft[0, 0, 16, 28].item()
        (1.0, True, 0.0)
    """
    hard = _as_mask4d(occlusion, "occlusion")
    dilated = F.max_pool2d(hard, DILATE_SIZE, stride=1, padding=DILATE_SIZE // 2)
    return (gaussian_blur(dilated) + hard).clamp(0, 1)


def check_latent_size(height: int, width: int, name: str = "frames") -> tuple[int, int]:
    """Latent size ``(H/8, W/8)`` of a frame size; raises unless both are multiples of 8.

    Raises:
        InputError: a side that is not a multiple of 8, with the nearest valid sizes.
    """
    if height % LATENT_FACTOR or width % LATENT_FACTOR:
        def near(v):
            return f"{v // 8 * 8} or {v // 8 * 8 + 8}"
        raise input_error(name, "a width and height that are multiples of 8 (one latent cell = 8×8 pixels)",
                          f"{width}×{height}", f"resize or crop to a width of {near(width)} and a height of "
                          f"{near(height)} (Rerender Prepare Frames or a core ImageScale node)")
    return height // LATENT_FACTOR, width // LATENT_FACTOR


def latent_flow(flow: torch.Tensor) -> torch.Tensor:
    """Pixel flow ``[H,W,2]`` / ``[B,H,W,2]`` → latent-cell flow ``[B,H/8,W/8,2]``.

    Divides by 8, then resamples bilinearly to 1/8 size (``align_corners=False``, no antialias: a
    point sample between the central pixels of each 8×8 block, as the reference does).

    Example:
        >>> latent_flow(torch.full((16, 16, 2), 8.0))[0, 0, 0].tolist()
        [1.0, 1.0]
    """
    flow4 = flow[None] if flow.ndim == 3 else flow
    height, width = check_latent_size(flow4.shape[1], flow4.shape[2], "flow")
    scaled = flow4.permute(0, 3, 1, 2).float() / LATENT_FACTOR
    small = F.interpolate(scaled, size=(height, width), mode="bilinear", align_corners=False)
    return small.permute(0, 2, 3, 1).contiguous()


def latent_validity(soft_occ: torch.Tensor) -> torch.Tensor:
    """``V = 1 − maxpool8(B)``: latent-cell validity ``[B,1,H/8,W/8]`` from a soft occlusion mask.

    Example:
        >>> occ = torch.zeros(16, 16); occ[0, 0] = 0.5
        >>> latent_validity(occ)[0, 0].tolist()
        [[0.5, 1.0], [1.0, 1.0]]
    """
    mask = _as_mask4d(soft_occ, "occlusion")
    check_latent_size(mask.shape[2], mask.shape[3], "occlusion")
    return 1 - F.max_pool2d(mask, LATENT_FACTOR)


def warp_latent(latent: torch.Tensor, flow_latent: torch.Tensor) -> torch.Tensor:
    """Nearest warp of a latent ``[B,4,h,w]`` by a latent flow ``[B,h,w,2]``, zero padding (reference)."""
    return warp(latent, flow_latent.to(latent.device), mode="nearest", padding="zeros")


def shape_fusion(x0: torch.Tensor, warped_anchor_x0: torch.Tensor, validity: torch.Tensor) -> torch.Tensor:
    """Shape-aware latent fusion (Eq. 7): ``V·warp(x̂0_anchor) + (1−V)·x̂0``.

    Args:
        x0: this frame's x̂0 ``[B,4,h,w]``.
        warped_anchor_x0: the anchor's x̂0 at the same step, already warped into this frame
            (:func:`warp_latent`), ``[1 or B,4,h,w]``.
        validity: ``[1 or B,1,h,w]`` from :func:`latent_validity`.

    Example:
        >>> x, a = torch.zeros(1, 4, 2, 2), torch.ones(1, 4, 2, 2)
        >>> shape_fusion(x, a, torch.full((1, 1, 2, 2), 0.25))[0, 0, 0, 0].item()
        0.25
    """
    validity = validity.to(x0.device, x0.dtype)
    return validity * warped_anchor_x0.to(x0.device, x0.dtype) + (1 - validity) * x0


def fused_reference_image(rough: torch.Tensor, warped_anchor: torch.Tensor, soft_anchor: torch.Tensor,
                          warped_previous: torch.Tensor, soft_previous: torch.Tensor) -> torch.Tensor:
    """Fused reference image (Eq. 10): anchor > previous keyframe > this frame's rough render.

    ``Ĩ' = (1−B_0)·W_0 + B_0·((1−B_p)·W_p + B_p·Ī')`` with IMAGE tensors ``[B,H,W,3]`` and soft
    occlusion masks ``[B,1,H,W]`` (1 = occluded).

    Example:
        >>> img = lambda v: torch.full((1, 2, 2, 3), v)
        >>> m = lambda v: torch.full((1, 1, 2, 2), v)
        >>> fused_reference_image(img(0.), img(1.), m(0.), img(.5), m(0.))[0, 0, 0, 0].item()
        1.0
        >>> fused_reference_image(img(0.), img(1.), m(1.), img(.5), m(1.))[0, 0, 0, 0].item()
        0.0
    """
    b0 = soft_anchor.permute(0, 2, 3, 1)
    bp = soft_previous.permute(0, 2, 3, 1)
    return (1 - b0) * warped_anchor + b0 * ((1 - bp) * warped_previous + bp * rough)


def inpainting_validity(occ_anchor: torch.Tensor, occ_previous: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the fused reference can be trusted (``keyframe/ALGORITHM.md`` §6).

    ``O_both = O_p·O_0`` (occluded in both references), ``A = 1 − soft(O_both)`` (pixel validity),
    ``V_p = 1 − maxpool8(1 − A)`` (latent validity: a per-cell *min*-pool of ``A``).

    Returns:
        ``(A [B,1,H,W], V_p [B,1,H/8,W/8])``, 1 = reliable.
    """
    both = _as_mask4d(occ_anchor, "occlusion") * _as_mask4d(occ_previous, "occlusion")
    pixel_validity = 1 - soft_occlusion(both)
    return pixel_validity, latent_validity(1 - pixel_validity)


def flat_region(validity: torch.Tensor) -> torch.Tensor:
    """Boundary map ``ρ``: 1 where both 3×3 Prewitt responses of ``validity`` are exactly 0, else 0.

    Replicate padding, as the reference's ``find_flat_region``. ``[B,1,h,w]`` → ``[B,1,h,w]``.

    Example:
        >>> v = torch.ones(1, 1, 4, 4); v[..., 0] = 0
        >>> flat_region(v)[0, 0, 0].tolist()
        [0.0, 0.0, 1.0, 1.0]
    """
    mask = _as_mask4d(validity, "validity")
    kx = torch.tensor([[-1.0, 0.0, 1.0]] * 3, dtype=mask.dtype, device=mask.device)
    kernels = torch.stack([kx, kx.t()])[:, None]
    padded = F.pad(mask, (1, 1, 1, 1), mode="replicate")
    responses = F.conv2d(padded, kernels)
    return ((responses[:, :1] == 0) & (responses[:, 1:] == 0)).to(mask.dtype)


def noise_rescale(weight: torch.Tensor, boundary: torch.Tensor, inner_strength: float) -> torch.Tensor:
    """Noise-direction scale ``r`` of the reference's soft inpainting (``keyframe/ALGORITHM.md`` §6).

    ``r = max(1−w, √(1−w²)·inner_strength)`` in flat regions (``ρ = 1``), ``1−w`` on mask
    boundaries (``ρ = 0``). Where ``w = 0``, ``r = 1`` (the latent is left as it is).

    Example:
        >>> w = torch.tensor([0.0, 0.5]); rho = torch.ones(2)
        >>> [round(v, 3) for v in noise_rescale(w, rho, 0.9).tolist()]
        [1.0, 0.779]
    """
    flat = torch.maximum(1 - weight, torch.sqrt((1 - weight ** 2).clamp_min(0)) * inner_strength)
    return (1 - weight) * (1 - boundary) + flat * boundary


def pixel_fusion_step(x: torch.Tensor, eps_prev: torch.Tensor, sigma: float, target: torch.Tensor,
                      weight: torch.Tensor, boundary: torch.Tensor, inner_strength: float,
                      noise: torch.Tensor) -> torch.Tensor:
    """Blend the running latent with the forward-diffused fused reference (Eq. 11, code variant).

    In σ-space (``keyframe/ALGORITHM.md`` §1): ``dir = σ·ε̂_prev`` is the noise part of the step just
    taken and ``x − dir`` its clean part (= x̂0 of the previous step), so

    ``x ← w·(x̃ + σ·z) + (1−w)·(x − dir) + r·dir``

    with ``w`` the inpainting weight (``mask_strength·V_p``), ``r`` from :func:`noise_rescale` and
    ``z`` Gaussian noise. Where ``w = 1`` (and ``r = 0``) the result is the noised reference
    ``x̃ + σ·z``; where ``w = 0`` it is ``x`` unchanged.

    Args:
        x: running latent ``[B,4,h,w]`` at the start of the step (before the model call).
        eps_prev: the previous step's CFG noise prediction ``ε̂`` ``[B,4,h,w]``.
        sigma: this step's σ.
        target: the reference latent ``x̃`` ``[1 or B,4,h,w]``.
        weight: ``w`` ``[1 or B,1,h,w]``; boundary: ``ρ`` of the same shape.
        inner_strength: the reference's ``inner_strength`` (0.9).
        noise: ``z``, shaped like ``x``.
    """
    weight = weight.to(x.device, x.dtype)
    boundary = boundary.to(x.device, x.dtype)
    rescale = noise_rescale(weight, boundary, inner_strength)
    direction = sigma * eps_prev
    noised = target.to(x.device, x.dtype) + sigma * noise.to(x.device, x.dtype)
    return weight * noised + (1 - weight) * (x - direction) + rescale * direction


def step_noise(seed: int, step: int, shape: torch.Size | tuple, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32, stream: int = 0) -> torch.Tensor:
    """Seeded Gaussian noise for pixel fusion at ``step``: the same whether pass 2 ran from step 0 or
    was resumed (the reference draws "fresh" noise from the global RNG, which a resume cannot replay).
    ``stream`` separates other users of per-step noise (1: the LCM steps, :mod:`.sampler`).

    Example:
        >>> torch.equal(step_noise(1, 11, (2, 2)), step_noise(1, 11, (2, 2)))
        True
    """
    generator = torch.Generator(device="cpu").manual_seed(
        (int(seed) * 1_000_003 + 7919 * (step + 1) + 104_729 * int(stream)) % 2 ** 63)
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32).to(device, dtype)

