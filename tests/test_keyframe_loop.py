"""The keyframe loop (keyframe/loop.py) and the Keyframe Renderer's checks, without ComfyUI.

The diffusion call is replaced by render functions passed to the loop: ``ChainRender``, a few lines
of torch whose output depends on the frame, the anchor's render and the previous keyframe's render
and features (so a wrongly restored REFERENCE changes the output), and the pure-torch toy model
through the real :func:`keyframe.render.render_keyframe` (every constraint, fp16 feature stores) on
Megamind frames. Running the node in a real ComfyUI is tests/test_pipeline_integration.py.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn

from rerender_video.common import cache
from rerender_video.common.errors import InputError
from rerender_video.common.keyframes import uniform
from rerender_video.flow.types import FlowPairs
from rerender_video.keyframe.attention import FeatureStore
from rerender_video.keyframe.loop import NAMESPACE, STATE_NAMESPACE, keyframe_keys, render_keyframes
from rerender_video.keyframe.plan import KeyframePlan
from rerender_video.keyframe.reference import ReferenceState
from rerender_video.keyframe.render import render_keyframe
from rerender_video.keyframe.settings import ConstraintSettings
from rerender_video.keyframe.toy import ToyAdapter
from rerender_video.nodes.keyframe_renderer import (KeyframeHints, RerenderKeyframeRenderer, base_cache_key,
                                                    plan_render)

STEPS = 3
SIZE = 16


class Interrupted(Exception):
    """Stands in for ComfyUI's InterruptProcessingException."""


# --------------------------------------------------------------------------- a small deterministic render
def _features(image: torch.Tensor) -> FeatureStore:
    store = FeatureStore(torch.float16, "cpu")
    for step in range(STEPS):
        store.put(step, 0, 3, image.reshape(1, -1, 3)[:, :8] * (step + 1))
    return store.freeze()


class ChainRender:
    """Render = ½·frame + ¼·anchor render + ¼·previous render + the previous features' mean; records calls."""

    def __init__(self, frames: torch.Tensor) -> None:
        self.frames = frames
        self.calls: list[tuple] = []

    def __call__(self, frame_index, reference, *, release_reference, progress):
        self.calls.append((frame_index, None if reference is None else (reference.anchor_index,
                                                                        reference.previous_index),
                           release_reference))
        frame = self.frames[frame_index:frame_index + 1]
        for step in range(STEPS):
            progress(step + 1)
        if reference is None:
            image = frame * 0.5
            store = _features(image)
            reference = ReferenceState(
                anchor_index=frame_index, previous_index=frame_index, previous_features_index=frame_index,
                keyframes_rendered=0, frame_size=(SIZE, SIZE), sigmas=torch.tensor([2.0, 1.0, 0.5, 0.0]),
                blocks=(3,), branches=(0,), anchor_features=store, previous_features=store,
                anchor_x0={s: image.mean() * torch.ones(1, 4, 2, 2) for s in range(STEPS)}, anchor_render=image,
                previous_render=image)
        else:
            memory = reference.previous_features.get(STEPS - 1, 0, 3).float().mean()
            image = (0.5 * frame + 0.25 * reference.anchor_render + 0.25 * reference.previous_render
                     + 0.01 * memory + 0.001 * reference.anchor_x0[1].mean()).clamp(0, 1)
            reference = replace(reference, previous_index=frame_index, previous_features_index=frame_index,
                                previous_render=image, previous_features=_features(image),
                                keyframes_rendered=reference.keyframes_rendered + 1)
        latent = image.permute(0, 3, 1, 2)[:, :, ::8, ::8]
        latent = torch.cat([latent, latent[:, :1]], 1)
        return SimpleNamespace(image=image, latent=latent, reference=reference, info={"steps_run": STEPS})


def interrupting(after_calls: int):
    """A progress callback that raises on its ``after_calls``-th call (ComfyUI's Cancel)."""
    seen = []

    def progress(done, preview=None):
        seen.append(done)
        if len(seen) == after_calls:
            raise Interrupted
    return progress


