"""Masked propagation and blend (issue 16): restyle only a region, the rest is the source video exactly.

Real data: Megamind frames 1–9 (one shot) at 128×96, stylized with the deterministic filter of the EbSynth
anchor protocol (propagation/ALGORITHM.md §18), DIS optical flow between consecutive frames. The region is
the right part of the frame, a box whose left edge moves 3 pixels right per frame (faster than the
content) (deterministic, one mask per frame).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from rerender_video.benchmarks._anchor_protocol import stylize_rgb
from rerender_video.common.errors import InputError
from rerender_video.common.keyframes import Keyframes
from rerender_video.common.masks import region_alpha
from rerender_video.flow.dis import DisFlow
from rerender_video.flow.estimate import estimate_flow
from rerender_video.flow.pairs import consecutive_pairs
from rerender_video.propagation.blend import blend_video
from rerender_video.propagation.params import SynthesisParams
from rerender_video.propagation.sequence import propagate_video, region_box
from rerender_video.videoio.reader import load_frames

PARAMS = SynthesisParams(search_vote_iters=4, patchmatch_iters=3)
MAGENTA = torch.tensor([1.0, 0.0, 1.0])
GROW, FEATHER = 3, 4


def magenta_ness(images: torch.Tensor) -> torch.Tensor:
    """``min(R, B) − G`` per pixel: 1 for pure magenta, ≤ 0 for greys and most natural colours."""
    return torch.minimum(images[..., 0], images[..., 2]) - images[..., 1]


@pytest.fixture(scope="module")
def clip(megamind_path, tmp_path_factory):
    frames = load_frames(megamind_path, frame_load_cap=9, skip_first_frames=1, custom_width=128,
                         custom_height=96).images
    styled = torch.from_numpy(np.stack([stylize_rgb(frame) for frame in frames.numpy()]))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RERENDER_CACHE_DIR", str(tmp_path_factory.mktemp("flow-cache")))
        flow = estimate_flow(frames, consecutive_pairs(len(frames)), DisFlow("medium"))
    masks = torch.zeros(len(frames), 96, 128)
    for index in range(len(frames)):
        masks[index, 20:76, 60 + 3 * index:118] = 1.0
    return frames, styled, flow, masks


def masked_run(clip, keyframe_images, mask, **kwargs):
    frames, _, flow, _ = clip
    keyframes = Keyframes((0, 8), len(frames))
    propagation = propagate_video(frames, keyframe_images, keyframes, flow, PARAMS, mask=mask, mask_grow=GROW,
                                  feather=FEATHER, backend="cpu", **kwargs)
    return propagation, blend_video(propagation)[0]


@pytest.fixture(scope="module")
def painted(clip):
    """The keyframes painted magenta outside their grown region + feather, and the masked result."""
    frames, styled, _, masks = clip
    keyframe_images = styled[[0, 8]].clone()
    support = region_alpha(masks[[0, 8]], GROW, FEATHER) > 0
    keyframe_images[~support] = MAGENTA
    return keyframe_images, masked_run(clip, keyframe_images, masks)


def test_outside_the_region_the_output_is_the_source_bit_for_bit(clip, painted):
    frames, _, _, masks = clip
    _, (_, output) = painted
    outside = region_alpha(masks, GROW, FEATHER) == 0
    assert torch.equal(output[outside], frames[outside])
    inside = masks > 0.5
    changed = (output - frames).abs().amax(-1)[inside]
    assert float((changed > 2 / 255).float().mean()) > 0.5   # the region is restyled


def test_keyframe_patches_from_outside_the_region_never_appear_inside(clip, painted):
    _, _, _, masks = clip
    _, (_, output) = painted
    inside = masks > 0.5
    # Magenta was painted only outside the keyframes' regions: inside every frame's region nothing is magenta,
    # not even a tint from one outside patch among the 25 voting for a pixel.
    assert float(magenta_ness(output)[inside].max()) < 0.1    # measured 0.003 (max over 9 frames)
    assert float((output - MAGENTA).abs().amax(-1)[inside].min()) > 0.5


def test_without_the_region_guide_outside_content_would_leak_in(clip, painted, monkeypatch):
    """The check above can fail: with the region guide's weight 0 the outside (magenta) content is matched
    into the region, where the region's edge moved faster than the content."""
    from rerender_video.propagation import sequence

    _, _, _, masks = clip
    keyframe_images, _ = painted
    monkeypatch.setattr(sequence, "MASK_GUIDE_WEIGHT", 0.0)
    _, output = masked_run(clip, keyframe_images, masks)
    inside = masks > 0.5
    assert float(magenta_ness(output)[inside].max()) > 0.3    # measured 0.54


def test_region_box_covers_the_support_with_a_margin():
    alpha = np.zeros((50, 80), np.float32)
    alpha[10:20, 30:40] = 0.5
    rows, columns = region_box(alpha, 5, 11)
    assert (rows.start, rows.stop, columns.start, columns.stop) == (5, 25, 25, 45)
    assert region_box(np.zeros((5, 5), np.float32), 2, 3) is None


