"""Cross-frame attention and its feature store (keyframe/attention.py, paper §4.1.1).

The block under test follows ComfyUI's attn1_patch protocol (keyframe/toy.py); the tokens are
features of real Megamind frames, so the comparisons run on realistic, non-degenerate inputs.
"""

from __future__ import annotations

import copy

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rerender_video.common.errors import InputError
from rerender_video.keyframe.attention import (DECODER_BLOCKS, LOOSE_BLOCKS, CrossFrameAttention, FeatureStore,
                                               attention_blocks, store_bytes)
from rerender_video.keyframe.toy import ToyTransformerBlock, attention  # noqa: F401
from rerender_video.keyframe.windows import CROSS_PERIOD, StepClock, StepWindow

DIM = 16
SIGMAS = torch.tensor([9.0, 3.0, 1.0, 0.0])


@pytest.fixture(scope="module")
def frame_tokens(megamind_path):
    """Tokens [1,64,16] of three Megamind frames: 8×8 cells of 16 features (colour + gradients)."""
    container = av.open(str(megamind_path))
    frames = []
    for index, frame in enumerate(container.decode(video=0)):
        if index in (10, 50, 90):
            frames.append(torch.from_numpy(frame.to_ndarray(format="rgb24")).float() / 255)
        if index >= 90:
            break
    container.close()
    tokens = []
    for image in frames:
        chw = image.permute(2, 0, 1)[None]
        small = F.adaptive_avg_pool2d(chw, 32)
        grads = torch.cat([small.diff(dim=-1, append=small[..., -1:]),
                           small.diff(dim=-2, append=small[..., -1:, :])], 1)
        feats = torch.cat([small, grads, small ** 2, small.mean(1, keepdim=True).repeat(1, 4, 1, 1)], 1)[:, :DIM]
        tokens.append(F.adaptive_avg_pool2d(feats, 8).flatten(2).transpose(1, 2) * 4)
    return tokens


def make_block() -> ToyTransformerBlock:
    torch.manual_seed(0)
    block = ToyTransformerBlock(DIM).eval()
    with torch.no_grad():  # sharper attention than the default init, so frames are told apart
        block.to_q.weight.mul_(4)
        block.to_k.weight.mul_(4)
    return block


@pytest.fixture()
def block():
    return make_block()


def options(patch=None, block_number=9, branches=(0,), sigma=9.0, block_name="output"):
    return {"patches": {"attn1_patch": [patch]} if patch else {}, "block": (block_name, block_number),
            "block_index": 0, "cond_or_uncond": list(branches), "sigmas": torch.tensor([sigma])}


def record(block, tokens, store, branches=(0,), block_number=9, sigma=9.0):
    patch = CrossFrameAttention(StepClock(SIGMAS), DECODER_BLOCKS, CROSS_PERIOD, record=store)
    with torch.no_grad():
        return block(tokens, options(patch, block_number, branches, sigma))


def expected_cross(block, x, sources):
    """Attention of x's queries over the concatenated normed tokens of ``sources`` (paper Eq. 6)."""
    with torch.no_grad():
        kv = torch.cat([block.norm1(s) for s in sources], dim=1)
        return x + block.to_out(attention(block.to_q(block.norm1(x)), block.to_k(kv), block.to_v(kv), block.heads))


