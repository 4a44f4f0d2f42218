"""Backend choice, the optional-CuPy loader, the CUDA runtime's glue and bad input.

CuPy is not installed in CI and there is no GPU, so the loader's failure modes are simulated by
monkeypatching ``cupy_loader._import_cupy`` and torch's CUDA state; the CUDA runtime's Python glue
(allocation, zero-copy views, argument marshalling, stream scope) runs against a stand-in CuPy whose kernels
are the host build, on CPU tensors. The real GPU tests at the end run only with a CUDA device and CuPy.
"""

from __future__ import annotations

import dataclasses
import logging
import types

import numpy as np
import pytest
import torch

from rerender_video.common.errors import InputError
from rerender_video.kernels import cupy_loader, host_build
from rerender_video.kernels.runtime import HostRuntime, check_kernel_limits
from rerender_video.kernels.source import kernel_signatures
from rerender_video.propagation.backends import select
from rerender_video.propagation.backends.backend import Backend
from rerender_video.propagation.backends.level import LevelSpec, NnfStart
from rerender_video.propagation.backends.numba_runtime import NumbaRuntime
from rerender_video.propagation.backends.select import get_backend
from rerender_video.propagation.params import SynthesisParams
from rerender_video.propagation.synthesis import Guide, synthesize


@pytest.fixture
def fresh_loader(monkeypatch):
    """Forget cached CuPy status / compiled kernels / logged choices before and after the test."""
    def clear():
        cupy_loader.cupy_status.cache_clear()
        cupy_loader.compiled_kernels.cache_clear()
        select._logged.clear()
    clear()
    yield monkeypatch
    clear()


def pretend_cuda(monkeypatch, version: str = "12.8"):
    """torch reports a CUDA build and a visible device (nothing else about torch changes)."""
    monkeypatch.setattr(torch.version, "cuda", version)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Stand-in GPU")
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: types.SimpleNamespace(cuda_stream=0))


# ------------------------------------------------------------------------------------------------ stand-in CuPy
class FakeArray:
    """What ``cupy.asarray(tensor)`` returns: here a numpy view of a CPU tensor."""

    def __init__(self, tensor):
        self.array = tensor.numpy()
        self.dtype = self.array.dtype


class FakeKernel:
    """A 'compiled' kernel: checks CuPy's argument rules, then runs the host build of the same kernel."""

    def __init__(self, name: str):
        self.name = name
        self.signature = kernel_signatures()[name]
        self.launches = 0

    def __call__(self, grid, block, args):
        assert isinstance(grid, tuple) and isinstance(block, tuple) and isinstance(args, tuple)
        values = []
        for param, arg in zip(self.signature.params, args, strict=True):
            if param.pointer:
                assert isinstance(arg, FakeArray) and arg.dtype == param.dtype, (self.name, param.name)
                values.append(arg.array)
            else:   # CuPy sizes a scalar argument by its numpy type: it must be exactly the C type
                assert type(arg) is param.dtype, (self.name, param.name, type(arg))
                values.append(arg)
        self.launches += 1
        host_build.host_kernels().launch(self.name, grid, block, *values)


def fake_cupy(runtime_version: int = 12080, compile_error: Exception | None = None):
    kernels = {}

    class RawModule:
        def __init__(self, code, options=()):
            assert "--fmad=false" in options
            self.code = code

        def get_function(self, name):
            if compile_error is not None:
                raise compile_error
            return kernels.setdefault(name, FakeKernel(name))

    class Context:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    module = types.ModuleType("cupy")
    module.__version__ = "14.2.0"
    module.RawModule = RawModule
    module.asarray = FakeArray
    module.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(runtimeGetVersion=lambda: runtime_version),
                                        Device=Context, ExternalStream=Context)
    module.kernels = kernels
    return module


# ------------------------------------------------------------------------------------------------ choice
def test_cpu_only_torch_picks_cpu_without_importing_cupy(fresh_loader):
    fresh_loader.setattr(torch.version, "cuda", None)

    def no_import():
        raise AssertionError("CuPy must not be imported without CUDA")

    fresh_loader.setattr(cupy_loader, "_import_cupy", no_import)
    choice = select.choose_backend("auto")
    assert choice.name == "cpu" and "CPU-only build" in choice.reason
    assert get_backend("auto").name == "cpu"


def test_no_visible_device_picks_cpu_without_importing_cupy(fresh_loader):
    fresh_loader.setattr(torch.version, "cuda", "13.0")
    fresh_loader.setattr(torch.cuda, "is_available", lambda: False)
    fresh_loader.setattr(cupy_loader, "_import_cupy", lambda: pytest.fail("CuPy imported without a device"))
    assert select.choose_backend("auto") == select.BackendChoice("cpu", "no CUDA device visible to torch "
                                                                        "(built for CUDA 13.0)")


