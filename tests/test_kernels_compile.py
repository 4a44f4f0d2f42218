"""The kernel source compiles for the GPU (nvcc -ptx, and NVRTC with the runtime options when a libnvrtc is
found) and obeys the host shim's rules, so a syntax error or an NVRTC-only failure fails CI without a GPU.

Skipped, saying why, only where the compiler in question does not exist.
"""

from __future__ import annotations

import ctypes
import glob
import os
import re
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from rerender_video.kernels import host_build
from rerender_video.kernels.source import (CUPY_APPENDED_OPTIONS, KERNEL_DIR, NVCC_PTX_OPTIONS, NVRTC_OPTIONS,
                                           SOURCE_FILES, kernel_signatures, kernel_source)

ARCH = "compute_90"


def _entries(ptx: str) -> set[str]:
    return set(re.findall(r"\.entry\s+(\w+)\s*\(", ptx))


def test_every_kernel_compiles_with_nvcc_to_ptx(tmp_path):
    nvcc = shutil.which("nvcc") or ("/usr/local/bin/nvcc" if os.path.exists("/usr/local/bin/nvcc") else None)
    if nvcc is None:
        pytest.skip("nvcc not found: the CUDA compile check needs the CUDA toolkit (CI has /usr/local/bin/nvcc)")
    ptx = tmp_path / "kernels.ptx"
    for name in SOURCE_FILES:
        command = [nvcc, *NVCC_PTX_OPTIONS, str(KERNEL_DIR / name), "-o", str(ptx)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"{' '.join(command)}\n{result.stderr}"
        text = ptx.read_text()
        assert _entries(text) == set(kernel_signatures()), "every extern \"C\" kernel is an unmangled PTX entry"
        # --fmad=false holds: the weighted vote's multiply-adds stay separate (bit-identical to the host build)
        assert "fma.rn.f32" not in text


def _nvrtc_library() -> str | None:
    explicit = os.environ.get("RERENDER_NVRTC_LIB")
    if explicit:
        return explicit
    roots = [os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME"), "/usr/local/cuda"]
    patterns = [f"{root}/lib64/libnvrtc.so*" for root in roots if root]
    for packages in site.getsitepackages() + [site.getusersitepackages()]:
        patterns += [f"{packages}/nvidia/*/lib/libnvrtc.so*", f"{packages}/nvidia/cu*/lib/libnvrtc.so*"]
    for pattern in patterns:
        found = sorted(path for path in glob.glob(pattern) if "alt" not in Path(path).name
                       and "builtins" not in Path(path).name)
        if found:
            return found[0]
    return None


def test_kernels_compile_with_nvrtc_and_the_runtime_options():
    """What CuPy does on the user's machine: NVRTC, no system headers, NVRTC_OPTIONS (+ the arch CuPy adds)."""
    path = _nvrtc_library()
    if path is None:
        pytest.skip("no libnvrtc found (set RERENDER_NVRTC_LIB, CUDA_PATH, or install nvidia-cuda-nvrtc): "
                    "the NVRTC option check needs it; nvcc -ptx still checked the source")
    for builtins in glob.glob(str(Path(path).parent / "libnvrtc-builtins.so*")):
        if ".alt." not in builtins:   # NVRTC dlopens it by name: preload it from the same folder
            ctypes.CDLL(builtins, mode=ctypes.RTLD_GLOBAL)
    nvrtc = ctypes.CDLL(path)
    program = ctypes.c_void_p()
    source = kernel_source().encode()
    assert nvrtc.nvrtcCreateProgram(ctypes.byref(program), source, b"propagation.cu", 0, None, None) == 0
    options = [option.encode() for option in (*NVRTC_OPTIONS, *CUPY_APPENDED_OPTIONS, f"-arch={ARCH}")]
    array = (ctypes.c_char_p * len(options))(*options)
    status = nvrtc.nvrtcCompileProgram(program, len(options), array)
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetProgramLog(program, log)
    message = log.value.decode(errors="replace").strip()
    assert status == 0, f"NVRTC ({path}) failed with options {options}:\n{message}"
    assert not message, f"NVRTC warned (e.g. an option CuPy overrides): {message}"
    nvrtc.nvrtcGetPTXSize(program, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetPTX(program, ptx)
    nvrtc.nvrtcDestroyProgram(ctypes.byref(program))
    text = ptx.value.decode()
    assert _entries(text) == set(kernel_signatures())
    assert "fma.rn.f32" not in text


def test_source_follows_the_shared_source_rules():
    """No #include (NVRTC has no system headers) and no block-level cooperation (the host shim runs the
    threads of a block one after another)."""
    code = re.sub(r"//[^\n]*", "", kernel_source())
    assert "#include" not in code
    assert "__shared__" not in code and "__syncthreads" not in code
    assert set(kernel_signatures()) >= {"patch_error", "pm_search", "vote", "occ_count", "dilate_cols"}


def test_host_shim_refuses_block_synchronisation(tmp_path):
    compiler = host_build.find_compiler()
    if compiler is None:
        pytest.skip("no C++ compiler found: cannot check the host shim")
    unit = tmp_path / "bad.cpp"
    unit.write_text('#include "host_shim.h"\n'
                    'extern "C" __global__ void bad(int* out) { __syncthreads(); out[threadIdx.x] = 1; }\n')
    result = subprocess.run([compiler, "-std=c++17", "-fsyntax-only", "-I", str(KERNEL_DIR), str(unit)],
                            capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "__syncthreads" in result.stderr


def test_host_build_is_cached_by_source_hash(tmp_path, monkeypatch):
    """A second build of the same source reuses the library; the file name carries the source hash."""
    if host_build.find_compiler() is None:
        pytest.skip("no C++ compiler found")
    first = host_build.build_library()
    assert first.exists() and first.suffix == ".so"
    modified = first.stat().st_mtime_ns
    assert host_build.build_library() == first
    assert first.stat().st_mtime_ns == modified


def test_host_launcher_checks_argument_types():
    import numpy as np

    if host_build.find_compiler() is None:
        pytest.skip("no C++ compiler found")
    kernels = host_build.host_kernels()
    counts = np.zeros((4, 4), np.int32)
    with pytest.raises(TypeError, match="box_rows.src: expected a C-contiguous int32 array, got float32"):
        kernels.launch("box_rows", (1, 1, 1), (4, 4, 1), counts.astype(np.float32), counts, 4, 4, 1,
                       np.ones(2, np.int32))
    with pytest.raises(TypeError, match="contiguous=False"):
        kernels.launch("box_rows", (1, 1, 1), (4, 4, 1), np.zeros((4, 8), np.int32)[:, ::2], counts, 4, 4, 1,
                       np.ones(2, np.int32))
    with pytest.raises(TypeError, match="expected 6 arguments"):
        kernels.launch("box_rows", (1, 1, 1), (4, 4, 1), counts)


def test_kernels_package_imports_without_cupy():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from rerender_cli import load_pack; load_pack(); "
            "import rerender_video.propagation.backends.select, rerender_video.kernels.cuda_runtime, "
            "rerender_video.kernels.cupy_loader, rerender_video.kernels.runtime; "
            "from rerender_video.propagation.backends.select import choose_backend; choose_backend('auto'); "
            "print('cupy' in sys.modules)")
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, check=True)
    import torch

    if not torch.cuda.is_available():
        assert result.stdout.strip().splitlines()[-1] == "False"
