"""What an optical flow estimator provides to :func:`flow.estimate.estimate_flow`.

A backend turns frame pairs into dense flow in both directions; the estimator adds the occlusion
check, the disk cache and progress. Backends: :class:`flow.dis.DisFlow` (OpenCV DIS, CPU, no
weights) and :class:`flow.raft.RaftFlow` (torchvision RAFT, weights from the models folder).
"""

from __future__ import annotations

import abc
from typing import Iterator, Sequence

import numpy as np
import torch

FlowResult = tuple[int, np.ndarray, np.ndarray]


class FlowBackend(abc.ABC):
    """An optical flow estimator.

    Subclasses set :attr:`name` and implement :meth:`method`, :meth:`check_size` and
    :meth:`iter_flows`; :meth:`cache_parts` adds whatever else the result depends on (weights).
    """

    name: str = ""
    #: Threads of the backend's own CPU pool (0: it runs in the calling thread, e.g. on the GPU). While a
    #: pool backend runs, the estimator checks occlusion on as many threads and keeps torch to one thread
    #: per caller, so torch's OpenMP threads do not fight the pool for the cores.
    cpu_threads: int = 0

    @abc.abstractmethod
    def method(self) -> dict:
        """Settings for display and for :attr:`flow.types.FlowPairs.method` (JSON-able)."""

    def cache_parts(self) -> dict:
        """Everything the flow depends on besides the frames and pairs, for the cache key."""
        return self.method()

    @abc.abstractmethod
    def check_size(self, height: int, width: int) -> None:
        """Raise :class:`~common.errors.InputError` if frames of this size cannot be processed."""

    @abc.abstractmethod
    def iter_flows(self, frames: torch.Tensor, pairs: Sequence[tuple[int, int]]) -> Iterator[FlowResult]:
        """Flow for each pair, in the order of ``pairs``.

        Args:
            frames: IMAGE ``[N,H,W,3]`` float32 in [0,1].
            pairs: ``(i, j)`` frame indices.

        Yields:
            ``(row, forward, backward)``: the pair's row in ``pairs``, flow ``i → j`` on ``i``'s
            grid and flow ``j → i`` on ``j``'s grid, each ``[H,W,2]`` float32 numpy, pixels ``(x, y)``.
        """