@pytest.mark.parametrize("version, package", [("12.8", "cupy-cuda12x"), ("13.0", "cupy-cuda13x")])
def test_missing_cupy_falls_back_with_the_matching_advice(fresh_loader, caplog, crops_small, version, package):
    pretend_cuda(fresh_loader, version)

    def missing():
        raise ImportError("No module named 'cupy'")

    fresh_loader.setattr(cupy_loader, "_import_cupy", missing)
    with caplog.at_level(logging.INFO, logger="rerender_video"):
        choice = select.choose_backend("auto")
        assert str(choice) == f"cpu (CuPy not installed: pip install {package})"
        style, guides = crops_small
        result = synthesize(style, guides, SynthesisParams(search_vote_iters=1, patchmatch_iters=1), backend="auto")
    assert result.image.shape == style.shape
    assert f"pip install {package}" in caplog.text
    with pytest.raises(InputError, match=f"backend: Expected a CUDA device.*pip install {package}"):
        select.choose_backend("cuda")


def test_broken_cupy_import_is_reported(fresh_loader):
    pretend_cuda(fresh_loader, "12.4")

    def broken():
        raise OSError("libcudart.so.12: cannot open shared object file")

    fresh_loader.setattr(cupy_loader, "_import_cupy", broken)
    reason = select.choose_backend("auto").reason
    assert reason.startswith("CuPy failed to import (OSError: libcudart.so.12")
    assert reason.endswith("pip install --force-reinstall cupy-cuda12x")


def test_cupy_for_another_cuda_major_is_refused(fresh_loader):
    pretend_cuda(fresh_loader, "12.8")
    fresh_loader.setattr(cupy_loader, "_import_cupy", lambda: fake_cupy(runtime_version=13000))
    choice = select.choose_backend("auto")
    assert choice.name == "cpu"
    assert choice.reason == ("CuPy is built for CUDA 13 but torch uses CUDA 12.8: "
                             "pip uninstall cupy-cuda13x && pip install cupy-cuda12x")


def test_nvrtc_failure_is_reported_with_the_nvrtc_advice(fresh_loader):
    pretend_cuda(fresh_loader, "12.8")
    error = RuntimeError("CuPy failed to load libnvrtc.so.12: OSError: cannot open shared object file")
    fresh_loader.setattr(cupy_loader, "_import_cupy", lambda: fake_cupy(compile_error=error))
    choice = select.choose_backend("auto")
    assert choice.name == "cpu"
    assert "CuPy cannot use NVRTC (RuntimeError: CuPy failed to load libnvrtc.so.12" in choice.reason
    assert 'pip install "cupy-cuda12x[ctk]"' in choice.reason and "nvidia-cuda-nvrtc-cu12" in choice.reason


def test_unknown_backend_name_is_refused():
    with pytest.raises(InputError, match="backend: Expected one of"):
        get_backend("gpu")
    with pytest.raises(InputError, match="backend: Expected one of"):
        select.choose_backend("metal")


# ------------------------------------------------------------------------------------------------ CUDA glue on a stand-in
@pytest.fixture
def stand_in_cuda(fresh_loader):
    """A working 'CuPy' whose kernels are the host build, and CudaRuntime allocating CPU tensors."""
    if host_build.find_compiler() is None:
        pytest.skip("no C++ compiler: the stand-in CuPy runs the host build of the kernels")
    from rerender_video.kernels import cuda_runtime

    pretend_cuda(fresh_loader, "12.8")
    cupy = fake_cupy()
    fresh_loader.setattr(cupy_loader, "_import_cupy", lambda: cupy)
    fresh_loader.setattr(cuda_runtime.CudaRuntime, "_torch_device", lambda self, index: torch.device("cpu"))
    return cupy


def test_cuda_backend_glue_is_bit_exact_on_a_stand_in(stand_in_cuda, crops_small):
    choice = select.choose_backend("auto")
    assert choice == select.BackendChoice("cuda", "CuPy 14.2.0 (CUDA 12), Stand-in GPU")
    style, guides = crops_small
    params = SynthesisParams(search_vote_iters=3, patchmatch_iters=2, seed=21, stop_threshold=15.0)
    reference = synthesize(style, guides, params, backend="cpu")
    result = synthesize(style, guides, params, backend="cuda")
    assert get_backend("auto").name == "cuda"
    assert torch.equal(result.nnf, reference.nnf) and torch.equal(result.image, reference.image)
    assert torch.equal(result.error, reference.error)
    launched = {name for name, kernel in stand_in_cuda.kernels.items() if kernel.launches}
    assert {"pm_search", "vote", "patch_error", "occ_count", "occ_finish", "dilate_cols", "nnf_random",
            "nnf_upsample"} <= launched


