r"""Screened Poisson gradient blending of two propagated candidates (Rerender §4.2; ALGORITHM.md §17.5).

Per Lab channel (8-bit Lab scale: L in 0–255, a/b offset by 128) it solves

.. math::  \min_x\; \lambda^2 \big(\lVert G_y x - g_y\rVert^2 + \lVert G_x x - g_x\rVert^2\big)
           + \lVert x - h\rVert^2

where ``h`` is the histogram-preserving blend, ``G_y x (p) = x(p) - x(p + down)`` and
``G_x x (p) = x(p) - x(p + right)`` (zero on the last row / column), and the guidance gradients
``g`` are taken from the forward candidate where the selection mask is 0 and from the backward
candidate where it is 1. ``λ = (2.5, 0.5, 0.5)`` for (L, a, b).

*Gradient clipping.* The reference clips the guidance gradients to ±100 (8-bit Lab units). That
flattens real strong edges: on posterised stylized Megamind frames the L gradients reach 150–200,
and with two *identical* candidates the clipped solve moves pixels by up to 40 units instead of
returning the input. Both gradients of a pair ``(p, p+1)`` come from the same candidate, so a seam
cannot create a spurious jump that clipping would be needed for; clipping is therefore **off** by
default here (``clip`` argument of :func:`poisson_blend` restores it).

Solver: with the last row/column of ``G`` zero, ``G_yᵀG_y + G_xᵀG_x`` is the 5-point Laplacian with
Neumann boundaries, which the orthonormal type-II DCT diagonalises (eigenvalues
``2 − 2cos(πk/H) + 2 − 2cos(πl/W)``). The normal equations
``(I + λ²L) x = h + λ²(G_yᵀg_y + G_xᵀg_x)`` are therefore solved *exactly* by one forward and one
inverse DCT (:mod:`scipy.fft`), O(N log N), instead of the reference's iterative sparse least squares (the
cost per frame is in the README, from ``benchmarks/propagation_video.py``). ``tests/test_blend.py`` checks it against a sparse direct solve
(:func:`scipy.sparse.linalg.spsolve`) of the same system.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import fft

#: Gradient weights λ per Lab channel (L, a, b), Rerender ``blender/poisson_fusion.py``.
GRADIENT_WEIGHTS = (2.5, 0.5, 0.5)

#: The reference's gradient clip (8-bit Lab units); not applied by default (module docstring).
REFERENCE_GRADIENT_CLIP = 100.0


def gradients(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward differences ``(g_y, g_x)`` of ``[H,W,...]``: ``I(p) − I(p+down)``, ``I(p) − I(p+right)``,
    zero on the last row / column.

    Example:
        >>> g_y, g_x = gradients(np.array([[0., 1.], [3., 5.]]))
        >>> g_y.tolist(), g_x.tolist()
        ([[-3.0, -4.0], [0.0, 0.0]], [[-1.0, 0.0], [-2.0, 0.0]])
    """
    g_y = np.zeros_like(image)
    g_x = np.zeros_like(image)
    g_y[:-1] = image[:-1] - image[1:]
    g_x[:, :-1] = image[:, :-1] - image[:, 1:]
    return g_y, g_x


def divergence_adjoint(g_y: np.ndarray, g_x: np.ndarray) -> np.ndarray:
    """``G_yᵀ g_y + G_xᵀ g_x`` for gradients laid out as :func:`gradients` returns them."""
    out = np.zeros_like(g_y)
    out[:-1] += g_y[:-1]
    out[1:] -= g_y[:-1]
    out[:, :-1] += g_x[:, :-1]
    out[:, 1:] -= g_x[:, :-1]
    return out


@functools.lru_cache(maxsize=8)
def _laplacian_eigenvalues(height: int, width: int) -> np.ndarray:
    ky = 2.0 - 2.0 * np.cos(np.pi * np.arange(height) / height)
    kx = 2.0 - 2.0 * np.cos(np.pi * np.arange(width) / width)
    return ky[:, None] + kx[None, :]


def screened_poisson(data: np.ndarray, g_y: np.ndarray, g_x: np.ndarray, weight: float) -> np.ndarray:
    """Exact minimiser of ``weight²·‖∇x − g‖² + ‖x − data‖²`` for one channel ``[H,W]`` (float64).

    Example:
        >>> image = np.random.default_rng(0).random((6, 7))
        >>> bool(np.allclose(screened_poisson(image, *gradients(image), 2.5), image))
        True
    """
    height, width = data.shape
    rhs = data + weight * weight * divergence_adjoint(g_y, g_x)
    spectrum = fft.dctn(rhs, type=2, norm="ortho", workers=-1)
    spectrum /= 1.0 + weight * weight * _laplacian_eigenvalues(height, width)
    return fft.idctn(spectrum, type=2, norm="ortho", workers=-1)


def poisson_blend(histogram_lab: np.ndarray, forward_lab: np.ndarray, backward_lab: np.ndarray,
                  selection: np.ndarray, weights: tuple[float, float, float] = GRADIENT_WEIGHTS,
                  clip: float | None = None) -> np.ndarray:
    """Screened Poisson fusion of the selected gradients with the histogram blend (ALGORITHM.md §17.5).

    Args:
        histogram_lab: ``[H,W,3]`` the data term ``h`` (histogram-preserving blend), 8-bit Lab scale.
        forward_lab: ``[H,W,3]`` forward candidate, same scale.
        backward_lab: ``[H,W,3]`` backward candidate, same scale.
        selection: ``[H,W]`` bool, True where the backward candidate was selected.
        weights: gradient weight λ per channel (L, a, b).
        clip: clip the guidance gradients to ±clip (``None``: no clipping, the default; the reference
            uses :data:`REFERENCE_GRADIENT_CLIP`).

    Returns:
        ``[H,W,3]`` float32, 8-bit Lab scale, clipped to [0, 255].
    """
    choose_backward = np.asarray(selection, dtype=bool)[..., None]
    forward_y, forward_x = gradients(forward_lab.astype(np.float64))
    backward_y, backward_x = gradients(backward_lab.astype(np.float64))
    g_y = np.where(choose_backward, backward_y, forward_y)
    g_x = np.where(choose_backward, backward_x, forward_x)
    if clip is not None:
        np.clip(g_y, -clip, clip, out=g_y)
        np.clip(g_x, -clip, clip, out=g_x)
    data = histogram_lab.astype(np.float64)
    out = np.empty(histogram_lab.shape, dtype=np.float32)
    for channel, weight in enumerate(weights):
        out[..., channel] = screened_poisson(data[..., channel], g_y[..., channel], g_x[..., channel], weight)
    return np.clip(out, 0.0, 255.0)
