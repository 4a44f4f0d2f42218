#!/usr/bin/env python3
"""Optical flow and video decode speed: prints figures and target ratios (no asserts).

Measures, on Megamind frames (tests/data/Megamind.avi, frames 1–21 of the first shot):

* DIS per preset, ms per frame pair (both directions ``i → j`` and ``j → i``), at 512×512 and at the
  native 720×528: the backend alone on its thread pool, the backend on one thread (OpenCV's own
  threads), and the full :func:`flow.estimate.estimate_flow` (occlusion check and cache writes too);
* RAFT-small with random weights (12 iterations), when torchvision imports: run this script with
  ComfyUI's venv (``/path/to/comfy-venv/bin/python benchmarks/flow.py``) for that row;
* Load Video decode: :func:`videoio.reader.load_frames` of the whole clip at 720×528, frames per second.

Targets (2-core CPU): DIS medium ≤ 50 ms per pair at 512×512; decode ≥ 150 fps at 720×528.

Usage: ``python benchmarks/flow.py [--pairs 20] [--repeats 3] [--skip-raft]``
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

import torch  # noqa: E402

from rerender_video.common.cache import clear as clear_cache  # noqa: E402
from rerender_video.flow.dis import PRESETS, DisFlow  # noqa: E402
from rerender_video.flow.estimate import estimate_flow  # noqa: E402
from rerender_video.flow.pairs import consecutive_pairs  # noqa: E402
from rerender_video.videoio.reader import load_frames  # noqa: E402

VIDEO = ROOT / "tests" / "data" / "Megamind.avi"
DIS_TARGET_MS = 50.0
DECODE_TARGET_FPS = 150.0


def timed(function, repeats: int) -> list[tuple[float, float]]:
    """``(wall seconds, CPU seconds of all this process's threads)`` of ``function()`` per run."""
    runs = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        runs.append((time.perf_counter() - wall, time.process_time() - cpu))
    return runs


def summary(runs: list[tuple[float, float]], per: int) -> str:
    """Best and median wall ms per item, and median CPU ms per item (less sensitive to other jobs)."""
    wall = [w * 1000 / per for w, _ in runs]
    cpu = [c * 1000 / per for _, c in runs]
    return f"wall best {min(wall):6.1f} median {statistics.median(wall):6.1f}, cpu {statistics.median(cpu):6.1f}"


def median_wall_ms(runs: list[tuple[float, float]], per: int) -> float:
    return statistics.median(w for w, _ in runs) * 1000 / per


def resized(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return torch.nn.functional.interpolate(frames.permute(0, 3, 1, 2), size=(height, width), mode="area",
                                           antialias=False).permute(0, 2, 3, 1).contiguous()


def bench_dis(frames: torch.Tensor, label: str, repeats: int) -> dict[str, float]:
    pairs = consecutive_pairs(frames.shape[0])
    medians = {}
    for preset in PRESETS:
        pool = DisFlow(preset)
        single = DisFlow(preset, workers=1)
        pooled = timed(lambda: list(pool.iter_flows(frames, pairs)), repeats)
        one = timed(lambda: list(single.iter_flows(frames, pairs)), repeats)
        counter = iter(range(10**6))
        # a fresh threshold each run defeats the cache, so every run computes
        full = timed(lambda: estimate_flow(frames, pairs, pool, beta=0.5 + next(counter) * 1e-9), repeats)
        clear_cache("flow")
        print(f"  DIS {preset:9s} {label}: pool of {pool.workers} threads: {summary(pooled, len(pairs))}\n"
              f"  {'':23s} 1 thread (cv2's own threads): {summary(one, len(pairs))}\n"
              f"  {'':23s} estimate_flow (+ occlusion, cache): {summary(full, len(pairs))}")
        medians[preset] = median_wall_ms(pooled, len(pairs))
    return medians


def bench_raft(frames: torch.Tensor, label: str, repeats: int) -> None:
    try:
        from torchvision.models.optical_flow import raft_small
    except Exception as error:  # noqa: BLE001 - any import failure means "not available here"
        print(f"  RAFT-small {label}: skipped (torchvision does not import: {error})")
        return
    from rerender_video.flow.raft import RaftFlow

    with tempfile.TemporaryDirectory() as folder:
        weights = Path(folder, "raft_small_random.pth")
        torch.save(raft_small(weights=None, progress=False).state_dict(), weights)
        backend = RaftFlow(weights, iterations=12)
        backend.network()
        backend.flows(frames[0], frames[1])  # warm-up
        runs = timed(lambda: backend.flows(frames[0], frames[1]), repeats)
    print(f"  RAFT-small {label} (random weights, 12 iterations, CPU, {torch.get_num_threads()} threads): "
          f"{summary(runs, 1)}")


def bench_decode(repeats: int) -> float:
    counts, seconds = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        video = load_frames(VIDEO)
        seconds.append(time.perf_counter() - start)
        counts.append(video.frame_count)
        size = tuple(video.images.shape[1:3])
        del video
    fps = [count / s for count, s in zip(counts, seconds)]
    print(f"  decode Megamind.avi ({counts[0]} frames, {size[1]}x{size[0]}): best {max(fps):.0f} fps, "
          f"median {statistics.median(fps):.0f} fps")
    return statistics.median(fps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=20, help="frame pairs per DIS measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-raft", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rerender-bench-cache-") as cache:
        os.environ["RERENDER_CACHE_DIR"] = cache  # computed flows are thrown away afterwards
        run(args)


def run(args: argparse.Namespace) -> None:
    load = os.getloadavg()
    print(f"Optical flow benchmark — shared machine ({os.cpu_count()} CPUs, load average {load[0]:.2f} "
          f"{load[1]:.2f} {load[2]:.2f}); other developers' jobs may inflate these figures.")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} torch threads")
    native = load_frames(VIDEO, skip_first_frames=1, frame_load_cap=args.pairs + 1).images
    square = resized(native, 512, 512)

    print("DIS (ms per frame pair, both directions; cpu = CPU time summed over threads: for work spread "
          "over both cores an idle 2-core machine needs about cpu/2 of wall time):")
    medians_512 = bench_dis(square, "512x512", args.repeats)
    bench_dis(native, "720x528", args.repeats)
    if not args.skip_raft:
        print("RAFT (ms per frame pair, both directions in one batch of 2):")
        bench_raft(square, "512x512", max(1, args.repeats - 1))
        bench_raft(native, "720x528", max(1, args.repeats - 1))
    print("Load Video decode (videoio.reader.load_frames):")
    decode_fps = bench_decode(args.repeats)

    dis_medium = medians_512["medium"]
    print("Targets (headroom = how many times the target is met; >= 1 meets it):")
    print(f"  DIS medium at 512x512: {dis_medium:.1f} ms/pair vs target {DIS_TARGET_MS:.0f} ms: "
          f"headroom {DIS_TARGET_MS / dis_medium:.2f}x")
    print(f"  decode at 720x528: {decode_fps:.0f} fps vs target {DECODE_TARGET_FPS:.0f} fps: "
          f"headroom {decode_fps / DECODE_TARGET_FPS:.2f}x")


if __name__ == "__main__":
    main()
