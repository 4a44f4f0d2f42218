#!/usr/bin/env python3
"""Long videos: peak memory of the segment engine at two lengths, and its speed against the in-RAM path.

Clips: the bundled Megamind.avi loaded at ``--size``² (cover + centre crop) and played forward and backward in
turn (0 … 269, 268 … 1, 0 …) to ``--short`` and to ``--frames`` frames (the short clip is the long one's start),
each written once as an H.264 mp4 (CRF 18) in ``--workdir``.
Keyframes every ``--interval`` frames, stylized by the anchor protocol's filter (``cv2.stylization`` +
posterisation, :mod:`benchmarks._anchor_protocol`) and stored as PNG files named by frame, as a user's
keyframe folder; the engine reads them one at a time (:class:`propagation.keyframe_files.KeyframeFolder`).

Prints:

1. **Peak RSS** of the engine (``propagate_to_video`` from the clip file to an mp4, default settings) on the
   short and the long clip, each in a fresh subprocess with an empty cache
   (``ru_maxrss``: everything the process ever held, Python, torch and numba's compiler included), and their
   ratio. Targets: ratio ≤ 1.1 and ≤ 1.5 GB at 4,000 frames.
2. **Seconds per output frame**, engine and in-RAM path (Load Video → Estimate Flow → EbSynth Propagate →
   Temporal Blend → Save Video, the library functions the nodes call) on the short clip, run alternately
   ``--repeats`` times in one process (ABBA order) after a warm-up (numba compiles once), each with an empty cache: CPU
   seconds of the process (all threads) and wall seconds, and engine / in-RAM. Target: within 5 %.
3. With ``--segment-memory``: the memory one held segment adds (RSS sampled while it runs) at keyframe
   intervals 6 and 24, against :func:`segments.memory.segment_bytes` — how ``WORK_BYTES`` was set.

The full measurement (about 30–60 min of CPU at 256² on a 2-core machine)::

    python benchmarks/long_video.py --frames 4000 --short 400 --size 256

A quicker look at the memory trend: ``--frames 1200 --skip-timing``; ``--fast`` shortens the synthesis schedule
(2 × 2 iterations) for trend checks only, never for the speed figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from rerender_cli import load_pack  # noqa: E402

load_pack()

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402

from rerender_video.benchmarks._anchor_protocol import VIDEO, stylize_rgb  # noqa: E402
from rerender_video.common.keyframes import from_indices, uniform  # noqa: E402
from rerender_video.flow.estimate import estimate_flow  # noqa: E402
from rerender_video.flow.pairs import consecutive_pairs  # noqa: E402
from rerender_video.propagation.blend import blend_video  # noqa: E402
from rerender_video.propagation.keyframe_files import KeyframeFolder, load_keyframe_folder  # noqa: E402
from rerender_video.propagation.params import SynthesisParams  # noqa: E402
from rerender_video.propagation.sequence import propagate_video  # noqa: E402
from rerender_video.segments.engine import propagate_to_video  # noqa: E402
from rerender_video.segments.job import SegmentJob, SegmentSettings, run_segment  # noqa: E402
from rerender_video.segments.memory import segment_bytes  # noqa: E402
from rerender_video.segments.plan import plan_segments  # noqa: E402
from rerender_video.videoio.frame_index import index_video, read_frames  # noqa: E402
from rerender_video.videoio.reader import load_frames  # noqa: E402
from rerender_video.videoio.writer import save_video, to_uint8  # noqa: E402


def settings(fast: bool) -> SegmentSettings:
    return SegmentSettings(SynthesisParams(search_vote_iters=2, patchmatch_iters=2) if fast else SynthesisParams())


def make_clip(workdir: Path, frames: int, size: int, interval: int) -> tuple[Path, Path]:
    """The palindrome clip and its keyframe folder (made once per frames/size/interval)."""
    clip, keys = workdir / f"megamind_{frames}_{size}.mp4", workdir / f"keys_{frames}_{size}_{interval}"
    if not clip.exists():
        source = to_uint8(load_frames(VIDEO, custom_width=size, custom_height=size).images).numpy()
        order = np.concatenate([np.arange(len(source)), np.arange(len(source) - 2, 0, -1)])
        save_video((source[order[number % len(order)]] for number in range(frames)), clip, 24, crf=18)
    if not keys.exists():
        index = index_video(clip)
        staging = Path(tempfile.mkdtemp(dir=workdir))
        for key in range(0, frames, interval):
            styled = stylize_rgb(read_frames(index, [key])[0] / 255.0)
            cv2.imwrite(str(staging / f"{key:05d}.png"),
                        cv2.cvtColor(np.rint(styled * 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
        staging.rename(keys)
    return clip, keys


def run_engine(clip: Path, keys: Path, frames: int, fast: bool, output: Path) -> None:
    index = index_video(clip, frame_load_cap=frames)  # the whole clip: frames = its length
    images = KeyframeFolder(keys, frame_count=index.frame_count)
    propagate_to_video(index, images, from_indices(images.indices, index.frame_count), output, settings(fast))


def run_in_ram(clip: Path, keys: Path, frames: int, fast: bool, output: Path) -> None:
    chosen = settings(fast)
    video = load_frames(clip, frame_load_cap=frames)
    images, indices = load_keyframe_folder(keys, 0, video.frame_count)
    flow = estimate_flow(video.images, consecutive_pairs(video.frame_count), chosen.flow)
    propagation = propagate_video(video.images, images, from_indices(indices, video.frame_count), flow,
                                  chosen.params, chosen.weights)
    blended, _ = blend_video(propagation)
    save_video(blended, output, video.fps, audio_source=video.info)


def timed(run, *args) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as cache:
        os.environ["RERENDER_CACHE_DIR"] = cache
        wall, cpu = time.perf_counter(), time.process_time()
        run(*args, Path(cache) / "out.mp4")
        return time.process_time() - cpu, time.perf_counter() - wall


def child(args: argparse.Namespace) -> None:
    """``--child engine``: one engine run on the clip of ``--child-frames``; prints JSON (peak RSS, seconds)."""
    clip, keys = make_clip(args.workdir, args.child_frames, args.size, args.interval)
    cpu, wall = timed(run_engine, clip, keys, args.child_frames, args.fast)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"frames": args.child_frames, "peak_rss": peak, "cpu": cpu, "wall": wall}))


def peak_in_subprocess(args: argparse.Namespace, frames: int) -> dict:
    make_clip(args.workdir, frames, args.size, args.interval)  # made here: the child measures the engine only
    command = [sys.executable, __file__, "--child", "engine", "--child-frames", str(frames),
               "--size", str(args.size), "--interval", str(args.interval), "--workdir", str(args.workdir)]
    command += ["--fast"] if args.fast else []
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def segment_memory(args: argparse.Namespace, clip: Path) -> None:
    """RSS added by one held two-sided segment (sampled while it runs), against the estimate."""
    index = index_video(clip)
    height, width = index.frame_size
    for interval in (2, 6, 12, 24):  # the first is a warm-up: numba compiles then
        keyframes = uniform(index.frame_count, interval)
        plan = plan_segments(keyframes)[0]
        styles = {chain.key: np.full((height, width, 3), 0.5, np.float32) for chain in plan.chains}
        job = SegmentJob(index, plan, styles, settings(args.fast))
        with tempfile.TemporaryDirectory() as cache:
            os.environ["RERENDER_CACHE_DIR"] = cache
            process, peak, running = psutil.Process(), [0], [True]
            before = process.memory_info().rss

            def sample() -> None:
                while running[0]:
                    peak[0] = max(peak[0], process.memory_info().rss)
                    time.sleep(0.005)

            sampler = threading.Thread(target=sample)
            sampler.start()
            for _ in run_segment(job):
                pass
            running[0] = False
            sampler.join()
        added = peak[0] - before
        if interval == 2:
            continue
        estimate = segment_bytes(plan, height, width, 16)
        print(f"segment of K={interval} ({len(plan.loaded)} frames decoded) at {width}x{height}: adds "
              f"{added / 2**20:.0f} MiB, estimate {estimate / 2**20:.0f} MiB "
              f"({added / (height * width):.0f} vs {estimate / (height * width):.0f} bytes per pixel)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=4000, help="length of the long clip")
    parser.add_argument("--short", type=int, default=400, help="length of the short clip (a prefix of the long one)")
    parser.add_argument("--size", type=int, default=256, help="frame side in pixels (square)")
    parser.add_argument("--interval", type=int, default=12, help="keyframe interval K")
    parser.add_argument("--repeats", type=int, default=2, help="alternating engine / in-RAM pairs for the timing")
    parser.add_argument("--fast", action="store_true", help="2 x 2 synthesis iterations (memory trend checks only)")
    parser.add_argument("--skip-timing", action="store_true", help="only the memory figures")
    parser.add_argument("--skip-memory", action="store_true", help="only the timing figures")
    parser.add_argument("--segment-memory", action="store_true", help="only the per-segment memory calibration")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "rerender_long_video")
    parser.add_argument("--child", choices=["engine"], help=argparse.SUPPRESS)
    parser.add_argument("--child-frames", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.child:
        child(args)
        return
    logging.getLogger("rerender_video.propagation.keyframe_files").setLevel(logging.ERROR)
    clip, keys = make_clip(args.workdir, args.short, args.size, args.interval)
    print(f"clips of {args.short} and {args.frames} frames at {args.size}x{args.size} in {args.workdir}, keyframes "
          f"every {args.interval}{' (fast schedule)' if args.fast else ''}; load average {os.getloadavg()[0]:.2f}")
    if args.segment_memory:
        segment_memory(args, clip)
        return
    if not args.skip_memory:
        memory_figures(args)
    if not args.skip_timing:
        timing_figures(args, clip, keys)


def memory_figures(args: argparse.Namespace) -> None:
    short, long = (peak_in_subprocess(args, frames) for frames in (args.short, args.frames))
    for run in (short, long):
        print(f"engine, {run['frames']} frames: peak RSS {run['peak_rss'] / 2**20:.0f} MiB, "
              f"{run['cpu'] / run['frames']:.3f} CPU s and {run['wall'] / run['frames']:.3f} wall s per frame")
    print(f"peak RSS {args.frames} / {args.short} frames: {long['peak_rss'] / short['peak_rss']:.3f} "
          f"(target <= 1.1; and <= 1.5 GB: {long['peak_rss'] / 1e9:.2f} GB)")


def timing_figures(args: argparse.Namespace, clip: Path, keys: Path) -> None:
    timed(run_engine, clip, keys, min(args.short, 2 * args.interval + 1), args.fast)  # warm-up: numba compiles
    figures = {"engine": [], "in-RAM": []}
    runners = {"engine": run_engine, "in-RAM": run_in_ram}
    for repeat in range(args.repeats):  # ABBA order: a drift in the machine's load hits both alike
        for name in (("engine", "in-RAM") if repeat % 2 == 0 else ("in-RAM", "engine")):
            figures[name].append(timed(runners[name], clip, keys, args.short, args.fast))
    for name, runs in figures.items():
        cpu, wall = (sum(values) / len(values) / args.short for values in zip(*runs))
        print(f"{name}, {args.short} frames: {cpu:.3f} CPU s, {wall:.3f} wall s per output frame "
              f"(runs: {', '.join(f'{c:.0f}/{w:.0f} s' for c, w in runs)})")
    ratio_cpu = sum(c for c, _ in figures["engine"]) / sum(c for c, _ in figures["in-RAM"])
    ratio_wall = sum(w for _, w in figures["engine"]) / sum(w for _, w in figures["in-RAM"])
    print(f"engine / in-RAM seconds per frame: CPU {ratio_cpu:.3f}, wall {ratio_wall:.3f} (target <= 1.05); "
          f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
