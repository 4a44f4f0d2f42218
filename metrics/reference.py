"""Fidelity to a reference video, frame by frame: PSNR and SSIM.

Both are computed on 8-bit frames (float RGB in [0, 1] rounded to 0–255), as the project's EbSynth
protocol scores them (``benchmarks/_anchor_protocol.py``), with scikit-image:
``peak_signal_noise_ratio(data_range=255)`` and ``structural_similarity(channel_axis=2,
data_range=255)`` (Wang et al. 2004, scikit-image's 7×7 window). Identical frames have an infinite
PSNR; it is reported as :data:`PSNR_CAP` dB so that means and JSON stay finite.
"""

from __future__ import annotations

import numpy as np
import torch

#: PSNR reported for identical frames (dB).
PSNR_CAP = 100.0


def to_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """``[H,W,3]`` float in [0, 1] (clipped) → uint8, rounded; uint8 input is returned as is.

    Example:
        >>> to_uint8(np.array([[[0.0, 0.5, 1.2]]])).tolist()
        [[[0, 128, 255]]]
    """
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if image.dtype == np.uint8:
        return image
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def psnr_ssim(output: torch.Tensor | np.ndarray, reference: torch.Tensor | np.ndarray) -> tuple[float, float]:
    """PSNR (dB) and SSIM of one output frame against its reference frame (module docstring).

    Args:
        output, reference: ``[H,W,3]`` float in [0, 1] or uint8, same size.

    Returns:
        ``(psnr, ssim)``; PSNR capped at :data:`PSNR_CAP` for identical frames.

    Example:
        >>> ref = np.zeros((16, 16, 3)); out = ref.copy(); out[0, 0] = 1.0   # one white pixel
        >>> psnr, ssim = psnr_ssim(out, ref); round(psnr, 2)
        24.08
        >>> psnr_ssim(ref, ref)[0]
        100.0
    """
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    output8, reference8 = to_uint8(output), to_uint8(reference)
    if np.array_equal(output8, reference8):
        return PSNR_CAP, 1.0
    psnr = min(float(peak_signal_noise_ratio(reference8, output8, data_range=255)), PSNR_CAP)
    ssim = float(structural_similarity(reference8, output8, channel_axis=2, data_range=255))
    return psnr, ssim
