#!/usr/bin/env python3
"""The picture of a masked result on the bundled clip: ``workflows/rerender_masked.jpg`` (README, template).

1. Writes the first frame's mask: a box around the woman (x 55–194, y 5–263 of the 360×264 frame), as
   ``rerender_masked.json`` builds it with SolidMask + MaskComposite.
2. Runs the ``propagate`` command on ``tests/data/Megamind.avi`` with the bundled stylized keyframes
   (``tests/data/megamind_keys``, frames 0, 1, 13, 25), ``--frames 26 --mask <box> --crf 12``: the mask is
   carried through the clip by the optical flow, the rest of the frame stays the source.
3. Decodes frame ``--frame`` of the source and of the output and writes them side by side (source | masked
   result) as a JPEG.

Run from the repository root::

    python benchmarks/masked_thumbnail.py --output workflows/rerender_masked.jpg
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from rerender_cli import load_pack  # noqa: E402

load_pack()

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

BOX = (55, 5, 195, 264)   # x0, y0, x1, y1 on the 360×264 frame


def decoded(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=ROOT / "workflows" / "rerender_masked.jpg")
    parser.add_argument("--frame", type=int, default=19)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        mask = np.zeros((264, 360), np.uint8)
        x0, y0, x1, y1 = BOX
        mask[y0:y1, x0:x1] = 255
        cv2.imwrite(str(work / "mask.png"), mask)
        video = work / "masked.mp4"
        subprocess.run([sys.executable, str(ROOT / "rerender_cli.py"), "propagate",
                        str(ROOT / "tests" / "data" / "Megamind.avi"), str(ROOT / "tests" / "data" / "megamind_keys"),
                        "--frames", "26", "--mask", str(work / "mask.png"), "--crf", "12", "--output", str(video)],
                       check=True)
        result = decoded(video)[args.frame]
    from rerender_video.videoio.reader import load_frames

    source = load_frames(ROOT / "tests" / "data" / "Megamind.avi", frame_load_cap=args.frame + 1, custom_width=360,
                         custom_height=264).images[args.frame].numpy()
    source = np.rint(source * 255).astype(np.uint8)
    picture = np.concatenate([source, np.full((264, 8, 3), 255, np.uint8), result], axis=1)
    for text, x in (("source", 8), ("restyled inside the mask only", 376)):
        cv2.putText(picture, text, (x, 254), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.output), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
