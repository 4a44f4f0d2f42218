"""Tests of videoio (PyAV load/save) on Megamind.avi and small clips made here with PyAV.

Megamind.avi: 720x528, 270 frames, 24000/1001 fps (its AVI header stores 2997/125), XVID, and an
AC3 stereo 48 kHz audio track (tests/data/README.md says "no audio"; the file has one). The
synthetic clips are 96x64 H.264 at 24 fps whose frame i is a flat grey of level 20 + 4·i, so a
decoded frame tells which source frame it is; with a 440 Hz stereo tone in AAC (mp4) or PCM (mkv),
or no audio.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import resource
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rerender_video.common.errors import InputError, OutputError
from rerender_video.tests.video_data import cut_short_faststart_mp4
from rerender_video.videoio import reader, writer
from rerender_video.videoio.info import VideoInfo
from rerender_video.videoio.rate import exact_fps
from rerender_video.videoio.reader import estimate_frame_count, iter_frames, load_frames, probe
from rerender_video.videoio.selection import select_indices
from rerender_video.videoio.sizing import plan_size
from rerender_video.videoio.writer import rgb_to_yuv420, save_video

ROOT_DIR = Path(__file__).resolve().parents[1]
MEGAMIND_FPS = Fraction(24000, 1001)
CLIP_FPS = Fraction(24)
TONE_HZ = 440
SAMPLE_RATE = 44100


# ----------------------------------------------------------------------------------------- helpers

def make_clip(path, frames=48, fps=CLIP_FPS, size=(96, 64), audio_codec="aac", sample_rate=SAMPLE_RATE):
    """Write a clip whose frame i is a flat grey 20 + 4·i, with a 440 Hz stereo tone (or no audio)."""
    width, height = size
    with av.open(str(path), "w") as output:
        video = output.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"crf": "10", "preset": "ultrafast"}
        audio = None
        if audio_codec:
            audio = output.add_stream(audio_codec, rate=sample_rate)
            audio.layout = "stereo"
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), 20 + 4 * index, np.uint8), format="rgb24")
            frame.pts = index
            output.mux(video.encode(frame))
        output.mux(video.encode(None))
        if audio is not None:
            count = round(frames / fps * sample_rate)
            tone = (0.5 * np.sin(2 * np.pi * TONE_HZ * np.arange(count) / sample_rate)).astype(np.float32)
            stereo = np.stack([tone, tone])
            for start in range(0, count, 4096):
                chunk = np.ascontiguousarray(stereo[:, start:start + 4096])
                if audio.format.name == "s16":
                    chunk = (chunk.T.reshape(1, -1) * 32767).astype(np.int16)
                frame = av.AudioFrame.from_ndarray(chunk, format=audio.format.name, layout="stereo")
                frame.sample_rate, frame.pts = sample_rate, start
                output.mux(audio.encode(frame))
            output.mux(audio.encode(None))
    return path


def grey_index(images: torch.Tensor) -> list[int]:
    """Source frame index of each synthetic-clip frame, read from its grey level."""
    levels = images.mean(dim=(1, 2, 3)) * 255
    return [round((float(level) - 20) / 4) for level in levels]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


def nearest_frame(slot_time: Fraction, fps: Fraction) -> int:
    """Index of the source frame nearest to ``slot_time`` (ties to the earlier frame)."""
    return math.ceil(slot_time * fps - Fraction(1, 2))


def audio_stream_facts(path):
    """(codec, duration in seconds, packet payloads) of a file's first audio stream, or None."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        packets = [p for p in container.demux(stream) if p.size]
        duration = sum(Fraction(p.duration) * stream.time_base for p in packets)
        return stream.codec_context.codec.canonical_name, duration, [bytes(p) for p in packets]


def dominant_hz(waveform: torch.Tensor, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(waveform[0, 0].numpy()))
    return float(np.argmax(spectrum) * sample_rate / waveform.shape[-1])


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return {
        "tone": make_clip(folder / "tone.mp4"),
        "pcm": make_clip(folder / "pcm.mkv", audio_codec="pcm_s16le"),
        "silent": make_clip(folder / "silent.mp4", audio_codec=None),
    }


