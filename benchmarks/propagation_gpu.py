#!/usr/bin/env python3
"""Synthesis speed per frame on a backend (``cuda``, ``host`` or ``cpu``) and its agreement with the CPU backend.

Protocol: Megamind frames 31 (keyframe) and 34 (target, same shot) resized to S×S for each ``--sizes`` entry;
a deterministic "style" (posterised, channel-rotated keyframe); Rerender's colour (6), edge (0.5) and
positional (2, identity grid on both sides) guides; Rerender's schedule (p 5, 12 × 6, λ 3500, stop threshold 5)
unless overridden. Two modes per size:

* ``full``: the whole pyramid from a random NNF (a keyframe-distance frame, no temporal NNF init);
* ``temporal``: finest level only, started from the previous result's NNF (what every frame after the first
  costs in a video with the temporal NNF initialisation, the default).

Prints seconds per frame (median of ``--repeats``, after a warm-up that compiles the kernels) and, with
``--compare`` (default ``cpu``), whether NNF, image and error map are bit-identical to that backend's.

``--backend cuda`` needs a CUDA device and CuPy; without them it prints why (with the ``pip install`` line)
and exits with status 2. ``--backend host`` runs the very same kernels compiled for the CPU (g++), which
checks the path end to end on a machine without a GPU (slow: it is a 2-core CPU run). Figures are from
whatever machine runs this; say which (GPU model, shared or not) when quoting them.

Usage: ``python benchmarks/propagation_gpu.py --backend cuda [--sizes 512 1024] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from rerender_cli import load_pack  # noqa: E402

load_pack()

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from rerender_video.benchmarks import _anchor_protocol as protocol  # noqa: E402
from rerender_video.common.errors import InputError  # noqa: E402
from rerender_video.propagation.backends.select import choose_backend  # noqa: E402
from rerender_video.propagation.guides import coordinate_grid, edge_image  # noqa: E402
from rerender_video.propagation.params import SynthesisParams  # noqa: E402
from rerender_video.propagation.synthesis import Guide, synthesize  # noqa: E402
from rerender_video.videoio.reader import load_frames  # noqa: E402

VIDEO = protocol.VIDEO


def inputs(size: int):
    frames = load_frames(VIDEO, frame_load_cap=4, skip_first_frames=31).images.numpy()
    key, target = (cv2.resize(frames[i], (size, size), interpolation=cv2.INTER_AREA) for i in (0, 3))
    style = np.floor(key[..., [2, 0, 1]] * 6.0) / 6.0 + 0.08
    grid = coordinate_grid(size, size)
    as_tensor = lambda array: torch.from_numpy(np.ascontiguousarray(np.clip(array, 0, 1), dtype=np.float32))
    guides = [Guide(as_tensor(key), as_tensor(target), 6.0),
              Guide(as_tensor(edge_image(key)), as_tensor(edge_image(target)), 0.5),
              Guide(as_tensor(grid), as_tensor(grid), 2.0)]
    return as_tensor(style), guides


def timed(backend: str, style, guides, params, initial_nnf=None, repeats: int = 1):
    times, result = [], None
    for _ in range(repeats):
        if backend == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        result = synthesize(style, guides, params, initial_nnf=initial_nnf, backend=backend)
        times.append(time.perf_counter() - started)   # the result is on the host: the GPU work is done
    return statistics.median(times), result


def agreement(result, reference) -> str:
    same = [torch.equal(result.nnf, reference.nnf), torch.equal(result.image, reference.image),
            torch.equal(result.error, reference.error)]
    if all(same):
        return "bit-identical (NNF, image, error)"
    nnf_diff = int((result.nnf != reference.nnf).any(dim=2).sum())
    image_diff = float((result.image - reference.image).abs().max()) * 255
    return (f"DIFFERENT: {nnf_diff} NNF entries, image max |diff| {image_diff:.1f}/255, "
            f"error equal {same[2]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("cuda", "host", "cpu", "auto"), default="cuda")
    parser.add_argument("--compare", choices=("cpu", "host", "none"), default="cpu",
                        help="backend whose output the measured one is compared with")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", nargs="+", choices=("full", "temporal"), default=["full", "temporal"])
    parser.add_argument("--search-vote-iters", type=int, default=12)
    parser.add_argument("--patchmatch-iters", type=int, default=6)
    args = parser.parse_args()
    try:
        choice = choose_backend(args.backend)
    except InputError as error:
        print(f"cannot run backend {args.backend!r} here: {error}")
        return 2
    params = SynthesisParams(search_vote_iters=args.search_vote_iters, patchmatch_iters=args.patchmatch_iters)
    device = torch.cuda.get_device_name() if choice.name == "cuda" else f"CPU, {os.cpu_count()} cores"
    print(f"backend {choice} on {device}; schedule {params.search_vote_iters}x{params.patchmatch_iters}, "
          f"p {params.patch_size}; median of {args.repeats}; figures depend on the machine (shared machines "
          f"give noisy wall times)")
    warm_style, warm_guides = inputs(64)
    timed(choice.name, warm_style, warm_guides, SynthesisParams(search_vote_iters=1))     # compile kernels
    if args.compare != "none":
        timed(args.compare, warm_style, warm_guides, SynthesisParams(search_vote_iters=1))
    for size in args.sizes:
        style, guides = inputs(size)
        seconds, full = timed(choice.name, style, guides, params, repeats=args.repeats if "full" in args.modes else 1)
        lines = []
        if "full" in args.modes:
            lines.append(("full pyramid", seconds, full, None))
        if "temporal" in args.modes:
            seconds, result = timed(choice.name, style, guides, params, initial_nnf=full.nnf, repeats=args.repeats)
            lines.append(("finest level from an NNF", seconds, result, full.nnf))
        for label, seconds, result, initial in lines:
            text = f"{size}x{size} {label}: {seconds:.3f} s per frame"
            if args.compare != "none" and args.compare != choice.name:
                reference_seconds, reference = timed(args.compare, style, guides, params, initial_nnf=initial)
                text += (f"; {args.compare}: {reference_seconds:.3f} s (one run), speed-up "
                         f"{reference_seconds / seconds:.1f}x; output vs {args.compare}: {agreement(result, reference)}")
            print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
