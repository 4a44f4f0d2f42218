"""Nodes: Rerender EbSynth Propagate (keyframes → every frame, both directions), Rerender Load Keyframes."""

from __future__ import annotations

from pathlib import Path

from ..common.checks import check_image_batch
from ..common.keyframes import Keyframes, from_indices, resolve
from ..propagation.backends.select import CHOICES as BACKEND_CHOICES
from ..propagation.guides import GuideWeights
from ..propagation.keyframe_files import load_keyframe_folder
from ..propagation.params import SynthesisParams
from ..propagation.sequence import DIRECTION_MODES, plan_chains, propagate_video
from ._comfy import Progress, input_directory
from .keyframes import keyframe_choice_widgets



class RerenderEbSynthPropagate:
    """Propagate stylized keyframes to every frame with guided patch synthesis (EbSynth)."""

    DESCRIPTION = (
        "Carries each stylized keyframe forward to the frames up to the next keyframe and backward to the "
        "frames after the previous one (Rerender-A-Video §4.2), by guided patch synthesis (EbSynth) with "
        "colour, edge, positional and temporal guides that follow the optical flow. Outputs every frame's "
        "forward and backward candidates with their per-pixel errors for Rerender Temporal Blend, and a "
        "preview. Finished keyframe chains are cached on disk, so a re-run or a resumed run reuses them.")
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
                "direction": (list(DIRECTION_MODES), {"default": "both", "tooltip":
                                                      "Between keyframes: propagate both ways (needed by the "
                                                      "temporal blend), or only forward / backward. Frames before "
                                                      "the first keyframe are always reached backward, after the "
                                                      "last forward."}),
                "patch_size": ("INT", {"default": 5, "min": 3, "max": 15, "step": 2, "tooltip":
                                       "Patch side in pixels (odd). EbSynth/Rerender: 5."}),
                "search_vote_iters": ("INT", {"default": 12, "min": 1, "max": 64, "tooltip":
                                              "Search–vote iterations per pyramid level (Rerender 12, EbSynth 6). "
                                              "Time grows linearly."}),
                "patchmatch_iters": ("INT", {"default": 6, "min": 0, "max": 64, "tooltip":
                                             "PatchMatch iterations per search–vote iteration (Rerender 6, "
                                             "EbSynth 4)."}),
                "uniformity": ("FLOAT", {"default": 3500.0, "min": 0.0, "max": 100000.0, "step": 50.0, "tooltip":
                                         "Weight of the uniformity term that spreads the use of keyframe "
                                         "patches (EbSynth 3500; 0 off)."}),
                "pyramid_levels": ("INT", {"default": 0, "min": 0, "max": 16, "tooltip":
                                           "Coarse-to-fine levels; 0 = automatic (as many as the frame size "
                                           "allows, EbSynth's rule)."}),
                "extra_pass_3x3": ("BOOLEAN", {"default": False, "tooltip":
                                               "Refine once more with 3×3 patches at the finest level (sharper, "
                                               "slower; off in Rerender)."}),
                "patchmatch_seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1, "tooltip":
                                            "Seed of PatchMatch's random search; results are deterministic for "
                                            "a given seed."}),
                "colour_weight": ("FLOAT", {"default": 6.0, "min": 0.0, "max": 100.0, "step": 0.1, "tooltip":
                                            "Weight of the colour guide: original keyframe → original frame "
                                            "(Rerender 6)."}),
                "edge_weight": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 100.0, "step": 0.1, "tooltip":
                                          "Weight of the edge guide: 3×3 Laplacian of both frames (Rerender "
                                          "0.5)."}),
                "positional_weight": ("FLOAT", {"default": 2.0, "min": 0.0, "max": 100.0, "step": 0.1, "tooltip":
                                                "Weight of the positional guide: keyframe coordinates carried "
                                                "by the flow (Rerender 2)."}),
                "temporal_weight": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 100.0, "step": 0.1, "tooltip":
                                              "Weight of the temporal guide: the previous propagated frame "
                                              "warped by the flow (Rerender 0.5)."}),
                "temporal_nnf_init": ("BOOLEAN", {"default": True, "tooltip":
                                                  "Start each frame's patch correspondences from the previous "
                                                  "frame's, carried by the flow, and skip the coarse pyramid "
                                                  "levels (faster at equal quality)."}),
                "backend": (list(BACKEND_CHOICES), {"default": "auto", "tooltip":
                                             "Patch-matching backend: auto = CUDA (CuPy) when available, else "
                                             "CPU (numba)."}),
            },
            "optional": {
                "keyframes": ("KEYFRAMES", {"tooltip": "Keyframe indices (e.g. from Rerender Load Keyframes); "
                                                       "overrides keyframe_interval and keyframe_indices."}),
            },
        }

    def propagate(self, frames, stylized_keyframes, flow, keyframe_interval, keyframe_indices, direction,
                  patch_size, search_vote_iters, patchmatch_iters, uniformity, pyramid_levels, extra_pass_3x3,
                  patchmatch_seed, colour_weight, edge_weight, positional_weight, temporal_weight,
                  temporal_nnf_init, backend, keyframes: Keyframes | None = None):
        frames = check_image_batch(frames, "frames")
        stylized_keyframes = check_image_batch(stylized_keyframes, "stylized_keyframes")
        selected = resolve(frames.shape[0], keyframe_interval, keyframe_indices, keyframes)
        params = SynthesisParams(patch_size=patch_size, pyramid_levels=pyramid_levels,
                                 search_vote_iters=search_vote_iters, patchmatch_iters=patchmatch_iters,
                                 uniformity=float(uniformity), extra_pass_3x3=bool(extra_pass_3x3),
                                 seed=patchmatch_seed)
        weights = GuideWeights(colour=colour_weight, edge=edge_weight, positional=positional_weight,
                               temporal=temporal_weight)
        frame_total = sum(len(targets) for _, _, targets in plan_chains(selected, direction))
        propagation = propagate_video(frames, stylized_keyframes, selected, flow, params, weights, direction,
                                      bool(temporal_nnf_init), backend, progress=Progress(frame_total))
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
                "keyframe_interval": ("INT", {"default": 0, "min": 0, "max": 10000, "tooltip":
                                              "0 = frame indices from the file names; K > 0 = the sorted files "
                                              "are frames 0, K, 2K, …"}),
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
