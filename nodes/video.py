"""ComfyUI nodes for video input/output: Rerender Load Video (upload or path) and Rerender Save Video.

Thin adapters over :mod:`videoio`: the loaders return IMAGE ``[N,H,W,3]`` float32, the fps as a
FLOAT, the frame count, AUDIO (``None`` for a silent video) and VIDEO_INFO; the saver writes an
H.264 MP4 into ComfyUI's output folder with the workflow in its metadata and shows it in the UI
like core Save Video. The sockets match core LoadVideo / GetVideoComponents / CreateVideo /
SaveVideo and VideoHelperSuite, so those nodes can be swapped in.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..common.cache import check_writable
from ..common.checks import check_image_batch
from ..common.errors import InputError, input_error
from ..segments.keyframes import load_video_keyframes
from ..videoio import reader, writer
from ..videoio.frame_index import index_video
from ..videoio.info import VideoInfo
from . import _comfy

CATEGORY = "Rerender/video"
#: File types the upload loader lists from ComfyUI's input folder.
VIDEO_EXTENSIONS = frozenset({"mp4", "m4v", "mov", "mkv", "webm", "avi", "gif", "mpg", "mpeg", "wmv", "flv",
                              "ts", "mts", "m2ts", "3gp", "ogv"})
_ANNOTATIONS = {" [input]": "input", " [output]": "output"}

SELECTION_ORDER = ("Selection order: force_rate resamples first, then skip_first_frames, then "
                   "select_every_nth, then frame_load_cap (as in VideoHelperSuite).")
SIZE_RULE = ("Size rule: resize keeping the aspect ratio to cover custom_width x custom_height (0 = follow "
             "the aspect; both 0 = source size), then centre-crop to that size rounded down to a multiple "
             "of size_multiple. Never stretches.")

_LOAD_OUTPUTS = dict(
    RETURN_TYPES=("IMAGE", "FLOAT", "INT", "AUDIO", "VIDEO_INFO"),
    RETURN_NAMES=("images", "fps", "frame_count", "audio", "video_info"),
    OUTPUT_TOOLTIPS=(
        "The loaded frames, IMAGE [N,H,W,3] float32 in [0,1].",
        "Frame rate of the loaded frames: source fps / select_every_nth, or force_rate / select_every_nth. "
        "Connect it to Rerender Save Video.",
        "Number of loaded frames N.",
        "The source audio for exactly the loaded span, or None when the video has no audio.",
        "Source facts and the selection (exact fps, selected source frames, audio span). Connect it to "
        "Rerender Save Video to copy the source audio without re-encoding.",
    ),
)


_KEYFRAMES_INPUT = ("KEYFRAMES", {"tooltip":
                     "Load just these frames (from Rerender Keyframe Selection on Rerender Video Info of the "
                     "same video and widgets): images holds one frame per keyframe, in order; fps, "
                     "audio and video_info stay those of the whole selection. For long videos: render the "
                     "keyframes, then Rerender Propagate to Video streams the rest from the file."})


def _selection_inputs() -> dict:
    return {
        "frame_load_cap": ("INT", {"default": 0, "min": 0, "max": 1_000_000, "step": 1, "tooltip":
                           "Maximum number of frames to load; 0 loads all. Applied last. A cap past the end "
                           "loads the frames there are."}),
        "skip_first_frames": ("INT", {"default": 0, "min": 0, "max": 1_000_000, "step": 1, "tooltip":
                              "Frames to skip at the start, counted after force_rate resampling. "
                              + SELECTION_ORDER}),
        "select_every_nth": ("INT", {"default": 1, "min": 1, "max": 10_000, "step": 1, "tooltip":
                             "Keep every n-th frame after the skipped ones (1 = all); the loaded fps is "
                             "divided by n."}),
        "force_rate": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 240.0, "step": 0.001, "tooltip":
                       "Resample to this many frames per second by timestamps (each output frame shows the "
                       "source frame nearest in time); 0 keeps the source rate. Applied first."}),
        "custom_width": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8, "tooltip":
                         "Requested width in pixels; 0 follows the aspect ratio (or the source width). "
                         + SIZE_RULE}),
        "custom_height": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8, "tooltip":
                          "Requested height in pixels; 0 follows the aspect ratio (or the source height). "
                          + SIZE_RULE}),
        "size_multiple": ("INT", {"default": 8, "min": 1, "max": 512, "step": 1, "tooltip":
                          "Output width and height are cropped down to multiples of this: 8 for any SD model, "
                          "64 for SD-friendly sizes (720x528 -> 704x512)."}),
    }


def _input_videos() -> list[str]:
    folder = _comfy.input_directory()
    if not folder.is_dir():
        return []
    return sorted(entry.name for entry in folder.iterdir()
                  if entry.is_file() and entry.suffix[1:].lower() in VIDEO_EXTENSIONS)


def _input_path(name: str) -> Path:
    """Path of a combo entry: a file of the input folder, or ``name [output]`` / ``name [input]``."""
    for suffix, folder in _ANNOTATIONS.items():
        if name.endswith(suffix):
            base = _comfy.output_directory() if folder == "output" else _comfy.input_directory()
            return base / name[:-len(suffix)]
    return _comfy.input_directory() / name


def _typed_path(text: str) -> Path:
    """A typed path: quotes and spaces stripped, ``~`` expanded, relative paths tried in the input folder."""
    path = Path(text.strip().strip("\"'")).expanduser()
    if not path.is_absolute() and not path.exists():
        candidate = _comfy.input_directory() / path
        if candidate.exists():
            return candidate
    return path


def _fingerprint(path: Path) -> str:
    try:
        stat = path.stat()
    except OSError:
        return f"missing:{path}"
    return f"{path}:{stat.st_mtime_ns}:{stat.st_size}"


def _missing(path: Path, name: str) -> str | bool:
    if path.is_file():
        return True
    return str(input_error(name, "an existing video file", str(path),
                           ["upload the video (or put it in ComfyUI's input folder) and pick it again",
                            "use Rerender Load Video (Path) with an absolute path"]))


def _load(path: Path, frame_load_cap: int, skip_first_frames: int, select_every_nth: int, force_rate: float,
          custom_width: int, custom_height: int, size_multiple: int, unique_id=None, keyframes=None) -> tuple:
    if keyframes is not None:
        video = load_video_keyframes(path, keyframes, _comfy.Progress(1, unique_id), frame_load_cap=frame_load_cap,
                                     skip_first_frames=skip_first_frames, select_every_nth=select_every_nth,
                                     force_rate=force_rate, custom_width=custom_width, custom_height=custom_height,
                                     size_multiple=size_multiple)
        return video.images, video.fps, video.frame_count, video.audio, video.info
    total = reader.estimate_frame_count(path, frame_load_cap, skip_first_frames, select_every_nth, force_rate)
    video = reader.load_frames(path, frame_load_cap, skip_first_frames, select_every_nth, force_rate,
                               custom_width, custom_height, size_multiple,
                               progress=_comfy.Progress(total, unique_id))
    return video.images, video.fps, video.frame_count, video.audio, video.info


_LOAD_DESCRIPTION = (
    "Load a video with PyAV as an IMAGE batch plus its fps, frame count, audio and VIDEO_INFO (exact source "
    "and loaded fps as fractions, the selected source frames, the audio span). Frames are decoded one at a "
    "time and memory is checked before the batch is allocated. " + SELECTION_ORDER + " " + SIZE_RULE)


class RerenderLoadVideo:
    """Load a video from ComfyUI's input folder (with upload button); see :func:`videoio.reader.load_frames`."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "video": (_input_videos(), {"video_upload": True, "tooltip":
                          "A video file in ComfyUI's input folder; the upload button adds one."}),
                **_selection_inputs(),
            },
            "optional": {"keyframes": _KEYFRAMES_INPUT},
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = _LOAD_OUTPUTS["RETURN_TYPES"]
    RETURN_NAMES = _LOAD_OUTPUTS["RETURN_NAMES"]
    OUTPUT_TOOLTIPS = _LOAD_OUTPUTS["OUTPUT_TOOLTIPS"]
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = _LOAD_DESCRIPTION

    def load(self, video: str, frame_load_cap: int = 0, skip_first_frames: int = 0, select_every_nth: int = 1,
             force_rate: float = 0.0, custom_width: int = 0, custom_height: int = 0, size_multiple: int = 8,
             unique_id=None, keyframes=None) -> tuple:
        return _load(_input_path(video), frame_load_cap, skip_first_frames, select_every_nth, force_rate,
                     custom_width, custom_height, size_multiple, unique_id, keyframes)

    @classmethod
    def IS_CHANGED(cls, video: str, **_):
        return _fingerprint(_input_path(video))

    @classmethod
    def VALIDATE_INPUTS(cls, video: str):
        return _missing(_input_path(video), "video")


