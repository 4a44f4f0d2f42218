"""One keyframe end to end on the pure-torch toy model (keyframe/render.py, keyframe/toy.py).

Frames are Megamind frames 30, 40, 50 (one shot), centre-cropped and resized to 64×64; the FLOW
holds OpenCV DIS flows with a forward–backward occlusion check between them.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from rerender_video.common.errors import InputError
from rerender_video.flow.types import FlowPairs
from rerender_video.keyframe.attention import FeatureStore
from rerender_video.keyframe.constraints import KeyframeConstraints
from rerender_video.keyframe.fusion import soft_occlusion
from rerender_video.keyframe.plan import planned_steps
from rerender_video.keyframe.render import render_keyframe
from rerender_video.keyframe.settings import ConstraintSettings
from rerender_video.keyframe.toy import ToyAdapter
from rerender_video.keyframe.windows import StepWindow
from rerender_video.tests.keyframe_data import keyframe_video, make_flow

SIZE = 64
STEPS = 10
SPLIT = 6  # first pixel-fusion step at 10 steps (mask window 0.5-0.8, strict)
OFF = StepWindow(1.0, 0.0)
EXACT = ConstraintSettings(feature_dtype=torch.float32, rough_render="full")
EARLY = dataclasses.replace(EXACT, rough_render="early")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def video(megamind_path):
    return keyframe_video(megamind_path, SIZE)


@pytest.fixture(scope="module")
def adapter():
    return ToyAdapter(steps=STEPS, seed=7)


@pytest.fixture(scope="module")
def anchor(adapter, video):
    images, _ = video
    return render_keyframe(adapter, images[:1], 0, settings=EXACT)


@pytest.fixture(scope="module")
def keyframe1(adapter, video, anchor):
    images, flow = video
    return render_keyframe(adapter, images[1:2], 1, anchor.reference, flow, EXACT)


def copy_store(store: FeatureStore) -> FeatureStore:
    copy = FeatureStore(store.dtype, store.offload)
    for key in store.keys():
        copy.put(*key, store.get(*key))
    return copy.freeze()


def same_store(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a.get(*k), b.get(*k)) for k in a.keys())


class TestAnchor:
    def test_records_every_step_branch_and_decoder_block(self, anchor):
        reference = anchor.reference
        assert len(reference.anchor_features) == STEPS * 2 * 9
        assert reference.anchor_features.steps() == list(range(STEPS))
        assert reference.branches == (0, 1) and reference.blocks == tuple(range(3, 12))
        assert reference.previous_features is reference.anchor_features and reference.anchor_features.frozen
        assert sorted(reference.anchor_x0) == list(range(STEPS))
        assert reference.anchor_x0[0].shape == (1, 4, SIZE // 8, SIZE // 8)
        assert reference.anchor_render.shape == (1, SIZE, SIZE, 3) and reference.frame_size == (SIZE, SIZE)
        assert anchor.info["steps_run"] == STEPS and reference.keyframes_rendered == 0

    def test_token_shapes_follow_the_decoder_resolutions(self, anchor):
        store = anchor.reference.anchor_features
        assert store.get(0, 0, 3).shape == (1, 4, 32)      # latent/4: 2×2 tokens
        assert store.get(0, 0, 6).shape == (1, 16, 32)     # latent/2
        assert store.get(0, 1, 11).shape == (1, 64, 32)    # latent

    def test_cfg_batched_or_separate_records_the_same(self, video, anchor):
        images, _ = video
        separate = render_keyframe(ToyAdapter(steps=STEPS, seed=7, batch_cfg=False), images[:1], 0, settings=EXACT)
        a, b = anchor.reference.anchor_features, separate.reference.anchor_features
        assert a.keys() == b.keys()
        for key in a.keys():
            torch.testing.assert_close(a.get(*key), b.get(*key), rtol=1e-4, atol=1e-4)


class TestResume:
    @pytest.mark.parametrize("second", [False, True], ids=["first-keyframe", "second-keyframe"])
    def test_resumed_pass2_equals_full_two_pass(self, adapter, video, anchor, keyframe1, second):
        images, flow = video
        reference = keyframe1.reference if second else anchor.reference
        index = 2 if second else 1
        if second:
            assert reference.previous_features is not reference.anchor_features  # [anchor; previous] path
        resumed = render_keyframe(adapter, images[index:index + 1], index, reference, flow, EXACT)
        full = render_keyframe(adapter, images[index:index + 1], index, reference, flow, EXACT, resume=False)
        assert resumed.info["resumed_at"] == 6 and full.info["resumed_at"] is None
        assert resumed.info["steps_run"] == STEPS + (STEPS - 6) and full.info["steps_run"] == 2 * STEPS
        assert torch.equal(resumed.latent, full.latent)
        assert torch.equal(resumed.image, full.image)
        assert torch.equal(resumed.rough_image, full.rough_image)
        assert same_store(resumed.reference.previous_features, full.reference.previous_features)
        assert resumed.reference.previous_features.steps() == list(range(STEPS))

    def test_pass2_differs_from_pass1_only_through_pixel_fusion(self, adapter, video, anchor):
        images, flow = video
        no_pixel = dataclasses.replace(EXACT, pixel_fusion=False)
        single = render_keyframe(adapter, images[1:2], 1, anchor.reference, flow, no_pixel)
        two = render_keyframe(adapter, images[1:2], 1, anchor.reference, flow, EXACT)
        assert single.info["passes"] == 1 and two.info["passes"] == 2
        assert torch.equal(adapter.decode(single.latent), two.rough_image)  # pass 1 == the single pass
        assert not torch.equal(single.latent, two.latent)


class TestConstraints:
    def test_windows_act_on_the_documented_steps(self, keyframe1):
        info = keyframe1.info
        assert info["applied_pass1"] == {"adain": [8, 9], "shape": [0, 1], "pixel": []}
        assert info["applied_pass2"] == {"adain": [8, 9], "shape": [], "pixel": [6, 7]}  # resumed at 6

    @pytest.mark.parametrize("switch_off", [
        {"cross_period": OFF}, {"warp_period": OFF}, {"mask_period": OFF}, {"ada_period": OFF},
        {"fidelity_strength": 0.0}, {"smooth_boundary": False}, {"loose_cfattn": True}])
    def test_every_constraint_changes_the_latent(self, adapter, video, anchor, keyframe1, switch_off):
        images, flow = video
        changed = render_keyframe(adapter, images[1:2], 1, anchor.reference, flow,
                                  dataclasses.replace(EXACT, **switch_off))
        difference = (changed.latent - keyframe1.latent).abs().mean().item()
        assert difference > 1e-4, switch_off

    def test_cross_attention_reads_the_reference(self, video, anchor, keyframe1):
        images, flow = video
        # With cross-frame attention and no x̂0 constraints, the output depends on the anchor's features.
        settings = dataclasses.replace(EXACT, warp_period=OFF, ada_period=OFF, pixel_fusion=False)
        adapter = ToyAdapter(steps=STEPS, seed=7)
        a = render_keyframe(adapter, images[2:3], 2, anchor.reference, flow, settings)
        b = render_keyframe(adapter, images[2:3], 2, keyframe1.reference, flow, settings)
        assert (a.latent - b.latent).abs().mean() > 1e-4

    def test_sdpa_and_manual_attention_agree(self, video, anchor):
        images, flow = video
        outs = [render_keyframe(ToyAdapter(steps=STEPS, seed=7, backend=b), images[1:2], 1, anchor.reference, flow,
                                EXACT).latent for b in ("manual", "sdpa")]
        torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-4)


class TestReferenceUpdates:
    def test_input_reference_is_not_changed(self, anchor, keyframe1):
        assert anchor.reference.previous_index == 0 and anchor.reference.keyframes_rendered == 0
        assert keyframe1.reference.previous_index == 1 and keyframe1.reference.keyframes_rendered == 1
        assert keyframe1.reference.anchor_features is anchor.reference.anchor_features
        assert torch.equal(keyframe1.reference.previous_render, keyframe1.image)
        assert keyframe1.reference.previous_features.frozen

    def test_release_reference_frees_the_old_previous_features(self, adapter, video, anchor, keyframe1):
        images, flow = video
        kept = render_keyframe(adapter, images[2:3], 2, keyframe1.reference, flow, EXACT)
        old = keyframe1.reference.previous_features
        before = len(old)
        # A loop that owns its reference (here a copy: the module's fixtures share the stores).
        owned = dataclasses.replace(keyframe1.reference, previous_features=copy_store(old))
        released = render_keyframe(adapter, images[2:3], 2, owned, flow, EXACT, release_reference=True)
        assert torch.equal(released.latent, kept.latent)
        assert owned.previous_features.steps() == [STEPS - 1] and len(old) == before  # only the copy shrank
        assert same_store(released.reference.previous_features, kept.reference.previous_features)

    def test_style_update_freq_counts_keyframes(self, adapter, video, anchor):
        images, flow = video
        settings = dataclasses.replace(EXACT, style_update_freq=2, pixel_fusion=False)
        first = render_keyframe(adapter, images[1:2], 1, anchor.reference, flow, settings)
        second = render_keyframe(adapter, images[2:3], 2, first.reference, flow, settings)
        assert first.info["updated_previous"] and not second.info["updated_previous"]
        assert first.reference.previous_features_index == 1
        assert second.reference.previous_features is first.reference.previous_features
        assert second.reference.previous_features_index == 1 and second.reference.previous_index == 2
        assert torch.equal(second.reference.previous_render, second.image)  # renders always move on


class RecordingAdapter(ToyAdapter):
    """The toy adapter, keeping every x̂0 it hands to the sampler (after the post-CFG edits)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.denoised: list[torch.Tensor] = []

    def denoise(self, x, sigma, constraints):
        out = super().denoise(x, sigma, constraints)
        self.denoised.append(out.clone())
        return out


