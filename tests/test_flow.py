"""Optical flow (DIS backend), occlusion masks, pair modes, the flow cache, the node and the CLI.

Real data: the basketball pair (640×480, cropped) warped by known displacement fields, and
Megamind frames 6→7 and 26→27 (the first shot, about 2 px mean motion; frame 0 is black and the
first cut is at 97→98). RAFT is tested in test_flow_raft.py.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from rerender_video.common.errors import InputError, MissingWeightsError
from rerender_video.common.keyframes import Keyframes, uniform
from rerender_video.flow.dis import DisFlow
from rerender_video.flow.estimate import cache_location, estimate_flow
from rerender_video.flow.occlusion import inconsistent, occlusion_masks
from rerender_video.flow.pairs import consecutive_pairs, keyframe_pairs, pairs_for_mode
from rerender_video.flow.visualize import flow_preview, flow_to_color, wheel_legend
from rerender_video.flow.warp import out_of_frame, warp_hwc
from rerender_video.nodes import flow as flow_node

BAND = 12  # px of the known translations


def _image(path) -> torch.Tensor:
    return torch.from_numpy(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)).float() / 255


@pytest.fixture(scope="module")
def basketball(megamind_path):
    data = megamind_path.parent
    return _image(data / "basketball1.png"), _image(data / "basketball2.png")


def smooth_field(height: int, width: int) -> torch.Tensor:
    """Affine plus sinusoidal displacement ``[H,W,2]`` in pixels, at most 8 px long."""
    y, x = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                          indexing="ij")
    xn, yn = (x - width / 2) / (width / 2), (y - height / 2) / (height / 2)
    u = 2.0 + 2.5 * xn - 1.5 * yn + 3.0 * torch.sin(2 * math.pi * 1.5 * y / height)
    v = -1.5 + 1.0 * xn + 2.0 * yn + 2.5 * torch.cos(2 * math.pi * x / width)
    field = torch.stack((u, v), dim=-1)
    return field * (8.0 / float(field.norm(dim=-1).max()))


@pytest.fixture(scope="module")
def warped_pair(basketball):
    """(frames [2,H,W,3], field): frame 1 = frame 0 warped by the field, i.e. field = flow 1 → 0."""
    frame = basketball[0][96:384, 128:512]  # 288×384 crop
    field = smooth_field(*frame.shape[:2])
    moved = warp_hwc(frame[None], field[None])[0]
    return torch.stack((frame, moved)), field


# ----------------------------------------------------------------------------------------------
# pair modes


class TestPairs:
    def test_consecutive(self):
        pairs = consecutive_pairs(5)
        assert pairs == [(0, 1), (1, 2), (2, 3), (3, 4)]
        assert pairs_for_mode("consecutive", 5) == pairs

    def test_keyframes_uniform(self):
        keys = uniform(23, 10)  # keyframes 0, 10, 20
        pairs = keyframe_pairs(keys)
        assert (0, 10) in pairs and (0, 20) in pairs and (10, 20) in pairs
        for frame in range(23):
            if frame in keys.indices:
                continue
            sources = sorted(source for source, target in pairs if target == frame)
            previous = max(k for k in keys.indices if k < frame)
            following = [k for k in keys.indices if k > frame]
            assert sources == sorted([previous, *following[:1]]), frame
        # 2 key–key pairs for key 20 (anchor, previous), 1 for key 10, 2 per frame between keys, 1 after 20
        assert len(pairs) == 3 + 2 * 18 + 2
        assert len({tuple(sorted(pair)) for pair in pairs}) == len(pairs)

    def test_keyframes_explicit_list_starting_late(self):
        pairs = keyframe_pairs(Keyframes((2, 5), 7))
        assert pairs == [(2, 5), (2, 0), (2, 1), (2, 3), (5, 3), (2, 4), (5, 4), (5, 6)]

    def test_union_drops_pairs_present_in_either_order(self):
        keys = Keyframes((0, 3), 5)
        union = pairs_for_mode("consecutive+keyframes", 5, keys)
        assert union[:4] == consecutive_pairs(5)
        # (0,1), (3,2), (3,4) are consecutive pairs already; (0,3), (3,1) and (0,2) are new
        assert union[4:] == [(0, 3), (3, 1), (0, 2)]

    def test_errors(self):
        with pytest.raises(InputError, match="pair_mode"):
            pairs_for_mode("every", 5)
        with pytest.raises(InputError, match="at least 2 frames"):
            pairs_for_mode("consecutive", 1)
        with pytest.raises(InputError, match="keyframes"):
            pairs_for_mode("keyframes", 5)
        with pytest.raises(InputError, match="KEYFRAMES for 5 frames"):
            pairs_for_mode("keyframes", 5, Keyframes((0, 3), 9))


# ----------------------------------------------------------------------------------------------
# occlusion check on exact flows


class TestOcclusionRule:
    def test_squared_form_tolerates_error_growing_with_motion(self):
        # 20 px right, back 18 px: round-trip error 2 px. Squared: 4 <= 0.01·(400+324)+0.5 = 7.74 → reliable;
        # the unsquared rule of the reference code would flag it (2 > 0.01·38 + 0.5).
        forward = torch.zeros(1, 8, 64, 2)
        forward[..., 0] = 20
        backward = torch.zeros(1, 8, 64, 2)
        backward[..., 0] = -18
        assert not inconsistent(forward, backward)[0, :, :40].any()

    def test_still_pixels_flag_round_trip_error_above_beta(self):
        forward = torch.zeros(1, 8, 8, 2)
        backward = torch.zeros(1, 8, 8, 2)
        backward[0, :, 4:, 1] = 0.8  # 0.64 px² > β = 0.5
        flags = inconsistent(forward, backward)[0]
        assert flags[:, 4:].all() and not flags[:, :4].any()

    def test_out_of_frame_targets_are_occluded(self):
        forward = torch.zeros(1, 6, 10, 2)
        forward[..., 0] = 3
        occ_i, occ_j = occlusion_masks(forward, -forward)
        assert occ_i[0, :, 7:].eq(1).all() and occ_i[0, :, :7].eq(0).all()
        assert occ_j[0, :, :3].eq(1).all() and occ_j[0, :, 3:].eq(0).all()
        assert occ_i.dtype == torch.float32

    def test_errors(self):
        with pytest.raises(InputError, match="flow_back"):
            inconsistent(torch.zeros(1, 4, 4, 2), torch.zeros(1, 4, 5, 2))
        with pytest.raises(InputError, match="occlusion_alpha"):
            inconsistent(torch.zeros(1, 4, 4, 2), torch.zeros(1, 4, 4, 2), alpha=-1)
        with pytest.raises(InputError, match="flow"):
            inconsistent(torch.zeros(4, 4, 2), torch.zeros(4, 4, 2))


# ----------------------------------------------------------------------------------------------
# DIS on real frames


class TestDisAccuracy:
    def test_endpoint_error_on_known_smooth_field(self, warped_pair):
        frames, field = warped_pair
        flows = estimate_flow(frames, [(0, 1)], DisFlow("medium"))
        estimated, occlusion = flows.between(0, 1)  # flow 1 → 0 on frame 1's grid = the field
        valid = ~out_of_frame(field[None])[0] & (occlusion == 0)
        assert valid.float().mean() > 0.8
        epe = (estimated - field).norm(dim=-1)[valid].mean()
        assert epe < 0.5, f"EPE {epe:.3f} px"
        # the other direction is the inverse motion: about minus the field, sampled where pixels land
        forward, _ = flows.between(1, 0)
        back_sampled = warp_hwc(field[None], forward[None])[0]
        assert (forward + back_sampled).norm(dim=-1)[valid].mean() < 0.5

    def test_occlusion_marks_band_uncovered_by_translation(self, basketball):
        # frame 1 = frame 0 moved 12 px to the right; its left band shows fresh content
        image = basketball[0]
        frames = torch.stack((image[120:360, 150 + BAND:470 + BAND], image[120:360, 150:470]))
        flows = estimate_flow(frames, [(0, 1)], DisFlow("medium"))
        flow, occlusion = flows.between(0, 1)
        band = torch.zeros_like(occlusion, dtype=torch.bool)
        band[:, :BAND] = True
        assert occlusion[band].mean() > 0.9
        assert occlusion[~band].mean() < 0.03
        assert (flow[~band][:, 0] + BAND).abs().median() < 0.25

    def test_occlusion_marks_background_uncovered_by_moving_object(self, basketball):
        # a 96×96 patch of other texture moves 12 px right over a still background
        background = basketball[0][100:340, 100:420]
        patch = basketball[1][300:396, 400:496].flip(0, 1)
        top, left, size = 70, 100, 96
        first, second = background.clone(), background.clone()
        first[top:top + size, left:left + size] = patch
        second[top:top + size, left + BAND:left + BAND + size] = patch
        flows = estimate_flow(torch.stack((first, second)), [(0, 1)], DisFlow("medium"))
        _, occlusion = flows.between(0, 1)  # pixels of the second frame
        uncovered = torch.zeros_like(occlusion, dtype=torch.bool)
        uncovered[top:top + size, left:left + BAND] = True
        near_object = torch.zeros_like(uncovered)
        near_object[top - 8:top + size + 8, left - 8:left + BAND + size + 8] = True
        assert occlusion[uncovered].mean() > 0.8
        assert occlusion[~near_object].mean() < 0.03
        _, covered_in_first = flows.between(1, 0)  # pixels of the first frame hidden in the second
        covered = torch.zeros_like(uncovered)
        covered[top:top + size, left + size:left + size + BAND] = True
        assert covered_in_first[covered].mean() > 0.5

    @pytest.mark.parametrize("source", [6, 26])
    def test_warping_reduces_photometric_error_on_megamind(self, megamind_frames, source):
        frames = megamind_frames[source:source + 2]
        flows = estimate_flow(frames, [(0, 1)], DisFlow("medium"))
        flow, _ = flows.between(0, 1)
        warped = warp_hwc(frames[:1], flow[None])[0]
        unwarped_error = (frames[0] - frames[1]).abs().mean()
        warped_error = (warped - frames[1]).abs().mean()
        assert warped_error < 0.6 * unwarped_error, (float(warped_error), float(unwarped_error))


# ----------------------------------------------------------------------------------------------
# the FLOW object, cache and input checks


class CountingDis(DisFlow):
    calls = 0

    def iter_flows(self, frames, pairs):
        type(self).calls += 1
        yield from super().iter_flows(frames, pairs)


@pytest.fixture
def small_frames(megamind_frames):
    """Megamind frames 4–8 at 180×132."""
    return torch.nn.functional.interpolate(megamind_frames[4:9].permute(0, 3, 1, 2), size=(132, 180),
                                           mode="area").permute(0, 2, 3, 1).contiguous()


class TestFlowPairs:
    def test_layout(self, small_frames):
        pairs = consecutive_pairs(5)
        flows = estimate_flow(small_frames, pairs, DisFlow("fast"))
        assert flows.pairs == pairs and len(flows) == 4
        assert flows.forward.shape == flows.backward.shape == (4, 132, 180, 2)
        assert flows.occlusion_forward.shape == flows.occlusion_backward.shape == (4, 132, 180)
        assert flows.forward.dtype == np.float32 and flows.occlusion_backward.dtype == np.float32
        assert set(np.unique(flows.occlusion_backward)) <= {0.0, 1.0}
        assert flows.frame_size == (132, 180) and flows.frame_count == 5
        assert flows.method["backend"] == "dis" and flows.method["preset"] == "fast"
        assert flows.method["alpha"] == 0.01 and flows.method["beta"] == 0.5
        assert isinstance(flows.forward, np.memmap)
        flows.check_video(5, (132, 180))

    def test_between_both_orders(self, small_frames):
        flows = estimate_flow(small_frames, [(1, 3)], DisFlow("fast"))
        flow_13, occ_13 = flows.between(1, 3)
        flow_31, occ_31 = flows.between(3, 1)
        assert torch.equal(flow_13, torch.from_numpy(np.array(flows.backward[0])))
        assert torch.equal(flow_31, torch.from_numpy(np.array(flows.forward[0])))
        assert torch.equal(occ_13, torch.from_numpy(np.array(flows.occlusion_backward[0])))
        assert torch.equal(occ_31, torch.from_numpy(np.array(flows.occlusion_forward[0])))
        with pytest.raises(InputError, match="pair_mode"):
            flows.between(0, 1)

    def test_second_call_reads_the_cache(self, small_frames):
        CountingDis.calls = 0
        first = estimate_flow(small_frames, consecutive_pairs(5), CountingDis("fast"))
        done = []
        second = estimate_flow(small_frames, consecutive_pairs(5), CountingDis("fast"), progress=done.append)
        assert CountingDis.calls == 1 and done == [4]
        assert cache_location(first) == cache_location(second) and cache_location(first).is_dir()
        assert np.array_equal(first.forward, second.forward)
        # another threshold, preset or frame content is another entry
        estimate_flow(small_frames, consecutive_pairs(5), CountingDis("fast"), beta=1.0)
        estimate_flow(small_frames, consecutive_pairs(5), CountingDis("medium"))
        estimate_flow(small_frames.flip(0), consecutive_pairs(5), CountingDis("fast"))
        assert CountingDis.calls == 4

    def test_interrupted_run_caches_nothing(self, small_frames):
        class Interrupted(Exception):
            pass

        def progress(done, preview=None):
            if done == 2:
                raise Interrupted

        with pytest.raises(Interrupted):
            estimate_flow(small_frames, consecutive_pairs(5), DisFlow("fast"), progress=progress)
        CountingDis.calls = 0
        estimate_flow(small_frames, consecutive_pairs(5), CountingDis("fast"))
        assert CountingDis.calls == 1

    def test_bad_input(self, small_frames):
        dis = DisFlow("fast")
        with pytest.raises(InputError, match="at least 16×16"):
            estimate_flow(small_frames[:, :8, :10], [(0, 1)], dis)
        with pytest.raises(InputError, match="at least 2 frames"):
            estimate_flow(small_frames[:1], [(0, 0)], dis)
        with pytest.raises(InputError, match=r"pairs: Expected indices in \[0, 4\]"):
            estimate_flow(small_frames, [(3, 5)], dis)
        with pytest.raises(InputError, match="frames"):
            estimate_flow(small_frames.numpy(), [(0, 1)], dis)
        with pytest.raises(InputError, match="occlusion_beta"):
            estimate_flow(small_frames, [(0, 1)], dis, beta=-0.5)
        with pytest.raises(InputError, match="dis_preset"):
            DisFlow("slow")


# ----------------------------------------------------------------------------------------------
# pictures


class TestVisualize:
    def test_directions_and_saturation(self):
        flow = torch.tensor([[[8.0, 0.0], [0.0, 8.0], [-8.0, 0.0], [0.0, -8.0], [4.0, 0.0], [0.0, 0.0]]])
        colours = flow_to_color(flow, max_magnitude=8)[0]
        assert colours[0].tolist() == [1.0, 0.0, 0.0]          # right: red
        assert colours[1, 0] > 0.9 and colours[1, 1] > 0.8 and colours[1, 2] < 0.1   # down: yellow
        assert colours[2, 2] == 1.0 and colours[2, 0] < 0.1    # left: sky blue
        assert colours[3, 2] == 1.0 and colours[3, 1] < 0.1    # up: violet
        assert colours[4].tolist() == [1.0, 0.5, 0.5]          # half length: half saturated red
        assert colours[5].tolist() == [1.0, 1.0, 1.0]          # still: white

    def test_legend_and_preview(self, small_frames):
        legend = wheel_legend(32)
        assert legend.shape == (32, 32, 3) and legend[0, 0].tolist() == [1.0, 1.0, 1.0]
        flows = estimate_flow(small_frames[:3], consecutive_pairs(3), DisFlow("fast"))
        preview = flow_preview(flows)
        assert preview.shape == (2, 132, 180, 3) and preview.dtype == torch.float32
        assert 0 <= float(preview.min()) and float(preview.max()) <= 1


# ----------------------------------------------------------------------------------------------
# node


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    """Outside ComfyUI, model_folders('optical_flow') is ./models/optical_flow: point it at a temp folder."""
    monkeypatch.chdir(tmp_path)
    return tmp_path / "models" / "optical_flow"


def _run_node(frames, **overrides):
    inputs = dict(backend="dis", dis_preset="fast", raft_model=flow_node.AUTO_WEIGHTS, pair_mode="consecutive",
                  keyframe_interval=10, keyframe_indices="", occlusion_alpha=0.01, occlusion_beta=0.5)
    inputs.update(overrides)
    return flow_node.RerenderEstimateFlow().estimate(frames, **inputs)


class TestNode:
    def test_registration(self):
        node = flow_node.RerenderEstimateFlow
        assert flow_node.NODE_CLASS_MAPPINGS == {"RerenderEstimateFlow": node}
        assert flow_node.NODE_DISPLAY_NAME_MAPPINGS["RerenderEstimateFlow"] == "Rerender Estimate Flow"
        assert node.CATEGORY == "Rerender/flow"
        required = node.INPUT_TYPES()["required"]
        assert required["dis_preset"][1]["default"] == "medium"
        assert required["occlusion_alpha"][1]["advanced"] and required["occlusion_beta"][1]["advanced"]

    def test_consecutive_outputs(self, small_frames):
        flows, preview, masks = _run_node(small_frames)
        assert flows.pairs == consecutive_pairs(5)
        assert preview.shape == (4, 132, 180, 3) and masks.shape == (4, 132, 180)
        assert torch.equal(masks, torch.from_numpy(np.array(flows.occlusion_backward)))

    def test_keyframes_input_overrides_widgets(self, small_frames):
        flows, preview, masks = _run_node(small_frames, pair_mode="keyframes", keyframe_interval=2,
                                          keyframe_indices="0, 3", keyframes=Keyframes((1, 4), 5))
        assert flows.pairs == keyframe_pairs(Keyframes((1, 4), 5))
        assert preview.shape[0] == masks.shape[0] == len(flows.pairs)
        flows, _, _ = _run_node(small_frames, pair_mode="keyframes", keyframe_indices="0, 3")
        assert flows.pairs == keyframe_pairs(Keyframes((0, 3), 5))

    def test_raft_without_weights_names_folder_and_files(self, small_frames, models_dir):
        assert flow_node.raft_model_choices() == [flow_node.AUTO_WEIGHTS]
        with pytest.raises(MissingWeightsError) as error:
            _run_node(small_frames, backend="raft_small", raft_model=flow_node.AUTO_WEIGHTS)
        message = str(error.value)
        assert str(models_dir) in message
        assert "raft_small_C_T_V2-01064c6d.pth" in message and "contains raft_small" in message
        with pytest.raises(MissingWeightsError, match="raft_large_C_T_SKHT_V2-ff5fadd5.pth"):
            _run_node(small_frames, backend="raft_large")

    def test_raft_model_combo_lists_files(self, models_dir):
        (models_dir / "sub").mkdir(parents=True)
        (models_dir / "raft_small_C_T_V2-01064c6d.pth").write_bytes(b"")
        (models_dir / "sub" / "my_raft_large.safetensors").write_bytes(b"")
        (models_dir / "notes.txt").write_text("")
        assert flow_node.raft_model_choices() == ["auto", "raft_small_C_T_V2-01064c6d.pth",
                                                  "sub/my_raft_large.safetensors"]

    def test_single_frame(self, small_frames):
        with pytest.raises(InputError, match="at least 2 frames"):
            _run_node(small_frames[:1])
        with pytest.raises(InputError, match="at least 2 frames"):
            _run_node(small_frames[:1], pair_mode="keyframes")


# ----------------------------------------------------------------------------------------------
# command line


def test_cli_writes_preview_and_reports_cache(megamind_path, tmp_path, capsys):
    pytest.importorskip("rerender_video.videoio.writer")
    from rerender_video.cli import main
    from rerender_video.videoio.reader import load_frames

    output = tmp_path / "flow.mp4"
    code = main(["flow", str(megamind_path), "--skip", "4", "--frames", "5", "--width", "192", "--height", "144",
                 "--preset", "fast", "--output", str(output)])
    printed = capsys.readouterr().out
    assert code == 0 and output.is_file()
    assert "cached flow: " in printed
    cache_dir = printed.split("cached flow: ")[1].splitlines()[0]
    assert (torch.tensor(np.load(f"{cache_dir}/forward.npy").shape) == torch.tensor([4, 144, 192, 2])).all()
    preview = load_frames(output).images
    assert preview.shape == (4, 144, 384, 3)


def test_cli_raft_without_weights(megamind_path, tmp_path, capsys):
    from rerender_video.cli import main

    code = main(["flow", str(megamind_path), "--backend", "raft_large", "--models-dir", str(tmp_path)])
    assert code == 2
    error = capsys.readouterr().err
    assert str(tmp_path) in error and "raft_large_C_T_SKHT_V2-ff5fadd5.pth" in error