# ------------------------------------------------------------------------------------------- smoke

def test_probe_megamind(megamind_path):
    info = probe(megamind_path)
    assert info.source_fps == MEGAMIND_FPS
    assert info.source_frame_count == 270
    assert (info.source_width, info.source_height) == (720, 528)
    assert info.source_size == (528, 720)
    assert info.audio is not None and info.audio.codec == "ac3" and info.audio.sample_rate == 48000
    assert info.duration == pytest.approx(270 / float(MEGAMIND_FPS), abs=0.05)


def test_megamind_frames_fixture_shape_and_black_first_frame(megamind_frames):
    assert megamind_frames.shape == (60, 528, 720, 3)
    assert megamind_frames.dtype == torch.float32
    assert 0.0 <= float(megamind_frames.min()) and float(megamind_frames.max()) <= 1.0
    assert float(megamind_frames[0].max()) < 0.05  # decoded frame 0 is black (a fade-in)
    assert float(megamind_frames[30].mean()) > 0.05


def test_iter_frames_streams_every_megamind_frame(megamind_path, megamind_frames):
    frames = iter_frames(megamind_path)
    first = next(frames)
    assert first.dtype == np.uint8 and first.shape == (528, 720, 3)
    assert 1 + sum(1 for _ in frames) == 270
    expected = (megamind_frames[0] * 255).round().to(torch.uint8).numpy()
    assert np.array_equal(first, expected)


def test_load_all_frames_exact_count_and_fps(megamind_path):
    video = load_frames(megamind_path, custom_width=176, size_multiple=16)
    assert video.images.shape == (270, 128, 176, 3)
    assert video.frame_count == 270 and video.info.frame_count == 270
    assert video.info.source_frame_count == 270
    assert video.info.loaded_fps == MEGAMIND_FPS and video.fps == float(MEGAMIND_FPS)
    assert list(video.info.frame_indices) == list(range(270))


# ------------------------------------------------------------------------- selection arithmetic

def test_select_indices_skip_nth_cap():
    picked = select_indices(270, MEGAMIND_FPS, frame_load_cap=4, skip_first_frames=5, select_every_nth=3)
    assert picked == [5, 8, 11, 14]
    assert select_indices(270, MEGAMIND_FPS, select_every_nth=10) == list(range(0, 270, 10))
    assert select_indices(270, MEGAMIND_FPS) == list(range(270))
    assert select_indices(270, MEGAMIND_FPS, skip_first_frames=265) == [265, 266, 267, 268, 269]
    assert select_indices(270, MEGAMIND_FPS, skip_first_frames=269, frame_load_cap=5) == [269]


def test_select_indices_force_rate_below_source_picks_nearest_frames():
    fps = MEGAMIND_FPS
    indices = select_indices(270, fps, force_rate=12)
    slot_count = math.ceil(Fraction(270) / fps * 12)  # slots before the end of the last frame
    # the last slot (11.25 s) is nearest to a frame 270 that does not exist: frame 269 is on screen
    assert indices == [min(nearest_frame(Fraction(k, 12), fps), 269) for k in range(slot_count)]
    assert indices[:4] == [0, 2, 4, 6] and indices[-1] == 269


def test_select_indices_force_rate_applies_before_skip_and_nth():
    fps = MEGAMIND_FPS
    indices = select_indices(270, fps, force_rate=12, skip_first_frames=2, select_every_nth=3, frame_load_cap=4)
    assert indices == [nearest_frame(Fraction(k, 12), fps) for k in (2, 5, 8, 11)]


def test_select_indices_force_rate_above_source_repeats_frames():
    assert select_indices(4, 24, force_rate=48) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert select_indices(6, 30, force_rate=20) == [0, 1, 3, 4]  # the tie at 0.05 s goes to frame 1


