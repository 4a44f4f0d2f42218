"""The long-video template in a real, headless ComfyUI, against the in-RAM template (integration).

Skips unless ``COMFYUI_ROOT`` names a ComfyUI checkout; run it with the Python of ComfyUI's venv:

    COMFYUI_ROOT=/path/to/ComfyUI /path/to/comfy-venv/bin/python -m pytest tests/test_long_video_integration.py -s

One server, one cache folder, 12 frames of Megamind (frames 30-41) at 256×256, keyframes every 4 (0, 4, 8),
4 sampling steps of the random-weight SD1.5-layout checkpoint and ControlNet, a short synthesis schedule:

1. ``rerender_long_video.json`` (Video Info → Keyframe Selection from the file → Load Video of just the
   keyframes → Estimate Flow on keyframe pairs → Keyframe Renderer → Propagate to Video) renders the three
   keyframes and writes the mp4;
2. ``rerender_video.json`` (the in-RAM nodes, the whole clip) with the same settings then finds every keyframe
   in the renderer's cache — the keyframes-only stage read the same frames, flows and hints — and its Save
   Video file equals the streamed one frame for frame, bit for bit.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import av
import numpy as np
import pytest

from rerender_video.cli import comfy_run
from rerender_video.tests.comfy_server import ComfyServer, ModelsUnavailable, error_message, make_base
from rerender_video.tests.test_pipeline_integration import (CHECKPOINT, CONTROLNET, FRAMES, INTERVAL, MODELS,
                                                            PACK_ROOT, SIZE, SKIP, STEPS)

pytestmark = pytest.mark.integration

LOAD = [("frame_load_cap", FRAMES), ("skip_first_frames", SKIP), ("custom_width", SIZE), ("custom_height", SIZE)]
COMMON = [("Load Checkpoint", "ckpt_name", CHECKPOINT), ("Load ControlNet", "control_net_name", CONTROLNET),
          ("Keyframe Renderer", "steps", STEPS), ("Keyframe Selection", "mode", "uniform"),
          ("Keyframe Selection", "keyframe_interval", INTERVAL)]
SCHEDULE = [("search_vote_iters", 2), ("patchmatch_iters", 2)]
LONG = [*COMMON, ("Video Info", "video_path", "Megamind.avi"), ("Load Video", "video_path", "Megamind.avi"),
        *[(title, name, value) for title in ("Video Info", "Load Video") for name, value in LOAD],
        *[("Propagate to Video", name, value) for name, value in SCHEDULE]]
IN_RAM = [*COMMON, ("Load Video", "video", "Megamind.avi"), *[("Load Video", name, value) for name, value in LOAD],
          *[("EbSynth Propagate", name, value) for name, value in SCHEDULE]]


@pytest.fixture(scope="module")
def runs(comfyui_root, megamind_path, tmp_path_factory) -> dict:
    try:
        base = make_base(tmp_path_factory.mktemp("long_base"), Path(comfyui_root), MODELS)
    except ModelsUnavailable as error:
        pytest.skip(str(error))
    shutil.copy(megamind_path, base / "input" / "Megamind.avi")
    cache = tmp_path_factory.mktemp("long_cache")
    server = ComfyServer(Path(comfyui_root), base, env={"RERENDER_CACHE_DIR": str(cache)}, log_name="long.log")
    entries = {}
    try:
        templates = server.get("/workflow_templates")
        info = server.client.object_info()
        for name, workflow, settings in (("long", "rerender_long_video.json", LONG),
                                         ("in_ram", "rerender_video.json", IN_RAM)):
            prompt = comfy_run.load_prompt(PACK_ROOT / "workflows" / workflow, object_info=info)
            for title, widget, value in settings:
                comfy_run.set_input(prompt, title, widget, value, info)
            started = time.time()
            entries[name] = server.wait(server.queue(prompt), 1800)
            entries[name]["seconds"] = time.time() - started
    finally:
        server.stop()
    return {"base": base, "templates": templates, "log": server.log_text(), **entries}


def video(base: Path, entry: dict) -> np.ndarray:
    files = [item for item in comfy_run.output_files(entry) if item["filename"].endswith(".mp4")]
    assert len(files) == 1, comfy_run.output_files(entry)
    with av.open(str(base / "output" / files[0]["subfolder"] / files[0]["filename"])) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def test_long_video_template_is_listed(runs):
    assert "rerender_long_video" in runs["templates"].get("rerender_video", [])


def test_long_video_template_equals_the_in_ram_template_bit_for_bit(runs):
    for name in ("long", "in_ram"):
        assert runs[name]["status"]["status_str"] == "success", error_message(runs[name])
    long_report, in_ram_report = (comfy_run.keyframe_reports(runs[name])[0] for name in ("long", "in_ram"))
    assert long_report["indices"] == [0, 4, 8] and long_report["rendered"] == [0, 4, 8]
    assert in_ram_report["cached"] == [0, 4, 8]  # the keyframes-only stage read the same inputs
    streamed, in_ram = video(runs["base"], runs["long"]), video(runs["base"], runs["in_ram"])
    assert streamed.shape == (FRAMES, SIZE, SIZE, 3) and streamed.std() > 5
    different = [frame for frame in range(FRAMES) if not np.array_equal(streamed[frame], in_ram[frame])]
    assert not different, f"frames {different} differ"
    print(f"\nlong-video template {runs['long']['seconds']:.0f} s, in-RAM template (keyframes cached) "
          f"{runs['in_ram']['seconds']:.0f} s")
