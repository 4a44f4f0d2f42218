"""Rerender Temporal Consistency in a real, headless ComfyUI with CLIP models loaded by ComfyUI's own loaders.

Skips unless ``COMFYUI_ROOT`` names a ComfyUI checkout; run it with the Python of ComfyUI's venv:

    COMFYUI_ROOT=/path/to/ComfyUI /path/to/comfy-venv/bin/python -m pytest tests/test_metrics_integration.py -s

The test writes one random-weight CLIP file in the layout of OpenAI's ``clip-vit-large-patch14``
``model.safetensors`` (text tower + ``text_projection``, ViT-L/14 vision tower + ``visual_projection``,
fp16, ≈ 0.85 GB) and puts it in both ``models/clip_vision`` and ``models/text_encoders``: **Load CLIP
Vision** and **Load CLIP** (type ``stable_diffusion``) each take their tower from it, as they would from
the real file. Frames: 8 source frames of Megamind at 128 px, each shown twice (``force_rate`` twice the source
rate), so consecutive frames alternate identical / different: Tem-Con must be 1 on the identical pairs
whatever the weights. A second prompt connects the random-weight SD1.5 checkpoint's CLIP, whose file has
no text projection: the node must refuse it, naming ``clip``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from rerender_video.tests.comfy_server import ComfyServer, ModelsUnavailable, make_base

pytestmark = pytest.mark.integration

CLIP_FILE = "clip_vit_l14_random.safetensors"
CHECKPOINT = "tiny_sd15_tiny.safetensors"
FRAMES = 8


def _tower(prefix: str, layers: int, width: int, mlp: int, generator: torch.Generator) -> dict:
    tensors = {}
    for layer in range(layers):
        block = f"{prefix}.encoder.layers.{layer}"
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            tensors[f"{block}.self_attn.{name}.weight"] = torch.randn(width, width, generator=generator) * 0.02
            tensors[f"{block}.self_attn.{name}.bias"] = torch.zeros(width)
        tensors[f"{block}.mlp.fc1.weight"] = torch.randn(mlp, width, generator=generator) * 0.02
        tensors[f"{block}.mlp.fc1.bias"] = torch.zeros(mlp)
        tensors[f"{block}.mlp.fc2.weight"] = torch.randn(width, mlp, generator=generator) * 0.02
        tensors[f"{block}.mlp.fc2.bias"] = torch.zeros(width)
        for norm in ("layer_norm1", "layer_norm2"):
            tensors[f"{block}.{norm}.weight"] = torch.ones(width)
            tensors[f"{block}.{norm}.bias"] = torch.zeros(width)
    return tensors


def write_random_clip(path: Path) -> None:
    """OpenAI CLIP ViT-L/14 key layout and shapes (HF ``CLIPModel``), random weights, fp16."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(0)
    tensors = _tower("text_model", 12, 768, 3072, generator)
    tensors.update({
        "text_model.embeddings.token_embedding.weight": torch.randn(49408, 768, generator=generator) * 0.02,
        "text_model.embeddings.position_embedding.weight": torch.randn(77, 768, generator=generator) * 0.01,
        "text_model.final_layer_norm.weight": torch.ones(768),
        "text_model.final_layer_norm.bias": torch.zeros(768),
        "text_projection.weight": torch.randn(768, 768, generator=generator) * 0.03,
    })
    tensors.update(_tower("vision_model", 24, 1024, 4096, generator))
    tensors.update({
        "vision_model.embeddings.class_embedding": torch.randn(1024, generator=generator) * 0.02,
        "vision_model.embeddings.patch_embedding.weight": torch.randn(1024, 3, 14, 14, generator=generator) * 0.02,
        "vision_model.embeddings.position_embedding.weight": torch.randn(257, 1024, generator=generator) * 0.01,
        "vision_model.pre_layrnorm.weight": torch.ones(1024), "vision_model.pre_layrnorm.bias": torch.zeros(1024),
        "vision_model.post_layernorm.weight": torch.ones(1024), "vision_model.post_layernorm.bias": torch.zeros(1024),
        "visual_projection.weight": torch.randn(768, 1024, generator=generator) * 0.03,
    })
    save_file({name: tensor.half().contiguous() for name, tensor in tensors.items()}, str(path))


