"""Rerender Cross-Frame Sampler and Fidelity Encode in a real, headless ComfyUI (integration).

Skips unless ``COMFYUI_ROOT`` names a ComfyUI checkout; run it with the Python of ComfyUI's venv:

    COMFYUI_ROOT=/path/to/ComfyUI /path/to/comfy-venv/bin/python -m pytest tests/test_crossframe_integration.py -s

What it does: starts ComfyUI (``--cpu``) with ``--base-directory`` set to a temporary folder, so the
pack and a small fixture pack are linked into *that* folder's ``custom_nodes`` (the checkout is not
touched); random-weight SD1.5-layout checkpoint + ControlNet are reused from the checkout's
``models/`` or made with the harness's ``make_tiny_sd15.py`` (``COMFYUI_HARNESS``, else
``../shared/tools/comfyui_harness`` beside the checkout). Then it queues API-format prompts over HTTP on two Megamind
frames at 256×256: the anchor, a keyframe with every constraint, the same keyframe with each
constraint switched off, with pass 2 run from scratch, and with ``rough_render="early"`` (resumed and
from scratch); latents come back through core
``SaveLatent``. The FLOW comes from a fixture node that loads an OpenCV DIS flow computed here into
the pack's own ``FlowPairs``. Bad inputs (a non-SD1.5-layout checkpoint, frames not multiple of 8)
must fail with the pack's messages. In this process, the checkpoint's UNet (loaded by ComfyUI) is run
with the attn1 patch under each of ComfyUI's attention kernels (pytorch, sub_quad, split, basic).

Steps are few (3) because the SD1.5-layout UNet takes seconds per step on a CPU; the windows are set
so that every constraint acts at 3 steps.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import torch
import pytest

from rerender_video.tests.comfy_server import ComfyServer, ModelsUnavailable, error_message, make_base
from rerender_video.tests.keyframe_data import write_two_frame_inputs

pytestmark = pytest.mark.integration

CHECKPOINT = "tiny_sd15_sd15layout_taesd.safetensors"
CONTROLNET = "tiny_sd15_sd15layout_controlnet.safetensors"
NOT_SD15_LAYOUT = "tiny_sd15_tiny.safetensors"
SIZE = 256
STEPS = 3

FLOW_FIXTURE = r'''
"""Test fixture: loads a flow saved as .npz into the Rerender pack's FlowPairs (FLOW)."""
import os, sys, importlib
import numpy as np
import folder_paths

class RerenderTestLoadFlow:
    CATEGORY = "Rerender/tests"
    FUNCTION = "load"
    RETURN_TYPES = ("FLOW",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"file": ("STRING", {"default": "flow.npz"})}}

    def load(self, file):
        pack_init = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", "rerender_video", "__init__.py"))
        name = next(n for n, m in list(sys.modules.items())
                    if getattr(m, "__file__", None) and os.path.realpath(m.__file__) == pack_init)
        FlowPairs = importlib.import_module(name + ".flow.types").FlowPairs
        data = np.load(os.path.join(folder_paths.get_input_directory(), file))
        pairs = [tuple(int(v) for v in p) for p in data["pairs"]]
        return (FlowPairs(pairs, data["forward"], data["backward"], data["occlusion_forward"],
                          data["occlusion_backward"], tuple(int(v) for v in data["frame_size"]),
                          int(data["frame_count"]), "integration-test", {"method": "opencv-dis"}),)

