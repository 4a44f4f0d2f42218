"""SDXL-family and few-step keyframes, pure torch: the layer mapping by latent resolution (keyframe/layout.py),
the latent format (keyframe/latent.py), the model check's refusals, the few-step window rule and the LCM loop."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rerender_video.common.errors import InputError
from rerender_video.keyframe.adain import adain, channel_stats
from rerender_video.keyframe.attention import CrossFrameAttention, FeatureStore
from rerender_video.keyframe.fidelity import fidelity_encode
from rerender_video.keyframe.fusion import pixel_fusion_step, shape_fusion
from rerender_video.keyframe.latent import LatentScale, latent_scale_of
from rerender_video.keyframe.layout import SD15_LAYOUT, SDXL_LAYOUT, decoder_layout, layer_id, split_layer
from rerender_video.keyframe.plan import KeyframePlan
from rerender_video.keyframe.render import render_keyframe
from rerender_video.keyframe.settings import ConstraintSettings
from rerender_video.keyframe.toy import ToyAdapter
from rerender_video.keyframe.windows import ADA_PERIOD, CROSS_PERIOD, MASK_PERIOD, WARP_PERIOD, StepClock, StepWindow
from rerender_video.nodes._keyframe_adapter import check_model
from rerender_video.tests.keyframe_data import make_flow, megamind_squares

#: ComfyUI's detected unet_config of the real SDXL base UNet and of the harness's sdxllayout model (×1 channels).
SDXL_UNET = {"model_channels": 320, "channel_mult": [1, 2, 4], "num_res_blocks": [2, 2, 2],
             "transformer_depth": [0, 0, 2, 2, 10, 10], "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
             "context_dim": 2048, "adm_in_channels": 2816, "use_linear_in_transformer": True}
SD15_UNET = {"model_channels": 320, "channel_mult": [1, 2, 4, 4], "num_res_blocks": [2, 2, 2, 2],
             "transformer_depth_output": [1] * 9 + [0] * 3, "context_dim": 768}


def blocks_of(layers):
    return sorted({split_layer(layer)[0] for layer in layers})


class TestLayerMapping:
    """The paper's SD1.5 choice carried to SDXL by latent resolution (keyframe/layout.py)."""

    def test_sd15_choice_is_unchanged(self):
        layout = decoder_layout("SD1.5", **{k: SD15_UNET[k] for k in ("model_channels", "channel_mult",
                                                                       "num_res_blocks", "transformer_depth_output")})
        assert layout == SD15_LAYOUT
        assert layout.layers() == tuple(range(3, 12)) and layout.layers(loose=True) == tuple(range(6, 12))
        assert layout.layers(depth=10) == layout.layers(depth=1)  # one transformer layer per block

    def test_sdxl_takes_the_quarter_and_half_resolution_blocks(self):
        assert [(b.factor, b.depth) for b in SDXL_LAYOUT.blocks] == [(4, 10)] * 3 + [(2, 2)] * 3 + [(1, 0)] * 3
        assert blocks_of(SDXL_LAYOUT.layers()) == [0, 1, 2, 3, 4, 5]
        assert blocks_of(SDXL_LAYOUT.layers(loose=True)) == [3, 4, 5]

    def test_cfattn_depth_caps_the_layers_per_block(self):
        for depth, count in ((1, 6), (2, 12), (5, 21), (10, 36)):
            layers = SDXL_LAYOUT.layers(depth=depth)
            assert len(layers) == count
            assert max(split_layer(layer)[1] for layer in layers if split_layer(layer)[0] < 3) == depth - 1
        assert SDXL_LAYOUT.layers(loose=True, depth=5) == SDXL_LAYOUT.layers(loose=True, depth=10)  # 1/2 blocks have 2

    def test_mapping_follows_resolution_not_block_numbers(self):
        # One res block per level (4 output blocks fewer): the same resolutions, other numbers.
        layout = decoder_layout("SDXL", 320, [1, 2, 4], [1, 1, 1], [0, 0, 2, 2, 10, 10])
        assert blocks_of(layout.layers()) == [0, 1, 2, 3] and blocks_of(layout.layers(loose=True)) == [2, 3]
        tiny = decoder_layout("SDXL", 320, [1, 1, 1], [2, 2, 2], SDXL_UNET["transformer_depth_output"])
        assert tiny.layers() == SDXL_LAYOUT.layers()  # the harness's sdxllayout model: same layers

    def test_store_size_at_1024_from_real_shapes(self):
        def gb(**kwargs):
            return SDXL_LAYOUT.store_bytes(128, 128, 20, SDXL_LAYOUT.layers(**kwargs)) / 1e9
        assert gb(depth=10) == pytest.approx(4.40, abs=0.01)
        assert gb(depth=5) == pytest.approx(2.83, abs=0.01) and gb(depth=5) <= 4  # the default stays under 4 GB
        assert gb(depth=1) == pytest.approx(0.94, abs=0.01)
        assert gb(loose=True) == pytest.approx(1.26, abs=0.01)

    def test_patch_records_and_replays_deeper_layers(self):
        sigmas = torch.tensor([2.0, 1.0, 0.0])
        layers = SDXL_LAYOUT.layers(depth=2)
        store = FeatureStore(torch.float32)
        recorder = CrossFrameAttention(StepClock(sigmas), layers, CROSS_PERIOD, record=store)
        n = torch.randn(1, 16, 8)
        for index in range(4):
            options = {"block": ("output", 0), "block_index": index, "sigmas": sigmas[:1], "cond_or_uncond": [0]}
            recorder(n + index, n, n, options)
        assert [key[2] for key in store.keys()] == [layer_id(0, 0), layer_id(0, 1)]  # layers 2, 3 not taken
        replay = CrossFrameAttention(StepClock(sigmas), layers, CROSS_PERIOD, replay=(store, store))
        options = {"block": ("output", 0), "block_index": 1, "sigmas": sigmas[:1], "cond_or_uncond": [0]}
        _, context, _ = replay(n, n, n, options)
        assert torch.equal(context, n + 1) and replay.applied == [0]


