"""The video nodes without ComfyUI: definitions, and their FUNCTION called directly.

ComfyUI's input/output folders are replaced with temporary ones (monkeypatching
``nodes._comfy.input_directory`` / ``output_directory``), as core's own node tests do.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import pytest
import torch

from rerender_video.common.errors import InputError, OutputError
from rerender_video.nodes import video as video_nodes
from rerender_video.tests.video_data import cut_short_faststart_mp4
from rerender_video.videoio.info import VideoInfo

ROOT = Path(__file__).resolve().parents[1]
NODES = (video_nodes.RerenderLoadVideo, video_nodes.RerenderLoadVideoPath, video_nodes.RerenderSaveVideo,
         video_nodes.RerenderVideoInfoPath)


# ------------------------------------------------------------------------------------- definitions

@pytest.mark.parametrize("node", NODES, ids=lambda node: node.__name__)
def test_node_definition_follows_the_pack_rules(node, folders):
    spec = node.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, (kind, *options) in spec.get(section, {}).items():
            assert options and options[0].get("tooltip"), f"{node.__name__}.{name} has no tooltip"
    assert len(node.OUTPUT_TOOLTIPS) == len(node.RETURN_TYPES) == len(node.RETURN_NAMES)
    assert node.CATEGORY.startswith("Rerender/") and node.DESCRIPTION
    assert callable(getattr(node, node.FUNCTION))
    key = next(k for k, v in video_nodes.NODE_CLASS_MAPPINGS.items() if v is node)
    assert key.startswith("Rerender") and video_nodes.NODE_DISPLAY_NAME_MAPPINGS[key].startswith("Rerender ")


def test_load_video_lists_input_videos_with_upload(folders):
    files, options = video_nodes.RerenderLoadVideo.INPUT_TYPES()["required"]["video"]
    assert files == ["Megamind.avi"] and options["video_upload"] is True


def test_save_video_is_an_output_node_with_hidden_metadata_inputs():
    spec = video_nodes.RerenderSaveVideo.INPUT_TYPES()
    assert video_nodes.RerenderSaveVideo.OUTPUT_NODE is True
    assert spec["hidden"]["prompt"] == "PROMPT" and spec["hidden"]["extra_pnginfo"] == "EXTRA_PNGINFO"
    assert spec["optional"]["video_info"][0] == "VIDEO_INFO" and spec["optional"]["audio"][0] == "AUDIO"
    assert spec["required"]["crf"][1]["default"] == 19


# ------------------------------------------------------------------------------------------- loading

def test_load_video_node_outputs(folders):
    node = video_nodes.RerenderLoadVideo()
    images, fps, frame_count, audio, info = getattr(node, node.FUNCTION)(
        "Megamind.avi", frame_load_cap=6, skip_first_frames=2, select_every_nth=2, force_rate=0.0,
        custom_width=0, custom_height=0, size_multiple=64)
    assert images.shape == (6, 512, 704, 3) and images.dtype == torch.float32
    assert isinstance(fps, float) and fps == float(Fraction(12000, 1001))
    assert frame_count == 6
    assert audio["sample_rate"] == 48000 and audio["waveform"].shape[:2] == (1, 2)
    assert isinstance(info, VideoInfo) and list(info.frame_indices) == [2, 4, 6, 8, 10, 12]


def test_load_video_change_detection_and_validation(folders):
    input_dir, _ = folders
    node = video_nodes.RerenderLoadVideo
    before = node.IS_CHANGED("Megamind.avi")
    os.utime(input_dir / "Megamind.avi", ns=(1_000_000_000, 1_000_000_000))
    assert node.IS_CHANGED("Megamind.avi") != before
    assert node.VALIDATE_INPUTS("Megamind.avi") is True
    message = node.VALIDATE_INPUTS("gone.mp4")
    assert isinstance(message, str) and message.startswith("video: Expected an existing video file")


def test_load_video_path_node_strips_quotes_and_resolves_input_folder(folders):
    input_dir, _ = folders
    node = video_nodes.RerenderLoadVideoPath()
    for text in (f'"{input_dir / "Megamind.avi"}"', "Megamind.avi"):
        images, fps, count, _, info = node.load(text, frame_load_cap=2)
        assert count == 2 and info.source_path == str((input_dir / "Megamind.avi").resolve())
    assert video_nodes.RerenderLoadVideoPath.VALIDATE_INPUTS(str(input_dir / "readme.txt")) is True
    assert video_nodes.RerenderLoadVideoPath.VALIDATE_INPUTS("/no/such.mp4").startswith("video_path: Expected")
    with pytest.raises(ValueError, match="^video: Expected a video file"):
        node.load(str(input_dir / "readme.txt"))


# -------------------------------------------------------------------------------------------- saving

def test_save_video_node_writes_counted_files_with_metadata_and_ui(folders):
    _, output_dir = folders
    loader = video_nodes.RerenderLoadVideo()
    images, fps, _, audio, info = loader.load("Megamind.avi", frame_load_cap=8, skip_first_frames=40,
                                              custom_width=360)
    saver = video_nodes.RerenderSaveVideo()
    workflow = {"workflow": {"nodes": [{"id": 1, "type": "RerenderLoadVideo"}]}}
    result = getattr(saver, saver.FUNCTION)(images, fps, "rerender/clip", 19, "ultrafast", audio=audio,
                                            video_info=info, prompt={"1": {"class_type": "RerenderLoadVideo"}},
                                            extra_pnginfo=workflow)
    assert result["ui"] == {"images": [{"filename": "clip_00001_.mp4", "subfolder": "rerender", "type": "output"}],
                            "animated": (True,)}
    path = output_dir / "rerender" / "clip_00001_.mp4"
    assert result["result"] == (str(path),) and path.is_file()
    with av.open(str(path)) as container:
        assert json.loads(container.metadata["workflow"]) == workflow["workflow"]
        assert json.loads(container.metadata["prompt"])["1"]["class_type"] == "RerenderLoadVideo"
        assert container.streams.video[0].average_rate == Fraction(24000, 1001)
        assert container.streams.audio[0].codec_context.codec.canonical_name == "ac3"  # copied from video_info
    second = saver.save(images, fps, "rerender/clip")
    assert second["ui"]["images"][0]["filename"] == "clip_00002_.mp4"
    assert sorted(p.name for p in (output_dir / "rerender").iterdir()) == ["clip_00001_.mp4", "clip_00002_.mp4"]


def test_save_video_node_rejects_prefix_outside_output(folders):
    saver = video_nodes.RerenderSaveVideo()
    with pytest.raises(ValueError, match="^filename_prefix: Expected a name inside the output folder"):
        saver.save(torch.zeros(2, 16, 16, 3), 24.0, "../escape")


def test_save_video_node_rejects_non_image(folders):
    with pytest.raises(ValueError, match="^images: Expected"):
        video_nodes.RerenderSaveVideo().save("frames", 24.0)


# ------------------------------------------------------------------------------ damaged input, bad output

def test_load_video_node_refuses_a_file_cut_short(folders):
    input_dir, _ = folders
    cut_short_faststart_mp4(input_dir / "cut.mp4", frames=40, decodable=4)
    for node, name in ((video_nodes.RerenderLoadVideo(), "cut.mp4"),
                       (video_nodes.RerenderLoadVideoPath(), str(input_dir / "cut.mp4"))):
        with pytest.raises(InputError, match=r"^video: .*the data stops after frame 3: 4 of the 40 frames"):
            node.load(name)
    images = video_nodes.RerenderLoadVideo().load("cut.mp4", frame_load_cap=4)[0]
    assert images.shape[0] == 4


def test_load_video_node_cap_past_the_end_loads_what_there_is(folders):
    images, _, count, _, info = video_nodes.RerenderLoadVideo().load("Megamind.avi", frame_load_cap=50,
                                                                     skip_first_frames=265)
    assert count == 5 and list(info.frame_indices) == list(range(265, 270))


def test_save_video_node_refuses_nan_frames_naming_them(folders):
    _, output_dir = folders
    images = torch.rand(6, 16, 16, 3)
    images[4, 0, 0, 1] = float("nan")
    with pytest.raises(InputError, match=r"^images: Expected finite values .* NaN or infinity in frame 4\."):
        video_nodes.RerenderSaveVideo().save(images, 24.0, "rerender/nan")
    assert not any(output_dir.rglob("*.mp4"))


def test_save_video_node_write_error_names_the_widget(folders):
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, hard))
    try:
        with pytest.raises(OutputError, match=r"^filename_prefix: Expected a folder where the file can be written, "
                                              r"Got: .*clip_00001_\.mp4 \(File too large\)"):
            video_nodes.RerenderSaveVideo().save(torch.rand(30, 64, 96, 3), 24.0, "rerender/clip")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


SAVE_READ_ONLY = r"""
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from rerender_cli import load_pack
load_pack()
import torch
from rerender_video.nodes import _comfy
from rerender_video.nodes.video import RerenderSaveVideo

_comfy.output_directory = lambda: Path(sys.argv[2])
print("validate:", RerenderSaveVideo.VALIDATE_INPUTS("rerender/clip"))
try:
    RerenderSaveVideo().save(torch.rand(2, 16, 16, 3), 24.0, "rerender/clip")
except Exception as error:
    print(f"save: {type(error).__name__}: {error}")
"""


def test_save_video_node_refuses_a_read_only_output_folder_at_queue_time(read_only_dir):
    """VALIDATE_INPUTS runs when the prompt is queued, before any node of the workflow runs."""
    folder, prefix = read_only_dir
    result = subprocess.run([*prefix, sys.executable, "-c", SAVE_READ_ONLY, str(ROOT), str(folder)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    validate, save = result.stdout.splitlines()
    assert validate.startswith(f"validate: filename_prefix: Expected a folder where the file can be written, Got: "
                               f"{folder} (")
    assert save.startswith("save: OutputError: filename_prefix: Expected a folder where the file can be written")


def test_save_video_node_validates_a_writable_output_folder(folders):
    assert video_nodes.RerenderSaveVideo.VALIDATE_INPUTS("rerender/new/sub/clip") is True
    assert not (folders[1] / "rerender").exists()  # the check creates no folder