def test_load_selection_matches_arithmetic_on_synthetic_clip(clips):
    video = load_frames(clips["tone"], frame_load_cap=4, skip_first_frames=5, select_every_nth=3)
    assert list(video.info.frame_indices) == [5, 8, 11, 14]
    assert grey_index(video.images) == [5, 8, 11, 14]
    assert video.info.loaded_fps == Fraction(8)
    assert video.info.start_time == Fraction(5, 24)

    forced = load_frames(clips["tone"], force_rate=10, skip_first_frames=1)
    expected = select_indices(48, CLIP_FPS, force_rate=10, skip_first_frames=1)
    assert list(forced.info.frame_indices) == expected
    assert grey_index(forced.images) == expected
    assert forced.info.loaded_fps == 10 and forced.fps == 10.0
    assert forced.info.start_time == Fraction(1, 10)


def test_force_rate_above_source_repeats_decoded_frames(clips):
    video = load_frames(clips["tone"], force_rate=48, frame_load_cap=8)
    assert list(video.info.frame_indices) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert torch.equal(video.images[0::2], video.images[1::2])
    assert grey_index(video.images[0::2]) == [0, 1, 2, 3]
    assert video.fps == 48.0


def test_load_selection_matches_arithmetic_on_megamind(megamind_path, megamind_frames):
    video = load_frames(megamind_path, frame_load_cap=4, skip_first_frames=5, select_every_nth=3)
    assert list(video.info.frame_indices) == [5, 8, 11, 14]
    assert torch.equal(video.images, megamind_frames[[5, 8, 11, 14]])
    assert video.info.loaded_fps == MEGAMIND_FPS / 3

    forced = load_frames(megamind_path, frame_load_cap=10, force_rate=12)
    indices = select_indices(270, MEGAMIND_FPS, frame_load_cap=10, force_rate=12)
    assert list(forced.info.frame_indices) == indices
    assert torch.equal(forced.images, megamind_frames[indices])
    assert estimate_frame_count(megamind_path, force_rate=12) == len(select_indices(270, MEGAMIND_FPS, force_rate=12))


# ----------------------------------------------------------------------------------- frame sizes

@pytest.mark.parametrize("custom_width, custom_height, multiple, expected", [
    (0, 0, 8, (720, 528)),      # source size, already a multiple of 8
    (0, 0, 64, (704, 512)),     # crop 720x528 down to multiples of 64
    (512, 0, 8, (512, 368)),    # height follows the aspect: 528·512/720 = 375.5 -> 375 -> 368
    (0, 256, 64, (320, 256)),   # width follows: 720·256/528 = 349.1 -> 349 -> 320
    (512, 512, 8, (512, 512)),  # cover 512x512 (698x512), crop the width
    (1000, 0, 8, (1000, 728)),  # enlarge: 528·1000/720 = 733.3 -> 733 -> 728
    (101, 0, 1, (101, 74)),     # any size with size_multiple 1
])
def test_plan_size_output_sizes(custom_width, custom_height, multiple, expected):
    assert plan_size(720, 528, custom_width, custom_height, multiple).output == expected


def test_size_multiple_only_crops_the_centre(megamind_path, megamind_frames):
    video = load_frames(megamind_path, frame_load_cap=3, size_multiple=64)
    assert video.images.shape == (3, 512, 704, 3)
    assert torch.equal(video.images, megamind_frames[:3, 8:520, 8:712])
    assert video.info.output_size == (512, 704)


def test_resize_shrinks_with_area_average(megamind_path, megamind_frames):
    video = load_frames(megamind_path, frame_load_cap=3, skip_first_frames=30, custom_width=360)
    assert video.images.shape == (3, 264, 360, 3)  # exactly half: area averaging of 2x2 blocks
    reference = F.interpolate(megamind_frames[30:33].permute(0, 3, 1, 2), size=(264, 360), mode="area")
    assert float((video.images - reference.permute(0, 2, 3, 1)).abs().max()) <= 1.5 / 255


def test_resize_enlarges_keeping_colours(megamind_path, megamind_frames):
    video = load_frames(megamind_path, frame_load_cap=1, skip_first_frames=30, custom_height=1056)
    assert video.images.shape == (1, 1056, 1440, 3)
    assert float(video.images.mean()) == pytest.approx(float(megamind_frames[30].mean()), abs=2e-3)


