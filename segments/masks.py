"""Region masks for the segment engine, read per segment from files (issue 16; propagation/ALGORITHM.md §19).

The engine never holds the whole clip, so it never holds all masks either: :func:`mask_files` checks the
masks once, before any long work, and returns a :class:`~propagation.region.MaskFiles` (paths + content
digests, picklable) from which each segment job reads only its own frames' masks.

* A **folder**: one mask image per loaded frame, named by frame index like the keyframe folder (the last
  number of the file stem: ``0013.png``, ``mask_13.png`` → frame 13). Every loaded frame needs one; files
  for frames past the loaded ones are ignored.
* One **image**: the first loaded frame's mask, carried through the clip by the optical flow with the
  occlusion masks (:func:`flow.mask_carry.iter_carried_masks`, one streaming pass over the video, one
  frame held at a time); the carried masks are written as 16-bit PNGs into the cache (namespace
  ``masks``, keyed by the video, the load, the mask's bytes and the flow settings), so a re-run reuses them.

White (1) = restyle, black (0) = keep the source; see :func:`propagation.region.read_mask_image`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import torch

from ..common import cache
from ..common.errors import input_error
from ..common.masks import INSIDE, check_mask, warn_if_empty
from ..flow.mask_carry import iter_carried_masks
from ..propagation.keyframe_files import IMAGE_SUFFIXES, frame_index_from_name
from ..propagation.region import MaskFiles, read_mask_image
from ..videoio.frame_index import FrameIndex, iter_read_frames
from ..videoio.reader import to_float

CACHE_NAMESPACE = "masks"
#: Bump when the carried masks change, so older cache entries are not reused.
CACHE_VERSION = 1


def _folder_files(folder: Path, count: int, name: str) -> list[Path]:
    files = {}
    for path in sorted(folder.iterdir()):
        index = frame_index_from_name(path) if path.suffix.lower() in IMAGE_SUFFIXES else None
        if index is not None and index < count:
            if index in files:
                raise input_error(name, "one mask image per frame index", f"{files[index].name} and {path.name} "
                                  f"both for frame {index} in {folder}", "remove one of them")
            files[index] = path
    missing = [index for index in range(count) if index not in files]
    if missing:
        shown = ", ".join(str(index) for index in missing[:8]) + (" …" if len(missing) > 8 else "")
        raise input_error(name, f"a mask image for every loaded frame 0–{count - 1}, named by frame index "
                          "(e.g. 0013.png)", f"{len(missing)} frames without one in {folder}: {shown}",
                          ["add the missing masks", "give one image (the first frame's mask, carried by the "
                           "optical flow)", "load fewer frames (--frames)"])
    return [files[index] for index in range(count)]


def _checked(path: Path, count: int, height: int, width: int, name: str) -> np.ndarray:
    mask = read_mask_image(path, name)
    check_mask(torch.from_numpy(mask)[None], count, height, width, f"{name} ({path.name})")
    return mask


def mask_files(path: str | Path, index: FrameIndex, mask_grow: int, feather: int, flow=None,
               alpha: float | None = None, beta: float | None = None, name: str = "mask") -> MaskFiles:
    """The per-frame masks of a run (module docstring), checked; a single image is carried by the flow.

    Args:
        path: a folder of per-frame mask images or one mask image (the first frame's).
        index: the loaded video (:func:`videoio.frame_index.index_video`): frame count and size.
        mask_grow, feather: pixels (:data:`common.masks.MASK_SETTINGS`).
        flow: optical flow backend for carrying a single mask (``None``: DIS medium); ``alpha``, ``beta``:
            the occlusion thresholds (``None``: the defaults).
        name: the input's name in errors (``mask``; the CLI shows ``--mask``).

    Returns:
        :class:`~propagation.region.MaskFiles` with one file per loaded frame.

    Raises:
        InputError: a path that does not exist; a folder missing frames; a mask of another size than the
            loaded frames (naming the file). An all-zero mask warns (the output is then the source video).
    """
    path = Path(path).expanduser().resolve()  # absolute: a Ray worker need not share the working directory
    count, (height, width) = index.frame_count, index.frame_size
    if path.is_dir():
        files = _folder_files(path, count, name)
        union = np.zeros((height, width), bool)
        for file in files:
            union |= _checked(file, count, height, width, name) > INSIDE
        warn_if_empty(torch.from_numpy(union.astype(np.float32))[None], name)
        return MaskFiles.from_files(files, mask_grow, feather)
    if not path.is_file():
        raise input_error(name, "a folder of per-frame mask images or one mask image", str(path),
                          "give an existing folder or image file")
    first = _checked(path, count, height, width, name)
    if warn_if_empty(torch.from_numpy(first)[None], name) or count == 1:
        return MaskFiles.from_files([path], mask_grow, feather)
    return MaskFiles.from_files(_carried(path, first, index, flow, alpha, beta, name), mask_grow, feather)


def mask_image_file(mask: torch.Tensor) -> Path:
    """One mask ``[H,W]`` float32 in [0, 1] saved as a 16-bit PNG in the cache (keyed by its content), so a MASK
    from a node takes the same path as a mask image (:func:`mask_files`)."""
    levels = np.clip(np.rint(mask.detach().cpu().numpy() * 65535.0), 0, 65535).astype(np.uint16)
    key = cache.content_key("mask-image", CACHE_VERSION, levels)
    entry = cache.lookup(CACHE_NAMESPACE, key)
    if entry is None:
        with cache.new_entry(CACHE_NAMESPACE, key) as staging:
            cv2.imwrite(str(staging / "mask.png"), levels)
        entry = cache.lookup(CACHE_NAMESPACE, key)
    return entry / "mask.png"


def _carried(path: Path, first: np.ndarray, index: FrameIndex, flow, alpha, beta, name: str) -> list[Path]:
    """Carry ``first`` through the loaded frames by the optical flow; the masks' files (cached)."""
    from ..flow.dis import DisFlow
    from ..flow.occlusion import ALPHA, BETA

    flow = flow or DisFlow()
    alpha, beta = ALPHA if alpha is None else alpha, BETA if beta is None else beta
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    key = cache.content_key("carried-mask", CACHE_VERSION, index.fingerprint, index.widgets, digest,
                            flow.cache_parts(), float(alpha), float(beta))
    names = [f"{frame:06d}.png" for frame in range(index.frame_count)]
    entry = cache.lookup(CACHE_NAMESPACE, key)
    if entry is None:
        frames = (to_float(frame) for frame in iter_read_frames(index, range(index.frame_count)))
        with cache.new_entry(CACHE_NAMESPACE, key) as staging:
            for file, mask in zip(names, iter_carried_masks(frames, torch.from_numpy(first)[None], flow, alpha,
                                                            beta, name)):
                levels = np.clip(np.rint(mask.numpy() * 65535.0), 0, 65535).astype(np.uint16)
                cv2.imwrite(str(staging / file), levels)
        entry = cache.lookup(CACHE_NAMESPACE, key)
    return [entry / file for file in names]
