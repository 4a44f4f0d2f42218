#!/usr/bin/env python3
"""Cost of a masked keyframe render against the unmasked one (issue 16), ComfyUI in-process.

Renders the anchor (Megamind frame 30) and one later keyframe (frame 40, every constraint on) with
:func:`keyframe.render.render_keyframe` through the pack's ComfyUI adapter, once without a mask and once
with a region mask (the brightest fifth of the anchor frame, ``mask_grow`` and ``feather`` at their
defaults), in interleaved rounds A B B A …, and prints the masked/unmasked ratio of the median wall time
and of this process's CPU time. The UNet still runs on the whole latent (the region only decides what is
kept after each step), so the ratio should be about 1; the region's own work is the grow / feather
distance transforms and a few latent-sized blends per step. Extra memory: the pixel weight ``[1,H,W]``
and the latent weight ``[1,1,h,w]`` float32 per keyframe.

Run with ComfyUI's Python (``--threads 1`` on a shared machine: a single-threaded process's CPU time
hardly depends on the other jobs):
    COMFYUI_ROOT=/path/to/ComfyUI /path/to/comfy-venv/bin/python benchmarks/keyframe_region.py \
        --ckpt /path/to/tiny_sd15_sd15layout_taesd.safetensors [--size 128] [--steps 10] [--threads 1]

The random-weight checkpoint comes from the harness's ``make_tiny_sd15.py --preset sd15layout --vae taesd``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from _comfy_in_process import PACK_ROOT, boot_comfy  # this folder is on sys.path when the script runs
FRAMES = (30, 40)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--comfy-root", default=os.environ.get("COMFYUI_ROOT"))
    parser.add_argument("--ckpt", required=True, help="path of an SD1.5-layout checkpoint")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--rounds", type=int, default=2, help="ABBA rounds (each renders both variants twice)")
    args = parser.parse_args()
    if not args.comfy_root:
        parser.error("set COMFYUI_ROOT or --comfy-root")
    return args


def main() -> int:
    args = parse_args()
    boot_comfy(args.comfy_root, args.threads)
    import comfy.sd
    import nodes
    import numpy as np
    import torch

    from rerender_video.keyframe.render import render_keyframe
    from rerender_video.keyframe.settings import ConstraintSettings
    from rerender_video.nodes._keyframe_adapter import ComfyModelAdapter
    from rerender_video.tests.keyframe_data import make_flow, megamind_squares

    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(args.ckpt, output_vae=True, output_clip=True)
    positive = nodes.CLIPTextEncode().encode(clip, "a watercolor painting of a woman")[0]
    negative = nodes.CLIPTextEncode().encode(clip, "blurry, low quality")[0]
    rgb = megamind_squares(PACK_ROOT / "tests" / "data" / "Megamind.avi", FRAMES, args.size)
    images = torch.from_numpy(np.stack(rgb)).float() / 255
    flow = make_flow(rgb, [(0, 1)], "benchmark")
    luma = images[0].mean(-1)
    mask = (luma > torch.quantile(luma, 0.8)).float()[None]
    adapter = ComfyModelAdapter(model, positive, negative, vae, 3, args.steps, 7.0, "ddim", "ddim_uniform", 0.75)
    settings = ConstraintSettings()

    def render(masked: bool) -> None:
        options = {"mask": mask} if masked else {}
        anchor = render_keyframe(adapter, images[:1], 0, settings=settings, **options)
        render_keyframe(adapter, images[1:2], 1, anchor.reference, flow, settings, **options)

    render(False)  # warm-up: model load, first-call allocations
    times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    with torch.inference_mode():
        for _ in range(args.rounds):
            for masked in (False, True, True, False):
                wall, cpu = time.perf_counter(), time.process_time()
                render(masked)
                times[masked].append((time.perf_counter() - wall, time.process_time() - cpu))
    wall = {key: statistics.median(t[0] for t in value) for key, value in times.items()}
    cpu = {key: statistics.median(t[1] for t in value) for key, value in times.items()}
    print(f"anchor + 1 keyframe, {args.size}x{args.size}, {args.steps} steps, threads {torch.get_num_threads()}, "
          f"region {float(mask.mean()):.0%} of the frame, {args.rounds} ABBA rounds (medians)")
    print(f"  unmasked: wall {wall[False]:.2f} s, CPU {cpu[False]:.2f} s")
    print(f"  masked:   wall {wall[True]:.2f} s, CPU {cpu[True]:.2f} s")
    print(f"  masked / unmasked: wall {wall[True] / wall[False]:.3f}, CPU {cpu[True] / cpu[False]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
