"""Input checks shared by the algorithm packages and the nodes.

Each check raises :class:`~common.errors.InputError` naming the input, so a node only has to pass
its socket name.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .errors import input_error


def check_image_batch(images: object, name: str = "images") -> torch.Tensor:
    """Check a ComfyUI IMAGE batch and return it.

    Args:
        images: expected ``torch.Tensor`` of shape ``[N, H, W, 3]``, float32, values in [0, 1].
        name: the input's name for the error message.

    Returns:
        The same tensor (no copy).

    Raises:
        InputError: not a tensor, wrong rank, wrong channel count or wrong dtype.

    Example:
        >>> check_image_batch(torch.zeros(2, 8, 8, 3)).shape
        torch.Size([2, 8, 8, 3])
    """
    if not isinstance(images, torch.Tensor):
        raise input_error(name, "an IMAGE tensor [N,H,W,3]", type(images).__name__,
                          "connect an IMAGE output (e.g. Rerender Load Video)")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise input_error(name, "shape [N,H,W,3]", list(images.shape),
                          "pass RGB frames; drop alpha with a core image node")
    if not images.is_floating_point():
        raise input_error(name, "a float tensor in [0,1]", images.dtype, "convert with images.float() / 255")
    return images


def check_same_size(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """Raise if two IMAGE batches ``[N,H,W,3]`` differ in height or width; the message names both sizes."""
    size_a, size_b = tuple(a.shape[1:3]), tuple(b.shape[1:3])
    if size_a != size_b:
        raise input_error(
            name_b, f"frames of the size of {name_a} (H×W = {size_a[0]}×{size_a[1]})",
            f"{size_b[0]}×{size_b[1]}", f"resize {name_b} to {size_a[1]}×{size_a[0]} (W×H) or load "
            f"{name_a} at that size")


def check_indices(indices: Sequence[int], count: int, name: str) -> list[int]:
    """Check frame indices: non-empty, in ``[0, count)``, no duplicates. Returns them sorted.

    Raises:
        InputError: empty list, an index out of range, or a duplicate.
    """
    values = [int(i) for i in indices]
    if not values:
        raise input_error(name, "at least one frame index", "an empty list", "give one index or more")
    outside = [i for i in values if not 0 <= i < count]
    if outside:
        raise input_error(name, f"indices in [0, {count - 1}] (the video has {count} frames)", outside,
                          "remove the indices past the end or load more frames")
    duplicates = sorted({i for i in values if values.count(i) > 1})
    if duplicates:
        raise input_error(name, "each index once", f"duplicates {duplicates}", "remove the repeated indices")
    return sorted(values)