@pytest.fixture(scope="module")
def frames():
    generator = torch.Generator().manual_seed(0)
    return torch.rand(10, SIZE, SIZE, 3, generator=generator)


INDICES = (0, 3, 6, 9)


def inputs_of(frames, indices=INDICES):
    return lambda position: [frames[indices[position]]]


# --------------------------------------------------------------------------- order and stages
class TestOrder:
    def test_anchor_first_then_anchor_and_previous(self, frames):
        render = ChainRender(frames)
        result = render_keyframes(render, INDICES)
        assert render.calls == [(0, None, False), (3, (0, 0), True), (6, (0, 3), True), (9, (0, 6), True)]
        assert result.images.shape == (4, SIZE, SIZE, 3) and result.latents.shape == (4, 4, 2, 2)
        assert result.indices == INDICES and result.rendered == list(INDICES) and result.cached == []

    def test_first_keyframe_only(self, frames):
        render = ChainRender(frames)
        result = render_keyframes(render, INDICES, first_keyframe_only=True)
        assert [call[0] for call in render.calls] == [0] and result.indices == (0,)
        assert result.images.shape == (1, SIZE, SIZE, 3)

    def test_explicit_anchor_is_the_first_keyframe(self, frames):
        render = ChainRender(frames)
        render_keyframes(render, (2, 5, 7))
        assert render.calls[1:] == [(5, (2, 2), True), (7, (2, 5), True)]

    def test_progress_and_previews(self, frames):
        reports = []
        render = ChainRender(frames)
        result = render_keyframes(render, INDICES, steps_per_keyframe=[STEPS] * 4,
                                  progress=lambda done, preview=None: reports.append((done, preview)))
        assert [done for done, _ in reports] == sorted(done for done, _ in reports)  # never goes back
        assert reports[-1][0] == 4 * STEPS
        previews = [preview for _, preview in reports if preview is not None]
        assert len(previews) == 4
        for preview, image in zip(previews, result.images):
            assert preview.shape == (SIZE, SIZE, 3) and torch.equal(preview, image)

    @pytest.mark.parametrize("indices", [(), (3, 0), (0, 3, 3)])
    def test_bad_indices(self, frames, indices):
        with pytest.raises(InputError, match="keyframes"):
            render_keyframes(ChainRender(frames), indices)


