"""Keyframe selection: uniform, explicit, scene-cut aware (real cuts of Megamind.avi), bad input."""

from __future__ import annotations

import pytest
import torch

from rerender_video.common import keyframes
from rerender_video.common.errors import InputError
from rerender_video.common.scene_cuts import cut_scores, detect_scene_cuts
from rerender_video.nodes.keyframes import RerenderKeyframeSelection

# Shot starts of the bundled Megamind.avi (checked by eye: frame 0 is black, then three hard cuts).
MEGAMIND_SHOT_STARTS = [1, 98, 154, 200]


class TestUniformAndExplicit:
    def test_uniform(self):
        assert keyframes.uniform(25, 10).indices == (0, 10, 20)
        assert keyframes.uniform(1, 1).indices == (0,)

    def test_explicit_sorted(self):
        selection = keyframes.parse_list("20, 0 ,10", 30)
        assert selection.indices == (0, 10, 20) and selection.mode == "explicit"

    def test_segments_cover_every_frame_once(self):
        selection = keyframes.uniform(23, 5)
        covered = sorted(i for _, _, frames in selection.segments() for i in frames)
        assert covered == sorted(set(range(23)) - set(selection.indices))

    def test_resolve_priority(self):
        given = keyframes.from_indices([0, 7], 12)
        assert keyframes.resolve(12, 5, "0, 3", given) is given
        assert keyframes.resolve(12, 5, "0, 3").indices == (0, 3)
        assert keyframes.resolve(12, 5).indices == (0, 5, 10)


class TestBadInput:
    def test_interval_larger_than_video(self):
        with pytest.raises(InputError, match="keyframe_interval"):
            keyframes.uniform(10, 10)

    def test_interval_zero(self):
        with pytest.raises(InputError, match="keyframe_interval"):
            keyframes.uniform(10, 0)

    def test_empty_list(self):
        with pytest.raises(InputError, match="at least one frame"):
            keyframes.parse_list(" , ", 10)

    def test_out_of_range(self):
        with pytest.raises(InputError, match=r"\[12\]"):
            keyframes.parse_list("0, 12", 10)

    def test_duplicates(self):
        with pytest.raises(InputError, match="duplicates"):
            keyframes.parse_list("0, 4, 4", 10)

    def test_not_numbers(self):
        with pytest.raises(InputError, match="keyframe_indices"):
            keyframes.parse_list("0, five", 10)

    def test_keyframes_for_another_video(self):
        with pytest.raises(InputError, match="KEYFRAMES for 20 frames"):
            keyframes.resolve(20, keyframes=keyframes.uniform(30, 5))


class TestSceneCuts:
    def test_megamind_cuts_found_where_the_shots_change(self, megamind_path):
        from rerender_video.videoio.reader import load_frames

        frames = load_frames(megamind_path, custom_width=120, custom_height=88).images
        assert frames.shape[0] == 270
        assert detect_scene_cuts(frames) == MEGAMIND_SHOT_STARTS
        scores = cut_scores(frames)
        inside = [s for i, s in enumerate(scores) if i + 1 not in MEGAMIND_SHOT_STARTS]
        assert max(inside) < 10 < min(scores[i - 1] for i in MEGAMIND_SHOT_STARTS)

    def test_scene_aware_starts_keyframe_at_each_cut(self):
        selection = keyframes.scene_aware(270, 10, MEGAMIND_SHOT_STARTS)
        assert set(MEGAMIND_SHOT_STARTS) <= set(selection.indices)
        assert selection.indices[:3] == (0, 1, 11)

    def test_no_segment_crosses_a_cut(self):
        selection = keyframes.scene_aware(270, 10, MEGAMIND_SHOT_STARTS)
        shot_of = lambda frame: sum(frame >= start for start in MEGAMIND_SHOT_STARTS)  # noqa: E731
        for previous_key, next_key, frames in selection.segments():
            for key in (previous_key, next_key):
                if key is not None:
                    assert {shot_of(f) for f in frames} == {shot_of(key)}

    def test_node_scene_cuts_mode(self):
        frames = torch.zeros(12, 16, 16, 3)
        frames[6:] = 1.0
        selection, text, images = RerenderKeyframeSelection().select(frames, "scene_cuts", 4, "", 20.0)
        assert selection.indices == (0, 4, 6, 10) and text == "0, 4, 6, 10"
        assert images.shape == (4, 16, 16, 3)


class TestSelectionNode:
    def test_uniform_and_explicit_modes(self):
        frames = torch.rand(12, 8, 8, 3, generator=torch.Generator().manual_seed(0))
        selection, text, images = RerenderKeyframeSelection().select(frames, "uniform", 4, "", 20.0)
        assert selection.indices == (0, 4, 8) and selection.mode == "uniform" and text == "0, 4, 8"
        assert torch.equal(images, frames[[0, 4, 8]])
        selection, text, _ = RerenderKeyframeSelection().select(frames, "explicit", 4, "9, 2", 20.0)
        assert selection.indices == (2, 9) and selection.anchor == 2 and text == "2, 9"

    @pytest.mark.parametrize("mode, interval, listed, message", [
        ("uniform", 12, "", "keyframe_interval"),            # K as large as the video
        ("explicit", 4, "", "at least one frame"),           # an empty list
        ("explicit", 4, "0, 12", r"\[12\]"),                 # past the last frame
        ("explicit", 4, "3, 7, 3", "duplicates"),            # a repeated index
        ("scene_cuts", 0, "", "keyframe_interval"),          # K of 0 in scene-cut mode
    ])
    def test_bad_input_through_the_node(self, mode, interval, listed, message):
        with pytest.raises(InputError, match=message):
            RerenderKeyframeSelection().select(torch.rand(12, 8, 8, 3), mode, interval, listed, 20.0)
