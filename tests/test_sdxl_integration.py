"""Rerender Cross-Frame Sampler with an SDXL-layout model in a real, headless ComfyUI (integration, slow).

Skips unless ``COMFYUI_ROOT`` names a ComfyUI checkout; run it with the Python of ComfyUI's venv:

    COMFYUI_ROOT=/path/to/ComfyUI /path/to/comfy-venv/bin/python -m pytest tests/test_sdxl_integration.py -s

The model is the harness's random-weight ``--preset sdxllayout`` checkpoint (ComfyUI detects it as SDXL:
SDXL's blocks and transformer depths at 320 channels, full CLIP-L + bigG) and its SDXL ControlNet, made by
``make_tiny_sd15.py`` when the checkout's ``models/`` lacks them (2.4 GB). Two Megamind frames at 128×128
(ComfyUI: about 1 s per step at 256² on a CPU), the same fixtures as ``test_crossframe_integration.py``:

* DDIM at 3 steps: each constraint switched off changes the latent; pass 2 resumed equals pass 2 from
  scratch bit for bit; another keyframe's Canny hint on the ControlNet changes the latent (the SDXL
  ControlNet acts per keyframe; at strength 10, as the random ControlNet's zero convolutions are small);
* ``lcm`` at 4 steps with the default windows (the few-step rule gives every constraint a step): the same
  resume equality, AdaIN and pixel-aware fusion change the latent.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from rerender_video.tests.comfy_server import ComfyServer, ModelsUnavailable, error_message, make_base
from rerender_video.tests.keyframe_data import write_two_frame_inputs
from rerender_video.tests.test_crossframe_integration import FLOW_FIXTURE, SAMPLER_DEFAULTS, _base_prompt

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHECKPOINT = "tiny_sdxl_sdxllayout.safetensors"
CONTROLNET = "tiny_sdxl_sdxllayout_controlnet.safetensors"
SIZE = 128
STEPS = 3
MODELS = [("checkpoints", CHECKPOINT), ("controlnet", CONTROLNET)]
DDIM = dict(SAMPLER_DEFAULTS, steps=STEPS, cfattn_depth=2)
LCM = dict(DDIM, steps=4, sampler_name="lcm", scheduler="sgm_uniform", cfg=2.0, warp_start=0.0, warp_end=0.1,
           mask_start=0.5, mask_end=0.8, ada_start=0.8, ada_end=1.0)
VARIANTS = {
    "full": (DDIM, {}),
    "no_cross": (DDIM, {"cross_start": 1.0, "cross_end": 0.0}),
    "no_shape": (DDIM, {"warp_start": 1.0, "warp_end": 0.0}),
    "no_pixel": (DDIM, {"pixel_fusion": False}),
    "no_adain": (DDIM, {"ada_start": 1.0, "ada_end": 0.0}),
    "no_resume": (DDIM, {"resume_pass2": False}),
    # the random-weight ControlNet's zero convolutions are small (std 0.02): compare hints at strength 10
    "strong_hint1": (DDIM, {"control": "strong1"}),
    "strong_hint0": (DDIM, {"control": "strong0"}),
    "lcm_full": (LCM, {}),
    "lcm_no_resume": (LCM, {"resume_pass2": False}),
    "lcm_no_adain": (LCM, {"ada_start": 1.0, "ada_end": 0.0}),
    "lcm_no_pixel": (LCM, {"pixel_fusion": False}),
}


@pytest.fixture(scope="module")
def comfy(comfyui_root, megamind_path, tmp_path_factory):
    try:
        base = make_base(tmp_path_factory.mktemp("comfy_sdxl"), Path(comfyui_root), MODELS,
                         {"rerender_test_flow": FLOW_FIXTURE})
    except ModelsUnavailable as error:
        pytest.skip(str(error))
    write_two_frame_inputs(base / "input", megamind_path, SIZE)
    server = ComfyServer(Path(comfyui_root), base)
    yield server
    server.stop()
    shutil.rmtree(base / "output", ignore_errors=True)


def _sampler(settings: dict, index: int, control: str, **extra) -> dict:
    inputs = {"model": ["ckpt", 0], "positive": [control, 0], "negative": [control, 1],
              "vae": ["ckpt", 2], "frames": ["frames", 0], "frame_index": index, **settings, **extra}
    return {"class_type": "RerenderCrossFrameSampler", "inputs": inputs}


def _save(node: str, name: str) -> dict:
    return {"class_type": "SaveLatent", "inputs": {"samples": [node, 0], "filename_prefix": f"sdxl/{name}"}}


@pytest.fixture(scope="module")
def run(comfy):
    from safetensors.torch import load_file

    prompt = _base_prompt(CHECKPOINT, controlnet=CONTROLNET, controls=(("control", 1.0), ("strong", 10.0)))
    prompt["flow"] = {"class_type": "RerenderTestLoadFlow", "inputs": {"file": "flow.npz"}}
    for anchor, settings in (("anchor", DDIM), ("lcm_anchor", LCM)):
        prompt[anchor] = _sampler(settings, 0, "control0")
    for name, (settings, change) in VARIANTS.items():
        change = dict(change)
        control = change.pop("control", "control1")
        anchor = "lcm_anchor" if name.startswith("lcm") else "anchor"
        prompt[name] = _sampler(settings, 1, control, reference=[anchor, 2], flow=["flow", 0], **change)
        prompt[f"save_{name}"] = _save(name, name)
    start = time.time()
    entry = comfy.wait(comfy.queue(prompt), timeout=3000)
    assert entry["status"]["status_str"] == "success", error_message(entry)
    print(f"\nComfyUI SDXL-layout workflow ({len(VARIANTS)} keyframe variants, {SIZE}x{SIZE}, CPU): "
          f"{time.time() - start:.0f} s")
    latents = {}
    for name in VARIANTS:
        files = sorted((comfy.base / "output" / "sdxl").glob(f"{name}_*.latent"))
        assert files, f"no latent saved for {name}"
        latents[name] = load_file(str(files[-1]))["latent_tensor"]
    return latents


def _relative(a, b) -> float:
    return ((a - b).abs().mean() / a.abs().mean()).item()


class TestSdxlInComfyUI:
    def test_latents_have_the_frame_shape(self, run):
        for name, latent in run.items():
            assert latent.shape == (1, 4, SIZE // 8, SIZE // 8) and bool(latent.isfinite().all()), name

    @pytest.mark.parametrize("variant", ["no_cross", "no_shape", "no_pixel", "no_adain", "lcm_no_adain",
                                         "lcm_no_pixel"])
    def test_every_constraint_changes_the_latent(self, run, variant):
        full = run["lcm_full" if variant.startswith("lcm") else "full"]
        relative = _relative(full, run[variant])
        print(f"\n{variant}: mean |Δlatent| / mean |latent| = {relative:.4f}")
        assert relative > 5e-4

    def test_controlnet_hint_is_honoured_per_keyframe(self, run):
        # The SDXL ControlNet acts (a layout mismatch would only be logged) and each keyframe's hint counts. The
        # random ControlNet's effect is small (2e-4 of the latent at strength 10, 128²), but the runs are
        # deterministic (the resume test: bit-exact), so any difference comes from the hint.
        relative = _relative(run["strong_hint1"], run["strong_hint0"])
        print(f"\nhint of frame 1 vs frame 0 (strength 10): mean |Δlatent| / mean |latent| = {relative:.6f}")
        assert relative > 2e-5

    @pytest.mark.parametrize("prefix", ["", "lcm_"])
    def test_resumed_pass2_equals_full_two_pass(self, run, prefix):
        assert (run[f"{prefix}full"] - run[f"{prefix}no_resume"]).abs().max().item() == 0.0
