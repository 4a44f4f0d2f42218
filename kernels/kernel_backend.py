"""The synthesis :class:`~..propagation.backend.Backend` run by the kernels of ``kernels/*.cu``.

One implementation of the backend's passes on top of a small *runtime* (allocate, upload, download, fill,
launch), with two runtimes:

* :class:`HostRuntime` — numpy arrays, the kernels compiled for the CPU through ``host_shim.h``
  (:mod:`.host_build`): backend ``"host"``, what CI runs to check the GPU code against the numba reference;
* ``CudaRuntime`` (:mod:`.cuda_backend`) — torch CUDA tensors, the same kernels compiled by NVRTC and
  launched with CuPy on torch's current stream: backend ``"cuda"``.

Every array of a level stays in the runtime's memory from :meth:`KernelBackend.prepare_level` on; a pass is a
few kernel launches and no transfer, except the vote, which reads back one int32 (the active pixel count the
host loop needs to stop early).

Pass → kernels (ALGORITHM.md section, cpu_backend.py function):

========================  ==============================================================
patch_error (§4)          ``patch_error``                          (k_patch_error)
occupancy (§6.1)          ``occ_count, box_rows, box_cols, box_rows, occ_finish, flag_clear``
                          (k_count_centres, k_box_rows/cols ×2, k_occupancy_cost)
search (§6)               ``pm_search``                            (k_search)
vote (§7, §8)             ``dilate_rows, dilate_cols`` (need) ``vote`` ``dilate_rows, dilate_cols`` (mask)
NNF init (§5)             ``nnf_random, nnf_upsample, nnf_reduce``  (k_random_nnf, k_upsample_nnf, k_reduce_nnf)
========================  ==============================================================
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from ..common.errors import input_error
from ..propagation.backend import Backend, LevelSpec, LevelState
from .source import BLOCK, grid_for

#: Largest element count of one image: kernels index with int32.
MAX_ELEMENTS = (1 << 31) - 1
#: Largest grid y dimension of a CUDA launch (65535 blocks of BLOCK[1] rows).
MAX_GRID_Y = 65535
#: The vote keeps per-channel sums in registers: at most this many style channels.
MAX_STYLE_CHANNELS = 8
#: Propagation steps passed to one search (device array of at most this length).
MAX_STEPS = 16


class HostRuntime:
    """Arrays are C-contiguous numpy arrays; kernels run through the host build (:mod:`.host_build`)."""

    name = "host"

    def __init__(self):
        from .host_build import host_kernels

        self.kernels = host_kernels()

    def scope(self):
        return contextlib.nullcontext()

    def upload(self, array, dtype, copy: bool = True) -> np.ndarray:
        return np.array(_to_numpy(array), dtype=dtype, order="C", copy=True)

    def empty(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        return np.empty(shape, dtype)

    def zeros(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        return np.zeros(shape, dtype)

    def fill(self, array: np.ndarray, value: int) -> None:
        array[...] = value

    def download(self, array: np.ndarray) -> np.ndarray:
        return np.array(array, copy=True)

    def read_int(self, array: np.ndarray) -> int:
        return int(array.reshape(-1)[0])

    def count_nonzero(self, array: np.ndarray) -> int:
        return int(np.count_nonzero(array))

    def launch(self, name: str, grid: tuple[int, int, int], block: tuple[int, int, int], *args: Any) -> None:
        self.kernels.launch(name, grid, block, *args)


class KernelBackend(Backend):
    """:class:`~..propagation.backend.Backend` implemented with the ``kernels/*.cu`` kernels on ``runtime``.

    Bit-identical to :class:`~..propagation.cpu_backend.CpuBackend` (NNF, image, error) for the same inputs.

    Raises (from :meth:`prepare_level`):
        InputError: images whose element count does not fit the kernels' int32 indices, too many rows for
            one launch grid, more than 8 style channels, or arrays of the wrong type.
    """

    def __init__(self, runtime):
        self.rt = runtime
        self.name = runtime.name

    # -------------------------------------------------------------------------------------------- level setup
    def prepare_level(self, spec: LevelSpec, source, target, nnf) -> LevelState:
        source = _packed(source, "source")
        target = _packed(target, "target")
        (hs, ws, c), (ht, wt, ct) = tuple(source.shape), tuple(target.shape)
        nnf = _checked_nnf(nnf, (ht, wt))
        if ct != c:
            raise input_error("target", f"{c} channels like the source", ct, "pack source and target alike")
        check_kernel_limits(hs, ws, c, "source")
        check_kernel_limits(ht, wt, max(c, 2), "target")   # the NNF has 2 ints per pixel
        check_vote_scale(spec)
        _check_nnf_range(nnf, spec.radius, hs, ws)
        if not 1 <= spec.style_channels <= min(c, MAX_STYLE_CHANNELS):
            raise input_error("style_channels", f"1 to {min(c, MAX_STYLE_CHANNELS)}", spec.style_channels,
                              "pass at most 8 style channels (e.g. RGB or RGBA)")
        rt = self.rt
        with rt.scope():
            arrays = {
                "source": rt.upload(source, np.int16, copy=False),
                "target": rt.upload(target, np.int16),
                "nnf": rt.upload(nnf, np.int32),
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
                "flags": rt.upload(np.array([1, 0], np.int32), np.int32),   # [0] = NNF changed since occupancy
                "counter": rt.zeros((1,), np.int32),
                "radii": rt.upload(_int32_list(spec.random_radii, "random_radii", 64), np.int32),
                "steps": {},
                "channels": c,
            }
            rt.fill(arrays["active"], 1)
        return LevelState(spec, (hs, ws), (ht, wt), arrays, {})

    def reset_patch(self, state: LevelState, spec: LevelSpec) -> None:
        check_vote_scale(spec)
        state.spec = spec
        with self.rt.scope():
            state.arrays["radii"] = self.rt.upload(_int32_list(spec.random_radii, "random_radii", 64), np.int32)
            self.rt.fill(state.arrays["flags"], 1)   # the cost map depends on p and λ: rebuild (or zero) it

    # -------------------------------------------------------------------------------------------- passes
    def vote(self, state: LevelState, initial: bool, update_mask: bool) -> int:
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
        a, spec = state.arrays, state.spec
        ws, (ht, wt) = state.source_size[1], state.target_size
        with self.rt.scope():
            self.rt.launch("patch_error", grid_for(wt, ht), BLOCK3, a["source"], a["target"], ws, ht, wt,
                           a["channels"], spec.patch_size, a["nnf"], a["error"], a["active"], int(all_pixels))

    def occupancy(self, state: LevelState) -> None:
        a, spec, rt = state.arrays, state.spec, self.rt
        (hs, ws), (ht, wt) = state.source_size, state.target_size
        src_grid, r = grid_for(ws, hs), spec.radius
        with rt.scope():
            if spec.occupancy_multiplier != 0:
                rt.launch("occ_count", grid_for(wt, ht), BLOCK3, a["nnf"], ht, wt, a["count"], ws, a["flags"])
                rt.launch("box_rows", src_grid, BLOCK3, a["count"], a["box_a"], hs, ws, r, a["flags"])
                rt.launch("box_cols", src_grid, BLOCK3, a["box_a"], a["box_b"], hs, ws, r, a["flags"])
                rt.launch("box_rows", src_grid, BLOCK3, a["box_b"], a["box_a"], hs, ws, r, a["flags"])
            # with a zero multiplier this only zeroes the cost map (when the NNF changed), like the reference
            rt.launch("occ_finish", src_grid, BLOCK3, a["box_a"], a["occupancy"], a["count"], hs, ws, r,
                      spec.occupancy_multiplier, a["flags"])
            rt.launch("flag_clear", (1, 1, 1), (1, 1, 1), a["flags"])

    def search(self, state: LevelState, steps: tuple[int, ...], key: int) -> None:
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
        with self.rt.scope():
            return self.rt.download(state.arrays["nnf"]).reshape(*state.target_size, 2)

    def image(self, state: LevelState) -> np.ndarray:
        (ht, wt), c = state.target_size, state.arrays["channels"]
        with self.rt.scope():
            packed = self.rt.download(state.arrays["target"]).reshape(ht, wt, c)
        return np.ascontiguousarray(packed[..., :state.spec.style_channels])

    def error(self, state: LevelState) -> np.ndarray:
        with self.rt.scope():
            return self.rt.download(state.arrays["error"]).reshape(state.target_size)

    # -------------------------------------------------------------------------------------------- NNF init (§5)
    def random_nnf(self, shape: tuple[int, int], source_size: tuple[int, int], radius: int, key: int):
        """§5.1 on the runtime: a random NNF ``[H,W,2]`` int32 (runtime array)."""
        check_kernel_limits(shape[0], shape[1], 2, "target")
        with self.rt.scope():
            out = self.rt.empty((*shape, 2), np.int32)
            self.rt.launch("nnf_random", grid_for(shape[1], shape[0]), BLOCK3, out, shape[0], shape[1],
                           source_size[0], source_size[1], radius, int(key) & 0xFFFFFFFF)
        return out

    def upsample_nnf(self, coarse, shape: tuple[int, int], source_size: tuple[int, int], radius: int):
        """§5.2 on the runtime: the NNF of the next finer level (runtime array in, runtime array out)."""
        check_kernel_limits(shape[0], shape[1], 2, "target")
        with self.rt.scope():
            out = self.rt.empty((*shape, 2), np.int32)
            self.rt.launch("nnf_upsample", grid_for(shape[1], shape[0]), BLOCK3, coarse, coarse.shape[0],
                           coarse.shape[1], out, shape[0], shape[1], source_size[0], source_size[1], radius)
        return out

    def reduce_nnf(self, full, shape: tuple[int, int], shift: int, source_size: tuple[int, int], radius: int):
        """§5.3 on the runtime: a full-resolution NNF brought ``shift`` octaves down."""
        check_kernel_limits(shape[0], shape[1], 2, "target")
        with self.rt.scope():
            out = self.rt.empty((*shape, 2), np.int32)
            self.rt.launch("nnf_reduce", grid_for(shape[1], shape[0]), BLOCK3, full, full.shape[0], full.shape[1],
                           out, shape[0], shape[1], shift, source_size[0], source_size[1], radius)
        return out


BLOCK3 = (BLOCK[0], BLOCK[1], 1)


def check_kernel_limits(height: int, width: int, channels: int, name: str) -> None:
    """Refuse an image the kernels cannot index: ``H·W·C`` must fit int32 and ``H`` one launch grid.

    Raises:
        InputError: naming the image, the limit and the size got.

    Example:
        >>> check_kernel_limits(528, 720, 13, "target")
        >>> check_kernel_limits(20000, 20000, 13, "target")
        Traceback (most recent call last):
        ...
        rerender_video.common.errors.InputError: target: Expected ...
    """
    elements = height * width * channels
    if elements > MAX_ELEMENTS:
        raise input_error(name, f"height × width × channels <= {MAX_ELEMENTS} (the kernels index with int32)",
                          f"{height} × {width} × {channels} = {elements}",
                          ["downscale the frames (e.g. to 2048 px on the long side)", "use fewer guide channels",
                           "use backend 'cpu'"])
    if -(-height // BLOCK[1]) > MAX_GRID_Y:
        raise input_error(name, f"at most {MAX_GRID_Y * BLOCK[1]} rows (CUDA grid limit)", f"{height} rows",
                          "downscale the frames")


def check_vote_scale(spec: LevelSpec) -> None:
    """Refuse a weighted-vote error scale outside [2^-120, 2^90]: inside it no float32 value of the vote is
    subnormal (errors are integers in [1, 2^31)), so the GPU's forced flush-to-zero cannot change a result.

    Raises:
        InputError: naming ``vote_error_scale`` (in practice: guide/style weights around 1e30 or 1e-30).
    """
    scale = float(spec.vote_error_scale)
    if spec.weighted_vote and not (2.0 ** -120 <= scale <= 2.0 ** 90):
        raise input_error("vote_error_scale", "a value in [2^-120, 2^90] for the weighted vote", scale,
                          "use style and guide weights within a few orders of magnitude of 1")


def _packed(array, name: str):
    """Check a packed image (numpy array or torch tensor, any device, any strides): int16 ``[H,W,C]``."""
    if len(tuple(array.shape)) != 3:
        raise input_error(name, "a packed image [H,W,C] (3 dimensions)", list(array.shape),
                          "pass the int16 packed layout of propagation/backend.py")
    if str(array.dtype) not in ("int16", "torch.int16"):
        raise input_error(name, "int16 packed values (ALGORITHM.md §2)", array.dtype,
                          "quantise with propagation.synthesis (float images are not accepted here)")
    return array


def _checked_nnf(nnf, size: tuple[int, int]):
    if tuple(nnf.shape) != (*size, 2):
        raise input_error("nnf", f"shape {[*size, 2]} (target size, (x, y))", list(nnf.shape),
                          "pass one source centre per target pixel")
    if str(nnf.dtype).replace("torch.", "") not in ("int16", "int32", "int64", "uint8", "uint16", "uint32"):
        raise input_error("nnf", "integer source coordinates", nnf.dtype, "round to int32")
    return nnf


def _check_nnf_range(nnf, r: int, hs: int, ws: int) -> None:
    """Every centre must lie in [r, Ws-1-r] × [r, Hs-1-r]: the kernels index the source without bounds checks
    (on the GPU an out-of-range read would poison the CUDA context of the whole process)."""
    if nnf.shape[0] * nnf.shape[1] == 0:
        return
    xs, ys = nnf[..., 0], nnf[..., 1]
    got = [int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())]
    if got[0] < r or got[1] > ws - 1 - r or got[2] < r or got[3] > hs - 1 - r:
        raise input_error("nnf", f"patch centres in x ∈ [{r}, {ws - 1 - r}], y ∈ [{r}, {hs - 1 - r}] (patch radius {r} "
                                 f"inside the {ws}×{hs} source)", f"x ∈ [{got[0]}, {got[1]}], y ∈ [{got[2]}, {got[3]}]",
                          "clamp the NNF to the valid centre range (ALGORITHM.md §5)")


def _to_numpy(array) -> np.ndarray:
    if isinstance(array, np.ndarray):
        return array
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is always there inside ComfyUI
        torch = None
    if torch is not None and isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def _int32_list(values, name: str, limit: int) -> np.ndarray:
    values = np.asarray(values, dtype=np.int64).reshape(-1)
    if values.size > limit or (values.size and (values.min() < 0 or values.max() > (1 << 30))):
        raise input_error(name, f"at most {limit} non-negative integers", list(values), "check the level spec")
    return values.astype(np.int32) if values.size else np.zeros(1, np.int32)


class HostBackend(KernelBackend):
    """The synthesis backend ``"host"``: the CUDA kernels compiled for the CPU (tests, debugging).

    Raises:
        HostBuildError: no C++ compiler, or the kernels did not compile (see :mod:`.host_build`).
    """

    def __init__(self):
        super().__init__(HostRuntime())
