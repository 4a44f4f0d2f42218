"""Temporal metrics: warp error, flicker, PSNR/SSIM, CLIP Tem-Con/Fram-Acc, streaming, node and command.

Real data: Megamind.avi frames (a real frame warped along a known smooth flow, a clip across a real cut).
Each metric is checked against a value the formula predicts or a plain numpy/OpenCV re-computation.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from scipy.ndimage import uniform_filter

from rerender_video.cli import main as cli_main
from rerender_video.common.errors import InputError
from rerender_video.common.keyframes import from_indices
from rerender_video.flow.dis import DisFlow
from rerender_video.flow.estimate import estimate_flow
from rerender_video.flow.pairs import consecutive_pairs
from rerender_video.flow.types import FlowPairs
from rerender_video.flow.warp import warp_hwc
from rerender_video.metrics.clip import ClipMetrics
from rerender_video.metrics.consistency import warp_error
from rerender_video.metrics.evaluate import evaluate_video
from rerender_video.metrics.plot import KEYFRAME, plot_report
from rerender_video.metrics.reference import psnr_ssim
from rerender_video.metrics.streams import from_file
from rerender_video.nodes.metrics import RerenderTemporalConsistency
from rerender_video.videoio.reader import load_frames
from rerender_video.videoio.writer import save_video


@pytest.fixture(scope="module")
def real_frame(megamind_frames) -> torch.Tensor:
    """Decoded frame 30 of Megamind, cropped to 120×160 (textured, one shot)."""
    return megamind_frames[30, 200:320, 300:460].clone()


def smooth_flow(height: int, width: int, scale: float = 1.0) -> torch.Tensor:
    """A smooth flow field ``[H,W,2]`` (pixels): a drift of ~1.5 px right, ~0.8 px down, plus slow waves."""
    y, x = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                          indexing="ij")
    flow_x = 1.5 + 0.5 * torch.sin(y / 23.0)
    flow_y = 0.8 + 0.4 * torch.cos(x / 31.0)
    return torch.stack([flow_x, flow_y], dim=-1) * scale


def warped_video(frame: torch.Tensor, steps: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Frame ``t`` = ``frame`` warped by ``t`` times a smooth flow; returns frames and the exact per-pair flows.

    With ``g`` the flow, frame t samples ``frame(x − t·g(x))``: frame t+1 is frame t moved by ``g``, so the flow
    t → t+1 on frame t's grid is ``g`` up to ``|g|·|∇g|`` < 0.1 px here.
    """
    height, width = frame.shape[:2]
    flow = smooth_flow(height, width)
    frames = torch.stack([warp_hwc(frame[None], -step * flow[None])[0] for step in range(steps)])
    return frames, [flow] * (steps - 1)


def flow_pairs(flows: list[torch.Tensor], margin: int) -> FlowPairs:
    """A FLOW of consecutive pairs with the given forward flows; a border of ``margin`` px marked occluded."""
    count = len(flows) + 1
    height, width = flows[0].shape[:2]
    forward = torch.stack(flows).numpy()
    occlusion = np.ones((len(flows), height, width), np.float32)
    occlusion[:, margin:-margin, margin:-margin] = 0
    return FlowPairs(consecutive_pairs(count), forward, -forward, occlusion, occlusion, (height, width), count, "test")


class TestWarpError:
    def test_zero_on_a_frame_warped_along_a_known_flow(self, real_frame):
        frames, flows = warped_video(real_frame, 5)
        inside = frames[:, 12:-12, 12:-12]   # drop the border the warps smeared
        crop_flows = [flow[12:-12, 12:-12] for flow in flows]
        report = evaluate_video(inside, inside, flow=flow_pairs(crop_flows, 4), cut_threshold=0)
        moved = float(((inside[1:] - inside[:-1]) ** 2).sum(-1).mean())   # the same frames without compensation
        assert report.means()["warp_error"] < 2e-4 < moved / 20

    def test_near_zero_with_dis_flow_of_the_source(self, real_frame):
        frames, _ = warped_video(real_frame, 5)
        stylized = 1.0 - frames                                    # a per-pixel "style" moves with the content
        flickering = stylized.clone()
        flickering[1::2] = (flickering[1::2] + 0.05).clamp(0, 1)   # a style that pops every other frame
        steady = evaluate_video(stylized, frames, cut_threshold=0).means()["warp_error"]
        popping = evaluate_video(flickering, frames, cut_threshold=0).means()["warp_error"]
        assert steady < 2e-4 and popping > 20 * steady

    def test_occluded_pixels_are_left_out(self):
        a = torch.zeros(8, 8, 3)
        b = torch.zeros(8, 8, 3)
        b[:, :4] = 1.0                       # changes only where the mask says "occluded"
        occluded = torch.zeros(8, 8)
        occluded[:, :4] = 1
        assert warp_error(a, b, torch.zeros(8, 8, 2), occluded) == 0.0
        assert warp_error(a, b, torch.zeros(8, 8, 2), torch.ones(8, 8)) is None


