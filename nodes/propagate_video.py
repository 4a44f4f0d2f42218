"""Node: Rerender Propagate to Video — stylized keyframes → the output mp4, segment by segment from the source file."""

from __future__ import annotations

from pathlib import Path

from ..common.checks import check_image_batch
from ..common.errors import input_error
from ..common.masks import FEATHER, MASK_GROW
from ..flow.settings import DIS_PRESET, OCCLUSION_ALPHA, OCCLUSION_BETA
from ..propagation.settings import BLEND, PROPAGATE
from ..segments.engine import propagate_to_video
from ..segments.executors import EXECUTOR_SETTINGS, open_executor
from ..segments.job import SegmentSettings
from ..videoio.frame_index import index_for_info, index_video
from ._comfy import Progress
from ._widgets import mask_inputs, widget, widgets
from .video import RerenderSaveVideo, _fingerprint, _typed_path, save_target, workflow_metadata

#: Widgets of the output file, after the settings (same meaning as on Rerender Save Video).
_SAVE = RerenderSaveVideo.INPUT_TYPES()["required"]


class RerenderPropagateToVideo:
    """EbSynth Propagate → Temporal Blend → Save Video in one streaming node (see :mod:`segments.engine`)."""

    DESCRIPTION = (
        "For long videos: carries the stylized keyframes to every frame (EbSynth propagation forward and "
        "backward, Rerender-A-Video §4.2) and blends them (§4.2.1) one segment between two keyframes at a time, "
        "reading the frames from the video file and writing an H.264 MP4 into the output folder as it goes, so "
        "memory is set by the keyframe interval and the frame size, not the length. The frames equal those of "
        "Load Video → Estimate Flow → EbSynth Propagate → Temporal Blend → Save Video with the same settings, "
        "bit for bit. Finished segments are kept on disk: a cancelled or crashed run resumes at the first "
        "unfinished segment and writes the same file, which appears only when complete. Shows the video like "
        "Save Video, with the workflow in its metadata. Optional: executor ray runs the segments as Ray tasks "
        "(on this machine's cores, several GPUs or a cluster; pip install ray), several at a time, and "
        "writes the same file; progress and Cancel work with either executor. "
        "With a MASK only the region is restyled; outside the grown, feathered mask the frames are the source "
        "frames (before encoding).")
    CATEGORY = "Rerender/propagation"
    FUNCTION = "propagate"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("filename",)
    OUTPUT_TOOLTIPS = ("Full path of the written MP4.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "stylized_keyframes": ("IMAGE", {"tooltip": "One stylized image per keyframe, in frame order, of "
                                                            "the loaded frames' size (Rerender Keyframe Renderer)."}),
                "keyframes": ("KEYFRAMES", {"tooltip": "The keyframes the images are of (Rerender Keyframe "
                                                       "Renderer's or Keyframe Selection's keyframes)."}),
                "video_path": ("STRING", {"default": "", "tooltip":
                                          "Used when video_info is not connected: the source video (absolute, "
                                          "or relative to ComfyUI's input folder), all its frames at the "
                                          "keyframes' size."}),
                **widgets(PROPAGATE),
                **widgets(BLEND),
                "dis_preset": widget(DIS_PRESET),
                "occlusion_alpha": widget(OCCLUSION_ALPHA),
                "occlusion_beta": widget(OCCLUSION_BETA),
                "filename_prefix": _SAVE["filename_prefix"],
                "crf": _SAVE["crf"],
                "preset": _SAVE["preset"],
            },
            "optional": {
                "video_info": ("VIDEO_INFO", {"tooltip": "The source: Rerender Load Video's video_info (the same "
                                                         "file, frames and size are read again, a segment at a "
                                                         "time). Its audio for the loaded span is copied."}),
                **widgets(EXECUTOR_SETTINGS),
                **mask_inputs(),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO", "unique_id": "UNIQUE_ID"},
        }

    def propagate(self, stylized_keyframes, keyframes, video_path: str = "", filename_prefix: str = "rerender/video",
                  crf: int = 19, preset: str = "medium", video_info=None, prompt=None, extra_pnginfo=None,
                  unique_id=None, mask=None, mask_grow: int = MASK_GROW.default, feather: int = FEATHER.default,
                  **settings) -> dict:
        """``mask``: optional MASK ``[1 or N, H, W]`` (see :mod:`segments.masks`). ``settings``: the propagation,
        blend and flow widgets and the executor widgets
        (:data:`segments.executors.EXECUTOR_SETTINGS`; absent ones keep their defaults: the local executor), by
        their declared names. A Ray executor connects before any work (an error names the widget to change) and
        is closed after the run, also when it is cancelled."""
        images = check_image_batch(stylized_keyframes, "stylized_keyframes")
        height, width = images.shape[1:3]
        if video_info is not None:
            index = index_for_info(video_info)
        elif str(video_path).strip():
            index = index_video(_typed_path(video_path), custom_width=width, custom_height=height)
        else:
            raise input_error("video_path", "the source video", "no video_info and an empty video_path",
                              ["connect Rerender Load Video's video_info", "type the video's path"])
        path, preview = save_target(filename_prefix, *index.frame_size[::-1])
        segment_settings = SegmentSettings.from_values(settings)
        segment_settings.params.validate()  # cheap checks before a Ray executor connects
        with open_executor(settings) as executor:  # as the propagate command: connects now, closed after
            written = propagate_to_video(index, images, keyframes, path, segment_settings, crf, preset,
                                         workflow_metadata(prompt, extra_pnginfo), executor=executor,
                                         progress=Progress(index.frame_count, unique_id), mask=mask,
                                         mask_grow=mask_grow, feather=feather)
        return {"ui": {"images": [preview], "animated": (True,)}, "result": (str(Path(written)),)}

    VALIDATE_INPUTS = RerenderSaveVideo.VALIDATE_INPUTS

    @classmethod
    def IS_CHANGED(cls, video_path: str = "", **_):
        """A typed source runs again when the file changes (a VIDEO_INFO changes with its Load Video)."""
        return _fingerprint(_typed_path(video_path)) if str(video_path).strip() else ""


NODE_CLASS_MAPPINGS = {"RerenderPropagateToVideo": RerenderPropagateToVideo}
NODE_DISPLAY_NAME_MAPPINGS = {"RerenderPropagateToVideo": "Rerender Propagate to Video"}
