"""Which synthesis backend runs, and why: ``auto`` / ``cuda`` / ``cpu`` (and ``host`` for tests).

Every backend is :class:`~.backend.Backend` on one runtime: ``cpu`` the numba twins of the kernels, ``host``
the CUDA C kernels built for the CPU, ``cuda`` the kernels on the GPU (CuPy).

``auto`` picks the CUDA kernels when torch sees a CUDA device and CuPy works (imported, built for torch's CUDA
major version, NVRTC compiles the kernels), and the numba CPU backend otherwise — with the reason, which ends
with the exact ``pip install`` line when CuPy is what is missing. ``cuda`` insists on the kernels and raises
an InputError with that advice when they cannot run. CuPy is imported only when a CUDA device is visible.
The choice is logged once per process and distinct outcome (logger ``rerender_video``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ...common.errors import input_error
from .backend import Backend
from .numba_runtime import NumbaRuntime

LOG = logging.getLogger("rerender_video")
#: Backend names a user can pick (the node's widget); ``host`` is accepted too (CUDA kernels on the CPU).
CHOICES = ("auto", "cpu", "cuda")
_logged: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class BackendChoice:
    """The backend that runs and why, e.g. ``cpu (CuPy not installed: pip install cupy-cuda12x)``."""

    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


def choose_backend(requested: str = "auto") -> BackendChoice:
    """Resolve a backend request to ``"cuda"``, ``"cpu"`` or ``"host"`` with the reason (for logs and node info).

    Raises:
        InputError: an unknown name; ``"cuda"`` when the CUDA kernels cannot run here (message: why, and the
            ``pip install`` line); ``"host"`` without a C++ compiler.

    Example:
        >>> choose_backend("cpu")
        BackendChoice(name='cpu', reason='requested')
    """
    if requested == "cpu":
        return _logged_choice(BackendChoice("cpu", "requested"))
    if requested == "host":
        from ...kernels.host_build import find_compiler

        if find_compiler() is None:
            raise input_error("backend", "a C++ compiler for backend 'host'", "none found (g++, c++, clang++, $CXX)",
                              ["install g++", "use 'auto' or 'cpu'"])
        return _logged_choice(BackendChoice("host", "CUDA kernels compiled for the CPU"))
    if requested not in ("auto", "cuda"):
        raise input_error("backend", f"one of {list(CHOICES)}", repr(requested), "use 'auto'")
    from ...kernels.cupy_loader import cupy_status

    status = cupy_status()
    if status.ok:
        return _logged_choice(BackendChoice("cuda", status.reason))
    if requested == "cuda":
        raise input_error("backend", "a CUDA device and a working CuPy for backend 'cuda'", status.reason,
                          "do what the message after 'Got:' says, or choose backend 'auto' (uses the CPU "
                          "when CUDA is unusable) or 'cpu'")
    return _logged_choice(BackendChoice("cpu", status.reason))


def get_backend(requested: str = "auto") -> Backend:
    """The backend for ``requested`` (see :func:`choose_backend`); ``auto`` never fails for CuPy reasons.

    Raises:
        InputError: as :func:`choose_backend`.

    Example:
        >>> get_backend("cpu").name
        'cpu'
    """
    choice = choose_backend(requested)
    if choice.name == "cuda":
        from ...kernels.cuda_runtime import CudaRuntime

        return Backend(CudaRuntime())
    if choice.name == "host":
        from ...kernels.runtime import HostRuntime

        return Backend(HostRuntime())
    return Backend(NumbaRuntime())


def _logged_choice(choice: BackendChoice) -> BackendChoice:
    key = (choice.name, choice.reason)
    if key not in _logged:
        _logged.add(key)
        cupy_problem = choice.name == "cpu" and "pip install" in choice.reason
        (LOG.warning if cupy_problem else LOG.info)("Rerender propagation backend: %s", choice)
    return choice
