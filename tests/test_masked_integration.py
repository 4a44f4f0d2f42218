"""The masked template (``workflows/rerender_masked.json``) in a real, headless ComfyUI (integration).

Skips unless ``COMFYUI_ROOT`` names a ComfyUI checkout; run it with the Python of ComfyUI's venv:

    COMFYUI_ROOT=/path/to/ComfyUI /path/to/comfy-venv/bin/python -m pytest tests/test_masked_integration.py -s

The template as shipped (SolidMask + MaskComposite → a box on the first frame → Rerender Propagate Mask →
EbSynth Propagate with the MASK → Temporal Blend → Save Video) on the bundled clip and keyframes, 14 frames
(keyframes 0, 1, 13) and a short synthesis schedule. No model is needed. The saved mp4's frames are compared
with the source frames: far outside the box they are the source (up to the codec's error), inside they differ.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from rerender_video.cli import comfy_run
from rerender_video.tests.comfy_server import ComfyServer, error_message, make_base
from rerender_video.tests.test_pipeline_integration import PACK_ROOT
from rerender_video.videoio.reader import load_frames

pytestmark = pytest.mark.integration

FRAMES = 14
SETTINGS = [("Rerender Load Video", "frame_load_cap", FRAMES), ("Rerender EbSynth Propagate", "search_vote_iters", 2),
            ("Rerender EbSynth Propagate", "patchmatch_iters", 2)]


@pytest.fixture(scope="module")
def run(comfyui_root, megamind_path, tmp_path_factory) -> dict:
    base = make_base(tmp_path_factory.mktemp("masked_base"), Path(comfyui_root), [])
    shutil.copy(megamind_path, base / "input" / "Megamind.avi")
    shutil.copytree(megamind_path.parent / "megamind_keys", base / "input" / "megamind_keys")
    cache = tmp_path_factory.mktemp("masked_cache")
    server = ComfyServer(Path(comfyui_root), base, env={"RERENDER_CACHE_DIR": str(cache)}, log_name="masked.log")
    try:
        info = server.client.object_info()
        prompt = comfy_run.load_prompt(PACK_ROOT / "workflows" / "rerender_masked.json", object_info=info)
        for title, widget, value in SETTINGS:
            comfy_run.set_input(prompt, title, widget, value, info)
        entry = server.wait(server.queue(prompt), 1800)
    finally:
        server.stop()
    return {"base": base, "entry": entry, "log": server.log_text()}


def test_masked_template_restyles_only_the_box(run, megamind_path):
    entry = run["entry"]
    assert entry["status"]["status_str"] == "success", error_message(entry)
    files = [item for item in comfy_run.output_files(entry) if item["filename"].endswith(".mp4")]
    assert len(files) == 1, comfy_run.output_files(entry)
    with av.open(str(run["base"] / "output" / files[0]["subfolder"] / files[0]["filename"])) as container:
        written = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    source = np.rint(load_frames(megamind_path, frame_load_cap=FRAMES, custom_width=360,
                                 custom_height=264).images.numpy() * 255).astype(int)
    assert written.shape == source.shape
    difference = np.abs(written.astype(int) - source).max(-1)
    far_outside = np.ones((264, 360), bool)
    far_outside[:, 55 - 40:195 + 40] = False           # the box (x 55–194) + grow + feather + carried motion
    inside = np.zeros((264, 360), bool)
    inside[40:250, 80:170] = True
    assert np.median(difference[1:, far_outside]) <= 3   # the source, up to the codec's yuv420 error
    assert np.median(difference[1:, inside]) > 10
