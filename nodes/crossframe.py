"""Nodes of the keyframe stage's cross-frame constraints (paper §4.1): Fidelity Encode, Cross-Frame Sampler."""

from __future__ import annotations

import torch

from ..common.checks import check_image_batch
from ..common.errors import input_error
from ..keyframe.fidelity import DEFAULT_STRENGTH, DEFAULT_THRESHOLD, fidelity_encode
from ..keyframe.fusion import check_latent_size
from ..keyframe.render import ROUGH_RENDERS, planned_steps, render_keyframe
from ._comfy import Progress
from ._keyframe_adapter import ComfyModelAdapter, sampler_names, scheduler_names
from ._keyframe_widgets import constraint_settings

CATEGORY = "Rerender/keyframes"


def _fraction(default: float, tooltip: str) -> tuple:
    return ("FLOAT", {"default": default, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": tooltip})


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
            "vae": ("VAE", {"tooltip": "The VAE to encode with (SD1.5 or any VAE with an 8x latent)."}),
            "images": ("IMAGE", {"tooltip": "Images [B,H,W,3]; width and height must be multiples of 8."}),
            "strength": ("FLOAT", {"default": DEFAULT_STRENGTH, "min": 0.0, "max": 2.0, "step": 0.05,
                                   "tooltip": "lambda_E: how much of the estimated loss to add back "
                                              "(1 = the paper's value; 0 = plain VAE Encode)."}),
            "threshold": ("FLOAT", {"default": DEFAULT_THRESHOLD, "min": 0.01, "max": 2.0, "step": 0.01,
                                    "tooltip": "Artefact threshold: mean RGB error of the decoded compensated "
                                               "latent, in [-1,1] units (0.25 = about 32/255). Lower = "
                                               "compensate in fewer places."}),
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


ROUGH_RENDER_TOOLTIP = (
    "Pixel-aware fusion fills the fused reference with a rough render of this keyframe where the anchor AND the "
    "previous keyframe are occluded. early (default): pass 1 stops where pixel-aware fusion starts and its x0 "
    "prediction there (step 10 of 20, blurrier, before AdaIN) is the rough render - 20 model steps per keyframe, "
    "as one KSampler run. full (the paper's): pass 1 runs to the end for it - 29 model steps at 20 steps. The "
    "rough render reaches the result only around those doubly occluded regions and through the VAE, so the two "
    "differ very slightly; the rest of the method is the same.")

SAMPLER_TOOLTIP = (
    "ddim (default) and euler run the pack's deterministic DDIM loop (eta 0 = Euler in sigma-space): every "
    "constraint works, and pass 2 resumes from pass 1. Any other ComfyUI sampler works for the anchor and for "
    "cross-frame attention, AdaIN and shape-aware fusion (they hook the model), but not for pixel-aware fusion "
    "(it edits the latent between steps): switch pixel_fusion off to use one.")


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
        "start > end switches a constraint off. Model: SD1.5 family. Apply ControlNet to positive and "
        "negative upstream with this frame's hint.")
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
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "An SD1.5-family model (other layouts are refused)."}),
                "positive": ("CONDITIONING", {"tooltip": "Positive prompt, with this frame's ControlNet applied."}),
                "negative": ("CONDITIONING", {"tooltip": "Negative prompt, with the same ControlNet applied."}),
                "vae": ("VAE", {"tooltip": "VAE: encodes the frame (SDEdit start), decodes the passes, E* encodes "
                                           "the fused reference."}),
                "frames": ("IMAGE", {"tooltip": "The frame to render [1,H,W,3], or the video's frames (the one "
                                                "at frame_index is used). Sides: multiples of 8."}),
                "frame_index": ("INT", {"default": 0, "min": 0, "max": 1_000_000,
                                        "tooltip": "Index of this frame in the video (the FLOW's numbering); also "
                                                   "picks the frame when frames holds the whole video."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF,
                                 "tooltip": "Noise seed; keep it the same for every keyframe (same noise = "
                                            "more consistent keyframes)."}),
                "steps": ("INT", {"default": 20, "min": 1, "max": 1000,
                                  "tooltip": "Sampled steps (the reference uses 20). Keep the anchor's value."}),
                "cfg": ("FLOAT", {"default": 7.5, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                                  "tooltip": "Classifier-free guidance scale (reference 7.5)."}),
                "sampler_name": (sampler_names(), {"tooltip": SAMPLER_TOOLTIP}),
                "scheduler": (scheduler_names(), {"tooltip": "Sigma schedule; ddim_uniform matches the reference's "
                                                             "uniform DDIM timesteps."}),
                "denoise": ("FLOAT", {"default": 0.75, "min": 0.01, "max": 1.0, "step": 0.01,
                                      "tooltip": "Denoise strength (SDEdit start): 1 = re-render from noise, "
                                                 "lower keeps more of the frame. Reference default 0.75."}),
                "cross_start": _fraction(0.0, "Cross-frame attention window start (fraction of the sampled "
                                              "steps, inclusive)."),
                "cross_end": _fraction(1.0, "Cross-frame attention window end (inclusive). start > end = off."),
                "warp_start": _fraction(0.0, "Shape-aware fusion window start (inclusive)."),
                "warp_end": _fraction(0.1, "Shape-aware fusion window end (inclusive; 0.1 = steps 0-2 of 20). "
                                           "start > end = off."),
                "mask_start": _fraction(0.5, "Pixel-aware fusion window start (strict: steps after it)."),
                "mask_end": _fraction(0.8, "Pixel-aware fusion window end (strict; 0.5-0.8 = steps 11-15 of 20). "
                                           "Pass 2 resumes from pass 1 at the window's first step."),
                "ada_start": _fraction(0.8, "AdaIN window start (inclusive; 0.8 = steps 16-19 of 20)."),
                "ada_end": _fraction(1.0, "AdaIN window end (inclusive). start > end = off."),
                "mask_strength": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.05,
                                            "tooltip": "Pixel-aware fusion weight where the fused reference is "
                                                       "valid (reference 0.5)."}),
                "inner_strength": ("FLOAT", {"default": 0.9, "min": 0.5, "max": 1.0, "step": 0.01,
                                             "tooltip": "Detail level of pixel-aware fusion: how much of the "
                                                        "model's own noise direction is kept inside valid "
                                                        "regions (reference 0.9)."}),
                "smooth_boundary": ("BOOLEAN", {"default": True,
                                                "tooltip": "Soften the fusion at occlusion-mask boundaries "
                                                           "(reference default on)."}),
                "loose_cfattn": ("BOOLEAN", {"default": False,
                                             "tooltip": "Cross-frame attention only in the 640/320-channel decoder "
                                                        "layers (output blocks 6-11): closer to the input video, "
                                                        "less ghosting. Keep the anchor's setting."}),
                "style_update_freq": ("INT", {"default": 1, "min": 1, "max": 1000,
                                              "tooltip": "Update the 'previous' attention reference every N "
                                                         "keyframes (counts keyframes, not frames). Larger = "
                                                         "less error accumulation, staler style."}),
                "pixel_fusion": ("BOOLEAN", {"default": True,
                                             "tooltip": "Pixel-aware fusion (needs a second, partial pass and a "
                                                        "FLOW). Off = one pass per keyframe."}),
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
                "rough_render": (list(ROUGH_RENDERS), {"default": "early", "tooltip": ROUGH_RENDER_TOOLTIP}),
            },
        }

    def sample(self, model, positive, negative, vae, frames, frame_index, seed, steps, cfg, sampler_name, scheduler,
               denoise, reference=None, flow=None, latent=None, anchor_index=-1, previous_index=-1, resume_pass2=True,
               **constraints):
        """``constraints``: the window, strength and switch widgets (``cross_start`` … ``rough_render``)."""
        frame = _pick(check_image_batch(frames, "frames"), frame_index, "frames")
        check_latent_size(frame.shape[1], frame.shape[2], "frames")
        settings = constraint_settings(constraints)
        adapter = ComfyModelAdapter(model, positive, negative, vae, seed, steps, cfg, sampler_name, scheduler, denoise)
        source = None
        if latent is not None:
            if "noise_mask" in latent:
                raise input_error("latent", "a LATENT without noise_mask", "a LATENT with a noise mask",
                                  "remove Set Latent Noise Mask: the constraints already decide what is kept")
            source = adapter.to_model_space(_pick(latent["samples"], frame_index, "latent"))
        total = len(adapter.sigmas) - 1
        split = settings.mask_period.first(total) if reference is not None and settings.pixel_fusion else None
        progress = Progress(planned_steps(total, split, resume_pass2, settings.rough_render))
        result = render_keyframe(adapter, frame, frame_index, reference, flow, settings, latent=source,
                                 anchor_index=anchor_index, previous_index=previous_index, resume=resume_pass2,
                                 progress=progress)
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
