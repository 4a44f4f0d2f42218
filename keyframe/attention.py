"""Style-aware cross-frame attention (paper §4.1.1, Eq. 6; ``keyframe/ALGORITHM.md`` §3).

In the decoder self-attention layers of the UNet chosen by latent resolution (:mod:`.layout`: SD1.5
``output_blocks`` 3–11, "loose" 6–11; SDXL 0–5, "loose" 3–5, up to ``cfattn_depth`` layers per block),
the keys and values of the frame being rendered come from the **anchor** frame's and the
**previous keyframe's** self-attention inputs recorded at the same sampling step and the same CFG
branch, concatenated on the token axis: ``K = W_K·[v_anchor; v_prev]``, ``V = W_V·[v_anchor; v_prev]``.
The current frame's own tokens are *not* included. Queries stay the current frame's.

Implementation: a ComfyUI ``attn1_patch`` (:class:`CrossFrameAttention`). ComfyUI calls it with
the layer-normed hidden states ``n`` of a transformer block before self-attention and uses the
``context``/``value`` it returns as the source of K and V; the projections and the attention kernel
stay ComfyUI's, so the constraint holds whichever attention backend ComfyUI picked (SDPA,
sub-quadratic, split, xformers, sage, flash) — the reference lost it silently under xformers
(ALGORITHM.md §10 item 3).

Storing ``n`` (not K/V) is equivalent, because K/V are re-projected by the same layer weights.

The :class:`FeatureStore` keys every record explicitly by ``(step, branch, block)`` — sampled-step
index (:class:`~keyframe.windows.StepClock`), CFG branch (0 = cond, 1 = uncond, from ComfyUI's
``transformer_options["cond_or_uncond"]``) and layer id (output block and transformer index,
:func:`~keyframe.layout.layer_id`) — never by call order (the reference's call-order cursor broke when the step
count changed, ALGORITHM.md §10 item 3). Records are fp16 (half the reference's fp32) and stay on the model's
device while they fit (:func:`common.memory.device_free_bytes`), in RAM otherwise.
"""

from __future__ import annotations

from typing import Container, Iterable

import torch

from ..common.errors import input_error
from ..common.memory import device_free_bytes
from .layout import DEFAULT_DEPTH, SD15_LAYOUT, UNetLayout, layer_id, layer_name
from .windows import StepClock, StepWindow

#: SD1.5 decoder blocks with a self-attention layer (1280, 640 and 320 channels, 3 each).
DECODER_BLOCKS: tuple[int, ...] = SD15_LAYOUT.layers(loose=False)
#: "Loose" cross-frame attention (reference PR #62): only the 640- and 320-channel layers.
LOOSE_BLOCKS: tuple[int, ...] = SD15_LAYOUT.layers(loose=True)

#: Share of the free GPU memory (measured at the first record) that records may occupy on the GPU.
DEVICE_BUDGET_FRACTION = 0.25

Key = tuple[int, int, int]


def attention_blocks(loose: bool, layout: UNetLayout = SD15_LAYOUT, depth: int = DEFAULT_DEPTH) -> tuple[int, ...]:
    """Layer ids whose self-attention is replaced (:meth:`keyframe.layout.UNetLayout.layers`; SD1.5:
    ``loose`` → output blocks 6–11, else 3–11).

    Example:
        >>> attention_blocks(True)
        (6, 7, 8, 9, 10, 11)
    """
    return layout.layers(loose, depth)


