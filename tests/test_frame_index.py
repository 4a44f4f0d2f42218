"""Frame index: random access to decoded frames equals the sequential load bit for bit, with fallbacks.

Data: the bundled Megamind.avi (XVID with packed B-frames in AVI: decoded frames carry shuffled pts 1, 2, 3, 5,
4, …; key frames at 0, 1, 98, 154, 200) and an H.264 mp4 written here with B-frames and a key frame every
10 frames (5 GOPs).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil

import av
import numpy as np
import pytest

from rerender_video.common.errors import InputError
from rerender_video.videoio import frame_index
from rerender_video.videoio.frame_index import index_video, iter_read_frames, read_frames
from rerender_video.videoio.reader import load_frames, to_float

SELECTIONS = [
    dict(custom_width=128),
    dict(skip_first_frames=90, select_every_nth=3, frame_load_cap=40, custom_width=96),
    dict(force_rate=10.0, skip_first_frames=4, custom_width=96),     # below the source rate: frames dropped
    dict(force_rate=48.0, frame_load_cap=120, custom_width=64),      # above it: frames repeat
]


def ranges(count: int) -> list[list[int]]:
    """Arbitrary reads: the start, across key frames, the end, scattered, unsorted with repeats."""
    rng = np.random.default_rng(count)
    return [[0, 1, 2], list(range(count // 3, count // 3 + 9)), [count - 2, count - 1],
            sorted(rng.choice(count, size=min(count, 12), replace=False).tolist()),
            [count - 1, 3, 3, count // 2]]


@pytest.fixture(scope="module")
def bframes_mp4(tmp_path_factory):
    """A 50-frame 96x64 H.264 mp4 with B-frames (bf 3) and a key frame every 10 frames, moving content."""
    path = tmp_path_factory.mktemp("mp4") / "bframes.mp4"
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as output:
        stream = output.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.options = {"g": "10", "keyint_min": "10", "bf": "3", "sc_threshold": "0"}
        for number in range(50):
            image = np.zeros((64, 96, 3), np.uint8)
            image[:, (number * 3) % 96:, 0] = 200
            image[(number * 2) % 64:, :, 1] = (number * 5) % 255
            image = (image + rng.integers(0, 30, image.shape)).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = number
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    with av.open(str(path)) as container:
        packets = [packet for packet in container.demux(video=0) if packet.size]
    assert any(packet.pts != packet.dts for packet in packets), "the test clip should hold B-frames"
    return path


def assert_reads_match_the_load(path, widgets, caplog):
    index = index_video(path, **widgets)
    loaded = load_frames(path, **widgets)
    assert index.info == loaded.info
    assert index.frame_count == loaded.frame_count
    with caplog.at_level(logging.INFO, logger=frame_index.__name__):
        for wanted in ranges(index.frame_count):
            frames = read_frames(index, wanted)
            assert frames.dtype == np.uint8 and frames.shape == (len(wanted), *index.frame_size, 3)
            assert np.array_equal(to_float(frames), loaded.images[wanted].numpy()), (widgets, wanted)
    assert "failed" not in caplog.text  # the seeks landed: no read fell back to a sequential decode


@pytest.mark.parametrize("widgets", SELECTIONS)
def test_reads_equal_the_load_on_megamind(megamind_path, widgets, caplog):
    assert_reads_match_the_load(megamind_path, widgets, caplog)


@pytest.mark.parametrize("widgets", [{}, dict(skip_first_frames=7, select_every_nth=2, frame_load_cap=20),
                                     dict(force_rate=10.0)])
def test_reads_equal_the_load_on_an_mp4_with_b_frames_and_gops(bframes_mp4, widgets, caplog):
    index = index_video(bframes_mp4)
    assert np.flatnonzero(index.key_frame).tolist() == [0, 10, 20, 30, 40]
    assert_reads_match_the_load(bframes_mp4, widgets, caplog)


def test_reads_seek_instead_of_decoding_from_the_start(megamind_path, monkeypatch):
    index = index_video(megamind_path, custom_width=64)
    starts = []
    attempt = frame_index._attempt

    def spy(index, source, start, wanted):
        starts.append(start)
        return attempt(index, source, start, wanted)

    monkeypatch.setattr(frame_index, "_attempt", spy)
    read_frames(index, [160, 161])
    assert starts == [154]  # the last key frame before frame 160, one attempt


def test_streamed_read_yields_in_order_with_repeats(megamind_path):
    index = index_video(megamind_path, force_rate=48.0, frame_load_cap=30, custom_width=64)
    streamed = np.stack(list(iter_read_frames(index, range(30))))
    assert np.array_equal(streamed, read_frames(index, list(range(30))))
    assert np.array_equal(streamed[0], streamed[1])  # force_rate above the source rate repeats frames


def test_unidentifiable_frames_fall_back_to_a_sequential_decode(megamind_path, caplog):
    index = index_video(megamind_path, custom_width=64)
    reference = load_frames(megamind_path, custom_width=64).images.numpy()
    late = index.has_pts.copy()
    late[105:] = False  # frames from 105 on cannot be identified by pts after a seek
    broken = dataclasses.replace(index, has_pts=late)
    wanted = list(range(98, 112))
    with caplog.at_level(logging.INFO, logger=frame_index.__name__):
        frames = read_frames(broken, wanted)
    assert np.array_equal(to_float(frames), reference[wanted])
    assert "key frame 98 failed" in caplog.text and "sequential" in caplog.text


def test_a_frame_that_no_longer_matches_its_crc_names_the_frame(megamind_path):
    index = index_video(megamind_path, skip_first_frames=10, custom_width=64)
    crc = index.crc.copy()
    crc[130] ^= 1  # as if source frame 130 had changed since indexing
    with pytest.raises(InputError, match=r"loaded frame 120 \(source frame 130\)") as error:
        read_frames(dataclasses.replace(index, crc=crc), [118, 119, 120, 121])
    assert "other pixels" in str(error.value)


def test_a_source_truncated_after_indexing_names_the_first_missing_frame(megamind_path, tmp_path):
    copy = tmp_path / "clip.avi"
    shutil.copyfile(megamind_path, copy)
    index = index_video(copy, custom_width=64)
    copy.write_bytes(megamind_path.read_bytes()[:250_000])
    assert read_frames(index, [3]).shape[0] == 1  # the start still decodes
    with pytest.raises(InputError, match=r"loaded frame 200 \(source frame 200\)") as error:
        read_frames(index, [200, 201])
    assert "truncated or replaced" in str(error.value)


def test_the_index_is_cached_by_the_files_fingerprint(megamind_path, tmp_path, monkeypatch):
    copy = tmp_path / "clip.avi"
    shutil.copyfile(megamind_path, copy)
    scans = []
    scan = frame_index._scan
    monkeypatch.setattr(frame_index, "_scan", lambda *args: scans.append(1) or scan(*args))
    first = index_video(copy, custom_width=64)
    again = index_video(copy, frame_load_cap=5)
    assert len(scans) == 1 and first.fingerprint == again.fingerprint
    stat = copy.stat()
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    touched = index_video(copy, custom_width=64)
    assert len(scans) == 2 and touched.fingerprint != first.fingerprint
    assert touched.key() != first.key()


def test_bad_reads_and_widgets_are_refused(megamind_path):
    index = index_video(megamind_path, frame_load_cap=10, custom_width=64)
    with pytest.raises(InputError, match=r"loaded_indices.*\[0, 9\]"):
        read_frames(index, [3, 10])
    with pytest.raises(InputError, match="non-decreasing"):
        list(iter_read_frames(index, [4, 2]))
    # the same rule as a load: a cap past the end loads the frames there are, with a note
    assert index_video(megamind_path, skip_first_frames=260, frame_load_cap=20, custom_width=64).frame_count == 10
    with pytest.raises(InputError, match="select_every_nth"):
        index_video(megamind_path, select_every_nth=0)
