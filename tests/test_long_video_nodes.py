"""The long-video nodes: keyframes-only loading, streaming Keyframe Selection, keyframe-pair flow, the Keyframe
Renderer on just the keyframes, and Rerender Propagate to Video (equal, bit for bit, to the in-RAM node chain; its
executor widgets: the same file on a local one-CPU Ray, progress and Cancel there, widget-named errors).

Data: the bundled Megamind.avi at 128 px wide. Frames 70–109 hold a scene cut (source frame 98, loaded 28).
The nodes run outside ComfyUI (folders redirected to the test's own); the integration test that runs the same
chain in a real ComfyUI is in tests/test_long_video_integration.py.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import sys

import av
import numpy as np
import pytest
import torch

from rerender_video.benchmarks._anchor_protocol import stylize_rgb
from rerender_video.common import cache
from rerender_video.common.errors import InputError
from rerender_video.common.keyframes import uniform
from rerender_video.flow.pairs import keyframe_to_keyframe_pairs
from rerender_video.nodes import _comfy, propagate_video
from rerender_video.nodes import video as video_nodes
from rerender_video.nodes.blend import RerenderTemporalBlend
from rerender_video.nodes.flow import RerenderEstimateFlow
from rerender_video.nodes.keyframe_renderer import KeyframeHints, plan_render
from rerender_video.nodes.keyframes import RerenderKeyframeSelection
from rerender_video.nodes.propagate import RerenderEbSynthPropagate
from rerender_video.nodes.propagate_video import RerenderPropagateToVideo
from rerender_video.propagation.settings import BLEND, PROPAGATE
from rerender_video.segments import engine, executors
from rerender_video.segments.executors import EXECUTOR_SETTINGS

WIDTH = 128
#: A short synthesis schedule (not the defaults, so a setting lost on the way to the engine shows).
FAST = {"search_vote_iters": 2, "patchmatch_iters": 2}
LOAD = dict(frame_load_cap=40, skip_first_frames=70, custom_width=WIDTH)
FLOW_WIDGETS = dict(backend="dis", dis_preset="medium", raft_model="auto", occlusion_alpha=0.01, occlusion_beta=0.5)


def settings_widgets(**changed) -> dict:
    values = {one.name: one.default for one in (*PROPAGATE, *BLEND)}
    values.update(FAST, dis_preset="medium", occlusion_alpha=0.01, occlusion_beta=0.5, **changed)
    return values


def decoded(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def styled(images: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.stack([stylize_rgb(frame) for frame in images.numpy()]))


def streamed_keyframes(mode="scene_cuts", interval=12, **load):
    """Video Info (Path) → Keyframe Selection (video_info) → Load Video (Path) with keyframes."""
    widgets = {**LOAD, **load}
    info, _, count = video_nodes.RerenderVideoInfoPath().info("Megamind.avi", **widgets)
    keyframes, text, selected_images = RerenderKeyframeSelection().select(
        None, mode, interval, "", 20.0, video_info=info)
    images, fps, rows, audio, loaded_info = video_nodes.RerenderLoadVideoPath().load(
        "Megamind.avi", **widgets, keyframes=keyframes)
    return info, keyframes, text, selected_images, images, loaded_info


# --- keyframes-only keyframe stage ----------------------------------------------------------------------------

def test_keyframe_selection_from_the_file_equals_selection_on_the_loaded_frames(folders):
    full = video_nodes.RerenderLoadVideoPath().load("Megamind.avi", **LOAD)[0]
    for mode, interval in (("scene_cuts", 12), ("uniform", 9)):
        expected = RerenderKeyframeSelection().select(full, mode, interval, "", 20.0)
        info, keyframes, text, selected, images, loaded_info = streamed_keyframes(mode, interval)
        assert keyframes == expected[0] and text == expected[1]
        assert torch.equal(selected, expected[2]) and torch.equal(images, expected[2])
    assert keyframes.indices == (0, 9, 18, 27, 36)
    scene = RerenderKeyframeSelection().select(None, "scene_cuts", 12, "", 20.0, video_info=info)[0]
    assert scene.shot_starts == (28,) and scene.indices == (0, 12, 24, 28)  # the cut was seen while streaming


def test_keyframes_only_load_gives_the_rows_of_the_full_load_and_the_whole_load_info(folders):
    full, fps, count, audio, info = video_nodes.RerenderLoadVideoPath().load("Megamind.avi", **LOAD)
    _, keyframes, _, _, images, loaded_info = streamed_keyframes()
    assert images.shape[0] == len(keyframes.indices) == 4 < count == 40
    assert torch.equal(images, full[list(keyframes.indices)])  # bit for bit the pixels of the full load
    assert loaded_info == info and loaded_info.frame_count == 40  # fps, audio span, frames: the whole load
    with pytest.raises(ValueError, match="^keyframes: Expected KEYFRAMES for the 30 frames"):
        video_nodes.RerenderLoadVideoPath().load("Megamind.avi", **{**LOAD, "frame_load_cap": 30}, keyframes=keyframes)


def test_streaming_selection_needs_frames_for_adaptive_mode_and_a_source(folders):
    info = video_nodes.RerenderVideoInfoPath().info("Megamind.avi", **LOAD)[0]
    with pytest.raises(ValueError, match="^mode: Expected one of uniform, explicit, scene_cuts"):
        RerenderKeyframeSelection().select(None, "adaptive", 12, "", 20.0, video_info=info)
    with pytest.raises(ValueError, match="^frames: Expected the video frames or a video_info"):
        RerenderKeyframeSelection().select(None, "uniform", 12, "", 20.0)


def test_flow_on_just_the_keyframes_equals_those_pairs_of_the_whole_video(folders):
    full = video_nodes.RerenderLoadVideoPath().load("Megamind.avi", **LOAD)[0]
    _, keyframes, _, _, images, _ = streamed_keyframes()
    flow_node = RerenderEstimateFlow()
    only = flow_node.estimate(images, pair_mode="keyframes", keyframe_interval=12, keyframe_indices="",
                              keyframes=keyframes, **FLOW_WIDGETS)[0]
    whole = flow_node.estimate(full, pair_mode="keyframes", keyframe_interval=12, keyframe_indices="",
                               keyframes=keyframes, **FLOW_WIDGETS)[0]
    assert only.pairs == keyframe_to_keyframe_pairs(keyframes) == [(0, 12), (0, 24), (12, 24), (0, 28), (24, 28)]
    assert only.frame_count == 40 and only.frame_size == whole.frame_size
    for source, target in only.pairs:  # video indices, the same flows as on the whole video
        for got, expected in zip(only.between(source, target), whole.between(source, target)):
            assert torch.equal(got, expected)
    with pytest.raises(ValueError, match="^pair_mode: Expected keyframes"):
        flow_node.estimate(images, pair_mode="consecutive+keyframes", keyframe_interval=12, keyframe_indices="",
                           keyframes=keyframes, **FLOW_WIDGETS)


def test_keyframe_renderer_reads_the_same_inputs_from_just_the_keyframes(folders):
    full = video_nodes.RerenderLoadVideoPath().load("Megamind.avi", **LOAD)[0]
    _, keyframes, _, _, images, _ = streamed_keyframes()
    flow = RerenderEstimateFlow().estimate(images, pair_mode="keyframes", keyframe_interval=12,
                                           keyframe_indices="", keyframes=keyframes, **FLOW_WIDGETS)[0]
    plans = [plan_render(batch, 12, "", keyframes, False, 20, {}, flow) for batch in (full, images)]
    assert plans[1].keyframes_only and not plans[0].keyframes_only
    assert plans[1].frame_count == plans[0].frame_count == 40 and plans[1].indices == plans[0].indices
    hints = KeyframeHints([], [], None, 40, keyframes.indices)
    keys = [[cache.content_key(*plan.inputs_of(hints, flow)(position)) for position in range(4)] for plan in plans]
    assert keys[0] == keys[1]  # same frames, same flows: the cached renders serve both
    for index in keyframes.indices:
        assert torch.equal(plans[1].frame(index), full[index:index + 1])


# --- Rerender Propagate to Video ------------------------------------------------------------------------------

def in_ram_chain(full, fps, info, keyframes, stylized, widgets) -> np.ndarray:
    """Estimate Flow (consecutive) → EbSynth Propagate → Temporal Blend → Save Video, as the nodes run."""
    flow = RerenderEstimateFlow().estimate(full, pair_mode="consecutive", keyframe_interval=12, keyframe_indices="",
                                           **FLOW_WIDGETS)[0]
    propagation = RerenderEbSynthPropagate().propagate(
        full, stylized, flow, 12, "", keyframes=keyframes, **{k: v for k, v in widgets.items() if k in {
            one.name for one in PROPAGATE}})[0]
    blend = {one.name: widgets[one.name] for one in BLEND}
    frames = RerenderTemporalBlend().blend(propagation, **blend)[0]
    saved = video_nodes.RerenderSaveVideo().save(frames, fps, "in_ram/video", 19, "medium", video_info=info)
    return decoded(saved["result"][0])


@pytest.mark.parametrize("poisson", [False, True], ids=["histogram", "poisson"])
def test_propagate_to_video_equals_the_in_ram_node_chain(folders, poisson):
    _, output_dir = folders
    full, fps, _, _, info = video_nodes.RerenderLoadVideoPath().load("Megamind.avi", **LOAD)
    _, keyframes, _, _, images, loaded_info = streamed_keyframes()
    stylized = styled(images)
    widgets = settings_widgets(poisson_blend=poisson)
    expected = in_ram_chain(full, fps, info, keyframes, stylized, widgets)
    workflow = {"workflow": {"nodes": [{"id": 7, "type": "RerenderPropagateToVideo"}]}}
    node = RerenderPropagateToVideo()
    result = getattr(node, node.FUNCTION)(stylized, keyframes, "", "rerender/long", 19, "medium",
                                          video_info=loaded_info, prompt={"7": {"class_type": "X"}},
                                          extra_pnginfo=workflow, **widgets)
    path = output_dir / "rerender" / "long_00001_.mp4"
    assert result == {"ui": {"images": [{"filename": "long_00001_.mp4", "subfolder": "rerender", "type": "output"}],
                             "animated": (True,)}, "result": (str(path),)}
    got = decoded(path)
    assert got.shape == expected.shape == (40, 88, WIDTH, 3)
    assert np.median([frame.std() for frame in expected]) > 15  # real content, not a blank clip
    different = [frame for frame in range(40) if not np.array_equal(got[frame], expected[frame])]
    assert not different, f"frames {different} differ from the in-RAM chain"
    with av.open(str(path)) as container:
        assert json.loads(container.metadata["workflow"]) == workflow["workflow"]
        assert container.streams.audio[0].codec_context.codec.canonical_name == "ac3"  # the source's audio span


class FakeBar:
    """comfy.utils.ProgressBar: records each update with its preview."""

    updates: list = []

    def __init__(self, total, node_id=None):
        self.total = total

    def update_absolute(self, done, total, preview=None):
        FakeBar.updates.append((done, total, preview))


def test_propagate_to_video_reports_frames_with_previews_and_a_cancel_loses_only_the_running_segment(
        folders, monkeypatch, tmp_path):
    _, output_dir = folders
    _, keyframes, _, _, images, info = streamed_keyframes()
    stylized = styled(images)
    node = RerenderPropagateToVideo()
    monkeypatch.setattr(_comfy, "_comfy_utils", lambda: type("utils", (), {"ProgressBar": FakeBar}))
    FakeBar.updates = []

    def cancel_at_frame_20() -> None:
        done = FakeBar.updates[-1][0] if FakeBar.updates else 0
        if done >= 20:
            raise RuntimeError("Cancel pressed")

    monkeypatch.setattr(_comfy, "check_interrupted", cancel_at_frame_20)
    with pytest.raises(RuntimeError, match="Cancel"):
        node.propagate(stylized, keyframes, video_info=info, filename_prefix="long/video", **settings_widgets())
    assert not list(output_dir.rglob("*.mp4"))  # nothing at the output path until complete
    written = [(done, preview) for done, total, preview in FakeBar.updates if preview is not None]
    assert written and all(total == 40 for _, total, _ in FakeBar.updates)
    kind, image, _ = written[-1][1]
    assert kind == "JPEG" and image.size == (WIDTH, 88)  # a preview of the frame just written

    monkeypatch.setattr(_comfy, "check_interrupted", lambda: None)
    FakeBar.updates = []
    resumed = node.propagate(stylized, keyframes, video_info=info, filename_prefix="long/video",
                             **settings_widgets())["result"][0]
    assert FakeBar.updates[-1][0] == 40
    resumed_steps = sum(preview is None for _, _, preview in FakeBar.updates)
    monkeypatch.setenv("RERENDER_CACHE_DIR", str(tmp_path / "empty-cache"))  # an uninterrupted run from scratch
    FakeBar.updates = []
    fresh = node.propagate(stylized, keyframes, video_info=info, filename_prefix="long/fresh",
                           **settings_widgets())["result"][0]
    assert resumed_steps < sum(preview is None for _, _, preview in FakeBar.updates)  # stored segments were read
    assert np.array_equal(decoded(resumed), decoded(fresh))


def test_propagate_to_video_refuses_a_missing_source_and_keyframes_of_another_load_before_work(folders):
    full, fps, _, _, info = video_nodes.RerenderLoadVideoPath().load("Megamind.avi", frame_load_cap=0,
                                                                       custom_width=WIDTH)
    keyframes = uniform(full.shape[0], 135)
    stylized = styled(full[list(keyframes.indices)])
    node = RerenderPropagateToVideo()
    with pytest.raises(ValueError, match="^video_path: Expected the source video"):
        node.propagate(stylized, keyframes, **settings_widgets())
    with pytest.raises(ValueError, match="^keyframe_indices: Expected keyframes of a video of 270 frames"):
        node.propagate(stylized[:1], uniform(40, 12), video_path="Megamind.avi", **settings_widgets())  # path: all
    with pytest.raises(ValueError, match="^video_info: Expected the VIDEO_INFO of Rerender Load Video"):
        node.propagate(stylized, keyframes, video_info={"source_path": "x"}, **settings_widgets())


def test_node_definitions(folders):
    spec = RerenderPropagateToVideo.INPUT_TYPES()
    required = spec["required"]
    assert {one.name for one in (*PROPAGATE, *BLEND)} <= set(required)
    assert list(required)[-3:] == ["filename_prefix", "crf", "preset"]
    assert spec["optional"]["video_info"][0] == "VIDEO_INFO" and RerenderPropagateToVideo.OUTPUT_NODE
    assert spec["hidden"] == {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO", "unique_id": "UNIQUE_ID"}
    assert "keyframes" in video_nodes.RerenderLoadVideo.INPUT_TYPES()["optional"]
    assert "keyframes" not in video_nodes.RerenderVideoInfoPath.INPUT_TYPES().get("optional", {})
    assert set(RerenderKeyframeSelection.INPUT_TYPES()["optional"]) >= {"frames", "video_info"}
    input_dir, _ = folders
    before = RerenderPropagateToVideo.IS_CHANGED(video_path="Megamind.avi")
    (input_dir / "Megamind.avi").touch()
    assert RerenderPropagateToVideo.IS_CHANGED(video_path="Megamind.avi") != before  # a changed source runs again


# --- where segments run: the executor widgets ------------------------------------------------------------------

def test_executor_widgets_are_generated_from_the_executor_settings(monkeypatch):
    optional = RerenderPropagateToVideo.INPUT_TYPES()["optional"]
    # optional inputs after the required ones, so saved workflows keep their widget order; the region inputs last
    assert list(optional) == ["video_info", *(one.name for one in EXECUTOR_SETTINGS), "mask", "mask_grow", "feather"]
    assert optional["executor"] == (["local", "ray"], {"default": "local", "tooltip": EXECUTOR_SETTINGS[0].tooltip})
    for one in EXECUTOR_SETTINGS:
        kind, options = optional[one.name]
        assert options["default"] == one.default and options["tooltip"] == one.tooltip
        assert kind == (list(one.choices) if one.choices else one.kind)
    assert optional["cpus_per_task"][1]["min"] == 1 and optional["gpus_per_task"][1]["step"] == 0.25
    # Generated, not copied: a changed declaration changes the widget.
    changed = tuple(dataclasses.replace(one, default=3, tooltip="Three.") if one.name == "cpus_per_task" else one
                    for one in EXECUTOR_SETTINGS)
    monkeypatch.setattr(propagate_video, "EXECUTOR_SETTINGS", changed)
    assert RerenderPropagateToVideo.INPUT_TYPES()["optional"]["cpus_per_task"] == (
        "INT", {"default": 3, "min": 1, "max": 256, "tooltip": "Three."})


#: 13 frames of one shot (30–42) at 128 px: keyframes 0, 6, 12, two segments.
SMALL = dict(frame_load_cap=13, skip_first_frames=30, custom_width=WIDTH)


@pytest.fixture
def small_run(folders):
    """``small_run(**executor_widgets)``: the node on :data:`SMALL` (inputs loaded once, before the test patches
    progress or interruption); returns the written file."""
    info = video_nodes.RerenderVideoInfoPath().info("Megamind.avi", **SMALL)[0]
    images = video_nodes.RerenderLoadVideoPath().load("Megamind.avi", **SMALL)[0]
    keyframes = uniform(images.shape[0], 6)
    stylized = styled(images[list(keyframes.indices)])

    def run(**executor_widgets) -> str:
        result = RerenderPropagateToVideo().propagate(stylized, keyframes, video_info=info,
                                                      filename_prefix="small/video", **settings_widgets(),
                                                      **executor_widgets)
        return result["result"][0]

    return run


def test_the_default_executor_is_the_local_one_built_as_the_propagate_command_builds_it(small_run, monkeypatch):
    made = []
    make = executors.make_executor

    def spy(**values):
        made.append(values)
        return make(**values)

    monkeypatch.setattr(executors, "make_executor", spy)
    monkeypatch.setitem(sys.modules, "ray", None)  # the local run needs no Ray
    without_widgets = decoded(small_run())
    assert made == [{one.name: one.default for one in EXECUTOR_SETTINGS}] and made[0]["executor"] == "local"
    with_defaults = decoded(small_run(**{one.name: one.default for one in EXECUTOR_SETTINGS}))
    assert made[1] == made[0]
    assert without_widgets.shape == (13, 88, WIDTH, 3) and np.array_equal(without_widgets, with_defaults)


def test_a_missing_ray_is_refused_naming_the_executor_widget_and_the_install(folders, small_run, monkeypatch):
    _, output_dir = folders
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setattr(engine, "prepare_video", lambda *a, **k: pytest.fail("work started before the check"))
    with pytest.raises(InputError) as raised:
        small_run(executor="ray")
    message = str(raised.value)
    assert message.startswith("executor: Expected Ray installed, for executor 'ray', Got: no module ray"), message
    assert "pip install ray" in message and "restart ComfyUI" in message and "set executor to local" in message
    assert not list(output_dir.rglob("*.mp4"))


def test_executor_values_outside_the_declaration_are_refused_naming_the_widget(small_run):
    with pytest.raises(InputError, match="^executor: Expected one of \\('local', 'ray'\\), Got: 'dask'"):
        small_run(executor="dask")


def test_the_executor_is_closed_however_the_run_ends(small_run, monkeypatch):
    closed = []
    local = executors.LocalExecutor()
    local.close = lambda: closed.append(True)
    monkeypatch.setattr(executors, "make_executor", lambda **values: local)
    small_run()
    monkeypatch.setattr(_comfy, "check_interrupted", lambda: (_ for _ in ()).throw(RuntimeError("Cancel pressed")))
    with pytest.raises(RuntimeError, match="Cancel"):
        small_run()
    assert closed == [True, True]  # a Ray executor shuts down the Ray it started (RayExecutor.close)


# --- the node on Ray: a local Ray with one CPU (one task at a time), started as tests/test_segments_ray.py does;
# the node's executor joins it. Skipped without Ray.

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def ray():
    return pytest.importorskip("ray")


def test_an_unreachable_ray_address_is_refused_naming_the_widget_before_any_work(folders, small_run, ray,
                                                                                 monkeypatch):
    _, output_dir = folders
    if ray.is_initialized():
        ray.shutdown()
    monkeypatch.setattr(engine, "prepare_video", lambda *a, **k: pytest.fail("work started before the check"))
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(InputError) as raised:
        small_run(executor="ray", ray_address=address)
    message = str(raised.value)
    assert message.startswith(f"ray_address: Expected a running Ray cluster, Got: {address}"), message
    assert "leave ray_address empty to start a local Ray" in message
    assert not ray.is_initialized() and not list(output_dir.rglob("*.mp4"))


@pytest.fixture(scope="module")
def one_cpu_ray(ray):
    """A local Ray with one CPU; the node's executor joins it (and so leaves it running)."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def spied_executors(monkeypatch):
    """The executors the node makes (through executors.make_executor, as the propagate command)."""
    made = []
    make = executors.make_executor

    def spy(**values):
        made.append(make(**values))
        return made[-1]

    monkeypatch.setattr(executors, "make_executor", spy)
    return made


