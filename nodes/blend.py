"""Node: Rerender Temporal Blend (forward + backward candidates → the output video)."""

from __future__ import annotations

from ..common.checks import check_image_batch
from ..common.errors import input_error
from ..common.masks import FEATHER, MASK_GROW
from ..propagation.blend import blend_video
from ..propagation.region import Region
from ..propagation.result import Propagation
from ..propagation.settings import BLEND, poisson_weights
from ._comfy import Progress
from ._widgets import mask_inputs, widgets


class RerenderTemporalBlend:
    """Blend the forward and backward propagations of every frame into the final video."""

    DESCRIPTION = (
        "Blends the two stylized candidates of each frame between keyframes (Rerender-A-Video §4.2.1): per "
        "pixel it selects the forward or backward candidate by their errors weighted by the distance to each "
        "keyframe, keeps a switch once made along the motion, then mixes both in Lab with the "
        "histogram-preserving blend (contrast kept); optional screened Poisson gradient blending. Keyframes "
        "pass through unchanged. With a region (a MASK here or on EbSynth Propagate) every frame is "
        "composited over the source frames: outside the grown, feathered mask the output is the source.")
    CATEGORY = "Rerender/propagation"
    FUNCTION = "blend"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("frames", "selection")
    OUTPUT_TOOLTIPS = ("The stylized video [N,H,W,3]; keyframes exactly as given.",
                       "Per pixel, 1 where the backward candidate was selected (0 = forward, and on keyframes).")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "propagation": ("PROPAGATION", {"tooltip": "Candidates and errors from Rerender EbSynth "
                                                           "Propagate (direction both for a real blend)."}),
                **widgets(BLEND),
            },
            "optional": {
                **mask_inputs("the PROPAGATION's optical flow. Not needed when EbSynth Propagate had the mask "
                              "(its region and settings are used)"),
                "frames": ("IMAGE", {"tooltip": "The original frames [N,H,W,3] the region is composited over; "
                                                "needed only with a mask here when EbSynth Propagate had none."}),
            },
        }

    def blend(self, propagation, histogram_blend, poisson_blend, poisson_luma_weight, poisson_chroma_weight,
              mask=None, mask_grow: int = MASK_GROW.default, feather: int = FEATHER.default, frames=None):
        if not isinstance(propagation, Propagation):
            raise input_error("propagation", "a PROPAGATION object (Rerender EbSynth Propagate)",
                              type(propagation).__name__)
        weights = poisson_weights(poisson_luma_weight, poisson_chroma_weight)
        region = None
        if mask is not None:
            region = Region.for_video(mask, propagation.frame_count, *propagation.frame_size, mask_grow, feather,
                                      propagation.flow)
        if frames is not None:
            frames = check_image_batch(frames, "frames")
        output, selection = blend_video(propagation, bool(histogram_blend), bool(poisson_blend), weights,
                                        progress=Progress(propagation.frame_count), region=region,
                                        source_frames=frames)
        return (output, selection)


NODE_CLASS_MAPPINGS = {"RerenderTemporalBlend": RerenderTemporalBlend}
NODE_DISPLAY_NAME_MAPPINGS = {"RerenderTemporalBlend": "Rerender Temporal Blend"}
