"""Rerender Keyframe Selection: which frames the diffusion model renders (the KEYFRAMES object)."""

from __future__ import annotations

from ..common import keyframes as keyframe_rules
from ..common.checks import check_image_batch
from ..common.errors import input_error
from ..common.keyframes import KEYFRAME_INDICES, KEYFRAME_INTERVAL
from ..common.scene_cuts import DEFAULT_THRESHOLD, detect_scene_cuts
from ..metrics.keyframe_cost import adaptive_keyframes
from ..segments.keyframes import load_keyframes, select_keyframes
from ..videoio.frame_index import index_for_info
from ._comfy import Progress
from ._widgets import widget


class RerenderKeyframeSelection:
    DESCRIPTION = (
        "Chooses the keyframes that the diffusion model renders; every other frame is filled by "
        "EbSynth propagation from its neighbouring keyframes (Rerender §4). 'uniform' takes every "
        "K-th frame from frame 0 (the paper; K = 5–20), 'explicit' takes your list, 'scene_cuts' is "
        "uniform within each shot and always starts a new keyframe at a cut, so no frame is "
        "propagated across two shots. 'adaptive' spends the same number of keyframes as 'uniform' (or "
        "max_keyframes) where propagation is predicted to fail — the source frame carried along the optical "
        "flow differs most from the frame it should become — with a keyframe on each side of every cut.")
    CATEGORY = "Rerender/keyframes"
    FUNCTION = "select"
    RETURN_TYPES = ("KEYFRAMES", "STRING", "IMAGE")
    RETURN_NAMES = ("keyframes", "indices", "keyframe_images")
    OUTPUT_TOOLTIPS = (
        "The keyframe selection, for Estimate Flow, Keyframe Renderer and EbSynth Propagate.",
        "The keyframe indices as text, e.g. '0, 10, 20'.",
        "The selected frames, IMAGE [M,H,W,3], in keyframe order.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "mode": (["uniform", "explicit", "scene_cuts", "adaptive"], {
                "default": "uniform",
                "tooltip": "uniform: every K-th frame; explicit: the list below; scene_cuts: every "
                           "K-th frame within each shot, plus the first frame of every shot; adaptive: as many "
                           "keyframes as uniform (or max_keyframes), placed where the content changes."}),
            "keyframe_interval": widget(KEYFRAME_INTERVAL, tooltip=(
                "K, frames between keyframes (uniform and scene_cuts). Smaller K follows fast motion better but "
                "renders more keyframes.")),
            "keyframe_indices": widget(KEYFRAME_INDICES, multiline=False, tooltip=(
                "Explicit mode: comma-separated frame numbers, 0-based, e.g. '0, 12, 30'.")),
            "cut_threshold": ("FLOAT", {
                "default": DEFAULT_THRESHOLD, "min": 1.0, "max": 255.0, "step": 0.5,
                "tooltip": "scene_cuts and adaptive modes: mean grey-level difference (0–255) between "
                           "consecutive frames above which a cut is declared. Lower finds more cuts."}),
        }, "optional": {
            "frames": ("IMAGE", {"tooltip": "The video frames, IMAGE [N,H,W,3]. Or connect video_info instead."}),
            "video_info": ("VIDEO_INFO", {"tooltip":
                           "Instead of frames, for long videos: the video the VIDEO_INFO describes (Rerender Video "
                           "Info (Path)) is read from its file, one frame at a time (uniform, explicit and "
                           "scene_cuts modes); keyframe_images holds just the keyframes. Used when frames is not "
                           "connected."}),
            "max_keyframes": ("INT", {
                "default": 0, "min": 0, "max": 100000,
                "tooltip": "adaptive mode: the keyframe budget; 0 = as many as uniform with keyframe_interval "
                           "(ceil(frames / K)), for a comparison at equal cost."}),
            "min_spacing": ("INT", {
                "default": 2, "min": 1, "max": 1000,
                "tooltip": "adaptive mode: fewest frames between two keyframes (the two keyframes at a cut "
                           "excepted). Keyframes rendered close together can flicker against each other."}),
            "max_spacing": ("INT", {
                "default": 0, "min": 0, "max": 1000,
                "tooltip": "adaptive mode: most frames between two keyframes; 0 = three times the average "
                           "interval."}),
        }}

    def select(self, frames=None, mode="uniform", keyframe_interval=10, keyframe_indices="",
               cut_threshold=DEFAULT_THRESHOLD, max_keyframes=0, min_spacing=2, max_spacing=0, video_info=None):
        if frames is None:
            if video_info is None:
                raise input_error("frames", "the video frames or a video_info", "neither connected",
                                  ["connect Rerender Load Video's images to frames",
                                   "connect Rerender Video Info (Path) to video_info (long videos)"])
            index = index_for_info(video_info, "video_info")
            selection = select_keyframes(index, mode, keyframe_interval, keyframe_indices, cut_threshold,
                                         Progress(index.frame_count))
            text = ", ".join(str(index) for index in selection.indices)
            return (selection, text, load_keyframes(index, selection))
        frames = check_image_batch(frames, "frames")
        count = frames.shape[0]
        if mode == "adaptive":
            budget = max_keyframes or len(keyframe_rules.uniform(count, keyframe_interval).indices)
            bars: dict[int, Progress] = {}

            def progress(done: int, total: int) -> None:
                bars.setdefault(total, Progress(total)).update(done)

            selection = adaptive_keyframes(frames, budget, min_spacing, max_spacing, cut_threshold, progress)
        elif mode == "explicit":
            selection = keyframe_rules.parse_list(keyframe_indices, count)
        elif mode == "scene_cuts":
            cuts = detect_scene_cuts(frames, cut_threshold)
            selection = keyframe_rules.scene_aware(count, keyframe_interval, cuts)
        else:
            selection = keyframe_rules.uniform(count, keyframe_interval)
        text = ", ".join(str(index) for index in selection.indices)
        return (selection, text, frames[list(selection.indices)])


NODE_CLASS_MAPPINGS = {"RerenderKeyframeSelection": RerenderKeyframeSelection}
NODE_DISPLAY_NAME_MAPPINGS = {"RerenderKeyframeSelection": "Rerender Keyframe Selection"}


def keyframe_choice_widgets(purpose: str = "") -> dict:
    """The ``keyframe_interval`` / ``keyframe_indices`` widget pair of nodes that take a keyframe choice.

    Args:
        purpose: a sentence added to the interval's tooltip (what the keyframes are for on this node).

    Returns:
        ``{"keyframe_interval": ..., "keyframe_indices": ...}`` for a node's ``INPUT_TYPES``; the node resolves
        them with :func:`common.keyframes.resolve` (an optional KEYFRAMES input overrides both).
    """
    purpose = f" {purpose}" if purpose else ""
    return {"keyframe_interval": widget(KEYFRAME_INTERVAL, tooltip=KEYFRAME_INTERVAL.tooltip + purpose),
            "keyframe_indices": widget(KEYFRAME_INDICES)}
