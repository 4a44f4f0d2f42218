"""The full Rerender workflow in a real, headless ComfyUI, through the HTTP API (integration).

Skips unless ``COMFYUI_ROOT`` names a ComfyUI checkout; run it with the Python of ComfyUI's venv:

    COMFYUI_ROOT=/path/to/ComfyUI /path/to/comfy-venv/bin/python -m pytest tests/test_pipeline_integration.py -s

The shipped UI-format workflows are converted through the server's ``/object_info`` by the pack's
scripted-run client (``cli/comfy_run.py``) and run on 12 frames of Megamind (frames 30-41, one
shot) at 256×256 with K = 4 (keyframes 0, 4, 8), 4 sampling steps, the random-weight SD1.5-layout
checkpoint (TAESD VAE) and ControlNet. Three servers in turn, each a fresh process:

* A (cache folder 1): ``rerender_first_keyframe.json`` renders the anchor; ``rerender_video.json``
  then reads the anchor from the disk cache, renders keyframes 4 and 8 and writes an mp4 with 12
  frames at 24000/1001 fps;
* B (cache folder 1 again): the same prompt is served from the pack's cache — the node reports
  every keyframe as cached and none rendered — and gives the same video;
* C (empty cache folder 2): ``POST /interrupt`` while keyframe 8 renders, then the prompt is queued
  again: the node reports keyframes 0 and 4 from the cache and only 8 rendered, and the video is
  the one of the uninterrupted run, frame for frame.
"""

from __future__ import annotations

import shutil
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from rerender_video.cli import comfy_run
from rerender_video.keyframe.loop import NAMESPACE
from rerender_video.tests.comfy_server import ComfyServer, ModelsUnavailable, error_message, make_base

pytestmark = pytest.mark.integration

PACK_ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = "tiny_sd15_sd15layout_taesd.safetensors"
CONTROLNET = "tiny_sd15_sd15layout_controlnet.safetensors"
MODELS = [("checkpoints", CHECKPOINT), ("controlnet", CONTROLNET)]
FRAMES, SKIP, SIZE, INTERVAL, STEPS = 12, 30, 256, 4, 4
SETTINGS = [
    ("Load Video", "video", "Megamind.avi"), ("Load Video", "frame_load_cap", FRAMES),
    ("Load Video", "skip_first_frames", SKIP), ("Load Video", "custom_width", SIZE),
    ("Load Video", "custom_height", SIZE),
    ("Load Checkpoint", "ckpt_name", CHECKPOINT), ("Load ControlNet", "control_net_name", CONTROLNET),
    ("Keyframe Renderer", "steps", STEPS), ("Keyframe Renderer", "keyframe_interval", INTERVAL),
]
VIDEO_SETTINGS = [("Keyframe Selection", "keyframe_interval", INTERVAL)]
KEYFRAMES = [0, 4, 8]


@pytest.fixture(scope="module")
def base(comfyui_root, megamind_path, tmp_path_factory) -> Path:
    try:
        folder = make_base(tmp_path_factory.mktemp("pipeline_base"), Path(comfyui_root), MODELS)
    except ModelsUnavailable as error:
        pytest.skip(str(error))
    shutil.copy(megamind_path, folder / "input" / "Megamind.avi")
    return folder


def prompt_for(server: ComfyServer, workflow: str, extra=()) -> dict:
    info = server.client.object_info()
    prompt = comfy_run.load_prompt(PACK_ROOT / "workflows" / workflow, object_info=info)
    for title, name, value in [*SETTINGS, *extra]:
        comfy_run.set_input(prompt, title, name, value, info)
    return prompt


def run(server: ComfyServer, prompt: dict, timeout: float = 1800) -> dict:
    started = time.time()
    entry = server.wait(server.queue(prompt), timeout)
    entry["seconds"] = time.time() - started
    return entry


def report(entry: dict) -> dict:
    reports = comfy_run.keyframe_reports(entry)
    assert len(reports) == 1, entry.get("outputs")
    return reports[0]


def video_file(base: Path, entry: dict) -> Path:
    files = [item for item in comfy_run.output_files(entry) if item["filename"].endswith(".mp4")]
    assert len(files) == 1, comfy_run.output_files(entry)
    return base / "output" / files[0]["subfolder"] / files[0]["filename"]


def decode(path: Path) -> tuple[np.ndarray, object]:
    with av.open(str(path)) as container:
        rate = container.streams.video[0].average_rate
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    return frames, rate


def keyframe_entries(cache: Path) -> int:
    folder = cache / NAMESPACE
    return len([p for p in folder.iterdir() if not p.name.startswith(".")]) if folder.is_dir() else 0


@pytest.fixture(scope="module")
def run_a(comfyui_root, base, tmp_path_factory) -> dict:
    """Server A: templates, the first-keyframe workflow, then the full workflow (cache folder 1)."""
    cache = tmp_path_factory.mktemp("cache_1")
    server = ComfyServer(Path(comfyui_root), base, env={"RERENDER_CACHE_DIR": str(cache)}, log_name="server_a.log")
    try:
        templates = server.get("/workflow_templates")
        thumbnail = server.client._open(f"{server.url}/api/workflow_templates/rerender_video/rerender_video.jpg")
        with thumbnail:
            thumbnail_bytes = thumbnail.read()
        first = run(server, prompt_for(server, "rerender_first_keyframe.json"))
        full = run(server, prompt_for(server, "rerender_video.json", VIDEO_SETTINGS))
    finally:
        server.stop()
    return {"cache": cache, "templates": templates, "thumbnail": thumbnail_bytes, "first": first, "full": full,
            "log": server.log_text()}


