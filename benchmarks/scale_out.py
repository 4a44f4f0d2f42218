#!/usr/bin/env python3
"""Scale-out: frames per second of propagation + blend with the local executor and with Ray workers.

Clip: the bundled Megamind.avi, ``--frames`` frames from ``--skip`` at ``--width`` px wide; keyframes every
``--interval`` frames, stylized by the anchor protocol's filter (:mod:`benchmarks._anchor_protocol`); default
synthesis settings. Three configurations, each a whole :func:`segments.engine.propagate_to_video` run from the
file to an mp4 with an empty segment store, run alternately (A B C C B A …, ``--repeats`` rounds) in one
process after a warm-up of each (numba compiles once per process, Ray workers start once):

* ``local``: the local executor, synthesis and torch on one thread;
* ``ray x1``: a local Ray (2 CPUs), one single-thread task at a time (``max_in_flight`` 1);
* ``ray x2``: the same Ray, two single-thread tasks at once (``max_in_flight`` 3).

Prints wall seconds and frames per second per run, the medians, and the ratios: ray x1 / local (target: within
10 %) and ray x2 / ray x1 (target: ≥ 1.8 on an otherwise idle 2-core machine), the seconds per segment of one
worker, and the throughput that implies for N workers (N × one worker's rate × the measured two-worker
efficiency), e.g. N GPUs. Wall time is the measure here (scale-out is about wall time); the machine's load
average is printed before and after, since other work on the cores lowers the x2 ratio.

    python benchmarks/scale_out.py                       # about 5 min on a 2-core machine
    python benchmarks/scale_out.py --frames 96 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from rerender_cli import load_pack  # noqa: E402

load_pack()

import numba  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from rerender_video.benchmarks._anchor_protocol import VIDEO, stylize_rgb  # noqa: E402
from rerender_video.common.keyframes import uniform  # noqa: E402
from rerender_video.segments.engine import propagate_to_video  # noqa: E402
from rerender_video.segments.executors import make_executor  # noqa: E402
from rerender_video.segments.job import SegmentSettings  # noqa: E402
from rerender_video.videoio.frame_index import index_video  # noqa: E402
from rerender_video.videoio.reader import load_frames  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--skip", type=int, default=100, help="first source frame (100: inside one shot)")
    parser.add_argument("--width", type=int, default=192)
    parser.add_argument("--interval", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1, help="rounds of A B C C B A")
    args = parser.parse_args()

    widgets = dict(frame_load_cap=args.frames, skip_first_frames=args.skip, custom_width=args.width)
    frames = load_frames(VIDEO, **widgets).images
    keyframes = uniform(frames.shape[0], args.interval)
    styles = torch.from_numpy(np.stack([stylize_rgb(frame) for frame in frames[list(keyframes.indices)].numpy()]))
    segments = len(keyframes.indices)  # two-sided segments + the tail
    numba.set_num_threads(1)
    torch.set_num_threads(1)
    ray_executor = make_executor("ray", ray_address="local", cpus_per_task=1)
    configs = {"local": ("local", None), "ray x1": (ray_executor, 1), "ray x2": (ray_executor, 3)}
    work = Path(tempfile.mkdtemp(prefix="scale_out_"))
    runs = 0

    def once(name: str) -> float:
        nonlocal runs
        runs += 1
        executor, in_flight = configs[name]
        os.environ["RERENDER_CACHE_DIR"] = str(work / f"cache{runs}")  # an empty store: every segment computed
        started = time.perf_counter()
        propagate_to_video(index_video(VIDEO, **widgets), styles, keyframes, work / f"out{runs}.mp4",
                           SegmentSettings(), executor=executor, max_in_flight=in_flight)
        return time.perf_counter() - started

    print(f"{frames.shape[0]} frames at {frames.shape[2]}x{frames.shape[1]}, keyframes every {args.interval} "
          f"({segments} segments); load average before: {os.getloadavg()[0]:.2f}")
    for name in configs:
        print(f"warm-up {name}: {once(name):.1f} s", flush=True)
    seconds: dict[str, list[float]] = {name: [] for name in configs}
    order = list(configs) + list(reversed(configs))
    for _ in range(args.repeats):
        for name in order:
            seconds[name].append(once(name))
            print(f"{name:7s} {seconds[name][-1]:6.1f} s  {frames.shape[0] / seconds[name][-1]:.2f} frames/s",
                  flush=True)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    per_segment = median["ray x1"] / segments
    efficiency = median["ray x1"] / median["ray x2"] / 2
    print("median frames/s: " + ", ".join(f"{name} {frames.shape[0] / value:.2f}" for name, value in median.items()))
    print(f"ray x1 / local (wall): {median['ray x1'] / median['local']:.3f}   (target ≤ 1.10)")
    print(f"speed-up ray x2 / ray x1: {median['ray x1'] / median['ray x2']:.2f}   (target ≥ 1.8)")
    print(f"one worker: {per_segment:.2f} s per segment; N workers: about {efficiency:.2f} × N × "
          f"{frames.shape[0] / median['ray x1']:.2f} frames/s (two-worker efficiency {efficiency:.2f})")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    ray_executor.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