class TestFlicker:
    def test_alternating_offset_gives_the_predicted_value(self, real_frame):
        base = 0.2 + 0.5 * real_frame                 # in [0.2, 0.7]: no clipping after the offset
        offset = 10 / 255
        video = base[None].repeat(6, 1, 1, 1)
        video[1::2] += offset
        report = evaluate_video(video, base[None].repeat(6, 1, 1, 1), cut_threshold=0)
        assert report.means()["flicker"] == pytest.approx((255 - 10) / 255, abs=1e-6)
        # the source is static, so the warp error is the offset itself: 3 channels × offset²
        assert report.means()["warp_error"] == pytest.approx(3 * offset ** 2, rel=1e-4)

    def test_static_video_is_one(self, real_frame):
        video = real_frame[None].repeat(4, 1, 1, 1)
        report = evaluate_video(video, video, cut_threshold=0)
        assert report.means()["flicker"] == 1.0
        assert report.means()["warp_error"] == pytest.approx(0.0, abs=1e-12)


def numpy_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM (Wang et al. 2004) with a 7×7 uniform window and sample covariances, 8-bit, per channel, border cropped."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    c1, c2, count = (0.01 * 255) ** 2, (0.03 * 255) ** 2, 49
    values = []
    for channel in range(3):
        x, y = a[..., channel], b[..., channel]
        mx, my = uniform_filter(x, 7), uniform_filter(y, 7)
        vx = (uniform_filter(x * x, 7) - mx * mx) * count / (count - 1)
        vy = (uniform_filter(y * y, 7) - my * my) * count / (count - 1)
        cxy = (uniform_filter(x * y, 7) - mx * my) * count / (count - 1)
        ssim = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
        values.append(ssim[3:-3, 3:-3].mean())
    return float(np.mean(values))


@pytest.fixture(scope="module")
def clip(megamind_path):
    """Decoded frames 94-103 at 128 px (motion, and the cut before decoded frame 98: pair 3 → 4), a stylized
    copy (OpenCV stylization) and their DIS FLOW."""
    frames = load_frames(megamind_path, frame_load_cap=10, skip_first_frames=94, custom_width=128).images
    stylized = torch.from_numpy(np.stack([cv2.stylization((f * 255).astype(np.uint8), sigma_s=20, sigma_r=0.3)
                                          for f in frames.numpy()]).astype(np.float32) / 255)
    flow = estimate_flow(frames, consecutive_pairs(len(frames)), DisFlow("medium"))
    return frames, stylized, flow


