"""The GPU runtime: the ``kernels/*.cu`` kernels compiled by NVRTC, launched with CuPy on torch CUDA tensors.

Memory comes from torch's caching allocator (so ComfyUI's model management sees it and CuPy's own pool holds
nothing); each tensor gets a zero-copy CuPy view once, through ``__cuda_array_interface__``, when it is
allocated. Kernels run on torch's current stream (``cupy.cuda.ExternalStream``), so they are ordered with
torch's own work and no synchronisation is needed except where the host reads a value back.

Nothing here imports CuPy at module import time; :class:`CudaRuntime` does, through :mod:`.cupy_loader`.
"""

from __future__ import annotations

import contextlib

import numpy as np

from .source import kernel_signatures

_TORCH_DTYPES = {}


def _torch_dtype(dtype):
    import torch

    if not _TORCH_DTYPES:
        _TORCH_DTYPES.update({np.dtype(np.int16): torch.int16, np.dtype(np.int32): torch.int32,
                              np.dtype(np.int64): torch.int64, np.dtype(np.uint8): torch.uint8,
                              np.dtype(np.float32): torch.float32})
    return _TORCH_DTYPES[np.dtype(dtype)]


class DeviceArray:
    """A torch CUDA tensor (the owner) and its CuPy view (what kernels receive)."""

    __slots__ = ("tensor", "view", "dtype")

    def __init__(self, tensor, cupy):
        self.tensor = tensor
        self.view = cupy.asarray(tensor)   # zero copy (__cuda_array_interface__)
        self.dtype = np.dtype(self.view.dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape)


class CudaRuntime:
    """The runtime (see :mod:`.runtime`) of the synthesis backend ``"cuda"``: a CUDA device.

    Raises:
        RuntimeError: CuPy is unusable here (the message is :func:`.cupy_loader.cupy_status`'s reason,
            with the ``pip install`` advice).
    """

    name = "cuda"
    kernel_limits = True

    def __init__(self, device_index: int | None = None):
        import torch

        from .cupy_loader import compiled_kernels, cupy_status

        status = cupy_status()
        if not status.ok:
            raise RuntimeError(f"CUDA kernels unavailable: {status.reason}")
        self.torch = torch
        self.cupy = status.cupy
        self.index = torch.cuda.current_device() if device_index is None else int(device_index)
        self.device = self._torch_device(self.index)
        self.functions = compiled_kernels(self.index)
        self.signatures = kernel_signatures()

    def _torch_device(self, index: int):
        return self.torch.device("cuda", index)

    @contextlib.contextmanager
    def scope(self):
        """Make the device and torch's current stream CuPy's current device and stream."""
        stream = self.torch.cuda.current_stream(self.device).cuda_stream
        try:
            external = self.cupy.cuda.ExternalStream(stream, self.index)
        except TypeError:   # CuPy < 13: no device_id argument
            external = self.cupy.cuda.ExternalStream(stream)
        with self.cupy.cuda.Device(self.index), external:
            yield

    def _wrap(self, tensor) -> DeviceArray:
        return DeviceArray(tensor, self.cupy)

    def upload(self, array, dtype, copy: bool = True) -> DeviceArray:
        torch = self.torch
        if isinstance(array, torch.Tensor):
            tensor = array.detach().to(self.device, _torch_dtype(dtype))
            tensor = tensor.clone(memory_format=torch.contiguous_format) if copy else tensor.contiguous()
        else:
            host = torch.from_numpy(np.ascontiguousarray(array, dtype=dtype))
            tensor = host.to(self.device, copy=copy)
        return self._wrap(tensor)

    def empty(self, shape, dtype) -> DeviceArray:
        return self._wrap(self.torch.empty(tuple(shape), dtype=_torch_dtype(dtype), device=self.device))

    def zeros(self, shape, dtype) -> DeviceArray:
        return self._wrap(self.torch.zeros(tuple(shape), dtype=_torch_dtype(dtype), device=self.device))

    def fill(self, array: DeviceArray, value: int) -> None:
        array.tensor.fill_(value)

    def download(self, array: DeviceArray) -> np.ndarray:
        return array.tensor.to("cpu", copy=True).numpy()

    def read_int(self, array: DeviceArray) -> int:
        return int(array.tensor.reshape(-1)[0].item())

    def count_nonzero(self, array: DeviceArray) -> int:
        return int(self.torch.count_nonzero(array.tensor).item())

    def launch(self, name: str, grid, block, *args) -> None:
        sig = self.signatures[name]
        if len(args) != len(sig.params):
            raise TypeError(f"{name}: expected {len(sig.params)} arguments, got {len(args)}")
        values = []
        for param, arg in zip(sig.params, args):
            if param.pointer:
                if not isinstance(arg, DeviceArray) or arg.dtype != param.dtype:
                    raise TypeError(f"{name}.{param.name}: expected a device array of {np.dtype(param.dtype)}, got "
                                    f"{getattr(arg, 'dtype', type(arg).__name__)}")
                values.append(arg.view)
            else:
                values.append(param.dtype(arg))
        self.functions[name](tuple(grid), tuple(block), tuple(values))