class TestLatentFormat:
    SD15 = LatentScale(0.18215)
    SDXL = LatentScale(0.13025)

    @pytest.fixture(autouse=True)
    def seeded(self):
        torch.manual_seed(0)

    def test_scaled_latents_differ_and_round_trip(self):
        raw = torch.randn(1, 4, 8, 8)
        assert not torch.allclose(self.SD15.to_model(raw), self.SDXL.to_model(raw))
        torch.testing.assert_close(self.SDXL.to_raw(self.SDXL.to_model(raw)), raw)
        shifted = LatentScale(1.5, 0.1)
        torch.testing.assert_close(shifted.to_model(raw), (raw - 0.1) * 1.5)

    def test_read_from_a_latent_format(self):
        sdxl_format = SimpleNamespace(scale_factor=0.13025, latent_channels=4)
        assert latent_scale_of(sdxl_format) == self.SDXL
        with pytest.raises(InputError, match="4-channel latents.*16 channels"):
            latent_scale_of(SimpleNamespace(scale_factor=1.5305, shift_factor=0.0609, latent_channels=16))

    def test_shape_fusion_and_adain_do_not_depend_on_the_scale(self):
        raw, anchor = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8) + 1
        validity = torch.rand(1, 1, 8, 8)
        for fmt in (self.SD15, self.SDXL):
            fused = shape_fusion(fmt.to_model(raw), fmt.to_model(anchor), validity)
            torch.testing.assert_close(fmt.to_raw(fused), shape_fusion(raw, anchor, validity), atol=1e-5, rtol=1e-5)
            matched = adain(fmt.to_model(raw), *channel_stats(fmt.to_model(anchor)))
            # equal up to the eps of the variances (1e-5 against variances scaled by scale²)
            torch.testing.assert_close(fmt.to_raw(matched), adain(raw, *channel_stats(anchor)), atol=3e-3, rtol=1e-3)

    def test_fidelity_encoding_does_not_depend_on_the_scale(self):
        toy = ToyAdapter()
        image = torch.rand(1, 32, 32, 3)
        plain = fidelity_encode(image, toy.encode, toy.decode).latent
        for fmt in (self.SD15, self.SDXL):
            scaled = fidelity_encode(image, lambda im: fmt.to_model(toy.encode(im)),
                                     lambda z: toy.decode(fmt.to_raw(z))).latent
            torch.testing.assert_close(fmt.to_raw(scaled), plain, atol=1e-5, rtol=1e-5)

    def test_pixel_fusion_depends_on_the_scale(self):
        # x̃ + σ·z mixes a latent with unit noise: right only in the model's space, so the format matters.
        raw_x, raw_target, eps, noise = (torch.randn(1, 4, 8, 8) for _ in range(4))
        weight, boundary = torch.full((1, 1, 8, 8), 0.5), torch.ones(1, 1, 8, 8)
        results = [fmt.to_raw(pixel_fusion_step(fmt.to_model(raw_x), eps, 2.0, fmt.to_model(raw_target), weight,
                                                boundary, 0.9, noise)) for fmt in (self.SD15, self.SDXL)]
        assert (results[0] - results[1]).abs().max() > 0.1


def stand_in(config_name: str, unet_config: dict | None, output_blocks: int | None, attention=(),
             prediction: str = "EPS"):
    config = type(config_name, (), {"unet_config": unet_config or {}})()
    diffusion = SimpleNamespace()
    if output_blocks is not None:
        blocks = [torch.nn.Sequential(torch.nn.Identity()) for _ in range(output_blocks)]
        for i in attention:
            holder = torch.nn.Module()
            holder.transformer_blocks = torch.nn.ModuleList([torch.nn.Identity()])
            blocks[i] = torch.nn.Sequential(holder)
        diffusion.output_blocks = torch.nn.ModuleList(blocks)
    base = SimpleNamespace(model_config=config, diffusion_model=diffusion, model_type=SimpleNamespace(name=prediction))
    return SimpleNamespace(model=base)


