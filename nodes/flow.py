"""Node: Rerender Estimate Flow (frames → FLOW, flow colour preview, occlusion masks)."""

from __future__ import annotations

import numpy as np
import torch

from ..common.checks import check_image_batch
from ..common.errors import input_error
from ..common.keyframes import Keyframes, resolve_batch
from ..common.memory import check_allocation
from ..flow.dis import DisFlow
from ..flow.estimate import estimate_flow
from ..flow.pairs import keyframe_to_keyframe_pairs, pairs_for_mode
from ..flow.raft import RAFT_MODELS, TORCHVISION_FILES, RaftFlow, find_weights, list_weight_files
from ..flow.settings import BACKEND, DIS_PRESET, OCCLUSION_ALPHA, OCCLUSION_BETA, PAIR_MODE
from ..flow.visualize import flow_preview
from ._comfy import Progress, model_folders, torch_device
from ._widgets import widget
from .keyframes import keyframe_choice_widgets

FLOW_MODEL_FOLDER = "optical_flow"
BACKENDS = BACKEND.choices
AUTO_WEIGHTS = "auto"


def raft_model_choices() -> list[str]:
    """Combo entries: ``auto`` (always first, so saved workflows load on any machine) and the weight
    files found in the optical_flow folders."""
    return [AUTO_WEIGHTS, *list_weight_files(model_folders(FLOW_MODEL_FOLDER))]


def make_backend(backend: str, dis_preset: str, raft_model: str):
    """The flow backend the widgets ask for; RAFT weights are looked up in ``models/optical_flow``.

    Raises:
        MissingWeightsError: a RAFT backend without a weight file (names the folders and file names).
        InputError: an unknown backend, or a file of the other RAFT architecture.
    """
    if backend == "dis":
        return DisFlow(dis_preset)
    if backend not in RAFT_MODELS:
        raise input_error("backend", f"one of {', '.join(BACKENDS)}", repr(backend), "use dis")
    filename = None if raft_model == AUTO_WEIGHTS else raft_model
    weights = find_weights(backend, model_folders(FLOW_MODEL_FOLDER), filename)
    return RaftFlow(weights, model=backend, device=torch_device())


class RerenderEstimateFlow:
    """Dense optical flow in both directions and occlusion masks for the frame pairs later stages need."""

    DESCRIPTION = (
        "Estimates dense optical flow between frame pairs, in both directions, and occlusion masks from the "
        "forward–backward consistency check (Sundaram et al. 2010, squared form, plus targets outside the frame). "
        "Rerender-A-Video warps with it in the keyframe stage (anchor and previous keyframe → keyframe, §3) and "
        "in propagation (frame to frame, §4). Backends: OpenCV DIS on the CPU (no weights, default) or "
        "torchvision RAFT with weights you place in models/optical_flow (never downloaded). Results are cached "
        "on disk by frame content and settings, so a re-run reads them back.")
    CATEGORY = "Rerender/flow"
    FUNCTION = "estimate"
    RETURN_TYPES = ("FLOW", "IMAGE", "MASK")
    RETURN_NAMES = ("flow", "flow_preview", "occlusion_mask")
    OUTPUT_TOOLTIPS = (
        "Flows and occlusion masks of every pair (FLOW); connect to the keyframe and propagation nodes.",
        "One image per pair: the motion from frame i to frame j in the flow colour wheel (hue = direction, "
        "saturation = length; white = still), drawn on frame j.",
        "One mask per pair: 1 where frame j's pixel has no reliable match in frame i (occluded, outside the "
        "frame or inconsistent flow), the backward-direction occlusion used when warping i into j.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "frames": ("IMAGE", {"tooltip": "The video frames [N,H,W,3] (Rerender Load Video); at least 2 "
                                                "frames of at least 16×16 pixels. Or just the keyframes (Load "
                                                "Video with keyframes connected) with pair_mode keyframes and the "
                                                "same KEYFRAMES connected: only the pairs the Keyframe Renderer "
                                                "reads are computed, indices stay the video's."}),
                "backend": widget(BACKEND),
                "dis_preset": widget(DIS_PRESET),
                "raft_model": (raft_model_choices(), {"tooltip":
                                                      "RAFT weight file from models/optical_flow; auto picks the "
                                                      "file whose name contains the backend name (torchvision's "
                                                      "name first). Download the torchvision weights by hand, "
                                                      "e.g. https://download.pytorch.org/models/"
                                                      f"{TORCHVISION_FILES['raft_small']}. Used by the raft "
                                                      "backends."}),
                "pair_mode": widget(PAIR_MODE),
                **keyframe_choice_widgets("Used by the keyframes pair modes."),
                "occlusion_alpha": widget(OCCLUSION_ALPHA),
                "occlusion_beta": widget(OCCLUSION_BETA),
            },
            "optional": {
                "keyframes": ("KEYFRAMES", {"tooltip": "Keyframe indices (e.g. from a keyframe selection node); "
                                                       "overrides keyframe_interval and keyframe_indices."}),
            },
        }

    def estimate(self, frames, backend, dis_preset, raft_model, pair_mode, keyframe_interval, keyframe_indices,
                 occlusion_alpha, occlusion_beta, keyframes: Keyframes | None = None):
        frames = check_image_batch(frames, "frames")
        frame_count, height, width = frames.shape[:3]
        selected, rows = None, None
        if "keyframes" in pair_mode and frame_count > 1:
            selected, rows = resolve_batch(frame_count, keyframe_interval, keyframe_indices, keyframes)
        if selected is not None and selected.frame_count != frame_count:  # a batch of just the keyframes
            if pair_mode != "keyframes":
                raise input_error("pair_mode", "keyframes for a batch of only the keyframes (Load Video with "
                                  "keyframes connected)", pair_mode,
                                  ["use pair_mode keyframes", "load the whole video for consecutive pairs"])
            frame_count = selected.frame_count
            pairs = keyframe_to_keyframe_pairs(selected)
        else:
            rows = None
            pairs = pairs_for_mode(pair_mode, frame_count, selected)
        estimator = make_backend(backend, dis_preset, raft_model)
        estimator.check_size(height, width)
        fixes = ["load fewer frames or a smaller size", "use pair_mode consecutive"]
        check_allocation(height * width * 4 * 4, len(pairs), "flow previews and occlusion masks", "frames", fixes)
        flows = estimate_flow(frames, pairs, estimator, occlusion_alpha, occlusion_beta, progress=Progress(len(pairs)),
                              frame_indices=rows, frame_count=frame_count if rows else None)
        masks = torch.from_numpy(np.array(flows.occlusion_backward))  # a RAM copy of the memory map
        return (flows, flow_preview(flows), masks)


NODE_CLASS_MAPPINGS = {"RerenderEstimateFlow": RerenderEstimateFlow}
NODE_DISPLAY_NAME_MAPPINGS = {"RerenderEstimateFlow": "Rerender Estimate Flow"}
