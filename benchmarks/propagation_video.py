#!/usr/bin/env python3
"""Video propagation speed and quality: temporal NNF initialisation on/off, blend cost (prints, no asserts).

Protocol (EbSynth anchor, propagation/ALGORITHM.md §18, over a whole chain): Megamind frames 1–11 (one shot),
resized to each ``--widths`` entry; a deterministic per-frame "style" ``f`` (cv2.stylization + 8-level
posterisation) gives ground truth for every frame; ``f(frame 0)`` is propagated forward to frames 1–10 with
Rerender's guides (colour 6, edge 0.5, positional 2, temporal 0.5) and schedule (p 5, 12 × 6), by
:func:`propagation.sequence.propagate_video` (fresh cache per run), with and without the temporal NNF
initialisation. Prints per setting: wall and CPU seconds per propagated frame (guides included; flow
excluded), PSNR/SSIM against ``f(frame d)`` at gaps 1, 2, 5, 10 and their mean over 1–10; then the temporal
blend's cost per frame (histogram blend, + Poisson).

Runs alternate the settings so that load from other processes hits both alike; CPU seconds (all threads) are
less sensitive to a shared machine than wall seconds. Figures are from whatever machine runs this: say so
when quoting them (the project's figures were taken on a shared 2-core VM).

Usage: ``python benchmarks/propagation_video.py [--widths 256 360] [--repeats 2] [--initial-nnf-levels 1]``;
for single-thread figures (steadier on a shared machine) prefix ``NUMBA_NUM_THREADS=1`` and pass ``--threads 1``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from rerender_cli import load_pack  # noqa: E402

load_pack()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from rerender_video.benchmarks import _anchor_protocol as protocol  # noqa: E402
from rerender_video.benchmarks._anchor_protocol import score_rgb, stylize_rgb  # noqa: E402
from rerender_video.common.keyframes import Keyframes  # noqa: E402
from rerender_video.flow.dis import DisFlow  # noqa: E402
from rerender_video.flow.estimate import estimate_flow  # noqa: E402
from rerender_video.flow.pairs import consecutive_pairs  # noqa: E402
from rerender_video.flow.warp import warp  # noqa: E402
from rerender_video.propagation.blend import blend_frame, select_backward  # noqa: E402
from rerender_video.propagation.params import SynthesisParams  # noqa: E402
from rerender_video.propagation.sequence import propagate_video  # noqa: E402
from rerender_video.propagation.synthesis import Guide, synthesize  # noqa: E402
from rerender_video.videoio.reader import load_frames  # noqa: E402

VIDEO, GAPS = protocol.VIDEO, protocol.GAPS


def run_chain(frames, styled, flow, temporal_nnf_init: bool, params: SynthesisParams):
    with tempfile.TemporaryDirectory() as cache:
        os.environ["RERENDER_CACHE_DIR"] = cache
        wall, cpu = time.perf_counter(), time.process_time()
        result = propagate_video(frames, torch.from_numpy(styled[[0]]), Keyframes((0,), len(frames)), flow,
                                 params, temporal_nnf_init=temporal_nnf_init)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    count = len(frames) - 1
    outputs = [styled[0]] + [result.candidate(gap, "forward")[0] for gap in range(1, len(frames))]
    quality = {gap: score_rgb(outputs[gap], styled[gap]) for gap in range(1, len(frames))}
    return wall / count, cpu / count, quality, temporal_change(outputs, flow)


def temporal_change(images, flow) -> float:
    """Mean |out_j − warp(out_{j−1})| over visible pixels, in 8-bit units: flicker not explained by motion."""
    changes = []
    for target in range(1, len(images)):
        step_flow, occlusion = flow.between(target - 1, target)
        previous = torch.from_numpy(np.ascontiguousarray(images[target - 1])).permute(2, 0, 1)[None]
        warped = warp(previous, step_flow[None])[0].permute(1, 2, 0).numpy()
        visible = occlusion.numpy() < 0.5
        changes.append(np.abs(images[target] - warped)[visible].mean() * 255)
    return float(np.mean(changes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 360])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--search-vote-iters", type=int, default=12)
    parser.add_argument("--patchmatch-iters", type=int, default=6)
    parser.add_argument("--initial-nnf-levels", type=int, default=SynthesisParams().initial_nnf_levels,
                        help="finest pyramid levels run when the NNF is initialised from the previous frame")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = keep)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    params = SynthesisParams(search_vote_iters=args.search_vote_iters, patchmatch_iters=args.patchmatch_iters,
                             initial_nnf_levels=args.initial_nnf_levels)
    print(f"torch threads {torch.get_num_threads()}, CPUs {os.cpu_count()}; schedule "
          f"{params.search_vote_iters}x{params.patchmatch_iters}, initial_nnf_levels {params.initial_nnf_levels}, "
          f"numba threads {os.environ.get('NUMBA_NUM_THREADS', 'default')}; shared machines give noisy wall times")

    flow_cache = tempfile.mkdtemp(prefix="rerender-bench-flow-")
    warm = torch.rand(32, 32, 3)  # JIT-compile the backend before timing
    synthesize(warm, [Guide(warm, warm, 1.0)], SynthesisParams(search_vote_iters=1))
    for width in args.widths:
        frames = load_frames(VIDEO, frame_load_cap=11, skip_first_frames=1, custom_width=width).images
        height = frames.shape[1]
        styled = np.stack([stylize_rgb(frame) for frame in frames.numpy()])
        os.environ["RERENDER_CACHE_DIR"] = flow_cache
        flow = estimate_flow(frames, consecutive_pairs(len(frames)), DisFlow("medium"))
        runs = {True: [], False: []}
        for _ in range(args.repeats):
            for setting in (True, False):
                runs[setting].append(run_chain(frames, styled, flow, setting, params))
        copy = {gap: score_rgb(styled[0], styled[gap])[0] for gap in GAPS}
        truth_change = temporal_change(list(styled), flow)
        print(f"\n{width}x{height}, chain of 10 frames, {args.repeats} run(s) per setting "
              f"(copy-the-keyframe PSNR: " + ", ".join(f"gap {g} {copy[g]:.2f}" for g in GAPS) + ")")
        for setting, label in ((True, "temporal NNF init ON "), (False, "temporal NNF init OFF")):
            wall = statistics.median(run[0] for run in runs[setting])
            cpu = statistics.median(run[1] for run in runs[setting])
            quality = runs[setting][0][2]
            mean_psnr = statistics.mean(q[0] for q in quality.values())
            mean_ssim = statistics.mean(q[1] for q in quality.values())
            per_gap = ", ".join(f"gap {g} {quality[g][0]:.2f} dB / {quality[g][1]:.4f}" for g in GAPS)
            change = runs[setting][0][3]
            print(f"  {label}: {wall:.2f} s wall, {cpu:.2f} s CPU per frame; {per_gap}; "
                  f"mean 1-10 {mean_psnr:.2f} dB / {mean_ssim:.4f}; frame-to-frame change after motion "
                  f"{change:.2f} (ground truth {truth_change:.2f})")
        on = statistics.median(run[0] for run in runs[True])
        off = statistics.median(run[0] for run in runs[False])
        print(f"  speed-up of the NNF init (wall): {off / on:.2f}x")

        error = np.ones(styled.shape[1:3], np.float32)
        selection = select_backward(error, error * 1.1, 0.5)
        blend_frame(styled[2], styled[8], selection, 0.5, histogram=True, poisson=True)  # warm-up
        for poisson in (False, True):
            started = time.perf_counter()
            for _ in range(5):
                blend_frame(styled[2], styled[8], selection, 0.5, histogram=True, poisson=poisson)
            label = "histogram + Poisson" if poisson else "histogram"
            print(f"  blend ({label}): {(time.perf_counter() - started) / 5 * 1000:.0f} ms per frame")
    shutil.rmtree(flow_cache, ignore_errors=True)


if __name__ == "__main__":
    main()