# --------------------------------------------------------------------------- cache, interruption, resume
class TestCacheAndResume:
    def test_no_cache_writes_nothing(self, frames):
        render_keyframes(ChainRender(frames), INDICES)
        assert not list(cache.cache_root().iterdir())

    def test_second_run_is_served_from_the_cache(self, frames):
        first = render_keyframes(ChainRender(frames), INDICES, base_key="b", inputs_of=inputs_of(frames))
        render = ChainRender(frames)
        second = render_keyframes(render, INDICES, base_key="b", inputs_of=inputs_of(frames))
        assert render.calls == [] and second.cached == list(INDICES) and second.rendered == []
        assert torch.equal(first.images, second.images) and torch.equal(first.latents, second.latents)
        # only the last keyframe's REFERENCE state is kept next to the renders
        assert len(list((cache.cache_root() / STATE_NAMESPACE).iterdir())) == 1
        assert len(list((cache.cache_root() / NAMESPACE).iterdir())) == 4

    def test_interrupted_run_resumes_after_the_last_finished_keyframe(self, frames):
        expected = render_keyframes(ChainRender(frames), INDICES)
        with pytest.raises(Interrupted):  # keyframes 0 and 3 finish, 6 is stopped at its 2nd step
            render_keyframes(ChainRender(frames), INDICES, base_key="b", inputs_of=inputs_of(frames),
                             steps_per_keyframe=[STEPS] * 4, progress=interrupting(2 * (STEPS + 1) + 2))
        render = ChainRender(frames)
        resumed = render_keyframes(render, INDICES, base_key="b", inputs_of=inputs_of(frames))
        assert [call[0] for call in render.calls] == [6, 9]
        assert render.calls[0] == (6, (0, 3), True)
        assert resumed.cached == [0, 3] and resumed.rendered == [6, 9] and resumed.resumed_after == 3
        assert torch.equal(resumed.images, expected.images) and torch.equal(resumed.latents, expected.latents)
        assert [info["source"] for info in resumed.infos] == ["cache", "cache", "rendered", "rendered"]

    def test_interruption_between_keyframes(self, frames):
        expected = render_keyframes(ChainRender(frames), INDICES)
        with pytest.raises(Interrupted):  # raised by the report after keyframe 3 (its preview)
            render_keyframes(ChainRender(frames), INDICES, base_key="b", inputs_of=inputs_of(frames),
                             steps_per_keyframe=[STEPS] * 4, progress=interrupting(2 * (STEPS + 1)))
        render = ChainRender(frames)
        resumed = render_keyframes(render, INDICES, base_key="b", inputs_of=inputs_of(frames))
        assert [call[0] for call in render.calls] == [6, 9]
        assert torch.equal(resumed.images, expected.images)

    def test_lost_state_falls_back_to_the_newest_saved_one(self, frames):
        expected = render_keyframes(ChainRender(frames), INDICES)
        keys = keyframe_keys("b", INDICES, inputs_of(frames))
        with pytest.raises(Interrupted):
            render_keyframes(ChainRender(frames), INDICES, base_key="b", inputs_of=inputs_of(frames),
                             steps_per_keyframe=[STEPS] * 4, progress=interrupting(3 * (STEPS + 1) + 1))
        # a crash between writing keyframe 6 and its state: only the anchor's REFERENCE is left
        for key in keys:
            folder = cache.lookup(STATE_NAMESPACE, key)
            if folder is not None:
                import shutil
                shutil.rmtree(folder)
        render = ChainRender(frames)
        resumed = render_keyframes(render, INDICES, base_key="b", inputs_of=inputs_of(frames))
        assert [call[0] for call in render.calls] == [3, 6, 9] and resumed.resumed_after == 0
        assert torch.equal(resumed.images, expected.images)

    def test_first_keyframe_only_then_all_reuses_the_anchor(self, frames):
        expected = render_keyframes(ChainRender(frames), INDICES)
        anchor = render_keyframes(ChainRender(frames), INDICES, first_keyframe_only=True, base_key="b",
                                  inputs_of=inputs_of(frames))
        render = ChainRender(frames)
        everything = render_keyframes(render, INDICES, base_key="b", inputs_of=inputs_of(frames))
        assert [call[0] for call in render.calls] == [3, 6, 9] and everything.resumed_after == 0
        assert torch.equal(everything.images[:1], anchor.images)
        assert torch.equal(everything.images, expected.images)

    def test_changing_a_later_keyframe_keeps_the_anchor(self, frames):
        before = render_keyframes(ChainRender(frames), INDICES, base_key="b", inputs_of=inputs_of(frames))
        changed = frames.clone()
        changed[6] = 1 - changed[6]
        render = ChainRender(changed)
        result = render_keyframes(render, INDICES, base_key="b", inputs_of=inputs_of(changed))
        # keyframe 3's REFERENCE state was dropped when 6's was written (one state per chain is kept),
        # so 3 is rendered again from the anchor's — to the same image
        assert [call[0] for call in render.calls] == [3, 6, 9] and result.cached == [0]
        assert torch.equal(result.images[:2], before.images[:2]) and not torch.equal(result.images[2], before.images[2])


class TestKeys:
    def test_same_inputs_same_keys(self, frames):
        assert keyframe_keys("b", INDICES, inputs_of(frames)) == keyframe_keys("b", INDICES,
                                                                              inputs_of(frames.clone()))

    def test_a_change_moves_that_keyframe_and_the_later_ones(self, frames):
        keys = keyframe_keys("b", INDICES, inputs_of(frames))
        changed = frames.clone()
        changed[6, 0, 0, 0] += 1e-3
        moved = keyframe_keys("b", INDICES, inputs_of(changed))
        assert moved[:2] == keys[:2] and all(a != b for a, b in zip(moved[2:], keys[2:]))
        assert all(a != b for a, b in zip(keyframe_keys("c", INDICES, inputs_of(frames)), keys))
        other = keyframe_keys("b", (0, 3, 7, 9), inputs_of(frames, (0, 3, 7, 9)))
        assert other[:2] == keys[:2] and other[2] != keys[2]
        assert keyframe_keys("b", (1, 3), inputs_of(frames, (1, 3)))[0] != keys[0]


