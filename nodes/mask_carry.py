"""Node: Rerender Propagate Mask (one first-frame MASK + the frames' FLOW or frames → a MASK per frame)."""

from __future__ import annotations

import torch

from ..common.checks import check_image_batch
from ..common.errors import input_error
from ..common.memory import check_allocation
from ..flow.dis import DisFlow
from ..flow.mask_carry import iter_carried_masks, iter_carried_masks_flow
from ..flow.settings import DIS_PRESET
from ..flow.types import FlowPairs
from ._comfy import Progress
from ._widgets import widget


class RerenderPropagateMask:
    """Carry a mask painted on the first frame through the clip by optical flow (flow/mask_carry.py)."""

    DESCRIPTION = (
        "Carries one mask painted on the first frame through the whole clip by the optical flow, with the "
        "occlusion masks (as Rerender-A-Video carries content through a clip, §4): each frame's mask is the "
        "first mask sampled along the flow composed back to frame 0; pixels without a reliable match "
        "(occluded, newly revealed, entering at the border) take the value of the nearest reliable pixel. "
        "Gives the per-frame MASK the Keyframe Renderer, EbSynth Propagate and Temporal Blend restyle, for "
        "users without a segmentation model. Connect a FLOW with consecutive pairs (Rerender Estimate Flow) "
        "to reuse its flows, or just the frames (OpenCV DIS flow computed here).")
    CATEGORY = "Rerender/flow"
    FUNCTION = "carry"
    RETURN_TYPES = ("MASK",)
    RETURN_NAMES = ("masks",)
    OUTPUT_TOOLTIPS = ("One mask per frame [N,H,W] float32 in [0,1]; the first is the input mask.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "mask": ("MASK", {"tooltip": "One mask [1,H,W] of the first frame (1 = restyle), of the frames' "
                                             "size, e.g. painted in the mask editor of Load Image."}),
                "dis_preset": widget(DIS_PRESET),
            },
            "optional": {
                "flow": ("FLOW", {"tooltip": "Optical flow of the clip with consecutive pairs (Rerender Estimate "
                                             "Flow, pair_mode consecutive or consecutive+keyframes); used when "
                                             "connected."}),
                "frames": ("IMAGE", {"tooltip": "The video frames [N,H,W,3]; the flow is computed from them "
                                                "(DIS) when no FLOW is connected."}),
            },
        }

    def carry(self, mask, dis_preset, flow=None, frames=None):
        if flow is None and frames is None:
            raise input_error("flow", "a FLOW or the frames to carry the mask through", "neither connected",
                              ["connect Rerender Estimate Flow's flow (pair_mode consecutive)",
                               "connect the video frames"])
        if frames is not None:
            frames = check_image_batch(frames, "frames")
        if flow is not None:
            if not isinstance(flow, FlowPairs):
                raise input_error("flow", "a FLOW object (Rerender Estimate Flow)", type(flow).__name__)
            if frames is not None:
                flow.check_video(frames.shape[0], tuple(frames.shape[1:3]))
            count, (height, width) = flow.frame_count, flow.frame_size
            masks = iter_carried_masks_flow(flow, mask)
        else:
            count, height, width = frames.shape[:3]
            masks = iter_carried_masks(frames, mask, DisFlow(dis_preset))
        check_allocation(height * width * 4, count, "carried masks", "frames",
                         ["load fewer frames or a smaller size"])
        progress = Progress(count)
        out = torch.empty(count, height, width)
        for index, one in enumerate(masks):
            out[index] = one
            progress(index + 1)
        return (out,)


NODE_CLASS_MAPPINGS = {"RerenderPropagateMask": RerenderPropagateMask}
NODE_DISPLAY_NAME_MAPPINGS = {"RerenderPropagateMask": "Rerender Propagate Mask"}
