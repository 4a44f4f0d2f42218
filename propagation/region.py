"""The region a masked propagation restyles: per-frame MASKs with their growth and feather (issue 16).

A :class:`Region` answers one question for the propagation (:func:`~propagation.sequence.iter_chain`) and the
blend (:func:`~propagation.blend.blend_video`, the segment engine): frame ``i``'s compositing weight
``[H,W]`` float32 in [0, 1] (:func:`common.masks.region_alpha`: 1 inside the mask grown by ``mask_grow``
pixels, falling to exactly 0 at ``feather`` pixels outside it). Outside the weight's support the output
is the source video bit for bit (:func:`common.masks.composite`); see propagation/ALGORITHM.md §19.

The masks come from a MASK batch (:meth:`Region.from_mask`) or from files read on use (:class:`MaskFiles`,
for the segment engine, which never holds the whole clip). A single mask for a multi-frame clip is carried
through the clip by the optical flow (:mod:`flow.mask_carry`) by the callers that have the flow.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..common.errors import input_error
from ..common.masks import check_mask, region_alpha, warn_if_empty
from ..flow.mask_carry import iter_carried_masks_flow


@dataclass
class Region:
    """Per-frame masks ``[M,H,W]`` (``M`` = 1: the same mask on every frame, or one per frame) + grow/feather.

    Attributes:
        masks: MASK ``[M,H,W]`` float32 in [0, 1], checked (:func:`common.masks.check_mask`).
        mask_grow: pixels the mask is widened by (negative shrinks).
        feather: pixels of the linear fall-off outside the grown mask.
    """

    masks: torch.Tensor
    mask_grow: int
    feather: int
    _static: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def from_mask(cls, mask: object, frames: int, height: int, width: int, mask_grow: int, feather: int,
                  name: str = "mask") -> "Region":
        """Check ``mask`` (errors name ``name``), warn when it is empty, and keep it with its settings.

        Raises:
            InputError: the errors of :func:`common.masks.check_mask`.
        """
        masks = check_mask(mask, frames, height, width, name).detach().to("cpu")
        warn_if_empty(masks, name)
        return cls(masks, int(mask_grow), int(feather))

    @classmethod
    def for_video(cls, mask: object, frames: int, height: int, width: int, mask_grow: int, feather: int,
                  flow=None, name: str = "mask") -> "Region":
        """:meth:`from_mask`, then one mask for a clip of several frames is carried through it by the FLOW
        (:func:`flow.mask_carry.iter_carried_masks_flow`, consecutive pairs, with the occlusion masks); with
        no FLOW (or an empty mask) it stays one static region.

        Raises:
            InputError: as :meth:`from_mask`; a FLOW without consecutive pairs.
        """
        region = cls.from_mask(mask, frames, height, width, mask_grow, feather, name)
        if region.masks.shape[0] == 1 and frames > 1 and flow is not None and bool((region.masks > 0).any()):
            carried = torch.stack(list(iter_carried_masks_flow(flow, region.masks, frames, name)))
            region = cls(carried, region.mask_grow, region.feather)
        return region

    def segment(self, start: int, stop: int) -> "Region":
        """The masks of frames ``start … stop-1``, renumbered from 0 (a segment job's local numbering)."""
        if self.masks.shape[0] == 1:
            return self
        return Region(self.masks[start:stop].clone(), self.mask_grow, self.feather)

    def alpha(self, index: int) -> np.ndarray:
        """Frame ``index``'s compositing weight ``[H,W]`` float32 in [0, 1]."""
        if self.masks.shape[0] == 1:
            if self._static is None:
                self._static = region_alpha(self.masks, self.mask_grow, self.feather)[0].numpy()
            return self._static
        return region_alpha(self.masks[index:index + 1], self.mask_grow, self.feather)[0].numpy()

    def key_parts(self, indices: Sequence[int]) -> list:
        """What a cache key needs of the region on these frames: their masks and the grow/feather settings."""
        if self.masks.shape[0] == 1:  # one static mask: no copy per frame
            return [self.masks, len(indices), self.mask_grow, self.feather]
        return [self.masks[list(indices)], self.mask_grow, self.feather]


def read_mask_image(path: Path, name: str) -> np.ndarray:
    """A mask image as ``[H,W]`` float32 in [0, 1]: its luminance, white = restyle, black = keep the source
    (8- and 16-bit images, scaled by 255 or 65535; an alpha channel is ignored).

    Raises:
        InputError: the file cannot be read as an image (naming ``name`` and the file).
    """
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise input_error(name, "a readable mask image (PNG, JPEG, …)", str(path), "re-export the mask as PNG")
    scale = 65535.0 if image.dtype == np.uint16 else 255.0
    if image.ndim == 3:
        image = cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2GRAY)
    return image.astype(np.float32) / scale


@dataclass(frozen=True)
class MaskFiles:
    """Per-frame mask images read on use (picklable, for segment jobs): the engine's :class:`Region`.

    Attributes:
        files: per loaded frame index, its mask image (``len`` = the frame count); one file = a static mask.
        mask_grow, feather: as :class:`Region`.
        digests: per file, the SHA-256 of its bytes (for the segment store's key).
    """

    files: tuple[Path, ...]
    mask_grow: int
    feather: int
    digests: tuple[str, ...]

    @classmethod
    def from_files(cls, files: Sequence[Path], mask_grow: int, feather: int) -> "MaskFiles":
        """Keep the files and hash their bytes (the store key follows mask content, not file names)."""
        digests = tuple(hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in files)
        return cls(tuple(Path(path) for path in files), int(mask_grow), int(feather), digests)

    def mask(self, index: int) -> np.ndarray:
        """Frame ``index``'s mask ``[H,W]`` float32 in [0, 1]."""
        return read_mask_image(self.files[0 if len(self.files) == 1 else index], "mask")

    def alpha(self, index: int) -> np.ndarray:
        """Frame ``index``'s compositing weight ``[H,W]`` float32 in [0, 1]."""
        return region_alpha(torch.from_numpy(self.mask(index))[None], self.mask_grow, self.feather)[0].numpy()

    def loaded(self) -> Region:
        """The same masks read into a :class:`Region` (for a job that runs where these files may not exist)."""
        masks = np.stack([self.mask(index) for index in range(len(self.files))])
        return Region(torch.from_numpy(masks), self.mask_grow, self.feather)

    def segment(self, start: int, stop: int) -> "MaskFiles":
        """The masks of frames ``start … stop-1``, renumbered from 0 (a segment job's local numbering)."""
        if len(self.files) == 1:
            return self
        return MaskFiles(self.files[start:stop], self.mask_grow, self.feather, self.digests[start:stop])

    def key_parts(self, indices: Sequence[int]) -> list:
        """The masks' digests on these frames and the grow/feather settings."""
        rows = [0] * len(indices) if len(self.files) == 1 else list(indices)
        return [[self.digests[row] for row in rows], self.mask_grow, self.feather]
