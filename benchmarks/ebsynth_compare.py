#!/usr/bin/env python3
"""Our synthesis against the original EbSynth, like for like: CPU seconds with CPU seconds, per clip and gap.

The anchor protocol (propagation/ALGORITHM.md §18) on several real clips: for each clip and gap ``k`` one
frame is synthesized from ``f(frame 0)`` with colour (6) and edge (0.5) guides and Rerender's schedule (patch
5, 12 search–vote × 6 PatchMatch, uniformity 3500, all pyramid levels), by EbSynth (a separate process, PNG
files in and out, ``OMP_NUM_THREADS=1``) and by :func:`propagation.synthesis.synthesize` (CPU backend, one
numba thread, in this process), alternating. Printed per case: EbSynth's CPU seconds (user + sys of its
process), ours (CPU seconds of the call), their ratio, and both PSNR / SSIM against ``f(frame k)``; then one
summary line with the range of the ratios. ``--threads 2`` also times both on two threads and compares
**wall** seconds (meaningful on a quiet machine only).

EbSynth is not part of this repository and is never downloaded by it. Build its CPU version from the
upstream sources (https://github.com/jamriska/ebsynth, tested at 2f5c97c) and pass the binary::

    g++ src/ebsynth.cpp src/ebsynth_cpu.cpp src/ebsynth_nocuda.cpp -DNDEBUG -O3 -fopenmp -Iinclude \\
        -std=c++11 -o bin/ebsynth

Clips: ``megamind`` (the bundled tests/data/Megamind.avi, decoded frame 1 = frame 0, resized to ``--size``),
``basketball`` (the bundled tests/data/basketball1.png → basketball2.png, native 640×480, gap 1 only) and
``vtest=PATH`` (OpenCV's vtest.avi, 768×576, not bundled: ``apt-get download opencv-doc`` and take
``usr/share/doc/opencv-doc/examples/data/vtest.avi`` from the package, Apache-2.0 AND BSD-3-Clause; frame 0 =
decoded frame 0, resized to ``--size``).

Usage (about a minute of EbSynth CPU per 512² frame; keep it small on a shared machine):
    python benchmarks/ebsynth_compare.py --ebsynth /path/to/bin/ebsynth \\
        [--clips megamind basketball vtest=/path/to/vtest.avi] [--gaps 1 10] [--size 512] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ebsynth", required=True, type=Path, help="the EbSynth binary (CPU build)")
    parser.add_argument("--clips", nargs="+", default=["megamind", "basketball"],
                        help="megamind, basketball, vtest=PATH")
    parser.add_argument("--gaps", nargs="+", type=int, default=[1, 10])
    parser.add_argument("--size", type=int, default=512, help="S: video clips resized to S×S (INTER_AREA)")
    parser.add_argument("--threads", nargs="+", type=int, default=[1], choices=[1, 2])
    return parser.parse_args()


ARGS = _parse()
sys.path.insert(0, str(ROOT))
from rerender_cli import load_pack  # noqa: E402

load_pack()

import cv2  # noqa: E402
import numba  # noqa: E402
import numpy as np  # noqa: E402

from rerender_video.benchmarks import _anchor_protocol as protocol  # noqa: E402
from rerender_video.propagation.params import SynthesisParams  # noqa: E402
from rerender_video.propagation.synthesis import Guide, synthesize  # noqa: E402
from rerender_video.videoio.reader import load_frames  # noqa: E402


def clip_frames(name: str) -> tuple[str, dict[int, np.ndarray]]:
    """``(label, {0: BGR frame 0, k: BGR frame k})`` for a clip argument."""
    if name == "megamind":
        return f"Megamind {ARGS.size}²", protocol.sequence_frames(size=ARGS.size, gaps=tuple(ARGS.gaps))
    if name == "basketball":
        first, second = (cv2.imread(str(DATA / f"basketball{i}.png")) for i in (1, 2))
        return f"basketball {first.shape[1]}×{first.shape[0]}", {0: first, 1: second}
    if name.startswith("vtest="):
        images = load_frames(Path(name.split("=", 1)[1]), frame_load_cap=1 + max(ARGS.gaps)).images
        frames = {}
        for k in (0, *ARGS.gaps):
            bgr = np.ascontiguousarray((images[k].numpy() * 255.0 + 0.5).astype(np.uint8)[..., ::-1])
            frames[k] = cv2.resize(bgr, (ARGS.size, ARGS.size), interpolation=cv2.INTER_AREA)
        return f"vtest {ARGS.size}²", frames
    raise SystemExit(f"--clips: Expected megamind, basketball or vtest=PATH, Got: {name!r}")


def run_ebsynth(case: protocol.ProtocolCase, frames: dict[int, np.ndarray], folder: Path,
                threads: int) -> tuple[float, float, np.ndarray]:
    """EbSynth on the case's PNG files: (CPU seconds of its process, wall seconds, output BGR)."""
    files = {"style": case.keyframe_bgr, "frame0": frames[0], "framek": frames[case.gap],
             "edge0": protocol.edge(frames[0]), "edgek": protocol.edge(frames[case.gap])}
    for name, image in files.items():
        cv2.imwrite(str(folder / f"{name}.png"), image)
    output = folder / "out.png"
    command = [str(ARGS.ebsynth), "-style", str(folder / "style.png"),
               "-guide", str(folder / "frame0.png"), str(folder / "framek.png"), "-weight", "6",
               "-guide", str(folder / "edge0.png"), str(folder / "edgek.png"), "-weight", "0.5",
               "-patchsize", "5", "-searchvoteiters", "12", "-patchmatchiters", "6", "-backend", "cpu",
               "-output", str(output)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall, cv2.imread(str(output))


def run_ours(case: protocol.ProtocolCase, threads: int) -> tuple[float, float, np.ndarray]:
    """Our CPU backend on ``threads`` numba threads: (CPU seconds, wall seconds, output BGR)."""
    numba.set_num_threads(threads)
    cpu, wall = time.process_time(), time.perf_counter()
    result = synthesize(case.style, [Guide(*guide) for guide in case.guides], SynthesisParams(), backend="cpu")
    return time.process_time() - cpu, time.perf_counter() - wall, protocol.to_bgr_uint8(result.image)


def main() -> int:
    load = os.getloadavg()[0]
    print(f"EbSynth ({ARGS.ebsynth}) vs ours (CPU backend), Rerender schedule, colour + edge guides; "
          f"{os.cpu_count()} CPUs, load {load:.1f}")
    warm = protocol.make_cases(protocol.sequence_frames(size=64, gaps=(1,)), (1,))[0]
    run_ours(warm, 1)                                    # numba compile / cache load, not timed
    print(f"{'clip':>18} {'gap':>3} {'thr':>3} | {'EbSynth cpu':>11} {'ours cpu':>9} {'ratio':>6} | "
          f"{'EbSynth wall':>12} {'ours wall':>9} {'ratio':>6} | {'EbSynth dB/SSIM':>16} {'ours dB/SSIM':>14}")
    ratios = []
    with tempfile.TemporaryDirectory(prefix="ebsynth-compare-") as scratch:
        for clip in ARGS.clips:
            label, frames = clip_frames(clip)
            gaps = [gap for gap in ARGS.gaps if gap in frames]
            for case in protocol.make_cases(frames, tuple(gaps)):
                for threads in ARGS.threads:
                    e_cpu, e_wall, e_out = run_ebsynth(case, frames, Path(scratch), threads)
                    o_cpu, o_wall, o_out = run_ours(case, threads)
                    e_score, o_score = protocol.score(case.truth, e_out), protocol.score(case.truth, o_out)
                    if threads == 1:
                        ratios.append(e_cpu / o_cpu)
                    print(f"{label:>18} {case.gap:>3} {threads:>3} | {e_cpu:11.1f} {o_cpu:9.2f} {e_cpu / o_cpu:5.1f}× | "
                          f"{e_wall:12.1f} {o_wall:9.2f} {e_wall / o_wall:5.1f}× | "
                          f"{e_score[0]:7.2f}/{e_score[1]:.4f} {o_score[0]:6.2f}/{o_score[1]:.4f}", flush=True)
    if ratios:
        print(f"ebsynth summary: EbSynth CPU s / our CPU s (one thread each) {min(ratios):.1f}–{max(ratios):.1f}× "
              f"(median {statistics.median(ratios):.1f}×) over {len(ratios)} frames of {len(ARGS.clips)} clips; "
              f"load {load:.1f} → {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