# --------------------------------------------------------------------------- the toy model end to end
@pytest.fixture(scope="module")
def toy_video(megamind_frames):
    import torch.nn.functional as F

    from rerender_video.flow.dis import DisFlow
    from rerender_video.flow.estimate import estimate_flow

    crop = megamind_frames[[30, 34, 38, 42], :, 96:624].permute(0, 3, 1, 2)
    frames = F.interpolate(crop, size=(64, 64), mode="area").permute(0, 2, 3, 1).contiguous()
    flow = estimate_flow(frames, KeyframePlan(ConstraintSettings(), 6).required_flow_pairs([0, 1, 2, 3]),
                         DisFlow("medium"))
    return frames, flow


def toy_render(frames, flow):
    adapter = ToyAdapter(steps=6, seed=5)
    settings = ConstraintSettings.from_inputs({"mask_start": 0.3, "mask_end": 0.9})  # pixel fusion on steps 2-4 of 6

    def render(frame_index, reference, *, release_reference, progress):
        return render_keyframe(adapter, frames[frame_index:frame_index + 1], frame_index, reference, flow, settings,
                               release_reference=release_reference, progress=progress)
    return render


def test_toy_model_resume_is_bit_exact(toy_video, one_thread):
    frames, flow = toy_video
    indices = (0, 1, 2, 3)
    expected = render_keyframes(toy_render(frames, flow), indices)
    assert [info["passes"] for info in expected.infos] == [1, 2, 2, 2]  # pass 2 with pixel fusion ran
    seen = {"previews": 0, "steps": 0}

    def progress(done, preview=None):
        if preview is not None:
            seen["previews"] += 1
        elif seen["previews"] == 2:
            seen["steps"] += 1
            if seen["steps"] == 3:  # inside keyframe 2, after keyframes 0 and 1 finished
                raise Interrupted
    with pytest.raises(Interrupted):
        render_keyframes(toy_render(frames, flow), indices, base_key="toy", inputs_of=inputs_of(frames, indices),
                         progress=progress)
    resumed = render_keyframes(toy_render(frames, flow), indices, base_key="toy",
                               inputs_of=inputs_of(frames, indices))
    assert resumed.cached == [0, 1] and resumed.rendered == [2, 3] and resumed.resumed_after == 1
    assert torch.equal(resumed.images, expected.images)
    assert torch.equal(resumed.latents, expected.latents)


class RecordingFlow:
    """A FLOW that records the pairs read through ``between``."""

    def __init__(self, flow: FlowPairs) -> None:
        self.flow, self.frame_size, self.read = flow, flow.frame_size, []

    def between(self, source, target):
        self.read.append((source, target))
        return self.flow.between(source, target)

    def has(self, source, target):
        return self.flow.has(source, target)


@pytest.mark.parametrize("switches", [
    {},                                                   # shape + pixel fusion
    {"pixel_fusion": False},                              # shape fusion only: (previous, k) is not read
    {"warp_start": 1.0, "warp_end": 0.0},                 # pixel fusion only
    {"pixel_fusion": False, "warp_start": 1.0, "warp_end": 0.0},  # no flow at all
])
def test_cache_key_holds_exactly_the_flow_pairs_the_render_reads(toy_video, one_thread, switches):
    frames, flow = toy_video
    values = {"mask_start": 0.3, "mask_end": 0.9, **switches}
    node_plan = plan_render(frames, 1, "", None, False, 6, values, flow)
    settings = node_plan.settings
    rendered_flow, keyed_flow = RecordingFlow(flow), RecordingFlow(flow)
    adapter = ToyAdapter(steps=6, seed=5)
    read: list[list] = []

    def render(frame_index, reference, *, release_reference, progress):
        rendered_flow.read = []
        result = render_keyframe(adapter, frames[frame_index:frame_index + 1], frame_index, reference, rendered_flow,
                                 settings, release_reference=release_reference, progress=progress)
        read.append(sorted(set(rendered_flow.read)))
        return result

    render_keyframes(render, node_plan.indices)
    hints = KeyframeHints(conditioning(None), conditioning(None), None, 4, node_plan.indices)
    parts = node_plan.inputs_of(hints, keyed_flow, node_plan.keyframe_plan(len(adapter.sigmas) - 1))
    keyed = []
    for position in range(4):
        keyed_flow.read = []
        parts(position)
        keyed.append(sorted(set(keyed_flow.read)))
    assert keyed == read
    assert bool(read[-1]) == (not (switches.get("pixel_fusion") is False and "warp_start" in switches))


