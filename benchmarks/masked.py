#!/usr/bin/env python3
"""Masked against unmasked propagation: time and memory on the same clip (issue 16).

Clip: the bundled Megamind.avi, frames 1 … ``--frames`` (one shot) at ``--width`` px wide, keyframes every
``--interval`` frames stylized by the anchor protocol's filter (:mod:`benchmarks._anchor_protocol`), DIS flow
of consecutive pairs computed once (the same for every run, not timed). One run = EbSynth Propagate + Temporal
Blend (:func:`propagation.sequence.propagate_video` + :func:`propagation.blend.blend_video`, Rerender's
synthesis schedule), with an empty propagation cache, on the CPU backend:

* ``unmasked``: the whole frame;
* ``small``: a box of about 1/9 of the frame (the middle third of each side), one mask per frame;
* ``large``: the right two thirds of the frame.

Grow 8 px and feather 8 px (the defaults). The runs alternate in one process, ``A B C C B A`` repeated
``--repeats`` times after a warm-up (numba compiles once); per variant it prints the median CPU seconds of the
process (all threads), wall seconds and the peak RSS above the process's RSS before the run (sampled every
10 ms; coarse at small sizes: the allocator reuses memory the process already holds), then, in one more run
per variant under ``tracemalloc`` (not timed), the peak of the memory NumPy and Python allocated during the run
(the frames' candidates, errors, guides and pyramids are NumPy arrays), and the ratios to ``unmasked``.
Example::

    python benchmarks/masked.py --frames 25 --width 256 --interval 12 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from rerender_cli import load_pack  # noqa: E402

load_pack()

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402

from rerender_video.benchmarks._anchor_protocol import VIDEO, stylize_rgb  # noqa: E402
from rerender_video.common.keyframes import uniform  # noqa: E402
from rerender_video.flow.dis import DisFlow  # noqa: E402
from rerender_video.flow.estimate import estimate_flow  # noqa: E402
from rerender_video.flow.pairs import consecutive_pairs  # noqa: E402
from rerender_video.propagation.blend import blend_video  # noqa: E402
from rerender_video.propagation.params import SynthesisParams  # noqa: E402
from rerender_video.propagation.sequence import propagate_video  # noqa: E402
from rerender_video.videoio.reader import load_frames  # noqa: E402


def masks_for(kind: str, count: int, height: int, width: int) -> torch.Tensor | None:
    if kind == "unmasked":
        return None
    masks = torch.zeros(count, height, width)
    if kind == "small":
        masks[:, height // 3:2 * height // 3, width // 3:2 * width // 3] = 1
    else:
        masks[:, :, width // 3:] = 1
    return masks


def one_run(frames, keys, keyframes, flow, params, mask) -> tuple[float, float, int]:
    process = psutil.Process()
    before, peak, running = process.memory_info().rss, [0], [True]

    def sample() -> None:
        while running[0]:
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["RERENDER_CACHE_DIR"] = cache
        sampler.start()
        wall, cpu = time.perf_counter(), time.process_time()
        propagation = propagate_video(frames, keys, keyframes, flow, params, backend="cpu", mask=mask)
        blend_video(propagation)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        running[0] = False
        sampler.join()
    return cpu, wall, max(peak[0] - before, 0)


def traced_peak(frames, keys, keyframes, flow, params, mask) -> int:
    """Peak bytes NumPy and Python allocate during one run (``tracemalloc``)."""
    with tempfile.TemporaryDirectory() as cache:
        os.environ["RERENDER_CACHE_DIR"] = cache
        tracemalloc.start()
        propagation = propagate_video(frames, keys, keyframes, flow, params, backend="cpu", mask=mask)
        blend_video(propagation)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=25)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--interval", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--fast", action="store_true", help="2 × 2 iterations (a trend check, not the figure)")
    args = parser.parse_args()

    frames = load_frames(VIDEO, frame_load_cap=args.frames, skip_first_frames=1, custom_width=args.width).images
    count, height, width = frames.shape[:3]
    keyframes = uniform(count, args.interval)
    keys = torch.from_numpy(np.stack([stylize_rgb(frames[key].numpy()) for key in keyframes.indices]))
    with tempfile.TemporaryDirectory() as cache:
        os.environ["RERENDER_CACHE_DIR"] = cache
        flow = estimate_flow(frames, consecutive_pairs(count), DisFlow("medium"))
    params = SynthesisParams(search_vote_iters=2, patchmatch_iters=2) if args.fast else SynthesisParams()
    kinds = ("unmasked", "small", "large")
    masks = {kind: masks_for(kind, count, height, width) for kind in kinds}
    print(f"{count} frames at {width}x{height}, keyframes {list(keyframes.indices)}, "
          f"{'fast schedule' if args.fast else 'Rerender schedule'}, torch threads {torch.get_num_threads()}, "
          f"load {os.getloadavg()[0]:.2f}")
    warm_up = SynthesisParams(search_vote_iters=1, patchmatch_iters=1)
    one_run(frames, keys, keyframes, flow, warm_up, masks["small"])  # numba compiles here
    results: dict[str, list[tuple[float, float, int]]] = {kind: [] for kind in kinds}
    for _ in range(args.repeats):
        for kind in (*kinds, *reversed(kinds)):
            results[kind].append(one_run(frames, keys, keyframes, flow, params, masks[kind]))
            cpu, wall, peak = results[kind][-1]
            print(f"  {kind:9s} cpu {cpu:7.1f} s  wall {wall:7.1f} s  peak +{peak / 2**20:6.0f} MiB", flush=True)
    median = {kind: [statistics.median(run[i] for run in results[kind]) for i in range(3)] for kind in kinds}
    traced = {kind: traced_peak(frames, keys, keyframes, flow, params, masks[kind]) for kind in kinds}
    base = median["unmasked"]
    for kind in kinds:
        cpu, wall, peak = median[kind]
        area = 1.0 if masks[kind] is None else float(masks[kind].mean())
        print(f"{kind:9s} (region {area:5.1%} of the frame): cpu {cpu:7.1f} s  wall {wall:7.1f} s  "
              f"RSS +{peak / 2**20:4.0f} MiB  traced peak {traced[kind] / 2**20:6.1f} MiB | ratio to unmasked: "
              f"cpu {cpu / base[0]:.2f}  wall {wall / base[1]:.2f}  traced peak "
              f"{traced[kind] / traced['unmasked']:.2f}")
    print(f"load at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
