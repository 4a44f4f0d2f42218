#!/usr/bin/env python3
"""Cost of one keyframe with the Rerender Cross-Frame Sampler against one plain KSampler run.

Imports ComfyUI in-process (like the harness's ``check_tiny_sd15.py``) and measures, in one process,
with the same model, conditioning (ControlNet applied), steps, size, sampler and scheduler:

* plain KSampler (``nodes.common_ksampler``) on the frame's latent;
* the same wrapped in VAE Encode + VAE Decode (what the sampler node also does inside);
* Rerender Cross-Frame Sampler on a keyframe (anchor already rendered): pass 1, rough decode,
  fused image, E*, pass 2 resumed at the pixel-fusion window, final decode (``rough_render`` "full");
* the same with ``rough_render`` "early" (pass 1 stops at the pixel-fusion window; one plain run's
  model steps in all);
* the same with pass 2 from scratch (the reference's cost: two full passes).

Then it compares the "early" render with the "full" one (mean |difference| of the final IMAGE in
1/255 units, over the frame and split by where the rough render enters the fused image), next to
the change pixel-aware fusion itself makes, so the difference has a scale. With random weights the
renders are not pictures; the comparison says how far the rough render reaches, not how it looks.

It also prints the attention feature store size per keyframe at 512×512 for the real SD1.5 layer
shapes (computed from the shapes, fp16), and the measured REFERENCE size at the benchmark size.
``--stores-only`` prints just the store sizes, without ComfyUI: SD1.5 at 512×512 and SDXL at 1024×1024
(20 steps, fp16, cond + uncond) for every ``loose_cfattn`` / ``cfattn_depth`` setting.

SDXL: pass the harness's ``sdxllayout`` checkpoint and ControlNet (``--ckpt tiny_sdxl_sdxllayout.safetensors
--controlnet tiny_sdxl_sdxllayout_controlnet.safetensors``; it uses the KL VAE, so VAE time is a larger
share than with TAESD); ``--sampler lcm --scheduler sgm_uniform --steps 4`` measures a few-step run.

Wall time and this process's CPU time are both reported, as ratios to the plain run of the same
round (median over rounds). On a machine shared with other jobs, run with ``--threads 1``: the CPU
time of a single-threaded process hardly depends on the other jobs, so its ratio stands in for the
wall-time ratio of a quiet machine.

Run with ComfyUI's Python:
    COMFYUI_ROOT=/path/to/ComfyUI /path/to/comfy-venv/bin/python benchmarks/crossframe.py [--steps 20] [--threads 1]

The random-weight checkpoints come from the harness's ``make_tiny_sd15.py`` (``sd15layout``: the
SD1.5 block layout with 320 channels at every level; ``--vae taesd`` keeps VAE time small, as a
real SD VAE on a GPU is small next to 20 UNet steps).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time

from _comfy_in_process import PACK_ROOT, boot_comfy  # this folder is on sys.path when the script runs
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
    parser.add_argument("--skip-compare", action="store_true",
                        help="skip the 'early' vs 'full' render comparison (deterministic: it needs no repeat)")
    parser.add_argument("--save-dir", default="", help="write the compared renders there as PNG ('' = do not)")
    parser.add_argument("--stores-only", action="store_true",
                        help="print the feature-store sizes (SD1.5 512x512, SDXL 1024x1024) and exit; needs no ComfyUI")
    parser.add_argument("--cfattn-depth", type=int, default=5, help="cfattn_depth of the timed renders (SDXL)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="interleaved rounds of every measurement; the fastest round of each is reported "
                             "(on a shared machine the slowdowns come from other jobs)")
    args = parser.parse_args()
    if not args.comfy_root and not args.stores_only:
        parser.error("set COMFYUI_ROOT or --comfy-root")
    return args


def load_frames(size: int):
    import cv2
    import numpy as np
    import torch

    from rerender_video.tests.keyframe_data import megamind_squares

    rgb = megamind_squares(PACK_ROOT / "tests" / "data" / "Megamind.avi", FRAMES, size)
    images = torch.from_numpy(np.stack(rgb)).float() / 255
    edges = [cv2.Canny(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), 50, 100) for f in rgb]
    hints = torch.from_numpy(np.stack([np.repeat(e[..., None], 3, -1) for e in edges])).float() / 255
    return rgb, images, hints


def compare_rough_renders(args, render_all, reference, flow) -> None:
    """Final render of keyframe 2 with rough_render "early" vs "full", split by the rough render's weight.

    Next to the real "early" render, two probes replace the full rough render ``Ī'`` before the
    fused image is made (by wrapping ``keyframe.render._pixel_guide``; measurement only): a uniform
    gray image (no information at all: an upper bound of what any rough render can change) and the
    full rough render blurred with a 4 px Gaussian (what a mid-sampling x̂0 of a real model looks
    like: layout and colours right, detail missing).
    """
    import numpy as np
    import torch

    from rerender_video.keyframe import render as render_module
    from rerender_video.keyframe.fusion import gaussian_blur, soft_occlusion

    roughs, guides = {}, {}

    def with_rough(transform=None, rough_mode="full"):
        original = render_module._pixel_guide
        name = rough_mode if transform is None else transform.__name__

        def patched(adapter, plan, rough):
            rough = rough.float().cpu()
            roughs[name] = rough
            guide, fused, keep = original(adapter, plan, rough if transform is None else transform(rough))
            guides[name] = (fused.float().cpu(), guide.target.float().cpu(), guide.weight.float().cpu())
            return guide, fused, keep

        render_module._pixel_guide = patched
        try:
            return render_all(2, reference, rough=rough_mode)[1]
        finally:
            render_module._pixel_guide = original

    def blurred(rough):
        return gaussian_blur(rough.permute(0, 3, 1, 2), 25, 4.0).permute(0, 2, 3, 1)

    def gray(rough):
        return torch.full_like(rough, 0.5)

    full = with_rough()
    renders = {"early (rough_render='early')": with_rough(rough_mode="early"),
               "probe: rough = full, blurred 4 px": with_rough(blurred),
               "probe: rough = uniform gray": with_rough(gray),
               "scale: pixel fusion off": render_all(2, reference, pixel_fusion=False)[1]}
    occluded_anchor, occluded_previous = flow.between(0, 2)[1], flow.between(1, 2)[1]
    weight = (soft_occlusion(occluded_anchor) * soft_occlusion(occluded_previous))[0, 0]  # B_0·B_p of Eq. 10
    both = (occluded_anchor * occluded_previous) > 0
    regions = {"frame": torch.ones_like(both), "occluded both": both, "soft band": (weight > 0) & ~both,
               "weight = 0": weight == 0}

    print(f"\nFinal render of the 2nd keyframe vs rough_render='full' ({args.steps} steps): mean |difference| in "
          "1/255 of the [0,1] range, by where the rough render enters the fused image (weight B_0*B_p, Eq. 10). "
          "Random weights: renders are not pictures, and the random UNet's x0 hardly changes between steps, so "
          "'early' is close to 'full' here by construction; the probes bound what a real model's rough render "
          "can change.")
    print("  occluded both: hard O_0*O_p = 1 (w = 0: pixel fusion leaves it to the sampler); soft band: B_0*B_p > 0 "
          "elsewhere; weight = 0: the rough render is not in the fused image there (reached only through the VAE)")
    rough_change = (roughs["early"] - roughs["full"])[0].abs().double() * 255
    print(f"  rough render itself, early vs full: mean |difference| {float(rough_change.mean()):.2f}/255 "
          f"(inside 'occluded both': {float(rough_change[both].mean()) if both.any() else 0:.2f})")
    print("  " + f"{'':36s}" + "".join(f"{name[:15]:>16s}" for name in regions) + "   PSNR dB  >8/255")
    print("  " + f"{'(share of pixels)':36s}" + "".join(f"{float(r.float().mean()):16.1%}" for r in regions.values()))
    for name, image in renders.items():
        difference = (image - full)[0].double()
        cells = "".join(f"{float(difference[r].abs().mean() * 255):16.2f}" if r.any() else f"{'-':>16s}"
                        for r in regions.values())
        mse = float((difference ** 2).mean())
        psnr = 10 * np.log10(1 / mse) if mse > 0 else float("inf")
        print(f"  {name:36s}{cells}   {psnr:7.1f}  {float((difference.abs().amax(-1) > 8 / 255).double().mean()):6.1%}")
    fused_full, target_full, weight = guides["full"]
    pixel_weight = weight.repeat_interleave(8, 2).repeat_interleave(8, 3)[:, 0]  # w at pixel size [1,H,W]
    print("  What pixel-aware fusion pulls towards (independent of the UNet after the window): w-weighted mean "
          "|change| of the fused image (1/255) and of the target latent x~ (relative to w-weighted mean |x~|):")
    for name in ("early", "blurred", "gray"):
        fused, target, _ = guides[name]
        fused_change = float(((fused - fused_full).abs().mean(-1) * pixel_weight).sum() / pixel_weight.sum() * 255)
        target_change = float(((target - target_full).abs() * weight).sum() / ((target_full.abs() * weight).sum()))
        print(f"    rough = {name:8s} fused image {fused_change:6.2f}/255   target latent {target_change:7.2%}")
    if args.save_dir:
        import cv2

        os.makedirs(args.save_dir, exist_ok=True)
        for name, image in {"full": full, **renders}.items():
            rgb = (image[0].clamp(0, 1).numpy() * 255).round().astype(np.uint8)
            file = "".join(c if c.isalnum() else "_" for c in name.split("(")[0].strip()) + ".png"
            cv2.imwrite(os.path.join(args.save_dir, file), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def timed_cpu(function):
    """``(wall seconds, CPU seconds of this process)`` of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def print_stores() -> None:
    """Feature-store size per keyframe from the real layer shapes, for every memory setting."""
    sys.path.insert(0, str(PACK_ROOT.parent))
    spec = importlib.util.spec_from_file_location("rerender_video", PACK_ROOT / "__init__.py",
                                                  submodule_search_locations=[str(PACK_ROOT)])
    if "rerender_video" not in sys.modules:
        module = importlib.util.module_from_spec(spec)
        sys.modules["rerender_video"] = module
    from rerender_video.keyframe.layout import MAX_DEPTH, SD15_LAYOUT, SDXL_LAYOUT, describe_layers

    print("Cross-frame attention feature store per keyframe (one frame's recorded self-attention inputs), "
          "computed from the real layer shapes: 20 steps, cond + uncond, fp16.")
    print(f"  {'model, size':22s} {'setting':32s} {'layers':>6s} {'GB':>6s}   layers")
    rows = [("SD1.5, 512x512", SD15_LAYOUT, 64, False, 1), ("SD1.5, 512x512", SD15_LAYOUT, 64, True, 1)]
    rows += [("SDXL, 1024x1024", SDXL_LAYOUT, 128, False, depth) for depth in (1, 2, 3, 5, 8, MAX_DEPTH)]
    rows += [("SDXL, 1024x1024", SDXL_LAYOUT, 128, True, depth) for depth in (1, 5)]
    for name, layout, latent, loose, depth in rows:
        layers = layout.layers(loose, depth)
        setting = f"loose_cfattn {'on' if loose else 'off'}" + (f", cfattn_depth {depth}" if layout is SDXL_LAYOUT
                                                                  else "")
        size = layout.store_bytes(latent, latent, 20, layers) / 1e9
        print(f"  {name:22s} {setting:32s} {len(layers):6d} {size:6.2f}   {describe_layers(layers)}")
    print("  A REFERENCE holds the anchor's and the previous keyframe's stores (x2); the Keyframe Renderer peaks "
          "at about 2 stores + one step while a keyframe records its own. Target: <= 4 GB per keyframe (SDXL, "
          "default cfattn_depth 5).")


