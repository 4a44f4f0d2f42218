"""The synthesis backend: the level passes of ALGORITHM.md as one launch sequence, on any runtime.

:func:`~..synthesis.synthesize` runs the level loop of ALGORITHM.md §3 on the host and calls one
:class:`Backend` method per data-parallel pass. Each method launches kernels by name (the table in
:mod:`.passes` maps them to ALGORITHM.md) on a *runtime* that owns the arrays:

* ``cpu`` — :class:`~.numba_runtime.NumbaRuntime`: numpy arrays, the numba twins of the kernels;
* ``host`` — :class:`kernels.runtime.HostRuntime`: numpy arrays, the CUDA C kernels built by g++ (CI's check
  of the GPU code);
* ``cuda`` — :class:`kernels.cuda_runtime.CudaRuntime`: torch CUDA tensors, the kernels compiled by NVRTC.

So every backend runs the same passes in the same order with the same bookkeeping, and the outputs are
bit-identical (the kernels are integer, or float32 in a fixed order). Every array of a level stays in the
runtime's memory from :meth:`Backend.prepare_level` on — the starting NNF included (§5 runs as kernels) —
and a pass is a few launches and no transfer, except the vote, which reads back one int32 (the active pixel
count the host loop needs to stop early).

Occupancy bookkeeping (§6.1): ``flags[0]`` says the cost map does not match the NNF. ``prepare_level`` and
``reset_patch`` set it, ``pm_search`` sets it when a match moved, and :meth:`Backend.occupancy` launches the
rebuild, which every kernel of it skips unless the flag is set, then clears it. The host never reads the
flag, so no pass waits for the device.

Packed layout (ALGORITHM.md §2): int16 ``[H,W,C]``, channels = style (``Cs``) then guides, values
``round(v · 255 · sqrt(w_c) · F)``; NNF int32 ``[H,W,2]`` holding source patch centres ``(x, y)``.
"""

from __future__ import annotations

import numpy as np

from ...common.errors import input_error
from ...kernels.runtime import check_kernel_limits, check_vote_scale
from ...kernels.source import BLOCK, grid_for
from .level import LevelSpec, LevelState, NnfStart

#: The vote keeps per-channel sums in registers: at most this many style channels.
MAX_STYLE_CHANNELS = 8
#: Propagation steps passed to one search (device array of at most this length).
MAX_STEPS = 16
BLOCK3 = (BLOCK[0], BLOCK[1], 1)


