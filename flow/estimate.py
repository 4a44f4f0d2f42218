"""Optical flow and occlusion masks for frame pairs, cached on disk: the FLOW object's producer.

For each pair ``(i, j)`` a backend (:mod:`flow.dis`, :mod:`flow.raft`) gives the flows ``i → j``
and ``j → i``; the forward–backward check (:mod:`flow.occlusion`) gives both occlusion masks.
Results go straight into ``.npy`` files of a cache entry (``common.cache``, namespace ``flow``)
keyed by the frames' content, the pairs and every setting, and are handed out memory-mapped
(``np.load(mmap_mode="r")``), so a long video's flows stay on disk and a re-run with the same
inputs reads them instead of recomputing.

Cache entry layout: ``forward.npy`` / ``backward.npy`` ``[P,H,W,2]`` float32,
``occlusion_forward.npy`` / ``occlusion_backward.npy`` ``[P,H,W]`` float32, ``meta.json``.
"""

from __future__ import annotations

import collections
import json
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..common.cache import check_free_space, content_key, entry_dir, lookup, new_entry
from ..common.checks import check_image_batch, check_indices
from ..common.errors import input_error
from ..common.threads import torch_threads
from .backend import FlowBackend
from .occlusion import ALPHA, BETA, check_thresholds, occlusion_masks
from .types import FlowPairs
from .visualize import flow_to_color

CACHE_NAMESPACE = "flow"
#: Bump when the stored result of the same inputs changes (algorithm or layout).
CACHE_VERSION = 1
OCCLUSION_RULE = "forward-backward, squared (Sundaram 2010)"
ARRAYS = ("forward", "backward", "occlusion_forward", "occlusion_backward")
_PREVIEW_SECONDS = 0.5

Progress = Callable[..., None]


def _check_pairs(pairs: Sequence[tuple[int, int]], frame_count: int) -> list[tuple[int, int]]:
    if len(pairs) == 0:
        raise input_error("pairs", "at least one frame pair", "none", "use at least 2 frames")
    checked = []
    for pair in pairs:
        source, target = (int(index) for index in pair)
        check_indices([source, target], frame_count, "pairs")
        checked.append((source, target))
    return checked