class TestAgainstNumpy:
    """Every metric on a small real clip against a plain numpy/OpenCV re-computation."""

    def test_all_metrics(self, clip):
        frames, stylized, flow = clip
        report = evaluate_video(stylized, frames, reference=frames, flow=flow)
        height, width = frames.shape[1:3]
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        out = stylized.numpy()
        assert report.excluded_pairs == (3,)
        for t in range(len(frames) - 1):
            if t == 3:
                assert report.per_frame["warp_error"][t] is None and report.per_frame["flicker"][t] is None
                continue
            forward = np.asarray(flow.forward[t])
            warped = cv2.remap(out[t + 1], xs + forward[..., 0], ys + forward[..., 1], cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
            visible = np.asarray(flow.occlusion_forward[t]) < 0.5
            expected = ((out[t] - warped) ** 2).sum(-1)[visible].mean()
            assert report.per_frame["warp_error"][t] == pytest.approx(expected, rel=1e-3)
            assert report.per_frame["flicker"][t] == pytest.approx(1 - np.abs(out[t] - out[t + 1]).mean(), abs=1e-6)
        for t in range(len(frames)):
            a = np.rint(out[t] * 255).astype(np.uint8)
            b = np.rint(frames[t].numpy() * 255).astype(np.uint8)
            mse = ((a.astype(np.float64) - b) ** 2).mean()
            assert report.per_frame["psnr"][t] == pytest.approx(10 * np.log10(255 ** 2 / mse), abs=1e-6)
            assert report.per_frame["ssim"][t] == pytest.approx(numpy_ssim(b, a), abs=1e-6)
        kept = [v for v in report.per_frame["warp_error"] if v is not None]
        assert report.means()["warp_error"] == pytest.approx(np.mean(kept))

    def test_computed_flow_matches_the_given_flow(self, clip):
        frames, stylized, flow = clip
        given = evaluate_video(stylized, frames, flow=flow).per_frame["warp_error"]
        computed = evaluate_video(stylized, frames).per_frame["warp_error"]
        assert computed == given   # the same DIS + forward–backward check, pair by pair

    def test_non_key_means_leave_keyframes_out(self, clip):
        frames, stylized, _ = clip
        truth = stylized.clone()
        truth[[0, 5]] = frames[[0, 5]]                   # keyframes exact, the rest differs
        report = evaluate_video(frames, frames, reference=truth, keyframes=[0, 5])
        means = report.means()
        assert means["psnr_non_key"] < means["psnr"] < 100 and report.per_frame["psnr"][5] == 100.0

    def test_identical_frames_have_capped_psnr(self, clip):
        frame = clip[0][0]
        assert psnr_ssim(frame, frame) == (100.0, 1.0)


class TestStreaming:
    def test_file_stream_equals_in_memory(self, megamind_path, tmp_path):
        frames = load_frames(megamind_path, frame_load_cap=8, skip_first_frames=40, custom_width=96).images
        path = save_video(frames, tmp_path / "clip.mp4", 24, crf=0)
        decoded = load_frames(path, size_multiple=1).images
        from_disk = evaluate_video(from_file(path, "output"), from_file(path, "source"))
        in_memory = evaluate_video(decoded, decoded)
        assert from_disk.per_frame == in_memory.per_frame and from_disk.frame_count == 8

    def test_streams_are_lazy(self, megamind_path):
        stream = from_file(megamind_path, "output")
        assert stream.count == 270 and stream.size == (528, 720)
        assert not isinstance(stream.frames, (list, tuple, torch.Tensor))


class TestBadInput:
    def test_different_sizes_name_both(self):
        with pytest.raises(InputError, match=r"source: .*output's size \(8x6.*Got: 8x8"):
            evaluate_video(torch.zeros(3, 6, 8, 3), torch.zeros(3, 8, 8, 3))

    def test_different_lengths_name_both(self):
        with pytest.raises(InputError, match=r"reference: Expected 3 frames, as many as output has, Got: 4"):
            evaluate_video(torch.zeros(3, 16, 16, 3), torch.zeros(3, 16, 16, 3), reference=torch.zeros(4, 16, 16, 3))

    def test_flow_of_another_video(self, real_frame):
        frames, flows = warped_video(real_frame, 4)
        with pytest.raises(InputError, match="flow"):
            evaluate_video(frames[:3], frames[:3], flow=flow_pairs(flows, 2))

    def test_clip_vision_of_the_wrong_kind(self):
        class TextModelOnly:          # what a CLIP (text) object looks like: no encode_image
            def tokenize(self, text):
                return text
        node = RerenderTemporalConsistency()
        with pytest.raises(InputError, match="clip_vision: Expected a CLIP_VISION model"):
            node.measure(torch.zeros(3, 16, 16, 3), torch.zeros(3, 16, 16, 3), 20.0, clip_vision=TextModelOnly())

    def test_clip_text_of_the_wrong_kind(self):
        node = RerenderTemporalConsistency()
        with pytest.raises(InputError, match="clip: Expected a CLIP text model"):
            node.measure(torch.zeros(3, 16, 16, 3), torch.zeros(3, 16, 16, 3), 20.0, clip_vision=FakeVision(),
                         clip=FakeVision(), target_prompt="a", source_prompt="b")

    def test_clip_families_that_differ(self):
        metrics = ClipMetrics(mean_colour, lambda prompts: torch.ones(len(prompts), 5), "a", "b")
        with pytest.raises(InputError, match="clip: .*3 wide.*Got: text embeddings 5 wide"):
            evaluate_video(torch.zeros(3, 16, 16, 3), torch.zeros(3, 16, 16, 3), clip=metrics)

    def test_prompts_needed_for_fram_acc(self):
        metrics = ClipMetrics(mean_colour, lambda prompts: torch.eye(3)[:len(prompts)], "a painting", "")
        with pytest.raises(InputError, match="source_prompt"):
            evaluate_video(torch.zeros(3, 16, 16, 3), torch.zeros(3, 16, 16, 3), clip=metrics)


def mean_colour(frames: torch.Tensor) -> torch.Tensor:
    """A stand-in image encoder: each frame's mean RGB (a 3-wide embedding)."""
    return frames.mean(dim=(1, 2))


class FakeVision:
    """Duck type of ComfyUI's ClipVisionModel: ``encode_image(frames)["image_embeds"]``."""

    def encode_image(self, frames):
        return {"image_embeds": mean_colour(frames)}


class TestClipMetrics:
    def test_tem_con_and_fram_acc(self):
        colours = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.6, 0.8, 0.0]])
        video = colours[:, None, None, :].expand(4, 16, 16, 3).contiguous()
        prompts = {"red": torch.tensor([1.0, 0.0, 0.0]), "green": torch.tensor([0.0, 1.0, 0.0])}
        metrics = ClipMetrics(mean_colour, lambda texts: torch.stack([prompts[t] for t in texts]), "red", "green",
                              batch_size=3)             # batches of 3: one pair spans two batches
        report = evaluate_video(video, video, clip=metrics, cut_threshold=0)
        unit = colours / colours.norm(dim=1, keepdim=True)
        expected = [(unit[t] * unit[t + 1]).sum().item() for t in range(3)]
        assert report.per_frame["tem_con"] == pytest.approx(expected)
        assert report.per_frame["fram_acc"] == [True, True, False, False]
        assert report.means()["fram_acc"] == 0.5

    def test_cut_pairs_are_left_out_of_tem_con(self, clip):
        video = clip[0][1:7]      # decoded frames 95-100: the cut before decoded frame 98
        report = evaluate_video(video, video, clip=ClipMetrics(mean_colour))
        assert report.excluded_pairs == (2,) and report.per_frame["tem_con"][2] is None
        assert "fram_acc" not in report.per_frame


