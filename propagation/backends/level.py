"""What the level loop hands a backend: the scalars of a level, its state, and where its NNF starts.

:mod:`..synthesis` runs the level loop of ALGORITHM.md §3 on the host and calls one
:class:`~.backend.Backend` method per data-parallel pass; these are the values that cross that line. A
backend's arrays are opaque to the loop: it only passes the :class:`LevelState` it got from
``prepare_level`` back into the other methods and reads results with ``nnf`` / ``image`` / ``error``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LevelSpec:
    """Host-side scalars of one pyramid level (ALGORITHM.md §3).

    Attributes:
        patch_size: odd patch side ``p``; ``radius = p // 2``.
        style_channels: number of leading (style) channels ``Cs`` of the packed images.
        occupancy_multiplier: ``occ_mul`` — occupancy cost of a candidate is ``(O(s) · occ_mul) >> 16``.
        change_threshold: quantised stop threshold ``thr_q``: a vote that moves a style channel by ``>= thr_q``
            marks the pixel as changed (0 keeps every pixel active).
        weighted_vote: EbSynth's weighted vote instead of the plain average.
        vote_error_scale: float32 ``1 / (p² · Cs · F²)``, the error normalisation of the weighted vote.
        random_radii: radii of the random search, largest first (ALGORITHM.md §6.3).
        level: pyramid level index (0 = coarsest), part of the random-generator key.
    """

    patch_size: int
    style_channels: int
    occupancy_multiplier: int
    change_threshold: int
    weighted_vote: bool
    vote_error_scale: float
    random_radii: tuple[int, ...]
    level: int

    @property
    def radius(self) -> int:
        return self.patch_size // 2


@dataclass
class LevelState:
    """Backend arrays of one level (runtime arrays, by name); ``spec`` the level's scalars; sizes ``(H, W)``."""

    spec: LevelSpec
    source_size: tuple[int, int]
    target_size: tuple[int, int]
    arrays: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NnfStart:
    """Where a level's NNF starts (ALGORITHM.md §5); the backend computes it in its own memory.

    Make one with :meth:`random`, :meth:`upsample`, :meth:`reduce` or :meth:`given`.

    Attributes:
        kind: ``"random"`` (§5.1), ``"upsample"`` (§5.2) or ``"reduce"`` (§5.3).
        key: the random key (``random``).
        parent: the previous, coarser level's state (``upsample``); its NNF never leaves the backend.
        full: a full-resolution NNF ``[H,W,2]`` of integer ``(x, y)`` centres, numpy or torch (``reduce``).
        shift: octaves between ``full`` and the level (``reduce``).
    """

    kind: str
    key: int = 0
    parent: LevelState | None = None
    full: Any = None
    shift: int = 0

    @classmethod
    def random(cls, key: int) -> "NnfStart":
        """§5.1: uniform random centres drawn with ``key``."""
        return cls("random", key=int(key))

    @classmethod
    def upsample(cls, parent: LevelState) -> "NnfStart":
        """§5.2: the NNF of ``parent`` (the next coarser level) brought to this level."""
        return cls("upsample", parent=parent)

    @classmethod
    def reduce(cls, full: Any, shift: int) -> "NnfStart":
        """§5.3: ``full`` (``[H,W,2]``, non-negative) brought ``shift`` octaves down, clamped to the valid centres."""
        return cls("reduce", full=full, shift=int(shift))

    @classmethod
    def given(cls, nnf: Any) -> "NnfStart":
        """An NNF of the level's own size, clamped to the valid centre range (§5.3 with ``k = 0``).

        Example:
            >>> NnfStart.given(np.zeros((4, 6, 2), np.int32)).shift
            0
        """
        return cls.reduce(nnf, 0)