class Backend:
    """The per-level passes of the synthesis on ``runtime`` (see the module docstring).

    Raises (from :meth:`prepare_level`):
        InputError: a packed image that is not int16 ``[H,W,C]``, source and target with different channel
            counts, more than 8 style channels, a starting NNF of the wrong shape or type; on the CUDA C
            runtimes also images whose element count does not fit the kernels' int32 indices, too many rows
            for one launch grid, or a weighted-vote scale outside the exact float range.

    Example:
        >>> from rerender_video.propagation.backends.numba_runtime import NumbaRuntime
        >>> engine = Backend(NumbaRuntime())
        >>> image = np.zeros((12, 16, 4), np.int16)
        >>> spec = LevelSpec(5, 3, 0, 0, False, 1e-4, (8, 4, 2, 1), 0)
        >>> state = engine.prepare_level(spec, image, image, NnfStart.random(7))
        >>> engine.vote(state, initial=True, update_mask=False), engine.nnf(state).shape
        (192, (12, 16, 2))
    """

    def __init__(self, runtime):
        self.rt = runtime
        self.name = runtime.name

    # -------------------------------------------------------------------------------------------- level setup
    def prepare_level(self, spec: LevelSpec, source, target, start: NnfStart) -> LevelState:
        """Upload one level: packed source ``[Hs,Ws,C]`` and target ``[Ht,Wt,C]`` (numpy or torch, any device;
        the target's style channels are overwritten by the first vote), and compute the starting NNF (§5)."""
        source = _packed(source, "source")
        target = _packed(target, "target")
        (hs, ws, c), (ht, wt, ct) = tuple(source.shape), tuple(target.shape)
        if ct != c:
            raise input_error("target", f"{c} channels like the source", ct, "pack source and target alike")
        if not 1 <= spec.style_channels <= min(c, MAX_STYLE_CHANNELS):
            raise input_error("style_channels", f"1 to {min(c, MAX_STYLE_CHANNELS)}", spec.style_channels,
                              "pass at most 8 style channels (e.g. RGB or RGBA)")
        if start.kind == "reduce":
            _check_full_nnf(start.full, start.shift, (ht, wt))
        if self.rt.kernel_limits:
            check_kernel_limits(hs, ws, c, "source")
            check_kernel_limits(ht, wt, max(c, 2), "target")   # the NNF has 2 ints per pixel
            check_vote_scale(spec.weighted_vote, spec.vote_error_scale)
        rt = self.rt
        with rt.scope():
            arrays = {
                "source": rt.upload(source, np.int16, copy=False),
                "target": rt.upload(target, np.int16),
                "nnf": self._start_nnf(start, (hs, ws), (ht, wt), spec.radius),
                "nnf_next": rt.empty((ht, wt, 2), np.int32),
                "error": rt.zeros((ht, wt), np.int32),
                "count": rt.zeros((hs, ws), np.int32),
                "box_a": rt.zeros((hs, ws), np.int32),
                "box_b": rt.zeros((hs, ws), np.int32),
                "occupancy": rt.zeros((hs, ws), np.int64),
                "active": rt.zeros((ht, wt), np.uint8),
                "moved": rt.zeros((ht, wt), np.uint8),
                "changed": rt.zeros((ht, wt), np.uint8),
                "mask_tmp": rt.zeros((ht, wt), np.uint8),
                "need": rt.zeros((ht, wt), np.uint8),
                "flags": rt.upload(np.array([1], np.int32), np.int32),   # [0]: the cost map is stale (§6.1)
                "counter": rt.zeros((1,), np.int32),
                "radii": rt.upload(_int32_list(spec.random_radii, "random_radii", 64), np.int32),
                "steps": {},
                "channels": c,
            }
            rt.fill(arrays["active"], 1)
        return LevelState(spec, (hs, ws), (ht, wt), arrays)

    def _start_nnf(self, start: NnfStart, source_size: tuple[int, int], target_size: tuple[int, int], r: int):
        """§5 on the runtime: the level's first NNF ``[Ht,Wt,2]`` int32, always inside the valid centre range."""
        (hs, ws), (ht, wt), rt = source_size, target_size, self.rt
        nnf = rt.empty((ht, wt, 2), np.int32)
        grid = grid_for(wt, ht)
        if start.kind == "random":
            rt.launch("nnf_random", grid, BLOCK3, nnf, ht, wt, hs, ws, r, int(start.key) & 0xFFFFFFFF)
        elif start.kind == "upsample":
            (hc, wc) = start.parent.target_size
            rt.launch("nnf_upsample", grid, BLOCK3, start.parent.arrays["nnf"], hc, wc, nnf, ht, wt, hs, ws, r)
        elif start.kind == "reduce":
            full = rt.upload(start.full, np.int32)
            hf, wf = tuple(start.full.shape[:2])
            rt.launch("nnf_reduce", grid, BLOCK3, full, hf, wf, nnf, ht, wt, start.shift, hs, ws, r)
        else:
            raise ValueError(f"unknown NNF start {start.kind!r}")
        return nnf

    def reset_patch(self, state: LevelState, spec: LevelSpec) -> None:
        """Switch an existing level to other scalars (the extra 3×3 pass), keeping NNF and image."""
        if self.rt.kernel_limits:
            check_vote_scale(spec.weighted_vote, spec.vote_error_scale)
        state.spec = spec
        with self.rt.scope():
            state.arrays["radii"] = self.rt.upload(_int32_list(spec.random_radii, "random_radii", 64), np.int32)
            self.rt.fill(state.arrays["flags"], 1)   # the cost map depends on p and λ: rebuild (or zero) it

    # -------------------------------------------------------------------------------------------- passes
    def vote(self, state: LevelState, initial: bool, update_mask: bool) -> int:
        """Vote the style channels of the target from the NNF (§7).

        ``initial``: every pixel votes and every pixel becomes active. Otherwise only pixels whose patch
        window saw an NNF change vote, and when ``update_mask`` the active mask becomes the dilated
        changed-by-``thr_q`` mask (§8). Returns the number of active pixels afterwards.
        """
        a, spec, rt = state.arrays, state.spec, self.rt
        ws, (ht, wt) = state.source_size[1], state.target_size
        grid, r = grid_for(wt, ht), spec.radius
        all_pixels = initial or spec.weighted_vote
        with rt.scope():
            if not all_pixels:
                # only pixels whose patch window saw an NNF change can get a different vote (exact skip)
                rt.launch("dilate_rows", grid, BLOCK3, a["moved"], a["mask_tmp"], ht, wt, r, a["counter"])
                rt.launch("dilate_cols", grid, BLOCK3, a["mask_tmp"], a["need"], ht, wt, r, a["counter"])
            rt.launch("vote", grid, BLOCK3, a["source"], a["target"], ws, ht, wt, a["channels"],
                      spec.style_channels, spec.patch_size, a["nnf"], a["error"], a["need"], int(all_pixels),
                      int(spec.weighted_vote), np.float32(spec.vote_error_scale), spec.change_threshold,
                      a["changed"], a["moved"])
            if initial:
                rt.fill(a["active"], 1)
                return ht * wt
            if not update_mask:
                return rt.count_nonzero(a["active"])
            rt.launch("dilate_rows", grid, BLOCK3, a["changed"], a["mask_tmp"], ht, wt, r, a["counter"])
            rt.launch("dilate_cols", grid, BLOCK3, a["mask_tmp"], a["active"], ht, wt, r, a["counter"])
            return rt.read_int(a["counter"])

    def patch_error(self, state: LevelState, all_pixels: bool) -> None:
        """Recompute the patch error ``E`` of the current NNF at active pixels (or all pixels) (§4)."""
        a, spec = state.arrays, state.spec
        ws, (ht, wt) = state.source_size[1], state.target_size
        with self.rt.scope():
            self.rt.launch("patch_error", grid_for(wt, ht), BLOCK3, a["source"], a["target"], ws, ht, wt,
                           a["channels"], spec.patch_size, a["nnf"], a["error"], a["active"], int(all_pixels))

    def occupancy(self, state: LevelState) -> None:
        """Bring the occupancy cost map (§6.1) up to date with the NNF: rebuilt when stale, zeros when λ = 0."""
        a, spec, rt = state.arrays, state.spec, self.rt
        (hs, ws), (ht, wt) = state.source_size, state.target_size
        src_grid, r = grid_for(ws, hs), spec.radius
        with rt.scope():
            if spec.occupancy_multiplier != 0:
                rt.launch("occ_count", grid_for(wt, ht), BLOCK3, a["nnf"], ht, wt, a["count"], ws, a["flags"])
                rt.launch("box_rows", src_grid, BLOCK3, a["count"], a["box_a"], hs, ws, r, a["flags"])
                rt.launch("box_cols", src_grid, BLOCK3, a["box_a"], a["box_b"], hs, ws, r, a["flags"])
                rt.launch("box_rows", src_grid, BLOCK3, a["box_b"], a["box_a"], hs, ws, r, a["flags"])
            # with a zero multiplier this only zeroes the cost map (when it is stale)
            rt.launch("occ_finish", src_grid, BLOCK3, a["box_a"], a["occupancy"], a["count"], hs, ws, r,
                      spec.occupancy_multiplier, a["flags"])
            rt.launch("flag_clear", (1, 1, 1), (1, 1, 1), a["flags"])

    def search(self, state: LevelState, steps: tuple[int, ...], key: int) -> None:
        """One PatchMatch iteration at active pixels (§6): propagation at ``steps`` then random search
        keyed by ``key`` (§6.4); Jacobi (reads the NNF before the pass, writes a new one)."""
        a, spec = state.arrays, state.spec
        (hs, ws), (ht, wt) = state.source_size, state.target_size
        steps = tuple(int(step) for step in steps)
        with self.rt.scope():
            if steps not in a["steps"]:
                a["steps"][steps] = self.rt.upload(_int32_list(steps or (0,), "steps", MAX_STEPS), np.int32)
            self.rt.launch("pm_search", grid_for(wt, ht), BLOCK3, a["source"], a["target"], hs, ws, ht, wt,
                           a["channels"], spec.patch_size, a["nnf"], a["nnf_next"], a["error"], a["occupancy"],
                           a["active"], a["moved"], a["flags"], a["steps"][steps], len(steps), a["radii"],
                           len(spec.random_radii), int(key) & 0xFFFFFFFF)
        a["nnf"], a["nnf_next"] = a["nnf_next"], a["nnf"]

    # -------------------------------------------------------------------------------------------- results
    def nnf(self, state: LevelState) -> np.ndarray:
        """Current NNF as host int32 ``[Ht,Wt,2]``."""
        with self.rt.scope():
            return self.rt.download(state.arrays["nnf"]).reshape(*state.target_size, 2)

    def image(self, state: LevelState) -> np.ndarray:
        """Current packed style channels as host int16 ``[Ht,Wt,Cs]``."""
        (ht, wt), c = state.target_size, state.arrays["channels"]
        with self.rt.scope():
            packed = self.rt.download(state.arrays["target"]).reshape(ht, wt, c)
        return np.ascontiguousarray(packed[..., :state.spec.style_channels])

    def error(self, state: LevelState) -> np.ndarray:
        """Current patch errors as host int32 ``[Ht,Wt]`` (quantised units, §4)."""
        with self.rt.scope():
            return self.rt.download(state.arrays["error"]).reshape(state.target_size)