def test_the_nnf_stays_on_the_device_between_levels(stand_in_cuda, crops_small, monkeypatch):
    """Every level starts from an NNF computed on the device (§5 kernels): the only downloads of a synthesis
    are its three results (NNF, image, error), whatever the number of levels, with or without an initial NNF."""
    from rerender_video.kernels import cuda_runtime

    downloads = []
    download = cuda_runtime.CudaRuntime.download
    monkeypatch.setattr(cuda_runtime.CudaRuntime, "download",
                        lambda self, array: downloads.append(array.shape) or download(self, array))
    style, guides = crops_small
    params = SynthesisParams(search_vote_iters=2, patchmatch_iters=2, seed=3)
    first = synthesize(style, guides, params, backend="cuda")
    assert first.nnf.shape[:2] == style.shape[:2] and len(downloads) == 3
    downloads.clear()
    synthesize(style, guides, dataclasses.replace(params, initial_nnf_levels=2), initial_nnf=first.nnf,
               backend="cuda")
    assert len(downloads) == 3


def test_cuda_backend_takes_tensors_without_copying_the_source(stand_in_cuda):
    from rerender_video.kernels.cuda_runtime import CudaRuntime

    engine = Backend(CudaRuntime())
    rng = np.random.default_rng(1)
    source = torch.from_numpy(rng.integers(0, 2000, (24, 32, 4), dtype=np.int16))
    target = torch.from_numpy(rng.integers(0, 2000, (24, 32, 4), dtype=np.int16))
    target_before = target.clone()
    state = engine.prepare_level(_spec(), source, target, NnfStart.random(3))
    assert state.arrays["source"].tensor.data_ptr() == source.data_ptr()      # zero copy
    assert state.arrays["target"].tensor.data_ptr() != target.data_ptr()      # written by the vote: copied
    engine.vote(state, initial=True, update_mask=False)
    assert not torch.equal(torch.from_numpy(engine.image(state)), target[..., :3])
    assert torch.equal(target, target_before)                                 # caller's tensor untouched


# ------------------------------------------------------------------------------------------------ bad input
def _spec(style_channels: int = 3, patch_size: int = 5) -> LevelSpec:
    return LevelSpec(patch_size=patch_size, style_channels=style_channels, occupancy_multiplier=1000,
                     change_threshold=5, weighted_vote=False, vote_error_scale=1e-4, random_radii=(8, 4, 2, 1),
                     level=0)


@pytest.fixture(scope="module")
def host_engine():
    if host_build.find_compiler() is None:
        pytest.skip("no C++ compiler: cannot build the host kernels")
    return Backend(HostRuntime())


def test_float_images_are_refused(host_engine):
    image = np.zeros((24, 32, 4), np.float32)
    nnf = np.full((24, 32, 2), 5, np.int32)
    with pytest.raises(InputError, match=r"source: Expected int16 packed values .*Got: float32"):
        host_engine.prepare_level(_spec(), image, image.astype(np.int16), NnfStart.random(3))
    with pytest.raises(InputError, match="nnf: Expected integer source coordinates"):
        host_engine.prepare_level(_spec(), image.astype(np.int16), image.astype(np.int16),
                                  NnfStart.given(nnf.astype(np.float32)))


def test_non_contiguous_input_is_made_contiguous(host_engine):
    rng = np.random.default_rng(2)
    wide = rng.integers(0, 3000, (24, 64, 4), dtype=np.int16)
    strided = wide[:, ::2]                                  # a non-contiguous view
    assert not strided.flags.c_contiguous
    results = []
    for source in (strided, np.ascontiguousarray(strided), torch.from_numpy(wide)[:, ::2]):
        state = host_engine.prepare_level(_spec(), source, np.ascontiguousarray(strided), NnfStart.random(3))
        host_engine.vote(state, initial=True, update_mask=False)
        host_engine.patch_error(state, all_pixels=True)
        results.append((host_engine.image(state), host_engine.error(state)))
    for image, error in results[1:]:
        np.testing.assert_array_equal(image, results[0][0])
        np.testing.assert_array_equal(error, results[0][1])


def test_frames_beyond_the_kernel_limits_are_refused(host_engine):
    huge = np.broadcast_to(np.zeros((1, 1, 13), np.int16), (20000, 9000, 13))   # no memory behind it
    with pytest.raises(InputError, match=r"source: Expected height × width × channels <= 2147483647 .*"
                                         r"20000 × 9000 × 13 = 2340000000"):
        host_engine.prepare_level(_spec(), huge, huge, NnfStart.random(3))
    with pytest.raises(InputError, match="at most 524280 rows"):
        check_kernel_limits(600000, 4, 1, "target")
    with pytest.raises(InputError, match="style_channels: Expected 1 to 8"):
        image = np.zeros((24, 32, 12), np.int16)
        host_engine.prepare_level(_spec(style_channels=9), image, image, NnfStart.random(3))


