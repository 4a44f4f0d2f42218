#!/usr/bin/env python3
"""What a second numba thread buys and costs: wall and CPU seconds per synthesized frame at 1 and 2 threads.

One process, the thread counts alternating frame by frame (so a change of machine load hits both alike), on
the EbSynth protocol frame of ``benchmarks/_anchor_protocol.py`` (Megamind frame 1 → frame 1 + gap, colour and
edge guides, default :class:`SynthesisParams`, CPU backend). For every thread count it prints the medians of
wall seconds, process CPU seconds (all threads), the calling thread's CPU seconds and the context switches per
frame, and finally ONE summary line with the ratios::

    threads summary: 2 threads (used 2) vs 1: speed-up (wall 1 / wall 2) 1.74x, CPU cost (cpu 2 / cpu 1) 0.93x, ...

On a quiet machine a good second thread gives a speed-up near 2 and a CPU cost near 1. The CPU cost rises
when a thread burns CPU while waiting: an OpenMP worker that spins between two parallel regions, or at the
end-of-region barrier while the other thread waits for a core on a busy machine.

Without options the process runs as the pack's own tools do (common/threads.py,
propagation/backends/numba_runtime.py): the pack is loaded before torch, so OpenMP's idle threads sleep
(``OMP_WAIT_POLICY=PASSIVE`` unless the user set a policy); launches over small images run on one thread.
``--policies`` and ``--layers`` run the measurement again in one child process per combination (both are fixed
when a process first starts its OpenMP threads):

* ``pack`` — as above; ``spin`` — GNU OpenMP's own default (``GOMP_SPINCOUNT=300000``: idle threads spin
  before they sleep), which is what runs inside ComfyUI (torch's OpenMP runtime, which numba's threads use,
  started before the pack was loaded): there the pack runs on the cores the load average leaves free;
  ``passive`` / ``active`` — ``OMP_WAIT_POLICY``;
* ``omp``, ``workqueue``, ``tbb`` (needs ``pip install tbb``) — ``NUMBA_THREADING_LAYER``.

``--serial-below N`` changes the pixel count below which a launch runs on one thread (0 = never);
``--fixed-threads`` turns off the pack's load-dependent thread count (common/threads.py), so a row runs on
exactly the threads it names. The ``used`` column is the thread count the pack chose for the large launches.

Usage (keep it short on a shared 2-core machine; it prints the load average):
    python benchmarks/propagation_threads.py [--size 512] [--gap 1] [--repeats 5] [--threads 1 2]
    python benchmarks/propagation_threads.py --policies spin pack --size 360 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512, help="S → the protocol frame resized to S×S; 720 = native")
    parser.add_argument("--gap", type=int, default=1, choices=[1, 2, 5, 10])
    parser.add_argument("--repeats", type=int, default=5, help="frames per thread count (after one warm-up each)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--temporal", action="store_true",
                        help="start from the previous gap's NNF (the video default: only the finest level runs)")
    parser.add_argument("--layers", nargs="+", choices=["default", "omp", "workqueue", "tbb"],
                        help="one child process per numba threading layer (and policy)")
    parser.add_argument("--policies", nargs="+", choices=["pack", "spin", "passive", "active"],
                        help="one child process per OpenMP wait policy (and layer)")
    parser.add_argument("--serial-below", type=int, help="launches below this many pixels run on one thread")
    parser.add_argument("--fixed-threads", action="store_true", help="no load-dependent thread count")
    return parser.parse_args()


def _load() -> float:
    return os.getloadavg()[0]


POLICY_ENV = {"pack": {}, "spin": {"GOMP_SPINCOUNT": "300000"}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
              "active": {"OMP_WAIT_POLICY": "ACTIVE"}}


def _children(args: argparse.Namespace) -> int:
    """One child per (layer, policy), same arguments; each prints its own summary line."""
    for layer in args.layers or ["default"]:
        for policy in args.policies or ["pack"]:
            env = {key: value for key, value in os.environ.items()
                   if key not in ("NUMBA_THREADING_LAYER", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
            env.update(POLICY_ENV[policy])
            if layer != "default":
                env["NUMBA_THREADING_LAYER"] = layer
            command = [sys.executable, __file__, "--size", str(args.size), "--gap", str(args.gap), "--repeats",
                       str(args.repeats), "--threads", *map(str, args.threads)]
            command += ["--temporal"] if args.temporal else []
            command += ["--serial-below", str(args.serial_below)] if args.serial_below is not None else []
            command += ["--fixed-threads"] if args.fixed_threads else []
            print(f"\n== threading layer {layer}, wait policy {policy} ==", flush=True)
            result = subprocess.run(command, env=env, check=False)
            if result.returncode != 0:
                print(f"(layer {layer} failed with status {result.returncode}; for tbb: pip install tbb)")
    return 0


def main() -> int:
    args = _parse()
    if args.layers or args.policies:
        return _children(args)
    sys.path.insert(0, str(ROOT))
    from rerender_cli import load_pack

    load_pack()
    import numba
    import torch

    from rerender_video.benchmarks import _anchor_protocol as protocol
    from rerender_video.propagation.backends import numba_runtime
    from rerender_video.propagation.params import SynthesisParams
    from rerender_video.propagation.synthesis import Guide, synthesize

    if args.serial_below is not None:
        numba_runtime.SERIAL_BELOW = args.serial_below
    numba_runtime.ADAPT_THREADS = not args.fixed_threads
    frames = protocol.sequence_frames(size=None if args.size == 720 else args.size, gaps=(args.gap,))
    case = protocol.make_cases(frames, (args.gap,))[0]
    guides = [Guide(*guide) for guide in case.guides]
    params = SynthesisParams()
    initial = None
    if args.temporal:
        initial = synthesize(case.style, guides, params, backend="cpu").nnf

    def frame(threads: int) -> dict[str, float]:
        numba.set_num_threads(threads)
        used = numba_runtime.NumbaRuntime().threads
        usage = resource.getrusage(resource.RUSAGE_SELF)
        wall, cpu, main_cpu = time.perf_counter(), time.process_time(), time.thread_time()
        synthesize(case.style, guides, params, initial_nnf=initial, backend="cpu")
        after = resource.getrusage(resource.RUSAGE_SELF)
        return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
                "main": time.thread_time() - main_cpu, "used": used,
                "voluntary": after.ru_nvcsw - usage.ru_nvcsw, "involuntary": after.ru_nivcsw - usage.ru_nivcsw}

    load_before = _load()
    for threads in args.threads:                          # compile / load the kernels, start the thread pool
        frame(threads)
    runs: dict[int, list[dict[str, float]]] = {threads: [] for threads in args.threads}
    for _ in range(args.repeats):
        for threads in args.threads:
            runs[threads].append(frame(threads))
    load_after = _load()

    layer = numba.threading_layer()
    height, width = frames[0].shape[:2]
    policy = ", ".join(f"{name}={os.environ[name]}" for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
                       if name in os.environ) or "no wait policy set"
    print(f"{width}×{height} gap {args.gap}{' temporal' if args.temporal else ''}, layer {layer}, {policy}, "
          f"one thread below {numba_runtime.SERIAL_BELOW} px, torch threads "
          f"{torch.get_num_threads()}, {os.cpu_count()} CPUs, load {load_before:.1f} → {load_after:.1f}, "
          f"median of {args.repeats}")
    print(f"{'threads':>7} {'used':>4} | {'wall s':>7} {'cpu s':>7} {'main s':>7} {'others s':>8} | {'vol. cs':>8} "
          f"{'invol.':>7}")
    medians = {}
    for threads, values in runs.items():
        m = {key: statistics.median(v[key] for v in values) for key in values[0]}
        medians[threads] = m
        print(f"{threads:>7} {m['used']:>4.0f} | {m['wall']:7.2f} {m['cpu']:7.2f} {m['main']:7.2f} {m['cpu'] - m['main']:8.2f} | "
              f"{m['voluntary']:8.0f} {m['involuntary']:7.0f}")
    if 1 in medians and 2 in medians:
        one, two = medians[1], medians[2]
        print(f"threads summary: 2 threads (used {two['used']:.0f}) vs 1: speed-up (wall 1 / wall 2) "
              f"{one['wall'] / two['wall']:.2f}x, CPU cost "
              f"(cpu 2 / cpu 1) {two['cpu'] / one['cpu']:.2f}x, cpu 1 thread {one['cpu']:.2f} s, cpu 2 threads "
              f"{two['cpu']:.2f} s, layer {layer}, {policy}, {width}x{height}, load {load_before:.1f}-{load_after:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