def test_display_rotation_is_applied(tmp_path):
    path = tmp_path / "portrait.mp4"
    with av.open(str(path), "w") as output:  # stored 96x64 with the top half white, shown turned 90° CCW
        stream = output.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        if not hasattr(stream, "set_display_rotation"):
            pytest.skip(f"PyAV {av.__version__} cannot write a display rotation (needs a newer av)")
        stream.set_display_rotation(90)
        pixels = np.zeros((64, 96, 3), np.uint8)
        pixels[:32] = 255
        for index in range(2):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    info = probe(path)
    assert info.rotation == 90 and (info.source_width, info.source_height) == (64, 96)
    video = load_frames(path)
    assert video.images.shape == (2, 96, 64, 3)
    assert float(video.images[:, :, :30].mean()) > 0.95 and float(video.images[:, :, 34:].mean()) < 0.05


# ------------------------------------------------------------------------------ frame rate maths

@pytest.mark.parametrize("value, expected", [
    (23.976023976, Fraction(24000, 1001)), (23.976, Fraction(24000, 1001)), (29.97, Fraction(30000, 1001)),
    (59.94005994005994, Fraction(60000, 1001)), (Fraction(2997, 125), Fraction(24000, 1001)),
    (24.0, Fraction(24)), (25, Fraction(25)), (12.5, Fraction(25, 2)), (0.5, Fraction(1, 2)),
])
def test_exact_fps(value, expected):
    assert exact_fps(value) == expected


@pytest.mark.parametrize("bad", [0, -24.0, float("nan"), float("inf"), "24", None])
def test_exact_fps_rejects(bad):
    with pytest.raises(InputError, match="^fps: Expected"):
        exact_fps(bad)


# ------------------------------------------------------------------------------------ round trip

def test_round_trip_keeps_frames_fps_size_and_copies_ac3(megamind_path, tmp_path):
    video = load_frames(megamind_path, skip_first_frames=100, frame_load_cap=16)
    path = save_video(video.images, tmp_path / "round.mp4", video.fps, audio_source=video.info,
                      metadata={"prompt": {"seed": 1}, "note": "x"})
    assert path == tmp_path / "round.mp4" and sorted(p.name for p in tmp_path.iterdir()) == ["round.mp4"]
    again = load_frames(path)
    assert again.images.shape == video.images.shape
    assert again.info.source_fps == MEGAMIND_FPS and again.info.source_frame_count == 16
    assert psnr(again.images, video.images) > 35
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.video[0].format.name == "yuv420p"
        assert json.loads(container.metadata["prompt"]) == {"seed": 1} and container.metadata["note"] == "x"
    codec, duration, payloads = audio_stream_facts(path)
    assert codec == "ac3"
    assert abs(duration - video.info.loaded_duration) <= Fraction(1536, 48000)  # one AC3 frame
    start, end = video.info.audio_span
    with av.open(str(megamind_path)) as source:  # stream copy: the very packets of the span
        stream = source.streams.audio[0]
        source_payloads = {bytes(p) for p in source.demux(stream) if p.size and p.pts is not None
                           and start - Fraction(1536, 48000) <= p.pts * stream.time_base < end}
    assert payloads and set(payloads) <= source_payloads


def test_save_accepts_a_frame_generator_and_float_ntsc_fps(tmp_path):
    frames = (np.full((48, 64, 3), 40 * i, np.uint8) for i in range(5))
    path = save_video(frames, tmp_path / "gen.mp4", 29.97002997)
    info = probe(path)
    assert info.source_fps == Fraction(30000, 1001) and info.source_frame_count == 5
    assert grey_index(load_frames(path).images) == [round((40 * i - 20) / 4) for i in range(5)]


