"""Carrying a first-frame mask through a clip by optical flow (flow/mask_carry.py, node Rerender Propagate Mask)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rerender_video.common.errors import InputError
from rerender_video.common.masks import grow
from rerender_video.flow.dis import DisFlow
from rerender_video.flow.estimate import estimate_flow
from rerender_video.flow.mask_carry import carry_mask, iter_carried_masks
from rerender_video.flow.pairs import pairs_for_mode
from rerender_video.nodes.mask_carry import RerenderPropagateMask

HEIGHT, WIDTH, SHIFT, COUNT = 264, 360, 3, 6
TOP, BOTTOM, LEFT, RIGHT = 80, 180, 120, 240


@pytest.fixture(scope="module")
def shifted(megamind_frames):
    """A real Megamind frame (30, half size) panned: the content moves SHIFT px right per frame."""
    frame = megamind_frames[30].permute(2, 0, 1)[None]
    wide = F.interpolate(frame, size=(HEIGHT, WIDTH + SHIFT * COUNT), mode="area")[0].permute(1, 2, 0)
    start = SHIFT * COUNT
    return torch.stack([wide[:, start - SHIFT * t: start - SHIFT * t + WIDTH] for t in range(COUNT)]).contiguous()


def first_mask() -> torch.Tensor:
    mask = torch.zeros(1, HEIGHT, WIDTH)
    mask[0, TOP:BOTTOM, LEFT:RIGHT] = 1
    return mask


def expected(t: int) -> torch.Tensor:
    mask = torch.zeros(1, HEIGHT, WIDTH)
    mask[0, TOP:BOTTOM, LEFT + SHIFT * t:RIGHT + SHIFT * t] = 1
    return mask


def assert_follows_shift(masks: torch.Tensor) -> None:
    """Each carried mask is the shifted first mask within one pixel (the region stays far from the entering strip)."""
    assert masks.shape == (COUNT, HEIGHT, WIDTH)
    for t in range(COUNT):
        inside = (masks[t:t + 1] > 0.5).float()
        assert bool((inside <= grow(expected(t), 1)).all()), f"frame {t}: region spills beyond 1 px of the shift"
        assert bool((grow(expected(t), -1) <= inside).all()), f"frame {t}: region lost more than 1 px"
    moved = (masks[-1] > 0.5) != (first_mask()[0] > 0.5)
    assert int(moved.sum()) >= (BOTTOM - TOP) * SHIFT * (COUNT - 1), "the mask must move with the content"


def test_streamed_mask_follows_a_known_translation(shifted):
    masks = torch.stack(list(iter_carried_masks(iter(shifted), first_mask(), DisFlow("medium"))))
    assert_follows_shift(masks)
    assert torch.equal(masks[0], first_mask()[0])


def test_mask_carried_by_a_flow_object_matches_the_streamed_one(shifted):
    flow = estimate_flow(shifted, pairs_for_mode("consecutive", COUNT), DisFlow("medium"))
    (from_flow,) = RerenderPropagateMask().carry(first_mask(), "medium", flow=flow)
    assert_follows_shift(from_flow)
    torch.testing.assert_close(from_flow, carry_mask(shifted, first_mask()), atol=1e-4, rtol=0)


def test_disoccluded_border_takes_the_nearest_reliable_value(shifted):
    # a region touching the left border: the strip entering there is next to the region, so it joins it
    mask = torch.zeros(1, HEIGHT, WIDTH)
    mask[0, TOP:BOTTOM, :60] = 1
    masks = carry_mask(shifted, mask)
    assert bool((masks[-1, TOP + 2:BOTTOM - 2, :60 + SHIFT * (COUNT - 1) - 1] > 0.5).all())
    assert bool((masks[-1, :TOP - 2] < 0.5).all())


def test_bad_masks_raise_errors_naming_the_input(shifted):
    with pytest.raises(InputError, match=r"^mask: .*one mask \[1,H,W\]"):
        carry_mask(shifted, first_mask().expand(COUNT, -1, -1))
    with pytest.raises(InputError, match=r"^mask: .*264×360"):
        carry_mask(shifted, torch.zeros(1, HEIGHT // 2, WIDTH))
    with pytest.raises(InputError, match=r"^mask: .*\[0, 1\]"):
        carry_mask(shifted, first_mask() * 255)
    with pytest.raises(InputError, match=r"^flow: "):
        RerenderPropagateMask().carry(first_mask(), "medium")
    from rerender_video.flow.mask_carry import iter_carried_masks_steps

    with pytest.raises(InputError, match=r"^flow: .*the mask's size"):
        list(iter_carried_masks_steps(first_mask(), [(torch.zeros(HEIGHT, WIDTH // 2, 2), torch.zeros(HEIGHT, WIDTH))]))


def test_occluded_pixels_take_the_nearest_reliable_pixels_mapping():
    from rerender_video.flow.mask_carry import carry_step

    flow = torch.zeros(8, 8, 2)
    flow[..., 0] = -1.0                 # content moved 1 px right
    flow[3, 5] = torch.tensor([40.0, -30.0])  # a wrong vector where the check found no match
    occlusion = torch.zeros(8, 8)
    occlusion[3, 5] = 1
    step = carry_step(torch.zeros(8, 8, 2), flow, occlusion)
    assert step[3, 5].tolist() == [-1.0, 0.0]
    # a shot change (every pixel occluded) keeps the previous mapping
    previous = torch.full((8, 8, 2), 2.0)
    assert torch.equal(carry_step(previous, flow, torch.ones(8, 8)), previous)
