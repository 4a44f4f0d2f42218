"""The CUDA kernels (kernels/*.cu), compiled for the CPU through the host shim, against their numba twins.

Every pass is deterministic integer arithmetic (float32 in a fixed order for the weighted vote), so the
comparison is bit-exact. Three levels: every row of the pass table (propagation/backends/passes.py) run as
one kernel launch on both runtimes with the same inputs; NNF, packed image, error map and the active-pixel
counts after every backend call (a lockstep backend drives both inside real ``synthesize`` runs on Megamind
crops); and whole runs with several seeds and options. The kernels are built once per session (g++;
skipped, saying so, without a compiler).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dataclasses
import inspect
import re
from pathlib import Path

from rerender_video.kernels import host_build
from rerender_video.kernels.runtime import HostRuntime
from rerender_video.kernels.source import kernel_signatures
from rerender_video.propagation import synthesis as synthesis_module
from rerender_video.propagation.backends import passes
from rerender_video.propagation.backends.backend import Backend
from rerender_video.propagation.backends.level import LevelSpec, LevelState, NnfStart
from rerender_video.propagation.backends.numba_runtime import NumbaRuntime
from rerender_video.propagation.params import SynthesisParams
from rerender_video.propagation.synthesis import Guide, synthesize

ALGORITHM = Path(__file__).resolve().parents[1] / "propagation" / "ALGORITHM.md"


def cpu_backend() -> Backend:
    return Backend(NumbaRuntime())


@pytest.fixture(scope="session")
def host_backend_class():
    """Build the host kernels once per session (a few seconds) and return a maker of the host backend."""
    if host_build.find_compiler() is None:
        pytest.skip("no C++ compiler (g++, c++, clang++ or $CXX): cannot build the kernels for the host")
    host_build.host_kernels()
    return lambda: Backend(HostRuntime())


@pytest.fixture(scope="session")
def crops(megamind_frames):
    """Keyframe, target frame and a deterministic 'stylized' keyframe: 48×64 crops of one Megamind shot."""
    key = megamind_frames[30, 220:268, 300:364].contiguous()
    frame = megamind_frames[33, 222:270, 304:368].contiguous()
    # a non-trivial style: channel mix + posterisation of the keyframe
    style = torch.floor(key[..., [2, 0, 1]] * 5.0) / 5.0 + 0.1 * key.mean(dim=2, keepdim=True)
    return key, frame, style.clamp(0, 1).contiguous()


def guides_for(key: torch.Tensor, frame: torch.Tensor) -> list[Guide]:
    """Rerender-like guides: colour (weight 6) and a 1-channel gray guide (weight 0.5)."""
    return [Guide(key, frame, 6.0), Guide(key.mean(dim=2, keepdim=True), frame.mean(dim=2, keepdim=True), 0.5)]


class Lockstep(Backend):
    """Runs the CPU backend and the host-kernel backend on the same calls; records every disagreement."""

    def __init__(self, reference: Backend, candidate: Backend):
        self.name = "lockstep"
        self.reference, self.candidate = reference, candidate
        self.calls: list[str] = []
        self.mismatches: list[str] = []
        self.active_counts: list[int] = []

    def _compare(self, state: LevelState, what: str) -> None:
        self.calls.append(what)
        ref, cand = state.arrays["ref"], state.arrays["cand"]
        for name in ("nnf", "image", "error"):
            a, b = getattr(self.reference, name)(ref), getattr(self.candidate, name)(cand)
            if a.shape != b.shape or not np.array_equal(a, b):
                count = int(np.count_nonzero(a != b)) if a.shape == b.shape else -1
                self.mismatches.append(f"{what} (call {len(self.calls)}): {name} differs at {count} entries")

    def prepare_level(self, spec, source, target, start) -> LevelState:
        state = LevelState(spec, source.shape[:2], target.shape[:2])
        for side, engine in (("ref", self.reference), ("cand", self.candidate)):
            own = start if start.parent is None else dataclasses.replace(start, parent=start.parent.arrays[side])
            state.arrays[side] = engine.prepare_level(spec, source, target, own)
        self.calls.append(f"start {start.kind}")
        self._compare(state, f"prepare level {spec.level}")
        return state

    def vote(self, state, initial, update_mask) -> int:
        a = self.reference.vote(state.arrays["ref"], initial, update_mask)
        b = self.candidate.vote(state.arrays["cand"], initial, update_mask)
        self.active_counts.append(a)
        if a != b:
            self.mismatches.append(f"vote level {state.spec.level}: active count {a} vs {b}")
        self._compare(state, f"vote level {state.spec.level} initial={initial}")
        return a

    def patch_error(self, state, all_pixels) -> None:
        self.reference.patch_error(state.arrays["ref"], all_pixels)
        self.candidate.patch_error(state.arrays["cand"], all_pixels)
        self._compare(state, f"patch_error level {state.spec.level}")

    def occupancy(self, state) -> None:
        self.reference.occupancy(state.arrays["ref"])
        self.candidate.occupancy(state.arrays["cand"])
        self.calls.append("occupancy")

    def search(self, state, steps, key) -> None:
        self.reference.search(state.arrays["ref"], steps, key)
        self.candidate.search(state.arrays["cand"], steps, key)
        self._compare(state, f"search level {state.spec.level} steps={steps}")

    def reset_patch(self, state, spec) -> None:
        state.spec = spec
        self.reference.reset_patch(state.arrays["ref"], spec)
        self.candidate.reset_patch(state.arrays["cand"], spec)

    def nnf(self, state):
        return self.reference.nnf(state.arrays["ref"])

    def image(self, state):
        return self.reference.image(state.arrays["ref"])

    def error(self, state):
        return self.reference.error(state.arrays["ref"])


def run_lockstep(monkeypatch, lockstep: Lockstep, style, guides, params, **kwargs):
    monkeypatch.setattr(synthesis_module, "get_backend", lambda name="auto": lockstep)
    return synthesize(style, guides, params, **kwargs)


# ------------------------------------------------------------------------------------------------ the pass table
HS, WS, HT, WT, C, CS, P = 20, 29, 24, 32, 5, 3, 5
R = P // 2


def _valid_nnf(rng, shape, source_size, r=R):
    return np.stack([rng.integers(r, source_size[1] - r, shape), rng.integers(r, source_size[0] - r, shape)],
                    axis=2).astype(np.int32)


def _level(rng):
    """A level's arrays as the backend allocates them: packed images, NNF, errors, occupancy, masks."""
    return dict(src=rng.integers(0, 3000, (HS, WS, C), dtype=np.int16),
                tgt=rng.integers(0, 3000, (HT, WT, C), dtype=np.int16),
                nnf=_valid_nnf(rng, (HT, WT), (HS, WS)),
                err=rng.integers(0, 1 << 22, (HT, WT), dtype=np.int32),
                occ=rng.integers(0, 1 << 18, (HS, WS)).astype(np.int64),
                active=(rng.random((HT, WT)) < 0.8).astype(np.uint8),
                mask=(rng.random((HT, WT)) < 0.1).astype(np.uint8))