class TestNodeAndPlot:
    def test_node_outputs(self, megamind_frames):
        video = megamind_frames[30:40, ::8, ::8].contiguous()
        keys = from_indices([0, 5], len(video))
        result = RerenderTemporalConsistency().measure(video, video, 20.0, reference_frames=video, keyframes=keys,
                                                       clip_vision=FakeVision())
        summary, chart = result["result"]
        data = json.loads(result["ui"]["rerender_metrics"][0])
        assert "warp_error" in summary and "tem_con" in summary
        assert set(data) >= {"warp_error", "flicker", "psnr", "ssim", "tem_con", "per_frame"}
        assert len(data["per_frame"]["warp_error"]) == 9 and data["keyframes"] == [0, 5]
        assert chart.shape == (1, 450, 960, 3) and chart.dtype == torch.float32

    def test_plot_marks_keyframes(self):
        from rerender_video.metrics.report import TemporalReport

        report = TemporalReport(11, (8, 8), {"warp_error": [0.1] * 10, "flicker": [0.9] * 10}, (5,))
        chart = plot_report(report)
        column = chart[60, :]
        blue = np.where((column == KEYFRAME).all(axis=-1))[0]
        assert len(blue) == 1 and abs(blue[0] - (70 + (960 - 8 - 70) * 5 / 10)) <= 1


class TestCommand:
    def test_json_and_plot(self, megamind_path, tmp_path, capsys):
        output = tmp_path / "out.mp4"
        frames = load_frames(megamind_path, frame_load_cap=12, skip_first_frames=20, custom_width=128).images
        save_video(1.0 - frames, output, 24, crf=10)
        code = cli_main(["evaluate", str(output), "--source", str(megamind_path), "--skip", "20", "--frames", "12",
                         "--reference", str(output), "--keyframes", "0, 6", "--json", str(tmp_path / "m.json"),
                         "--plot", str(tmp_path / "m.png")])
        assert code == 0
        data = json.loads((tmp_path / "m.json").read_text())
        assert data["psnr"] == 100.0 and 0 < data["warp_error"] < 0.01 and 0.9 < data["flicker"] <= 1
        assert len(data["per_frame"]["flicker"]) == 11 and len(data["per_frame"]["psnr"]) == 12
        assert cv2.imread(str(tmp_path / "m.png")).shape[1] == 960
        assert "warp_error" in capsys.readouterr().out

    def test_mismatched_lengths_exit_2_naming_both(self, megamind_path, tmp_path, capsys):
        output = tmp_path / "short.mp4"
        save_video(load_frames(megamind_path, frame_load_cap=5, custom_width=96).images, output, 24)
        code = cli_main(["evaluate", str(output), "--source", str(megamind_path), "--reference", str(megamind_path)])
        assert code == 2
        error = capsys.readouterr().err
        assert "--source" in error and "OUTPUT" in error and "270" in error and "5 frames" in error

    def test_bad_plot_name_before_work(self, megamind_path, tmp_path, capsys):
        code = cli_main(["evaluate", str(megamind_path), "--source", str(megamind_path), "--plot",
                         str(tmp_path / "chart.nothing")])
        assert code == 2 and "--plot" in capsys.readouterr().err
