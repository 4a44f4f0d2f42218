"""Stylized keyframes from a folder of images whose file names carry the frame index.

A keyframe file's frame index is the **last integer in its file stem**: ``0000.png`` → 0,
``key_0012.jpg`` → 12, ``shot2_frame_31.png`` → 31. Indices are in loaded-frame numbering (frame 0
is the first frame that was loaded). With a uniform ``interval`` the names are not read for indices:
the images, sorted by name, are the keyframes ``0, K, 2K, …``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from ..common.errors import input_error

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def frame_index_from_name(name: str | Path) -> int | None:
    """The last integer in the file stem, or ``None`` if the stem has no digits.

    Example:
        >>> [frame_index_from_name(n) for n in ("0000.png", "key_0012.jpg", "v2_frame_31.png", "key.png")]
        [0, 12, 31, None]
    """
    numbers = re.findall(r"\d+", Path(name).stem)
    return int(numbers[-1]) if numbers else None


def image_files(folder: str | Path) -> list[Path]:
    """Image files of ``folder`` (by suffix, case-insensitive), sorted by name.

    Raises:
        InputError: the folder does not exist or holds no image.
    """
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise input_error("keyframe_folder", "a folder of stylized keyframe images", str(path),
                          "give an existing folder (absolute, or relative to ComfyUI's input folder)")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise input_error("keyframe_folder", f"image files ({', '.join(IMAGE_SUFFIXES)})",
                          f"none in {path}", "put the stylized keyframes there, named by frame, e.g. 0000.png")
    return files


def keyframe_files(folder: str | Path, interval: int = 0) -> list[tuple[int, Path]]:
    """``(frame index, file)`` pairs sorted by index.

    Args:
        folder: the folder of keyframe images.
        interval: 0 → indices from the file names; ``K > 0`` → the sorted files are frames ``0, K, 2K, …``.

    Raises:
        InputError: no images, a file name without a number, two files with the same index, a negative
            interval.
    """
    files = image_files(folder)
    if interval < 0:
        raise input_error("interval", "0 (indices from file names) or a keyframe interval K >= 1", interval)
    if interval > 0:
        return [(position * interval, file) for position, file in enumerate(files)]
    indexed = [(frame_index_from_name(file), file) for file in files]
    unnamed = [file.name for index, file in indexed if index is None]
    if unnamed:
        raise input_error("keyframe_folder", "file names carrying the frame index (e.g. 0000.png, key_0012.jpg)",
                          unnamed, ["rename the files after their frame index", "or give a uniform interval"])
    seen: dict[int, str] = {}
    for index, file in indexed:
        if index in seen:
            raise input_error("keyframe_folder", "one file per frame index",
                              f"{seen[index]} and {file.name} both for frame {index}", "remove one of them")
        seen[index] = file.name
    return sorted(indexed)


def read_image(path: Path) -> np.ndarray:
    """One image file as ``[H,W,3]`` float32 RGB in [0, 1] (alpha dropped, 16-bit scaled)."""
    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None:
        raise input_error("keyframe_folder", "readable image files", f"{path.name} could not be decoded",
                          "re-save it as PNG")
    scale = 65535.0 if data.dtype == np.uint16 else 255.0
    if data.ndim == 2:
        data = np.repeat(data[..., None], 3, axis=2)
    rgb = cv2.cvtColor(data[..., :3], cv2.COLOR_BGR2RGB) if data.shape[2] >= 3 else np.repeat(data[..., :1], 3, 2)
    return rgb.astype(np.float32) / scale


def _entries_within(folder: str | Path, interval: int, frame_count: int | None) -> list[tuple[int, Path]]:
    """:func:`keyframe_files` less those at or past ``frame_count`` (logged); raises if none is left."""
    entries = keyframe_files(folder, interval)
    if frame_count is not None:
        skipped = [index for index, _ in entries if index >= frame_count]
        entries = [(index, path) for index, path in entries if index < frame_count]
        if not entries:
            raise input_error("keyframe_folder", f"keyframes within the {frame_count} loaded frames",
                              f"frame indices {skipped}", ["load more frames", "check the file names"])
        if skipped:
            logger.warning("keyframes %s are past the %d loaded frames and are skipped", skipped, frame_count)
    return entries


def _check_one_size(entries: list[tuple[int, Path]], sizes: list[tuple[int, int]]) -> tuple[int, int]:
    """Raise unless every keyframe has the first one's ``(H, W)``; returns it."""
    first_size = sizes[0]
    for (_, path), size in zip(entries, sizes):
        if size != first_size:
            raise input_error("keyframe_folder", f"keyframes of one size ({entries[0][1].name}: "
                              f"{first_size[1]}x{first_size[0]})", f"{path.name}: {size[1]}x{size[0]}",
                              "resize the keyframes to the size of the video frames")
    return first_size


