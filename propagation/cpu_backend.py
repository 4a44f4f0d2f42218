"""CPU backend of the synthesis: numba kernels, one per data-parallel pass of ALGORITHM.md.

Why numba and not vectorised torch: the work is ~10⁸ small patch comparisons per frame with per-candidate
early termination (most candidates are rejected after one or two of the five patch rows), per-pixel
branching (frozen pixels, duplicate candidates, clipped windows) and data-dependent gathers. Vectorised torch
has to evaluate every candidate in full and materialise the gathered patches: the prototype in
``benchmarks/propagation.py --torch-prototype`` (``unfold`` + gather + SSD of 5×5×9 patches for 12 candidates
per pixel, 512×512, one core) took 8.9 s per PatchMatch pass with ~675 MB of temporaries, against 0.29 s for
the numba pass below on the same (random, worst-case) data — 30× slower before freezing and duplicate
skipping, which vectorised code cannot exploit; the 12×6 schedule has 72 passes at the finest level alone.
numba compiles the per-pixel loops to native code with LLVM at first use (no compiler at install time;
``cache=True`` keeps the machine code: 12–20 s the very first time, ~1 s to load afterwards).

Every kernel is a per-pixel function looped with ``prange`` over rows, reading one buffer and writing
another (or only its own pixel), so each maps 1:1 to a CUDA kernel and the result does not depend on the
number of threads. Arithmetic is integer except the weighted vote (float32, fixed order, no FMA:
``fastmath=False`` and LLVM does not contract without it). Index arithmetic in the hot loop uses unsigned
integers so numba emits no negative-index wraparound and LLVM vectorises the int32 SSD.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

from .backend import Backend, LevelSpec, LevelState

KERNEL_MODULE = "rerender_video_cpu_kernels"


def _load_kernels():
    """Import cpu_kernels.py as ``rerender_video_cpu_kernels`` (see that module for why the name is fixed)."""
    if KERNEL_MODULE not in sys.modules:
        spec = importlib.util.spec_from_file_location(KERNEL_MODULE, Path(__file__).with_name("cpu_kernels.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[KERNEL_MODULE] = module
        spec.loader.exec_module(module)
    return sys.modules[KERNEL_MODULE]


_kernels = _load_kernels()
M32 = _kernels.M32
k_box_cols = _kernels.k_box_cols
k_box_rows = _kernels.k_box_rows
k_count_centres = _kernels.k_count_centres
k_dilate_cols = _kernels.k_dilate_cols
k_dilate_rows = _kernels.k_dilate_rows
k_occupancy_cost = _kernels.k_occupancy_cost
k_occupancy_update = _kernels.k_occupancy_update
k_patch_error = _kernels.k_patch_error
k_random_nnf = _kernels.k_random_nnf
k_reduce_nnf = _kernels.k_reduce_nnf
k_search = _kernels.k_search
k_upsample_nnf = _kernels.k_upsample_nnf
k_vote = _kernels.k_vote

def pass_key(seed: int, level: int, iteration: int, pm_iteration: int) -> int:
    """Random-generator key of one pass (ALGORITHM.md §6.4), pure Python, shared by every backend.

    Example:
        >>> pass_key(0, 0, 0, 0) == pass_key(0, 0, 0, 0) != pass_key(1, 0, 0, 0)
        True
    """
    key = _pcg_py((seed & M32) ^ _pcg_py((seed >> 32) & M32))
    for part in (level, iteration, pm_iteration):
        key = _pcg_py(key ^ (part & M32))
    return key


_pcg_py = _kernels.pcg_hash.py_func  # the kernels' hash, run as plain Python on Python ints


def kernels_cached() -> bool:
    """True when numba's disk cache holds up-to-date machine code for the kernels; ``False`` means
    the next synthesis compiles them (15–30 s, once per install and kernel source).

    Any cached search kernel counts: the first synthesis compiles them together (a kernel that only
    some options call compiles later, in a second or two).
    """
    try:
        return any(kernel._cache._cache_file._load_index()  # numba's index; empty when missing or stale
                   for name, kernel in vars(_kernels).items() if name.startswith("k_"))
    except (AttributeError, OSError):  # another numba layout: say nothing rather than guess
        return True


# ---------------------------------------------------------------------------------------------------- backend
class CpuBackend(Backend):
    """Numba implementation of :class:`~.backend.Backend` (the reference backend)."""

    name = "cpu"

    def prepare_level(self, spec: LevelSpec, source: np.ndarray, target: np.ndarray,
                      nnf: np.ndarray) -> LevelState:
        hs, ws, c = source.shape
        ht, wt, _ = target.shape
        arrays = {
            "source": np.ascontiguousarray(source, dtype=np.int16).reshape(-1),
            "target": np.ascontiguousarray(target, dtype=np.int16).reshape(-1).copy(),
            "nnf": np.ascontiguousarray(nnf, dtype=np.int32).copy(),
            "nnf_next": np.empty((ht, wt, 2), np.int32),
            "error": np.zeros((ht, wt), np.int32),
            "count": np.zeros((hs, ws), np.int32),
            "box_a": np.zeros((hs, ws), np.int32),
            "box_b": np.zeros((hs, ws), np.int32),
            "occupancy": np.zeros((hs, ws), np.int64),
            "active": np.ones((ht, wt), np.uint8),
            "moved": np.zeros((ht, wt), np.uint8),
            "changed": np.zeros((ht, wt), np.uint8),
            "mask_tmp": np.zeros((ht, wt), np.uint8),
            "need": np.zeros((ht, wt), np.uint8),
            "channels": c,
        }
        state = LevelState(spec, (hs, ws), (ht, wt), arrays,
                           {"occupancy_dirty": 1})
        return state

    def vote(self, state: LevelState, initial: bool, update_mask: bool) -> int:
        a, spec = state.arrays, state.spec
        (hs, ws), (ht, wt) = state.source_size, state.target_size
        r = spec.radius
        if not initial and not spec.weighted_vote:
            # only pixels whose patch window saw an NNF change can get a different vote (exact skip)
            k_dilate_rows(a["moved"], a["mask_tmp"], r)
            k_dilate_cols(a["mask_tmp"], a["need"], r)
        k_vote(a["source"], a["target"], ws, ht, wt, a["channels"], spec.style_channels, spec.patch_size,
               a["nnf"], a["error"], a["need"], initial or spec.weighted_vote, spec.weighted_vote,
               np.float32(spec.vote_error_scale), spec.change_threshold, a["changed"])
        a["moved"][:] = 0
        if initial:
            a["active"][:] = 1
            return ht * wt
        if not update_mask:
            return int(np.count_nonzero(a["active"]))
        k_dilate_rows(a["changed"], a["mask_tmp"], r)
        return int(k_dilate_cols(a["mask_tmp"], a["active"], r))

    def patch_error(self, state: LevelState, all_pixels: bool) -> None:
        a, spec = state.arrays, state.spec
        (hs, ws), (ht, wt) = state.source_size, state.target_size
        k_patch_error(a["source"], a["target"], ws, ht, wt, a["channels"], spec.patch_size, a["nnf"], a["error"],
                      a["active"], all_pixels)

    def occupancy(self, state: LevelState) -> None:
        a, spec = state.arrays, state.spec
        if spec.occupancy_multiplier == 0:
            if state.counters["occupancy_dirty"]:
                a["occupancy"][:] = 0
                state.counters["occupancy_dirty"] = 0
            return
        if not state.counters["occupancy_dirty"]:
            return
        r = spec.radius
        k_count_centres(a["nnf"], a["count"])
        k_box_rows(a["count"], a["box_a"], r)
        k_box_cols(a["box_a"], a["box_b"], r)
        k_box_rows(a["box_b"], a["box_a"], r)
        k_box_cols(a["box_a"], a["box_b"], r)
        k_occupancy_cost(a["box_b"], np.int64(spec.occupancy_multiplier), a["occupancy"])
        state.counters["occupancy_dirty"] = 0

    def search(self, state: LevelState, steps: tuple[int, ...], key: int) -> None:
        a, spec = state.arrays, state.spec
        (hs, ws), (ht, wt) = state.source_size, state.target_size
        moved = k_search(a["source"], a["target"], hs, ws, ht, wt, a["channels"], spec.patch_size, a["nnf"],
                         a["nnf_next"], a["error"], a["occupancy"], a["active"], a["moved"],
                         np.asarray(steps, np.int64), np.asarray(spec.random_radii, np.int64), np.int64(key))
        if moved and spec.occupancy_multiplier and not state.counters["occupancy_dirty"] \
                and moved * 2 * (2 * spec.patch_size - 1) ** 2 < 4 * hs * ws:
            # few changes: update the footprint sums in place (same values as a rebuild, §6.1)
            k_occupancy_update(a["nnf"], a["nnf_next"], a["box_b"], a["occupancy"],
                               np.int64(spec.occupancy_multiplier), spec.patch_size)
        elif moved:
            state.counters["occupancy_dirty"] = 1
        a["nnf"], a["nnf_next"] = a["nnf_next"], a["nnf"]

    def reset_patch(self, state: LevelState, spec: LevelSpec) -> None:
        super().reset_patch(state, spec)
        state.counters["occupancy_dirty"] = 1      # the cost map depends on p and λ: rebuild (or zero) it

    def nnf(self, state: LevelState) -> np.ndarray:
        return state.arrays["nnf"].copy()

    def image(self, state: LevelState) -> np.ndarray:
        (ht, wt), c = state.target_size, state.arrays["channels"]
        return state.arrays["target"].reshape(ht, wt, c)[..., :state.spec.style_channels].copy()

    def error(self, state: LevelState) -> np.ndarray:
        return state.arrays["error"].copy()


# ---------------------------------------------------------------------------------------------------- host NNF init
class NnfInit:
    """§5 NNF initialisation, run on the host (numba) for every backend so all backends start alike."""

    @staticmethod
    def random_nnf(shape: tuple[int, int], source_size: tuple[int, int], radius: int, key: int) -> np.ndarray:
        """§5.1 random NNF ``[H,W,2]`` int32 for a target of ``shape`` (H, W)."""
        nnf = np.empty((*shape, 2), np.int32)
        k_random_nnf(nnf, source_size[0], source_size[1], radius, np.int64(key))
        return nnf

    @staticmethod
    def upsample_nnf(coarse: np.ndarray, shape: tuple[int, int], source_size: tuple[int, int],
                     radius: int) -> np.ndarray:
        """§5.2 NNF upsampling to a target of ``shape`` (H, W)."""
        fine = np.empty((*shape, 2), np.int32)
        k_upsample_nnf(np.ascontiguousarray(coarse, np.int32), fine, source_size[0], source_size[1], radius)
        return fine

    @staticmethod
    def reduce_nnf(full: np.ndarray, shape: tuple[int, int], shift: int, source_size: tuple[int, int],
                   radius: int) -> np.ndarray:
        """§5.3 a full-resolution NNF brought to a level ``shift`` octaves coarser."""
        out = np.empty((*shape, 2), np.int32)
        k_reduce_nnf(np.ascontiguousarray(full, np.int32), out, shift, source_size[0], source_size[1], radius)
        return out
