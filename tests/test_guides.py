"""Guides of a propagation chain: edges, positional grid advection, temporal warps, occlusion fill, NNF advection.

Real data: Megamind frames 1–11 (one shot) at 256×184 with DIS optical flow between neighbours.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rerender_video.common.errors import InputError
from rerender_video.flow.dis import DisFlow
from rerender_video.flow.estimate import estimate_flow
from rerender_video.flow.pairs import consecutive_pairs
from rerender_video.flow.warp import warp
from rerender_video.propagation.guides import (GuideWeights, advect_nnf, coordinate_grid, edge_image, fill_occluded,
                                               identity_nnf, warp_into)
from rerender_video.videoio.reader import load_frames


@pytest.fixture(scope="module")
def clip(megamind_path, tmp_path_factory):
    frames = load_frames(megamind_path, frame_load_cap=11, skip_first_frames=1, custom_width=256).images
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RERENDER_CACHE_DIR", str(tmp_path_factory.mktemp("flow-cache")))
        flow = estimate_flow(frames, consecutive_pairs(len(frames)), DisFlow("medium"))
    return frames, flow


def psnr(a, b, mask=None):
    error = (np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2
    mse = error[mask].mean() if mask is not None else error.mean()
    return 10 * np.log10(1.0 / mse)


def sample(image: np.ndarray, coordinates: np.ndarray) -> np.ndarray:
    """Bilinear lookup of ``image`` [H,W,C] at absolute pixel coordinates [H,W,2] (x, y)."""
    height, width = image.shape[:2]
    flow = torch.from_numpy(coordinates - identity_nnf(height, width)).float()[None]
    return warp(torch.from_numpy(image).permute(2, 0, 1)[None], flow)[0].permute(1, 2, 0).numpy()


def test_edge_guide_is_the_saturated_uint8_laplacian(clip):
    frames, _ = clip
    frame = frames[4].numpy()
    levels = np.rint(frame * 255).astype(np.float64)
    padded = np.pad(levels, ((1, 1), (1, 1), (0, 0)), mode="reflect")  # = OpenCV's reflect-101 border
    laplacian = (4 * padded[1:-1, 1:-1] - padded[:-2, 1:-1] - padded[2:, 1:-1]
                 - padded[1:-1, :-2] - padded[1:-1, 2:])
    expected = np.clip(laplacian, 0, 255) / 255.0
    edges = edge_image(frame)
    assert edges.shape == frame.shape and edges.dtype == np.float32
    np.testing.assert_allclose(edges, expected, atol=1e-6)
    assert (laplacian < 0).mean() > 0.1 and edges.min() == 0.0  # negative responses clip to 0
    assert edge_image(np.full((8, 8, 3), 0.3, np.float32)).max() == 0.0


def test_weights_are_checked():
    assert GuideWeights().as_dict() == {"colour": 6.0, "edge": 0.5, "positional": 2.0, "temporal": 0.5}
    with pytest.raises(InputError, match="edge_weight"):
        GuideWeights(edge=-1.0)


def test_fill_occluded_inpaints_from_the_surroundings(clip):
    frames, _ = clip
    frame = frames[5].numpy()
    hole = np.zeros(frame.shape[:2], np.float32)
    hole[120:140, 180:210] = 1
    holed = frame.copy()
    holed[hole > 0] = 0
    ring = np.zeros_like(hole, bool)
    ring[115:145, 175:215] = True
    ring &= hole == 0
    mean_filled = holed.copy()
    mean_filled[hole > 0] = frame[ring].mean(0)
    filled = fill_occluded(holed, hole)
    assert np.abs(filled[hole == 0] - frame[hole == 0]).max() <= 1 / 65535 + 1e-7
    # Better than the hole's surrounding mean colour (measured: 18.0 dB vs 12.7 dB).
    assert psnr(filled, frame, hole > 0) > psnr(mean_filled, frame, hole > 0) + 2
    assert fill_occluded(holed, np.ones_like(hole)) is holed  # nothing to inpaint from
    assert fill_occluded(holed, np.zeros_like(hole)) is holed


def test_warp_into_brings_the_previous_frame_into_the_next(clip):
    frames, flow = clip
    previous, current = frames[3].numpy(), frames[4].numpy()
    step_flow, occlusion = flow.between(3, 4)
    warped = warp_into(previous, step_flow, occlusion)
    visible = occlusion.numpy() < 0.5
    assert psnr(warped, current, visible) > psnr(previous, current, visible) + 3


def test_positional_guide_advected_along_the_chain_points_at_matching_keyframe_content(clip):
    frames, flow = clip
    height, width = frames.shape[1:3]
    key = frames[0].numpy()
    grid = coordinate_grid(height, width)
    position = grid
    for target in range(1, 11):
        step_flow, occlusion = flow.between(target - 1, target)
        position = warp_into(position, step_flow, occlusion)
    coordinates = np.stack((position[..., 0] * (width - 1), position[..., 1] * (height - 1)), axis=-1)
    looked_up = sample(key, coordinates)
    target_frame = frames[10].numpy()
    inner = np.zeros((height, width), bool)
    inner[10:-10, 10:-10] = True
    # The advected grid says where each pixel of frame 10 was in the keyframe: looking it up there must
    # match frame 10 far better than the keyframe at the same position.
    assert psnr(looked_up, target_frame, inner) > psnr(key, target_frame, inner) + 4
    assert np.all(position[..., 2] == 0)


def test_bilinear_advection_accumulates_sub_pixel_motion():
    grid = coordinate_grid(16, 32)
    shift = torch.zeros(16, 32, 2)
    shift[..., 0] = -0.3  # content moves 0.3 px right per frame
    no_occlusion = torch.zeros(16, 32)
    position = grid
    for _ in range(10):
        position = warp_into(position, shift, no_occlusion)
    moved_pixels = (grid[8, 16, 0] - position[8, 16, 0]) * 31
    assert abs(moved_pixels - 3.0) < 0.05  # a nearest-neighbour warp would not move at all


def test_advected_nnf_points_at_matching_keyframe_content(clip):
    frames, flow = clip
    height, width = frames.shape[1:3]
    nnf = identity_nnf(height, width)
    for target in range(1, 6):
        step_flow, _ = flow.between(target - 1, target)
        nnf = advect_nnf(nnf, step_flow, (height, width))
    assert nnf.dtype == np.int32 and nnf.shape == (height, width, 2)
    assert nnf[..., 0].min() >= 0 and nnf[..., 0].max() <= width - 1 and nnf[..., 1].max() <= height - 1
    key = frames[0].numpy()
    copied = key[nnf[..., 1], nnf[..., 0]]
    assert psnr(copied, frames[5].numpy()) > psnr(key, frames[5].numpy()) + 3
