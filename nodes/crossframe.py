"""Nodes of the keyframe stage's cross-frame constraints (paper §4.1): Fidelity Encode, Cross-Frame Sampler."""

from __future__ import annotations

import torch

from ..common.checks import check_image_batch
from ..common.errors import input_error
from ..common.masks import FEATHER, MASK_GROW, check_mask
from ..keyframe.fidelity import fidelity_encode
from ..keyframe.fusion import check_latent_size
from ..keyframe.plan import KeyframePlan
from ..keyframe.render import render_keyframe
from ..keyframe.settings import FIDELITY_STRENGTH, FIDELITY_THRESHOLD, SEED, ConstraintSettings
from ._comfy import Progress
from ._keyframe_adapter import ComfyModelAdapter
from ._keyframe_widgets import constraint_widgets, sampling_widgets
from ._widgets import widget

CATEGORY = "Rerender/keyframes"


class RerenderFidelityEncode:
    """VAE encoding with latent compensation of the encode–decode loss (``E*``)."""

    DESCRIPTION = (
        "Fidelity-oriented VAE encoding E* (Rerender A Video §4.1.3, Eqs. 8-9): encodes, measures in latent "
        "space what one decode-encode round loses (x_r - E(D(x_r))) and adds it back, except where the "
        "compensated latent decodes with visible artefacts. Use it instead of VAE Encode wherever an image "
        "goes through the VAE again (img2img of renders, keyframe chains): less colour drift and blur. "
        "Costs 2 encodes + 2 decodes.")
    CATEGORY = CATEGORY
    FUNCTION = "encode"
    RETURN_TYPES = ("LATENT", "MASK")
    RETURN_NAMES = ("latent", "compensation_mask")
    OUTPUT_TOOLTIPS = (
        "E*(image): raw VAE latents [B,4,H/8,W/8], like VAE Encode's output.",
        "M_E at pixel size [B,H,W] (each latent cell fills its 8x8 pixels): 1 where the compensation was kept, "
        "0 where it would have made artefacts and the plain encoding was used.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("VAE", {"tooltip": "The VAE to encode with (SD1.5, SDXL or any VAE with an 8x latent)."}),
            "images": ("IMAGE", {"tooltip": "Images [B,H,W,3]; width and height must be multiples of 8."}),
            "strength": widget(FIDELITY_STRENGTH),
            "threshold": widget(FIDELITY_THRESHOLD),
        }}

    def encode(self, vae, images, strength, threshold):
        check_image_batch(images, "images")
        check_latent_size(images.shape[1], images.shape[2], "images")
        progress = Progress(images.shape[0])
        latents, masks = [], []
        for index in range(images.shape[0]):
            result = fidelity_encode(images[index:index + 1], vae.encode, vae.decode, strength, threshold)
            latents.append(result.latent.cpu())
            masks.append(result.keep_pixels().cpu())
            progress(index + 1)
        return ({"samples": torch.cat(latents)}, torch.cat(masks))