def load_keyframe_folder(folder: str | Path, interval: int = 0,
                         frame_count: int | None = None) -> tuple[torch.Tensor, list[int]]:
    """Load stylized keyframes and their frame indices (module docstring for the naming rule).

    Args:
        folder: the folder of keyframe images.
        interval: 0 → indices from the file names; ``K > 0`` → the sorted files are frames ``0, K, 2K, …``.
        frame_count: number of loaded frames; keyframes at or past it are skipped (with a log warning), so
            a folder made for the whole video also serves a run on its first frames.

    Returns:
        ``(images, indices)``: IMAGE ``[M,H,W,3]`` float32 in [0, 1] sorted by index, and the indices.

    Raises:
        InputError: from :func:`keyframe_files`, an unreadable file, images of different sizes, or no
            keyframe within ``frame_count`` frames.
    """
    entries = _entries_within(folder, interval, frame_count)
    images = [read_image(path) for _, path in entries]
    _check_one_size(entries, [image.shape[:2] for image in images])
    return torch.from_numpy(np.stack(images)), [index for index, _ in entries]


def resize_keyframe(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a keyframe ``[h,w,3]`` float32 to ``size`` ``(H, W)`` (OpenCV INTER_AREA when shrinking, else
    INTER_CUBIC; clipped to [0, 1]); returned unchanged when it has that size already."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    interpolation = cv2.INTER_AREA if width < image.shape[1] else cv2.INTER_CUBIC
    return np.clip(cv2.resize(image, (width, height), interpolation=interpolation), 0.0, 1.0)


class KeyframeFolder:
    """The stylized keyframes of a folder, read one at a time: a sequence of ``[H,W,3]`` float32 tensors.

    For long videos (the segment engine reads each keyframe when its segment runs, so the keyframes of a
    4,000-frame clip are never all in memory). Same naming rule, skipping and checks as
    :func:`load_keyframe_folder`, whose images it gives, resized to ``size`` when that is set.

    Args:
        folder, interval, frame_count: as :func:`load_keyframe_folder`.
        size: ``(H, W)`` to resize every keyframe to (:func:`resize_keyframe`), or ``None``.

    Attributes:
        indices: the keyframes' frame indices, ascending.
        image_size: ``(H, W)`` of the files.

    Raises:
        InputError: as :func:`load_keyframe_folder` (sizes are read from the file headers).
    """

    def __init__(self, folder: str | Path, interval: int = 0, frame_count: int | None = None,
                 size: tuple[int, int] | None = None) -> None:
        self._entries = _entries_within(folder, interval, frame_count)
        sizes = []
        for _, path in self._entries:
            try:
                with Image.open(path) as image:
                    sizes.append((image.height, image.width))
            except (OSError, ValueError):  # a format Pillow does not read: decode it (or raise naming it)
                sizes.append(read_image(path).shape[:2])
        self.image_size = _check_one_size(self._entries, sizes)
        self.indices = [index for index, _ in self._entries]
        self.size = tuple(size) if size is not None else None

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, position: int) -> torch.Tensor:
        image = read_image(self._entries[position][1])
        if self.size is not None:
            image = resize_keyframe(image, self.size)
        return torch.from_numpy(image)