def test_the_node_on_ray_writes_the_local_executors_file_with_progress(small_run, ray, one_cpu_ray, spied_executors,
                                                                       monkeypatch, tmp_path):
    local = small_run()
    monkeypatch.setenv("RERENDER_CACHE_DIR", str(tmp_path / "fresh"))  # nothing stored: Ray computes each segment
    monkeypatch.setattr(_comfy, "_comfy_utils", lambda: type("utils", (), {"ProgressBar": FakeBar}))
    FakeBar.updates = []
    on_ray = small_run(executor="ray", cpus_per_task=1)
    (executor,) = [one for one in spied_executors if one.name == "ray"]
    assert len(executor.task_nodes) == 2  # both segments ran as Ray tasks
    with open(local, "rb") as a, open(on_ray, "rb") as b:
        assert a.read() == b.read()
    frames = decoded(on_ray)
    assert frames.shape == (13, 88, 128, 3) and np.median([frame.std() for frame in frames]) > 15
    assert all(total == 13 for _, total, _ in FakeBar.updates) and FakeBar.updates[-1][0] == 13
    previews = [preview for _, _, preview in FakeBar.updates if preview is not None]
    assert previews and previews[-1][0] == "JPEG" and previews[-1][1].size == (128, 88)
    assert not executor._outstanding and ray.is_initialized()  # a Ray the node did not start stays up