def test_a_single_mask_is_carried_by_the_flow(clip):
    frames, styled, _, masks = clip
    propagation, output = masked_run(clip, styled[[0, 8]], masks[:1])
    carried = propagation.region.masks
    assert carried.shape == masks.shape and torch.equal(carried[0], masks[0])
    outside = region_alpha(carried, GROW, FEATHER) == 0
    assert torch.equal(output[outside], frames[outside])


def test_an_empty_mask_warns_and_gives_the_source(clip):
    frames, styled, _, _ = clip
    with pytest.warns(UserWarning, match="mask is empty"):
        _, output = masked_run(clip, styled[[0, 8]], torch.zeros(1, 96, 128))
    assert torch.equal(output, frames)


@pytest.mark.parametrize("mask, message", [
    (torch.ones(9, 64, 128), "96×128"),
    (torch.ones(3, 96, 128), "3 masks"),
    (torch.ones(9, 96, 128) * 255, "divide an 8-bit mask by 255"),
])
def test_bad_masks_are_refused_naming_the_input(clip, mask, message):
    frames, styled, flow, _ = clip
    with pytest.raises(InputError, match="mask") as error:
        propagate_video(frames, styled[[0, 8]], Keyframes((0, 8), 9), flow, PARAMS, mask=mask, backend="cpu")
    assert message in str(error.value)


def test_the_cache_key_follows_the_mask_and_its_settings(clip):
    frames, styled, _, masks = clip
    first, _ = masked_run(clip, styled[[0, 8]], masks)
    again, _ = masked_run(clip, styled[[0, 8]], masks)
    assert again.stats["frames_computed"] == 0
    other = masks.clone()
    other[:, 30:40, 20:30] = 1
    moved, _ = masked_run(clip, styled[[0, 8]], other)
    assert moved.stats["frames_computed"] == first.stats["frames_computed"] > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frames_, _, flow, _ = clip
        wider = propagate_video(frames_, styled[[0, 8]], Keyframes((0, 8), 9), flow, PARAMS, mask=masks,
                                mask_grow=GROW + 1, feather=FEATHER, backend="cpu")
    assert wider.stats["frames_computed"] > 0


def node_settings():
    from rerender_video.nodes.propagate import RerenderEbSynthPropagate

    types = RerenderEbSynthPropagate.INPUT_TYPES()
    values = {name: spec[1]["default"] for name, spec in types["required"].items()
              if len(spec) > 1 and "default" in spec[1]}
    values.update(search_vote_iters=PARAMS.search_vote_iters, patchmatch_iters=PARAMS.patchmatch_iters,
                  backend="cpu", keyframe_interval=8, keyframe_indices="")
    return values


def test_nodes_take_an_optional_mask_with_grow_and_feather_widgets(clip):
    from rerender_video.common.masks import FEATHER as FEATHER_SETTING, MASK_GROW
    from rerender_video.nodes.blend import RerenderTemporalBlend
    from rerender_video.nodes.propagate import RerenderEbSynthPropagate
    from rerender_video.nodes.propagate_video import RerenderPropagateToVideo

    for node in (RerenderEbSynthPropagate, RerenderTemporalBlend, RerenderPropagateToVideo):
        optional = node.INPUT_TYPES()["optional"]
        assert optional["mask"][0] == "MASK"
        assert optional["mask_grow"][1]["default"] == MASK_GROW.default
        assert optional["feather"][1]["max"] == FEATHER_SETTING.max

    frames, styled, flow, masks = clip
    propagation, _ = RerenderEbSynthPropagate().propagate(frames, styled[[0, 8]], flow, mask=masks, mask_grow=GROW,
                                                          feather=FEATHER, **node_settings())
    output, _ = RerenderTemporalBlend().blend(propagation, True, False, 2.5, 0.5)
    outside = region_alpha(masks, GROW, FEATHER) == 0
    assert torch.equal(output[outside], frames[outside]) and not torch.equal(output, frames)

    # A mask given to Temporal Blend only (the propagation was unmasked) composites over the connected frames.
    unmasked, _ = RerenderEbSynthPropagate().propagate(frames, styled[[0, 8]], flow, **node_settings())
    with pytest.raises(InputError, match="frames"):
        RerenderTemporalBlend().blend(unmasked, True, False, 2.5, 0.5, mask=masks)
    output, _ = RerenderTemporalBlend().blend(unmasked, True, False, 2.5, 0.5, mask=masks, mask_grow=GROW,
                                              feather=FEATHER, frames=frames)
    assert torch.equal(output[outside], frames[outside])
    inside = masks > 0.5
    plain, _ = RerenderTemporalBlend().blend(unmasked, True, False, 2.5, 0.5)
    assert torch.allclose(output[inside], plain[inside], atol=1e-6)   # source + 1·(stylized − source)