class FeatureStore:
    """Recorded self-attention inputs ``n`` keyed by ``(step, branch, block)``.

    Each record is ``[F, N, C]`` (frames in the chunk, tokens, channels), stored as ``dtype``.

    Args:
        dtype: storage dtype (fp16 by default; fp32 for bit-exact tests).
        offload: ``"auto"`` keeps records on the GPU while they take less than
            ``DEVICE_BUDGET_FRACTION`` of the free GPU memory and moves the rest to the CPU;
            ``"cpu"`` always stores on the CPU; ``"device"`` keeps them where they were computed.

    A store is written during one sampling pass, then :meth:`freeze` makes it read-only, so a
    REFERENCE that ComfyUI caches is never changed by a later node.

    Example:
        >>> store = FeatureStore()
        >>> store.put(0, 1, 9, torch.ones(1, 4, 2))
        >>> store.get(0, 1, 9).dtype, (0, 1, 9) in store, store.nbytes
        (torch.float16, True, 16)
    """

    def __init__(self, dtype: torch.dtype = torch.float16, offload: str = "auto") -> None:
        if offload not in ("auto", "cpu", "device"):
            raise input_error("offload", "'auto', 'cpu' or 'device'", offload)
        self.dtype = dtype
        self.offload = offload
        self._items: dict[Key, torch.Tensor] = {}
        self._device_budget: int | None = None
        self._device_bytes = 0
        self.frozen = False

    def _storage_device(self, tokens: torch.Tensor) -> torch.device:
        if self.offload == "device" or tokens.device.type == "cpu":
            return tokens.device
        if self.offload == "cpu" or tokens.device.type != "cuda":
            return torch.device("cpu")
        if self._device_budget is None:
            self._device_budget = int(device_free_bytes(tokens.device) * DEVICE_BUDGET_FRACTION)
        size = tokens.numel() * torch.finfo(self.dtype).bits // 8
        if self._device_bytes + size <= self._device_budget:
            self._device_bytes += size
            return tokens.device
        return torch.device("cpu")

    def put(self, step: int, branch: int, block: int, tokens: torch.Tensor) -> None:
        """Record ``tokens`` ``[F,N,C]`` (a copy) under ``(step, branch, block)``."""
        if self.frozen:
            raise RuntimeError("FeatureStore is frozen; record into a new store")
        device = self._storage_device(tokens)
        self._items[(int(step), int(branch), int(block))] = tokens.detach().to(
            device=device, dtype=self.dtype, copy=True)

    def get(self, step: int, branch: int, block: int) -> torch.Tensor | None:
        """The record under ``(step, branch, block)``, or ``None``."""
        return self._items.get((int(step), int(branch), int(block)))

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def keys(self) -> list[Key]:
        """All ``(step, branch, block)`` keys, sorted."""
        return sorted(self._items)

    def steps(self) -> list[int]:
        """Sampled-step indices that have at least one record, sorted."""
        return sorted({key[0] for key in self._items})

    def branches(self) -> list[int]:
        """CFG branches recorded (0 = cond, 1 = uncond), sorted."""
        return sorted({key[1] for key in self._items})

    @property
    def nbytes(self) -> int:
        """Bytes held by all records."""
        return sum(t.numel() * t.element_size() for t in self._items.values())

    def discard_steps_below(self, step: int) -> None:
        """Drop the records of steps ``< step`` (a consumer that will not read them again frees memory)."""
        for key in [k for k in self._items if k[0] < step]:
            del self._items[key]

    def freeze(self) -> "FeatureStore":
        """Make the store read-only and return it."""
        self.frozen = True
        return self

    @classmethod
    def merged(cls, before: "FeatureStore", after: "FeatureStore", split_step: int) -> "FeatureStore":
        """A frozen store with ``before``'s records for steps ``< split_step`` and ``after``'s for the rest.

        Used when pass 2 is resumed at ``split_step``: its earlier steps equal pass 1's.
        """
        store = cls(before.dtype, before.offload)
        store._items = {k: v for k, v in before._items.items() if k[0] < split_step}
        store._items.update({k: v for k, v in after._items.items() if k[0] >= split_step})
        return store.freeze()

    def __repr__(self) -> str:
        return (f"FeatureStore({len(self)} records, steps {self.steps()[:1]}…{self.steps()[-1:]}, "
                f"{self.nbytes / 2**20:.1f} MiB, {self.dtype})")


def store_bytes(latent_height: int, latent_width: int, steps: int, blocks: Iterable[int] = DECODER_BLOCKS,
                branches: int = 2, bytes_per_value: int = 2, layout: UNetLayout = SD15_LAYOUT) -> int:
    """Size of one :class:`FeatureStore` for a UNet's real layer shapes (SD1.5 by default), from the shapes.

    SD1.5: output blocks 3–5 run at latent/4 with 1280 channels, 6–8 at latent/2 with 640, 9–11 at
    the latent resolution with 320; SDXL: :data:`keyframe.layout.SDXL_LAYOUT`.

    Example:
        >>> round(store_bytes(64, 64, 20) / 1e6)  # 512×512, 20 steps, cond+uncond, fp16
        551
    """
    return layout.store_bytes(latent_height, latent_width, steps, tuple(blocks), branches, bytes_per_value)