class TestEquivalences:
    def test_recording_does_not_change_the_output(self, block, frame_tokens):
        x = frame_tokens[0]
        with torch.no_grad():
            plain = block(x, options())
        assert torch.equal(record(block, x, FeatureStore(torch.float32)), plain)

    def test_anchor_previous_self_equals_self_attention(self, block, frame_tokens):
        x = frame_tokens[0]
        own = FeatureStore(torch.float32)
        record(block, x, own)
        copy_store = FeatureStore(torch.float32)
        record(block, x, copy_store)
        with torch.no_grad():
            plain = block(x, options())
            shared = block(x, options(CrossFrameAttention(StepClock(SIGMAS), DECODER_BLOCKS, CROSS_PERIOD,
                                                          replay=(own, own))))
            doubled = block(x, options(CrossFrameAttention(StepClock(SIGMAS), DECODER_BLOCKS, CROSS_PERIOD,
                                                           replay=(own, copy_store))))
        torch.testing.assert_close(shared, plain, rtol=0, atol=1e-6)
        torch.testing.assert_close(doubled, plain, rtol=1e-5, atol=1e-5)  # [v; v]: every weight halves

    def test_other_frames_attend_over_their_concatenated_tokens(self, block, frame_tokens):
        current, anchor_tokens, previous_tokens = frame_tokens
        anchor, previous = FeatureStore(torch.float32), FeatureStore(torch.float32)
        record(block, anchor_tokens, anchor)
        record(block, previous_tokens, previous)
        patch = CrossFrameAttention(StepClock(SIGMAS), DECODER_BLOCKS, CROSS_PERIOD, replay=(anchor, previous))
        with torch.no_grad():
            out = block(current, options(patch))
            plain = block(current, options())
        torch.testing.assert_close(out, expected_cross(block, current, [anchor_tokens, previous_tokens]),
                                   rtol=1e-5, atol=1e-5)
        assert (out - plain).abs().max() > 1e-2  # the current frame's own tokens are not used
        assert patch.calls == 1

    def test_sdpa_backend_sees_the_same_keys(self, frame_tokens):
        # The patch replaces K/V sources before the kernel runs, so any backend gives the same result.
        current, anchor_tokens, previous_tokens = frame_tokens
        manual = make_block()
        anchor, previous = FeatureStore(torch.float32), FeatureStore(torch.float32)
        record(manual, anchor_tokens, anchor)
        record(manual, previous_tokens, previous)
        patch = CrossFrameAttention(StepClock(SIGMAS), DECODER_BLOCKS, CROSS_PERIOD, replay=(anchor, previous))
        with torch.no_grad():
            out_manual = manual(current, options(patch))
            out_sdpa = manual(current, options(patch), backend="sdpa")
            plain_sdpa = manual(current, options(), backend="sdpa")
        torch.testing.assert_close(out_sdpa, out_manual, rtol=1e-5, atol=1e-5)
        assert (out_sdpa - plain_sdpa).abs().max() > 1e-2


