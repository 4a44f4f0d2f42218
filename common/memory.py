"""Early memory checks: fail before a large allocation, with how much would fit and what to change."""

from __future__ import annotations

from typing import Iterable

import psutil

from .errors import input_error

#: Fraction of the available memory a single allocation may take; the rest is left to the
#: diffusion model, the OS and other nodes.
DEFAULT_BUDGET_FRACTION = 0.8


def available_bytes() -> int:
    """Available RAM plus free swap, in bytes (what VideoHelperSuite also counts)."""
    return int(psutil.virtual_memory().available + psutil.swap_memory().free)


def check_allocation(item_bytes: int, count: int, what: str, input_name: str,
                     fixes: Iterable[str], budget_fraction: float = DEFAULT_BUDGET_FRACTION) -> None:
    """Raise before allocating ``count`` items of ``item_bytes`` each if they would not fit.

    Args:
        item_bytes: bytes per item (e.g. one decoded frame as float32).
        count: number of items to allocate.
        what: what is being allocated, e.g. ``"decoded frames"``.
        input_name: the widget a user changes to need less memory.
        fixes: the fixes to list in the message.
        budget_fraction: share of :func:`available_bytes` one allocation may take.

    Raises:
        InputError: the message gives the bytes needed, the bytes available, and how many items fit.
    """
    budget = int(available_bytes() * budget_fraction)
    needed = item_bytes * count
    if needed <= budget:
        return
    fits = max(budget // max(item_bytes, 1), 0)
    raise input_error(input_name, f"{what} that fit in memory ({budget / 2**30:.1f} GiB usable, {fits} items fit)",
                      f"{count} items needing {needed / 2**30:.1f} GiB", list(fixes))


def device_free_bytes(device) -> int:
    """Free memory of ``device`` in bytes: the GPU's free memory for a CUDA device, else :func:`available_bytes`."""
    import torch

    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return available_bytes()