class CrossFrameAttention:
    """ComfyUI ``attn1_patch`` for cross-frame attention; also records the features it sees.

    Called by ComfyUI's ``BasicTransformerBlock`` as ``n, context, value = patch(n, context, value,
    extra_options)``, with ``n`` ``[chunks·F, N, C]`` the normed hidden states of the batch
    (chunks = one per entry of ``extra_options["cond_or_uncond"]``), ``extra_options["block"]``
    = ``("output", number)`` and ``extra_options["block_index"]`` the transformer layer in the block.

    Args:
        clock: maps ``extra_options["sigmas"]`` to the sampled-step index.
        blocks: layer ids to act on (:func:`attention_blocks`; SD1.5: the output-block numbers).
        window: steps on which K/V are replaced (``cross_period``; recording ignores it).
        replay: ``(anchor_store, previous_store)`` to read K/V sources from, or ``None`` (anchor
            pass: plain self-attention). When both are the same store (the first keyframe after
            the anchor), the record is used once: attention over ``[v; v]`` equals attention over
            ``v`` (each key appears twice, every softmax weight halves), so the result is the same
            at half the cost.
        record: store to write the current frame's features into (anchor pass; or the next
            keyframe's "previous" reference), or ``None``.
        record_steps: steps to record (``None`` = every step).
        discard: a store whose records of earlier steps may be dropped as sampling moves on (the
            old "previous keyframe" store when the caller will not use it again), or ``None``.
        discard_limit: never drop steps at or above this one (pass 2 still reads them).

    Raises:
        InputError: (during sampling) a replay record is missing, naming the key and the fix.
    """

    def __init__(self, clock: StepClock, blocks: Iterable[int], window: StepWindow,
                 replay: tuple[FeatureStore, FeatureStore] | None = None, record: FeatureStore | None = None,
                 record_steps: Container[int] | None = None, discard: FeatureStore | None = None,
                 discard_limit: int = 0) -> None:
        self.clock = clock
        self.blocks = frozenset(int(b) for b in blocks)
        self.window = window
        self.replay = replay
        self.record = record
        self.record_steps = record_steps
        self.discard = discard
        self.discard_limit = discard_limit
        self.calls = 0  # patched calls that replaced K/V (for tests and diagnostics)
        self.applied: list[int] = []  # steps on which K/V were replaced
        self._cache: dict[tuple, torch.Tensor] = {}
        self._cache_step: int | None = None

    def __deepcopy__(self, memo: dict) -> "CrossFrameAttention":
        # ComfyUI deep-copies model_options when a MODEL is cloned; the patch is shared state (it
        # records into its store), so every copy must be this object.
        return self

    def __call__(self, n: torch.Tensor, context: torch.Tensor, value: torch.Tensor, extra_options: dict):
        block = extra_options.get("block")
        if block is None or block[0] != "output":
            return n, context, value
        layer = layer_id(int(block[1]), int(extra_options.get("block_index", 0) or 0))
        if layer not in self.blocks:
            return n, context, value
        step = self.clock.index(extra_options["sigmas"])
        branches = list(extra_options.get("cond_or_uncond") or [0])
        frames = n.shape[0] // len(branches)
        if self.record is not None and (self.record_steps is None or step in self.record_steps):
            seen = set()
            for chunk, branch in enumerate(branches):
                if branch not in seen:  # several conds of one branch (areas): keep the first
                    seen.add(branch)
                    self.record.put(step, branch, layer, n[chunk * frames:(chunk + 1) * frames])
        if self.replay is None or not self.window.contains(step, self.clock.total):
            return n, context, value
        sources = [self._source(step, branch, layer, n) for branch in branches]
        sources = [s.expand(frames, -1, -1) if s.shape[0] == 1 else s for s in sources]
        kv = torch.cat(sources, dim=0)
        self.calls += 1
        if not self.applied or self.applied[-1] != step:
            self.applied.append(step)
        return n, kv, kv

    def _source(self, step: int, branch: int, block: int, like: torch.Tensor) -> torch.Tensor:
        if self._cache_step != step:  # keep at most one step's sources on the device
            self._cache.clear()
            self._cache_step = step
            if self.discard is not None:
                self.discard.discard_steps_below(min(step, self.discard_limit))
        key = (step, branch, block, like.device, like.dtype)
        if key not in self._cache:
            anchor, previous = self.replay
            parts = [self._get(anchor, "anchor", step, branch, block)]
            if previous is not anchor:
                parts.append(self._get(previous, "previous keyframe", step, branch, block))
            self._cache[key] = torch.cat([p.to(like.device, like.dtype) for p in parts], dim=1)
        return self._cache[key]

    def _get(self, store: FeatureStore, what: str, step: int, branch: int, block: int) -> torch.Tensor:
        tokens = store.get(step, branch, block)
        if tokens is None:
            branch_name = "cond" if branch == 0 else "uncond"
            raise input_error(
                "reference", f"{what} features for step {step}, {branch_name} branch, {layer_name(block)}",
                f"a REFERENCE holding steps {store.steps()}, branches {store.branches()}",
                ["render the anchor with the same steps, denoise, scheduler and cfg (cfg 1 records no "
                 "uncond branch)", "use the same loose_cfattn, cfattn_depth and cross window as the anchor"])
        return tokens