class RerenderCrossFrameSampler:
    """KSampler-like keyframe sampler with Rerender's hierarchical cross-frame constraints."""

    DESCRIPTION = (
        "Renders one keyframe with Rerender A Video's cross-frame constraints (§4.1). Without a reference it "
        "renders the ANCHOR and records it (attention features, x0 trajectory, render) into a REFERENCE. With "
        "a reference it renders a later keyframe: cross-frame attention to the anchor and previous keyframe "
        "(decoder self-attention), shape-aware latent fusion with the flow-warped anchor (early steps), "
        "colour-aware AdaIN (late steps), then pixel-aware fusion: a second pass that inpaints the fused, "
        "warped anchor/previous renders (encoded with E*) outside the occlusion mask at mid steps. Pass 2 "
        "resumes from pass 1 where they start to differ (rough_render 'early', the default, also stops pass 1 "
        "there: one plain run's steps in all). Windows are fractions of the sampled steps; "
        "start > end switches a constraint off. Region: connect a mask to restyle only it (grown by mask_grow, "
        "feathered by feather pixels; outside it each step keeps the frame's noised latent, as ComfyUI's noise "
        "mask does). Model: SD1.5 or SDXL family. Apply ControlNet to positive and negative upstream with this "
        "frame's hint.")
    CATEGORY = CATEGORY
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT", "IMAGE", "REFERENCE")
    RETURN_NAMES = ("latent", "image", "reference")
    OUTPUT_TOOLTIPS = (
        "The keyframe's final latent (raw VAE latent, like KSampler's).",
        "The decoded keyframe render [1,H,W,3].",
        "REFERENCE for the next keyframe: anchor features and x0 trajectory, the latest keyframe's render, "
        "and (when due) its attention features.")

    @classmethod
    def INPUT_TYPES(cls):
        constraints_required, constraints_optional = constraint_widgets()
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "An SD1.5- or SDXL-family model (SDXL, Pony, Illustrious, "
                                               "fine-tunes; SD2, SD3, Flux and video models are refused)."}),
                "positive": ("CONDITIONING", {"tooltip": "Positive prompt, with this frame's ControlNet applied."}),
                "negative": ("CONDITIONING", {"tooltip": "Negative prompt, with the same ControlNet applied."}),
                "vae": ("VAE", {"tooltip": "VAE: encodes the frame (SDEdit start), decodes the passes, E* encodes "
                                           "the fused reference."}),
                "frames": ("IMAGE", {"tooltip": "The frame to render [1,H,W,3], or the video's frames (the one "
                                                "at frame_index is used). Sides: multiples of 8."}),
                "frame_index": ("INT", {"default": 0, "min": 0, "max": 1_000_000,
                                        "tooltip": "Index of this frame in the video (the FLOW's numbering); also "
                                                   "picks the frame when frames holds the whole video."}),
                "seed": widget(SEED),
                **sampling_widgets(),
                **constraints_required,
            },
            "optional": {
                "reference": ("REFERENCE", {"tooltip": "REFERENCE from the anchor or the previous keyframe. "
                                                       "Unconnected = this frame is the anchor: render and record."}),
                "flow": ("FLOW", {"tooltip": "FLOW holding (anchor, this frame) and (previous keyframe, this "
                                             "frame); needed for shape and pixel fusion."}),
                "latent": ("LATENT", {"tooltip": "SDEdit source instead of the VAE-encoded frame (one latent, or "
                                                 "one per frame of frames)."}),
                "anchor_index": ("INT", {"default": -1, "min": -1, "max": 1_000_000,
                                         "tooltip": "Anchor frame index for the flow lookup; -1 = the reference's."}),
                "previous_index": ("INT", {"default": -1, "min": -1, "max": 1_000_000,
                                           "tooltip": "Previous keyframe index for the flow lookup; -1 = the "
                                                      "reference's (the last keyframe rendered)."}),
                "resume_pass2": ("BOOLEAN", {"default": True,
                                             "tooltip": "Resume pass 2 from pass 1's state at the pixel-fusion "
                                                        "window (same result, fewer steps). Off = pass 2 from "
                                                        "scratch, for checking."}),
                **constraints_optional,
                "mask": ("MASK", {"tooltip": "Restyle only this region (1 = restyle): one mask [1,H,W], or one per "
                                             "frame of frames (the one at frame_index is used). Outside it the "
                                             "latent stays the frame's and the image is the frame."}),
                "mask_grow": widget(MASK_GROW),
                "feather": widget(FEATHER),
            },
        }

    def sample(self, model, positive, negative, vae, frames, frame_index, seed, steps, cfg, sampler_name, scheduler,
               denoise, reference=None, flow=None, latent=None, anchor_index=-1, previous_index=-1, resume_pass2=True,
               mask=None, mask_grow=MASK_GROW.default, feather=FEATHER.default, **constraints):
        """``constraints``: the window, strength and switch widgets (``cross_start`` … ``rough_render``)."""
        frame = _pick(check_image_batch(frames, "frames"), frame_index, "frames")
        check_latent_size(frame.shape[1], frame.shape[2], "frames")
        if mask is not None:
            count = frames.shape[0] if frames.shape[0] > 1 else getattr(mask, "shape", (1,))[0]
            mask = _pick(check_mask(mask, count, frame.shape[1], frame.shape[2], "mask"), frame_index, "mask")
        settings = ConstraintSettings.from_inputs(constraints)
        adapter = ComfyModelAdapter(model, positive, negative, vae, seed, steps, cfg, sampler_name, scheduler, denoise)
        source = None
        if latent is not None:
            if "noise_mask" in latent:
                raise input_error("latent", "a LATENT without noise_mask", "a LATENT with a noise mask",
                                  ["remove Set Latent Noise Mask", "connect the mask to this node's mask input"])
            source = adapter.to_model_space(_pick(latent["samples"], frame_index, "latent"))
        plan = KeyframePlan(settings, len(adapter.sigmas) - 1, bool(resume_pass2))
        progress = Progress(plan.steps(later=reference is not None))
        result = render_keyframe(adapter, frame, frame_index, reference, flow, settings, latent=source,
                                 anchor_index=anchor_index, previous_index=previous_index, resume=resume_pass2,
                                 progress=progress, mask=mask, mask_grow=int(mask_grow), feather=int(feather))
        progress(progress.total)
        return ({"samples": adapter.to_raw(result.latent).cpu()}, result.image.cpu(), result.reference)


def _pick(batch: torch.Tensor, index: int, name: str) -> torch.Tensor:
    """One item of a batch: the only one, or the one at ``index``."""
    if batch.shape[0] == 1:
        return batch
    if not 0 <= index < batch.shape[0]:
        raise input_error(name, f"a batch holding frame_index {index}", f"{batch.shape[0]} items",
                          "pass the whole video, or the single frame to render")
    return batch[index:index + 1]


NODE_CLASS_MAPPINGS = {
    "RerenderFidelityEncode": RerenderFidelityEncode,
    "RerenderCrossFrameSampler": RerenderCrossFrameSampler,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "RerenderFidelityEncode": "Rerender Fidelity Encode",
    "RerenderCrossFrameSampler": "Rerender Cross-Frame Sampler",
}
