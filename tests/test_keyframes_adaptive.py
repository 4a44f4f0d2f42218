"""Adaptive keyframes: exact placement (vs brute force), the rules on the bundled clip's cuts, the predicted cost."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from rerender_video.common.adaptive_keyframes import adaptive, required_keyframes
from rerender_video.common.errors import InputError
from rerender_video.common.scene_cuts import detect_scene_cuts
from rerender_video.metrics.keyframe_cost import adaptive_keyframes, propagation_residuals
from rerender_video.nodes.keyframes import RerenderKeyframeSelection
from rerender_video.videoio.reader import load_frames

# Shot starts of the bundled Megamind.avi (tests/test_keyframes.py checks them).
MEGAMIND_SHOT_STARTS = [1, 98, 154, 200]


def brute_force(count, forward, backward, budget, min_spacing, max_spacing, shot_starts):
    """The cheapest placement by enumerating every keyframe set (small videos only)."""
    required = set(required_keyframes(count, shot_starts))
    best, best_keys = np.inf, None
    for size in range(1, budget + 1):
        for keys in itertools.combinations(range(count), size):
            if not required <= set(keys):
                continue
            gaps_ok = all(b - a <= max_spacing and (b - a >= min_spacing or (a in required and b in required))
                          for a, b in zip(keys[:-1], keys[1:]))
            if not gaps_ok or count - 1 - keys[-1] >= max_spacing:
                continue
            total = 0.0
            for frame in range(count):
                if frame in keys:
                    continue
                before = max((k for k in keys if k < frame), default=None)
                after = min((k for k in keys if k > frame), default=None)
                options = [forward[before, frame - before - 1]]
                if after is not None:
                    options.append(backward[after, after - frame - 1])
                total += min(options)
            if total < best - 1e-12:
                best, best_keys = total, keys
    return best, best_keys


def total_cost(keys, count, forward, backward):
    """The placement's cost by the module's definition, frame by frame."""
    total = 0.0
    for frame in range(count):
        if frame in keys:
            continue
        before = max(k for k in keys if k < frame)
        options = [forward[before, frame - before - 1]]
        after = [k for k in keys if k > frame]
        if after:
            options.append(backward[after[0], after[0] - frame - 1])
        total += min(options)
    return total


class TestPlacement:
    @pytest.mark.parametrize("seed", range(6))
    def test_matches_brute_force(self, seed):
        rng = np.random.default_rng(seed)
        count, span = 11, 5
        forward = rng.random((count, span)).cumsum(axis=1)     # cost grows with the distance, unevenly
        backward = rng.random((count, span)).cumsum(axis=1)
        cuts = [7] if seed % 2 else []
        budget = 5
        keys = adaptive(count, forward, backward, budget, min_spacing=2, max_spacing=span, shot_starts=cuts)
        best, _ = brute_force(count, forward, backward, budget, 2, span, cuts)
        assert total_cost(keys.indices, count, forward, backward) == pytest.approx(best)
        assert len(keys.indices) <= budget and keys.mode == "adaptive"

    def test_budget_below_the_required_keyframes(self):
        flat = np.ones((20, 5))
        with pytest.raises(InputError, match=r"max_keyframes: Expected at least 5 keyframes"):
            adaptive(20, flat, flat, 4, 1, 5, shot_starts=[6, 12])

    def test_spacing_that_cannot_be_met(self):
        flat = np.ones((20, 5))
        with pytest.raises(InputError, match="max_spacing"):
            adaptive(20, flat, flat, 3, 1, 5)

    def test_min_spacing_must_be_positive(self):
        flat = np.ones((20, 5))
        with pytest.raises(InputError, match="min_spacing"):
            adaptive(20, flat, flat, 5, 0, 5)


@pytest.fixture(scope="module")
def megamind_small(megamind_path):
    """All 270 frames of Megamind at 96 px wide."""
    return load_frames(megamind_path, custom_width=96).images


class TestOnTheBundledClip:
    @pytest.mark.parametrize("interval", [10, 20])
    def test_rules(self, megamind_small, interval):
        count = len(megamind_small)
        budget = -(-count // interval)
        keys = adaptive_keyframes(megamind_small, budget, min_spacing=3)
        indices = keys.indices
        assert detect_scene_cuts(megamind_small) == MEGAMIND_SHOT_STARTS == list(keys.shot_starts)
        for start in MEGAMIND_SHOT_STARTS:              # a keyframe on each side of every cut
            assert start - 1 in indices and start in indices
        assert indices[0] == 0 and len(indices) <= budget
        required = set(required_keyframes(count, MEGAMIND_SHOT_STARTS))
        max_spacing = round(3 * count / budget)
        for a, b in zip(indices[:-1], indices[1:]):
            assert b - a <= max_spacing
            assert b - a >= 3 or (a in required and b in required)
        assert count - 1 - indices[-1] < max_spacing
        assert adaptive_keyframes(megamind_small, budget, min_spacing=3).indices == indices   # deterministic

    def test_node_mode(self, megamind_small):
        node = RerenderKeyframeSelection()
        selection, text, images = node.select(megamind_small, "adaptive", 20, "", 20.0, 0, 2, 0)
        assert selection.mode == "adaptive" and len(selection.indices) <= 14
        assert text == ", ".join(map(str, selection.indices)) and images.shape[0] == len(selection.indices)
        assert selection.indices == adaptive_keyframes(megamind_small, 14).indices


class TestPredictedCost:
    def test_translation_is_predicted_well_and_cuts_are_unreachable(self, megamind_small):
        shot = megamind_small[30:40]
        moving = torch.stack([torch.roll(megamind_small[30], shifts=2 * step, dims=1) for step in range(10)])
        forward, backward = propagation_residuals(torch.cat([moving, shot]), 4, shot_starts=(10,))
        assert np.isinf(forward[8, 2]) and np.isinf(backward[11, 2])           # across the cut
        assert np.isfinite(forward[:6]).all() and np.isfinite(backward[4:10]).all()
        # the roll is followed by the flow: far below the unaligned difference
        assert forward[2, 2] < 0.5 * (moving[5] - moving[2]).abs().mean().item()
