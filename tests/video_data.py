"""Damaged videos made by the tests: an mp4 cut short whose index sits at the front.

Import it as ``rerender_video.tests.video_data`` (tests/conftest.py makes the pack importable).
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def cut_short_faststart_mp4(path: Path, frames: int = 40, decodable: int = 4, size=(96, 64)) -> Path:
    """Write a ``frames``-frame H.264 mp4 with its index at the front (``movflags=faststart``), then
    cut the file inside the packet of frame ``decodable``: the header still declares ``frames``
    frames, only the first ``decodable`` are whole (a download or copy that stopped early).

    Frames are noise (every packet about the same size, no B-frames with ``ultrafast``).
    """
    width, height = size
    rng = np.random.default_rng(0)
    whole = path.with_name(f"{path.stem}.whole{path.suffix}")
    with av.open(str(whole), "w", options={"movflags": "faststart"}) as output:
        stream = output.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "10", "preset": "ultrafast"}
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (height, width, 3), np.uint8), format="rgb24")
            frame.pts = index
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    with av.open(str(whole)) as container:
        packets = [(packet.pos, packet.size) for packet in container.demux(video=0) if packet.size]
    data = whole.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat"), "the index must sit at the front"
    position, size_bytes = packets[decodable]
    path.write_bytes(data[:position + size_bytes // 2])
    whole.unlink()
    return path
