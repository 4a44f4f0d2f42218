"""``rerender_cli.py propagate VIDEO KEYFRAME_DIR``: propagate stylized keyframes to the whole video.

Example (the bundled sample and keyframes)::

    python rerender_cli.py propagate tests/data/Megamind.avi tests/data/megamind_keys --frames 49 \\
        --output megamind_propagated.mp4

Keyframe files carry their frame index as the last number of the name (``0000.png``, ``key_0012.jpg``);
with ``--interval K`` the sorted files are frames 0, K, 2K, … instead. Frames are loaded at the keyframes'
size unless ``--width``/``--height`` is given (keyframes are then resized to the frames). Keyframes past the
loaded frames (``--frames``) are left out. Steps: optical flow between consecutive frames (DIS, cached),
EbSynth-style propagation of every keyframe forward and backward (cached per keyframe chain), temporal blend,
then an H.264 mp4 at the source frame rate with the source audio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``propagate`` command (its settings' options generated from their declarations)."""
    from ..flow.settings import DIS_PRESET
    from ..propagation.settings import BLEND, KEYFRAME_FILE_INTERVAL, PROPAGATE
    from ._options import add_option, add_options

    parser = subparsers.add_parser(
        "propagate", help="propagate stylized keyframes through a video (EbSynth + temporal blend) to an mp4",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", type=Path, help="input video file")
    parser.add_argument("keyframe_dir", type=Path, help="folder of stylized keyframes named by frame index")
    parser.add_argument("--output", "-o", type=Path, default=None,
                        help="mp4 to write (default: <video name>_propagated.mp4 in the current folder)")
    parser.add_argument("--frames", dest="frame_load_cap", type=int, default=0,
                        help="load at most N frames (0 = all; past the end loads the frames there are)")
    parser.add_argument("--skip", dest="skip_first_frames", type=int, default=0,
                        help="skip the first N frames of the video")
    parser.add_argument("--width", dest="custom_width", type=int, default=0,
                        help="frame width (0 = the keyframes' width)")
    parser.add_argument("--height", dest="custom_height", type=int, default=0,
                        help="frame height (0 = the keyframes' height)")
    add_option(parser, KEYFRAME_FILE_INTERVAL)
    add_options(parser.add_argument_group("propagation (EbSynth) and guide weights"), PROPAGATE)
    add_options(parser.add_argument_group("blend"), BLEND)
    add_option(parser, DIS_PRESET, "--flow-preset")
    parser.add_argument("--crf", type=int, default=19, help="H.264 quality (lower = better, larger)")
    parser.set_defaults(func=run)


def _matching_keyframes(images, size):
    """Resize keyframe images ``[M,h,w,3]`` to ``size`` (H, W) if needed (OpenCV INTER_AREA / INTER_CUBIC)."""
    import cv2
    import numpy as np
    import torch

    height, width = size
    if tuple(images.shape[1:3]) == (height, width):
        return images
    interpolation = cv2.INTER_AREA if width < images.shape[2] else cv2.INTER_CUBIC
    resized = [cv2.resize(image, (width, height), interpolation=interpolation) for image in images.numpy()]
    return torch.from_numpy(np.clip(np.stack(resized), 0.0, 1.0))


def run(args: argparse.Namespace) -> int:
    """Load keyframes and frames, estimate flow, propagate, blend, write the mp4."""
    from ..common.cache import check_writable
    from ..common.keyframes import from_indices
    from ..common.settings import field_values
    from ..flow.dis import DisFlow
    from ..flow.estimate import estimate_flow
    from ..flow.pairs import consecutive_pairs
    from ..propagation.blend import blend_video
    from ..propagation.guides import GuideWeights
    from ..propagation.keyframe_files import image_files, load_keyframe_folder, read_image
    from ..propagation.params import SynthesisParams
    from ..propagation.sequence import plan_chains, propagate_video
    from ..propagation.settings import poisson_weights
    from ..videoio.reader import load_frames
    from ..videoio.writer import save_video
    from ._progress import Progress, note_kernel_compile

    started = time.perf_counter()
    output = check_writable(args.output or Path.cwd() / f"{args.video.stem}_propagated.mp4")  # before any work
    values = vars(args)
    params = SynthesisParams(**field_values(SynthesisParams, values)).validate()
    weights = GuideWeights(**field_values(GuideWeights, values))
    key_height, key_width = read_image(image_files(args.keyframe_dir)[0]).shape[:2]
    width = args.custom_width or (0 if args.custom_height else key_width)
    height = args.custom_height or (0 if args.custom_width else key_height)
    video = load_frames(args.video, frame_load_cap=args.frame_load_cap, skip_first_frames=args.skip_first_frames,
                        custom_width=width, custom_height=height)
    frames = video.images
    count, height, width = frames.shape[:3]
    keyframe_images, indices = load_keyframe_folder(args.keyframe_dir, args.keyframe_interval, count)
    if tuple(keyframe_images.shape[1:3]) != (height, width):
        print(f"note: keyframes resized from {keyframe_images.shape[2]}x{keyframe_images.shape[1]} to the "
              f"frames' {width}x{height}", file=sys.stderr)
        keyframe_images = _matching_keyframes(keyframe_images, (height, width))
    keyframes = from_indices(indices, count)
    print(f"loaded {count} frames at {width}x{height}, {video.fps:.3f} fps; keyframes {list(keyframes.indices)}")

    pairs = consecutive_pairs(count)
    flow = estimate_flow(frames, pairs, DisFlow(args.dis_preset), progress=Progress("flow pairs", len(pairs)))
    flowed = time.perf_counter()
    print(f"flow: {len(pairs)} pairs in {flowed - started:.1f} s (cached for re-runs)")

    total = sum(len(targets) for _, _, targets in plan_chains(keyframes, args.direction))
    note_kernel_compile()
    propagation = propagate_video(frames, keyframe_images, keyframes, flow, params, weights, args.direction,
                                  args.temporal_nnf_init, args.backend,
                                  progress=Progress("propagated frames", total))
    stats = propagation.stats
    print(f"propagation: {propagation.describe()}; {stats['frames_computed']} frames synthesized "
          f"({stats['seconds_per_frame']:.2f} s per frame), {stats['frames_cached']} reused from the cache")

    blended, _ = blend_video(propagation, histogram=args.histogram_blend, poisson=args.poisson_blend,
                             poisson_weights=poisson_weights(args.poisson_luma_weight, args.poisson_chroma_weight),
                             progress=Progress("blended frames", count))
    written = save_video(blended, output, video.fps, crf=args.crf, audio_source=video.info,
                         progress=Progress("written frames", count), path_name="output")
    print(f"wrote {written}: {count} frames at {width}x{height}, {video.fps:.3f} fps "
          f"in {time.perf_counter() - started:.1f} s in total")
    return 0
