"""Video propagation of stylized keyframes: the per-frame-filter protocol, the two-sided blend, nodes, cache, errors.

Protocol (EbSynth anchor, propagation/ALGORITHM.md §18, applied to a whole chain): a deterministic per-frame
"style" ``f`` (``cv2.stylization`` + posterisation to 8 levels) gives exact ground truth for every frame.
``f(frame 0)`` is propagated forward to frames 1–10 and ``f(frame 10)`` backward to frames 9–0 with
Rerender's guides and schedule (patch 5, 12 × 6); each result is scored against ``f(frame d)``.
Data: Megamind frames 1–11 (decoded frame 0 is black; no cut until frame 98) at 256×184.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from rerender_video.benchmarks._anchor_protocol import score_rgb, stylize_rgb
from rerender_video.common.errors import InputError
from rerender_video.common.keyframes import Keyframes
from rerender_video.flow.dis import DisFlow
from rerender_video.flow.estimate import estimate_flow
from rerender_video.flow.pairs import consecutive_pairs, pairs_for_mode
from rerender_video.nodes.blend import RerenderTemporalBlend
from rerender_video.nodes.propagate import RerenderEbSynthPropagate, RerenderLoadKeyframes
from rerender_video.propagation.blend import blend_video
from rerender_video.propagation.guides import GuideWeights
from rerender_video.propagation.params import SynthesisParams
from rerender_video.propagation.result import BACKWARD, FORWARD, Chain, Propagation
from rerender_video.propagation.sequence import plan_chains, propagate_chain, propagate_video
from rerender_video.videoio.reader import load_frames

# Floors per gap d (frames from the keyframe). Measured with the defaults (numba CPU backend, which is
# deterministic and thread-count independent, so there is no run-to-run spread), PSNR dB / SSIM:
#   forward  d=1 32.17/0.9634  d=2 31.26/0.9578  d=5 30.42/0.9445  d=10 28.66/0.9284
#   backward d=1 32.32/0.9628  d=2 31.09/0.9547  d=5 29.76/0.9385  d=10 28.90/0.9292
#   copying the keyframe: 28.12, 25.18, 20.99, 18.97 dB
# (the original EbSynth with colour + edge guides only, full 720x528, gets 32.88 at d=1 and 29.99 at d=10).
# Floors = the lower of both directions - 1 dB / - 0.01 SSIM: room for other OpenCV/PyAV builds (stylization
# and decoding differ slightly between versions) and for backend changes that keep quality, while a broken
# guide (e.g. a positional grid advected the wrong way) costs more than that.
PROTOCOL_FLOOR_PSNR = {1: 31.0, 2: 30.0, 5: 28.7, 10: 27.6}
PROTOCOL_FLOOR_SSIM = {1: 0.950, 2: 0.944, 5: 0.928, 10: 0.918}


@pytest.fixture(scope="module")
def clip(megamind_path, tmp_path_factory):
    """Frames, their stylizations and DIS flow; the cache of this module lives in its own folder."""
    frames = load_frames(megamind_path, frame_load_cap=11, skip_first_frames=1, custom_width=256).images
    styled = np.stack([stylize_rgb(frame) for frame in frames.numpy()])
    cache = tmp_path_factory.mktemp("propagation-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RERENDER_CACHE_DIR", str(cache))
        flow = estimate_flow(frames, consecutive_pairs(len(frames)), DisFlow("medium"))
    return frames, styled, flow


@pytest.fixture(scope="module")
def protocol(clip, tmp_path_factory):
    """Key 0 propagated forward to 1–10 and key 10 backward to 9–0 (default Rerender settings)."""
    frames, styled, flow = clip
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RERENDER_CACHE_DIR", str(tmp_path_factory.mktemp("protocol-cache")))
        forward = propagate_video(frames, torch.from_numpy(styled[[0]]), Keyframes((0,), 11), flow)
        backward = propagate_video(frames, torch.from_numpy(styled[[10]]), Keyframes((10,), 11), flow)
    return forward, backward


# --- correctness: the protocol ----------------------------------------------------------------------------------

def test_forward_propagation_follows_the_per_frame_filter(clip, protocol):
    _, styled, _ = clip
    forward, _ = protocol
    for gap in (1, 2, 5, 10):
        image, error = forward.candidate(gap, FORWARD)
        psnr, ssim = score_rgb(image, styled[gap])
        copy_psnr, _ = score_rgb(styled[0], styled[gap])
        assert psnr > PROTOCOL_FLOOR_PSNR[gap] and ssim > PROTOCOL_FLOOR_SSIM[gap], (gap, psnr, ssim)
        assert psnr > copy_psnr + 2, (gap, psnr, copy_psnr)  # far better than copying the keyframe
        assert error.shape == image.shape[:2] and np.isfinite(error).all() and error.min() >= 0


def test_backward_propagation_follows_the_per_frame_filter(clip, protocol):
    _, styled, _ = clip
    _, backward = protocol
    for gap in (1, 2, 5, 10):
        psnr, ssim = score_rgb(backward.candidate(10 - gap, BACKWARD)[0], styled[10 - gap])
        assert psnr > PROTOCOL_FLOOR_PSNR[gap] and ssim > PROTOCOL_FLOOR_SSIM[gap], (gap, psnr, ssim)


def test_the_positional_guide_carries_the_keyframe_along_the_flow(clip):
    """With only the positional guide (strong, no temporal NNF initialisation) the synthesis can place the
    keyframe's style only where the chain's advected grid says each pixel came from: five frames on, the result
    must follow the motion (well above copying the keyframe), which an unadvected grid cannot do."""
    frames, styled, flow = clip
    weights = GuideWeights(colour=0.0, edge=0.0, positional=200.0, temporal=0.0)
    images, _ = propagate_chain(frames, torch.from_numpy(styled[0]), 0, [1, 2, 3, 4, 5], flow,
                                SynthesisParams(search_vote_iters=2, patchmatch_iters=1), weights,
                                temporal_nnf_init=False)
    result, _ = score_rgb(images[4].astype(np.float32), styled[5])
    copied, _ = score_rgb(styled[0], styled[5])
    assert result > copied + 2.0, (result, copied)     # measured 24.4 vs 21.0 dB


def test_blend_of_two_keyframes_beats_either_direction(clip, protocol):
    frames, styled, flow = clip
    forward, backward = protocol
    fwd_chain, bwd_chain = forward.chains[0], backward.chains[0]
    assert fwd_chain.frames == tuple(range(1, 11)) and bwd_chain.frames == tuple(range(9, -1, -1))
    # The two chains restricted to the segment (0, 10) are exactly what propagate_video computes for keyframes
    # (0, 10) with direction both.
    chains = [Chain(0, FORWARD, fwd_chain.frames[:9], fwd_chain.images[:9], fwd_chain.errors[:9]),
              Chain(10, BACKWARD, bwd_chain.frames[:9], bwd_chain.images[:9], bwd_chain.errors[:9])]
    both = Propagation(Keyframes((0, 10), 11), torch.from_numpy(styled[[0, 10]]), flow, chains)
    blended, _ = blend_video(both)
    middle = range(3, 8)
    mean = {name: np.mean([score_rgb(image(n), styled[n])[0] for n in middle]) for name, image in {
        "blend": lambda n: blended[n].numpy(),
        "forward": lambda n: both.candidate(n, FORWARD)[0],
        "backward": lambda n: both.candidate(n, BACKWARD)[0]}.items()}
    # Measured: blend 32.16 dB, forward 30.53 dB, backward 29.72 dB (mean over frames 3-7).
    assert mean["blend"] > max(mean["forward"], mean["backward"]) + 0.5, mean


# --- nodes, cache, storage (small frames, short schedule: these tests are about logic) ----------------------------

FAST = dict(patch_size=5, search_vote_iters=2, patchmatch_iters=2, uniformity=3500.0, pyramid_levels=0,
            extra_pass_3x3=False, patchmatch_seed=0)
WEIGHTS = dict(colour_weight=6.0, edge_weight=0.5, positional_weight=2.0, temporal_weight=0.5)


@pytest.fixture(scope="module")
def small(megamind_path, tmp_path_factory):
    """Frames 1–7 at 128 px wide, stylized keyframes 0 and 6, DIS flow of consecutive pairs."""
    frames = load_frames(megamind_path, frame_load_cap=7, skip_first_frames=1, custom_width=128).images
    keys = torch.from_numpy(np.stack([stylize_rgb(frames[0].numpy()), stylize_rgb(frames[6].numpy())]))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RERENDER_CACHE_DIR", str(tmp_path_factory.mktemp("small-flow")))
        flow = estimate_flow(frames, consecutive_pairs(7), DisFlow("ultrafast"))
    return frames, keys, flow


def run_node(small, **overrides):
    frames, keys, flow = small
    inputs = dict(frames=frames, stylized_keyframes=keys, flow=flow, keyframe_interval=6, keyframe_indices="",
                  direction="both", temporal_nnf_init=True, backend="auto", **FAST, **WEIGHTS)
    inputs.update(overrides)
    return RerenderEbSynthPropagate().propagate(**inputs)


def test_nodes_end_to_end_keep_keyframes_bit_exact_and_reuse_the_cache(small):
    frames, keys, _ = small
    keys = keys + 1e-4  # values no 8-bit or float16 path reproduces
    propagation, preview = run_node(small, stylized_keyframes=keys)
    assert preview.shape == frames.shape
    assert propagation.stats["frames_computed"] == 10 and propagation.stats["frames_cached"] == 0
    assert [(c.key, c.direction, c.frames) for c in propagation.chains] == [
        (6, BACKWARD, (5, 4, 3, 2, 1)), (0, FORWARD, (1, 2, 3, 4, 5))]

    blended, selection = RerenderTemporalBlend().blend(propagation, True, False, 2.5, 0.5)
    assert blended.shape == frames.shape and selection.shape == frames.shape[:3]
    assert torch.equal(blended[0], keys[0]) and torch.equal(blended[6], keys[1])
    assert torch.equal(preview[0], keys[0]) and torch.equal(preview[6], keys[1])
    assert float(selection[1].mean()) < 0.5 < float(selection[5].mean())  # near a keyframe, its candidate wins

    again, _ = run_node(small, stylized_keyframes=keys)
    assert again.stats["frames_computed"] == 0 and again.stats["frames_cached"] == 10
    for frame in range(1, 6):
        for direction in (FORWARD, BACKWARD):
            assert np.array_equal(again.candidate(frame, direction)[0], propagation.candidate(frame, direction)[0])


def test_an_interrupted_run_resumes_from_the_finished_chains(small):
    frames, keys, flow = small
    params = SynthesisParams(search_vote_iters=2, patchmatch_iters=2)
    keyframes = Keyframes((0, 6), 7)

    class Interrupted(Exception):
        pass

    def interrupt_at_seven(done, preview=None):
        if done == 7:
            raise Interrupted

    with pytest.raises(Interrupted):
        propagate_video(frames, keys, keyframes, flow, params, progress=interrupt_at_seven)
    resumed = propagate_video(frames, keys, keyframes, flow, params)
    assert resumed.stats["frames_cached"] == 5 and resumed.stats["frames_computed"] == 5

    reference = resumed.candidate(3, FORWARD)[0]
    with pytest.MonkeyPatch.context() as patch:  # a clean cache: the same result from scratch
        patch.setenv("RERENDER_CACHE_DIR", str(Path(os.environ["RERENDER_CACHE_DIR"]) / "fresh"))
        fresh = propagate_video(frames, keys, keyframes, flow, params)
    assert np.array_equal(fresh.candidate(3, FORWARD)[0], reference)


def test_large_results_are_memory_mapped_from_the_cache(small):
    frames, keys, flow = small
    params = SynthesisParams(search_vote_iters=1, patchmatch_iters=1)
    in_ram = propagate_video(frames, keys, Keyframes((0, 6), 7), flow, params)
    mapped = propagate_video(frames, keys, Keyframes((0, 6), 7), flow, params, ram_limit_bytes=0)
    assert not in_ram.memory_mapped and mapped.memory_mapped
    assert "memory-mapped" in mapped.describe()
    np.testing.assert_array_equal(mapped.candidate(4, BACKWARD)[1], in_ram.candidate(4, BACKWARD)[1])
    assert torch.equal(blend_video(mapped)[0], blend_video(in_ram)[0])


def test_direction_limits_the_chains_between_keyframes_only(small):
    frames, keys, flow = small
    params = SynthesisParams(search_vote_iters=1, patchmatch_iters=1)
    keyframes = Keyframes((2, 6), 7)
    assert plan_chains(keyframes, "forward") == [(2, BACKWARD, (1, 0)), (2, FORWARD, (3, 4, 5))]
    result = propagate_video(frames, keys, keyframes, flow, params, direction="backward")
    assert result.has(0, BACKWARD) and result.has(3, BACKWARD) and not result.has(3, FORWARD)
    blended, _ = blend_video(result)
    assert torch.equal(blended[4], torch.from_numpy(result.candidate(4, BACKWARD)[0]))


def test_load_keyframes_node_reads_indices_from_file_names(small, tmp_path):
    frames, keys, _ = small
    for index, image in zip((0, 6), keys.numpy()):
        bgr = cv2.cvtColor(np.rint(image * 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(tmp_path / f"key_{index:04d}.png"), bgr)
    (tmp_path / "notes.txt").write_text("not an image")
    images, keyframes = RerenderLoadKeyframes().load(frames, str(tmp_path), 0)
    assert keyframes.indices == (0, 6) and keyframes.frame_count == 7
    assert torch.equal(images, torch.from_numpy(np.rint(keys.numpy() * 255) / 255).float())
    _, uniform = RerenderLoadKeyframes().load(frames, str(tmp_path), 3)
    assert uniform.indices == (0, 3)
    propagation, _ = run_node(small, stylized_keyframes=images, keyframes=keyframes, keyframe_interval=0,
                              search_vote_iters=1, patchmatch_iters=1)
    assert propagation.keyframes.indices == (0, 6)
    cv2.imwrite(str(tmp_path / "extra.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(InputError, match="frame index"):
        RerenderLoadKeyframes().load(frames, str(tmp_path), 0)


# --- bad input: every error is raised before any synthesis ----------------------------------------------------

def test_keyframes_of_another_size_name_both_sizes(small):
    frames, keys, _ = small
    with pytest.raises(InputError) as error:
        run_node(small, stylized_keyframes=keys[:, :64, :100])
    height, width = frames.shape[1:3]
    assert f"{height}×{width}" in str(error.value) and "64×100" in str(error.value)


@pytest.mark.parametrize("interval, indices, message", [
    (6, "0, 40", "keyframe_indices"),        # index out of range
    (0, "", "keyframe_interval"),            # no keyframe: no list and no interval
    (6, ", ,", "at least one"),              # no keyframe: an empty list
])
def test_bad_keyframe_indices(small, interval, indices, message):
    with pytest.raises(InputError, match=message):
        run_node(small, keyframe_interval=interval, keyframe_indices=indices)


def test_keyframe_count_must_match_the_indices(small):
    with pytest.raises(InputError, match="one stylized image per keyframe index"):
        run_node(small, keyframe_indices="0, 3, 6")


def test_even_patch_size_is_refused(small):
    with pytest.raises(InputError, match="patch_size"):
        run_node(small, patch_size=4)


def test_flow_of_another_video_is_refused(small):
    frames, keys, flow = small
    with pytest.raises(InputError, match="7 frames") as error:
        run_node(small, frames=frames[:6], keyframe_interval=5)
    assert "6 frames" in str(error.value)
    smaller = torch.nn.functional.interpolate(frames.permute(0, 3, 1, 2), scale_factor=0.5).permute(0, 2, 3, 1)
    small_keys = smaller[[0, 6]].contiguous()
    with pytest.raises(InputError, match="flow"):
        run_node(small, frames=smaller.contiguous(), stylized_keyframes=small_keys)


def test_flow_without_consecutive_pairs_is_refused(small):
    frames, keys, _ = small
    keyframes = Keyframes((0, 6), 7)
    keyframe_flow = estimate_flow(frames, pairs_for_mode("keyframes", 7, keyframes), DisFlow("ultrafast"))
    with pytest.raises(InputError, match="consecutive"):
        run_node(small, flow=keyframe_flow)


def test_all_guide_weights_zero_is_refused(small):
    with pytest.raises(InputError, match="guide weight"):
        propagate_video(small[0], small[1], Keyframes((0, 6), 7), small[2], weights=GuideWeights(0, 0, 0, 0))


def test_cli_propagates_the_bundled_keyframes_to_an_mp4(megamind_path, tmp_path, capsys):
    import av

    from rerender_video.cli import main

    output = tmp_path / "out.mp4"
    code = main(["propagate", str(megamind_path), str(megamind_path.parent / "megamind_keys"), "--frames", "4",
                 "--width", "128", "--search-vote-iters", "1", "--patchmatch-iters", "1", "--output", str(output)])
    assert code == 0
    printed = capsys.readouterr()
    assert "keyframes [0, 1]" in printed.out and "resized from 360x264" in printed.err
    with av.open(str(output)) as container:
        video = container.streams.video[0]
        assert video.average_rate == Fraction(24000, 1001) and video.width == 128
        assert sum(1 for _ in container.decode(video=0)) == 4
    with av.open(str(output)) as container, av.open(str(megamind_path)) as source:
        assert len(container.streams.audio) == len(source.streams.audio)  # the source audio is carried over
