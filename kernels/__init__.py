"""CUDA kernels of the patch-matching synthesis: one CUDA C source and the runtimes that launch it.

* ``propagation.cu`` — the kernels, one per data-parallel pass of propagation/ALGORITHM.md, each with a numba
  twin of the same name (propagation/backends/cpu_kernels.py; the pass table is
  propagation/backends/passes.py); ``host_shim.h`` lets the host C++ compiler build them.
* :mod:`.source` — the source, its hash, compiler options, parsed kernel signatures (argument marshalling).
* :mod:`.runtime` — memory and launches: ``HostRuntime`` runs the kernels through :mod:`.host_build` (g++ +
  ctypes), what CI compares with the numba twins; the kernels' size and float limits.
* :mod:`.cuda_runtime` — ``CudaRuntime``: NVRTC via ``cupy.RawModule``, torch CUDA tensors, torch's current
  stream.
* :mod:`.cupy_loader` — optional CuPy: lazy import, CUDA-version match with torch, NVRTC check, install advice.

The synthesis backend that drives these runtimes, and the choice between them, live in
``propagation/backends/``; nothing here imports the propagation package. Importing this package imports
neither CuPy nor a compiler; nothing is built until a runtime is made.
"""
