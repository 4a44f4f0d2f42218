"""The backend interface: the per-level operations of the synthesis (ALGORITHM.md §4–§9).

:mod:`.synthesis` runs the level loop on the host and calls one backend method per data-parallel pass.
Every pass is defined per pixel in ALGORITHM.md with integer arithmetic (or float32 in a fixed order for
the weighted vote), so two backends given the same inputs produce bit-identical NNFs, images and error
maps. The CPU backend (:mod:`.cpu_backend`, numba) is the reference; a GPU backend (CuPy raw kernels
compiled from ``kernels/*.cu``) implements the same methods on device arrays.

A backend's arrays are opaque to the host loop: it only passes the :class:`LevelState` it got from
:meth:`Backend.prepare_level` back into the other methods and reads results with :meth:`Backend.nnf` /
:meth:`Backend.image` / :meth:`Backend.error`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
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
    """Backend arrays of one level; ``arrays`` is backend-specific, ``spec`` the level's scalars."""

    spec: LevelSpec
    source_size: tuple[int, int]
    target_size: tuple[int, int]
    arrays: dict[str, Any] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)


class Backend(ABC):
    """Per-level passes of the synthesis. All image arguments are host ``np.ndarray`` in the packed layout.

    Packed layout (ALGORITHM.md §2): int16 ``[H,W,C]``, channels = style (``Cs``) then guides, values
    ``round(v · 255 · sqrt(w_c) · F)``; NNF int32 ``[H,W,2]`` holding source patch centres ``(x, y)``.
    """

    name: str = "abstract"

    @abstractmethod
    def prepare_level(self, spec: LevelSpec, source: np.ndarray, target: np.ndarray,
                      nnf: np.ndarray) -> LevelState:
        """Upload one level: packed source ``[Hs,Ws,C]``, packed target ``[Ht,Wt,C]`` (its style channels are
        overwritten by the first vote) and the starting NNF ``[Ht,Wt,2]`` (already valid, §5)."""

    @abstractmethod
    def vote(self, state: LevelState, initial: bool, update_mask: bool) -> int:
        """Vote the style channels of the target from the NNF (§7).

        ``initial``: every pixel votes and every pixel becomes active. Otherwise only pixels whose patch
        window saw an NNF change vote, and when ``update_mask`` the active mask becomes the dilated
        changed-by-``thr_q`` mask (§8). Returns the number of active pixels afterwards.
        """

    @abstractmethod
    def patch_error(self, state: LevelState, all_pixels: bool) -> None:
        """Recompute the patch error ``E`` of the current NNF at active pixels (or all pixels) (§4)."""

    @abstractmethod
    def occupancy(self, state: LevelState) -> None:
        """Rebuild the occupancy cost map of the source from the current NNF (§6.1)."""

    @abstractmethod
    def search(self, state: LevelState, steps: tuple[int, ...], key: int) -> None:
        """One PatchMatch iteration at active pixels (§6): propagation at ``steps`` then random search
        keyed by ``key`` (§6.4); Jacobi (reads the NNF before the pass, writes a new one)."""

    @abstractmethod
    def nnf(self, state: LevelState) -> np.ndarray:
        """Current NNF as host int32 ``[Ht,Wt,2]``."""

    @abstractmethod
    def image(self, state: LevelState) -> np.ndarray:
        """Current packed style channels as host int16 ``[Ht,Wt,Cs]``."""

    @abstractmethod
    def error(self, state: LevelState) -> np.ndarray:
        """Current patch errors as host int32 ``[Ht,Wt]`` (quantised units, §4)."""

    def reset_patch(self, state: LevelState, spec: LevelSpec) -> None:
        """Switch an existing level to other scalars (the extra 3×3 pass), keeping NNF and image."""
        state.spec = spec


def get_backend(name: str = "auto") -> Backend:
    """Return the backend called ``name``: ``"auto"`` (CUDA kernels when usable, else CPU), ``"cuda"``,
    ``"cpu"`` or ``"host"``. Why ``auto`` chose what it chose: ``kernels.select.choose_backend(name)``.

    Raises:
        InputError: an unknown name, or ``"cuda"`` when the kernels cannot run here (with the pip advice).

    Example:
        >>> get_backend("cpu").name
        'cpu'
    """
    from ..kernels.select import make_backend

    return make_backend(name)