NODE_CLASS_MAPPINGS = {"RerenderTestLoadFlow": RerenderTestLoadFlow}
NODE_DISPLAY_NAME_MAPPINGS = {"RerenderTestLoadFlow": "Rerender Test Load Flow"}
'''


# --------------------------------------------------------------------------- data
# --------------------------------------------------------------------------- setup
MODELS = [("checkpoints", CHECKPOINT), ("checkpoints", NOT_SD15_LAYOUT), ("controlnet", CONTROLNET)]


@pytest.fixture(scope="module")
def comfy_base(comfyui_root, megamind_path, tmp_path_factory) -> Path:
    """A ComfyUI base directory: the pack + fixture pack, the models, two frames, hints and their flow."""
    try:
        base = make_base(tmp_path_factory.mktemp("comfy_base"), Path(comfyui_root), MODELS,
                         {"rerender_test_flow": FLOW_FIXTURE})
    except ModelsUnavailable as error:
        pytest.skip(str(error))
    write_two_frame_inputs(base / "input", megamind_path, SIZE)
    return base


@pytest.fixture(scope="module")
def comfy(comfyui_root, comfy_base):
    server = ComfyServer(Path(comfyui_root), comfy_base)
    yield server
    server.stop()
    shutil.rmtree(comfy_base / "output", ignore_errors=True)


# --------------------------------------------------------------------------- workflow
SAMPLER_DEFAULTS = {
    "seed": 3, "steps": STEPS, "cfg": 7.0, "sampler_name": "ddim", "scheduler": "ddim_uniform", "denoise": 0.75,
    # windows chosen so that at 3 steps each constraint acts: shape {0}, pixel {1, 2}, AdaIN {2}
    "cross_start": 0.0, "cross_end": 1.0, "warp_start": 0.0, "warp_end": 0.1, "mask_start": 0.3, "mask_end": 0.9,
    "ada_start": 0.6, "ada_end": 1.0, "mask_strength": 0.5, "inner_strength": 0.9, "smooth_boundary": True,
    "loose_cfattn": False, "style_update_freq": 1, "pixel_fusion": True,
    "rough_render": "full",  # the paper's two passes; the "early" variants switch it
}
VARIANTS = {
    "full": {},
    "no_cross": {"cross_start": 1.0, "cross_end": 0.0},
    "no_shape": {"warp_start": 1.0, "warp_end": 0.0},
    "no_pixel": {"pixel_fusion": False},
    "no_adain": {"ada_start": 1.0, "ada_end": 0.0},
    "no_resume": {"resume_pass2": False},
    "early": {"rough_render": "early"},
    "early_no_resume": {"rough_render": "early", "resume_pass2": False},
}


def _base_prompt(checkpoint: str = CHECKPOINT, width: int = SIZE, controlnet: str = CONTROLNET,
                 controls: tuple[tuple[str, float], ...] = (("control", 1.0),)) -> dict:
    """Checkpoint, prompts, ControlNet, the two frames as a batch and, per frame, its hint applied at each of
    ``controls`` (node name prefix, strength): nodes ``control0``, ``control1``, …; the SDXL test reuses it."""
    prompt = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": "a watercolor painting"}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": "blurry"}},
        "cnet": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": controlnet}},
        "frame0": {"class_type": "LoadImage", "inputs": {"image": "frame0.png"}},
        "frame1": {"class_type": "LoadImage", "inputs": {"image": "frame1.png"}},
        "frames": {"class_type": "ImageBatch", "inputs": {"image1": ["frame0", 0], "image2": ["frame1", 0]}},
    }
    for index in (0, 1):
        prompt[f"hint{index}"] = {"class_type": "LoadImage", "inputs": {"image": f"hint{index}.png"}}
        for prefix, strength in controls:
            prompt[f"{prefix}{index}"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
                "positive": ["pos", 0], "negative": ["neg", 0], "control_net": ["cnet", 0],
                "image": [f"hint{index}", 0], "strength": strength, "start_percent": 0.0, "end_percent": 1.0}}
    if width != SIZE:
        prompt["scaled"] = {"class_type": "ImageScale", "inputs": {"image": ["frames", 0], "upscale_method": "area",
                                                                   "width": width, "height": SIZE, "crop": "disabled"}}
    return prompt


def _sampler(frames_ref, index: int, **extra) -> dict:
    inputs = {"model": ["ckpt", 0], "positive": [f"control{index}", 0], "negative": [f"control{index}", 1],
              "vae": ["ckpt", 2], "frames": frames_ref, "frame_index": index, **SAMPLER_DEFAULTS}
    inputs.update(extra)
    return {"class_type": "RerenderCrossFrameSampler", "inputs": inputs}


def _save(node: str, name: str) -> dict:
    return {"class_type": "SaveLatent", "inputs": {"samples": [node, 0], "filename_prefix": f"xf/{name}"}}


def _load_latent(base: Path, name: str):
    from safetensors.torch import load_file

    files = sorted((base / "output" / "xf").glob(f"{name}_*.latent"))
    assert files, f"no latent saved for {name}"
    return load_file(str(files[-1]))["latent_tensor"]


@pytest.fixture(scope="module")
def run(comfy):
    prompt = _base_prompt()
    prompt["anchor"] = _sampler(["frames", 0], 0)
    prompt["save_anchor"] = _save("anchor", "anchor")
    for name, change in VARIANTS.items():
        prompt[name] = _sampler(["frames", 0], 1, reference=["anchor", 2], flow=["flow", 0], **change)
        prompt[f"save_{name}"] = _save(name, name)
    prompt["flow"] = {"class_type": "RerenderTestLoadFlow", "inputs": {"file": "flow.npz"}}
    prompt["fidelity"] = {"class_type": "RerenderFidelityEncode", "inputs": {
        "vae": ["ckpt", 2], "images": ["frames", 0], "strength": 1.0, "threshold": 0.25}}
    prompt["plain"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["frames", 0], "vae": ["ckpt", 2]}}
    prompt["encode0"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["frame0", 0], "vae": ["ckpt", 2]}}
    prompt["ksampler"] = {"class_type": "KSampler", "inputs": {
        "model": ["ckpt", 0], "positive": ["control0", 0], "negative": ["control0", 1], "latent_image": ["encode0", 0],
        "seed": SAMPLER_DEFAULTS["seed"], "steps": STEPS, "cfg": SAMPLER_DEFAULTS["cfg"], "sampler_name": "euler",
        "scheduler": SAMPLER_DEFAULTS["scheduler"], "denoise": SAMPLER_DEFAULTS["denoise"]}}
    prompt["save_ksampler"] = _save("ksampler", "ksampler")
    prompt["save_fidelity"] = _save("fidelity", "fidelity")
    prompt["save_plain"] = _save("plain", "plain")
    start = time.time()
    entry = comfy.wait(comfy.queue(prompt))
    elapsed = time.time() - start
    assert entry["status"]["status_str"] == "success", error_message(entry)
    print(f"\nComfyUI workflow (anchor + {len(VARIANTS)} keyframe variants, {STEPS} steps, {SIZE}x{SIZE}, CPU): "
          f"{elapsed:.0f} s")
    return {name: _load_latent(comfy.base, name) for name in ["anchor", "ksampler", "fidelity", "plain", *VARIANTS]}


class TestInComfyUI:
    def test_pack_nodes_are_registered(self, comfy):
        info = comfy.get("/object_info/RerenderCrossFrameSampler")
        assert "RerenderCrossFrameSampler" in info
        fidelity = comfy.get("/object_info/RerenderFidelityEncode")["RerenderFidelityEncode"]
        assert fidelity["output"] == ["LATENT", "MASK"]
        log = (comfy.base / "server.log").read_text()
        assert not [line for line in log.splitlines() if "IMPORT FAILED" in line and "rerender" in line], log[-3000:]

    def test_latents_have_the_frame_shape(self, run):
        for name, latent in run.items():
            assert latent.shape == (1 if name not in ("fidelity", "plain") else 2, 4, SIZE // 8, SIZE // 8), name
            assert bool(latent.isfinite().all()), name

    @pytest.mark.parametrize("variant", ["no_cross", "no_shape", "no_pixel", "no_adain"])
    def test_every_constraint_changes_the_latent(self, run, variant):
        full, other = run["full"], run[variant]
        relative = ((full - other).abs().mean() / full.abs().mean()).item()
        print(f"\n{variant}: mean |Δlatent| / mean |latent| = {relative:.4f}")
        assert relative > 5e-4  # runs are bit-exact (see the resume test): far above float noise

    def test_anchor_equals_comfyuis_own_euler(self, run):
        # The anchor applies no constraint (it only records): the pack's DDIM loop must then give
        # KSampler's euler result (DDIM η=0 = Euler in σ-space) with the same seed, schedule, ControlNet.
        scale = run["ksampler"].abs().max().item()
        assert (run["anchor"] - run["ksampler"]).abs().max().item() <= 1e-4 * scale

    def test_resumed_pass2_equals_full_two_pass(self, run):
        assert (run["full"] - run["no_resume"]).abs().max().item() == 0.0

    def test_early_rough_render_resumed_equals_pass2_from_scratch(self, run):
        assert (run["early"] - run["early_no_resume"]).abs().max().item() == 0.0

    def test_early_rough_render_changes_less_than_pixel_fusion_itself(self, run):
        # "early" replaces only the rough render, which enters the fused image where both references
        # are occluded; dropping pixel fusion changes far more. (Random weights: the random UNet's x̂0
        # hardly moves between steps, so the two rough renders are close here; this guards the wiring.)
        early = (run["early"] - run["full"]).abs().mean().item()
        no_pixel = (run["no_pixel"] - run["full"]).abs().mean().item()
        print(f"\nmean |Δlatent|: early vs full {early:.5f}, pixel fusion off vs on {no_pixel:.5f}")
        assert early < 0.1 * no_pixel

    def test_fidelity_encode_differs_from_plain_encode(self, run):
        assert ((run["fidelity"] - run["plain"]).abs().mean() / run["plain"].abs().mean()).item() > 1e-3


class TestBadInputInComfyUI:
    def test_non_sd15_layout_model(self, comfy):
        prompt = _base_prompt(checkpoint=NOT_SD15_LAYOUT)
        prompt["anchor"] = _sampler(["frames", 0], 0)
        prompt["save"] = _save("anchor", "bad_model")
        entry = comfy.wait(comfy.queue(prompt), timeout=900)
        assert entry["status"]["status_str"] == "error"
        message = error_message(entry)
        assert "model: Expected an SD1.5- or SDXL-family MODEL" in message and "attention in output blocks" in message, message

    def test_frames_not_multiple_of_8(self, comfy):
        prompt = _base_prompt(width=252)
        prompt["anchor"] = _sampler(["scaled", 0], 0)
        prompt["save"] = _save("anchor", "bad_size")
        entry = comfy.wait(comfy.queue(prompt), timeout=900)
        assert entry["status"]["status_str"] == "error"
        assert "frames: Expected a width and height that are multiples of 8" in error_message(entry)


# --------------------------------------------------------------------------- in-process UNet
@pytest.fixture(scope="module")
def unet(comfyui_root, comfy_base):
    """The SD1.5-layout checkpoint's UNet loaded by ComfyUI in this process (no server)."""
    if str(comfyui_root) not in sys.path:
        sys.path.append(str(comfyui_root))  # appended: the pack root (first on sys.path) has its own nodes/
    import comfy.cli_args

    if not torch.cuda.is_available():
        comfy.cli_args.args.cpu = True  # what --cpu does; read when comfy.model_management is imported
    import comfy.sd

    checkpoint = comfy_base / "models" / "checkpoints" / CHECKPOINT
    model = comfy.sd.load_checkpoint_guess_config(str(checkpoint), output_vae=False, output_clip=False)[0]
    return model


def _forward(model, x, sigma, context, patch=None, backend=None):
    """One UNet evaluation (x̂0) as ComfyUI's samplers make it, with an attn1 patch and a forced backend."""
    from comfy.ldm.modules import attention

    options = {"patches": {"attn1_patch": [patch]} if patch else {}, "cond_or_uncond": [0],
               "sigmas": sigma}
    if backend is not None:
        kernel = attention.attention_basic if backend == "basic" else attention.get_attention_function(backend)
        options["optimized_attention_override"] = lambda _default, *args, **kwargs: kernel(*args, **kwargs)
    with torch.no_grad():
        return model.model.apply_model(x, sigma, c_crossattn=context, transformer_options=options)


class TestAttentionPatchInComfyUI:
    """The attn1 patch acts whichever attention kernel ComfyUI runs (the reference lost it under xformers)."""

    BACKENDS = ("pytorch", "sub_quad", "split", "basic")

    def test_patch_changes_the_output_under_every_backend(self, unet):
        from rerender_video.keyframe.attention import DECODER_BLOCKS, CrossFrameAttention, FeatureStore
        from rerender_video.keyframe.windows import CROSS_PERIOD, StepClock

        from rerender_video.nodes._keyframe_adapter import check_model

        assert check_model(unet)["attention_output_blocks"] == list(range(3, 12))
        generator = torch.Generator().manual_seed(0)
        x_anchor = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=generator) * 3
        x_current = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=generator) * 3
        context = torch.randn(1, 77, 768, generator=generator)
        sigma = torch.tensor([3.0])
        clock = StepClock(torch.tensor([3.0, 0.0]))
        anchor, own = FeatureStore(torch.float32), FeatureStore(torch.float32)
        _forward(unet, x_anchor, sigma, context, CrossFrameAttention(clock, DECODER_BLOCKS, CROSS_PERIOD, record=anchor))
        _forward(unet, x_current, sigma, context, CrossFrameAttention(clock, DECODER_BLOCKS, CROSS_PERIOD, record=own))
        assert sorted({key[2] for key in anchor.keys()}) == list(DECODER_BLOCKS)
        results = {}
        for backend in self.BACKENDS:
            replay = CrossFrameAttention(clock, DECODER_BLOCKS, CROSS_PERIOD, replay=(anchor, anchor))
            itself = CrossFrameAttention(clock, DECODER_BLOCKS, CROSS_PERIOD, replay=(own, own))
            plain = _forward(unet, x_current, sigma, context, backend=backend)
            patched = _forward(unet, x_current, sigma, context, replay, backend)
            self_patched = _forward(unet, x_current, sigma, context, itself, backend)
            assert replay.calls == 9, backend  # every decoder self-attention, under this kernel
            # relative to the model's own contribution σ·ε̂ = x − x̂0 (x̂0 itself is mostly the input x)
            change = ((patched - plain).abs().mean() / (x_current - plain).abs().mean()).item()
            print(f"\n{backend}: cross-frame attention changes the UNet output by {change:.4f} (relative mean)")
            assert change > 1e-2, backend
            torch.testing.assert_close(self_patched, plain, rtol=1e-4, atol=1e-4 * plain.abs().max().item())
            results[backend] = patched
        for backend in self.BACKENDS[1:]:
            torch.testing.assert_close(results[backend], results["pytorch"], rtol=1e-3,
                                       atol=1e-3 * results["pytorch"].abs().max().item())