# --------------------------------------------------------------------------- flow pairs
def flow_with(pairs, frame_count=10, size=(SIZE, SIZE)):
    count = len(pairs)
    zeros = np.zeros((count, *size, 2), np.float32)
    masks = np.zeros((count, *size), np.float32)
    return FlowPairs(list(pairs), zeros, zeros, masks, masks, size, frame_count, "test", {"pair_mode": "consecutive"})


# --------------------------------------------------------------------------- the node's checks (no ComfyUI)
WIDGETS = {"cross_start": 0.0, "cross_end": 1.0, "warp_start": 0.0, "warp_end": 0.1, "mask_start": 0.5,
           "mask_end": 0.8, "ada_start": 0.8, "ada_end": 1.0, "mask_strength": 0.5, "inner_strength": 0.9,
           "smooth_boundary": True, "loose_cfattn": False, "style_update_freq": 1, "pixel_fusion": True}
ALL_PAIRS = flow_with([(0, 4), (0, 8), (4, 8)], frame_count=9)


def plan(frames, interval=4, indices="", keyframes=None, first_only=False, flow=ALL_PAIRS, control=None,
         **widgets):
    return plan_render(frames, interval, indices, keyframes, first_only, 20, {**WIDGETS, **widgets}, flow, control)


class TestNodeInputs:
    def test_definition(self):
        spec = RerenderKeyframeRenderer.INPUT_TYPES()
        required, optional = spec["required"], spec["optional"]
        for name in ("cross_start", "warp_end", "mask_strength", "pixel_fusion", "style_update_freq"):
            assert name in required
        assert {"flow", "keyframes", "control_images"} <= set(optional)
        assert "(anchor, k)" in optional["flow"][1]["tooltip"] and "pair_mode" in optional["flow"][1]["tooltip"]
        assert required["seed"][1]["control_after_generate"] is False  # a new seed would re-render everything
        # the shared constraint widgets come last, so a setting added to them keeps saved workflows loading
        names = list(required)
        assert names[names.index("use_cache") + 1] == "cross_start" and names[-1] == "pixel_fusion"

    def test_settings_pass_through(self):
        settings = ConstraintSettings.from_inputs({**WIDGETS, "warp_start": 1.0, "warp_end": 0.0,
                                                   "style_update_freq": 3})
        assert not settings.warp_period.enabled and settings.style_update_freq == 3
        assert settings.mask_period.strict

    def test_valid_plan(self, frames):
        made = plan(frames[:9])
        assert made.indices == (0, 4, 8) and made.uses_flow() and made.steps_per_keyframe(20) == [20, 20, 20]
        assert plan(frames[:9], rough_render="full").steps_per_keyframe(20) == [20, 29, 29]

    def test_interval_larger_than_the_video(self, frames):
        with pytest.raises(InputError, match="keyframe_interval"):
            plan(frames[:9], interval=9)

    def test_empty_list(self, frames):
        with pytest.raises(InputError, match="at least one frame"):
            plan(frames[:9], indices=" ,, ")

    def test_indices_out_of_range(self, frames):
        with pytest.raises(InputError, match=r"indices in \[0, 8\]"):
            plan(frames[:9], indices="0, 4, 9")

    def test_duplicate_indices(self, frames):
        with pytest.raises(InputError, match="duplicates"):
            plan(frames[:9], indices="0, 4, 4")

    def test_keyframes_of_another_video(self, frames):
        with pytest.raises(InputError, match="KEYFRAMES for 9 frames"):
            plan(frames[:9], keyframes=uniform(10, 4))

    def test_frames_not_multiple_of_8(self):
        with pytest.raises(InputError, match="frames: Expected a width and height that are multiples of 8"):
            plan(torch.rand(9, 16, 20, 3))

    def test_missing_flow(self, frames):
        with pytest.raises(InputError, match="flow: .*keyframes or consecutive\\+keyframes"):
            plan(frames[:9], flow=None)

    def test_missing_flow_pairs(self, frames):
        with pytest.raises(InputError, match=r"\(0, 4\)"):
            plan(frames[:9], flow=flow_with([(i, i + 1) for i in range(8)], frame_count=9))

    def test_no_flow_needed(self, frames):
        assert not plan(frames[:9], flow=None, first_only=True).uses_flow()
        no_fusion = plan(frames[:9], flow=None, warp_start=1.0, warp_end=0.0, pixel_fusion=False)
        assert not no_fusion.uses_flow()

    def test_control_images_count(self, frames):
        plan(frames[:9], control=frames[:9])
        plan(frames[:9], control=frames[:3])  # one per keyframe
        with pytest.raises(InputError, match="control_images"):
            plan(frames[:9], control=frames[:5])


