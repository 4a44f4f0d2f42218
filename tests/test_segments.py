"""Segment engine: bit-exact equality with the in-RAM pipeline, resume, bad input, plan and memory guard.

Data: 60 frames of the bundled Megamind.avi at 128 px wide (frames from the same decode path as any size), the
protocol's deterministic "style" (OpenCV stylization + posterisation) as stylized keyframes, and a short
synthesis schedule (2 search–vote × 2 PatchMatch iterations): equality does not depend on the schedule, and the
tests stay fast on 2 cores. The in-RAM reference is what the nodes run: Load Video → Estimate Flow (consecutive)
→ EbSynth Propagate → Temporal Blend → Save Video (the library functions they call).
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from rerender_video.benchmarks._anchor_protocol import stylize_rgb
from rerender_video.common.errors import InputError
from rerender_video.common.keyframes import Keyframes, from_indices, scene_aware, uniform
from rerender_video.common.scene_cuts import detect_scene_cuts
from rerender_video.flow.dis import DisFlow
from rerender_video.flow.estimate import estimate_flow
from rerender_video.flow.pairs import consecutive_pairs
from rerender_video.propagation.blend import blend_video
from rerender_video.propagation.params import SynthesisParams
from rerender_video.propagation.sequence import propagate_video
from rerender_video.segments import engine, memory
from rerender_video.segments.engine import prepare_video, propagate_to_video
from rerender_video.segments.executors import get_executor
from rerender_video.segments.job import SegmentSettings, run_segment
from rerender_video.segments.memory import segment_bytes
from rerender_video.segments.plan import output_order, plan_segments
from rerender_video.videoio.frame_index import index_video
from rerender_video.videoio.reader import load_frames
from rerender_video.videoio.writer import save_video

FRAMES, WIDTH = 60, 128
FAST = SynthesisParams(search_vote_iters=2, patchmatch_iters=2)


class Clip:
    """One load of Megamind: the in-RAM frames, their stylizations, the index, and the in-RAM FLOW."""

    def __init__(self, path: Path, skip: int, cache: Path) -> None:
        self.path, self.widgets = path, dict(frame_load_cap=FRAMES, skip_first_frames=skip, custom_width=WIDTH)
        self.video = load_frames(path, **self.widgets)
        self.styled = torch.from_numpy(np.stack([stylize_rgb(frame) for frame in self.video.images.numpy()]))
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("RERENDER_CACHE_DIR", str(cache))
            self.flow = estimate_flow(self.video.images, consecutive_pairs(FRAMES), DisFlow("medium"))

    def index(self):
        return index_video(self.path, **self.widgets)

    def keys(self, keyframes: Keyframes) -> torch.Tensor:
        return self.styled[list(keyframes.indices)]


@pytest.fixture(scope="module")
def clip(megamind_path, tmp_path_factory):
    return Clip(megamind_path, 0, tmp_path_factory.mktemp("flow"))


@pytest.fixture(scope="module")
def cut_clip(megamind_path, tmp_path_factory):
    """Frames 70–129: the shot changes at source frame 98, loaded frame 28."""
    return Clip(megamind_path, 70, tmp_path_factory.mktemp("flow-cut"))


def decoded(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def in_ram(clip: Clip, keyframes: Keyframes, settings: SegmentSettings, path: Path) -> np.ndarray:
    """The nodes' pipeline on the whole clip (its flows were estimated once, by the fixture)."""
    propagation = propagate_video(clip.video.images, clip.keys(keyframes), keyframes, clip.flow, settings.params,
                                  settings.weights, settings.direction, settings.temporal_nnf_init)
    blended, _ = blend_video(propagation, settings.histogram, settings.poisson, settings.poisson_weights)
    return decoded(save_video(blended, path, clip.video.fps, audio_source=clip.video.info))


def assert_not_trivial(video: np.ndarray) -> None:
    """Equality means something only if the frames carry detail and change over time (frame 0 is black)."""
    assert np.median([frame.std() for frame in video]) > 15
    assert np.abs(np.diff(video.astype(np.int16), axis=0)).mean() > 1


def by_engine(clip: Clip, keyframes: Keyframes, settings: SegmentSettings, path: Path, **options) -> np.ndarray:
    return decoded(propagate_to_video(clip.index(), clip.keys(keyframes), keyframes, path, settings, **options))


@pytest.fixture(scope="module")
def complete(clip, tmp_path_factory):
    """The uninterrupted run (K = 12, chunks of 4 frames)."""
    folder = tmp_path_factory.mktemp("complete")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RERENDER_CACHE_DIR", str(folder / "cache"))
        return by_engine(clip, uniform(FRAMES, 12), SegmentSettings(FAST), folder / "complete.mp4", chunk=4)


