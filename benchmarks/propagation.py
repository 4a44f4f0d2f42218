#!/usr/bin/env python3
"""Single-frame guided synthesis: seconds per frame, peak RSS and quality against the EbSynth CPU anchor.

Protocol: benchmarks/_anchor_protocol.py (propagation/ALGORITHM.md §18) — Megamind sequence frame 0 =
decoded frame 1, gaps ``k`` after it, at 512×512 (resized, INTER_AREA) and the native 720×528; style =
stylize(frame 0), guides colour (6) and Laplacian edge (0.5); default :class:`SynthesisParams` (p 5,
12 search–vote × 6 PatchMatch, λ 3500, automatic 6 levels, stop threshold 5); PSNR/SSIM against
stylize(frame k). For every size, thread count and gap it prints the median wall seconds of ``--repeats`` runs
(after a warm-up, so numba's JIT compile is not counted; it is printed separately), the CPU seconds of the
process (all threads), PSNR/SSIM, and the CPU ratio to the EbSynth anchor (its single-thread CPU seconds
divided by our CPU seconds: like for like; ``ΔdB`` = our PSNR − EbSynth's).

Two modes per gap: ``full`` (coarse to fine from a random NNF, what the anchor does) and ``temporal`` (the
temporal NNF initialisation: ``initial_nnf`` = the previous gap's NNF — identity for gap 1 — advected by
OpenCV DIS optical flow from frame ``k`` to the previous gap's frame; only the finest level runs).

Figures come from whatever machine runs this. The project's were taken on a **shared** 2-vCPU VM where other
jobs compete for the cores: CPU seconds are steadier than wall seconds there; say so when quoting them.

Usage:
    python benchmarks/propagation.py [--sizes 512 720] [--gaps 1 2 5 10] [--threads 1 2] [--repeats 3]
                                   [--modes full temporal] [--backend auto] [--cold-compile]
    python benchmarks/propagation.py --torch-prototype      # the vectorised-torch patch-distance comparison
    python benchmarks/propagation.py --backend cuda [--sizes 512 1024]   # GPU kernels: s/frame + CPU agreement

``--backend cuda`` (or ``host``, the same kernels compiled for the CPU) runs benchmarks/propagation_gpu.py,
which times the kernels at 512² and 1024² and checks their output against the CPU backend bit for bit.
The video-level benchmark (temporal NNF initialisation on/off over a chain, blend cost) is
benchmarks/propagation_video.py.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _kernel_backend_requested(argv: list[str]) -> bool:
    return any(flag == "--backend" and value in ("cuda", "host") for flag, value in zip(argv, argv[1:]))


if __name__ == "__main__" and _kernel_backend_requested(sys.argv):
    import runpy

    runpy.run_path(str(Path(__file__).with_name("propagation_gpu.py")), run_name="__main__")
    sys.exit(0)


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[512, 720],
                        help="512 = 512×512 resized; 720 = native 720×528")
    parser.add_argument("--gaps", nargs="+", type=int, default=[1, 2, 5, 10], choices=[1, 2, 5, 10])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=["full", "temporal"], choices=["full", "temporal"])
    parser.add_argument("--backend", default="auto", help="synthesis backend: auto or cpu here; cuda and host run benchmarks/propagation_gpu.py")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cold-compile", action="store_true",
                        help="compile the numba kernels into an empty cache to time a first install")
    parser.add_argument("--torch-prototype", action="store_true",
                        help="only time a vectorised-torch patch-distance step against the numba search pass")
    return parser.parse_args()


ARGS = _parse()
if ARGS.cold_compile:                                   # must be set before numba is imported
    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="numba-cold-")

sys.path.insert(0, str(ROOT))
from rerender_cli import load_pack  # noqa: E402

load_pack()

import cv2  # noqa: E402
import numba  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from rerender_video.benchmarks import _anchor_protocol as protocol  # noqa: E402
from rerender_video.propagation.guides import advect_nnf, identity_nnf  # noqa: E402
from rerender_video.propagation.params import SynthesisParams  # noqa: E402
from rerender_video.propagation.synthesis import Guide, synthesize  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def advect(nnf: np.ndarray, frame_k: np.ndarray, frame_prev: np.ndarray) -> torch.Tensor:
    """``nnf`` (on the previous frame's grid) brought to frame k by the pipeline's :func:`advect_nnf`,
    along DIS medium flow ``k → prev``."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    flow = dis.calc(cv2.cvtColor(frame_k, cv2.COLOR_BGR2GRAY), cv2.cvtColor(frame_prev, cv2.COLOR_BGR2GRAY), None)
    return torch.from_numpy(advect_nnf(nnf, torch.from_numpy(flow), flow.shape[:2]))


def run_once(case: protocol.ProtocolCase, initial_nnf, params: SynthesisParams):
    wall, cpu = time.perf_counter(), time.process_time()
    result = synthesize(case.style, [Guide(*g) for g in case.guides], params, initial_nnf=initial_nnf,
                        backend=ARGS.backend)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def warm_up() -> float:
    """First call on a small image: numba compiles (or loads from its cache) every kernel and code path."""
    frame = torch.rand(48, 64, 3, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    for params in (SynthesisParams(search_vote_iters=2, patchmatch_iters=2),
                   SynthesisParams(search_vote_iters=2, patchmatch_iters=2, vote_mode="weighted",
                                   extra_pass_3x3=True)):
        synthesize(frame, [Guide(frame, frame, 1.0)], params, backend=ARGS.backend)
    synthesize(frame, [Guide(frame, frame, 1.0)], SynthesisParams(search_vote_iters=1),
               initial_nnf=torch.zeros(48, 64, 2, dtype=torch.int32), backend=ARGS.backend)
    return time.perf_counter() - start


def synthesis_memory_mb(case: protocol.ProtocolCase) -> float:
    """Peak of the host arrays one synthesis allocates (numpy buffers, traced by tracemalloc; untimed run)."""
    tracemalloc.start()
    try:
        run_once(case, None, SynthesisParams(seed=ARGS.seed))
        return tracemalloc.get_traced_memory()[1] / 2 ** 20
    finally:
        tracemalloc.stop()


def bench_size(size: int) -> None:
    frames = protocol.sequence_frames(size=None if size == 720 else size, gaps=tuple(ARGS.gaps))
    cases = {case.gap: case for case in protocol.make_cases(frames, tuple(ARGS.gaps))}
    height, width = frames[0].shape[:2]
    params = SynthesisParams(seed=ARGS.seed)
    print(f"\n== {width}×{height} (Megamind{' resized' if size != 720 else ''}), default parameters, "
          f"backend {ARGS.backend} ==")
    print(f"synthesis working memory (peak of its numpy arrays, one frame): "
          f"{synthesis_memory_mb(cases[min(cases)]):.0f} MB")
    print(f"{'threads':>7} {'mode':>8} {'gap':>3} | {'wall s':>7} {'cpu s':>7} {'PSNR':>6} {'SSIM':>6} | "
          f"{'EbSynth s':>9} {'PSNR':>6} {'SSIM':>6} | {'CPU ratio':>9} {'ΔdB':>6} | {'copy dB':>7} {'RSS MB':>7}")
    for threads in ARGS.threads:
        numba.set_num_threads(threads)
        for mode in ARGS.modes:
            previous_nnf, previous_frame = None, frames[0]
            for gap in sorted(ARGS.gaps):
                case = cases[gap]
                initial = None
                if mode == "temporal":
                    if previous_nnf is None:                     # the keyframe's own NNF: the identity
                        previous_nnf = identity_nnf(height, width)
                    initial = advect(previous_nnf, frames[gap], previous_frame)
                runs = [run_once(case, initial, params) for _ in range(ARGS.repeats)]
                result = runs[0][0]
                wall = statistics.median(r[1] for r in runs)
                cpu = statistics.median(r[2] for r in runs)
                psnr, ssim = protocol.score(case.truth, protocol.to_bgr_uint8(result.image))
                copy_psnr, _ = protocol.score(case.truth, case.keyframe_bgr)
                anchor = protocol.EBSYNTH_ANCHOR.get((size, gap))
                ratio = f"{anchor[0] / cpu:8.1f}×" if anchor else "        -"
                anchor_cols = f"{anchor[0]:9.1f} {anchor[1]:6.2f} {anchor[2]:6.4f}" if anchor else " " * 23
                delta = f"{psnr - anchor[1]:+6.2f}" if anchor else "     -"
                print(f"{threads:>7} {mode:>8} {gap:>3} | {wall:7.2f} {cpu:7.2f} {psnr:6.2f} {ssim:6.4f} | "
                      f"{anchor_cols} | {ratio} {delta} | {copy_psnr:7.2f} {peak_rss_mb():7.0f}", flush=True)
                previous_nnf, previous_frame = result.nnf.numpy(), frames[gap]


def torch_prototype() -> None:
    """Vectorised torch patch distance for 12 candidates per pixel (one PatchMatch pass) vs the numba pass."""
    from rerender_video.propagation.backends.level import LevelSpec, NnfStart
    from rerender_video.propagation.backends.select import get_backend

    numba.set_num_threads(1)
    torch.set_num_threads(1)
    gen = np.random.default_rng(0)
    h = w = 512
    channels, p, candidates = 9, 5, 12
    source = gen.integers(0, 2000, (h, w, channels)).astype(np.int16)
    target = gen.integers(0, 2000, (h, w, channels)).astype(np.int16)
    engine = get_backend("cpu")
    spec = LevelSpec(patch_size=p, style_channels=3, occupancy_multiplier=0, change_threshold=0,
                     weighted_vote=False, vote_error_scale=0.0, random_radii=(256, 128, 64, 32, 16, 8, 4, 2, 1),
                     level=0)
    state = engine.prepare_level(spec, source, target, NnfStart.random(1))

    src = torch.from_numpy(source.astype(np.float32)).permute(2, 0, 1)[None]
    tgt = torch.from_numpy(target.astype(np.float32)).permute(2, 0, 1)[None]
    tgt_patches = torch.nn.functional.unfold(tgt, p, padding=p // 2)             # [1, C·p², H·W]
    src_patches = torch.nn.functional.unfold(src, p, padding=p // 2)[0]          # [C·p², H·W]
    cand = torch.from_numpy(gen.integers(2, w - 2, (candidates, h * w)) * w + gen.integers(2, h - 2, (candidates, h * w)))
    start = time.perf_counter()
    best = None
    for k in range(candidates):
        gathered = src_patches[:, cand[k]]                                          # gather the candidates' patches
        cost = ((gathered - tgt_patches[0]) ** 2).sum(0)
        best = cost if best is None else torch.minimum(best, cost)
    torch_seconds = time.perf_counter() - start
    temporaries_mb = 3 * src_patches.numel() * 4 / 2 ** 20

    engine.vote(state, initial=True, update_mask=False)
    engine.patch_error(state, all_pixels=True)
    engine.occupancy(state)
    engine.search(state, (1,), 1)                       # compile / warm
    start = time.perf_counter()
    engine.search(state, (4,), 2)
    numba_seconds = time.perf_counter() - start
    print(f"one PatchMatch pass over 512×512, 9 channels, 5×5 patches, 1 thread:\n"
          f"  vectorised torch, {candidates} candidates/pixel, full SSD, no early exit: {torch_seconds:.2f} s, "
          f"~{temporaries_mb:.0f} MB of patch temporaries\n"
          f"  numba search pass (4 propagation + 9 random candidates, early termination): {numba_seconds:.3f} s")


def main() -> int:
    print("Guided synthesis benchmark (propagation.synthesis). Figures from this machine; the project's were "
          "taken on a shared 2-vCPU VM (other jobs running), so wall seconds carry noise.")
    print(f"numba {numba.__version__}, torch {torch.__version__}, opencv {cv2.__version__}, "
          f"NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS}, backend {ARGS.backend}")
    if ARGS.torch_prototype:
        torch_prototype()
        return 0
    rss_before = peak_rss_mb()
    compile_seconds = warm_up()
    kind = "cold compile into an empty cache" if ARGS.cold_compile else "compile, or load from numba's cache"
    print(f"JIT warm-up ({kind}): {compile_seconds:.1f} s — not included below; peak RSS before/after warm-up "
          f"{rss_before:.0f}/{peak_rss_mb():.0f} MB")
    for size in ARGS.sizes:
        bench_size(size)
    print("\nCPU ratio = EbSynth's CPU seconds (one thread, the anchor table in benchmarks/_anchor_protocol.py) / "
          "our median CPU seconds (all threads), both per frame: CPU work against CPU work, whatever the thread "
          "count; EbSynth's includes < 0.3 s of PNG I/O. benchmarks/ebsynth_compare.py runs EbSynth itself beside "
          "ours on several clips. RSS is the process peak so far (Python, torch, numba/LLVM, decoded frames, "
          "protocol images and scoring included).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