def test_cancel_stops_the_ray_tasks_and_writes_nothing(folders, small_run, ray, one_cpu_ray, spied_executors,
                                                       monkeypatch, tmp_path):
    _, output_dir = folders
    monkeypatch.setenv("RERENDER_CACHE_DIR", str(tmp_path / "fresh"))
    checks = []

    def cancel_while_waiting() -> None:  # ComfyUI's Cancel: the interruption point raises
        checks.append(1)
        if len(checks) >= 3:
            raise RuntimeError("Cancel pressed")

    monkeypatch.setattr(_comfy, "check_interrupted", cancel_while_waiting)
    cancelled, cancel = [], ray.cancel

    def recorded_cancel(ref, **options):
        cancelled.append(ref)
        return cancel(ref, **options)

    monkeypatch.setattr(ray, "cancel", recorded_cancel)
    with pytest.raises(RuntimeError, match="Cancel"):
        small_run(executor="ray")
    (executor,) = spied_executors
    assert cancelled and not executor._outstanding  # the outstanding tasks were cancelled
    assert not list(output_dir.rglob("*.mp4"))


def test_resources_no_node_has_are_refused_naming_the_widget(small_run, one_cpu_ray):
    with pytest.raises(InputError, match="^cpus_per_task: Expected resources per task that a node of the Ray "
                                         "cluster has, Got: 8 CPU"):
        small_run(executor="ray", cpus_per_task=8)
