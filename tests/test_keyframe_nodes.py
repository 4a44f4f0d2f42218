"""The keyframe nodes without ComfyUI: definitions, SD1.5 detection on stand-in objects, input checks.

Running them in a real ComfyUI is tests/test_crossframe_integration.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import av
import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn

from rerender_video.common.errors import InputError
from rerender_video.keyframe.settings import ConstraintSettings
from rerender_video.keyframe.toy import ToyAdapter
from rerender_video.nodes._keyframe_adapter import check_model, describe_model, sampler_names, scheduler_names
from rerender_video.nodes.crossframe import (NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, RerenderCrossFrameSampler,
                                             RerenderFidelityEncode)


class _Transformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.transformer_blocks = nn.ModuleList([nn.Identity()])


def stand_in_model(config_name: str, context_dim: int, attention_blocks, output_blocks=12, prediction="EPS"):
    """An object shaped like ComfyUI's ModelPatcher → BaseModel → UNetModel (what the check reads)."""
    blocks = nn.ModuleList([nn.Sequential(nn.Identity(), _Transformer()) if i in attention_blocks
                            else nn.Sequential(nn.Identity()) for i in range(output_blocks)])
    config = type(config_name, (), {"unet_config": {"context_dim": context_dim}})()
    base = SimpleNamespace(model_config=config, diffusion_model=SimpleNamespace(output_blocks=blocks),
                           model_type=SimpleNamespace(name=prediction))
    return SimpleNamespace(model=base)


class TestDefinitions:
    def test_registered(self):
        assert set(NODE_CLASS_MAPPINGS) == {"RerenderFidelityEncode", "RerenderCrossFrameSampler"}
        assert NODE_DISPLAY_NAME_MAPPINGS["RerenderCrossFrameSampler"] == "Rerender Cross-Frame Sampler"

    def test_sampler_defaults_to_ddim_and_says_what_works(self):
        spec = RerenderCrossFrameSampler.INPUT_TYPES()["required"]
        assert spec["sampler_name"][0][0] == "ddim" and sampler_names()[0] == "ddim"
        assert spec["scheduler"][0][0] == "ddim_uniform" and scheduler_names()[0] == "ddim_uniform"
        tooltip = spec["sampler_name"][1]["tooltip"]
        assert "pixel-aware fusion" in tooltip and "euler" in tooltip
        assert spec["mask_strength"][1]["default"] == 0.5 and spec["inner_strength"][1]["default"] == 0.9

    def test_rough_render_defaults_to_early_with_full_as_the_option(self):
        spec = RerenderCrossFrameSampler.INPUT_TYPES()["optional"]["rough_render"]
        assert spec[0] == ["early", "full"] and spec[1]["default"] == "early"
        assert ConstraintSettings().rough_render == "early"
        tooltip = spec[1]["tooltip"]
        assert "29 model steps" in tooltip and "20 model steps" in tooltip and "occluded" in tooltip  # cost and effect

    def test_reference_flow_latent_are_optional(self):
        optional = RerenderCrossFrameSampler.INPUT_TYPES()["optional"]
        assert optional["reference"][0] == "REFERENCE" and optional["flow"][0] == "FLOW"
        assert RerenderCrossFrameSampler.RETURN_TYPES == ("LATENT", "IMAGE", "REFERENCE")


class TestModelCheck:
    def test_sd15_layout_passes(self):
        found = check_model(stand_in_model("SD15", 768, range(3, 12)))
        assert found["attention_output_blocks"] == list(range(3, 12)) and found["family"] == "SD1.5"
        assert found["layout"].layers() == tuple(range(3, 12))

    def test_sdxl_layout_passes(self):
        found = check_model(stand_in_model("SDXL", 2048, range(0, 6), output_blocks=9, prediction="V_PREDICTION"))
        assert found["family"] == "SDXL" and found["layout"].family == "SDXL"

    def test_sd2_is_refused_naming_the_family(self):
        with pytest.raises(InputError, match=r"model: Expected an SD1.5- or SDXL-family MODEL.*Got: a SD2 model: "
                                             r"SD20 \(context_dim 1024"):
            check_model(stand_in_model("SD20", 1024, range(3, 12)))

    def test_modules_that_do_not_match_the_family_are_refused(self):
        with pytest.raises(InputError, match=r"SD1.5 model: SD15 .*attention in output blocks \[0, 1, 2, 3, 4, 5\]"):
            check_model(stand_in_model("SD15", 768, range(0, 6), output_blocks=9))

    def test_flow_matching_model_is_refused(self):
        with pytest.raises(InputError, match="prediction FLOW"):
            check_model(stand_in_model("SD15", 768, range(3, 12), prediction="FLOW"))

    def test_not_a_model(self):
        assert describe_model("not a model")["config"] == "str"
        with pytest.raises(InputError, match="Got: a not a model model: str"):
            check_model("not a model")


@pytest.fixture(scope="module")
def frames(megamind_path):
    container = av.open(str(megamind_path))
    images = []
    for index, frame in enumerate(container.decode(video=0)):
        if index in (20, 21):
            images.append(cv2.resize(frame.to_ndarray(format="rgb24"), (64, 48), interpolation=cv2.INTER_AREA))
        if index >= 21:
            break
    container.close()
    return torch.from_numpy(np.stack(images)).float() / 255


class TestFidelityEncodeNode:
    def test_latent_and_pixel_mask(self, frames):
        toy = ToyAdapter()
        vae = SimpleNamespace(encode=lambda im: toy.encode(im) / 0.18215, decode=lambda z: toy.decode(z * 0.18215))
        latent, mask = RerenderFidelityEncode().encode(vae, frames, 1.0, 0.25)
        assert latent["samples"].shape == (2, 4, 6, 8) and mask.shape == (2, 48, 64)
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        plain, _ = RerenderFidelityEncode().encode(vae, frames, 0.0, 0.25)
        assert torch.equal(plain["samples"], vae.encode(frames))

    def test_size_not_multiple_of_8(self, frames):
        with pytest.raises(InputError, match="multiples of 8"):
            RerenderFidelityEncode().encode(SimpleNamespace(), frames[:, :44], 1.0, 0.25)


class TestSamplerNodeInputs:
    def _call(self, frames, **overrides):
        spec = RerenderCrossFrameSampler.INPUT_TYPES()["required"]
        kwargs = {name: decl[1].get("default", decl[0][0] if isinstance(decl[0], list) else None)
                  for name, decl in spec.items()}
        kwargs.update(model=None, positive=None, negative=None, vae=None, frames=frames)
        kwargs.update(overrides)
        return RerenderCrossFrameSampler().sample(**kwargs)

    def test_frames_not_multiple_of_8(self, frames):
        with pytest.raises(InputError, match=r"frames: Expected a width and height that are multiples of 8"):
            self._call(frames[:, :, :60])

    def test_frame_index_outside_the_batch(self, frames):
        with pytest.raises(InputError, match="frames: Expected a batch holding frame_index 5"):
            self._call(frames, frame_index=5)
