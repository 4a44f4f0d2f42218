"""The passes of ALGORITHM.md, each with its numba function and its CUDA kernel, and the random key of a pass.

:data:`PASSES` is the one table that ties the three descriptions of the synthesis together: every section of
ALGORITHM.md that runs on the data is one or more kernels of ``kernels/propagation.cu``, and each kernel has
a numba twin of the **same name and argument list** in ``cpu_kernels.py``. The backend (:mod:`.backend`)
launches kernels by name; the numba runtime finds the twin here; the parity tests
(tests/test_kernels_parity.py) run every row on both and compare the outputs bit for bit, and fail when a
kernel exists in one source and not in the table.

======================  =============================  ==================  ===================================
ALGORITHM.md            kernel (numba = CUDA name)     backend method      what it computes
======================  =============================  ==================  ===================================
§5.1                    ``nnf_random``                 prepare_level       random NNF of the coarsest level
§5.2                    ``nnf_upsample``               prepare_level       NNF of the previous level, upsampled
§5.3                    ``nnf_reduce``                 prepare_level       a given full-size NNF, reduced
§4                      ``patch_error``                patch_error         patch error E at the NNF
§6.1                    ``occ_count``                  occupancy           centres per source pixel
§6.1                    ``box_rows``, ``box_cols``     occupancy           box sums (rows, columns)
§6.1                    ``occ_finish``                 occupancy           last box sum and the cost map
§6.1                    ``flag_clear``                 occupancy           the cost map matches the NNF
§6, §6.2–6.4            ``pm_search``                  search              one Jacobi PatchMatch iteration
§7                      ``vote``                       vote                gather vote, changed flags
§7, §8                  ``dilate_rows``, ``dilate_cols``  vote              need mask / active mask, count
======================  =============================  ==================  ===================================
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable

#: Module name under which cpu_kernels.py is loaded (see that module for why it is fixed).
KERNEL_MODULE = "rerender_video_cpu_kernels"


@dataclass(frozen=True)
class Pass:
    """One row of :data:`PASSES`.

    Attributes:
        kernel: the CUDA kernel in ``kernels/propagation.cu`` and its numba twin in ``cpu_kernels.py``.
        section: the section of propagation/ALGORITHM.md that defines what it computes.
        method: the :class:`~.backend.Backend` method that launches it.
        what: one line of what it computes.
    """

    kernel: str
    section: str
    method: str
    what: str

    @property
    def numba(self) -> Callable:
        """The numba twin of :attr:`kernel` (compiled at first call)."""
        return getattr(numba_kernels(), self.kernel)


PASSES: tuple[Pass, ...] = (
    Pass("nnf_random", "§5.1", "prepare_level", "random NNF of the coarsest level"),
    Pass("nnf_upsample", "§5.2", "prepare_level", "NNF of the previous level, upsampled"),
    Pass("nnf_reduce", "§5.3", "prepare_level", "a given full-resolution NNF reduced to the level"),
    Pass("patch_error", "§4", "patch_error", "patch error E of every (active) pixel at its NNF"),
    Pass("occ_count", "§6.1", "occupancy", "number of target pixels per source centre"),
    Pass("box_rows", "§6.1", "occupancy", "box sum along rows"),
    Pass("box_cols", "§6.1", "occupancy", "box sum along columns"),
    Pass("occ_finish", "§6.1", "occupancy", "last column box sum, then the occupancy cost map"),
    Pass("flag_clear", "§6.1", "occupancy", "mark the cost map as matching the NNF"),
    Pass("pm_search", "§6", "search", "one Jacobi PatchMatch iteration (propagation, random search)"),
    Pass("vote", "§7", "vote", "gather vote of the style channels and the changed flags"),
    Pass("dilate_rows", "§7, §8", "vote", "dilation along rows (need mask, active mask)"),
    Pass("dilate_cols", "§7, §8", "vote", "dilation along columns, counting the set pixels"),
)

_BY_KERNEL = {row.kernel: row for row in PASSES}


def pass_of(kernel: str) -> Pass:
    """The row of ``kernel``.

    Raises:
        KeyError: a kernel that is not in the table.

    Example:
        >>> pass_of("pm_search").section
        '§6'
    """
    return _BY_KERNEL[kernel]


def numba_kernels() -> ModuleType:
    """cpu_kernels.py, imported once under :data:`KERNEL_MODULE`."""
    if KERNEL_MODULE not in sys.modules:
        spec = importlib.util.spec_from_file_location(KERNEL_MODULE, Path(__file__).with_name("cpu_kernels.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[KERNEL_MODULE] = module
        spec.loader.exec_module(module)
    return sys.modules[KERNEL_MODULE]


def kernels_cached() -> bool:
    """True when numba's disk cache holds up-to-date machine code for the kernels; ``False`` means
    the next synthesis compiles them (15–30 s, once per install and kernel source).

    Any cached kernel counts: the first synthesis compiles the ones it launches together (a kernel
    that only some options call compiles later, in a second or two).
    """
    try:
        return any(kernel._cache._cache_file._load_index()  # numba's index; empty when missing or stale
                   for kernel in vars(numba_kernels()).values() if hasattr(kernel, "_cache"))
    except (AttributeError, OSError):  # another numba layout: say nothing rather than guess
        return True


def pass_key(seed: int, level: int, iteration: int, pm_iteration: int) -> int:
    """Random-generator key of one pass (ALGORITHM.md §3, §6.4), on Python ints, for every backend.

    Example:
        >>> pass_key(0, 0, 0, 0) == pass_key(0, 0, 0, 0) != pass_key(1, 0, 0, 0)
        True
    """
    pcg = numba_kernels().pcg_hash.py_func          # the kernels' hash, run as plain Python
    m32 = numba_kernels().M32
    key = pcg((seed & m32) ^ pcg((seed >> 32) & m32))
    for part in (level, iteration, pm_iteration):
        key = pcg(key ^ (part & m32))
    return key