def _batch_pairs(pairs: Sequence[tuple[int, int]], frame_indices: Sequence[int], rows: int,
                 frame_count: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Video-index pairs and the batch-row pairs they are computed on (``estimate_flow``'s ``frame_indices``)."""
    indices = [int(index) for index in frame_indices]
    if len(indices) != rows:
        raise input_error("frame_indices", f"one video frame index per image of the batch ({rows})",
                          f"{len(indices)} indices", "pass the indices of the frames the batch holds")
    check_indices(indices, frame_count, "frame_indices")
    row_of = {index: row for row, index in enumerate(indices)}
    checked = _check_pairs(pairs, frame_count)
    absent = sorted({index for pair in checked for index in pair if index not in row_of})
    if absent:
        raise input_error("frames", f"the frames of every pair (a batch of frames {indices[:8]})",
                          f"pairs that need frames {absent[:8]} the batch does not hold",
                          ["load the whole video", "use pair_mode keyframes with the KEYFRAMES the batch was "
                           "loaded with"])
    return checked, [(row_of[source], row_of[target]) for source, target in checked]


def _check_disk(pair_count: int, height: int, width: int) -> None:
    check_free_space(pair_count * height * width * 4 * (2 + 2 + 1 + 1), "flows",
                     f"{pair_count} pairs at {width}x{height}")


def flow_cache_key(video_key: str, pairs: Sequence[tuple[int, int]], backend: FlowBackend,
                   alpha: float, beta: float) -> str:
    """The cache key of a flow computation: frames' key, pairs, backend settings, thresholds."""
    return content_key("flow", CACHE_VERSION, video_key, [list(pair) for pair in pairs],
                       backend.cache_parts(), OCCLUSION_RULE, float(alpha), float(beta))


def open_cached(entry: str | Path) -> FlowPairs:
    """Open a flow cache entry as a :class:`~flow.types.FlowPairs` with memory-mapped arrays."""
    entry = Path(entry)
    meta = json.loads((entry / "meta.json").read_text())
    arrays = {name: np.load(entry / f"{name}.npy", mmap_mode="r") for name in ARRAYS}
    return FlowPairs(pairs=[tuple(pair) for pair in meta["pairs"]], frame_size=tuple(meta["frame_size"]),
                     frame_count=meta["frame_count"], video_key=meta["video_key"], method=meta["method"],
                     **arrays)


def cache_location(flows: FlowPairs) -> Path | None:
    """The cache entry folder a FLOW was read from, or ``None`` for one built in memory."""
    filename = getattr(flows.forward, "filename", None)
    return Path(filename).parent if filename else None


def estimate_flow(frames: torch.Tensor, pairs: Sequence[tuple[int, int]], backend: FlowBackend,
                  alpha: float = ALPHA, beta: float = BETA, progress: Progress | None = None,
                  video_key: str | None = None, frame_indices: Sequence[int] | None = None,
                  frame_count: int | None = None) -> FlowPairs:
    """Optical flow in both directions and occlusion masks for ``pairs`` of ``frames``, cached on disk.

    Args:
        frames: IMAGE ``[N,H,W,3]`` float32 in [0,1].
        pairs: ``(i, j)`` frame indices (:func:`flow.pairs.pairs_for_mode`).
        backend: a :class:`~flow.backend.FlowBackend` (e.g. ``DisFlow("medium")``).
        alpha, beta: thresholds of the forward–backward check (:mod:`flow.occlusion`, squared form).
        progress: ``progress(done_pairs, preview_HW3)``; the preview is the colour-coded flow of
            the latest pair (at most twice a second). It may raise to interrupt; nothing is cached then.
        video_key: ``common.cache.content_key(frames)`` if the caller has it already.
        frame_indices: for a batch holding only some frames of a video (e.g. just its keyframes), the video
            frame index of each row; ``pairs`` are then video indices, and so are the FLOW's, so it serves
            the same nodes as a FLOW of the whole video. ``None``: row ``i`` is frame ``i``.
        frame_count: with ``frame_indices``, the video's frame count (the FLOW's ``frame_count``).

    Returns:
        :class:`~flow.types.FlowPairs` whose arrays are read-only memory maps of the cache entry.

    Raises:
        InputError: frames that are not an IMAGE batch, fewer than 2 frames, frames too small for
            the backend, pair indices out of range, negative thresholds, or too little disk space; with
            ``frame_indices``, a pair of a frame that is not in the batch.

    Example:
        >>> from rerender_video.flow.dis import DisFlow
        >>> frames = torch.rand(3, 32, 48, 3)
        >>> flows = estimate_flow(frames, [(0, 1), (1, 2)], DisFlow("ultrafast"))
        >>> flows.forward.shape, flows.occlusion_backward.shape
        ((2, 32, 48, 2), (2, 32, 48))
    """
    frames = check_image_batch(frames, "frames")
    rows, height, width = frames.shape[:3]
    if rows < 2:
        raise input_error("frames", "at least 2 frames to compute optical flow between", f"{frame_count} frame(s)",
                          "load more frames (frame_load_cap 0 loads them all)")
    backend.check_size(height, width)
    check_thresholds(alpha, beta)
    video_frames, row_pairs = rows, None
    if frame_indices is not None:
        video_frames = int(frame_count if frame_count is not None else max(frame_indices) + 1)
        pairs, row_pairs = _batch_pairs(pairs, frame_indices, rows, video_frames)
    frame_count = video_frames
    pairs = _check_pairs(pairs, frame_count)
    video_key = video_key or content_key(frames)
    if frame_indices is not None:
        video_key = content_key("frames-of-video", video_key, [int(index) for index in frame_indices], frame_count)
    key = flow_cache_key(video_key, pairs, backend, alpha, beta)
    cached = lookup(CACHE_NAMESPACE, key)
    if cached is not None:
        if progress is not None:
            progress(len(pairs))
        return open_cached(cached)

    _check_disk(len(pairs), height, width)
    method = {**backend.method(), "occlusion": OCCLUSION_RULE, "alpha": float(alpha), "beta": float(beta)}
    with new_entry(CACHE_NAMESPACE, key) as staging:
        arrays = {
            name: np.lib.format.open_memmap(staging / f"{name}.npy", mode="w+", dtype=np.float32,
                                            shape=(len(pairs), height, width, *(() if "occlusion" in name else (2,))))
            for name in ARRAYS
        }
        _compute(frames, row_pairs or pairs, backend, arrays, alpha, beta, progress)
        for array in arrays.values():
            array.flush()
        del arrays  # close the maps before the entry is renamed into place
        meta = {"pairs": [list(pair) for pair in pairs], "frame_size": [height, width],
                "frame_count": frame_count, "video_key": video_key, "method": method}
        (staging / "meta.json").write_text(json.dumps(meta, indent=1))
    return open_cached(entry_dir(CACHE_NAMESPACE, key))


def _store(arrays: dict[str, np.ndarray], row: int, forward: np.ndarray, backward: np.ndarray, alpha: float,
           beta: float) -> None:
    """Occlusion check of one pair, then all four arrays of its row."""
    forward_t = torch.from_numpy(np.asarray(forward, dtype=np.float32)).unsqueeze(0)
    backward_t = torch.from_numpy(np.asarray(backward, dtype=np.float32)).unsqueeze(0)
    occlusion_forward, occlusion_backward = occlusion_masks(forward_t, backward_t, alpha, beta)
    arrays["forward"][row] = forward
    arrays["backward"][row] = backward
    arrays["occlusion_forward"][row] = occlusion_forward[0].numpy()
    arrays["occlusion_backward"][row] = occlusion_backward[0].numpy()


def _compute(frames: torch.Tensor, pairs: list[tuple[int, int]], backend: FlowBackend,
             arrays: dict[str, np.ndarray], alpha: float, beta: float, progress: Progress | None) -> None:
    """Fill ``arrays`` pair by pair; a pool backend gets a pool of the same size for the occlusion checks."""
    last_preview = 0.0

    def report(done: int, row: int) -> None:
        nonlocal last_preview
        if progress is None:
            return
        preview = None
        if time.monotonic() - last_preview >= _PREVIEW_SECONDS:
            preview = flow_to_color(-torch.from_numpy(np.array(arrays["backward"][row])))
            last_preview = time.monotonic()
        progress(done, preview)

    results = backend.iter_flows(frames, pairs)
    if backend.cpu_threads < 1:
        for done, (row, forward, backward) in enumerate(results, start=1):
            _store(arrays, row, forward, backward, alpha, beta)
            report(done, row)
        return
    done = 0
    pending: collections.deque[tuple[int, Future]] = collections.deque()
    with torch_threads(1), ThreadPoolExecutor(backend.cpu_threads, thread_name_prefix="occlusion") as pool:
        try:
            for row, forward, backward in results:
                pending.append((row, pool.submit(_store, arrays, row, forward, backward, alpha, beta)))
                # report finished rows in order; wait when the checks fall behind the flows
                while pending and (pending[0][1].done() or len(pending) > 2 * backend.cpu_threads):
                    finished_row, future = pending.popleft()
                    future.result()
                    done += 1
                    report(done, finished_row)
            while pending:
                finished_row, future = pending.popleft()
                future.result()
                done += 1
                report(done, finished_row)
        finally:
            for _, future in pending:
                future.cancel()
            if hasattr(results, "close"):  # stop a generator backend's own pool
                results.close()