class WithoutOcclusion:
    """A FLOW with the same vectors and no occluded pixel."""

    def __init__(self, flow: FlowPairs) -> None:
        self.flow, self.frame_size = flow, flow.frame_size

    def between(self, source: int, target: int):
        vectors, occlusion = self.flow.between(source, target)
        return vectors, torch.zeros_like(occlusion)


class TestEarlyRoughRender:
    """``rough_render="early"``: pass 1 stops at the pixel-fusion window, Ī' = D(pass 1's x̂0 there)."""

    def test_pass1_runs_only_the_steps_before_the_window(self, video, keyframe1):
        images, flow = video
        adapter = ToyAdapter(steps=STEPS, seed=7)
        done = []
        result = render_keyframe(adapter, images[2:3], 2, keyframe1.reference, flow, EARLY, progress=done.append)
        info = result.info
        assert info["rough_render"] == "early" and info["resumed_at"] == SPLIT
        assert info["steps_pass1"] == SPLIT
        assert info["steps_run"] == info["steps_planned"] == STEPS == planned_steps(STEPS, SPLIT, True, "early")
        assert adapter.model_calls == STEPS and done == list(range(1, STEPS + 1))  # one plain run's model calls
        assert info["applied_pass1"] == {"adain": [], "shape": [0, 1], "pixel": []}  # AdaIN (8, 9) is pass 2's
        assert info["applied_pass2"] == {"adain": [8, 9], "shape": [], "pixel": [6, 7]}
        assert result.reference.previous_features.steps() == list(range(STEPS))  # 0-5 from pass 1, 6-9 pass 2

    def test_rough_render_is_the_decoded_x0_of_pass1_before_the_window(self, video, keyframe1):
        images, flow = video
        single = RecordingAdapter(steps=STEPS, seed=7)  # pass 1 = the single pass until the window
        render_keyframe(single, images[2:3], 2, keyframe1.reference, flow, dataclasses.replace(EXACT, pixel_fusion=False))
        early = render_keyframe(ToyAdapter(steps=STEPS, seed=7), images[2:3], 2, keyframe1.reference, flow, EARLY)
        assert len(single.denoised) == STEPS
        assert torch.equal(early.rough_image, single.decode(single.denoised[SPLIT - 1]))

    @pytest.mark.parametrize("second", [False, True], ids=["first-keyframe", "second-keyframe"])
    def test_resumed_pass2_equals_pass2_from_scratch_given_the_same_rough_render(self, adapter, video, anchor,
                                                                                 keyframe1, second):
        images, flow = video
        reference = keyframe1.reference if second else anchor.reference
        index = 2 if second else 1
        resumed = render_keyframe(adapter, images[index:index + 1], index, reference, flow, EARLY)
        scratch = render_keyframe(adapter, images[index:index + 1], index, reference, flow, EARLY, resume=False)
        assert scratch.info["steps_run"] == SPLIT + STEPS and scratch.info["resumed_at"] is None
        assert torch.equal(resumed.rough_image, scratch.rough_image)
        assert torch.equal(resumed.latent, scratch.latent) and torch.equal(resumed.image, scratch.image)
        assert same_store(resumed.reference.previous_features, scratch.reference.previous_features)

    def test_rough_render_enters_only_where_both_references_are_occluded(self, adapter, video, keyframe1):
        images, flow = video
        full = render_keyframe(adapter, images[2:3], 2, keyframe1.reference, flow, EXACT)
        early = render_keyframe(adapter, images[2:3], 2, keyframe1.reference, flow, EARLY)
        rough_weight = (soft_occlusion(flow.between(0, 2)[1]) * soft_occlusion(flow.between(1, 2)[1]))[:, 0]
        fused_change = (early.fused_image - full.fused_image).abs().amax(-1)
        assert (rough_weight > 0).any() and (rough_weight == 0).any()
        assert fused_change[rough_weight == 0].max() == 0 and fused_change[rough_weight > 0].max() > 0.01
        assert not torch.equal(early.latent, full.latent)
        # The features pass 1 recorded (steps before the window) are the same in both modes.
        for key in full.reference.previous_features.keys():
            if key[0] < SPLIT:
                assert torch.equal(early.reference.previous_features.get(*key), full.reference.previous_features.get(*key))

    def test_without_occlusion_early_equals_full(self, adapter, video, keyframe1):
        images, flow = video
        clear = WithoutOcclusion(flow)
        full = render_keyframe(adapter, images[2:3], 2, keyframe1.reference, clear, EXACT)
        early = render_keyframe(adapter, images[2:3], 2, keyframe1.reference, clear, EARLY)
        assert full.info["steps_run"] == STEPS + STEPS - SPLIT and early.info["steps_run"] == STEPS
        assert not torch.equal(early.rough_image, full.rough_image)
        assert torch.equal(early.latent, full.latent) and torch.equal(early.image, full.image)

    def test_single_pass_ignores_the_option(self, adapter, video, anchor):
        images, flow = video
        result = render_keyframe(adapter, images[1:2], 1, anchor.reference, flow,
                                 dataclasses.replace(EARLY, pixel_fusion=False))
        assert result.info["steps_run"] == STEPS and result.info["rough_render"] is None
        assert result.rough_image is None

    def test_sampler_stops_and_captures_the_resume_state(self, adapter, video):
        images, _ = video
        hooks = KeyframeConstraints(adapter.sigmas, record_x0=True, capture_step=SPLIT, stop_step=SPLIT)
        x = adapter.sample(adapter.encode(images[:1]), hooks)
        state = hooks.captured
        assert sorted(hooks.x0_trajectory) == list(range(SPLIT)) and state.step == SPLIT
        assert torch.equal(x, state.x) and torch.equal(state.denoised_prev, hooks.x0_trajectory[SPLIT - 1])
        torch.testing.assert_close(state.denoised_prev + adapter.sigmas[SPLIT] * state.eps_prev, x)


