"""``rerender_cli.py evaluate OUTPUT --source SOURCE``: temporal quality of a stylized video, as numbers.

Example (the propagated sample against its source and the per-frame filter's keyframes)::

    python rerender_cli.py propagate tests/data/Megamind.avi tests/data/megamind_keys -o megamind_propagated.mp4
    python rerender_cli.py evaluate megamind_propagated.mp4 --source tests/data/Megamind.avi \\
        --keyframes tests/data/megamind_keys --json metrics.json --plot metrics.png

Prints a table of the means: **warp error** (Lai et al. 2018: squared RGB change between consecutive
output frames that the source's optical flow does not explain; lower = steadier), **flicker** (VBench:
``(255 − mean |frame difference|)/255``; 1 = no change) and, with ``--reference``, PSNR and SSIM against it
(also without the keyframes when ``--keyframes`` is given). Pairs of frames across a shot cut of the source
are left out (``--cut-threshold 0`` measures them too). The videos are read frame by frame, so a long clip
needs little memory. The source is resized (cover, centre crop) to the output's size when they differ; a
reference must have the output's size. ``--json`` holds the means under ``warp_error``, ``flicker``,
``psnr``, ``ssim`` and the per-frame lists under ``per_frame``; ``--plot`` draws them over time.

Exit status: 0 measured, 2 bad input (the message names the option and the fix).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` command."""
    from ..common.scene_cuts import DEFAULT_THRESHOLD
    from ..flow.dis import DEFAULT_PRESET, PRESETS

    parser = subparsers.add_parser(
        "evaluate", help="measure a stylized video's temporal consistency (warp error, flicker, PSNR/SSIM)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, help="the stylized video to measure")
    parser.add_argument("--source", type=Path, required=True, help="the video it was made from (its motion)")
    parser.add_argument("--reference", type=Path, default=None, help="a video to compare with frame by frame")
    parser.add_argument("--keyframes", default="",
                        help="keyframe indices '0, 10, 20', or a folder of keyframe images named by frame index")
    parser.add_argument("--json", type=Path, default=None, help="write the means and per-frame values here")
    parser.add_argument("--plot", type=Path, default=None, help="write the per-frame chart here (PNG)")
    parser.add_argument("--frames", type=int, default=0, help="measure at most N frames (0 = all)")
    parser.add_argument("--skip", type=int, default=0,
                        help="skip the first N frames of SOURCE (the skip the output was made with)")
    parser.add_argument("--cut-threshold", type=float, default=DEFAULT_THRESHOLD,
                        help="shot-cut threshold in grey levels; pairs across a cut are left out (0 = keep all)")
    parser.add_argument("--flow-preset", choices=list(PRESETS), default=DEFAULT_PRESET, help="DIS preset")
    parser.set_defaults(func=run)


def _keyframes(text: str, count: int) -> tuple[int, ...]:
    from ..common.errors import input_error
    from ..common.keyframes import parse_list
    from ..propagation.keyframe_files import keyframe_files

    if not text.strip():
        return ()
    if Path(text).expanduser().is_dir():
        indices = tuple(index for index, _ in keyframe_files(Path(text).expanduser()) if index < count)
        if not indices:
            raise input_error("--keyframes", f"keyframe images of frames below {count}", f"none in {text}",
                              "name the files by frame index (0000.png) or list the indices")
        return indices
    try:
        return parse_list(text, count).indices
    except ValueError as error:
        raise input_error("--keyframes", "indices such as '0, 10, 20' or a folder of keyframe images",
                          repr(text), str(error)) from None


def run(args: argparse.Namespace) -> int:
    """Open the videos, check sizes and lengths, measure, print the table, write JSON and plot."""
    import cv2

    from ..common.cache import atomic_path
    from ..metrics.evaluate import evaluate_video
    from ..metrics.plot import plot_report
    from ..metrics.streams import from_file

    from ..common.errors import input_error

    if args.plot and not cv2.haveImageWriter(str(args.plot)):
        raise input_error("--plot", "an image file name OpenCV can write (.png)", str(args.plot), "use chart.png")
    started = time.perf_counter()
    output = from_file(args.output, "OUTPUT", args.frames)
    height, width = output.size
    source = from_file(args.source, "--source", args.frames, args.skip, width, height)
    reference = from_file(args.reference, "--reference", args.frames) if args.reference else None
    keyframes = _keyframes(args.keyframes, output.count)
    print(f"measuring {output.count} frames at {width}x{height}", flush=True)

    def progress(done: int) -> None:
        if done % 50 == 0:
            print(f"  {done}/{output.count} frames ({time.perf_counter() - started:.0f} s)", flush=True)

    report = evaluate_video(output, source, reference, keyframes=keyframes, cut_threshold=args.cut_threshold,
                            flow_preset=args.flow_preset, progress=progress)
    report.source.update({"output": str(args.output), "source": str(args.source),
                          "reference": str(args.reference) if args.reference else None, "skip": args.skip})
    print(report.table())
    if args.json:
        with atomic_path(args.json) as temporary:
            temporary.write_text(json.dumps(report.to_json(), indent=1))
        print(f"wrote {args.json}")
    if args.plot:
        with atomic_path(args.plot) as temporary:
            cv2.imwrite(str(temporary), cv2.cvtColor(plot_report(report), cv2.COLOR_RGB2BGR))
        print(f"wrote {args.plot}")
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0
