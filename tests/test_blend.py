"""Temporal blend of forward/backward candidates: selection, histogram-preserving blend, Poisson.

Real data: Megamind frames 1–11 (one shot, no cut) at 256×184, stylized with the deterministic filter
of the EbSynth anchor protocol (propagation/ALGORITHM.md §18), DIS optical flow between consecutive frames.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import spsolve

from rerender_video.benchmarks._anchor_protocol import stylize_rgb
from rerender_video.common.keyframes import Keyframes
from rerender_video.flow.dis import DisFlow
from rerender_video.flow.estimate import estimate_flow
from rerender_video.flow.pairs import consecutive_pairs
from rerender_video.propagation.blend import (blend_frame, blend_video, carry_selection, histogram_blend,
                                              lab_to_rgb, rgb_to_lab, select_backward, time_position)
from rerender_video.propagation.poisson import gradients, poisson_blend, screened_poisson
from rerender_video.propagation.result import BACKWARD, FORWARD, Chain, Propagation
from rerender_video.videoio.reader import load_frames


@pytest.fixture(scope="module")
def clip(megamind_path, tmp_path_factory):
    """Frames 1–11 at 256×184 (frame 0 is black), their stylizations, and DIS flow between neighbours."""
    frames = load_frames(megamind_path, frame_load_cap=11, skip_first_frames=1, custom_width=256).images
    styled = np.stack([stylize_rgb(frame) for frame in frames.numpy()])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RERENDER_CACHE_DIR", str(tmp_path_factory.mktemp("flow-cache")))
        flow = estimate_flow(frames, consecutive_pairs(len(frames)), DisFlow("medium"))
    return frames, styled, flow


def make_propagation(clip, keys, forward, backward, keyframe_images=None):
    """A PROPAGATION holding the given candidates: ``{frame: (image, error)}`` per direction."""
    frames, styled, flow = clip
    keyframes = Keyframes(tuple(keys), len(frames))
    if keyframe_images is None:
        keyframe_images = torch.from_numpy(styled[list(keys)])
    chains = []
    for direction, candidates in ((FORWARD, forward), (BACKWARD, backward)):
        for frame, (image, error) in candidates.items():
            chains.append(Chain(-1, direction, (frame,), image[None].astype(np.float16),
                                error[None].astype(np.float32)))
    return Propagation(keyframes, keyframe_images, flow, chains)


def squared_error(image, reference):
    return ((image - reference) ** 2).sum(-1) * 255.0 ** 2


# --- smoke / shape -------------------------------------------------------------------------------------------

def test_blend_video_shapes_keyframes_bit_exact_and_one_sided_segments(clip):
    frames, styled, _ = clip
    rng = np.random.default_rng(0)
    # Values that no uint8 / float16 path reproduces: the keyframes must come out untouched.
    keyframe_images = torch.from_numpy(styled[[3, 7]] + rng.uniform(0, 1e-3, styled[[3, 7]].shape).astype(np.float32))
    candidates = {n: (styled[n], squared_error(styled[n], styled[n]) + 1.0) for n in range(11) if n not in (3, 7)}
    forward = {n: candidates[n] for n in range(4, 11) if n != 7}
    backward = {n: candidates[n] for n in range(0, 7) if n != 3}
    propagation = make_propagation(clip, (3, 7), forward, backward, keyframe_images)

    output, selection = blend_video(propagation)

    assert output.shape == (11, 184, 256, 3) and output.dtype == torch.float32
    assert selection.shape == (11, 184, 256)
    assert torch.equal(output[3], keyframe_images[0]) and torch.equal(output[7], keyframe_images[1])
    for frame in (0, 1, 2):  # before the first keyframe: the backward candidate, unchanged
        assert torch.equal(output[frame], torch.from_numpy(propagation.candidate(frame, BACKWARD)[0]))
        assert bool(selection[frame].eq(1).all())
    for frame in (8, 9, 10):  # after the last keyframe: the forward candidate, unchanged
        assert torch.equal(output[frame], torch.from_numpy(propagation.candidate(frame, FORWARD)[0]))
        assert bool(selection[frame].eq(0).all())
    assert float(output.min()) >= 0.0 and float(output.max()) <= 1.0


def test_forward_only_segment_passes_the_forward_candidate(clip):
    _, styled, _ = clip
    forward = {n: (styled[n], np.ones(styled.shape[1:3], np.float32)) for n in range(1, 11) if n != 5}
    propagation = make_propagation(clip, (0, 5), forward, {})
    output, _ = blend_video(propagation)
    for frame in (1, 2, 3, 4, 6):
        assert torch.equal(output[frame], torch.from_numpy(propagation.candidate(frame, FORWARD)[0]))


# --- histogram-preserving blend --------------------------------------------------------------------------------

def test_histogram_blend_keeps_the_composite_statistics_and_restores_contrast(clip):
    _, styled, _ = clip
    forward, backward = rgb_to_lab(styled[2]), rgb_to_lab(styled[8])
    selection = squared_error(styled[2], styled[5]) > squared_error(styled[8], styled[5])
    composite = np.where(selection[..., None], backward, forward).astype(np.float64)

    out = histogram_blend(forward, backward, composite, 0.5)

    np.testing.assert_allclose(out.mean((0, 1)), composite.mean((0, 1)), rtol=1e-9)
    np.testing.assert_allclose(out.std((0, 1)), composite.std((0, 1)), rtol=1e-9)
    linear = 0.5 * forward + 0.5 * backward
    assert np.all(linear.std((0, 1)) < out.std((0, 1)))  # the linear mix loses contrast; this does not
    assert np.isfinite(lab_to_rgb(out)).all()


def test_histogram_blend_guards_flat_channels(clip):
    _, styled, _ = clip
    flat = np.full_like(styled[2], 0.5)
    forward, backward = rgb_to_lab(flat), rgb_to_lab(styled[8])
    composite = np.where((np.arange(256) < 128)[None, :, None], forward, backward).astype(np.float64)
    out = histogram_blend(forward, backward, composite, 0.3)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out.std((0, 1)), composite.std((0, 1)), rtol=1e-9)
    both_flat = histogram_blend(forward, forward, forward, 0.3)
    np.testing.assert_allclose(both_flat, forward)


def test_identical_candidates_come_back_unchanged(clip):
    _, styled, _ = clip
    selection = np.random.default_rng(1).random(styled.shape[1:3]) > 0.5
    for poisson in (False, True):
        out = blend_frame(styled[4], styled[4], selection, 0.4, histogram=True, poisson=poisson)
        assert np.abs(out - styled[4]).max() < 3e-3  # Lab round trip in float32


# --- Poisson ----------------------------------------------------------------------------------------------------

def test_poisson_with_identical_candidates_returns_the_input(clip):
    _, styled, _ = clip
    lab = rgb_to_lab(styled[6])
    selection = np.random.default_rng(2).random(lab.shape[:2]) > 0.5
    np.testing.assert_allclose(poisson_blend(lab, lab, lab, selection), lab, atol=1e-3)


def _sparse_difference(length: int) -> sp.csr_matrix:
    """``x(i) − x(i+1)`` for ``i < length−1``; zero last row."""
    diagonal = np.ones(length)
    diagonal[-1] = 0
    upper = -np.ones(length - 1)
    return sp.diags([diagonal, upper], [0, 1], shape=(length, length), format="csr")


def test_spectral_solver_matches_a_sparse_direct_solve(clip):
    _, styled, _ = clip
    h = rgb_to_lab(styled[3][40:64, 60:92])[..., 0].astype(np.float64)
    target = rgb_to_lab(styled[9][40:64, 60:92])[..., 0].astype(np.float64)
    g_y, g_x = gradients(target)
    height, width = h.shape
    dy = sp.kron(_sparse_difference(height), sp.identity(width))  # row-major flattening
    dx = sp.kron(sp.identity(height), _sparse_difference(width))
    weight = 2.5
    system = sp.identity(height * width) + weight ** 2 * (dy.T @ dy + dx.T @ dx)
    rhs = h.ravel() + weight ** 2 * (dy.T @ g_y.ravel() + dx.T @ g_x.ravel())
    expected = spsolve(system.tocsc(), rhs).reshape(height, width)
    np.testing.assert_allclose(screened_poisson(h, g_y, g_x, weight), expected, atol=1e-8)


def test_poisson_follows_the_selected_candidates_gradients(clip):
    _, styled, _ = clip
    forward, backward = rgb_to_lab(styled[2]), rgb_to_lab(styled[8])
    selection = np.zeros(forward.shape[:2], bool)
    selection[:, :128] = True  # left half backward
    composite = np.where(selection[..., None], backward, forward)
    histogram = histogram_blend(forward, backward, composite, 0.5)
    out = poisson_blend(histogram, forward, backward, selection)

    def gradient_distance(image, reference, columns):
        return sum(np.abs(a - b)[:, columns, 0].mean() for a, b in zip(gradients(image), gradients(reference)))

    left, right = slice(0, 127), slice(128, 255)
    assert gradient_distance(out, backward, left) < 0.5 * gradient_distance(histogram, backward, left)
    assert gradient_distance(out, forward, right) < 0.5 * gradient_distance(histogram, forward, right)


# --- selection -------------------------------------------------------------------------------------------------

def test_time_weights_are_symmetric_and_never_force_a_side(clip):
    _, styled, _ = clip
    error_forward = squared_error(styled[2], styled[5])
    error_backward = squared_error(styled[8], styled[5])
    for d in range(1, 10):
        t = time_position(d, 0, 10)
        mirrored = select_backward(error_backward, error_forward, 1 - t)
        ties = np.isclose(t * error_forward, (1 - t) * error_backward)
        assert np.array_equal(select_backward(error_forward, error_backward, t)[~ties], ~mirrored[~ties])
    equal = np.ones((4, 4))
    assert not select_backward(equal, equal, 0.4).any() and select_backward(equal, equal, 0.6).all()
    # First frame of a 10-frame segment: the backward candidate still wins where the forward one is 10x worse.
    assert select_backward(10 * equal, equal, time_position(1, 0, 10)).all()


def test_selection_persists_along_the_flow(clip):
    frames, styled, flow = clip
    height, width = styled.shape[1:3]
    low, high = np.zeros((height, width), np.float32), np.full((height, width), 1e6, np.float32)
    region = np.zeros((height, width), bool)
    region[60:120, 100:170] = True
    forward, backward = {}, {}
    for n in range(1, 10):
        # Frame 3: the forward candidate is bad in the region; afterwards it is better everywhere.
        forward[n] = (styled[n], np.where(region, high, low) if n == 3 else low)
        backward[n] = (styled[n], high if n != 3 else np.where(region, low, high))
    propagation = make_propagation(clip, (0, 10), forward, backward)

    _, selection = blend_video(propagation, histogram=False)
    selection = selection.numpy() > 0.5

    assert not selection[1:3].any()
    assert np.array_equal(selection[3], region)
    expected = region
    for n in range(4, 10):
        step_flow, occlusion = flow.between(n - 1, n)
        expected = carry_selection(expected, step_flow, occlusion)
        assert np.array_equal(selection[n], expected)
    # The carried region follows the content (here moving right and down while the shot zooms out) instead
    # of staying in place.
    rows, columns = np.nonzero(selection[9])
    assert selection[9].sum() > 0.5 * region.sum()
    assert columns.mean() > 135 + 2 and rows.mean() > 90 + 1
