"""Rerender Keyframe Renderer with a region mask in a real, headless ComfyUI (integration).

Skips unless ``COMFYUI_ROOT`` names a ComfyUI checkout; run it with the Python of ComfyUI's venv:

    COMFYUI_ROOT=/path/to/ComfyUI /path/to/comfy-venv/bin/python -m pytest tests/test_keyframe_region_integration.py -s

One prompt on Megamind frames 30 and 40 at 128×128 with the random-weight SD1.5-layout checkpoint
(tests/comfy_server.py): the anchor keyframe rendered with a mask (the brightest fifth of the frame,
loaded with core LoadImage + ImageToMask) under the pack's DDIM loop and under ComfyUI's own
``dpmpp_2m`` (which keeps the source only through ComfyUI's noise mask), and once without the mask.
The renders and the source frame go through the same core SaveImage, so outside the grown, feathered
mask the saved render must equal the saved frame byte for byte; inside it must differ. The same masked
anchor from the Cross-Frame Sampler (both samplers) is saved as a LATENT with core SaveLatent: on the
latent cells outside the grown, feathered mask it must be the frame's VAE latent (core VAEEncode).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from rerender_video.common.masks import region_alpha
from rerender_video.keyframe.region import latent_weight
from rerender_video.tests.comfy_server import ComfyServer, ModelsUnavailable, error_message, make_base
from rerender_video.tests.keyframe_data import megamind_squares

pytestmark = pytest.mark.integration

CHECKPOINT = "tiny_sd15_sd15layout_taesd.safetensors"
SIZE, GROW, FEATHER = 128, 4, 4
RENDERER = {
    "keyframe_interval": 1, "keyframe_indices": "", "first_keyframe_only": True, "seed": 3, "steps": 3, "cfg": 7.0,
    "scheduler": "ddim_uniform", "denoise": 0.75, "free_model_after": False, "use_cache": False,
    "cross_start": 0.0, "cross_end": 1.0, "warp_start": 0.0, "warp_end": 0.1, "mask_start": 0.5, "mask_end": 0.8,
    "ada_start": 0.8, "ada_end": 1.0, "mask_strength": 0.5, "inner_strength": 0.9, "smooth_boundary": True,
    "loose_cfattn": False, "style_update_freq": 1, "pixel_fusion": True,
}


@pytest.fixture(scope="module")
def comfy(comfyui_root, megamind_path, tmp_path_factory):
    try:
        base = make_base(tmp_path_factory.mktemp("comfy_region"), Path(comfyui_root), [("checkpoints", CHECKPOINT)])
    except ModelsUnavailable as error:
        pytest.skip(str(error))
    frames = megamind_squares(megamind_path, (30, 40), SIZE)
    for index, frame in enumerate(frames):
        cv2.imwrite(str(base / "input" / f"frame{index}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    luma = cv2.cvtColor(frames[0], cv2.COLOR_RGB2GRAY)
    region = np.where(luma > np.quantile(luma, 0.8), 255, 0).astype(np.uint8)
    cv2.imwrite(str(base / "input" / "region.png"), cv2.cvtColor(region, cv2.COLOR_GRAY2BGR))
    server = ComfyServer(Path(comfyui_root), base)
    yield server
    server.stop()
    shutil.rmtree(base / "output", ignore_errors=True)


def _renderer(sampler_name: str, masked: bool) -> dict:
    inputs = {"frames": ["frames", 0], "model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0],
              "vae": ["ckpt", 2], "sampler_name": sampler_name, **RENDERER}
    if masked:
        inputs.update(mask=["mask", 0], mask_grow=GROW, feather=FEATHER)
    return {"class_type": "RerenderKeyframeRenderer", "inputs": inputs}


def _sampler(sampler_name: str) -> dict:
    inputs = {"frames": ["frame0", 0], "frame_index": 0, "model": ["ckpt", 0], "positive": ["pos", 0],
              "negative": ["neg", 0], "vae": ["ckpt", 2], "sampler_name": sampler_name, "mask": ["mask", 0],
              "mask_grow": GROW, "feather": FEATHER,
              **{k: v for k, v in RENDERER.items() if k not in ("keyframe_interval", "keyframe_indices",
                                                               "first_keyframe_only", "free_model_after",
                                                               "use_cache")}}
    return {"class_type": "RerenderCrossFrameSampler", "inputs": inputs}


@pytest.fixture(scope="module")
def saved(comfy):
    prompt = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": "a watercolor painting"}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": "blurry"}},
        "frame0": {"class_type": "LoadImage", "inputs": {"image": "frame0.png"}},
        "frame1": {"class_type": "LoadImage", "inputs": {"image": "frame1.png"}},
        "frames": {"class_type": "ImageBatch", "inputs": {"image1": ["frame0", 0], "image2": ["frame1", 0]}},
        "region": {"class_type": "LoadImage", "inputs": {"image": "region.png"}},
        "mask": {"class_type": "ImageToMask", "inputs": {"image": ["region", 0], "channel": "red"}},
        "ddim": _renderer("ddim", True),
        "dpmpp": _renderer("dpmpp_2m", True),
        "unmasked": _renderer("ddim", False),
        "save_source": {"class_type": "SaveImage", "inputs": {"images": ["frame0", 0], "filename_prefix": "rg/source"}},
        "latent_ddim": _sampler("ddim"),
        "latent_dpmpp": _sampler("dpmpp_2m"),
        "encoded": {"class_type": "VAEEncode", "inputs": {"pixels": ["frame0", 0], "vae": ["ckpt", 2]}},
    }
    for name in ("latent_ddim", "latent_dpmpp", "encoded"):
        prompt[f"save_{name}"] = {"class_type": "SaveLatent", "inputs": {"samples": [name, 0],
                                                                        "filename_prefix": f"rg/{name}"}}
    for name in ("ddim", "dpmpp", "unmasked"):
        prompt[f"save_{name}"] = {"class_type": "SaveImage", "inputs": {"images": [name, 0],
                                                                       "filename_prefix": f"rg/{name}"}}
    entry = comfy.wait(comfy.queue(prompt), timeout=1800)
    assert entry["status"]["status_str"] == "success", error_message(entry)
    images = {}
    for name in ("source", "ddim", "dpmpp", "unmasked"):
        files = sorted((comfy.base / "output" / "rg").glob(f"{name}_*.png"))
        assert files, name
        images[name] = cv2.imread(str(files[-1]), cv2.IMREAD_UNCHANGED)
    from safetensors.torch import load_file

    for name in ("latent_ddim", "latent_dpmpp", "encoded"):
        files = sorted((comfy.base / "output" / "rg").glob(f"{name}_*.latent"))
        assert files, name
        images[name] = load_file(str(files[-1]))["latent_tensor"]
    region = cv2.imread(str(comfy.base / "input" / "region.png"), cv2.IMREAD_GRAYSCALE)
    mask = torch.from_numpy(region.astype(np.float32) / 255)[None]
    images["latent_weight"] = latent_weight(mask, (SIZE // 8, SIZE // 8), GROW, FEATHER).expand(1, 4, -1, -1)
    return images, region_alpha(mask, GROW, FEATHER)[0].numpy()


@pytest.mark.parametrize("name", ["ddim", "dpmpp"])
def test_outside_the_mask_the_keyframe_is_the_source_frame(saved, name):
    images, alpha = saved
    source, render = images["source"].astype(int), images[name].astype(int)
    outside, inside = alpha == 0, alpha == 1
    assert 0.3 < outside.mean() < 0.9
    assert np.array_equal(render[outside], source[outside]), f"{name}: pixels outside mask + feather changed"
    assert np.abs(render[inside] - source[inside]).mean() > 2.0, f"{name}: the region was not restyled"


def test_without_the_mask_the_whole_frame_is_restyled(saved):
    images, alpha = saved
    outside = alpha == 0
    change = np.abs(images["unmasked"].astype(int)[outside] - images["source"].astype(int)[outside]).mean()
    assert change > 2.0


@pytest.mark.parametrize("name", ["latent_ddim", "latent_dpmpp"])
def test_outside_the_mask_the_latent_is_the_frames_latent(saved, name):
    images, _ = saved
    latent, source, weight = images[name], images["encoded"], images["latent_weight"]
    keep = weight == 0
    assert 0.2 < float(keep.float().mean()) < 0.9
    scale = float(source.abs().max())
    assert float((latent[keep] - source[keep]).abs().max()) <= 1e-5 * scale, f"{name}: latent outside changed"
    assert float((latent[weight == 1] - source[weight == 1]).abs().mean()) > 1e-2 * scale
