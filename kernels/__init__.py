"""CUDA kernels of the patch-matching synthesis: one CUDA C source, run on the GPU with CuPy or on the CPU.

* ``propagation.cu`` — the kernels, pass for pass the numba reference (propagation/cpu_backend.py,
  propagation/ALGORITHM.md), bit-identical to it; ``host_shim.h`` lets the host C++ compiler build them.
* :mod:`.source` — the source, its hash, compiler options, parsed kernel signatures (argument marshalling).
* :mod:`.kernel_backend` — the synthesis backend on top of a runtime; ``HostBackend`` (``"host"``) runs the
  kernels through :mod:`.host_build` (g++ + ctypes), what CI compares with the CPU backend.
* :mod:`.cuda_backend` — ``CudaBackend`` (``"cuda"``): NVRTC via ``cupy.RawModule``, torch CUDA tensors,
  torch's current stream.
* :mod:`.cupy_loader` — optional CuPy: lazy import, CUDA-version match with torch, NVRTC check, install advice.
* :mod:`.select` — ``choose_backend("auto" | "cuda" | "cpu")`` → the backend that runs and why.

Importing this package imports neither CuPy nor a compiler; nothing is built until a backend is asked for.
"""
