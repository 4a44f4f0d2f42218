"""Nodes: Rerender EbSynth Propagate (keyframes → every frame, both directions), Rerender Load Keyframes."""

from __future__ import annotations

from pathlib import Path

from ..common.checks import check_image_batch
from ..common.keyframes import Keyframes, from_indices, resolve
from ..common.masks import FEATHER, MASK_GROW
from ..common.settings import field_values
from ..propagation.guides import GuideWeights
from ..propagation.keyframe_files import load_keyframe_folder
from ..propagation.params import SynthesisParams
from ..propagation.sequence import plan_chains, propagate_video
from ..propagation.settings import KEYFRAME_FILE_INTERVAL, PROPAGATE
from ._comfy import Progress, input_directory
from ._widgets import mask_inputs, widget, widgets
from .keyframes import keyframe_choice_widgets


class RerenderEbSynthPropagate:
    """Propagate stylized keyframes to every frame with guided patch synthesis (EbSynth)."""

    DESCRIPTION = (
        "Carries each stylized keyframe forward to the frames up to the next keyframe and backward to the "
        "frames after the previous one (Rerender-A-Video §4.2), by guided patch synthesis (EbSynth) with "
        "colour, edge, positional and temporal guides that follow the optical flow. Outputs every frame's "
        "forward and backward candidates with their per-pixel errors for Rerender Temporal Blend, and a "
        "preview. Finished keyframe chains are cached on disk, so a re-run or a resumed run reuses them. With a "
        "MASK only the region is propagated (keyframe patches from outside it are never used inside) and "
        "Temporal Blend composites it over the source frames.")
    CATEGORY = "Rerender/propagation"
    FUNCTION = "propagate"
    RETURN_TYPES = ("PROPAGATION", "IMAGE")
    RETURN_NAMES = ("propagation", "preview")
    OUTPUT_TOOLTIPS = (
        "Forward and backward stylized candidates with their error maps for every frame; connect to Rerender "
        "Temporal Blend.",
        "Quick look: keyframes as given, other frames their forward candidate (backward before the first "
        "keyframe).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "frames": ("IMAGE", {"tooltip": "The original video frames [N,H,W,3] (Rerender Load Video)."}),
                "stylized_keyframes": ("IMAGE", {"tooltip": "One stylized image per keyframe, in frame order, "
                                                            "of the frames' size."}),
                "flow": ("FLOW", {"tooltip": "Optical flow of these frames with consecutive pairs (Rerender "
                                             "Estimate Flow, pair_mode consecutive)."}),
                **keyframe_choice_widgets("Must match the keyframes the stylized images are of."),
                **widgets(PROPAGATE),
            },
            "optional": {
                "keyframes": ("KEYFRAMES", {"tooltip": "Keyframe indices (e.g. from Rerender Load Keyframes); "
                                                       "overrides keyframe_interval and keyframe_indices."}),
                **mask_inputs(),
            },
        }

    def propagate(self, frames, stylized_keyframes, flow, keyframe_interval, keyframe_indices, direction,
                  temporal_nnf_init, backend, keyframes: Keyframes | None = None, mask=None,
                  mask_grow: int = MASK_GROW.default, feather: int = FEATHER.default, **settings):
        """``settings``: the synthesis and guide-weight widgets (``patch_size`` … ``temporal_weight``)."""
        frames = check_image_batch(frames, "frames")
        stylized_keyframes = check_image_batch(stylized_keyframes, "stylized_keyframes")
        selected = resolve(frames.shape[0], keyframe_interval, keyframe_indices, keyframes)
        params = SynthesisParams(**field_values(SynthesisParams, settings))
        weights = GuideWeights(**field_values(GuideWeights, settings))
        frame_total = sum(len(targets) for _, _, targets in plan_chains(selected, direction))
        propagation = propagate_video(frames, stylized_keyframes, selected, flow, params, weights, direction,
                                      bool(temporal_nnf_init), backend, progress=Progress(frame_total), mask=mask,
                                      mask_grow=mask_grow, feather=feather)
        return (propagation, propagation.preview())


class RerenderLoadKeyframes:
    """Load a folder of stylized keyframes whose file names carry the frame index."""

    DESCRIPTION = (
        "Loads stylized keyframes from a folder. Each file's frame index is the last number in its name "
        "(0000.png, key_0012.jpg → frames 0 and 12); with keyframe_interval K > 0 the sorted files are frames "
        "0, K, 2K, … instead. Keyframes past the loaded frames are skipped. Outputs the images in frame order "
        "and the KEYFRAMES for Rerender EbSynth Propagate.")
    CATEGORY = "Rerender/propagation"
    FUNCTION = "load"
    RETURN_TYPES = ("IMAGE", "KEYFRAMES")
    RETURN_NAMES = ("stylized_keyframes", "keyframes")
    OUTPUT_TOOLTIPS = ("The keyframe images [M,H,W,3] in frame order.",
                       "Their frame indices for the given frames (connect to Rerender EbSynth Propagate).")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "frames": ("IMAGE", {"tooltip": "The video frames the keyframes belong to (gives the frame "
                                                "count for the index check)."}),
                "folder": ("STRING", {"default": "keyframes", "tooltip":
                                      "Folder of keyframe images: absolute, or relative to ComfyUI's input "
                                      "folder."}),
                "keyframe_interval": widget(KEYFRAME_FILE_INTERVAL),
            },
        }

    @classmethod
    def IS_CHANGED(cls, frames, folder, keyframe_interval):
        path = _folder_path(folder)
        if not path.is_dir():
            return ""
        return ";".join(f"{p.name}:{p.stat().st_mtime_ns}:{p.stat().st_size}" for p in sorted(path.iterdir()))

    def load(self, frames, folder, keyframe_interval):
        frames = check_image_batch(frames, "frames")
        images, indices = load_keyframe_folder(_folder_path(folder), keyframe_interval, frames.shape[0])
        mode = "uniform" if keyframe_interval > 0 else "explicit"
        return (images, from_indices(indices, frames.shape[0], mode))


def _folder_path(folder: str) -> Path:
    path = Path(folder.strip()).expanduser()
    return path if path.is_absolute() else input_directory() / path


NODE_CLASS_MAPPINGS = {
    "RerenderEbSynthPropagate": RerenderEbSynthPropagate,
    "RerenderLoadKeyframes": RerenderLoadKeyframes,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "RerenderEbSynthPropagate": "Rerender EbSynth Propagate",
    "RerenderLoadKeyframes": "Rerender Load Keyframes",
}
