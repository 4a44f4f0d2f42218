"""Image pyramid of the synthesis: level count, level sizes and the 2×2 box reduction.

EbSynth (propagation/ALGORITHM.md §16) uses the most levels whose coarsest smaller side is still ``>= 2p+1`` and
builds every coarse level by one aliasing bilinear tap from the finest level. Here the level sizes follow the
same rule (``floor(size / 2^k)``, so sizes match EbSynth's), but each level is the 2×2 box average of the next
finer one (an anti-aliased mipmap; an odd last row/column is dropped, so a coarse pixel ``(x, y)`` covers
the fine pixels ``2x..2x+1``, ``2y..2y+1`` exactly as the NNF upsampling assumes). The reduction runs on
the host in float32 with a fixed order, ``((a + b) + (c + d)) * 0.25``, and its output is shared by every
backend, so the backends see bit-identical inputs.
"""

from __future__ import annotations

import numpy as np


def max_levels(sizes: list[tuple[int, int]], patch_size: int) -> int:
    """Largest level count ``L`` with ``min side >> (L-1) >= 2·patch_size+1`` over all ``(H, W)`` sizes (>= 1).

    Example:
        >>> max_levels([(528, 720), (528, 720)], 5), max_levels([(512, 512)], 5), max_levels([(20, 30)], 5)
        (6, 6, 1)
    """
    smallest = min(min(h, w) for h, w in sizes)
    levels = 1
    while (smallest >> levels) >= 2 * patch_size + 1:
        levels += 1
    return levels


def level_count(requested: int, sizes: list[tuple[int, int]], patch_size: int) -> int:
    """Levels actually used: ``requested`` (0 = automatic) clamped to :func:`max_levels`."""
    most = max_levels(sizes, patch_size)
    return most if requested <= 0 else min(requested, most)


def reduce2(image: np.ndarray) -> np.ndarray:
    """2×2 box reduction of ``[H,W,C]`` float32 to ``[H//2, W//2, C]`` float32 (odd last row/column dropped).

    Example:
        >>> reduce2(np.arange(12, dtype=np.float32).reshape(2, 3, 2))[..., 0].tolist()
        [[4.0]]
    """
    h, w = image.shape[0] // 2, image.shape[1] // 2
    a = image[0:2 * h:2, 0:2 * w:2]
    b = image[0:2 * h:2, 1:2 * w:2]
    c = image[1:2 * h:2, 0:2 * w:2]
    d = image[1:2 * h:2, 1:2 * w:2]
    return np.ascontiguousarray(((a + b) + (c + d)) * np.float32(0.25), dtype=np.float32)


def build(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """Pyramid of ``[H,W,C]`` float32, coarsest first; ``result[-1]`` is ``image`` itself."""
    pyramid = [np.ascontiguousarray(image, dtype=np.float32)]
    for _ in range(levels - 1):
        pyramid.append(reduce2(pyramid[-1]))
    return pyramid[::-1]
