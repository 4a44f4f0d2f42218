"""Torch's intra-op thread count for a block of small tensor work.

On a shared CPU, torch's OpenMP threads spin-wait for each other on small tensors (a 360×264 warp,
an occlusion check) and lose to other processes: measured on the project's 2-core VM under a load
of 6, a streaming metric pass took 19 s wall on 2 torch threads and 2.5 s on one.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with torch limited to ``count`` intra-op threads (``None``: unchanged); restores after.

    Example:
        >>> before = torch.get_num_threads()
        >>> with torch_threads(1):
        ...     torch.get_num_threads()
        1
        >>> torch.get_num_threads() == before
        True
    """
    previous = torch.get_num_threads()
    if count is not None and count < previous:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
