"""The CUDA kernels (kernels/*.cu), compiled for the CPU through the host shim, against the numba reference.

Every pass is deterministic integer arithmetic (float32 in a fixed order for the weighted vote), so the
comparison is bit-exact: NNF, packed image, error map and the active-pixel counts, after every single pass
(a lockstep backend drives both inside real ``synthesize`` runs on Megamind crops) and for whole runs with
several seeds and options. The kernels are built once per session (g++; skipped, saying so, without a
compiler).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rerender_video.kernels import host_build
from rerender_video.propagation import backend as backend_module
from rerender_video.propagation import synthesis as synthesis_module
from rerender_video.propagation.backend import Backend, LevelState
from rerender_video.propagation.cpu_backend import CpuBackend, NnfInit
from rerender_video.propagation.params import SynthesisParams
from rerender_video.propagation.synthesis import Guide, synthesize


@pytest.fixture(scope="session")
def host_backend_class():
    """Build the host kernels once per session (a few seconds) and return the backend class."""
    if host_build.find_compiler() is None:
        pytest.skip("no C++ compiler (g++, c++, clang++ or $CXX): cannot build the kernels for the host")
    host_build.host_kernels()
    from rerender_video.kernels.kernel_backend import HostBackend

    return HostBackend


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
    """Runs the CPU reference and the kernel backend on the same calls; records every disagreement."""

    name = "lockstep"

    def __init__(self, reference: Backend, candidate: Backend):
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

    def prepare_level(self, spec, source, target, nnf) -> LevelState:
        state = LevelState(spec, source.shape[:2], target.shape[:2])
        state.arrays["ref"] = self.reference.prepare_level(spec, source, target, nnf)
        state.arrays["cand"] = self.candidate.prepare_level(spec, source, target, nnf)
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
    monkeypatch.setattr(backend_module, "get_backend", lambda name="auto": lockstep)
    return synthesize(style, guides, params, **kwargs)


# ------------------------------------------------------------------------------------------------ per pass
@pytest.mark.parametrize("params", [
    SynthesisParams(search_vote_iters=3, patchmatch_iters=3, seed=11),
    SynthesisParams(search_vote_iters=3, patchmatch_iters=2, vote_mode="weighted", seed=12, extra_pass_3x3=True),
    SynthesisParams(patch_size=7, search_vote_iters=3, patchmatch_iters=2, stop_threshold=40.0, seed=13),
], ids=["plain", "weighted+3x3", "p7+freezing"])
def test_every_pass_matches_the_cpu_backend(monkeypatch, host_backend_class, crops, params):
    key, frame, style = crops
    lockstep = Lockstep(CpuBackend(), host_backend_class())
    run_lockstep(monkeypatch, lockstep, style, guides_for(key, frame), params)
    searches = sum(call.startswith("search") for call in lockstep.calls)
    assert searches >= 3 * params.patchmatch_iters, lockstep.calls
    assert not lockstep.mismatches, lockstep.mismatches[:5]


def test_freezing_is_exercised_and_matches(monkeypatch, host_backend_class, crops):
    """A high stop threshold freezes pixels: the masked passes (partial vote, active-only search) run."""
    key, frame, style = crops
    lockstep = Lockstep(CpuBackend(), host_backend_class())
    run_lockstep(monkeypatch, lockstep, style, guides_for(key, frame),
                 SynthesisParams(search_vote_iters=4, patchmatch_iters=2, stop_threshold=20.0, seed=5))
    total = key.shape[0] * key.shape[1]
    assert any(0 < count < total for count in lockstep.active_counts), lockstep.active_counts
    assert not lockstep.mismatches, lockstep.mismatches[:5]


def test_occupancy_cost_map_matches(host_backend_class, crops):
    """The uniformity term's cost map (an internal array) equals the reference's after a rebuild."""
    from rerender_video.propagation.backend import LevelSpec

    key, frame, _ = crops
    rng = np.random.default_rng(0)
    source = rng.integers(0, 3000, size=(40, 56, 4), dtype=np.int16)
    target = rng.integers(0, 3000, size=(48, 64, 4), dtype=np.int16)
    spec = LevelSpec(patch_size=5, style_channels=3, occupancy_multiplier=123457, change_threshold=9,
                     weighted_vote=False, vote_error_scale=1e-4, random_radii=(28, 14, 7, 3, 1), level=0)
    nnf = NnfInit.random_nnf((48, 64), (40, 56), 2, 99)
    nnf[:10, :10] = (20, 20)   # a heavily re-used source patch
    results = []
    for engine in (CpuBackend(), host_backend_class()):
        state = engine.prepare_level(spec, source, target, nnf)
        engine.occupancy(state)
        results.append(np.asarray(state.arrays["occupancy"]).reshape(40, 56).copy())
    assert results[0].max() > results[0].min() > 0
    np.testing.assert_array_equal(results[0], results[1])


def test_nnf_initialisation_kernels_match(host_backend_class):
    engine = host_backend_class()
    for shape, source, radius, key in [((48, 64), (40, 56), 2, 7), ((31, 17), (64, 64), 3, 2**32 - 5)]:
        expected = NnfInit.random_nnf(shape, source, radius, key)
        np.testing.assert_array_equal(engine.random_nnf(shape, source, radius, key), expected)
        fine = (shape[0] * 2 + 1, shape[1] * 2)
        big_source = (source[0] * 2, source[1] * 2 + 1)
        np.testing.assert_array_equal(engine.upsample_nnf(expected, fine, big_source, radius),
                                      NnfInit.upsample_nnf(expected, fine, big_source, radius))
        full = NnfInit.random_nnf((shape[0] * 4, shape[1] * 4), (source[0] * 4, source[1] * 4), radius, key + 1)
        np.testing.assert_array_equal(engine.reduce_nnf(full, shape, 2, source, radius),
                                      NnfInit.reduce_nnf(full, shape, 2, source, radius))


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
    """Rerender-like schedule (12 × 6) and the extra 3×3 pass: late searches move few pixels (the CPU backend's
    incremental occupancy update), and the λ = 0 pass must start from a zero cost map, not the 5×5 one."""
    key, frame, style = crops
    params = SynthesisParams(search_vote_iters=12, patchmatch_iters=6, extra_pass_3x3=True, seed=1)
    assert_same(*both(style, guides_for(key, frame), params))


def test_zero_uniformity_pass_has_no_occupancy_cost(host_backend_class, crops):
    """After reset_patch to λ = 0 (the extra 3×3 pass) the kernels' occupancy cost map is zero."""
    import dataclasses

    from rerender_video.propagation.backend import LevelSpec

    rng = np.random.default_rng(3)
    image = rng.integers(0, 3000, size=(32, 40, 4), dtype=np.int16)
    spec = LevelSpec(patch_size=5, style_channels=3, occupancy_multiplier=50000, change_threshold=9,
                     weighted_vote=False, vote_error_scale=1e-4, random_radii=(20, 10, 5, 2, 1), level=0)
    engine = host_backend_class()
    state = engine.prepare_level(spec, image, image, NnfInit.random_nnf((32, 40), (32, 40), 2, 5))
    engine.occupancy(state)
    assert np.asarray(state.arrays["occupancy"]).max() > 0
    engine.occupancy(state)                             # nothing moved since the build: the map is kept
    assert np.asarray(state.arrays["occupancy"]).max() > 0
    engine.reset_patch(state, dataclasses.replace(spec, patch_size=3, occupancy_multiplier=0))
    engine.occupancy(state)                             # nothing moved either, but λ is 0 now
    assert np.asarray(state.arrays["occupancy"]).max() == 0