@pytest.fixture(scope="module")
def run_b(comfyui_root, base, run_a) -> dict:
    """Server B: a new process on the same cache folder, the same prompt."""
    server = ComfyServer(Path(comfyui_root), base, env={"RERENDER_CACHE_DIR": str(run_a["cache"])},
                         log_name="server_b.log")
    try:
        entry = run(server, prompt_for(server, "rerender_video.json", VIDEO_SETTINGS))
    finally:
        server.stop()
    return {"entry": entry, "log": server.log_text()}


@pytest.fixture(scope="module")
def run_c(comfyui_root, base, run_a, tmp_path_factory) -> dict:
    """Server C: empty cache folder 2; interrupted while keyframe 8 renders, then queued again."""
    cache = tmp_path_factory.mktemp("cache_2")
    server = ComfyServer(Path(comfyui_root), base, env={"RERENDER_CACHE_DIR": str(cache)}, log_name="server_c.log")
    try:
        prompt = prompt_for(server, "rerender_video.json", VIDEO_SETTINGS)
        prompt_id = server.queue(prompt)
        deadline = time.time() + 1800
        while keyframe_entries(cache) < 2 and time.time() < deadline:  # anchor and keyframe 4 finished
            time.sleep(0.5)
        entries_at_interrupt = keyframe_entries(cache)
        server.interrupt()
        interrupted = server.wait(prompt_id, 600)
        entries_after = keyframe_entries(cache)
        resumed = run(server, prompt)
    finally:
        server.stop()
    return {"interrupted": interrupted, "resumed": resumed, "entries_at_interrupt": entries_at_interrupt,
            "entries_after": entries_after, "log": server.log_text()}


class TestWorkflowsInComfyUI:
    def test_workflows_are_listed_as_templates(self, run_a):
        assert {"rerender_video", "rerender_first_keyframe"} <= set(run_a["templates"].get("rerender_video", []))
        assert run_a["thumbnail"][:3] == b"\xff\xd8\xff"  # the .jpg thumbnail is served next to it

    def test_first_keyframe_workflow_renders_the_anchor(self, run_a, base):
        entry = run_a["first"]
        assert entry["status"]["status_str"] == "success", error_message(entry)
        assert report(entry)["indices"] == [0] and report(entry)["rendered"] == [0]
        images = [item for item in comfy_run.output_files(entry) if item["type"] == "output"]
        assert len(images) == 1 and images[0]["filename"].endswith(".png")
        print(f"\nfirst keyframe workflow: {entry['seconds']:.0f} s")

    def test_full_workflow_reuses_the_anchor_and_writes_the_video(self, run_a, base):
        entry = run_a["full"]
        assert entry["status"]["status_str"] == "success", error_message(entry)
        found = report(entry)
        assert found["indices"] == KEYFRAMES and found["cached"] == [0] and found["rendered"] == [4, 8]
        assert found["resumed_after"] == 0
        frames, rate = decode(video_file(base, entry))
        assert frames.shape == (FRAMES, SIZE, SIZE, 3)
        assert Fraction(rate) == Fraction(24000, 1001)
        print(f"\nfull workflow (anchor from the cache): {entry['seconds']:.0f} s, keyframe seconds "
              f"{found['seconds']}")


class TestCache:
    def test_new_server_is_served_from_the_cache(self, run_a, run_b, base):
        entry = run_b["entry"]
        assert entry["status"]["status_str"] == "success", error_message(entry)
        found = report(entry)
        assert found["cached"] == KEYFRAMES and found["rendered"] == [] and found["resumed_after"] is None
        assert "Rerender keyframes: all 3 read from the cache" in run_b["log"]
        first, _ = decode(video_file(base, run_a["full"]))
        second, _ = decode(video_file(base, entry))
        assert np.array_equal(first, second)
        print(f"\nsecond run from the cache: {entry['seconds']:.0f} s (first: {run_a['full']['seconds']:.0f} s)")


class TestInterruptAndResume:
    def test_interrupted_while_rendering_keyframe_8(self, run_c):
        entry = run_c["interrupted"]
        assert entry["status"]["status_str"] == "error"
        assert "interrupted" in error_message(entry)
        assert run_c["entries_at_interrupt"] == 2 and run_c["entries_after"] == 2

    def test_resumes_after_the_last_finished_keyframe(self, run_c):
        entry = run_c["resumed"]
        assert entry["status"]["status_str"] == "success", error_message(entry)
        found = report(entry)
        assert found["cached"] == [0, 4] and found["rendered"] == [8] and found["resumed_after"] == 4
        assert "continuing after keyframe 4" in run_c["log"]

    def test_resumed_video_equals_the_uninterrupted_one(self, run_a, run_c, base):
        uninterrupted, _ = decode(video_file(base, run_a["full"]))
        resumed, _ = decode(video_file(base, run_c["resumed"]))
        assert np.array_equal(uninterrupted, resumed)