def _packed(array, name: str):
    """Check a packed image (numpy array or torch tensor, any device, any strides): int16 ``[H,W,C]``."""
    if len(tuple(array.shape)) != 3:
        raise input_error(name, "a packed image [H,W,C] (3 dimensions)", list(array.shape),
                          "pass the int16 packed layout of propagation/backends/backend.py")
    if str(array.dtype) not in ("int16", "torch.int16"):
        raise input_error(name, "int16 packed values (ALGORITHM.md §2)", array.dtype,
                          "quantise with propagation.synthesis (float images are not accepted here)")
    return array


def _check_full_nnf(nnf, shift: int, size: tuple[int, int]) -> None:
    """A full-resolution NNF for §5.3: ``[H,W,2]`` integers with ``H >> shift, W >> shift`` = the level size."""
    shape = tuple(nnf.shape)
    if len(shape) != 3 or shape[2] != 2 or (shape[0] >> shift, shape[1] >> shift) != size:
        expected = f"shape {[*size, 2]} (target size, (x, y))" if shift == 0 else \
            f"[H,W,2] with H >> {shift} = {size[0]} and W >> {shift} = {size[1]}"
        raise input_error("nnf", expected, list(shape), "pass one source centre per target pixel")
    if str(nnf.dtype).replace("torch.", "") not in ("int16", "int32", "int64", "uint8", "uint16", "uint32"):
        raise input_error("nnf", "integer source coordinates", nnf.dtype, "round to int32")


def _int32_list(values, name: str, limit: int) -> np.ndarray:
    values = np.asarray(values, dtype=np.int64).reshape(-1)
    if values.size > limit or (values.size and (values.min() < 0 or values.max() > (1 << 30))):
        raise input_error(name, f"at most {limit} non-negative integers", list(values), "check the level spec")
    return values.astype(np.int32) if values.size else np.zeros(1, np.int32)