class RerenderLoadVideoPath:
    """Load a video from a typed path; see :func:`videoio.reader.load_frames`."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "video_path": ("STRING", {"default": "", "placeholder": "/path/to/video.mp4", "tooltip":
                               "Path of the video file: absolute, or relative to ComfyUI's input folder. "
                               "Surrounding quotes are ignored."}),
                **_selection_inputs(),
            },
            "optional": {"keyframes": _KEYFRAMES_INPUT},
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = _LOAD_OUTPUTS["RETURN_TYPES"]
    RETURN_NAMES = _LOAD_OUTPUTS["RETURN_NAMES"]
    OUTPUT_TOOLTIPS = _LOAD_OUTPUTS["OUTPUT_TOOLTIPS"]
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = _LOAD_DESCRIPTION.replace("Load a video", "Load a video from a file path", 1)

    def load(self, video_path: str, frame_load_cap: int = 0, skip_first_frames: int = 0, select_every_nth: int = 1,
             force_rate: float = 0.0, custom_width: int = 0, custom_height: int = 0, size_multiple: int = 8,
             unique_id=None, keyframes=None) -> tuple:
        return _load(_typed_path(video_path), frame_load_cap, skip_first_frames, select_every_nth, force_rate,
                     custom_width, custom_height, size_multiple, unique_id, keyframes)

    @classmethod
    def IS_CHANGED(cls, video_path: str, **_):
        return _fingerprint(_typed_path(video_path))

    @classmethod
    def VALIDATE_INPUTS(cls, video_path: str):
        return _missing(_typed_path(video_path), "video_path")


class RerenderVideoInfoPath:
    """VIDEO_INFO of a load without loading the frames; see :func:`videoio.frame_index.index_video`."""

    @classmethod
    def INPUT_TYPES(cls):
        inputs = RerenderLoadVideoPath.INPUT_TYPES()
        inputs.pop("optional")
        return inputs

    RETURN_TYPES = ("VIDEO_INFO", "FLOAT", "INT")
    RETURN_NAMES = ("video_info", "fps", "frame_count")
    OUTPUT_TOOLTIPS = (
        "What Rerender Load Video (Path) with the same widgets loads (source, selected frames, size, fps, audio "
        "span); connect to Rerender Keyframe Selection to choose keyframes from the file.",
        _LOAD_OUTPUTS["OUTPUT_TOOLTIPS"][1], "Number of frames the load selects N.")
    FUNCTION = "info"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "The VIDEO_INFO of a load, without holding any frame: one streaming decoding pass over the file (cached "
        "by the file's fingerprint) indexes every frame for exact random access, then the widgets select "
        "frames as Rerender Load Video does. For long videos: Rerender Keyframe Selection chooses keyframes "
        "from it, Load Video (Path) with the same path and widgets loads just those, and Rerender Propagate to "
        "Video streams the rest from the file. " + SELECTION_ORDER + " " + SIZE_RULE)

    def info(self, video_path: str, frame_load_cap: int = 0, skip_first_frames: int = 0, select_every_nth: int = 1,
             force_rate: float = 0.0, custom_width: int = 0, custom_height: int = 0, size_multiple: int = 8,
             unique_id=None) -> tuple:
        index = index_video(_typed_path(video_path), frame_load_cap, skip_first_frames, select_every_nth, force_rate,
                            custom_width, custom_height, size_multiple, progress=_comfy.Progress(1, unique_id))
        return index.info, float(index.info.loaded_fps), index.frame_count

    IS_CHANGED = RerenderLoadVideoPath.IS_CHANGED
    VALIDATE_INPUTS = RerenderLoadVideoPath.VALIDATE_INPUTS


def _save_location(filename_prefix: str, width: int, height: int) -> tuple[Path, str, int, str]:
    """``(folder, file stem, counter, subfolder)`` with ComfyUI's ``<prefix>_<counter:05>_`` convention."""
    output = _comfy.output_directory()
    folder_paths = _comfy.folder_paths_module()
    if folder_paths is not None:
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, str(output),
                                                                               width, height)
        return Path(folder), name, counter, subfolder
    prefix = os.path.normpath(filename_prefix.replace("%width%", str(width)).replace("%height%", str(height)))
    subfolder, name = os.path.dirname(prefix), os.path.basename(prefix)
    folder = (output / subfolder).resolve()
    if os.path.commonpath((output.resolve(), folder)) != str(output.resolve()) or not name:
        raise input_error("filename_prefix", "a name inside the output folder, e.g. 'rerender/video'",
                          filename_prefix, "remove '..' and absolute paths from filename_prefix")
    pattern = re.compile(re.escape(name) + r"_(\d+)_")
    used = [int(match.group(1)) for entry in (folder.iterdir() if folder.is_dir() else ())
            if (match := pattern.match(entry.name))]
    return folder, name, max(used, default=0) + 1, subfolder


