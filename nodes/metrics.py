"""Node: Rerender Temporal Consistency (a stylized video's flicker and drift, as numbers and a chart)."""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import torch

from ..common.errors import input_error
from ..common.scene_cuts import DEFAULT_THRESHOLD
from ..metrics.clip import ClipMetrics
from ..metrics.evaluate import evaluate_video
from ..metrics.plot import plot_report
from . import _comfy


def _image_encoder(clip_vision):
    """ComfyUI's CLIP_VISION (``comfy.clip_vision.ClipVisionModel``) as ``frames [B,H,W,3] → embeddings [B,D]``."""
    if not callable(getattr(clip_vision, "encode_image", None)):
        raise input_error("clip_vision", "a CLIP_VISION model (Load CLIP Vision, e.g. a CLIP ViT-L/14 file in "
                          "models/clip_vision)", type(clip_vision).__name__,
                          "connect Load CLIP Vision's output (not a CLIP text model)")

    def encode(frames: torch.Tensor) -> torch.Tensor:
        return clip_vision.encode_image(frames)["image_embeds"]

    return encode


def _text_projection(clip, width: int) -> torch.Tensor:
    """The text tower's projection ``[D, width]`` (``CLIPTextModel.text_projection``) for pooled outputs ``width`` wide.

    ComfyUI returns SD1.5's pooled text output *unprojected*; the joint image–text space needs the
    projection. SD1.5 checkpoints do not contain it (ComfyUI then leaves the weight empty, near zero).
    """
    for module in clip.cond_stage_model.modules():
        projection = getattr(module, "text_projection", None)
        weight = getattr(projection, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.ndim == 2 and weight.shape[1] == width:
            weight = weight.detach().to("cpu", torch.float32)
            if not bool(torch.isfinite(weight).all()) or float(weight.norm()) < 1e-3:
                raise input_error("clip", "a CLIP text model with its text projection (Load CLIP with a file that "
                                  "holds it, e.g. OpenAI's CLIP ViT-L/14 model.safetensors or clip_l.safetensors)",
                                  "a text model whose projection was not in its file (SD1.5 checkpoints leave it out)",
                                  ["load the text encoder with Load CLIP (type stable_diffusion) from a full CLIP file",
                                   "disconnect clip to measure Tem-Con only"])
            return weight
    raise input_error("clip", "a CLIP text model (Load CLIP or a checkpoint's CLIP)", type(clip).__name__,
                      "connect a CLIP output, or disconnect clip to measure Tem-Con only")


def _text_encoder(clip):
    """ComfyUI's CLIP as ``prompts → projected text embeddings [T,D]`` (pooled output × text projection)."""
    if not all(hasattr(clip, name) for name in ("tokenize", "encode_from_tokens", "cond_stage_model")):
        raise input_error("clip", "a CLIP text model (Load CLIP)", type(clip).__name__,
                          "connect Load CLIP's output, or disconnect clip to measure Tem-Con only")

    def encode(prompts) -> torch.Tensor:
        rows = []
        for prompt in prompts:
            _, pooled = clip.encode_from_tokens(clip.tokenize(prompt), return_pooled="unprojected")
            if pooled is None:
                raise input_error("clip", "a CLIP text model with a pooled output", type(clip).__name__,
                                  "connect a CLIP-L / CLIP-G / OpenCLIP text encoder")
            pooled = pooled.detach().to("cpu", torch.float32).reshape(1, -1)
            rows.append(pooled @ _text_projection(clip, pooled.shape[1]).T)
        return torch.cat(rows)

    return encode


class RerenderTemporalConsistency:
    """Measure a stylized video: warp error, flicker, PSNR/SSIM vs a reference, CLIP Tem-Con / Fram-Acc."""

    DESCRIPTION = (
        "Measures how steady a stylized video is, so that K, denoise or ControlNet strength can be tuned by "
        "number instead of by eye. Warp error (Lai et al. 2018): how much each output frame differs from the "
        "next one warped back along the SOURCE video's optical flow, on pixels visible in both (lower = "
        "steadier; motion is not penalised, flicker and popping are). Flicker (VBench): 1 − mean frame-to-frame "
        "change (1 = none). With a reference video: PSNR and SSIM per frame. With CLIP models: Tem-Con (CLIP "
        "similarity of consecutive frames) and Fram-Acc (share of frames closer to the target prompt than to "
        "the source prompt), as in Rerender §5. Pairs across a shot cut are left out. Outputs a summary text "
        "and a chart over time with the keyframes marked; the JSON is in the node's UI output.")
    CATEGORY = "Rerender/metrics"
    FUNCTION = "measure"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "IMAGE")
    RETURN_NAMES = ("summary", "plot")
    OUTPUT_TOOLTIPS = ("The means as text, one metric per line.",
                       "Warp error and flicker (and PSNR) over the frames; keyframes in blue, cuts in grey.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "frames": ("IMAGE", {"tooltip": "The stylized video to measure, IMAGE [N,H,W,3]."}),
                "source_frames": ("IMAGE", {"tooltip": "The video it was made from, same size and length: its "
                                                       "motion defines what counts as consistent."}),
                "cut_threshold": ("FLOAT", {"default": DEFAULT_THRESHOLD, "min": 0.0, "max": 255.0, "step": 0.5,
                                            "tooltip": "Shot-cut threshold (mean grey-level change of the "
                                                       "source); frame pairs across a cut are left out. 0 = "
                                                       "measure every pair."}),
            },
            "optional": {
                "flow": ("FLOW", {"tooltip": "Optical flow of source_frames from Rerender Estimate Flow (pair mode "
                                             "consecutive); computed here (DIS) when not connected."}),
                "reference_frames": ("IMAGE", {"tooltip": "A video to compare with frame by frame (PSNR, SSIM), "
                                                          "same size and length."}),
                "keyframes": ("KEYFRAMES", {"tooltip": "Marked in the chart; PSNR/SSIM are also given without "
                                                       "them (*_non_key)."}),
                "clip_vision": ("CLIP_VISION", {"tooltip": "Load CLIP Vision (e.g. CLIP ViT-L/14): enables Tem-Con."}),
                "clip": ("CLIP", {"tooltip": "Load CLIP with the text encoder of the same CLIP family as clip_vision "
                                             "(ViT-L/14 ↔ CLIP-L with its text projection): enables Fram-Acc."}),
                "target_prompt": ("STRING", {"default": "", "multiline": True,
                                             "tooltip": "Fram-Acc: what the stylized video should show."}),
                "source_prompt": ("STRING", {"default": "", "multiline": True,
                                             "tooltip": "Fram-Acc: what the source video shows."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def measure(self, frames, source_frames, cut_threshold, flow=None, reference_frames=None, keyframes=None,
                clip_vision=None, clip=None, target_prompt="", source_prompt="", unique_id=None):
        clip_metrics = None
        if clip is not None and clip_vision is None:
            raise input_error("clip_vision", "a CLIP_VISION model next to the CLIP text model", "none",
                              "connect Load CLIP Vision, or disconnect clip")
        if clip_vision is not None:
            clip_metrics = ClipMetrics(_image_encoder(clip_vision), _text_encoder(clip) if clip is not None else None,
                                       target_prompt, source_prompt)
        indices = ()
        if keyframes is not None:
            if not hasattr(keyframes, "indices"):
                raise input_error("keyframes", "a KEYFRAMES object (Rerender Keyframe Selection)",
                                  type(keyframes).__name__)
            indices = keyframes.indices
        count = frames.shape[0] if isinstance(frames, torch.Tensor) else 0
        report = evaluate_video(frames, source_frames, reference_frames, flow, clip_metrics, indices,
                                float(cut_threshold), progress=_comfy.Progress(count, unique_id))
        summary = report.table()
        chart = plot_report(report)
        ui = {"text": [summary], "rerender_metrics": [json.dumps(report.to_json())]}
        preview = _save_preview(chart)
        if preview is not None:
            ui["images"] = [preview]
        return {"ui": ui, "result": (summary, torch.from_numpy(chart.astype(np.float32) / 255.0)[None])}


def _save_preview(chart: np.ndarray) -> dict | None:
    """Write the chart to ComfyUI's temp folder for the UI; ``None`` outside ComfyUI."""
    if _comfy.folder_paths_module() is None:
        return None
    from PIL import Image

    folder = _comfy.temp_directory()
    folder.mkdir(parents=True, exist_ok=True)
    handle, path = tempfile.mkstemp(prefix="rerender_metrics_", suffix=".png", dir=folder)
    os.close(handle)
    Image.fromarray(chart).save(path)
    return {"filename": os.path.basename(path), "subfolder": "", "type": "temp"}


NODE_CLASS_MAPPINGS = {"RerenderTemporalConsistency": RerenderTemporalConsistency}
NODE_DISPLAY_NAME_MAPPINGS = {"RerenderTemporalConsistency": "Rerender Temporal Consistency"}
