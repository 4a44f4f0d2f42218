"""common/masks.py: checks, growth, feathering and compositing of region masks (smoke / exception / correctness)."""

import warnings

import numpy as np
import pytest
import torch

from common.errors import InputError
from common.masks import check_mask, composite, feather_alpha, grow, region_alpha, warn_if_empty


def _square(size=32, lo=10, hi=20):
    mask = torch.zeros(1, size, size)
    mask[0, lo:hi, lo:hi] = 1
    return mask


def test_check_mask_accepts_one_or_per_frame():
    assert check_mask(torch.ones(16, 24), frames=5, height=16, width=24).shape == (1, 16, 24)
    assert check_mask(np.ones((5, 16, 24), np.float32), frames=5, height=16, width=24).shape == (5, 16, 24)


@pytest.mark.parametrize("mask, words", [
    (torch.ones(1, 16, 20), "16×24"),            # another size
    (torch.ones(3, 16, 24), "3 masks"),          # neither 1 nor N
    (torch.full((1, 16, 24), 255.0), "255"),     # an 8-bit mask
    ("mask.png", "MASK tensor"),
])
def test_check_mask_errors_name_the_input_and_the_fix(mask, words):
    with pytest.raises(InputError) as caught:
        check_mask(mask, frames=5, height=16, width=24, name="--mask")
    message = str(caught.value)
    assert message.startswith("--mask: Expected") and words in message and "Fix" in message


def test_empty_mask_warns():
    with pytest.warns(UserWarning, match="output equals the source"):
        assert warn_if_empty(torch.zeros(2, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_if_empty(_square())


def test_grow_and_shrink_move_the_edge_by_whole_pixels():
    mask = _square()
    grown, shrunk = grow(mask, 3), grow(mask, -3)
    rows = grown[0, 15].nonzero().flatten()
    assert (int(rows.min()), int(rows.max())) == (7, 22)       # 10-3 .. 19+3 on the middle row
    assert int(shrunk.sum()) == 4 * 4 and bool((shrunk <= mask).all())
    assert torch.equal(grow(mask, 0), mask)


def test_feather_is_one_inside_and_exactly_zero_beyond_the_feather():
    mask = _square()
    alpha = feather_alpha(mask, feather=4)
    assert bool((alpha[mask > 0.5] == 1).all())
    assert float(alpha[0, 15, 21]) == pytest.approx(0.5)       # 2 px from the inside pixel (15, 19): 1 - 2/4
    beyond = grow(mask, 4) == 0
    assert bool((alpha[beyond] == 0).all())
    assert torch.equal(feather_alpha(mask, 0), mask)


def test_composite_keeps_the_source_bit_for_bit_where_alpha_is_zero():
    generator = torch.Generator().manual_seed(0)
    source, stylized = torch.rand(2, 32, 32, 3, generator=generator), torch.rand(2, 32, 32, 3, generator=generator)
    alpha = region_alpha(_square(), mask_grow=2, feather=3)
    out = composite(stylized, source, alpha)
    outside = (alpha == 0)[0]
    assert torch.equal(out[:, outside], source[:, outside])
    inside = (alpha == 1)[0]
    assert torch.equal(out[:, inside], stylized[:, inside])
    assert not torch.equal(out, source)