# --------------------------------------------------------------------------- ControlNet hints and cache key
class FakeControlNet:
    """The part of ComfyUI's ControlBase the renderer uses."""

    def __init__(self, hint=None, strength=1.0, weight=1.0):
        self.cond_hint_original = hint
        self.strength = strength
        self.timestep_percent_range = (0.0, 1.0)
        self.vae = None
        self.previous_controlnet = None
        self.extra_concat_orig = []
        self.control_model = nn.Linear(2, 2)
        with torch.no_grad():
            for parameter in self.control_model.parameters():
                parameter.fill_(weight)

    def copy(self):
        twin = FakeControlNet(self.cond_hint_original, self.strength)
        twin.control_model = self.control_model
        return twin

    def set_cond_hint(self, hint, strength=1.0, timestep_percent_range=(0.0, 1.0), vae=None, extra_concat=()):
        self.cond_hint_original, self.strength, self.timestep_percent_range = hint, strength, timestep_percent_range
        return self

    def set_previous_controlnet(self, net):
        self.previous_controlnet = net
        return self


def conditioning(net, value=0.0):
    return [[torch.full((1, 77, 8), value), {"pooled_output": torch.ones(1, 8), "control": net}]]


class TestHints:
    def test_each_keyframe_gets_its_control_image(self, frames):
        net = FakeControlNet(frames[:1].movedim(-1, 1), strength=0.7)
        positive, negative = conditioning(net), conditioning(net, 1.0)
        hints = KeyframeHints(positive, negative, frames, 10, (0, 4, 8))
        pos, neg = hints.conditioning(4)
        copy = pos[0][1]["control"]
        assert copy is not net and neg[0][1]["control"] is copy  # one copy shared, as Apply ControlNet does
        assert torch.equal(copy.cond_hint_original, frames[4:5].movedim(-1, 1)) and copy.strength == 0.7
        assert torch.equal(net.cond_hint_original, frames[:1].movedim(-1, 1))  # the input is untouched
        by_keyframe = KeyframeHints(positive, negative, frames[[0, 4, 8]], 10, (0, 4, 8))
        assert torch.equal(by_keyframe.conditioning(8)[0][0][1]["control"].cond_hint_original,
                           frames[8:9].movedim(-1, 1))

    def test_chain_is_copied_whole(self, frames):
        first, second = FakeControlNet(frames[:1].movedim(-1, 1)), FakeControlNet(frames[:1].movedim(-1, 1))
        second.set_previous_controlnet(first)
        pos, _ = KeyframeHints(conditioning(second), conditioning(second), frames, 10, (0, 5)).conditioning(5)
        top = pos[0][1]["control"]
        assert top is not second and top.previous_controlnet is not first
        assert torch.equal(top.previous_controlnet.cond_hint_original, frames[5:6].movedim(-1, 1))

    def test_without_control_images(self, frames):
        per_frame = FakeControlNet(frames.movedim(-1, 1))      # a hint batch with one image per frame
        single = FakeControlNet(frames[2:3].movedim(-1, 1))     # one hint for all
        per_frame.set_previous_controlnet(single)
        hints = KeyframeHints(conditioning(per_frame), conditioning(per_frame), None, 10, (0, 5))
        top = hints.conditioning(5)[0][0][1]["control"]
        assert torch.equal(top.cond_hint_original, frames[5:6].movedim(-1, 1))
        assert torch.equal(top.previous_controlnet.cond_hint_original, frames[2:3].movedim(-1, 1))

    def test_control_images_need_a_controlnet(self, frames):
        with pytest.raises(InputError, match="control_images"):
            KeyframeHints(conditioning(None), conditioning(None), frames, 10, (0, 5))


