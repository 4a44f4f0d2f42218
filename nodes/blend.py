"""Node: Rerender Temporal Blend (forward + backward candidates → the output video)."""

from __future__ import annotations

from ..common.errors import input_error
from ..propagation.blend import blend_video
from ..propagation.result import Propagation
from ..propagation.settings import BLEND, poisson_weights
from ._comfy import Progress
from ._widgets import widgets


class RerenderTemporalBlend:
    """Blend the forward and backward propagations of every frame into the final video."""

    DESCRIPTION = (
        "Blends the two stylized candidates of each frame between keyframes (Rerender-A-Video §4.2.1): per "
        "pixel it selects the forward or backward candidate by their errors weighted by the distance to each "
        "keyframe, keeps a switch once made along the motion, then mixes both in Lab with the "
        "histogram-preserving blend (contrast kept); optional screened Poisson gradient blending. Keyframes "
        "pass through unchanged.")
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
        }

    def blend(self, propagation, histogram_blend, poisson_blend, poisson_luma_weight, poisson_chroma_weight):
        if not isinstance(propagation, Propagation):
            raise input_error("propagation", "a PROPAGATION object (Rerender EbSynth Propagate)",
                              type(propagation).__name__)
        weights = poisson_weights(poisson_luma_weight, poisson_chroma_weight)
        frames, selection = blend_video(propagation, bool(histogram_blend), bool(poisson_blend), weights,
                                        progress=Progress(propagation.frame_count))
        return (frames, selection)


NODE_CLASS_MAPPINGS = {"RerenderTemporalBlend": RerenderTemporalBlend}
NODE_DISPLAY_NAME_MAPPINGS = {"RerenderTemporalBlend": "Rerender Temporal Blend"}
