#!/usr/bin/env python3
"""Cost of one keyframe with the Rerender Cross-Frame Sampler against one plain KSampler run.

Imports ComfyUI in-process (like the harness's ``check_tiny_sd15.py``) and measures, in one process,
with the same model, conditioning (ControlNet applied), steps, size, sampler and scheduler:

* plain KSampler (``nodes.common_ksampler``) on the frame's latent;
* the same wrapped in VAE Encode + VAE Decode (what the sampler node also does inside);
* Rerender Cross-Frame Sampler on a keyframe (anchor already rendered): pass 1, rough decode,
  fused image, E*, pass 2 resumed at the pixel-fusion window, final decode;
* the same with pass 2 from scratch (the reference's cost: two full passes).

It also prints the attention feature store size per keyframe at 512×512 for the real SD1.5 layer
shapes (computed from the shapes, fp16), and the measured REFERENCE size at the benchmark size.

Run with ComfyUI's Python:
    COMFYUI_ROOT=/path/to/ComfyUI /path/to/comfy-venv/bin/python benchmarks/crossframe.py [--steps 20]

The random-weight checkpoints come from the harness's ``make_tiny_sd15.py`` (``sd15layout``: the
SD1.5 block layout with 320 channels at every level; ``--vae taesd`` keeps VAE time small, as a
real SD VAE on a GPU is small next to 20 UNet steps).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[1]
#: Megamind frames used as anchor, keyframe 1 and keyframe 2 (one shot, 10 frames apart).
FRAMES = (30, 40, 50)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--comfy-root", default=os.environ.get("COMFYUI_ROOT"))
    parser.add_argument("--ckpt", default="tiny_sd15_sd15layout_taesd.safetensors")
    parser.add_argument("--controlnet", default="tiny_sd15_sd15layout_controlnet.safetensors",
                        help="ControlNet file under models/controlnet ('' for none)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--denoise", type=float, default=0.75)
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--scheduler", default="ddim_uniform")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--comfy-args", default="", help="extra ComfyUI flags, e.g. '--use-pytorch-cross-attention'")
    parser.add_argument("--skip-full", action="store_true", help="skip the two-full-passes measurement")
    parser.add_argument("--repeat", type=int, default=3,
                        help="interleaved rounds of every measurement; the fastest round of each is reported "
                             "(on a shared machine the slowdowns come from other jobs)")
    args = parser.parse_args()
    if not args.comfy_root:
        parser.error("set COMFYUI_ROOT or --comfy-root")
    return args


def load_frames(size: int):
    import av
    import cv2
    import numpy as np
    import torch

    container = av.open(str(PACK_ROOT / "tests" / "data" / "Megamind.avi"))
    frames = {}
    for index, frame in enumerate(container.decode(video=0)):
        if index in FRAMES:
            frames[index] = cv2.resize(frame.to_ndarray(format="rgb24")[:, 96:624], (size, size),
                                       interpolation=cv2.INTER_AREA)
        if index >= max(FRAMES):
            break
    container.close()
    rgb = [frames[i] for i in FRAMES]
    images = torch.from_numpy(np.stack(rgb)).float() / 255
    edges = [cv2.Canny(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), 50, 100) for f in rgb]
    hints = torch.from_numpy(np.stack([np.repeat(e[..., None], 3, -1) for e in edges])).float() / 255
    return rgb, images, hints


def make_flow(rgb, flow_types):
    import cv2
    import numpy as np

    def dis(a, b):
        engine = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        return engine.calc(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.cvtColor(b, cv2.COLOR_RGB2GRAY), None)

    def occ(flow, back):
        height, width = flow.shape[:2]
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        mx, my = xs + flow[..., 0], ys + flow[..., 1]
        back_at = cv2.remap(back, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        bad = ((flow + back_at) ** 2).sum(-1) > 0.01 * ((flow ** 2).sum(-1) + (back_at ** 2).sum(-1)) + 0.5
        return (bad | (mx < 0) | (mx > width - 1) | (my < 0) | (my > height - 1)).astype(np.float32)

    pairs = [(0, 1), (0, 2), (1, 2)]
    forward = [dis(rgb[i], rgb[j]) for i, j in pairs]
    backward = [dis(rgb[j], rgb[i]) for i, j in pairs]
    return flow_types.FlowPairs(pairs, np.stack(forward), np.stack(backward),
                                np.stack([occ(f, b) for f, b in zip(forward, backward)]),
                                np.stack([occ(b, f) for f, b in zip(forward, backward)]), rgb[0].shape[:2],
                                len(rgb), "benchmark")


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def main() -> int:
    args = parse_args()
    root = os.path.abspath(args.comfy_root)
    sys.path.insert(0, root)
    os.chdir(root)
    import comfy.options
    comfy.options.enable_args_parsing()
    sys.argv = [sys.argv[0], "--cpu"] + args.comfy_args.split()

    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    import comfy.controlnet
    import comfy.model_management
    import comfy.sd
    import comfy.utils
    import folder_paths
    import nodes

    comfy.utils.PROGRESS_BAR_ENABLED = False
    spec = importlib.util.spec_from_file_location("rerender_cli", PACK_ROOT / "rerender_cli.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    cli.load_pack()
    from rerender_video.flow import types as flow_types
    from rerender_video.keyframe.attention import LOOSE_BLOCKS, store_bytes
    from rerender_video.keyframe.windows import MASK_PERIOD
    from rerender_video.nodes.crossframe import RerenderCrossFrameSampler

    print("Rerender Cross-Frame Sampler benchmark. Figures taken on a SHARED machine (other jobs use the same "
          "CPU cores): timings are noisy; compare ratios measured in one run.")
    device = comfy.model_management.get_torch_device()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}")

    checkpoint = folder_paths.get_full_path_or_raise("checkpoints", args.ckpt)
    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(checkpoint, output_vae=True, output_clip=True)
    positive = nodes.CLIPTextEncode().encode(clip, "a watercolor painting of a woman")[0]
    negative = nodes.CLIPTextEncode().encode(clip, "blurry, low quality")[0]
    rgb, images, hints = load_frames(args.size)
    conds = []
    if args.controlnet:
        controlnet_path = folder_paths.get_full_path_or_raise("controlnet", args.controlnet)
        controlnet = comfy.controlnet.load_controlnet(controlnet_path)
        for index in range(len(FRAMES)):
            conds.append(nodes.ControlNetApplyAdvanced().apply_controlnet(
                positive, negative, controlnet, hints[index:index + 1], 1.0, 0.0, 1.0)[:2])
    else:
        conds = [(positive, negative)] * len(FRAMES)
    flow = make_flow(rgb, flow_types)
    print(f"model {args.ckpt} ({type(model.model.model_config).__name__}), ControlNet {args.controlnet or 'none'}, "
          f"{args.size}x{args.size}, {args.steps} steps, sampler {args.sampler}/{args.scheduler}, "
          f"denoise {args.denoise}, cfg 7.5")

    latent = {"samples": vae.encode(images[2:3])}
    nodes.common_ksampler(model, 0, 1, 7.5, args.sampler, args.scheduler, *conds[2], latent, denoise=args.denoise)

    def plain():
        return nodes.common_ksampler(model, 3, args.steps, 7.5, args.sampler, args.scheduler, *conds[2], latent,
                                     denoise=args.denoise)[0]

    def plain_with_vae():
        encoded = {"samples": vae.encode(images[2:3])}
        out = nodes.common_ksampler(model, 3, args.steps, 7.5, args.sampler, args.scheduler, *conds[2], encoded,
                                    denoise=args.denoise)[0]
        return vae.decode(out["samples"])

    sampler_node = RerenderCrossFrameSampler()
    settings = dict(seed=3, steps=args.steps, cfg=7.5, sampler_name=args.sampler, scheduler=args.scheduler,
                    denoise=args.denoise, cross_start=0.0, cross_end=1.0, warp_start=0.0, warp_end=0.1,
                    mask_start=0.5, mask_end=0.8, ada_start=0.8, ada_end=1.0, mask_strength=0.5,
                    inner_strength=0.9, smooth_boundary=True, loose_cfattn=False, style_update_freq=1,
                    pixel_fusion=True)

    def render(index, reference=None, resume=True):
        return sampler_node.sample(model, *conds[index], vae, images, index, reference=reference, flow=flow,
                                   resume_pass2=resume, **settings)[2]

    def log(name, seconds):
        print(f"    {name}: {seconds:.1f} s", flush=True)

    t_anchor, anchor = timed(render, 0)
    log("anchor", t_anchor)
    t_key1, key1 = timed(render, 1, anchor)
    log("1st keyframe", t_key1)
    rounds = {"plain": [], "plain+vae": [], "key2": [], "key2 full": []}
    for round_index in range(args.repeat):
        print(f"  round {round_index + 1}/{args.repeat}", flush=True)
        for name, function in (("plain", plain), ("key2", lambda: render(2, key1)), ("plain+vae", plain_with_vae),
                               ("key2 full", lambda: render(2, key1, False))):
            if name == "key2 full" and args.skip_full:
                continue
            seconds, _ = timed(function)
            rounds[name].append(seconds)
            log(name, seconds)
    t_encode, _ = timed(vae.encode, images[2:3])
    t_decode, _ = timed(vae.decode, latent["samples"])
    best = {name: min(times) for name, times in rounds.items() if times}
    t_plain, t_plain_vae, t_key2 = best["plain"], best["plain+vae"], best["key2"]
    t_full = best.get("key2 full")

    split = MASK_PERIOD.first(args.steps)
    resumed_steps = args.steps if split is None else 2 * args.steps - split
    print(f"\nWall time per keyframe (s), fastest of {args.repeat} interleaved rounds (anchor and 1st keyframe: "
          "one run, noisier):")
    print(f"  plain KSampler                                {t_plain:8.1f}   1.00x  ({args.steps} model steps)")
    print(f"  VAE Encode + KSampler + VAE Decode            {t_plain_vae:8.1f}   {t_plain_vae / t_plain:.2f}x")
    print(f"  Cross-Frame Sampler: anchor (records)         {t_anchor:8.1f}   {t_anchor / t_plain:.2f}x")
    print(f"  Cross-Frame Sampler: 1st keyframe, resumed    {t_key1:8.1f}   {t_key1 / t_plain:.2f}x  "
          f"({resumed_steps} model steps; anchor = previous: N keys)")
    print(f"  Cross-Frame Sampler: 2nd keyframe, resumed    {t_key2:8.1f}   {t_key2 / t_plain:.2f}x  "
          f"({resumed_steps} model steps, 2N keys)  <- per-keyframe cost; target <= 1.5x (reference 2x)")
    print(f"      vs VAE Encode + KSampler + VAE Decode                {t_key2 / t_plain_vae:.2f}x  "
          "(same inputs and outputs as the node)")
    if t_full is not None:
        passes = 2 if split is not None else 1
        print(f"  Cross-Frame Sampler: 2nd keyframe, {passes} full pass{'es' if passes == 2 else ''} {t_full:6.1f}   "
              f"{t_full / t_plain:.2f}x  ({passes * args.steps} model steps: the reference's scheme); "
              f"resumed/full = {t_key2 / t_full:.2f}")
    print(f"  VAE encode {t_encode:.2f} s, decode {t_decode:.2f} s at {args.size}x{args.size}; a keyframe adds "
          "3 encodes + 3 decodes (frame; rough render; E*: 2 encodes + 2 decodes; final)")
    spread = {name: f"{min(t):.0f}-{max(t):.0f}" for name, t in rounds.items() if t}
    print(f"  spread over rounds (s): {spread}")

    full_store = store_bytes(64, 64, 20)
    loose_store = store_bytes(64, 64, 20, LOOSE_BLOCKS)
    print("\nAttention feature store at 512x512, real SD1.5 layer shapes, fp16, 20 steps, cond+uncond "
          "(computed from the shapes):")
    print(f"  one store (one frame's features)            {full_store / 1e9:.3f} GB  "
          f"(loose: {loose_store / 1e9:.3f} GB)")
    print(f"  REFERENCE held between keyframes            {2 * full_store / 1e9:.3f} GB  (anchor + previous; "
          f"{full_store / 1e9:.3f} GB for the first keyframe, where they are one store)")
    step = full_store // 20
    print(f"  peak while rendering a keyframe             {3 * full_store / 1e9:.3f} GB  (+ the next 'previous' "
          "being recorded; none when style_update_freq skips it)")
    print(f"  peak with release_reference (keyframe loop) {(2 * full_store + step) / 1e9:.3f} GB  (the old "
          "'previous' is dropped step by step as it is read)")
    print("  reference implementation (fp32, call-order lists): 2.2 GB held, target here <= 1.5 GB per keyframe")
    print(f"  measured at {args.size}x{args.size} with this checkpoint (320 channels at every level): "
          f"{anchor.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