def stand_in_model(weight=0.5, patches=None, options=None):
    base = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 4))
    with torch.no_grad():
        for parameter in base.parameters():
            parameter.fill_(weight)
    base.model_config = type("SD15", (), {})()
    base.model_type = SimpleNamespace(name="EPS")
    return SimpleNamespace(model=base, patches=patches or {}, object_patches={},
                           model_options=options or {"transformer_options": {}})


def key(model=None, vae_weight=1.0, positive=None, sigmas=(2.0, 1.0, 0.0), seed=1, **widgets):
    vae = SimpleNamespace(first_stage_model=nn.Linear(3, 3))
    with torch.no_grad():
        for parameter in vae.first_stage_model.parameters():
            parameter.fill_(vae_weight)
    values = {**WIDGETS, **widgets}
    return base_cache_key(model or stand_in_model(), vae, positive or conditioning(FakeControlNet()),
                          conditioning(None), torch.tensor(sigmas), ConstraintSettings.from_inputs(values), seed=seed,
                          cfg=7.5, sampler_name="ddim", scheduler="ddim_uniform")


class TestBaseKey:
    def test_same_inputs_in_new_objects_same_key(self):
        assert key() == key() and key() is not None

    def test_every_input_moves_the_key(self):
        reference = key()
        lora = {"diffusion_model.0.weight": [(0.8, torch.ones(8, 8) * 0.1, 1.0, None, None)]}
        weaker = {"diffusion_model.0.weight": [(0.4, torch.ones(8, 8) * 0.1, 1.0, None, None)]}
        changed = [
            key(model=stand_in_model(weight=0.6)),
            key(model=stand_in_model(patches=lora)),
            key(model=stand_in_model(options={"transformer_options": {}, "sampler_cfg_function": lambda a: a})),
            key(vae_weight=2.0),
            key(positive=conditioning(FakeControlNet(), value=0.5)),
            key(positive=conditioning(FakeControlNet(strength=0.5))),
            key(positive=conditioning(FakeControlNet(weight=2.0))),
            key(sigmas=(3.0, 1.0, 0.0)),
            key(seed=2),
            key(mask_strength=0.4),
            key(loose_cfattn=True),
        ]
        assert key(model=stand_in_model(patches=lora)) != key(model=stand_in_model(patches=weaker))
        assert reference not in changed and len(set(changed)) == len(changed)

    def test_controlnet_hints_are_not_in_the_base_key(self, frames):
        # hints are hashed per keyframe (they differ per keyframe); the shared key must not see them
        assert key(positive=conditioning(FakeControlNet(frames[:1]))) == key(
            positive=conditioning(FakeControlNet(frames[1:2])))

    def test_patched_weights_are_not_sampled(self):
        lora = {"0.weight": [(1.0, torch.ones(8, 8), 1.0, None, None)]}
        loaded = stand_in_model(patches=lora)
        with torch.no_grad():
            loaded.model[0].weight.add_(1.0)  # ComfyUI patches weights in place while the model is loaded
        assert key(model=loaded) == key(model=stand_in_model(patches=lora))
