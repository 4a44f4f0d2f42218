"""A keyframe restyled only inside a region mask (keyframe/region.py), on the pure-torch toy model.

Frames are Megamind frames 30, 40, 50 (one shot), centre-cropped and resized to 64×64, with a FLOW of
OpenCV DIS flows; the mask is a colour threshold of the anchor frame (its brightest pixels, grown), so
the region has a real, irregular outline.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rerender_video.common.errors import InputError
from rerender_video.common.masks import region_alpha
from rerender_video.keyframe.region import latent_weight
from rerender_video.keyframe.render import render_keyframe
from rerender_video.keyframe.settings import ConstraintSettings
from rerender_video.keyframe.toy import ToyAdapter
from rerender_video.tests.keyframe_data import make_flow, megamind_squares

SIZE, STEPS, GROW, FEATHER = 64, 10, 2, 3
SETTINGS = ConstraintSettings(feature_dtype=torch.float32)

pytestmark = pytest.mark.usefixtures("one_thread")


class RecordingAdapter(ToyAdapter):
    """The toy model, recording the latent ``x`` and ``σ`` of every model call (each step's running latent)."""

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.calls: list[tuple[float, torch.Tensor]] = []

    def denoise(self, x, sigma, constraints):
        self.calls.append((float(sigma.flatten()[0]), x.detach().clone()))
        return super().denoise(x, sigma, constraints)


@pytest.fixture(scope="module")
def video(megamind_path):
    frames = megamind_squares(megamind_path, (30, 40, 50), SIZE)
    images = torch.from_numpy(np.stack(frames)).float() / 255
    return images, make_flow(frames, [(0, 1), (0, 2), (1, 2)])


@pytest.fixture(scope="module")
def mask(video):
    images, _ = video
    luma = images[0].mean(-1)
    region = (luma > torch.quantile(luma, 0.8)).float()[None]
    assert 0.05 < float(region.mean()) < 0.5
    return region


def outside(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Latent cells with no pixel in the grown, feathered region, broadcast like ``like`` ``[1,4,h,w]``."""
    weight = latent_weight(mask, tuple(like.shape[-2:]), GROW, FEATHER)
    assert 0 < int((weight == 0).sum()) < weight.numel()
    return (weight == 0).expand_as(like)


def assert_outside_is_noised_source(adapter: RecordingAdapter, source: torch.Tensor, keep: torch.Tensor) -> None:
    noise = adapter.noise(source)
    inside_moved = False
    assert len(adapter.calls) >= STEPS
    for sigma, x in adapter.calls:
        noised = source + sigma * noise
        torch.testing.assert_close(x[keep], noised[keep], atol=1e-5, rtol=0,
                                   msg=f"latent outside the region at σ={sigma:g} is not the noised source")
        inside_moved |= bool((x[~keep] - noised[~keep]).abs().max() > 1e-2)
    assert inside_moved, "inside the region the diffusion must change the latent"


@pytest.mark.parametrize("step_hooks", [True, False], ids=["ddim-hooks", "foreign-sampler"])
def test_anchor_keeps_the_noised_source_outside_at_every_step(video, mask, step_hooks):
    images, _ = video
    adapter = RecordingAdapter(steps=STEPS, seed=7, step_hooks=step_hooks)
    source = adapter.encode(images[:1])
    result = render_keyframe(adapter, images[:1], 0, settings=SETTINGS, mask=mask, mask_grow=GROW, feather=FEATHER)
    keep = outside(mask, source)
    assert_outside_is_noised_source(adapter, source, keep)
    assert torch.equal(result.latent[keep], source[keep])
    assert float((result.latent[~keep] - source[~keep]).abs().max()) > 0.05
    alpha = region_alpha(mask, GROW, FEATHER)[..., None].expand_as(result.image)
    assert torch.equal(result.image[alpha == 0], images[:1][alpha == 0]), "outside mask + feather: the source pixels"
    assert float((result.image[alpha == 1] - images[:1][alpha == 1]).abs().mean()) > 0.02


def test_later_keyframe_with_every_constraint_keeps_the_noised_source_outside(video, mask):
    images, flow = video
    adapter = RecordingAdapter(steps=STEPS, seed=7)
    anchor = render_keyframe(adapter, images[:1], 0, settings=SETTINGS, mask=mask, mask_grow=GROW, feather=FEATHER)
    adapter.calls.clear()
    source = adapter.encode(images[1:2])
    result = render_keyframe(adapter, images[1:2], 1, anchor.reference, flow, SETTINGS, mask=mask, mask_grow=GROW,
                             feather=FEATHER)
    assert result.info["passes"] == 2
    applied = {name: result.info["applied_pass1"][name] + result.info["applied_pass2"][name]
               for name in ("adain", "shape", "pixel")}
    assert all(applied.values()), applied
    keep = outside(mask, source)
    assert_outside_is_noised_source(adapter, source, keep)
    assert torch.equal(result.latent[keep], source[keep])
    unmasked = render_keyframe(ToyAdapter(steps=STEPS, seed=7), images[1:2], 1, anchor.reference, flow, SETTINGS)
    assert float((result.latent[keep] - unmasked.latent[keep]).abs().max()) > 0.05, "without the mask it differs"


def test_empty_mask_warns_and_gives_the_source(video):
    images, _ = video
    adapter = ToyAdapter(steps=4, seed=7)
    with pytest.warns(UserWarning, match="mask is empty"):
        result = render_keyframe(adapter, images[:1], 0, settings=SETTINGS, mask=torch.zeros(1, SIZE, SIZE))
    assert torch.equal(result.image, images[:1])
    assert torch.equal(result.latent, adapter.encode(images[:1]))


def test_bad_masks_raise_errors_naming_the_mask(video, mask):
    images, _ = video
    adapter = ToyAdapter(steps=4, seed=7)
    with pytest.raises(InputError, match=r"^mask: .*64×64"):
        render_keyframe(adapter, images[:1], 0, settings=SETTINGS, mask=torch.ones(1, 32, 64))
    with pytest.raises(InputError, match=r"^mask: .*3 masks"):
        render_keyframe(adapter, images[:1], 0, settings=SETTINGS, mask=mask.expand(3, -1, -1))
    assert adapter.model_calls == 0, "checked before the model runs"


def test_widened_region_keeps_fewer_latent_cells(mask):
    tight = latent_weight(mask, (8, 8), 0, 0)
    wide = latent_weight(mask, (8, 8), 8, 8)
    assert bool((wide >= tight).all()) and int((wide > 0).sum()) > int((tight > 0).sum())


# --------------------------------------------------------------------------- the nodes' mask inputs (no ComfyUI)
def zero_flow(pairs, frame_count):
    from rerender_video.flow.types import FlowPairs

    vectors = np.zeros((len(pairs), SIZE, SIZE, 2), np.float32)
    masks = np.zeros((len(pairs), SIZE, SIZE), np.float32)
    return FlowPairs(list(pairs), vectors, vectors, masks, masks, (SIZE, SIZE), frame_count, "test")


@pytest.fixture(scope="module")
def clip(megamind_path):
    frames = megamind_squares(megamind_path, tuple(range(30, 39)), SIZE)
    return torch.from_numpy(np.stack(frames)).float() / 255, zero_flow([(0, 4), (0, 8), (4, 8)], 9)


def test_renderer_picks_each_keyframes_mask_and_keys_the_cache_by_it(clip):
    from rerender_video.common.cache import content_key
    from rerender_video.nodes.keyframe_renderer import KeyframeHints, KeyframeMasks, plan_render

    frames, flow = clip
    masks = (frames.mean(-1) > 0.5).float()                       # one mask per frame, [9,64,64]
    plan = plan_render(frames, 4, "", None, False, 6, {}, flow, None, masks)
    regions = KeyframeMasks(masks, plan, GROW, FEATHER)
    assert torch.equal(regions.pick(4), masks[4:5]) and torch.equal(regions.render_options(8)["mask"], masks[8:9])
    assert torch.equal(KeyframeMasks(masks[:1], plan, GROW, FEATHER).pick(8), masks[:1])
    hints = KeyframeHints([], [], None, 9, plan.indices)

    def keys(regions):
        parts = plan.inputs_of(hints, flow, None, regions)
        return [content_key(parts(position)) for position in range(3)]

    plain, masked = keys(None), keys(regions)
    other = masks.clone()
    other[4, :8] = 1 - other[4, :8]
    changed = keys(KeyframeMasks(other, plan, GROW, FEATHER))
    wider = keys(KeyframeMasks(masks, plan, GROW + 1, FEATHER))
    assert len({plain[0], masked[0], wider[0]}) == 3
    assert changed[0] == masked[0] and changed[1] != masked[1], "keyframe 4's mask changes keyframe 4's key"


def test_renderer_refuses_a_mask_of_another_count_or_size(clip):
    from rerender_video.nodes.keyframe_renderer import plan_render

    frames, flow = clip
    with pytest.raises(InputError, match=r"^mask: .*one per frame \(9\).*Got: 4 masks"):
        plan_render(frames, 4, "", None, False, 6, {}, flow, None, torch.ones(4, SIZE, SIZE))
    with pytest.raises(InputError, match=r"^mask: .*64×64.*Got: 64×32"):
        plan_render(frames, 4, "", None, False, 6, {}, flow, None, torch.ones(1, SIZE, 32))


def test_renderer_with_an_empty_mask_warns_and_returns_the_source_keyframes(clip):
    from rerender_video.nodes.keyframe_renderer import RerenderKeyframeRenderer

    frames, flow = clip
    with pytest.warns(UserWarning, match="mask is empty"):
        out = RerenderKeyframeRenderer().render(frames, None, None, None, None, 4, "", False, 0, 6, 7.0, "ddim",
                                                "ddim_uniform", 0.75, False, False, flow=flow,
                                                mask=torch.zeros(1, SIZE, SIZE))
    images, text, keyframes = out["result"]
    assert text == "0, 4, 8" and torch.equal(images, frames[[0, 4, 8]]) and keyframes.indices == (0, 4, 8)


def test_keyframe_nodes_show_the_mask_settings_as_declared():
    from rerender_video.common.masks import MASK_SETTINGS
    from rerender_video.nodes.crossframe import RerenderCrossFrameSampler
    from rerender_video.nodes.keyframe_renderer import RerenderKeyframeRenderer

    for node in (RerenderKeyframeRenderer, RerenderCrossFrameSampler):
        optional = node.INPUT_TYPES()["optional"]
        assert list(optional)[-3:] == ["mask", "mask_grow", "feather"], "new inputs go last (saved workflows)"
        for one in MASK_SETTINGS:
            assert optional[one.name] == ("INT", {"default": one.default, "min": one.min, "max": one.max,
                                                  "step": one.step, "tooltip": one.tooltip})


def test_crossframe_sampler_checks_the_mask_before_the_model(clip):
    from rerender_video.nodes.crossframe import RerenderCrossFrameSampler

    frames, _ = clip
    widgets = {name: options.get("default") for section in ("required", "optional")
               for name, (_, options) in RerenderCrossFrameSampler.INPUT_TYPES()[section].items()
               if isinstance(options, dict) and "default" in options}
    widgets.update(frame_index=4, mask_grow=GROW, feather=FEATHER)
    for name in ("model", "positive", "negative", "vae"):
        widgets[name] = None
    with pytest.raises(InputError, match=r"^mask: .*one per frame \(9\).*Got: 5 masks"):
        RerenderCrossFrameSampler().sample(frames=frames, mask=torch.ones(5, SIZE, SIZE), **widgets)
    with pytest.raises(InputError, match=r"^mask: .*Got: 32×64"):
        RerenderCrossFrameSampler().sample(frames=frames, mask=torch.ones(1, 32, SIZE), **widgets)
