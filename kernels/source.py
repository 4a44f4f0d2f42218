"""The CUDA C source of the kernels, its hash, compiler options and parsed kernel signatures.

Every launcher (NVRTC through CuPy, the host C++ build, the ``nvcc -ptx`` check) reads the source from here,
and both runtime launchers marshal arguments from the same parsed signatures, so a parameter added to a
kernel cannot be passed with the wrong type by one backend and the right one by another.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

KERNEL_DIR = Path(__file__).resolve().parent
SOURCE_FILES = ("propagation.cu",)
SHIM_HEADER = KERNEL_DIR / "host_shim.h"
#: NVRTC options: no FMA contraction, so float32 results match the host build (-ffp-contract=off); IEEE
#: division and square root (NVRTC's defaults, spelled out so they cannot drift). CuPy appends
#: ``-ftz=true`` and ``-arch=compute_XX`` after these (NVRTC honours the last occurrence), so flush-to-zero
#: cannot be turned off through CuPy: the only float pass, the weighted vote, never produces subnormal values
#: for an error scale in [2^-120, 2^90] (checked by the backend), so FTZ cannot change a result.
NVRTC_OPTIONS = ("--fmad=false", "--prec-div=true", "--prec-sqrt=true", "-std=c++14")
#: What CuPy appends to the options of ``cupy.RawModule`` before the architecture (cupy/cuda/compiler.py).
CUPY_APPENDED_OPTIONS = ("-ftz=true",)
#: nvcc options of the CI compile check (the run-time float semantics; PTX for a recent architecture).
NVCC_PTX_OPTIONS = ("-ptx", "-arch=compute_90", "--fmad=false", "--prec-div=true", "--prec-sqrt=true",
                    "--ftz=true", "-std=c++14")
#: Threads per block of every 2-D kernel (x, y): 256 threads, a warp along a row.
BLOCK = (32, 8)

# C parameter types the kernels may use -> (numpy dtype of the pointee / scalar, is_pointer).
_C_TYPES = {
    "i16": np.int16, "short": np.int16, "int": np.int32, "i64": np.int64, "long long": np.int64,
    "u32": np.uint32, "unsigned int": np.uint32, "u8": np.uint8, "unsigned char": np.uint8,
    "float": np.float32, "u64": np.uint64, "unsigned long long": np.uint64,
}
_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(([^)]*)\)')


@dataclass(frozen=True)
class Param:
    """One kernel parameter: its name, the numpy dtype of the scalar or pointee, and whether it is a pointer."""

    name: str
    dtype: type
    pointer: bool


@dataclass(frozen=True)
class Signature:
    """A kernel's name and parameters in order."""

    name: str
    params: tuple[Param, ...]


def kernel_source() -> str:
    """The CUDA C source of all kernels (the ``.cu`` files concatenated).

    Example:
        >>> "pm_search" in kernel_source()
        True
    """
    return "\n".join((KERNEL_DIR / name).read_text() for name in SOURCE_FILES)


def source_hash(*extra: str) -> str:
    """Hex digest of the kernel source, the host shim and ``extra`` strings (compiler, flags): a cache key."""
    digest = hashlib.blake2b(digest_size=12)
    for part in (kernel_source(), SHIM_HEADER.read_text(), *extra):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


@functools.lru_cache(maxsize=4)
def _parse(source: str) -> dict[str, Signature]:
    signatures = {}
    code = re.sub(r"/\*.*?\*/", " ", re.sub(r"//[^\n]*", " ", source), flags=re.S)
    for match in _KERNEL.finditer(code):
        name, text = match.group(1), " ".join(match.group(2).split())
        params = []
        for raw in filter(None, (part.strip() for part in text.split(","))):
            declaration = raw.replace("const ", "").replace("__restrict__", "").strip()
            pointer = "*" in declaration
            type_part, _, param_name = declaration.replace("*", " ").rpartition(" ")
            type_name = " ".join(type_part.split())
            if type_name not in _C_TYPES or not param_name.isidentifier():
                raise ValueError(f"kernel {name}: unsupported parameter {raw!r} (see kernels/source.py _C_TYPES)")
            params.append(Param(param_name, _C_TYPES[type_name], pointer))
        signatures[name] = Signature(name, tuple(params))
    return signatures


def kernel_signatures() -> dict[str, Signature]:
    """Parsed signatures of every ``extern "C" __global__`` kernel, by name.

    Example:
        >>> sig = kernel_signatures()["box_rows"]
        >>> [(p.name, np.dtype(p.dtype).name, p.pointer) for p in sig.params][:2]
        [('src', 'int32', True), ('dst', 'int32', True)]
    """
    return _parse(kernel_source())


def grid_for(width: int, height: int, block: tuple[int, int] = BLOCK) -> tuple[int, int, int]:
    """Grid (x, y, z) covering a ``width × height`` image with ``block``-sized blocks.

    Example:
        >>> grid_for(720, 528)
        (23, 66, 1)
    """
    return (-(-width // block[0]), -(-height // block[1]), 1)
