"""Masked runs of the segment engine and the ``propagate`` command (issue 16).

Data: 10 frames of the bundled Megamind.avi (frames 1–10, one shot) at 96×64, the protocol's deterministic
"style" as keyframes 0 and 9 (local), a short synthesis schedule; masks are PNG files written by the tests (a
box whose left edge moves 2 px per frame). Checked before encoding: the segment jobs' uint8 frames and the
keyframes as written; the CLI's mp4 is checked within the codec's error.
"""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest
import torch

from rerender_video.benchmarks._anchor_protocol import stylize_rgb
from rerender_video.common.errors import InputError
from rerender_video.common.keyframes import Keyframes
from rerender_video.common.masks import region_alpha
from rerender_video.flow.dis import DisFlow
from rerender_video.flow.estimate import estimate_flow
from rerender_video.flow.pairs import consecutive_pairs
from rerender_video.propagation.blend import blend_video
from rerender_video.propagation.params import SynthesisParams
from rerender_video.propagation.sequence import propagate_video
from rerender_video.segments.engine import prepare_video
from rerender_video.segments.job import SegmentSettings, run_segment
from rerender_video.segments.store import segment_key
from rerender_video.videoio.frame_index import index_video, read_frames
from rerender_video.videoio.writer import to_uint8

COUNT, WIDTH, HEIGHT = 10, 96, 64
WIDGETS = dict(frame_load_cap=COUNT, skip_first_frames=1, custom_width=WIDTH, custom_height=HEIGHT)
SETTINGS = SegmentSettings(SynthesisParams(search_vote_iters=2, patchmatch_iters=2), backend="cpu")
GROW, FEATHER = 2, 3


def box_masks() -> np.ndarray:
    masks = np.zeros((COUNT, HEIGHT, WIDTH), np.uint8)
    for index in range(COUNT):
        masks[index, 12:52, 40 + 2 * index:90] = 255
    return masks


@pytest.fixture(scope="module")
def clip(megamind_path, tmp_path_factory):
    index = index_video(megamind_path, **WIDGETS)
    frames = read_frames(index, range(COUNT))
    styled = torch.from_numpy(np.stack([stylize_rgb(frame.astype(np.float32) / 255) for frame in frames]))
    folder = tmp_path_factory.mktemp("masks")
    for number, mask in enumerate(box_masks()):
        cv2.imwrite(str(folder / f"{number:04d}.png"), mask)
    return index, frames, styled[[0, COUNT - 1]], folder


def engine_frames(run) -> np.ndarray:
    """Every output frame before encoding: keyframes as written, segments as their jobs give them."""
    out = np.empty((COUNT, HEIGHT, WIDTH, 3), np.uint8)
    for position, key in enumerate(run.keyframes.indices):
        out[key] = run.keyframe(position)
    for plan in run.plans:
        for frame, image in zip(plan.frames, run_segment(run.job(plan))):
            out[frame] = image
    return out


def test_engine_masked_run_keeps_the_source_outside_and_equals_the_in_ram_pipeline(clip, tmp_path):
    index, frames, keys, folder = clip
    keyframes = Keyframes((0, COUNT - 1), COUNT)
    run = prepare_video(index, keys, keyframes, tmp_path / "out.mp4", SETTINGS, mask=folder, mask_grow=GROW,
                        feather=FEATHER)
    output = engine_frames(run)
    masks = torch.from_numpy(box_masks().astype(np.float32) / 255)
    outside = (region_alpha(masks, GROW, FEATHER) == 0).numpy()
    assert np.array_equal(output[outside], frames[outside])
    assert (np.abs(output.astype(int) - frames)[masks.numpy() > 0.5].max(-1) > 2).mean() > 0.5
    # The in-RAM pipeline (EbSynth Propagate → Temporal Blend with the same MASK) gives the same frames.
    images = torch.from_numpy(frames.astype(np.float32) / 255)
    flow = estimate_flow(images, consecutive_pairs(COUNT), DisFlow("medium"))
    propagation = propagate_video(images, keys, keyframes, flow, SETTINGS.params, mask=masks, mask_grow=GROW,
                                  feather=FEATHER, backend="cpu")
    assert np.array_equal(to_uint8(blend_video(propagation)[0]).numpy(), output)


def test_the_segment_key_follows_the_mask_content_and_settings(clip, tmp_path):
    index, _, keys, folder = clip
    keyframes = Keyframes((0, COUNT - 1), COUNT)

    def key(mask, grow=GROW, feather=FEATHER):
        run = prepare_video(index, keys, keyframes, tmp_path / "out.mp4", SETTINGS, mask=mask, mask_grow=grow,
                            feather=feather)
        return segment_key(run.job(run.plans[0]))

    first = key(folder)
    assert key(folder) == first
    assert len({first, key(None), key(folder, grow=GROW + 1), key(folder, feather=FEATHER + 1)}) == 4
    changed = tmp_path / "changed"
    changed.mkdir()
    for number, mask in enumerate(box_masks()):
        mask[0:5, 0:5] = 255 if number == 4 else 0
        cv2.imwrite(str(changed / f"{number:04d}.png"), mask)
    assert key(changed) != first


