"""``rerender_cli.py flow VIDEO``: optical flow and occlusion masks of a video, with a preview mp4.

Example::

    python rerender_cli.py flow tests/data/Megamind.avi --frames 48 --output megamind_flow.mp4

The preview shows, for each frame pair (i, j), the motion i → j in the flow colour wheel (left, with a
key in the corner) next to frame j in grey with its occluded pixels in red (right). The flows stay in
the disk cache (its folder is printed), where Rerender Estimate Flow finds them for the same frames
and settings.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

DEFAULT_MODELS_SUBDIR = Path("models", "optical_flow")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``flow`` command."""
    from ..common.keyframes import KEYFRAME_INDICES, KEYFRAME_INTERVAL
    from ..flow.settings import BACKEND, DIS_PRESET, OCCLUSION_ALPHA, OCCLUSION_BETA, PAIR_MODE
    from ._options import add_options

    parser = subparsers.add_parser(
        "flow", help="compute optical flow + occlusion masks of a video and write a preview mp4",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", type=Path, help="input video file")
    parser.add_argument("--output", "-o", type=Path, default=None,
                        help="preview mp4 to write (default: <video name>_flow.mp4 in the current folder)")
    add_options(parser, (BACKEND, DIS_PRESET))
    parser.add_argument("--raft-weights", type=Path, default=None,
                        help="RAFT state dict (.pth/.safetensors); default: found in --models-dir")
    parser.add_argument("--models-dir", type=Path, default=None,
                        help="folder with RAFT weights (default: $COMFYUI_ROOT/models/optical_flow, "
                             "else ./models/optical_flow)")
    parser.add_argument("--frames", dest="frame_load_cap", type=int, default=0,
                        help="load at most N frames (0 = all; past the end loads the frames there are)")
    parser.add_argument("--skip", dest="skip_first_frames", type=int, default=0, help="skip the first N frames")
    parser.add_argument("--every", dest="select_every_nth", type=int, default=1, help="keep every N-th frame")
    parser.add_argument("--width", dest="custom_width", type=int, default=0, help="resize to this width (0 = keep)")
    parser.add_argument("--height", dest="custom_height", type=int, default=0,
                        help="resize to this height (0 = keep)")
    add_options(parser, (PAIR_MODE, KEYFRAME_INTERVAL, KEYFRAME_INDICES, OCCLUSION_ALPHA, OCCLUSION_BETA))
    parser.set_defaults(func=run)


def _models_dir(args: argparse.Namespace) -> Path:
    if args.models_dir is not None:
        return args.models_dir
    root = os.environ.get("COMFYUI_ROOT")
    return Path(root, DEFAULT_MODELS_SUBDIR) if root else Path.cwd() / DEFAULT_MODELS_SUBDIR


def _backend(args: argparse.Namespace):
    import torch

    from ..flow.dis import DisFlow
    from ..flow.raft import RaftFlow, find_weights

    if args.backend == "dis":
        return DisFlow(args.dis_preset)
    weights = args.raft_weights or find_weights(args.backend, [_models_dir(args)])
    return RaftFlow(weights, model=args.backend, device="cuda" if torch.cuda.is_available() else "cpu")


def preview_frames(flows, frames):
    """Side-by-side preview frames ``[H,2W,3]``, one per pair, made one at a time: flow colours with a
    wheel key in the corner | frame j in grey with occluded pixels in red."""
    import numpy as np
    import torch

    from ..flow.visualize import flow_to_color, motion_scale, occlusion_overlay, wheel_legend

    scale = motion_scale(flows)
    height, width = flows.frame_size
    key_size = min(96, height // 4, width // 4)
    key = wheel_legend(key_size) if key_size >= 16 else None
    for row, (_, target) in enumerate(flows.pairs):
        colours = flow_to_color(-torch.from_numpy(np.array(flows.backward[row])), scale)
        if key is not None:
            colours[4:4 + key_size, 4:4 + key_size] = key
        mask = torch.from_numpy(np.array(flows.occlusion_backward[row]))
        overlay = occlusion_overlay(frames[target][None], mask[None])[0]
        yield torch.cat((colours, overlay), dim=1)


def run(args: argparse.Namespace) -> int:
    """Load the video, estimate flow, write the preview, print where everything is."""
    backend = _backend(args)  # first: a missing RAFT file is reported before any decoding

    from ..common.cache import check_writable
    from ..common.keyframes import resolve
    from ..flow.estimate import cache_location, estimate_flow
    from ..flow.pairs import pairs_for_mode
    from ..videoio.reader import load_frames
    from ..videoio.writer import save_video
    from ._progress import Progress

    output = check_writable(args.output or Path.cwd() / f"{args.video.stem}_flow.mp4")  # before any work
    started = time.perf_counter()
    video = load_frames(args.video, frame_load_cap=args.frame_load_cap, skip_first_frames=args.skip_first_frames,
                        select_every_nth=args.select_every_nth, custom_width=args.custom_width,
                        custom_height=args.custom_height)
    frames = video.images
    count, height, width = frames.shape[:3]
    loaded = time.perf_counter()
    keyframes = (resolve(count, args.keyframe_interval, args.keyframe_indices)
                 if "keyframes" in args.pair_mode and count > 1 else None)
    pairs = pairs_for_mode(args.pair_mode, count, keyframes)
    print(f"loaded {count} frames at {width}x{height}, {video.fps:.3f} fps in {loaded - started:.1f} s; "
          f"{len(pairs)} pairs ({args.pair_mode}), backend {backend.method()}")

    flows = estimate_flow(frames, pairs, backend, args.occlusion_alpha, args.occlusion_beta,
                          progress=Progress("flow pairs", len(pairs)))
    estimated = time.perf_counter()
    occluded = float(sum(flows.occlusion_backward[row].mean() for row in range(len(flows))) / len(flows))
    print(f"flow: {flows.describe()}; {(estimated - loaded) * 1000 / len(pairs):.1f} ms per pair; "
          f"{occluded:.1%} of pixels occluded on average")
    print(f"cached flow: {cache_location(flows)}")

    written = save_video(preview_frames(flows, frames), output, video.fps, path_name="output")
    print(f"preview: {written} ({len(pairs)} frames at {2 * width}x{height}; left: motion i→j in the flow colour "
          f"wheel, right: frame j with occluded pixels in red)")
    return 0
