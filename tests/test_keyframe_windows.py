"""Step windows of the cross-frame constraints and the σ → step clock (keyframe/windows.py)."""

from __future__ import annotations

import pytest
import torch

from rerender_video.common.errors import InputError
from rerender_video.keyframe.windows import (ADA_PERIOD, CROSS_PERIOD, MASK_PERIOD, WARP_PERIOD, StepClock,
                                             StepWindow, window)


class TestDefaults:
    """The documented schedule at 20 sampled steps (keyframe/ALGORITHM.md §2)."""

    def test_cross_attention_every_step(self):
        assert CROSS_PERIOD.steps(20) == list(range(20))

    def test_shape_fusion_steps_0_to_2_inclusive(self):
        assert WARP_PERIOD.steps(20) == [0, 1, 2]

    def test_pixel_fusion_steps_11_to_15_strict(self):
        assert MASK_PERIOD.strict
        assert MASK_PERIOD.steps(20) == [11, 12, 13, 14, 15]

    def test_adain_steps_16_to_19(self):
        assert ADA_PERIOD.steps(20) == [16, 17, 18, 19]


class TestRules:
    def test_inclusive_keeps_both_ends(self):
        assert StepWindow(0.5, 0.8).steps(20) == [10, 11, 12, 13, 14, 15, 16]

    def test_strict_drops_both_ends(self):
        assert StepWindow(0.5, 0.8, strict=True).steps(20) == [11, 12, 13, 14, 15]

    def test_float_products_count_as_exact(self):
        # 0.57·100 = 56.99999999999999 in floats: step 57 is the window's edge, not outside it.
        assert StepWindow(0.0, 0.57).steps(100)[-1] == 57
        assert StepWindow(0.57, 1.0, strict=True).steps(100)[0] == 58

    def test_start_after_end_switches_off(self):
        off = StepWindow(1.0, 0.0)
        assert not off.enabled and off.steps(20) == [] and off.first(20) is None

    def test_windows_count_sampled_steps(self):
        # 10 sampled steps (e.g. denoise 0.5 of a 20-step grid in the reference's terms): the shape
        # window still acts, on the first sampled steps, unlike the reference's full-grid rule.
        assert WARP_PERIOD.steps(10) == [0, 1]
        assert MASK_PERIOD.steps(10) == [6, 7]
        assert ADA_PERIOD.steps(10) == [8, 9]

    def test_steps_outside_range_are_not_contained(self):
        assert not CROSS_PERIOD.contains(20, 20) and not CROSS_PERIOD.contains(-1, 20)

    def test_first(self):
        assert MASK_PERIOD.first(20) == 11


class TestValidation:
    def test_widget_window(self):
        assert window("mask", 0.5, 0.8, strict=True) == MASK_PERIOD

    @pytest.mark.parametrize("start,end", [(-0.1, 0.5), (0.2, 1.5)])
    def test_fraction_out_of_range(self, start, end):
        with pytest.raises(InputError, match=r"warp_(start|end): Expected a fraction"):
            window("warp", start, end)


class TestStepClock:
    sigmas = torch.tensor([14.6, 6.1, 2.9, 1.4, 0.6, 0.03, 0.0])

    def test_grid_sigmas_map_to_their_step(self):
        clock = StepClock(self.sigmas)
        assert [clock.index(s) for s in self.sigmas[:-1]] == list(range(6))

    def test_per_sample_tensor(self):
        assert StepClock(self.sigmas).index(torch.full((4,), 2.9)) == 2

    def test_intermediate_sigma_is_the_step_being_taken(self):
        assert StepClock(self.sigmas).index((2.9 * 1.4) ** 0.5) == 2

    def test_float32_rounding(self):
        sigma = torch.tensor(self.sigmas[3].item() * (1 + 3e-7), dtype=torch.float32)
        assert StepClock(self.sigmas).index(sigma) == 3

    def test_needs_a_step(self):
        with pytest.raises(InputError, match="steps"):
            StepClock(torch.tensor([1.0]))
