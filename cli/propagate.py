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
segments are kept on disk, so an interrupted run resumes where it stopped. With ``--mask`` only the masked
region is restyled: outside the mask grown by ``--mask-grow`` plus ``--feather`` pixels the frames are the
source frames (before encoding). With ``--executor ray`` the
segments run as Ray tasks on a Ray cluster (``--ray-address``; a local Ray when none runs), several at once;
the output file is the same.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``propagate`` command (its settings' options generated from their declarations)."""
    from ..common.masks import MASK_SETTINGS
    from ..flow.settings import DIS_PRESET
    from ..propagation.settings import BLEND, KEYFRAME_FILE_INTERVAL, PROPAGATE
    from ..segments.executors import EXECUTOR_SETTINGS
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
    region = parser.add_argument_group("restyle only a region (white = restyle, black = keep the source)")
    region.add_argument("--mask", dest="mask", type=Path, default=None, metavar="DIR_OR_IMAGE",
                        help="folder of per-frame mask images named by frame index like the keyframes (0013.png), "
                             "or one image: the first frame's mask, carried through the video by the optical flow")
    add_options(region, MASK_SETTINGS)
    add_options(parser.add_argument_group("where segments run (Ray: pip install ray)"), EXECUTOR_SETTINGS)
    parser.add_argument("--crf", type=int, default=19, help="H.264 quality (lower = better, larger)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Index the video, check everything, then propagate and blend segment by segment into the mp4."""
    from ..common.cache import check_writable
    from ..common.errors import input_error
    from ..segments.executors import open_executor
    from ..segments.job import SegmentSettings

    started = time.perf_counter()
    output = check_writable(args.output or Path.cwd() / f"{args.video.stem}_propagated.mp4")  # before any work
    if args.mask is not None and not Path(args.mask).expanduser().exists():  # before Ray connects or the video is read
        raise input_error("mask", "an existing folder of per-frame images, or one image of the first frame", str(args.mask),
                          "give an existing folder or image file")
    values = vars(args)
    settings = SegmentSettings.from_values(values)
    settings.params.validate()
    with open_executor(values) as executor:  # connects to Ray now (errors before any work); closed after
        return _propagate(args, output, settings, executor, started)


def _propagate(args, output, settings, executor, started) -> int:
    from ..common.keyframes import from_indices
    from ..propagation.keyframe_files import KeyframeFolder, image_files, read_image
    from ..segments.engine import prepare_video
    from ..videoio.frame_index import index_video
    from ._progress import Progress, note_kernel_compile

    key_height, key_width = read_image(image_files(args.keyframe_dir)[0]).shape[:2]
    width = args.custom_width or (0 if args.custom_height else key_width)
    height = args.custom_height or (0 if args.custom_width else key_height)
    index = index_video(args.video, frame_load_cap=args.frame_load_cap, skip_first_frames=args.skip_first_frames,
                        custom_width=width, custom_height=height)
    count, (height, width), fps = index.frame_count, index.frame_size, float(index.info.loaded_fps)
    keyframe_images = KeyframeFolder(args.keyframe_dir, args.keyframe_interval, count, size=(height, width))
    if keyframe_images.image_size != (height, width):
        print(f"note: keyframes resized from {keyframe_images.image_size[1]}x{keyframe_images.image_size[0]} to "
              f"the frames' {width}x{height}", file=sys.stderr)
    keyframes = from_indices(keyframe_images.indices, count)
    print(f"loaded {count} frames at {width}x{height}, {fps:.3f} fps; keyframes {list(keyframes.indices)}")

    run = prepare_video(index, keyframe_images, keyframes, output, settings, crf=args.crf, executor=executor,
                        mask=args.mask, mask_grow=args.mask_grow, feather=args.feather)
    if run.region is not None:
        kind = "per-frame masks" if Path(args.mask).is_dir() else "one mask (the first frame's, carried by the optical flow)"
        print(f"region: {kind} from {args.mask}, grown {args.mask_grow} px, feathered {args.feather} px")
    print(f"segments: {run.describe()} (finished segments are kept: an interrupted run resumes)")
    if executor.name == "ray":
        from ..segments.ray_executor import describe

        print(f"{describe(executor)}; {run.max_in_flight} segments in flight")
    note_kernel_compile()
    written = run.write(progress=Progress("frames", count))
    print(f"wrote {written}: {count} frames at {width}x{height}, {fps:.3f} fps "
          f"in {time.perf_counter() - started:.1f} s in total")
    return 0