# --- correctness: bit for bit the in-RAM result -----------------------------------------------------------------

@pytest.mark.parametrize("keyframes, direction, poisson, chunk", [
    (uniform(FRAMES, 12), "both", False, 5),
    (uniform(FRAMES, 12), "both", True, 16),
    (from_indices([5, 17, 29, 41, 53], FRAMES), "both", False, 16),   # a backward-only head
    (from_indices([20], FRAMES), "both", False, 5),                   # one keyframe: head + streamed tail
    (uniform(FRAMES, 12), "forward", False, 5),                       # every segment streamed
], ids=["K12", "K12-poisson", "first-key-5", "single-key", "forward"])
def test_engine_equals_the_in_ram_pipeline(clip, keyframes, direction, poisson, chunk, tmp_path):
    settings = SegmentSettings(FAST, direction=direction, poisson=poisson)
    expected = in_ram(clip, keyframes, settings, tmp_path / "in_ram.mp4")
    got = by_engine(clip, keyframes, settings, tmp_path / "engine.mp4", chunk=chunk)
    assert got.shape == expected.shape == (FRAMES, 88, WIDTH, 3)
    assert_not_trivial(expected)
    different = [frame for frame in range(FRAMES) if not np.array_equal(got[frame], expected[frame])]
    assert not different, f"frames {different} differ"


def test_engine_equals_the_in_ram_pipeline_on_scene_cut_keyframes(cut_clip, tmp_path):
    keyframes = scene_aware(FRAMES, 12, detect_scene_cuts(cut_clip.video.images))
    assert keyframes.shot_starts == (28,) and keyframes.indices == (0, 12, 24, 28, 40, 52)
    plans = plan_segments(keyframes)
    assert [(p.previous_key, p.next_key, p.frames) for p in plans][2] == (24, None, range(25, 28))  # not across
    settings = SegmentSettings(FAST)
    expected = in_ram(cut_clip, keyframes, settings, tmp_path / "in_ram.mp4")
    assert np.array_equal(by_engine(cut_clip, keyframes, settings, tmp_path / "engine.mp4", chunk=5), expected)


def test_jobs_pickle_and_run_anywhere_with_the_same_frames(clip, complete, tmp_path):
    """An executor that ships each job through pickle and hands back whole arrays (as a remote one would)."""
    class Pickling:
        name = "pickling"
        cancelled = False

        def map_ordered(self, fn, jobs, max_in_flight=1, progress=None, finished=None):
            for job in jobs:
                yield np.stack(list(fn(pickle.loads(pickle.dumps(job)))))

        def cancel(self):
            self.cancelled = True

    executor = Pickling()
    remote = by_engine(clip, uniform(FRAMES, 12), SegmentSettings(FAST), tmp_path / "remote.mp4", executor=executor)
    assert np.array_equal(remote, complete) and executor.cancelled


def test_progress_counts_segments_finished_ahead_of_the_writer(clip, complete, tmp_path):
    """An executor that finishes every segment before handing the first one over (as Ray does when later
    segments are quicker): progress counts their frames as they finish, never goes back, ends at the total."""
    class AllAhead:
        name = "all-ahead"

        def map_ordered(self, fn, jobs, max_in_flight=1, progress=None, finished=None):
            jobs = list(jobs)
            results = [np.stack(list(fn(job))) for job in jobs]
            stored = {position: finished(position, frames) for position, frames in reversed(list(enumerate(results)))}
            for position in range(len(jobs)):
                yield stored[position]

        def cancel(self):
            pass

    reports = []
    keyframes = uniform(FRAMES, 12)
    got = by_engine(clip, keyframes, SegmentSettings(FAST), tmp_path / "ahead.mp4", executor=AllAhead(),
                    progress=lambda done, preview=None: reports.append((done, preview is not None)))
    assert np.array_equal(got, complete)
    counts = [done for done, _ in reports]
    assert counts == sorted(counts) and counts[-1] == FRAMES
    ahead = [done for done, written in reports if not written]
    # keyframe 0 written, then each of the five segments counted as it finished, before any of its frames was written
    assert ahead == [1 + 11 * finished for finished in range(1, 6)]


# --- resume ------------------------------------------------------------------------------------------------------

class Stop(Exception):
    pass


def counting(monkeypatch) -> list:
    """Record the segments the engine computes."""
    calls = []
    monkeypatch.setattr(engine, "run_segment", lambda job, progress=None: calls.append(job.plan.number)
                        or run_segment(job, progress))
    return calls