class TestBadInput:
    def test_reference_from_another_resolution(self, adapter, video, anchor):
        images, _ = video
        small = torch.nn.functional.interpolate(images[1:2].permute(0, 3, 1, 2), size=(48, 48)).permute(0, 2, 3, 1)
        with pytest.raises(InputError, match=r"reference: Expected a REFERENCE recorded at this frame size \(48x48\)"):
            render_keyframe(adapter, small, 1, anchor.reference, None, EXACT)

    def test_flow_without_the_pair(self, adapter, video, anchor):
        images, _ = video
        frames = [(f.numpy() * 255).astype(np.uint8) for f in images]
        partial = make_flow(frames, [(1, 2)])
        with pytest.raises(InputError, match=r"flow: Expected a FLOW holding the keyframe pairs .*without the pairs "
                                             r"\(0, 1\).*pair_mode on Rerender Estimate Flow"):
            render_keyframe(adapter, images[1:2], 1, anchor.reference, partial, EXACT)

    def test_missing_flow_names_the_fixes(self, adapter, video, anchor):
        images, _ = video
        with pytest.raises(InputError, match="no FLOW connected"):
            render_keyframe(adapter, images[1:2], 1, anchor.reference, None, EXACT)
        no_fusion = dataclasses.replace(EXACT, warp_period=OFF, pixel_fusion=False)
        assert render_keyframe(adapter, images[1:2], 1, anchor.reference, None, no_fusion).info["passes"] == 1

    def test_frames_not_multiple_of_8(self, adapter):
        with pytest.raises(InputError, match=r"frames: Expected a width and height that are multiples of 8"):
            render_keyframe(adapter, torch.rand(1, 60, 64, 3), 0)

    def test_other_schedule(self, video, anchor):
        images, flow = video
        with pytest.raises(InputError, match=r"σ schedule"):
            render_keyframe(ToyAdapter(steps=STEPS + 2, seed=7), images[1:2], 1, anchor.reference, flow, EXACT)

    def test_uncond_missing_from_a_cfg1_anchor(self, video):
        images, flow = video
        cfg1 = render_keyframe(ToyAdapter(steps=4, cfg=1.0), images[:1], 0)
        assert cfg1.reference.branches == (0,)
        with pytest.raises(InputError, match="cfg: Expected the CFG branches"):
            render_keyframe(ToyAdapter(steps=4, cfg=3.0), images[1:2], 1, cfg1.reference, flow)

    def test_loose_anchor_full_keyframe(self, video):
        images, flow = video
        adapter = ToyAdapter(steps=4)
        loose = render_keyframe(adapter, images[:1], 0, settings=ConstraintSettings(loose_cfattn=True))
        assert loose.reference.blocks == tuple(range(6, 12))
        with pytest.raises(InputError, match="loose_cfattn"):
            render_keyframe(adapter, images[1:2], 1, loose.reference, flow)

    def test_sampler_without_step_hooks(self, video):
        images, flow = video
        foreign = ToyAdapter(steps=STEPS, seed=7, step_hooks=False)
        anchor = render_keyframe(foreign, images[:1], 0)  # the anchor needs no step hooks
        with pytest.raises(InputError, match="sampler_name: Expected ddim, euler or lcm"):
            render_keyframe(foreign, images[1:2], 1, anchor.reference, flow)
        # Without pixel fusion the model-level constraints still act.
        result = render_keyframe(foreign, images[1:2], 1, anchor.reference, flow,
                                 ConstraintSettings(pixel_fusion=False))
        assert result.info["applied_pass1"]["adain"] == [8, 9] and result.info["applied_pass1"]["shape"] == [0, 1]

    def test_settings_validation(self):
        with pytest.raises(InputError, match="mask_strength"):
            ConstraintSettings(mask_strength=1.5)
        with pytest.raises(InputError, match="style_update_freq"):
            ConstraintSettings(style_update_freq=0)
        with pytest.raises(InputError, match="rough_render: Expected one of early, full"):
            ConstraintSettings(rough_render="fast")
