"""The PROPAGATION object: every frame's forward and backward stylized candidates and their errors.

Propagation (:mod:`propagation.sequence`) carries each stylized keyframe along *chains* of frames:
forward to the frames up to the next keyframe, backward to the frames after the previous one
(Rerender §4.2). A chain holds, per frame, the stylized candidate ``[H,W,3]`` and its per-pixel NNF
error ``[H,W]`` (EbSynth units: weighted sum of squared 8-bit differences over the 5×5 patch).
The temporal blend (:mod:`propagation.blend`) picks and mixes the two candidates per pixel.

Storage: candidates are float16 (precision ≈ 5·10⁻⁴, finer than 8-bit), errors float32. Each
finished chain lives in a content-keyed cache entry (``<cache>/propagation/<key>/``, files
``images.npy`` and ``errors.npy``); above a size threshold the object memory-maps those files
instead of holding the arrays in RAM, so a long video's candidates stay on disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..common.errors import input_error
from ..common.keyframes import Keyframes
from ..common.memory import check_allocation
from ..flow.types import FlowPairs

FORWARD = "forward"
BACKWARD = "backward"
DIRECTIONS = (FORWARD, BACKWARD)


@dataclass
class Chain:
    """One keyframe propagated in one direction.

    Attributes:
        key: the keyframe's frame index.
        direction: ``"forward"`` (to later frames) or ``"backward"`` (to earlier frames).
        frames: target frame indices in propagation order (nearest to the keyframe first).
        images: ``[n,H,W,3]`` float16 in [0, 1], one candidate per target frame (may be a memmap).
        errors: ``[n,H,W]`` float32 per-pixel NNF error of each candidate (may be a memmap).
        cache_dir: the cache entry holding the arrays, if any.
    """

    key: int
    direction: str
    frames: tuple[int, ...]
    images: np.ndarray
    errors: np.ndarray
    cache_dir: Path | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of candidates + errors."""
        return int(self.images.nbytes + self.errors.nbytes)


@dataclass
class Propagation:
    """The PROPAGATION object passed from Rerender EbSynth Propagate to Rerender Temporal Blend.

    Attributes:
        keyframes: the keyframes (indices and video length).
        keyframe_images: ``[M,H,W,3]`` float32, the stylized keyframes exactly as given.
        flow: the FLOW of the video (consecutive pairs), reused by the blend's selection tracking.
        chains: the propagated chains.
        direction: ``"both"``, ``"forward"`` or ``"backward"`` (what was asked for).
        settings: synthesis parameters and guide weights used (for display and cache keys).
        stats: frames computed / reused from the cache and synthesis seconds.
        region: the restyled region of a masked run (:class:`~propagation.region.Region`), else ``None``;
            Temporal Blend composites the result over ``source_frames`` with it.
        source_frames: IMAGE ``[N,H,W,3]``, the original frames of a masked run (``None`` otherwise).
    """

    keyframes: Keyframes
    keyframe_images: torch.Tensor
    flow: FlowPairs
    chains: list[Chain]
    direction: str = "both"
    settings: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    region: object = None
    source_frames: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self._index: dict[tuple[int, str], tuple[int, int]] = {}
        for chain_number, chain in enumerate(self.chains):
            for row, frame in enumerate(chain.frames):
                self._index[(frame, chain.direction)] = (chain_number, row)

    @property
    def frame_count(self) -> int:
        """Number of frames of the video."""
        return self.keyframes.frame_count

    @property
    def frame_size(self) -> tuple[int, int]:
        """``(H, W)`` in pixels."""
        return int(self.keyframe_images.shape[1]), int(self.keyframe_images.shape[2])

    @property
    def nbytes(self) -> int:
        """Bytes of all candidates and errors (on disk or in RAM)."""
        return sum(chain.nbytes for chain in self.chains)

    @property
    def memory_mapped(self) -> bool:
        """True when the candidates are memory-mapped from the cache instead of held in RAM."""
        return any(isinstance(chain.images, np.memmap) for chain in self.chains)

    def has(self, frame: int, direction: str) -> bool:
        """True if frame ``frame`` has a candidate propagated in ``direction``."""
        return (frame, direction) in self._index

    def candidate(self, frame: int, direction: str) -> tuple[np.ndarray, np.ndarray]:
        """The candidate of ``frame`` from ``direction``: ``(image [H,W,3] float32, error [H,W] float32)``.

        Raises:
            InputError: the frame has no candidate in that direction.
        """
        if direction not in DIRECTIONS:
            raise input_error("direction", f"one of {DIRECTIONS}", direction)
        if (frame, direction) not in self._index:
            raise input_error("propagation", f"a {direction} candidate for frame {frame}",
                              "none (that frame was not propagated in this direction)",
                              "run Rerender EbSynth Propagate with direction 'both'")
        chain_number, row = self._index[(frame, direction)]
        chain = self.chains[chain_number]
        return np.asarray(chain.images[row], dtype=np.float32), np.asarray(chain.errors[row], dtype=np.float32)

    def keyframe_position(self, frame: int) -> int | None:
        """Position of ``frame`` in the keyframe batch, or ``None`` if it is not a keyframe."""
        try:
            return self.keyframes.indices.index(frame)
        except ValueError:
            return None

    def preview(self) -> torch.Tensor:
        """``[N,H,W,3]`` float32: keyframes as given, other frames their forward candidate where there
        is one, else the backward candidate (a quick look before blending).

        Raises:
            InputError: the batch would not fit in memory.
        """
        height, width = self.frame_size
        check_allocation(height * width * 3 * 4, self.frame_count, "preview frames", "frames",
                         ["load fewer frames", "lower the resolution"])
        out = torch.empty((self.frame_count, height, width, 3), dtype=torch.float32)
        for frame in range(self.frame_count):
            position = self.keyframe_position(frame)
            if position is not None:
                out[frame] = self.keyframe_images[position]
                continue
            direction = FORWARD if self.has(frame, FORWARD) else BACKWARD
            out[frame] = torch.from_numpy(self.candidate(frame, direction)[0])
        return out

    def describe(self) -> str:
        """One line: frames, size, chains, storage."""
        height, width = self.frame_size
        storage = "memory-mapped" if self.memory_mapped else "in RAM"
        return (f"{self.frame_count} frames at {width}x{height}, {len(self.keyframes.indices)} keyframes, "
                f"{len(self.chains)} chains ({self.direction}), {self.nbytes / 2**20:.0f} MiB {storage}, "
                f"backend {self.stats.get('backend', 'unknown')}")