@pytest.mark.parametrize("runtime", ["cpu", "host"])
def test_a_given_nnf_is_clamped_into_the_source_before_any_kernel_reads_it(host_engine, runtime):
    """A centre whose patch would leave the source (on the GPU an out-of-range read poisons the CUDA context)
    never reaches a kernel: every NNF start is clamped to the valid centre range (ALGORITHM.md §5.3)."""
    engine = host_engine if runtime == "host" else Backend(NumbaRuntime())
    image = np.zeros((24, 32, 4), np.int16)
    nnf = np.full((24, 32, 2), 10, np.int32)
    nnf[5, 7] = (31, 3)   # x = 31 > 32 - 1 - 2: the patch would leave the source
    nnf[6, 8] = (-4, 40)
    state = engine.prepare_level(_spec(), image, image, NnfStart.given(nnf))
    start = engine.nnf(state)
    assert tuple(start[5, 7]) == (29, 3) and tuple(start[6, 8]) == (2, 21)
    np.testing.assert_array_equal(np.delete(start.reshape(-1, 2), [5 * 32 + 7, 6 * 32 + 8], axis=0), 10)


def test_mismatched_channels_and_nnf_shape_are_refused(host_engine):
    nnf = np.full((24, 32, 2), 5, np.int32)
    with pytest.raises(InputError, match="target: Expected 4 channels"):
        host_engine.prepare_level(_spec(), np.zeros((24, 32, 4), np.int16), np.zeros((24, 32, 5), np.int16),
                                  NnfStart.random(3))
    with pytest.raises(InputError, match=r"nnf: Expected shape \[24, 32, 2\]"):
        host_engine.prepare_level(_spec(), np.zeros((24, 32, 4), np.int16), np.zeros((24, 32, 4), np.int16),
                                  NnfStart.given(nnf[:, :16]))


# ------------------------------------------------------------------------------------------------ real GPU
def _cuda_ready() -> tuple[bool, str]:
    status = cupy_loader.cupy_status()
    return status.ok, status.reason


@pytest.fixture
def real_cuda():
    ok, reason = _cuda_ready()
    if not ok:
        pytest.skip(f"GPU test needs a CUDA device and CuPy: {reason}")


@pytest.mark.parametrize("options", [{}, {"vote_mode": "weighted", "extra_pass_3x3": True}])
def test_gpu_synthesis_is_bit_exact(real_cuda, megamind_frames, options):
    key, frame = megamind_frames[30, :256, :256].contiguous(), megamind_frames[34, :256, :256].contiguous()
    style = key.flip(2).contiguous()
    params = SynthesisParams(search_vote_iters=4, patchmatch_iters=3, seed=2, **options)
    guides = [Guide(key, frame, 6.0)]
    reference = synthesize(style, guides, params, backend="cpu")
    result = synthesize(style, guides, params, backend="cuda")
    assert torch.equal(result.nnf, reference.nnf) and torch.equal(result.image, reference.image)
    assert torch.equal(result.error, reference.error)


def test_gpu_backend_accepts_device_tensors(real_cuda):
    from rerender_video.kernels.cuda_runtime import CudaRuntime

    rng = np.random.default_rng(4)
    source = rng.integers(0, 2000, (40, 48, 4), dtype=np.int16)
    results = []
    for engine, src in ((Backend(NumbaRuntime()), source), (Backend(CudaRuntime()), torch.from_numpy(source).cuda())):
        state = engine.prepare_level(_spec(), src, source, NnfStart.random(3))
        engine.vote(state, initial=True, update_mask=False)
        engine.patch_error(state, all_pixels=True)
        engine.occupancy(state)
        engine.search(state, (1,), 77)
        results.append((engine.nnf(state), engine.image(state), engine.error(state)))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------------------------ shared data
@pytest.fixture(scope="module")
def crops_small(megamind_frames):
    key = megamind_frames[40, 100:132, 200:248].contiguous()
    frame = megamind_frames[42, 101:133, 203:251].contiguous()
    return key.flip(2).contiguous(), [Guide(key, frame, 6.0)]


def test_weighted_vote_scale_outside_the_exact_float_range_is_refused(host_engine):
    import dataclasses

    image = np.zeros((24, 32, 4), np.int16)
    spec = dataclasses.replace(_spec(), weighted_vote=True, vote_error_scale=1e-38)
    with pytest.raises(InputError, match=r"vote_error_scale: Expected a value in \[2\^-120, 2\^90\]"):
        host_engine.prepare_level(spec, image, image, NnfStart.random(3))
    host_engine.prepare_level(dataclasses.replace(spec, weighted_vote=False), image, image, NnfStart.random(3))