def save_target(filename_prefix: str, width: int, height: int) -> tuple[Path, dict]:
    """The next ``<prefix>_<counter:05>_.mp4`` in the output folder, and its UI preview entry."""
    folder, name, counter, subfolder = _save_location(filename_prefix, width, height)
    file = f"{name}_{counter:05}_.mp4"
    return folder / file, {"filename": file, "subfolder": subfolder, "type": "output"}


def workflow_metadata(prompt, extra_pnginfo) -> dict:
    """The prompt and workflow for a saved file's metadata, as core savers write them (none with
    ``--disable-metadata``)."""
    metadata = {}
    if not _comfy.metadata_disabled():
        metadata.update(extra_pnginfo or {})
        if prompt is not None:
            metadata["prompt"] = prompt
    return metadata


class RerenderSaveVideo:
    """Save an IMAGE batch as H.264 MP4 in the output folder; see :func:`videoio.writer.save_video`."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The frames to save, IMAGE [N,H,W,3]."}),
                "fps": ("FLOAT", {"default": 24.0, "min": 0.01, "max": 1000.0, "step": 0.001, "tooltip":
                        "Frames per second; connect Rerender Load Video's fps. Kept exact: 23.976 (or "
                        "23.976023976…) is written as 24000/1001, 29.97 as 30000/1001."}),
                "filename_prefix": ("STRING", {"default": "rerender/video", "tooltip":
                                    "Name of the file in ComfyUI's output folder; '/' makes subfolders. A counter "
                                    "is appended: rerender/video_00001_.mp4."}),
                "crf": ("INT", {"default": 19, "min": 0, "max": 51, "step": 1, "tooltip":
                        "x264 quality: 0 is lossless, 19 visually lossless (default), 23 smaller files; "
                        "+6 roughly halves the size."}),
                "preset": (list(writer.PRESETS), {"default": "medium", "tooltip":
                           "x264 speed preset: slower presets give smaller files at the same quality."}),
            },
            "optional": {
                "audio": ("AUDIO", {"tooltip": "Audio to encode as AAC, cut to the video's length. Ignored "
                                    "when video_info brings the source's audio."}),
                "video_info": ("VIDEO_INFO", {"tooltip":
                               "From Rerender Load Video: copies the source audio of the loaded span without "
                               "re-encoding (re-encoded to AAC only when MP4 cannot hold the codec, e.g. PCM)."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO", "unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("filename",)
    OUTPUT_TOOLTIPS = ("Full path of the saved MP4.",)
    OUTPUT_NODE = True
    FUNCTION = "save"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Save frames as an H.264 yuv420p MP4 (CRF) in ComfyUI's output folder with the workflow in its "
        "metadata, and show it in the UI. The fps is kept exact as a fraction. With video_info the source "
        "audio of the loaded span is stream-copied (no re-encode); otherwise an AUDIO input is encoded to "
        "AAC. Odd widths/heights are padded by one pixel (yuv420p needs even sizes). The file appears only "
        "when complete.")

    def save(self, images, fps: float, filename_prefix: str = "rerender/video", crf: int = 19,
             preset: str = "medium", audio=None, video_info: VideoInfo | None = None, prompt=None,
             extra_pnginfo=None, unique_id=None) -> dict:
        check_image_batch(images)
        count, height, width = images.shape[:3]
        path, preview = save_target(filename_prefix, width, height)
        path = writer.save_video(images, path, fps, crf, audio=audio, audio_source=video_info,
                                 metadata=workflow_metadata(prompt, extra_pnginfo), preset=preset,
                                 progress=_comfy.Progress(count, unique_id), path_name="filename_prefix")
        return {"ui": {"images": [preview], "animated": (True,)}, "result": (str(path),)}

    @classmethod
    def VALIDATE_INPUTS(cls, filename_prefix: str):
        """Refuse an unwritable output folder when the prompt is queued, before any node runs."""
        if not isinstance(filename_prefix, str):  # a linked input: known only when the node runs
            return True
        subfolder = os.path.dirname(os.path.normpath(filename_prefix.replace("%width%", "0").replace("%height%", "0")))
        try:
            check_writable(_comfy.output_directory() / subfolder / "probe.mp4", "filename_prefix")
        except InputError as error:
            return str(error)
        return True


NODE_CLASS_MAPPINGS = {
    "RerenderLoadVideo": RerenderLoadVideo,
    "RerenderLoadVideoPath": RerenderLoadVideoPath,
    "RerenderSaveVideo": RerenderSaveVideo,
    "RerenderVideoInfoPath": RerenderVideoInfoPath,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "RerenderLoadVideo": "Rerender Load Video",
    "RerenderLoadVideoPath": "Rerender Load Video (Path)",
    "RerenderSaveVideo": "Rerender Save Video",
    "RerenderVideoInfoPath": "Rerender Video Info (Path)",
}
