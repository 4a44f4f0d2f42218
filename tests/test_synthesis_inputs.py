"""Bad input to propagation.synthesis.synthesize and SynthesisParams: each error names the input and the fix."""

from __future__ import annotations

import pytest
import torch

from rerender_video.common.errors import InputError
from rerender_video.propagation.backends.select import get_backend
from rerender_video.propagation.params import SynthesisParams
from rerender_video.propagation.synthesis import Guide, synthesize


@pytest.fixture(scope="module")
def frame(megamind_frames) -> torch.Tensor:
    return megamind_frames[1, 200:248, 300:364].contiguous()      # 48×64 RGB


def _run(style, guides, **kwargs):
    return synthesize(style, guides, SynthesisParams(search_vote_iters=1, patchmatch_iters=1), **kwargs)


@pytest.mark.parametrize("patch_size", [4, 1, 0, 6, 5.0])
def test_even_or_small_patch_size(frame, patch_size):
    with pytest.raises(InputError, match=r"patch_size: Expected an odd integer >= 3"):
        synthesize(frame, [Guide(frame, frame, 1.0)], SynthesisParams(patch_size=patch_size))


@pytest.mark.parametrize("field,value,match", [
    ("search_vote_iters", 0, "search_vote_iters"), ("patchmatch_iters", -1, "patchmatch_iters"),
    ("uniformity", -1.0, "uniformity"), ("uniformity", float("nan"), "uniformity"),
    ("stop_threshold", 300.0, "stop_threshold"), ("vote_mode", "median", "vote_mode"),
    ("pyramid_levels", -2, "pyramid_levels"), ("seed", -1, "patchmatch_seed"), ("initial_nnf_levels", 0, "initial_nnf"),
])
def test_bad_parameters(frame, field, value, match):
    with pytest.raises(InputError, match=match):
        synthesize(frame, [Guide(frame, frame, 1.0)], SynthesisParams(**{field: value}))


def test_style_guide_size_mismatch_names_both_sizes(frame):
    small = frame[:40, :60]
    with pytest.raises(InputError) as info:
        _run(frame, [Guide(small, small, 1.0)])
    message = str(info.value)
    assert "guides[0].source" in message and "48×64" in message and "40×60" in message and "Fix:" in message


def test_target_guides_of_different_sizes(frame):
    with pytest.raises(InputError, match=r"guides\[1\].target.*48×64.*40×64"):
        _run(frame, [Guide(frame, frame, 1.0), Guide(frame, frame[:40], 1.0)])


def test_source_target_channel_mismatch(frame):
    with pytest.raises(InputError, match=r"guides\[0\].target: Expected 3 channels"):
        _run(frame, [Guide(frame, frame[..., :1], 1.0)])


def test_channels_first_layout_is_recognised(frame):
    with pytest.raises(InputError, match=r"style: Expected channels last.*permute\(1, 2, 0\)"):
        _run(frame.permute(2, 0, 1), [Guide(frame, frame, 1.0)])


def test_batch_instead_of_one_image(frame):
    with pytest.raises(InputError, match=r"style: Expected one image.*style\[0\]"):
        _run(frame[None], [Guide(frame, frame, 1.0)])


def test_wrong_rank(frame):
    with pytest.raises(InputError, match=r"guides\[0\].source: Expected shape \[H,W,C\]"):
        _run(frame, [Guide(frame[..., 0], frame, 1.0)])


def test_non_float_input(frame):
    as_uint8 = (frame * 255).to(torch.uint8)
    with pytest.raises(InputError, match=r"style: Expected a float tensor.*float\(\) / 255"):
        _run(as_uint8, [Guide(frame, frame, 1.0)])
    with pytest.raises(InputError, match=r"guides\[0\].source: Expected a torch.Tensor"):
        _run(frame, [Guide(frame.numpy(), frame, 1.0)])


def test_non_finite_values(frame):
    broken = frame.clone()
    broken[3, 4, 1] = float("nan")
    with pytest.raises(InputError, match="style: Expected finite values"):
        _run(broken, [Guide(frame, frame, 1.0)])


def test_images_smaller_than_a_patch(frame):
    tiny = frame[:4, :4]
    with pytest.raises(InputError, match=r"at least patch_size = 5 pixels.*target 4×4"):
        _run(frame, [Guide(frame, tiny, 1.0)])
    with pytest.raises(InputError, match=r"style: Expected images of at least patch_size = 5"):
        _run(tiny, [Guide(tiny, frame, 1.0)])


def test_guides_list_and_weights(frame):
    with pytest.raises(InputError, match="guides: Expected a non-empty list"):
        _run(frame, [])
    with pytest.raises(InputError, match="guides: Expected a non-empty list"):
        _run(frame, Guide(frame, frame, 1.0))
    with pytest.raises(InputError, match=r"guides\[0\]: Expected a Guide"):
        _run(frame, [(frame, frame, 1.0)])
    with pytest.raises(InputError, match=r"guides\[0\].weight: Expected a finite number >= 0"):
        _run(frame, [Guide(frame, frame, -1.0)])
    with pytest.raises(InputError, match="style_weight: Expected a finite number > 0"):
        _run(frame, [Guide(frame, frame, 1.0)], style_weight=0.0)


def test_initial_nnf_checks(frame):
    with pytest.raises(InputError, match=r"initial_nnf: Expected shape \[48, 64, 2\]"):
        _run(frame, [Guide(frame, frame, 1.0)], initial_nnf=torch.zeros(48, 64, 3, dtype=torch.int32))
    with pytest.raises(InputError, match="initial_nnf: Expected an integer tensor"):
        _run(frame, [Guide(frame, frame, 1.0)], initial_nnf=torch.zeros(48, 64, 2))


def test_unknown_backend(frame):
    with pytest.raises(InputError, match="backend: Expected one of"):
        _run(frame, [Guide(frame, frame, 1.0)], backend="opencl")


def test_auto_picks_what_this_machine_can_run():
    """``auto`` is the CUDA kernels exactly where torch sees a CUDA device and CuPy imports and compiles them,
    and the CPU otherwise — whatever machine runs the suite."""
    import importlib.util

    from rerender_video.kernels.cupy_loader import cupy_status

    status = cupy_status()
    if torch.version.cuda is None or not torch.cuda.is_available():
        expected = "cpu"
        assert not status.ok and ("CPU-only build" in status.reason or "no CUDA device" in status.reason)
    elif importlib.util.find_spec("cupy") is None:
        expected = "cpu"
        assert status.reason.startswith("CuPy not installed: pip install cupy-cuda")
    else:   # a GPU and CuPy: cuda unless CuPy is broken here, which the reason must say
        expected = "cuda" if status.ok else "cpu"
        assert status.ok or "pip" in status.reason or "report" in status.reason
    assert get_backend("auto").name == expected


def test_out_of_range_values_are_clipped_not_rejected(frame):
    result = _run(frame * 1.5 - 0.25, [Guide(frame, frame, 1.0)])
    assert 0.0 <= float(result.image.min()) and float(result.image.max()) <= 1.0