def _flags(value):
    return np.array([value], np.int32)


def _cases(kernel, rng):
    """Argument lists (in the kernel's order) of one or more launches of ``kernel`` on realistic inputs."""
    lv = _level(rng)
    empty_nnf = np.zeros((HT, WT, 2), np.int32)
    counts = rng.integers(0, 5, (HS, WS)).astype(np.int32)
    if kernel == "nnf_random":
        return [[empty_nnf, HT, WT, HS, WS, R, 7], [np.zeros((9, 13, 2), np.int32), 9, 13, 64, 64, 3, 2**32 - 5]]
    if kernel == "nnf_upsample":
        coarse = _valid_nnf(rng, (12, 16), (HS // 2, WS // 2))
        return [[coarse, 12, 16, np.zeros((25, 32, 2), np.int32), 25, 32, HS, WS, R]]
    if kernel == "nnf_reduce":
        full = rng.integers(0, 200, (HT * 4 + 3, WT * 4, 2)).astype(np.int32)
        return [[full, HT * 4 + 3, WT * 4, empty_nnf, HT, WT, 2, HS, WS, R],
                [lv["nnf"] * 3 - 4, HT, WT, empty_nnf, HT, WT, 0, HS, WS, R]]      # k = 0: a clamp
    if kernel == "patch_error":
        return [[lv["src"], lv["tgt"], WS, HT, WT, C, P, lv["nnf"], lv["err"], lv["active"], all_pixels]
                for all_pixels in (0, 1)]
    if kernel == "occ_count":
        return [[lv["nnf"], HT, WT, np.zeros((HS, WS), np.int32), WS, _flags(flag)] for flag in (1, 0)]
    if kernel in ("box_rows", "box_cols"):
        return [[counts, np.zeros((HS, WS), np.int32), HS, WS, r, _flags(1)] for r in (1, 2, 3)] + \
               [[counts, np.zeros((HS, WS), np.int32), HS, WS, 2, _flags(0)]]
    if kernel == "occ_finish":
        rows = rng.integers(0, 40, (HS, WS)).astype(np.int32)
        return [[rows, np.zeros((HS, WS), np.int64), counts, HS, WS, R, mul, _flags(flag)]
                for mul, flag in ((123457, 1), (0, 1), (123457, 0))]
    if kernel == "flag_clear":
        return [[_flags(1)]]
    if kernel == "pm_search":
        return [[lv["src"], lv["tgt"], HS, WS, HT, WT, C, P, lv["nnf"], np.zeros((HT, WT, 2), np.int32), lv["err"],
                 lv["occ"], lv["active"], np.zeros((HT, WT), np.uint8), _flags(0), np.array(steps, np.int32),
                 len(steps), np.array([14, 7, 3, 1], np.int32), 4, 99] for steps in ((4,), (4, 2, 1))]
    if kernel == "vote":
        return [[lv["src"], lv["tgt"], WS, HT, WT, C, CS, P, lv["nnf"], lv["err"], lv["mask"], all_pixels, weighted,
                 np.float32(1e-5), 9, np.zeros((HT, WT), np.uint8), lv["active"]]
                for all_pixels, weighted in ((0, 0), (1, 0), (1, 1))]
    if kernel in ("dilate_rows", "dilate_cols"):
        return [[lv["mask"], np.zeros((HT, WT), np.uint8), HT, WT, r, np.array([5], np.int32)] for r in (1, 2, 3)]
    raise AssertionError(f"no parity case for kernel {kernel!r}: add one to _cases")


def test_the_pass_table_covers_both_kernel_sources_and_the_algorithm():
    """Every CUDA kernel and every numba kernel is a row; twins share the parameter list; sections exist."""
    table = {row.kernel for row in passes.PASSES}
    assert len(table) == len(passes.PASSES)
    assert set(kernel_signatures()) == table
    module = passes.numba_kernels()
    numba_kernels = {name for name, value in vars(module).items()
                     if hasattr(value, "py_func") and not name.startswith("_") and name != "pcg_hash"}
    assert numba_kernels == table
    headings = set(re.findall(r"^#+ (\d+(?:\.\d+)?)\.? ", ALGORITHM.read_text(), flags=re.M)) | \
        set(re.findall(r"^(\d+\.\d+) ", ALGORITHM.read_text(), flags=re.M))
    for row in passes.PASSES:
        cuda_params = [param.name for param in kernel_signatures()[row.kernel].params]
        assert list(inspect.signature(row.numba.py_func).parameters) == cuda_params, row.kernel
        for section in re.findall(r"§([\d.]+)", row.section):
            assert section.split("–")[0] in headings, (row.kernel, section)
        assert hasattr(Backend, row.method), row


@pytest.mark.parametrize("row", passes.PASSES, ids=lambda row: f"{row.kernel} {row.section}")
def test_every_kernel_matches_its_numba_twin(host_backend_class, row):
    """One launch of the CUDA kernel (host build) and of its numba twin on the same inputs: every array
    argument afterwards is identical, and the launch did something (unless its flag says it must not)."""
    host = HostRuntime()
    for index, args in enumerate(_cases(row.kernel, np.random.default_rng(len(row.kernel)))):
        numba_args = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
        host_args = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
        row.numba(*numba_args)
        host.launch(row.kernel, (1, 1, 1), (1, 1, 1), *host_args) if row.kernel == "flag_clear" else \
            host.launch(row.kernel, _grid(row.kernel, args), (32, 8, 1), *host_args)
        names = [param.name for param in kernel_signatures()[row.kernel].params]
        changed = False
        for name, before, a, b in zip(names, args, numba_args, host_args):
            if isinstance(before, np.ndarray):
                np.testing.assert_array_equal(a, b, err_msg=f"{row.kernel} case {index}: {name} differs")
                changed |= not np.array_equal(a, before)
        gated_off = "flags" in names and args[names.index("flags")][0] == 0 and row.kernel != "pm_search"
        assert changed != gated_off, f"{row.kernel} case {index}: changed={changed}, gated off={gated_off}"


def _grid(kernel, args):
    """A launch grid covering the image the kernel loops over (the host shim runs every thread of it)."""
    from rerender_video.kernels.source import grid_for

    names = [param.name for param in kernel_signatures()[kernel].params]
    value = dict(zip(names, args))
    height = value.get("ht", value.get("hf" if kernel == "nnf_upsample" else "ho", value.get("h")))
    width = value.get("wt", value.get("wf" if kernel == "nnf_upsample" else "wo", value.get("w")))
    if kernel == "occ_count":
        height, width = value["ht"], value["wt"]
    return grid_for(width, height)


# ------------------------------------------------------------------------------------------------ per pass
@pytest.mark.parametrize("params", [
    SynthesisParams(search_vote_iters=3, patchmatch_iters=3, seed=11),
    SynthesisParams(search_vote_iters=3, patchmatch_iters=2, vote_mode="weighted", seed=12, extra_pass_3x3=True),
    SynthesisParams(patch_size=7, search_vote_iters=3, patchmatch_iters=2, stop_threshold=40.0, seed=13),
], ids=["plain", "weighted+3x3", "p7+freezing"])
def test_every_pass_matches_the_cpu_backend(monkeypatch, host_backend_class, crops, params):
    key, frame, style = crops
    lockstep = Lockstep(cpu_backend(), host_backend_class())
    run_lockstep(monkeypatch, lockstep, style, guides_for(key, frame), params)
    searches = sum(call.startswith("search") for call in lockstep.calls)
    assert searches >= 3 * params.patchmatch_iters, lockstep.calls
    assert not lockstep.mismatches, lockstep.mismatches[:5]


def test_freezing_is_exercised_and_matches(monkeypatch, host_backend_class, crops):
    """A high stop threshold freezes pixels: the masked passes (partial vote, active-only search) run."""
    key, frame, style = crops
    lockstep = Lockstep(cpu_backend(), host_backend_class())
    run_lockstep(monkeypatch, lockstep, style, guides_for(key, frame),
                 SynthesisParams(search_vote_iters=4, patchmatch_iters=2, stop_threshold=20.0, seed=5))
    total = key.shape[0] * key.shape[1]
    assert any(0 < count < total for count in lockstep.active_counts), lockstep.active_counts
    assert not lockstep.mismatches, lockstep.mismatches[:5]


def test_occupancy_cost_map_matches(host_backend_class):
    """The uniformity term's cost map (an internal array) equals the reference's after a rebuild."""
    rng = np.random.default_rng(0)
    source = rng.integers(0, 3000, size=(40, 56, 4), dtype=np.int16)
    target = rng.integers(0, 3000, size=(48, 64, 4), dtype=np.int16)
    spec = LevelSpec(patch_size=5, style_channels=3, occupancy_multiplier=123457, change_threshold=9,
                     weighted_vote=False, vote_error_scale=1e-4, random_radii=(28, 14, 7, 3, 1), level=0)
    nnf = np.stack([rng.integers(2, 54, (48, 64)), rng.integers(2, 38, (48, 64))], axis=2).astype(np.int32)
    nnf[:10, :10] = (20, 20)   # a heavily re-used source patch
    results = []
    for engine in (cpu_backend(), host_backend_class()):
        state = engine.prepare_level(spec, source, target, NnfStart.given(nnf))
        engine.occupancy(state)
        results.append(np.asarray(state.arrays["occupancy"]).reshape(40, 56).copy())
    assert results[0].max() > results[0].min() > 0
    np.testing.assert_array_equal(results[0], results[1])


# ------------------------------------------------------------------------------------------------ whole runs
@pytest.fixture
def both():
    """``both(style, guides, params, **kwargs)`` → (CPU result, host-kernel result)."""
    def run(style, guides, params, **kwargs):
        return (synthesize(style, guides, params, backend="cpu", **kwargs),
                synthesize(style, guides, params, backend="host", **kwargs))
    return run


def assert_same(reference, candidate):
    assert torch.equal(reference.nnf, candidate.nnf), "NNF differs"
    assert torch.equal(reference.image, candidate.image), "image differs"
    assert torch.equal(reference.error, candidate.error), "error map differs"


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("options", [
    {},
    {"vote_mode": "weighted"},
    {"extra_pass_3x3": True},
    {"stop_threshold": 0.0, "uniformity": 0.0},
    {"patch_size": 3, "stop_threshold": 12.0, "uniformity": 9000.0},
], ids=["defaults", "weighted", "extra3x3", "no-stop-no-uniformity", "p3-strong-uniformity"])
def test_whole_synthesis_is_bit_exact(host_backend_class, both, crops, seed, options):
    key, frame, style = crops
    params = SynthesisParams(search_vote_iters=3, patchmatch_iters=2, seed=seed, **options)
    reference, candidate = both(style, guides_for(key, frame), params)
    assert_same(reference, candidate)
    assert float(reference.error.mean()) > 0


def test_source_and_target_of_different_sizes(host_backend_class, both, crops):
    key, frame, style = crops
    small_key, small_style = key[:40, :56].contiguous(), style[:40, :56].contiguous()
    params = SynthesisParams(search_vote_iters=2, patchmatch_iters=3, seed=4)
    reference, candidate = both(small_style, guides_for(small_key, frame), params)
    assert reference.image.shape[:2] == frame.shape[:2]
    assert_same(reference, candidate)


def test_initial_nnf_runs_match(host_backend_class, both, crops):
    key, frame, style = crops
    params = SynthesisParams(search_vote_iters=2, patchmatch_iters=2, seed=8, initial_nnf_levels=1)
    first = synthesize(style, guides_for(key, frame), params, backend="cpu")
    reference, candidate = both(style, guides_for(key, frame), params, initial_nnf=first.nnf)
    assert_same(reference, candidate)


def test_rgba_style_and_many_guides(host_backend_class, both, crops):
    """Four style channels and four guide pairs (16 packed channels)."""
    key, frame, style = crops
    alpha = key.mean(dim=2, keepdim=True)
    rgba = torch.cat([style, alpha], dim=2)
    guides = guides_for(key, frame) + [Guide(key.flip(2), frame.flip(2), 2.0), Guide(key, frame, 0.0)]
    reference, candidate = both(rgba, guides, SynthesisParams(search_vote_iters=2, patchmatch_iters=2, seed=3))
    assert reference.image.shape[2] == 4
    assert_same(reference, candidate)


def test_long_schedule_with_extra_pass_matches(host_backend_class, both, crops):
    """Rerender-like schedule (12 × 6) and the extra 3×3 pass: late searches move no match (the cost map is kept,
    not rebuilt), and the λ = 0 pass must start from a zero cost map, not the 5×5 one."""
    key, frame, style = crops
    params = SynthesisParams(search_vote_iters=12, patchmatch_iters=6, extra_pass_3x3=True, seed=1)
    assert_same(*both(style, guides_for(key, frame), params))


@pytest.mark.parametrize("runtime", ["cpu", "host"])
def test_zero_uniformity_pass_has_no_occupancy_cost(host_backend_class, runtime):
    """The one occupancy bookkeeping, on both runtimes: the cost map is built from the NNF, kept while no match
    moves, and after reset_patch to λ = 0 (the extra 3×3 pass) it is zero although no match moved."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 3000, size=(32, 40, 4), dtype=np.int16)
    spec = LevelSpec(patch_size=5, style_channels=3, occupancy_multiplier=50000, change_threshold=9,
                     weighted_vote=False, vote_error_scale=1e-4, random_radii=(20, 10, 5, 2, 1), level=0)
    engine = cpu_backend() if runtime == "cpu" else host_backend_class()
    state = engine.prepare_level(spec, image, image, NnfStart.random(5))
    engine.occupancy(state)
    assert np.asarray(state.arrays["occupancy"]).max() > 0
    engine.occupancy(state)                             # nothing moved since the build: the map is kept
    assert np.asarray(state.arrays["occupancy"]).max() > 0
    engine.reset_patch(state, dataclasses.replace(spec, patch_size=3, occupancy_multiplier=0))
    engine.occupancy(state)                             # nothing moved either, but λ is 0 now
    assert np.asarray(state.arrays["occupancy"]).max() == 0