def test_save_pads_odd_sizes_by_one_pixel(tmp_path, caplog, megamind_frames):
    images = megamind_frames[30:33, 100:149, 200:265]
    with caplog.at_level(logging.WARNING):
        path = save_video(images, tmp_path / "odd.mp4", 24)
    assert "padding 65x49 to 66x50" in caplog.text
    again = load_frames(path, size_multiple=1)
    assert again.images.shape == (3, 50, 66, 3)
    assert psnr(again.images[:, :49, :65], images) > 35


# ----------------------------------------------------------------------------------------- audio

def test_load_audio_of_the_selected_span(clips):
    whole = load_frames(clips["tone"])
    assert whole.audio["sample_rate"] == SAMPLE_RATE
    assert whole.audio["waveform"].shape == (1, 2, 2 * SAMPLE_RATE)
    assert whole.audio["waveform"].dtype == torch.float32
    part = load_frames(clips["tone"], skip_first_frames=12, frame_load_cap=24)
    assert part.info.audio_span == (Fraction(1, 2), Fraction(3, 2))
    assert part.audio["waveform"].shape == (1, 2, SAMPLE_RATE)
    assert dominant_hz(part.audio["waveform"], SAMPLE_RATE) == pytest.approx(TONE_HZ, abs=2)
    assert torch.allclose(part.audio["waveform"], whole.audio["waveform"][..., SAMPLE_RATE // 2:3 * SAMPLE_RATE // 2],
                          atol=1e-6)


def test_save_with_video_info_stream_copies_aac(clips, tmp_path):
    part = load_frames(clips["tone"], skip_first_frames=12, frame_load_cap=24)
    path = save_video(part.images, tmp_path / "copy.mp4", part.fps, audio_source=part.info)
    codec, duration, payloads = audio_stream_facts(path)
    _, _, source_payloads = audio_stream_facts(clips["tone"])
    assert codec == "aac"
    assert abs(duration - part.info.loaded_duration) <= Fraction(1024, SAMPLE_RATE)
    assert set(payloads) <= set(source_payloads)  # copied packets, not re-encoded
    assert probe(path).source_frame_count == 24


def test_save_with_audio_dict_encodes_aac(clips, tmp_path):
    part = load_frames(clips["tone"], skip_first_frames=12, frame_load_cap=24)
    path = save_video(part.images, tmp_path / "encoded.mp4", part.fps, audio=part.audio)
    assert audio_stream_facts(path)[0] == "aac"
    reloaded = load_frames(path).audio
    assert abs(reloaded["waveform"].shape[-1] - SAMPLE_RATE) <= 1024  # 1 s within one AAC frame
    assert dominant_hz(reloaded["waveform"], SAMPLE_RATE) == pytest.approx(TONE_HZ, abs=2)


def test_save_reencodes_audio_mp4_cannot_hold(clips, tmp_path, caplog):
    part = load_frames(clips["pcm"], frame_load_cap=24)
    assert part.info.audio.codec == "pcm_s16le"
    with caplog.at_level(logging.WARNING):
        path = save_video(part.images, tmp_path / "pcm.mp4", part.fps, audio_source=part.info)
    assert "re-encoding" in caplog.text
    assert audio_stream_facts(path)[0] == "aac"
    reloaded = load_frames(path).audio
    assert abs(reloaded["waveform"].shape[-1] - SAMPLE_RATE) <= 1024
    assert dominant_hz(reloaded["waveform"], SAMPLE_RATE) == pytest.approx(TONE_HZ, abs=2)


def test_silent_video_loads_and_saves_without_audio(clips, tmp_path):
    video = load_frames(clips["silent"])
    assert video.audio is None and video.info.audio is None and not video.info.has_audio
    path = save_video(video.images, tmp_path / "silent.mp4", video.fps, audio_source=video.info)
    assert audio_stream_facts(path) is None


# ------------------------------------------------------------------------------------- bad input

def test_missing_file(tmp_path):
    for call in (probe, load_frames, iter_frames):
        with pytest.raises(InputError, match="^video: Expected an existing video file"):
            call(tmp_path / "nope.mp4")


def test_not_a_video(tmp_path, clips):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n" * 50)
    with pytest.raises(InputError, match="^video: Expected a video file"):
        load_frames(fake)
    sound_only = tmp_path / "tone.m4a"
    with av.open(str(clips["tone"])) as source, av.open(str(sound_only), "w") as output:
        stream = output.add_stream_from_template(source.streams.audio[0])
        for packet in source.demux(source.streams.audio[0]):
            if packet.dts is not None:
                packet.stream = stream
                output.mux(packet)
    with pytest.raises(InputError, match="no video stream"):
        probe(sound_only)


def test_skip_past_the_end(clips):
    with pytest.raises(InputError, match=r"^skip_first_frames: Expected fewer than 48 .* Got: 48\."):
        load_frames(clips["tone"], skip_first_frames=48)
    with pytest.raises(InputError, match="^skip_first_frames: Expected fewer than 20"):
        iter_frames(clips["tone"], skip_first_frames=20, force_rate=10)  # 2 s at 10 fps = 20 slots


def test_skip_past_the_end_of_a_container_without_frame_count(clips):
    assert probe(clips["pcm"]).source_frame_count == 48  # mkv states no count: estimated from duration
    with pytest.raises(InputError, match="^skip_first_frames: Expected fewer than"):
        load_frames(clips["pcm"], skip_first_frames=60)


def test_cap_past_the_end_loads_the_frames_there_are_with_a_note(clips, caplog):
    """As the node's tooltip and the CLI's help say ("at most N"), and as VideoHelperSuite does."""
    with caplog.at_level(logging.WARNING):
        video = load_frames(clips["tone"], skip_first_frames=40, frame_load_cap=20)
    assert grey_index(video.images) == list(range(40, 48))
    assert video.info.frame_indices == tuple(range(40, 48)) and video.info.source_frame_count == 48
    assert "frame_load_cap 20 is past the end of tone.mp4: loaded the 8 frames there are" in caplog.text
    caplog.clear()
    assert grey_index(load_frames(clips["tone"], skip_first_frames=40, frame_load_cap=8).images) == list(
        range(40, 48))
    assert "past the end" not in caplog.text


@pytest.mark.parametrize("kwargs, name", [
    ({"select_every_nth": 0}, "select_every_nth"), ({"frame_load_cap": -1}, "frame_load_cap"),
    ({"skip_first_frames": -2}, "skip_first_frames"), ({"force_rate": -1.0}, "force_rate"),
    ({"custom_width": -8}, "custom_width"), ({"size_multiple": 0}, "size_multiple"),
    ({"size_multiple": 128}, "size_multiple"),  # the clip is 96x64
])
def test_invalid_widgets_name_the_widget(clips, kwargs, name):
    with pytest.raises(InputError, match=f"^{name}: Expected"):
        load_frames(clips["silent"], **kwargs)


def test_size_multiple_larger_than_frame_says_what_fits(megamind_path):
    with pytest.raises(InputError, match=r"^size_multiple: Expected at most 528\b.*Got: 600\..*512"):
        load_frames(megamind_path, size_multiple=600)


def test_memory_check_runs_before_allocating(megamind_path, monkeypatch):
    monkeypatch.setattr("rerender_video.common.memory.available_bytes", lambda: 50 * 720 * 528 * 3 * 4)
    with pytest.raises(InputError, match=r"^frame_load_cap: .*40 items fit.*Got: 270 items.*select_every_nth"):
        load_frames(megamind_path)


def test_interrupted_save_leaves_no_file(tmp_path):
    def frames():
        for index in range(3):
            yield np.full((48, 64, 3), 60 * index, np.uint8)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_video(frames(), tmp_path / "broken.mp4", 24)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("images, kwargs, name", [
    (torch.zeros(0, 8, 8, 3), {}, "images"),
    (torch.zeros(2, 8, 8, 3), {"crf": 60}, "crf"),
    (torch.zeros(2, 8, 8, 3), {"preset": "warp"}, "preset"),
    (torch.zeros(2, 8, 8, 3), {"fps": 0}, "fps"),
    (torch.zeros(2, 8, 8, 3), {"audio": {"waveform": torch.zeros(1, 2, 10)}}, "audio"),
    ([np.zeros((8, 8, 3), np.uint8), np.zeros((10, 8, 3), np.uint8)], {}, "images"),
])
def test_save_rejects_bad_input_and_leaves_no_file(tmp_path, images, kwargs, name):
    kwargs = {"fps": 24, **kwargs}
    with pytest.raises(InputError, match=f"^{name}: Expected"):
        save_video(images, tmp_path / "bad.mp4", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_video_info_round_trips_to_plain_values(clips):
    info = load_frames(clips["tone"], frame_load_cap=2).info
    assert isinstance(info, VideoInfo)
    values = info.as_dict()
    assert values["loaded_frame_count"] == 2 and values["source_fps_fraction"] == "24"
    assert json.loads(json.dumps(values, default=str))["frame_indices"] == [0, 1]
    assert "2 of 48 frames at 96x64" in info.describe()


def test_module_api_names():
    assert callable(reader.load_frames) and callable(reader.iter_frames) and callable(reader.probe)
    assert callable(writer.save_video)


# ------------------------------------------------------------------------------- damaged and bad input

def test_cut_short_faststart_mp4_names_the_last_decoded_frame(tmp_path):
    """Threaded decoding drops FFmpeg's error for the torn packet; the declared frame count tells."""
    path = cut_short_faststart_mp4(tmp_path / "cut.mp4", frames=40, decodable=4)
    assert probe(path).source_frame_count == 40
    message = (r"^video: Expected a video that decodes to the end, Got: the data stops after frame 3: 4 of the 40 "
               r"frames the container declares \(0\.17 of 1\.67 s\)\. Fixes: \(1\) copy or download the file again "
               r".*load at most 4 frames with frame_load_cap")
    with pytest.raises(InputError, match=message):
        load_frames(path)
    with pytest.raises(InputError, match=message):
        list(iter_frames(path))
    with pytest.raises(InputError, match=message):
        load_frames(path, frame_load_cap=10)
    assert load_frames(path, frame_load_cap=4).frame_count == 4  # the whole frames before the cut load


def test_whole_faststart_mp4_loads_every_frame(tmp_path):
    """The completeness check does not fire on a whole file with its index at the front."""
    with av.open(str(tmp_path / "whole.mp4"), "w", options={"movflags": "faststart"}) as output:
        stream = output.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for index in range(12):
            frame = av.VideoFrame.from_ndarray(np.full((64, 96, 3), 20 + 4 * index, np.uint8), format="rgb24")
            frame.pts = index
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    assert grey_index(load_frames(tmp_path / "whole.mp4").images) == list(range(12))


def test_nan_and_inf_frames_are_refused_naming_the_frames(tmp_path):
    images = torch.rand(9, 16, 16, 3)
    images[2, 3, 4, 0] = float("nan")
    images[5] = float("inf")
    images[7, 0, 0, 2] = -float("inf")
    with pytest.raises(InputError, match=r"^images: Expected finite values in \[0,1\], Got: NaN or infinity in "
                                         r"frames 2, 5, 7\. Fixes: .*replace or drop those frames"):
        save_video(images, tmp_path / "nan.mp4", 24)
    frames = [np.zeros((16, 16, 3), np.float32), np.full((16, 16, 3), np.nan, np.float32)]
    with pytest.raises(InputError, match=r"^images: .*NaN or infinity in frame 1\."):
        save_video(iter(frames), tmp_path / "nan.mp4", 24)
    assert list(tmp_path.iterdir()) == []


WRITE_SLOWLY = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from rerender_cli import load_pack
load_pack()
import numpy as np
from rerender_video.videoio.writer import save_video

def frames():
    for index in range(2000):
        yield np.full((64, 96, 3), index % 256, np.uint8)
        time.sleep(0.02)

save_video(frames(), sys.argv[2], 24)
"""


def _parts(folder):
    return sorted(path.name for path in folder.iterdir() if ".part" in path.name)


def test_partial_file_of_a_killed_save_is_removed_by_the_next_save(tmp_path):
    output = tmp_path / "out.mp4"
    writer = subprocess.Popen([sys.executable, "-c", WRITE_SLOWLY, str(ROOT_DIR), str(output)])
    try:
        deadline = time.monotonic() + 120
        while not _parts(tmp_path) and time.monotonic() < deadline and writer.poll() is None:
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    stale = _parts(tmp_path)
    assert len(stale) == 1 and not output.exists()  # kill -9: no cleanup ran
    # a partial file being written right now by someone else, and another output's: both stay
    busy = tmp_path / ".out.busy0000.part.mp4"
    busy.write_bytes(b"x")
    other = tmp_path / ".out.take2.k3j4h5g6.part.mp4"  # of "out.take2.mp4"
    other.write_bytes(b"x")
    holder = os.open(busy, os.O_RDWR)
    try:
        import fcntl

        fcntl.flock(holder, fcntl.LOCK_EX)
        save_video(torch.rand(3, 16, 16, 3), output, 24)
    finally:
        os.close(holder)
    assert output.is_file()
    assert _parts(tmp_path) == sorted([busy.name, other.name])


def test_write_errors_name_the_path_and_the_reason(tmp_path):
    """An I/O error while encoding (here: the file-size limit) comes out in the pack's format, not as OSError."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (48 * 1024, hard))
    try:
        with pytest.raises(OutputError) as caught:
            save_video(torch.rand(40, 64, 96, 3, generator=torch.Generator().manual_seed(0)), tmp_path / "big.mp4",
                       24, path_name="output")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert str(caught.value) == (
        f"output: Expected a folder where the file can be written, Got: {tmp_path / 'big.mp4'} (File too large). "
        "Fixes: (1) write to a drive that takes larger files (FAT32 stops at 4 GiB). (2) save the video in parts.")
    assert list(tmp_path.iterdir()) == []


ENCODE = r"""
import os, sys
sys.path.insert(0, sys.argv[1])
if sys.argv[4] == "one-cpu":  # x264 used to cut frames into one slice per CPU it may run on
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
from rerender_cli import load_pack
load_pack()
from rerender_video.videoio.reader import load_frames
from rerender_video.videoio.writer import save_video

video = load_frames(sys.argv[2], frame_load_cap=48, skip_first_frames=30, custom_width=360)
save_video(video.images, sys.argv[3], video.fps, audio_source=video.info, metadata={"prompt": {"seed": 1}})
"""


def test_same_frames_give_byte_identical_files_in_two_processes(megamind_path, tmp_path):
    digests = []
    for run, cpus in enumerate(("all-cpus", "one-cpu", "all-cpus")):
        output = tmp_path / f"run{run}.mp4"
        subprocess.run([sys.executable, "-c", ENCODE, str(ROOT_DIR), str(megamind_path), str(output), cpus],
                       check=True, timeout=300)
        digests.append(hashlib.sha256(output.read_bytes()).hexdigest())
    assert digests[0] == digests[1] == digests[2]
    with av.open(str(tmp_path / "run0.mp4")) as container:  # a real video, with the copied audio
        assert container.streams.video[0].frames == 48 and len(container.streams.audio) == 1


def test_rgb_to_yuv420_is_bt709_limited_range():
    colours = {(255, 0, 0): (63, 102, 240), (0, 255, 0): (173, 42, 26), (0, 0, 255): (32, 240, 118),
               (0, 0, 0): (16, 128, 128), (255, 255, 255): (235, 128, 128)}  # FFmpeg's swscale gives the same
    for rgb, yuv in colours.items():
        planes = rgb_to_yuv420(np.full((4, 6, 3), rgb, np.uint8)).ravel()
        assert (planes[0], planes[24], planes[30]) == yuv
    block = np.array([[[200, 0, 0], [0, 0, 0]], [[0, 0, 0], [0, 0, 0]]], np.uint8)  # chroma of the block mean
    mean = np.full((2, 2, 3), [50, 0, 0], np.uint8)
    assert rgb_to_yuv420(block).ravel()[4:].tolist() == rgb_to_yuv420(mean).ravel()[4:].tolist()
