"""The REFERENCE state: what later keyframes need from the anchor and from the previous keyframe.

Made by :func:`keyframe.render.render_keyframe` when it renders the anchor (``reference=None``) and
replaced — never changed in place, so a REFERENCE that ComfyUI caches stays valid — by every later
keyframe. Fields (``keyframe/ALGORITHM.md`` §7):

* ``anchor_features`` — the anchor's decoder self-attention inputs per (step, branch, block): the
  "first" K/V source of cross-frame attention;
* ``previous_features`` — the "previous" K/V source: the features of the last keyframe whose
  update was due (``style_update_freq``), initially the anchor's (the same object);
* ``anchor_x0`` — the anchor's CFG x̂0 per sampled step (shape-aware fusion source and AdaIN
  statistics);
* ``anchor_render`` / ``previous_render`` — decoded renders (IMAGE ``[1,H,W,3]``), warped into the
  next keyframe for pixel-aware fusion; ``previous_render`` is always the most recent keyframe's;
* the indices of those frames, the frame size, the σ schedule and the recorded blocks and branches,
  so a keyframe rendered with incompatible settings fails with a clear message instead of reading
  the wrong records.

``style_update_freq`` counts keyframes (``keyframe/ALGORITHM.md`` §3, §10 item 2; the reference's
scripts count frames): the k-th keyframe after the anchor (k = 0, 1, …, ``keyframes_rendered``
before it) records new "previous" features when ``k % style_update_freq == 0``. With K-frame
keyframe intervals this equals the reference's frame-counting rule at ``style_update_freq·K``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..common.errors import input_error
from .adain import channel_stats
from .attention import FeatureStore
from .layout import describe_layers, split_layer


@dataclass(frozen=True)
class ReferenceState:
    """The REFERENCE object (see the module docstring).

    Attributes:
        anchor_index: frame index of the anchor.
        previous_index: frame index of the most recent keyframe (``previous_render``).
        previous_features_index: frame whose features ``previous_features`` holds.
        keyframes_rendered: keyframes rendered after the anchor so far.
        frame_size: ``(H, W)`` in pixels.
        sigmas: the sampled σ schedule ``[S+1]`` the anchor was rendered with (CPU float32).
        blocks: output blocks with recorded features.
        branches: CFG branches recorded (0 = cond, 1 = uncond).
        anchor_features, previous_features: :class:`~keyframe.attention.FeatureStore` (frozen).
        anchor_x0: step → anchor x̂0 ``[1,4,h,w]`` (model space, CPU float32).
        anchor_render, previous_render: IMAGE ``[1,H,W,3]`` float32 in [0,1] (CPU).
    """

    anchor_index: int
    previous_index: int
    previous_features_index: int
    keyframes_rendered: int
    frame_size: tuple[int, int]
    sigmas: torch.Tensor
    blocks: tuple[int, ...]
    branches: tuple[int, ...]
    anchor_features: FeatureStore
    previous_features: FeatureStore
    anchor_x0: dict[int, torch.Tensor]
    anchor_render: torch.Tensor
    previous_render: torch.Tensor
    _stats: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def total_steps(self) -> int:
        """Sampled steps of the schedule the anchor was rendered with."""
        return len(self.sigmas) - 1

    def anchor_stats(self) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """step → the anchor x̂0's per-channel ``(mean, std)`` ``[1,4,1,1]`` (AdaIN targets)."""
        if not self._stats:
            self._stats.update({step: channel_stats(x0) for step, x0 in self.anchor_x0.items()})
        return self._stats

    @property
    def nbytes(self) -> int:
        """Bytes held (feature stores counted once when shared)."""
        stores = {id(self.anchor_features): self.anchor_features, id(self.previous_features): self.previous_features}
        tensors = [*self.anchor_x0.values(), self.anchor_render, self.previous_render]
        return sum(s.nbytes for s in stores.values()) + sum(t.numel() * t.element_size() for t in tensors)

    def describe(self) -> str:
        """One line for logs: frames, size, steps and memory."""
        height, width = self.frame_size
        return (f"REFERENCE anchor {self.anchor_index}, previous {self.previous_index} (features of "
                f"{self.previous_features_index}), {self.keyframes_rendered} keyframes after the anchor, "
                f"{width}x{height}, {self.total_steps} steps, blocks {list(self.blocks)}, "
                f"{self.nbytes / 2**20:.0f} MiB")

    # --- compatibility checks ---------------------------------------------------------------
    def check_frame_size(self, frame_size: tuple[int, int]) -> None:
        """Raise unless frames have the size the reference was recorded at."""
        if tuple(frame_size) != tuple(self.frame_size):
            raise input_error(
                "reference", f"a REFERENCE recorded at this frame size ({frame_size[1]}x{frame_size[0]})",
                f"a REFERENCE recorded at {self.frame_size[1]}x{self.frame_size[0]}",
                "render the anchor at the same size as the keyframes (one Prepare Frames output for both)")

    def check_schedule(self, sigmas: torch.Tensor) -> None:
        """Raise unless ``sigmas`` is the schedule the anchor was rendered with."""
        sigmas = torch.as_tensor(sigmas).detach().float().cpu()
        same = sigmas.shape == self.sigmas.shape and torch.allclose(sigmas, self.sigmas, rtol=1e-4, atol=1e-6)
        if not same:
            def show(s):
                return f"{len(s) - 1} steps, σ {float(s[0]):.3f} → {float(s[-1]):.3f}"
            raise input_error("reference", f"a REFERENCE sampled on this σ schedule ({show(sigmas)})",
                              f"one sampled on {show(self.sigmas)}",
                              "use the anchor's steps, denoise and scheduler for every keyframe")

    def check_attention(self, blocks: tuple[int, ...], branches: tuple[int, ...], steps: list[int]) -> None:
        """Raise unless the stores hold every (step, branch, block) cross-frame attention will read."""
        missing_blocks = sorted(set(blocks) - set(self.blocks))
        if missing_blocks:
            recorded = {split_layer(layer)[0] for layer in self.blocks}
            deeper = all(split_layer(layer)[0] in recorded for layer in missing_blocks)
            raise input_error("cfattn_depth" if deeper else "loose_cfattn",
                              f"attention layers the REFERENCE recorded ({describe_layers(self.blocks)})",
                              f"a request for {describe_layers(missing_blocks)}",
                              "use the anchor's loose_cfattn and cfattn_depth settings (or a smaller cfattn_depth), "
                              "or re-render the anchor with them")
        missing_branches = sorted(set(branches) - set(self.branches))
        if missing_branches:
            raise input_error("cfg", "the CFG branches the anchor was rendered with",
                              "the uncond branch, which the anchor (rendered at cfg 1) did not record",
                              "use the anchor's cfg, or render the anchor with cfg other than 1")
        for what, store in (("anchor", self.anchor_features), ("previous keyframe", self.previous_features)):
            absent = sorted(set(steps) - set(store.steps()))
            if absent:
                raise input_error("cross_start", f"{what} features for every step of the cross window",
                                  f"no records for steps {absent}",
                                  "use the anchor's cross_start/cross_end (or a narrower window)")