class TestModelCheck:
    def test_sdxl_config_gives_its_layout(self):
        found = check_model(stand_in("SDXL", SDXL_UNET, 9, range(6)))
        assert found["family"] == "SDXL" and found["layout"] == decoder_layout(
            "SDXL", 320, [1, 2, 4], [2, 2, 2], SDXL_UNET["transformer_depth_output"])

    def test_v_prediction_sdxl_is_accepted(self):
        assert check_model(stand_in("SDXL", SDXL_UNET, 9, range(6), "V_PREDICTION"))["family"] == "SDXL"

    @pytest.mark.parametrize("config, unet, blocks, attention, family", [
        ("SD3", {"in_channels": 16}, None, (), "SD3"),
        ("Flux", {"in_channels": 16}, None, (), "Flux"),
        ("SD20", dict(SD15_UNET, context_dim=1024), 12, range(3, 12), "SD2"),
        ("SVD_img2vid", dict(SDXL_UNET, context_dim=1024, use_temporal_attention=True), 12, range(3, 12), "video"),
    ])
    def test_other_families_are_refused_by_name(self, config, unet, blocks, attention, family):
        with pytest.raises(InputError, match=rf"model: Expected an SD1.5- or SDXL-family MODEL .*Got: a {family} "
                                             rf"model: {config} "):
            check_model(stand_in(config, unet, blocks, attention))


class TestFewSteps:
    @pytest.mark.parametrize("total", range(4, 9))
    def test_every_default_window_acts_at_4_to_8_steps(self, total):
        for window in (CROSS_PERIOD, WARP_PERIOD, MASK_PERIOD, ADA_PERIOD):
            assert window.steps(total), (window, total)
            assert all(window.contains(step, total) for step in window.steps(total))
        assert ADA_PERIOD.steps(4) == [3] and MASK_PERIOD.steps(4) == [3] and WARP_PERIOD.steps(4) == [0]

    def test_switched_off_windows_stay_off_and_many_steps_are_unchanged(self):
        for total in range(1, 9):
            assert StepWindow(1.0, 1.0).steps(total) == [] and StepWindow(0.6, 0.2).steps(total) == []
            assert StepWindow(0.5, 0.5, strict=True).steps(total) == []
        assert StepWindow(0.5, 0.55, strict=True).steps(20) == []  # above 8 steps the plain rule holds
        assert StepWindow(0.5, 0.55, strict=True).steps(4) == [3]  # strict: after its start

    def test_plan_at_4_steps(self):
        plan = KeyframePlan(ConstraintSettings(), 4)
        assert plan.split == 3 and plan.steps(later=True) == 4


class LcmToy(ToyAdapter):
    """The toy model sampled by the pack's loop with LCM steps (as the ComfyUI adapter does for ``lcm``)."""

    @torch.no_grad()
    def sample(self, latent, constraints, control=None, on_step=None):
        from rerender_video.keyframe.sampler import sdedit_start

        x = sdedit_start(latent, self.noise(latent), self.sigmas[0])

        def callback(info):
            if on_step is not None:
                on_step(info["i"])

        return constraints.sampler(lcm=True)(lambda x, sigma, **_: self.denoise(x, sigma, constraints), x,
                                             self.sigmas, {"seed": self.seed}, callback)


@pytest.fixture(scope="module")
def video(megamind_path):
    frames = megamind_squares(megamind_path, (30, 40), 64)
    return torch.from_numpy(np.stack(frames)).float() / 255, make_flow(frames, [(0, 1)])


class TestLcmLoop:
    def test_four_steps_every_constraint_acts_and_resume_is_exact(self, video):
        images, flow = video
        adapter = LcmToy(steps=4, seed=3)
        settings = ConstraintSettings(feature_dtype=torch.float32, rough_render="full")
        anchor = render_keyframe(adapter, images[:1], 0, settings=settings)
        resumed = render_keyframe(adapter, images[1:2], 1, anchor.reference, flow, settings)
        full = render_keyframe(adapter, images[1:2], 1, anchor.reference, flow, settings, resume=False)
        assert resumed.info["constraint_steps"] == {"cross_attention": [0, 1, 2, 3], "shape_fusion": [0],
                                                    "pixel_fusion": [3], "adain": [3]}
        assert torch.equal(resumed.latent, full.latent)
        plain = render_keyframe(adapter, images[1:2], 1, anchor.reference, flow,
                                ConstraintSettings(feature_dtype=torch.float32, pixel_fusion=False))
        assert not torch.equal(plain.latent, resumed.latent)  # pixel fusion acted on its one step