@pytest.fixture(scope="module")
def base(comfyui_root, megamind_path, tmp_path_factory) -> Path:
    try:
        folder = make_base(tmp_path_factory.mktemp("metrics_base"), Path(comfyui_root), [("checkpoints", CHECKPOINT)])
    except ModelsUnavailable as error:
        pytest.skip(str(error))
    shutil.copy(megamind_path, folder / "input" / "Megamind.avi")
    for subfolder in ("clip_vision", "text_encoders"):
        (folder / "models" / subfolder).mkdir(parents=True, exist_ok=True)
    write_random_clip(folder / "models" / "clip_vision" / CLIP_FILE)
    (folder / "models" / "text_encoders" / CLIP_FILE).symlink_to(folder / "models" / "clip_vision" / CLIP_FILE)
    return folder


def frames_nodes() -> dict:
    return {
        "1": {"class_type": "RerenderLoadVideo", "inputs": {
            "video": "Megamind.avi", "frame_load_cap": 2 * FRAMES, "skip_first_frames": 60, "select_every_nth": 1,
            "force_rate": 47.952, "custom_width": 128, "custom_height": 0, "size_multiple": 8}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    }


def metrics_node(clip: list) -> dict:
    return {"class_type": "RerenderTemporalConsistency", "inputs": {
        "frames": ["2", 0], "source_frames": ["1", 0], "cut_threshold": 20.0, "clip_vision": ["3", 0],
        "clip": clip, "target_prompt": "a watercolor painting", "source_prompt": "a film still"}}


@pytest.fixture(scope="module")
def runs(comfyui_root, base, tmp_path_factory) -> dict:
    server = ComfyServer(Path(comfyui_root), base, env={"RERENDER_CACHE_DIR": str(tmp_path_factory.mktemp("c"))})
    try:
        vision = {"3": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": CLIP_FILE}}}
        good = {**frames_nodes(), **vision,
                "4": {"class_type": "CLIPLoader", "inputs": {"clip_name": CLIP_FILE, "type": "stable_diffusion"}},
                "5": metrics_node(["4", 0])}
        no_projection = {**frames_nodes(), **vision,
                         "6": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
                         "5": metrics_node(["6", 1])}
        results = {name: server.wait(server.queue(prompt), 1200)
                   for name, prompt in (("good", good), ("no_projection", no_projection))}
    finally:
        server.stop()
    results["log"] = server.log_text()
    return results


def test_clip_metrics_in_comfyui(runs):
    entry = runs["good"]
    assert entry["status"]["status_str"] == "success", runs["log"][-4000:]
    ui = entry["outputs"]["5"]
    data = json.loads(ui["rerender_metrics"][0])
    tem_con, fram_acc = data["per_frame"]["tem_con"], data["per_frame"]["fram_acc"]
    count = data["frame_count"]
    assert count == 2 * FRAMES
    assert len(tem_con) == count - 1 and len(fram_acc) == count
    identical = [value for pair, value in enumerate(tem_con) if pair % 2 == 0]
    different = [value for pair, value in enumerate(tem_con) if pair % 2 == 1]
    # random towers map every frame near one direction (1 − cosine ≈ 1e-5 between different frames here),
    # but a frame and its repeat give the same embedding: Tem-Con pairs the right frames
    assert all(abs(1.0 - value) < 1e-6 for value in identical), tem_con
    assert all(-1.0 <= value < 1.0 - 2e-6 for value in different), tem_con
    assert all(isinstance(value, bool) for value in fram_acc) and data["fram_acc"] == pytest.approx(sum(fram_acc) / count)
    assert ui["images"][0]["type"] == "temp" and "tem_con" in ui["text"][0]


def test_clip_without_text_projection_is_refused(runs):
    entry = runs["no_projection"]
    assert entry["status"]["status_str"] == "error"
    messages = json.dumps(entry["status"].get("messages", []))
    assert "clip: Expected a CLIP text model with its text projection" in messages
