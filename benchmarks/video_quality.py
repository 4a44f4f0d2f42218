#!/usr/bin/env python3
"""Whole-video quality of propagation + blend: keyframe interval, uniform vs adaptive keyframes, baselines.

Protocol (issue 14; the EbSynth anchor protocol's filter, ``benchmarks/_anchor_protocol.py``, applied to
whole videos): the ground truth is the deterministic per-frame "style" ``f`` (OpenCV stylization +
8-level posterisation) of **every** frame; the keyframes are ``f`` of the keyframes only; the other frames
are propagated forward and backward with the pack's defaults (four guides, 12 × 6 schedule, temporal NNF
init) and blended (:func:`propagation.blend.blend_video`). For each keyframe interval K and each
placement at the same keyframe count — ``uniform`` (every K-th frame, the paper), ``adaptive`` (the pack's
mode, budget ``ceil(N/K)``) and, at the ``--scene-cut-intervals``, ``scene_cuts`` (its own count) — it
prints, via :func:`metrics.evaluate.evaluate_video`:

* mean PSNR / SSIM of the **non-key** frames against the ground truth,
* warp error and flicker of the output (pairs across shot cuts left out),

for the blend, for (b) forward-only propagation and for (c) both directions averaged by the time
position without the blend's error-based choice ("crossfade"); and once per clip (a) the filter applied
to every frame (the flicker baseline). Then the issue's targets, and with ``--rule-study`` the
measurement behind the adaptive rule (:mod:`metrics.keyframe_cost`): how well each candidate predictor
explains the error of the uniform-K=20 candidates.

Work is shared: every chain (keyframe, direction) is synthesized once at the longest length any
configuration needs, and shorter chains are its prefixes (a chain's frames depend only on the frames
before them). Chains are stored in ``--cache`` (default ``$RERENDER_CACHE_DIR/video_quality``), so an
interrupted run resumes and re-runs print at once.

Clips: ``megamind`` (bundled, skip its black first frame) and any ``NAME=PATH``. The second clip of the
README table is OpenCV's ``samples/data/vtest.avi`` (Apache-2.0 AND BSD-3-Clause; in Debian's
``opencv-doc`` package: ``apt-get download opencv-doc && dpkg-deb -x opencv-doc_*.deb x``, then
``x/usr/share/doc/opencv-doc/examples/data/vtest.avi``; not shipped with the pack).

Usage (the README's run: 3 015 frames synthesized at 0.55–0.71 s of CPU each, 86 min on the shared 2-core
VM under a load of 4–17)::

    python benchmarks/video_quality.py --clips megamind vtest=PATH/vtest.avi --width 192 --frames 0 120 \\
        --rule-study

Full size (the issue's protocol: 512 px on the short side, whole clips; roughly 10× the pixels, so a day
on 2 cores — or the CUDA backend)::

    python benchmarks/video_quality.py --clips megamind vtest=PATH/vtest.avi --short-side 512
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from rerender_cli import load_pack  # noqa: E402

load_pack()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from rerender_video.benchmarks._anchor_protocol import VIDEO, stylize_rgb  # noqa: E402
from rerender_video.common import keyframes as keyframe_rules  # noqa: E402
from rerender_video.common.cache import cache_root  # noqa: E402
from rerender_video.common.keyframes import Keyframes  # noqa: E402
from rerender_video.common.scene_cuts import detect_scene_cuts  # noqa: E402
from rerender_video.flow.dis import DisFlow  # noqa: E402
from rerender_video.flow.estimate import estimate_flow  # noqa: E402
from rerender_video.flow.pairs import consecutive_pairs  # noqa: E402
from rerender_video.flow.warp import warp  # noqa: E402
from rerender_video.metrics.evaluate import evaluate_video  # noqa: E402
from rerender_video.metrics.keyframe_cost import adaptive_keyframes, analysis_frames, propagation_residuals  # noqa: E402
from rerender_video.propagation.blend import blend_video, time_position  # noqa: E402
from rerender_video.propagation.guides import GuideWeights  # noqa: E402
from rerender_video.propagation.params import SynthesisParams  # noqa: E402
from rerender_video.propagation.result import BACKWARD, FORWARD, Chain, Propagation  # noqa: E402
from rerender_video.propagation.sequence import plan_chains, propagate_chain  # noqa: E402
from rerender_video.videoio.reader import load_frames, probe  # noqa: E402

TARGET_BLEND_DB = 0.5
TARGET_ADAPTIVE_DB = 0.3
TARGET_OTHER_CLIP_DB = -0.1
TARGET_WARP_RATIO = 0.5


class ChainStore:
    """Chains ``(key, direction)`` synthesized once at their longest needed length, kept as ``.npz`` files."""

    def __init__(self, folder: Path, frames: torch.Tensor, styled: np.ndarray, flow, params: SynthesisParams,
                 weights: GuideWeights) -> None:
        self.folder, self.frames, self.styled, self.flow = folder, frames, styled, flow
        self.params, self.weights = params, weights
        self.lengths: dict[tuple[int, str], int] = {}
        self.synthesized = 0
        self.seconds = 0.0
        folder.mkdir(parents=True, exist_ok=True)

    def want(self, keyframes: Keyframes, direction: str = "both") -> None:
        """Register the chains a placement needs."""
        for key, chain_direction, targets in plan_chains(keyframes, direction):
            slot = (key, chain_direction)
            self.lengths[slot] = max(self.lengths.get(slot, 0), len(targets))

    def _file(self, key: int, direction: str) -> Path:
        return self.folder / f"{key:05d}_{direction}.npz"

    def _stored_length(self, key: int, direction: str) -> int:
        file = self._file(key, direction)
        if not file.exists():
            return 0
        with np.load(file) as data:
            return int(data["images"].shape[0])

    def missing_frames(self) -> int:
        """Frames still to synthesize for all registered chains."""
        return sum(length for (key, direction), length in self.lengths.items()
                   if self._stored_length(key, direction) < length)

    def compute(self, keyframes: Keyframes, report_every: float = 30.0) -> None:
        """Synthesize the chains ``keyframes`` needs, each at its longest registered length (printing progress)."""
        slots = sorted({(key, direction) for key, direction, _ in plan_chains(keyframes)})
        todo = sum(self.lengths[slot] for slot in slots if self._stored_length(*slot) < self.lengths[slot])
        done, started, last = 0, time.perf_counter(), time.perf_counter()
        for key, direction in slots:
            length = self.lengths[(key, direction)]
            if self._stored_length(key, direction) >= length:
                continue
            step = 1 if direction == FORWARD else -1
            targets = [key + step * distance for distance in range(1, length + 1)]
            began = time.process_time()
            images, errors = propagate_chain(self.frames, torch.from_numpy(self.styled[key]), key, targets,
                                             self.flow, self.params, self.weights)
            self.seconds += time.process_time() - began
            self.synthesized += length
            temporary = self._file(key, direction).with_suffix(".tmp.npz")
            np.savez(temporary, images=images, errors=errors)
            os.replace(temporary, self._file(key, direction))
            done += length
            if time.perf_counter() - last > report_every:
                last = time.perf_counter()
                print(f"    synthesized {done}/{todo} frames ({time.perf_counter() - started:.0f} s)", flush=True)

    def propagation(self, keyframes: Keyframes, direction: str = "both") -> Propagation:
        """A PROPAGATION for ``keyframes`` built from prefixes of the stored chains."""
        chains = []
        for key, chain_direction, targets in plan_chains(keyframes, direction):
            with np.load(self._file(key, chain_direction)) as data:
                images, errors = data["images"][:len(targets)], data["errors"][:len(targets)]
            chains.append(Chain(key, chain_direction, tuple(targets), images, errors))
        keyframe_images = torch.from_numpy(self.styled[list(keyframes.indices)])
        return Propagation(keyframes, keyframe_images, self.flow, chains, direction)


def crossfade(propagation: Propagation) -> torch.Tensor:
    """(c) Both candidates mixed by the time position, ``(1 − t)·P_f + t·P_b``, without any error-based choice."""
    height, width = propagation.frame_size
    out = torch.empty((propagation.frame_count, height, width, 3))
    for position, key in enumerate(propagation.keyframes.indices):
        out[key] = propagation.keyframe_images[position]
    for previous_key, next_key, segment in propagation.keyframes.segments():
        for frame in segment:
            if propagation.has(frame, FORWARD) and propagation.has(frame, BACKWARD):
                t = time_position(frame, previous_key, next_key)
                mixed = (1 - t) * propagation.candidate(frame, FORWARD)[0] + t * propagation.candidate(frame, BACKWARD)[0]
            else:
                direction = FORWARD if propagation.has(frame, FORWARD) else BACKWARD
                mixed = propagation.candidate(frame, direction)[0]
            out[frame] = torch.from_numpy(mixed)
    return out


def score(output: torch.Tensor, frames: torch.Tensor, truth: torch.Tensor, flow, keys) -> dict:
    means = evaluate_video(output, frames, truth, flow=flow, keyframes=keys).means()
    return {name: means.get(name) for name in ("psnr_non_key", "ssim_non_key", "warp_error", "flicker")}


def load_clip(name: str, path: Path, args) -> tuple[torch.Tensor, int]:
    """The clip's frames at ``--width`` (or ``--short-side``), skipping Megamind's black first frame."""
    skip = 1 if name == "megamind" else 0  # Megamind's decoded frame 0 is black (a fade-in)
    size = {"custom_width": args.width}
    if args.short_side:
        info = probe(path)
        size = ({"custom_width": args.short_side} if info.source_width <= info.source_height
                else {"custom_height": args.short_side})
    return load_frames(path, frame_load_cap=args.frames[name], skip_first_frames=skip, **size).images, skip


def placements(frames: torch.Tensor, args) -> list[tuple[str, int, Keyframes]]:
    """(label, K, keyframes) for every interval: uniform, adaptive at the same count, scene_cuts."""
    count = frames.shape[0]
    cuts = detect_scene_cuts(frames)
    result = []
    for interval in sorted(args.intervals, key=lambda k: (k != 10, k)):  # K=10 (the targets) first
        uniform = keyframe_rules.uniform(count, interval)
        result.append(("uniform", interval, uniform))
        result.append(("adaptive", interval, adaptive_keyframes(frames, len(uniform.indices))))
        if interval in args.scene_cut_intervals:
            result.append(("scene_cuts", interval, keyframe_rules.scene_aware(count, interval, cuts)))
    return result


def rule_study(store: ChainStore, frames: torch.Tensor, count: int, interval: int = 20) -> None:
    """Which source-side predictor explains the propagation error (uniform-K candidates, within shots)?"""
    from scipy.stats import spearmanr

    cuts = tuple(detect_scene_cuts(frames))
    shot = np.searchsorted(np.asarray(cuts, dtype=np.int64), np.arange(count), side="right")
    keys = keyframe_rules.uniform(count, interval)
    span = interval - 1
    residual_forward, residual_backward = propagation_residuals(frames, span, cuts)
    small = analysis_frames(frames)
    grey = (small * torch.tensor([0.299, 0.587, 0.114])).sum(-1) * 255
    flow = store.flow
    rows = []
    for key, direction, targets in plan_chains(keys, "both"):
        with np.load(store._file(key, direction)) as data:
            images = data["images"]
        visible = torch.ones(1, 1, *frames.shape[1:3])
        previous = key
        for row, target in enumerate(targets):
            step_flow, occlusion = flow.between(previous, target)
            visible = warp(visible, step_flow[None], mode="nearest", padding="zeros") * (1 - occlusion)[None, None]
            previous = target
            if shot[target] != shot[key] or row >= span:
                break
            mse = float(((images[row].astype(np.float32) - store.styled[target]) ** 2).mean())
            residuals = residual_forward if direction == FORWARD else residual_backward
            rows.append({"distance": row + 1, "mse": mse, "residual": residuals[key, row],
                         "frame_difference": float(((grey[key] - grey[target]) ** 2).mean()),
                         "disoccluded": 1.0 - float((visible > 0.5).float().mean())})
    mse = np.array([r["mse"] for r in rows])
    print(f"\n  rule study: {len(rows)} candidates of uniform K={interval} keyframes within shots; how well each "
          f"predictor explains their MSE against the ground truth")
    print(f"  {'predictor':<38} {'R^2 (linear)':>12} {'Spearman':>9} {'Spearman at equal distance':>27}")
    labels = {"residual": "predicted residual r (adaptive's rule)",
              "frame_difference": "frame difference to the key (FRESCO)",
              "disoccluded": "area disoccluded since the key", "distance": "distance in frames"}
    for name, label in labels.items():
        x = np.array([r[name] for r in rows], dtype=np.float64)
        design = np.c_[np.ones_like(x), x]
        coefficients = np.linalg.lstsq(design, mse, rcond=None)[0]
        r2 = 1 - ((mse - design @ coefficients) ** 2).sum() / ((mse - mse.mean()) ** 2).sum()
        with warnings.catch_warnings():   # the distance is constant within a distance: no correlation there
            warnings.simplefilter("ignore")
            within = [spearmanr(x[[r["distance"] == d for r in rows]], mse[[r["distance"] == d for r in rows]])[0]
                      for d in range(1, span + 1) if sum(r["distance"] == d for r in rows) >= 5]
        within_text = "—" if name == "distance" else f"{np.nanmean(within):.3f}"
        print(f"  {label:<38} {r2:>12.3f} {spearmanr(x, mse)[0]:>9.3f} {within_text:>27}")
        if name == "residual":
            print(f"  {'':<38} fit MSE = {coefficients[0]:.2e} + {coefficients[1]:.3f} r "
                  f"(epsilon = {coefficients[0] / coefficients[1]:.4f})")


def run_clip(name: str, path: Path, args) -> dict:
    frames, skip = load_clip(name, path, args)
    count, height, width = frames.shape[:3]
    started = time.perf_counter()
    styled = np.stack([stylize_rgb(frame) for frame in frames.numpy()])
    truth = torch.from_numpy(styled)
    flow = estimate_flow(frames, consecutive_pairs(count), DisFlow("medium"))
    params, weights = SynthesisParams(), GuideWeights()
    tag = hashlib.sha256(json.dumps([name, str(path), skip, count, height, width, asdict(params), weights.as_dict()])
                         .encode()).hexdigest()[:16]
    store = ChainStore(args.cache / f"{name}-{tag}", frames, styled, flow, params, weights)
    configs = placements(frames, args)
    for _, _, keys in configs:
        store.want(keys)
    print(f"\n== {name}: {count} frames at {width}x{height} (skip {skip}), cuts at "
          f"{detect_scene_cuts(frames)}; {sum(store.lengths.values())} chain frames, "
          f"{store.missing_frames()} to synthesize", flush=True)
    filter_scores = score(truth, frames, truth, flow, ())
    print(f"  (a) per-frame filter: warp error {filter_scores['warp_error']:.6f}, flicker {filter_scores['flicker']:.4f}")
    print(f"  {'K':>3} {'placement':<10} {'keys':>4}  {'method':<13} {'PSNR non-key':>12} {'SSIM':>7} "
          f"{'warp error':>11} {'flicker':>8}")
    results = {"filter": filter_scores, "configs": []}
    for label, interval, keys in configs:
        store.compute(keys)
        propagation = store.propagation(keys)
        outputs = {"blend": blend_video(propagation)[0],
                   "forward-only": blend_video(store.propagation(keys, FORWARD))[0],
                   "crossfade": crossfade(propagation)}
        for method, output in outputs.items():
            scores = score(output, frames, truth, flow, keys.indices)
            results["configs"].append({"placement": label, "interval": interval, "keyframes": list(keys.indices),
                                       "method": method, **scores})
            print(f"  {interval:>3} {label:<10} {len(keys.indices):>4}  {method:<13} {scores['psnr_non_key']:>12.2f} "
                  f"{scores['ssim_non_key']:>7.4f} {scores['warp_error']:>11.6f} {scores['flicker']:>8.4f}", flush=True)
    if store.synthesized:
        print(f"  synthesis: {store.synthesized} frames, {store.seconds / store.synthesized:.2f} s CPU per frame")
    print(f"  ({time.perf_counter() - started:.0f} s for this clip)")
    if args.rule_study and 20 in args.intervals:
        rule_study(store, frames, count)
    return results


def _pick(results: dict, placement: str, interval: int, method: str) -> dict | None:
    for row in results["configs"]:
        if (row["placement"], row["interval"], row["method"]) == (placement, interval, method):
            return row
    return None


def targets(all_results: dict[str, dict]) -> None:
    print("\n== targets (issue 14)")
    first, *others = list(all_results)
    main = all_results[first]
    blend, forward = _pick(main, "uniform", 10, "blend"), _pick(main, "uniform", 10, "forward-only")
    if blend and forward:
        gain = blend["psnr_non_key"] - forward["psnr_non_key"]
        print(f"  blend − forward-only, K=10, {first}: {gain:+.2f} dB (target ≥ +{TARGET_BLEND_DB}) "
              f"{'MET' if gain >= TARGET_BLEND_DB else 'NOT MET'}")
        ratio = blend["warp_error"] / main["filter"]["warp_error"]
        print(f"  warp error K=10 / per-frame filter, {first}: {ratio:.2f} (target ≤ {TARGET_WARP_RATIO}) "
              f"{'MET' if ratio <= TARGET_WARP_RATIO else 'NOT MET'}")
    for clip in all_results:
        threshold = TARGET_ADAPTIVE_DB if clip == first else TARGET_OTHER_CLIP_DB
        for row in all_results[clip]["configs"]:
            if row["placement"] != "adaptive" or row["method"] != "blend":
                continue
            uniform = _pick(all_results[clip], "uniform", row["interval"], "blend")
            gain = row["psnr_non_key"] - uniform["psnr_non_key"]
            print(f"  adaptive − uniform, K={row['interval']}, {clip}: {gain:+.2f} dB (target ≥ {threshold:+.1f}) "
                  f"{'MET' if gain >= threshold else 'NOT MET'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", nargs="+", default=["megamind"], help="megamind and/or NAME=PATH")
    parser.add_argument("--width", type=int, default=256, help="frame width (aspect kept; default 256)")
    parser.add_argument("--short-side", type=int, default=0, help="load at this short side instead of --width")
    parser.add_argument("--frames", type=int, nargs="+", default=[0],
                        help="frames per clip, in --clips order (0 = all; the last value repeats)")
    parser.add_argument("--intervals", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--scene-cut-intervals", type=int, nargs="*", default=[10])
    parser.add_argument("--cache", type=Path, default=None, help="chain store (default: <cache>/video_quality)")
    parser.add_argument("--json", type=Path, default=None, help="write every figure to this JSON file")
    parser.add_argument("--rule-study", action="store_true", help="also print the adaptive rule's measurement")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = keep)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.cache = args.cache or cache_root() / "video_quality"
    clips = {}
    for item in args.clips:
        name, _, path = item.partition("=")
        clips[name] = Path(path) if path else VIDEO
    counts = args.frames + [args.frames[-1]] * len(clips)
    args.frames = dict(zip(clips, counts))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"video quality: torch threads {torch.get_num_threads()}, CPUs {os.cpu_count()}, load average {load:.1f}; "
          f"intervals {args.intervals}; chain store {args.cache}")
    results = {name: run_clip(name, path, args) for name, path in clips.items()}
    targets(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