def main() -> int:
    args = parse_args()
    if args.stores_only:
        print_stores()
        return 0
    import torch

    with torch.inference_mode():  # as ComfyUI's executor runs every node
        return run(args)


def run(args) -> int:
    root = os.path.abspath(args.comfy_root)
    os.chdir(root)
    boot_comfy(root, args.threads, args.comfy_args)
    import comfy.controlnet
    import comfy.model_management
    import comfy.sd
    import folder_paths
    import nodes
    import torch

    from rerender_video.tests.keyframe_data import make_flow
    from rerender_video.keyframe.attention import LOOSE_BLOCKS, store_bytes
    from rerender_video.keyframe.plan import KeyframePlan
    from rerender_video.keyframe.settings import ConstraintSettings
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
    flow = make_flow(rgb, [(0, 1), (0, 2), (1, 2)], "benchmark")
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
                    pixel_fusion=True, cfattn_depth=args.cfattn_depth)

    def render_all(index, reference=None, resume=True, rough="full", **changes):
        return sampler_node.sample(model, *conds[index], vae, images, index, reference=reference, flow=flow,
                                   resume_pass2=resume, rough_render=rough, **dict(settings, **changes))

    def render(index, reference=None, resume=True, rough="full"):
        return render_all(index, reference, resume, rough)[2]

    def log(name, seconds):
        print(f"    {name}: {seconds:.1f} s", flush=True)

    t_anchor, anchor = timed(render, 0)
    log("anchor", t_anchor)
    t_key1, key1 = timed(render, 1, anchor)
    log("1st keyframe", t_key1)
    names = ("plain", "plain+vae", "key2", "key2 early", "key2 full")
    walls = {name: [] for name in names}
    cpus = {name: [] for name in names}
    for round_index in range(args.repeat):
        print(f"  round {round_index + 1}/{args.repeat}", flush=True)
        for name, function in (("plain", plain), ("key2", lambda: render(2, key1)), ("plain+vae", plain_with_vae),
                               ("key2 early", lambda: render(2, key1, rough="early")),
                               ("key2 full", lambda: render(2, key1, False))):
            if name == "key2 full" and args.skip_full:
                continue
            wall, cpu = timed_cpu(function)
            walls[name].append(wall)
            cpus[name].append(cpu)
            print(f"    {name}: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    t_encode, _ = timed(vae.encode, images[2:3])
    t_decode, _ = timed(vae.decode, latent["samples"])

    def later_steps(rough_render: str, resume: bool = True) -> int:
        return KeyframePlan(ConstraintSettings(rough_render=rough_render), args.steps, resume).steps(later=True)

    steps = {"plain": args.steps, "plain+vae": args.steps, "key2": later_steps("full"),
             "key2 early": later_steps("early"), "key2 full": later_steps("full", resume=False)}
    labels = {"plain": "plain KSampler", "plain+vae": "VAE Encode + KSampler + VAE Decode",
              "key2": "Cross-Frame Sampler, rough_render full", "key2 early": "Cross-Frame Sampler, rough_render early",
              "key2 full": "two full passes (the reference's scheme)"}
    print(f"\nPer-keyframe cost of the 2nd keyframe (distinct anchor and previous keyframe: 2N attention keys) "
          f"against one plain KSampler run. {args.repeat} interleaved rounds; ratios are taken within each round "
          "(both runs under the same load) and the median is reported. CPU = this process's CPU seconds: with "
          "--threads 1 it hardly depends on other jobs, so its ratio is the one to quote on a shared machine.")
    print(f"  {'':42s} {'steps':>5s} {'wall s':>7s} {'wall ratio':>11s} {'CPU s':>7s} {'CPU ratio':>10s}   wall ratio per round")
    for name in names:
        if not walls[name]:
            continue
        wall_ratios = [t / p for t, p in zip(walls[name], walls["plain"])]
        cpu_ratios = [t / p for t, p in zip(cpus[name], cpus["plain"])]
        print(f"  {labels[name]:42s} {steps[name]:5d} {min(walls[name]):7.1f} {statistics.median(wall_ratios):10.2f}x "
              f"{min(cpus[name]):7.1f} {statistics.median(cpu_ratios):9.2f}x   "
              + " ".join(f"{r:.2f}" for r in wall_ratios))
    print(f"  (one run each, not in the rounds) anchor {t_anchor:.1f} s wall = {t_anchor / min(walls['plain']):.2f}x; "
          f"1st keyframe (anchor = previous: N keys) {t_key1:.1f} s = {t_key1 / min(walls['plain']):.2f}x")
    print("  target <= 1.5x per keyframe (the reference: 2 full passes, 2x the model steps)")
    print(f"  VAE encode {t_encode:.2f} s, decode {t_decode:.2f} s at {args.size}x{args.size}; a keyframe runs "
          "3 encodes + 4 decodes (frame; rough render; E*: 2 encodes + 2 decodes; final)")

    if not args.skip_compare:
        compare_rough_renders(args, render_all, key1, flow)

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