def at_boundary(done, preview, ticks):
    return preview is not None and done == 12  # frame 11 written: the last of segment 0 (frames 1-11)


def mid_segment(done, preview, ticks):
    return preview is None and ticks[13] == 5  # segment 1 (frames 13-23): its fifth synthesized frame


def in_the_tail(done, preview, ticks):
    return preview is not None and done == 55  # segment 4, streamed (frames 49-59), a chunk of 4 at a time


@pytest.mark.parametrize("stop, stored", [(at_boundary, 1), (mid_segment, 1), (in_the_tail, 4)])
def test_an_interrupted_run_resumes_and_writes_the_same_file(clip, complete, tmp_path, monkeypatch, stop, stored):
    keyframes, settings = uniform(FRAMES, 12), SegmentSettings(FAST)
    output = tmp_path / "out.mp4"
    ticks = {done: 0 for done in range(FRAMES + 1)}

    def interrupt(done, preview=None):
        assert not output.exists()  # nothing at the output path until the video is complete
        ticks[done] += preview is None
        if stop(done, preview, ticks):
            raise Stop

    with pytest.raises(Stop):
        propagate_to_video(clip.index(), clip.keys(keyframes), keyframes, output, settings, progress=interrupt,
                           chunk=4)
    assert not output.exists() and not list(tmp_path.glob(".out*"))
    run = prepare_video(clip.index(), clip.keys(keyframes), keyframes, output, settings, chunk=4)
    assert run.stored() == [number < stored for number in range(5)]
    computed = counting(monkeypatch)
    run.write()
    assert computed == list(range(stored, 5))
    assert np.array_equal(decoded(output), complete)


# --- bad input: clear errors, nothing written ---------------------------------------------------------------------

def test_a_source_truncated_during_the_run_names_the_frame_and_keeps_finished_segments(clip, tmp_path):
    source = tmp_path / "clip.avi"
    shutil.copyfile(clip.path, source)
    copied = source.stat()
    keyframes, settings, output = uniform(FRAMES, 12), SegmentSettings(FAST), tmp_path / "out.mp4"
    index = index_video(source, **clip.widgets)

    def truncate_after_the_first_segment(done, preview=None):
        if done == 13 and preview is not None:  # keyframe 12 written; segment 1 (frames 12-24 decoded) is next
            source.write_bytes(clip.path.read_bytes()[:40_000])

    with pytest.raises(InputError, match=r"loaded frame 12 \(source frame 12\)") as error:
        propagate_to_video(index, clip.keys(keyframes), keyframes, output, settings,
                           progress=truncate_after_the_first_segment)
    assert "truncated or replaced" in str(error.value)
    assert not output.exists()
    shutil.copyfile(clip.path, source)  # the same bytes and time again: the finished segment is still there
    os.utime(source, ns=(copied.st_atime_ns, copied.st_mtime_ns))
    run = prepare_video(index_video(source, **clip.widgets), clip.keys(keyframes), keyframes, output, settings)
    assert run.stored() == [True, False, False, False, False]


def test_a_changed_source_reuses_no_segment(clip, tmp_path, monkeypatch):
    source, output = tmp_path / "clip.mp4", tmp_path / "out.mp4"
    frames = clip.video.images[:24]
    keyframes, settings = from_indices([0, 12], 24), SegmentSettings(FAST)
    computed = counting(monkeypatch)
    save_video(frames, source, clip.video.fps, crf=0)
    first = decoded(propagate_to_video(index_video(source), clip.keys(keyframes), keyframes, output, settings))
    assert computed == [0, 1]
    save_video(torch.flip(frames, dims=[2]), source, clip.video.fps, crf=0)  # same length and size, other pixels
    second = decoded(propagate_to_video(index_video(source), clip.keys(keyframes), keyframes, output, settings))
    assert computed == [0, 1, 0, 1] and not np.array_equal(first[1:12], second[1:12])
    monkeypatch.setenv("RERENDER_CACHE_DIR", str(tmp_path / "fresh-cache"))
    fresh = decoded(propagate_to_video(index_video(source), clip.keys(keyframes), keyframes, output, settings))
    assert np.array_equal(second, fresh)


def before_any_work(clip, tmp_path, keyframe_images, keyframes, **options):
    """Run the engine expecting an InputError before anything is computed; returns the message."""
    output = options.pop("output", tmp_path / "out.mp4")
    with pytest.raises(InputError) as error:
        propagate_to_video(clip.index(), keyframe_images, keyframes, output, SegmentSettings(FAST), **options)
    cache = Path(os.environ["RERENDER_CACHE_DIR"])
    assert not (cache / "segments").exists() and not (cache / "flow").exists() and not Path(output).exists()
    return str(error.value)


