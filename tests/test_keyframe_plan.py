"""The keyframe plan (keyframe/plan.py): steps, flow pairs, and the one FLOW check."""

from __future__ import annotations

import numpy as np
import pytest

from rerender_video.common.errors import InputError
from rerender_video.common.keyframes import Keyframes
from rerender_video.flow.pairs import keyframe_pairs
from rerender_video.flow.types import FlowPairs
from rerender_video.keyframe.plan import KeyframePlan, check_flow, planned_steps
from rerender_video.keyframe.settings import ConstraintSettings
from rerender_video.keyframe.windows import StepWindow

SIZE = 16
OFF = StepWindow(1.0, 0.0)


def flow_with(pairs, frame_count=10, size=(SIZE, SIZE)):
    count = len(pairs)
    zeros = np.zeros((count, *size, 2), np.float32)
    masks = np.zeros((count, *size), np.float32)
    return FlowPairs(list(pairs), zeros, zeros, masks, masks, size, frame_count, "test", {"pair_mode": "consecutive"})


class TestSteps:
    def test_defaults_at_20_steps(self):
        plan = KeyframePlan(ConstraintSettings(), 20)
        assert plan.shape_steps == [0, 1, 2] and plan.pixel_steps == [11, 12, 13, 14, 15]
        assert plan.colour_steps == [16, 17, 18, 19] and plan.cross_steps == list(range(20))
        assert plan.split == 11 and plan.resumes and plan.rough_early
        assert plan.steps_per_keyframe(3) == [20, 20, 20]

    def test_full_rough_render_and_no_resume(self):
        full = KeyframePlan(ConstraintSettings(rough_render="full"), 20)
        assert full.steps(later=True) == 29 == planned_steps(20, 11) and full.steps(later=False) == 20
        scratch = KeyframePlan(ConstraintSettings(rough_render="full"), 20, resume=False)
        assert scratch.steps(later=True) == 40 and not scratch.resumes

    def test_pixel_fusion_off_or_empty_window_is_one_pass(self):
        for settings in (ConstraintSettings(pixel_fusion=False), ConstraintSettings(mask_period=OFF)):
            plan = KeyframePlan(settings, 20)
            assert plan.split is None and not plan.resumes and plan.steps(later=True) == 20
            assert not plan.reads_previous_flow

    def test_a_window_empty_at_few_steps_reads_no_flow(self):
        # the window (0.05, 0.09) holds no step at 10 steps (0.5-0.9) but step 1 at 20 steps (1.0-1.8)
        settings = ConstraintSettings(warp_period=StepWindow(0.05, 0.09), pixel_fusion=False)
        assert not KeyframePlan(settings, 10).reads_anchor_flow
        assert KeyframePlan(settings, 20).shape_steps == [1] and KeyframePlan(settings, 20).reads_anchor_flow


class TestFlowPairs:
    def test_pairs_follow_the_fusions_that_act(self):
        both = KeyframePlan(ConstraintSettings(), 20)
        shape = KeyframePlan(ConstraintSettings(pixel_fusion=False), 20)
        pixel = KeyframePlan(ConstraintSettings(warp_period=OFF), 20)
        none = KeyframePlan(ConstraintSettings(warp_period=OFF, pixel_fusion=False), 20)
        assert both.flow_pairs(0, 4, 8) == [(0, 8), (4, 8)] and pixel.flow_pairs(0, 4, 8) == [(0, 8), (4, 8)]
        assert shape.flow_pairs(0, 4, 8) == [(0, 8)] and none.flow_pairs(0, 4, 8) == []
        assert both.flow_pairs(0, 0, 4) == [(0, 4)]  # previous keyframe = the anchor: one pair
        assert both.flow_pairs(4, 4, 4) == []        # the anchor itself: zero flow, nothing read

    def test_required_pairs(self):
        plan = KeyframePlan(ConstraintSettings(), 20)
        assert plan.required_flow_pairs([0]) == []
        assert plan.required_flow_pairs([0, 4, 8, 12]) == [(0, 4), (0, 8), (4, 8), (0, 12), (8, 12)]
        assert KeyframePlan(ConstraintSettings(pixel_fusion=False), 20).required_flow_pairs([0, 4, 8]) == \
            [(0, 4), (0, 8)]

    @pytest.mark.parametrize("indices", [(0, 4, 8), (2, 5, 7, 9), (0, 1), (3,)])
    def test_estimate_flow_keyframes_mode_computes_every_pair_read(self, indices):
        computed = {tuple(sorted(pair)) for pair in keyframe_pairs(Keyframes(indices, 10))}
        read = KeyframePlan(ConstraintSettings(), 20).required_flow_pairs(indices)
        assert {tuple(sorted(pair)) for pair in read} <= computed


class TestCheckFlow:
    def test_missing_flow(self):
        with pytest.raises(InputError, match="pair_mode on Rerender Estimate Flow to keyframes"):
            check_flow(None, [(0, 4)], (SIZE, SIZE), 10)

    def test_nothing_read_needs_no_flow(self):
        check_flow(None, [], (SIZE, SIZE), 10)

    def test_missing_pairs_are_named(self):
        consecutive = flow_with([(i, i + 1) for i in range(9)])
        with pytest.raises(InputError, match=r"\(0, 4\).*pair_mode consecutive"):
            check_flow(consecutive, [(0, 4), (0, 8), (4, 8)], (SIZE, SIZE), 10)
        check_flow(flow_with([(0, 4), (8, 0), (4, 8)]), [(0, 4), (0, 8), (4, 8)], (SIZE, SIZE), 10)  # either order

    def test_flow_of_other_frames(self):
        with pytest.raises(InputError, match="flow"):
            check_flow(flow_with([(0, 4)], frame_count=12), [(0, 4)], (SIZE, SIZE), 10)

    def test_flow_of_another_size_without_a_frame_count(self):
        with pytest.raises(InputError, match="flow: Expected a FLOW computed at the frames' size"):
            check_flow(flow_with([(0, 4)], size=(SIZE, 2 * SIZE)), [(0, 4)], (SIZE, SIZE))

    def test_not_a_flow(self):
        with pytest.raises(InputError, match="a FLOW object"):
            check_flow(object(), [(0, 4)], (SIZE, SIZE))
