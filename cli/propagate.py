"""``rerender_cli.py propagate VIDEO KEYFRAME_DIR``: propagate stylized keyframes to the whole video.

Example (the bundled sample and keyframes)::

    python rerender_cli.py propagate tests/data/Megamind.avi tests/data/megamind_keys --frames 49 \\
        --output megamind_propagated.mp4

Keyframe files carry their frame index as the last number of the name (``0000.png``, ``key_0012.jpg``);
with ``--interval K`` the sorted files are frames 0, K, 2K, … instead. Frames are loaded at the keyframes'
size unless ``--width``/``--height`` is given (keyframes are then resized to the frames). Keyframes past the
loaded frames (``--frames``) are left out. The video is processed segment by segment between keyframes, from
the video file to the mp4 (memory set by the keyframe interval and the frame size, not the length): per segment
optical flow between consecutive frames (DIS), EbSynth-style propagation of its keyframes forward and backward,
temporal blend; the frames go into an H.264 mp4 at the source frame rate with the source audio. Finished
segments are kept on disk, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``propagate`` command."""
    from ..flow.dis import DEFAULT_PRESET, PRESETS
    from ..kernels.select import CHOICES as BACKEND_CHOICES
    from ..propagation.guides import GuideWeights
    from ..propagation.params import SynthesisParams
    from ..propagation.sequence import DIRECTION_MODES

    params, weights = SynthesisParams(), GuideWeights()
    parser = subparsers.add_parser(
        "propagate", help="propagate stylized keyframes through a video (EbSynth + temporal blend) to an mp4",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", type=Path, help="input video file")
    parser.add_argument("keyframe_dir", type=Path, help="folder of stylized keyframes named by frame index")
    parser.add_argument("--output", "-o", type=Path, default=None,
                        help="mp4 to write (default: <video name>_propagated.mp4 in the current folder)")
    parser.add_argument("--frames", type=int, default=0, help="load at most N frames (0 = all)")
    parser.add_argument("--skip", type=int, default=0, help="skip the first N frames of the video")
    parser.add_argument("--width", type=int, default=0, help="frame width (0 = the keyframes' width)")
    parser.add_argument("--height", type=int, default=0, help="frame height (0 = the keyframes' height)")
    parser.add_argument("--interval", type=int, default=0,
                        help="keyframes are frames 0, K, 2K, … in file-name order (0 = indices from file names)")
    parser.add_argument("--direction", choices=DIRECTION_MODES, default="both",
                        help="propagation between keyframes (default both, needed for the blend)")
    synthesis = parser.add_argument_group("synthesis (EbSynth)")
    synthesis.add_argument("--patch-size", type=int, default=params.patch_size, help="odd patch side in pixels")
    synthesis.add_argument("--search-vote-iters", type=int, default=params.search_vote_iters,
                           help="search-vote iterations per pyramid level")
    synthesis.add_argument("--patchmatch-iters", type=int, default=params.patchmatch_iters,
                           help="PatchMatch iterations per search-vote iteration")
    synthesis.add_argument("--uniformity", type=float, default=params.uniformity, help="uniformity weight")
    synthesis.add_argument("--pyramid-levels", type=int, default=params.pyramid_levels, help="0 = automatic")
    synthesis.add_argument("--extra-pass-3x3", action="store_true", help="extra 3x3-patch pass at the end")
    synthesis.add_argument("--seed", type=int, default=params.seed, help="PatchMatch random seed")
    synthesis.add_argument("--no-temporal-nnf-init", action="store_true",
                           help="run the full pyramid on every frame instead of starting from the previous NNF")
    synthesis.add_argument("--backend", choices=BACKEND_CHOICES, default="auto", help="patch matching")
    guides = parser.add_argument_group("guide weights")
    guides.add_argument("--colour-weight", type=float, default=weights.colour, help="original frames")
    guides.add_argument("--edge-weight", type=float, default=weights.edge, help="Laplacian edges")
    guides.add_argument("--positional-weight", type=float, default=weights.positional, help="advected grid")
    guides.add_argument("--temporal-weight", type=float, default=weights.temporal, help="previous output, warped")
    blend = parser.add_argument_group("blend")
    blend.add_argument("--no-histogram", action="store_true", help="min-error selection instead of the "
                                                                   "histogram-preserving blend")
    blend.add_argument("--poisson", action="store_true", help="screened Poisson gradient blending")
    parser.add_argument("--flow-preset", choices=list(PRESETS), default=DEFAULT_PRESET, help="DIS preset")
    parser.add_argument("--crf", type=int, default=19, help="H.264 quality (lower = better, larger)")
    parser.set_defaults(func=run)


class _Printer:
    """Text progress for a terminal: one line per step, at most every ``seconds``."""

    def __init__(self, label: str, total: int, seconds: float = 5.0) -> None:
        self.label, self.total, self.seconds = label, max(total, 1), seconds
        self.started = self.last = time.perf_counter()

    def __call__(self, done: int, preview=None) -> None:
        now = time.perf_counter()
        if done >= self.total or now - self.last >= self.seconds:
            self.last = now
            print(f"  {self.label} {done}/{self.total} ({now - self.started:.0f} s)", flush=True)


def run(args: argparse.Namespace) -> int:
    """Index the video, check everything, then propagate and blend segment by segment into the mp4."""
    from ..common.keyframes import from_indices
    from ..flow.dis import DisFlow
    from ..propagation.guides import GuideWeights
    from ..propagation.keyframe_files import KeyframeFolder, image_files, read_image
    from ..propagation.params import SynthesisParams
    from ..segments.engine import prepare_video
    from ..segments.job import SegmentSettings
    from ..videoio.frame_index import index_video

    started = time.perf_counter()
    params = SynthesisParams(patch_size=args.patch_size, pyramid_levels=args.pyramid_levels,
                             search_vote_iters=args.search_vote_iters, patchmatch_iters=args.patchmatch_iters,
                             uniformity=args.uniformity, extra_pass_3x3=args.extra_pass_3x3, seed=args.seed).validate()
    weights = GuideWeights(args.colour_weight, args.edge_weight, args.positional_weight, args.temporal_weight)
    key_height, key_width = read_image(image_files(args.keyframe_dir)[0]).shape[:2]
    width = args.width or (0 if args.height else key_width)
    height = args.height or (0 if args.width else key_height)
    index = index_video(args.video, frame_load_cap=args.frames, skip_first_frames=args.skip,
                        custom_width=width, custom_height=height)
    count, (height, width), fps = index.frame_count, index.frame_size, float(index.info.loaded_fps)
    keyframe_images = KeyframeFolder(args.keyframe_dir, args.interval, count, size=(height, width))
    if keyframe_images.image_size != (height, width):
        print(f"note: keyframes resized from {keyframe_images.image_size[1]}x{keyframe_images.image_size[0]} to "
              f"the frames' {width}x{height}", file=sys.stderr)
    keyframes = from_indices(keyframe_images.indices, count)
    print(f"loaded {count} frames at {width}x{height}, {fps:.3f} fps; keyframes {list(keyframes.indices)}")

    settings = SegmentSettings(params, weights, args.direction, not args.no_temporal_nnf_init,
                               histogram=not args.no_histogram, poisson=args.poisson, flow=DisFlow(args.flow_preset),
                               backend=args.backend)
    output = args.output or Path.cwd() / f"{args.video.stem}_propagated.mp4"
    run = prepare_video(index, keyframe_images, keyframes, output, settings, crf=args.crf)
    print(f"segments: {run.describe()} (finished segments are kept: an interrupted run resumes)")
    written = run.write(progress=_Printer("frames", count))
    print(f"wrote {written}: {count} frames at {width}x{height}, {fps:.3f} fps "
          f"in {time.perf_counter() - started:.1f} s in total")
    return 0