def test_keyframes_of_another_size_are_refused_before_work(clip, tmp_path):
    keyframes = uniform(FRAMES, 12)
    message = before_any_work(clip, tmp_path, clip.keys(keyframes)[:, :48], keyframes)
    assert "88×128" in message and "[48, 128, 3]" in message


def test_keyframes_past_the_end_are_refused_before_work(clip, tmp_path):
    message = before_any_work(clip, tmp_path, clip.styled[[0, 10]], Keyframes((0, 70), 80))
    assert "60 frames" in message and "80 frames" in message
    with pytest.raises(InputError, match=r"indices in \[0, 59\]"):
        from_indices([0, 70], FRAMES)
    message = before_any_work(clip, tmp_path, clip.styled[[0, 10, 20]], uniform(FRAMES, 12))
    assert "one stylized image per keyframe index" in message


def test_an_unwritable_or_odd_output_is_refused_before_work(clip, tmp_path):
    keyframes = uniform(FRAMES, 12)
    assert "ending in .mp4" in before_any_work(clip, tmp_path, clip.keys(keyframes), keyframes,
                                               output=tmp_path / "out.gif")
    source = save_video(clip.video.images[:12], tmp_path / "source.mp4", clip.video.fps, crf=0)
    with pytest.raises(InputError, match="a file other than the source"):
        propagate_to_video(source, clip.styled[[0]], Keyframes((0,), 12), source, SegmentSettings(FAST))
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    assert "can be written" in before_any_work(clip, tmp_path, clip.keys(keyframes), keyframes,
                                               output=blocked / "out.mp4")


def test_a_shot_without_a_keyframe_is_refused(cut_clip):
    keyframes = Keyframes((0, 12), FRAMES, "scene_cuts", shot_starts=(28,))
    with pytest.raises(InputError, match="a keyframe in the shot of frames 28-59"):
        plan_segments(keyframes)


def test_memory_guard_names_the_segment_and_the_setting(clip, tmp_path, monkeypatch):
    keyframes = from_indices([50], FRAMES)  # a head of 50 frames propagated backward in one piece
    need = segment_bytes(plan_segments(keyframes)[0], 88, WIDTH, 16)
    monkeypatch.setattr(memory, "available_bytes", lambda: int(need / memory.DEFAULT_BUDGET_FRACTION) - 1)
    message = before_any_work(clip, tmp_path, clip.keys(keyframes), keyframes)
    assert "frames 0-49" in message and "add a keyframe at or near frame 0" in message and "128x88" in message
    monkeypatch.setattr(memory, "available_bytes", lambda: int(need / memory.DEFAULT_BUDGET_FRACTION) + 16)
    assert prepare_video(clip.index(), clip.keys(keyframes), keyframes, tmp_path / "o.mp4",
                         SegmentSettings(FAST)).peak_bytes == need


# --- plan and memory: pure ----------------------------------------------------------------------------------------

def test_plan_covers_every_frame_once_in_local_numbering():
    keyframes = Keyframes((3, 10, 14, 20), 30, "scene_cuts", shot_starts=(14,))
    plans = plan_segments(keyframes)
    order = output_order(keyframes, plans)
    covered = [frame for kind, number in order
               for frame in ([keyframes.indices[number]] if kind == "keyframe" else plans[number].frames)]
    assert covered == list(range(30))
    head, middle, before_cut = plans[:3]
    assert head.loaded == range(0, 4) and [c.direction for c in head.chains] == ["backward"]
    assert head.chains[0].key == 3 and head.chains[0].targets == (2, 1, 0)
    assert middle.loaded == range(3, 11) and middle.local_frames == range(1, 7) and not middle.streamed
    assert before_cut.next_key is None and before_cut.streamed and before_cut.loaded == range(10, 14)
    assert plans[-1].streamed and plans[-1].frames == range(21, 30)


def test_a_streamed_segment_needs_the_same_memory_at_any_length():
    short, long = (plan_segments(Keyframes((0,), count))[0] for count in (40, 4000))
    assert long.streamed and segment_bytes(long, 256, 256, 16) == segment_bytes(short, 256, 256, 16)
    held = plan_segments(Keyframes((0, 24), 25))[0]
    assert segment_bytes(held, 256, 256, 16) > segment_bytes(plan_segments(Keyframes((0, 12), 13))[0], 256, 256, 16)


def test_unknown_executor_is_refused():
    with pytest.raises(InputError, match="executor"):
        get_executor("threads")
