"""Optional CuPy: import it lazily, check it matches torch's CUDA, compile the kernels with NVRTC once.

CuPy is an optional accelerator, and a CuPy that does not match torch's CUDA is a frequent way for ComfyUI node
packs to break an install: ComfyUI ships torch built for CUDA 12 or CUDA
13, and a CuPy wheel is built for one CUDA major version (``cupy-cuda12x`` / ``cupy-cuda13x``), so the pack
pins neither. Nothing here runs at import time; :func:`cupy_status` imports CuPy only when asked (the GPU
backend is requested or auto-selected on a machine with a CUDA device), and every failure becomes a
:class:`CupyStatus` whose ``reason`` ends with the exact ``pip install`` line to run.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from .source import NVRTC_OPTIONS, kernel_signatures, kernel_source


@dataclass(frozen=True)
class CupyStatus:
    """Whether the CUDA kernels can run; ``reason`` says why (not) in one line, with the fix.

    Attributes:
        ok: CuPy imported, matches torch's CUDA major version, and NVRTC compiled the kernels.
        reason: e.g. ``"CuPy 14.2.0 (CUDA 13), NVIDIA H100 80GB HBM3"`` or
            ``"CuPy not installed: pip install cupy-cuda12x"``.
        cupy: the ``cupy`` module when ``ok``.
    """

    ok: bool
    reason: str
    cupy: Any = None


def cuda_major(version: str | None) -> int | None:
    """Major number of a CUDA version string such as ``torch.version.cuda`` (``"12.8"`` → 12).

    Example:
        >>> cuda_major("12.8"), cuda_major("13.0"), cuda_major(None)
        (12, 13, None)
    """
    if not version:
        return None
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return None


def cupy_package(torch_cuda: str | None) -> str | None:
    """The CuPy wheel for a torch built with CUDA ``torch_cuda`` (``"13.0"`` → ``"cupy-cuda13x"``).

    Example:
        >>> cupy_package("12.4"), cupy_package("13.0"), cupy_package(None)
        ('cupy-cuda12x', 'cupy-cuda13x', None)
    """
    major = cuda_major(torch_cuda)
    return None if major is None else f"cupy-cuda{major}x"


def install_advice(torch_cuda: str | None) -> str:
    """The install line matching torch's CUDA, e.g. ``"pip install cupy-cuda12x"``.

    Example:
        >>> install_advice("12.8")
        'pip install cupy-cuda12x'
        >>> install_advice(None)
        'install a CUDA build of torch first (torch.version.cuda is None), then pip install cupy-cuda12x or cupy-cuda13x to match it'
    """
    package = cupy_package(torch_cuda)
    if package is None:
        return ("install a CUDA build of torch first (torch.version.cuda is None), then pip install cupy-cuda12x "
                "or cupy-cuda13x to match it")
    return f"pip install {package}"


def nvrtc_advice(torch_cuda: str | None) -> str:
    """The fix when CuPy imports but cannot load or run NVRTC (``libnvrtc.so.12`` not found and the like).

    Example:
        >>> nvrtc_advice("13.0")
        'pip install "cupy-cuda13x[ctk]" (CuPy >= 14 then takes NVRTC from PyPI), or pip install nvidia-cuda-nvrtc, or install the CUDA Toolkit 13 and set CUDA_PATH'
    """
    major = cuda_major(torch_cuda) or 12
    nvrtc_wheel = "nvidia-cuda-nvrtc" if major >= 13 else f"nvidia-cuda-nvrtc-cu{major}"
    return (f'pip install "cupy-cuda{major}x[ctk]" (CuPy >= 14 then takes NVRTC from PyPI), or pip install '
            f"{nvrtc_wheel}, or install the CUDA Toolkit {major} and set CUDA_PATH")


def _import_cupy():
    """``import cupy`` (the tests monkeypatch this to simulate a missing or broken CuPy)."""
    import cupy

    return cupy


def _cupy_cuda_major(cupy) -> int | None:
    try:
        return int(cupy.cuda.runtime.runtimeGetVersion()) // 1000
    except Exception:  # noqa: BLE001 - fall back to the wheel's name
        pass
    from importlib import metadata

    for major in (11, 12, 13, 14):
        try:
            metadata.version(f"cupy-cuda{major}x")
            return major
        except metadata.PackageNotFoundError:
            continue
    return None


@functools.lru_cache(maxsize=8)
def compiled_kernels(device_index: int) -> dict[str, Any]:
    """The kernels compiled by NVRTC for ``device_index``, by name (once per process and device; CuPy also
    keeps the binary in its on-disk cache, ``~/.cupy/kernel_cache``)."""
    cupy = _import_cupy()
    with cupy.cuda.Device(device_index):
        module = cupy.RawModule(code=kernel_source(), options=NVRTC_OPTIONS)
        return {name: module.get_function(name) for name in kernel_signatures()}


@functools.lru_cache(maxsize=1)
def cupy_status() -> CupyStatus:
    """Check, once per process, that the CUDA kernels can run here (see :class:`CupyStatus`).

    Imports torch's CUDA state and, only when a CUDA device is visible, CuPy. Never raises.
    """
    import torch

    torch_cuda = torch.version.cuda
    if torch_cuda is None:
        return CupyStatus(False, "torch is a CPU-only build (torch.version.cuda is None)")
    if not torch.cuda.is_available():
        return CupyStatus(False, f"no CUDA device visible to torch (built for CUDA {torch_cuda})")
    try:
        cupy = _import_cupy()
    except ImportError:
        return CupyStatus(False, f"CuPy not installed: {install_advice(torch_cuda)}")
    except Exception as error:  # noqa: BLE001 - a broken install raises anything
        return CupyStatus(False, f"CuPy failed to import ({type(error).__name__}: {_short(error)}): "
                                 f"pip install --force-reinstall {cupy_package(torch_cuda)}")
    major = _cupy_cuda_major(cupy)
    if major is not None and major != cuda_major(torch_cuda):
        return CupyStatus(False, f"CuPy is built for CUDA {major} but torch uses CUDA {torch_cuda}: "
                                 f"pip uninstall cupy-cuda{major}x && {install_advice(torch_cuda)}")
    device = torch.cuda.current_device()
    try:
        compiled_kernels(device)
    except Exception as error:  # noqa: BLE001 - NVRTC missing, wrong driver, compile error
        text = f"{type(error).__name__}: {_short(error)}"
        if "nvrtc" in text.lower():
            return CupyStatus(False, f"CuPy cannot use NVRTC ({text}): {nvrtc_advice(torch_cuda)}")
        return CupyStatus(False, f"the CUDA kernels did not compile or load ({text}); please report it")
    version = getattr(cupy, "__version__", "?")
    return CupyStatus(True, f"CuPy {version} (CUDA {major}), {torch.cuda.get_device_name(device)}", cupy)


def _short(error: BaseException, limit: int = 300) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[:limit] + "…"
