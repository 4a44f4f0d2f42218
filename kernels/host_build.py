"""Build the CUDA kernels as a host shared library (through ``host_shim.h``) and launch them with ctypes.

This is how CI runs the GPU code without a GPU: the same ``kernels/*.cu`` source is compiled by the system
C++ compiler (``$CXX``, else ``g++``, else ``c++``/``clang++``) with ``-O3 -ffp-contract=off`` (no FMA, so the
float32 weighted vote matches NVRTC's ``--fmad=false``) into a ``.so`` cached under
``$RERENDER_KERNEL_CACHE`` (default: ``<tempdir>/rerender_video_kernels``) keyed by the hash of the source,
the shim, the compiler's version and the flags. The library is built at first use (a few seconds) and
loaded once per process. Launches run on the calling thread (blocks in order, threads of a block one after
another): it exists to check the kernels' logic, and thousands of small launches per frame would make a
thread pool mostly wait (an OpenMP pool whose idle threads spin between launches was much slower on a shared
2-core machine, the same effect common/threads.py describes for numba).

The launchers are generated from the parsed kernel signatures (:mod:`.source`): one ``extern "C"`` function
``host_<kernel>(gx, gy, gz, bx, by, bz, params...)`` per kernel.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from .source import KERNEL_DIR, SOURCE_FILES, Signature, kernel_signatures, source_hash

CACHE_ENV = "RERENDER_KERNEL_CACHE"
CXX_FLAGS = ("-O3", "-std=c++17", "-ffp-contract=off", "-fno-fast-math", "-fPIC", "-shared", "-w")

_CTYPES = {
    np.int16: ctypes.c_int16, np.int32: ctypes.c_int32, np.int64: ctypes.c_int64, np.uint32: ctypes.c_uint32,
    np.uint8: ctypes.c_uint8, np.float32: ctypes.c_float, np.uint64: ctypes.c_uint64,
}
_CNAMES = {
    np.int16: "short", np.int32: "int", np.int64: "long long", np.uint32: "unsigned int", np.uint8: "unsigned char",
    np.float32: "float", np.uint64: "unsigned long long",
}


class HostBuildError(RuntimeError):
    """No C++ compiler, or the kernels did not compile for the host (the message holds the compiler output)."""


def find_compiler() -> str | None:
    """Path of the host C++ compiler (``$CXX``, ``g++``, ``c++``, ``clang++``), or ``None``."""
    candidates = [os.environ.get("CXX")] if os.environ.get("CXX") else []
    for name in candidates + ["g++", "c++", "clang++"]:
        path = shutil.which(name)
        if path:
            return path
    return None


def cache_dir() -> Path:
    """Folder of the built libraries (``$RERENDER_KERNEL_CACHE`` or ``<tempdir>/rerender_video_kernels``)."""
    return Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "rerender_video_kernels")


def wrapper_source(signatures: dict[str, Signature]) -> str:
    """The C++ translation unit: the shim, the kernel sources, and one ctypes-callable launcher per kernel."""
    lines = ['#include "host_shim.h"']
    lines += [f'#include "{name}"' for name in SOURCE_FILES]
    for sig in signatures.values():
        params = ", ".join(f"{_CNAMES[p.dtype]}{'*' if p.pointer else ''} {p.name}" for p in sig.params)
        args = ", ".join(p.name for p in sig.params)
        lines.append(
            f'extern "C" void host_{sig.name}(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, '
            f"unsigned bz{', ' if params else ''}{params}) {{\n"
            f"    shim_launch(dim3{{gx, gy, gz}}, dim3{{bx, by, bz}}, [&] {{ {sig.name}({args}); }});\n}}")
    return "\n".join(lines) + "\n"


def _compiler_version(compiler: str) -> str:
    result = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False)
    return result.stdout.splitlines()[0] if result.stdout else compiler


def build_library(compiler: str | None = None) -> Path:
    """Compile the kernels for the host (once per source version) and return the ``.so`` path.

    Raises:
        HostBuildError: no C++ compiler found, or compilation failed (compiler output in the message).
    """
    compiler = compiler or find_compiler()
    if compiler is None:
        raise HostBuildError("no C++ compiler found (set $CXX or install g++) to build the host kernels")
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    signatures = kernel_signatures()
    source = wrapper_source(signatures)
    version = _compiler_version(compiler)
    key = source_hash(source, compiler, version, " ".join(CXX_FLAGS))
    target = root / f"rerender_kernels_{key}.so"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(dir=root) as scratch:
        unit = Path(scratch) / "kernels_host.cpp"
        unit.write_text(source)
        staged = Path(scratch) / target.name
        command = [compiler, *CXX_FLAGS, "-I", str(KERNEL_DIR), str(unit), "-o", str(staged)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise HostBuildError(f"host build of the kernels failed ({' '.join(command)}):\n{result.stderr[-6000:]}")
        os.replace(staged, target)  # atomic: concurrent builders publish identical files
    _prune(root, keep=target)
    return target


def _prune(root: Path, keep: Path, max_age_s: float = 7 * 86400) -> None:
    """Delete libraries of other source versions unused for a week (a loaded one stays mapped on Linux)."""
    now = time.time()
    for old in root.glob("rerender_kernels_*.so"):
        try:
            if old != keep and now - max(old.stat().st_atime, old.stat().st_mtime) > max_age_s:
                old.unlink()
        except OSError:
            pass


class HostKernels:
    """The host-compiled kernels, launched on numpy arrays: ``kernels.launch(name, grid, block, *args)``.

    Pointer parameters take C-contiguous numpy arrays of the declared element type (checked); scalar
    parameters take Python or numpy numbers (converted to the declared type).
    """

    def __init__(self, path: Path):
        self.path = path
        self._lib = ctypes.CDLL(str(path))
        self._signatures = kernel_signatures()
        self._functions = {}
        for name, sig in self._signatures.items():
            function = getattr(self._lib, f"host_{name}")
            function.restype = None
            function.argtypes = [ctypes.c_uint] * 6 + [ctypes.c_void_p if p.pointer else _CTYPES[p.dtype]
                                                       for p in sig.params]
            self._functions[name] = function

    def launch(self, name: str, grid: tuple[int, int, int], block: tuple[int, int, int], *args) -> None:
        sig = self._signatures[name]
        if len(args) != len(sig.params):
            raise TypeError(f"{name}: expected {len(sig.params)} arguments, got {len(args)}")
        values = []
        for param, arg in zip(sig.params, args):
            if param.pointer:
                if not isinstance(arg, np.ndarray) or arg.dtype != param.dtype or not arg.flags.c_contiguous:
                    got = f"{arg.dtype}, contiguous={arg.flags.c_contiguous}" if isinstance(arg, np.ndarray) \
                        else type(arg).__name__
                    raise TypeError(f"{name}.{param.name}: expected a C-contiguous {np.dtype(param.dtype)} array, "
                                    f"got {got}")
                values.append(arg.ctypes.data)
            else:
                values.append(param.dtype(arg).item())
        self._functions[name](*grid, *block, *values)


@functools.lru_cache(maxsize=1)
def host_kernels() -> HostKernels:
    """Build (or reuse) and load the host kernels once per process.

    Raises:
        HostBuildError: see :func:`build_library`.
    """
    return HostKernels(build_library())