def test_bad_mask_input_is_refused_before_any_work(clip, tmp_path):
    index, _, keys, folder = clip
    keyframes = Keyframes((0, COUNT - 1), COUNT)

    def prepare(mask):
        return prepare_video(index, keys, keyframes, tmp_path / "out.mp4", SETTINGS, mask=mask)

    gappy = tmp_path / "gappy"
    gappy.mkdir()
    for number, mask in enumerate(box_masks()):
        if number not in (3, 7):
            cv2.imwrite(str(gappy / f"{number:04d}.png"), mask)
    with pytest.raises(InputError, match=r"mask.*2 frames without one.*3, 7"):
        prepare(gappy)
    twice = tmp_path / "twice"
    twice.mkdir()
    for number, mask in enumerate(box_masks()):
        cv2.imwrite(str(twice / f"{number:04d}.png"), mask)
    cv2.imwrite(str(twice / "mask_5.png"), box_masks()[0])
    with pytest.raises(InputError, match=r"mask: Expected one mask image per frame index.*for frame 5"):
        prepare(twice)
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((20, 30), np.uint8))
    with pytest.raises(InputError, match=r"mask \(small.png\).*64×96.*20×30"):
        prepare(small)
    with pytest.raises(InputError, match="mask.*folder of per-frame mask images"):
        prepare(tmp_path / "nowhere")
    empty = tmp_path / "empty.png"
    cv2.imwrite(str(empty), np.zeros((HEIGHT, WIDTH), np.uint8))
    with pytest.warns(UserWarning, match="mask is empty"):
        run = prepare(empty)
    assert np.array_equal(run.keyframe(0), read_frames(index, [0])[0])


def test_cli_masked_run_with_one_carried_mask_writes_the_source_outside(megamind_path, clip, tmp_path, capsys):
    from rerender_video.cli import main

    _, frames, _, _ = clip
    keys = tmp_path / "keys"
    keys.mkdir()
    for number in (0, COUNT - 1):
        bgr = cv2.cvtColor((stylize_rgb(frames[number].astype(np.float32) / 255) * 255).round().astype(np.uint8),
                           cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(keys / f"{number:04d}.png"), bgr)
    first = tmp_path / "first_mask.png"
    cv2.imwrite(str(first), box_masks()[0])
    output = tmp_path / "masked.mp4"
    code = main(["propagate", str(megamind_path), str(keys), "--frames", str(COUNT), "--skip", "1",
                 "--search-vote-iters", "2", "--patchmatch-iters", "2", "--mask", str(first), "--mask-grow",
                 str(GROW), "--feather", str(FEATHER), "--crf", "0", "--output", str(output)])
    assert code == 0
    assert "region: one mask (the first frame's, carried by the optical flow)" in capsys.readouterr().out
    with av.open(str(output)) as container:
        written = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    assert written.shape == frames.shape
    difference = np.abs(written.astype(int) - frames).max(-1)
    masks = torch.from_numpy(box_masks()[:1].astype(np.float32) / 255)
    far_outside = (region_alpha(masks, GROW + 12, FEATHER) == 0)[0].numpy()   # the carried mask moves a little
    inside = box_masks()[0] > 0
    assert np.median(difference[:, far_outside]) <= 3        # the source, up to the codec's yuv420 error
    assert np.median(difference[:, inside]) > 3 * max(np.median(difference[:, far_outside]), 1)


def test_cli_names_the_mask_option_in_errors(megamind_path, tmp_path, capsys):
    from rerender_video.cli import main

    code = main(["propagate", str(megamind_path), str(megamind_path.parent / "megamind_keys"), "--frames", "4",
                 "--mask", str(tmp_path / "missing_masks"), "--output", str(tmp_path / "out.mp4")])
    assert code != 0
    assert "--mask" in capsys.readouterr().err


def test_a_remote_executor_gets_the_masks_not_the_driver_s_files(clip, tmp_path):
    """Mask files live on the driver: the jobs a non-local executor gets carry the masks themselves, and the
    frames (and the segment keys, so a run resumes across executors) are those of the local run."""
    index, _, keys, folder = clip
    keyframes = Keyframes((0, COUNT - 1), COUNT)

    class Remote:
        name = "remote"
        regions = []

        def map_ordered(self, fn, jobs, max_in_flight=1, progress=None, finished=None):
            for job in jobs:
                self.regions.append(type(job.region).__name__)
                yield np.stack(list(fn(job)))

        def cancel(self):
            pass

    local = prepare_video(index, keys, keyframes, tmp_path / "local.mp4", SETTINGS, mask=folder)
    remote = Remote()
    run = prepare_video(index, keys, keyframes, tmp_path / "remote.mp4", SETTINGS, mask=folder, executor=remote)
    assert run.keys == local.keys
    written = [read_frames(index_video(str(one.write())), range(COUNT)) for one in (run, local)]
    assert remote.regions == ["Region"] * len(run.plans)
    assert np.array_equal(written[0], written[1])


def test_cli_refuses_a_missing_mask_before_reading_the_video(tmp_path, capsys):
    from rerender_video.cli import main

    code = main(["propagate", str(tmp_path / "no_video.mp4"), str(tmp_path / "no_keys"),
                 "--mask", str(tmp_path / "missing_masks"), "--output", str(tmp_path / "out.mp4")])
    err = capsys.readouterr().err
    assert code != 0 and "--mask: Expected an existing folder of per-frame images, or one image of the first frame" in err