class TestKeys:
    def test_cond_uncond_batched_or_separate(self, block, frame_tokens):
        current, anchor_tokens, previous_tokens = frame_tokens
        # Record with ComfyUI's batched layout: uncond chunk first, cond second, different content.
        batched = FeatureStore(torch.float32)
        record(block, torch.cat([anchor_tokens, previous_tokens]), batched, branches=(1, 0))
        assert batched.keys() == [(0, 0, 9), (0, 1, 9)]
        assert torch.equal(batched.get(0, 1, 9), block.norm1(anchor_tokens).detach())
        assert torch.equal(batched.get(0, 0, 9), block.norm1(previous_tokens).detach())
        patch = CrossFrameAttention(StepClock(SIGMAS), DECODER_BLOCKS, CROSS_PERIOD, replay=(batched, batched))
        with torch.no_grad():
            together = block(torch.cat([current, current]), options(patch, branches=(1, 0)))
            cond_alone = block(current, options(patch, branches=(0,)))
            uncond_alone = block(current, options(patch, branches=(1,)))
        torch.testing.assert_close(together[1:], cond_alone, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(together[:1], uncond_alone, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(cond_alone, expected_cross(block, current, [previous_tokens]), rtol=1e-5, atol=1e-5)

    def test_keyed_by_step_not_call_order(self, block, frame_tokens):
        store = FeatureStore(torch.float32)
        for sigma, tokens in zip((9.0, 3.0, 1.0), frame_tokens):  # step 0, 1, 2
            record(block, tokens, store, sigma=sigma)
        patch = CrossFrameAttention(StepClock(SIGMAS), DECODER_BLOCKS, CROSS_PERIOD, replay=(store, store))
        current = frame_tokens[0]
        with torch.no_grad():
            # Replay in reverse order: each call must read its own step's record.
            outs = {sigma: block(current, options(patch, sigma=sigma)) for sigma in (1.0, 3.0, 9.0)}
        for sigma, tokens in zip((9.0, 3.0, 1.0), frame_tokens):
            torch.testing.assert_close(outs[sigma], expected_cross(block, current, [tokens]), rtol=1e-5, atol=1e-5)

    def test_only_decoder_blocks_and_window(self, block, frame_tokens):
        current, anchor_tokens, _ = frame_tokens
        store = FeatureStore(torch.float32)
        record(block, anchor_tokens, store, block_number=3)
        loose = CrossFrameAttention(StepClock(SIGMAS), LOOSE_BLOCKS, CROSS_PERIOD, replay=(store, store))
        late = CrossFrameAttention(StepClock(SIGMAS), DECODER_BLOCKS, StepWindow(0.5, 1.0), replay=(store, store))
        with torch.no_grad():
            plain = block(current, options(block_number=3))
            assert torch.equal(block(current, options(loose, block_number=3)), plain)        # loose: not block 3
            assert torch.equal(block(current, options(late, block_number=3)), plain)         # step 0 outside
            assert torch.equal(block(current, options(loose, block_number=4, block_name="input")),
                               block(current, options(block_number=4, block_name="input")))  # encoder untouched
        assert loose.calls == late.calls == 0

    def test_missing_record_names_the_key(self, block, frame_tokens):
        store = FeatureStore(torch.float32)
        record(block, frame_tokens[1], store, branches=(0,))
        patch = CrossFrameAttention(StepClock(SIGMAS), DECODER_BLOCKS, CROSS_PERIOD, replay=(store, store))
        with pytest.raises(InputError, match=r"step 0, uncond branch, output block 9"):
            block(frame_tokens[0], options(patch, branches=(1,)))


class TestStore:
    def test_fp16_records(self, block, frame_tokens):
        current, anchor_tokens, previous_tokens = frame_tokens
        half, full = FeatureStore(), FeatureStore(torch.float32)
        for store in (half, full):
            record(block, anchor_tokens, store)
            record(block, previous_tokens, store, block_number=10)
        assert half.get(0, 0, 9).dtype == torch.float16 and half.nbytes * 2 == full.nbytes
        outs = []
        for store in (half, full):
            patch = CrossFrameAttention(StepClock(SIGMAS), DECODER_BLOCKS, CROSS_PERIOD, replay=(store, store))
            with torch.no_grad():
                outs.append(block(current, options(patch)))
        torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=5e-3)

    def test_frozen_store_refuses_records(self):
        store = FeatureStore().freeze()
        with pytest.raises(RuntimeError, match="frozen"):
            store.put(0, 0, 9, torch.zeros(1, 2, 2))

    def test_merged_takes_steps_from_each_side(self):
        before, after = FeatureStore(torch.float32), FeatureStore(torch.float32)
        for step in range(4):
            before.put(step, 0, 9, torch.full((1, 1, 1), float(step)))
            after.put(step, 0, 9, torch.full((1, 1, 1), 10.0 + step))
        merged = FeatureStore.merged(before, after, 2)
        assert [merged.get(s, 0, 9).item() for s in range(4)] == [0.0, 1.0, 12.0, 13.0] and merged.frozen

    def test_deepcopy_keeps_the_shared_patch(self):
        # ComfyUI deep-copies model_options on MODEL.clone(); records must still reach the store.
        patch = CrossFrameAttention(StepClock(SIGMAS), DECODER_BLOCKS, CROSS_PERIOD, record=FeatureStore())
        assert copy.deepcopy({"patches": [patch]})["patches"][0] is patch

    def test_offload_cpu(self):
        store = FeatureStore(offload="cpu")
        store.put(1, 0, 9, torch.ones(1, 3, 2))
        assert store.get(1, 0, 9).device.type == "cpu"
        with pytest.raises(InputError, match="offload"):
            FeatureStore(offload="disk")

    def test_store_size_from_sd15_shapes(self):
        # 512² → 64² latent: 3 layers × (16²·1280 + 32²·640 + 64²·320) per step and branch.
        per_step_branch = 3 * (256 * 1280 + 1024 * 640 + 4096 * 320)
        assert store_bytes(64, 64, 20) == per_step_branch * 2 * 20 * 2
        assert store_bytes(64, 64, 20, LOOSE_BLOCKS) == 3 * (1024 * 640 + 4096 * 320) * 2 * 20 * 2
        assert attention_blocks(False) == DECODER_BLOCKS
        assert np.isclose(store_bytes(64, 64, 20) / 2 ** 30, 0.5127, atol=1e-3)
