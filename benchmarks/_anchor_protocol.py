"""The EbSynth anchor protocol on Megamind (propagation/ALGORITHM.md §18), shared by benchmarks and tests.

Data: the sequence's frame 0 is decoded frame **1** of Megamind.avi (decoded frame 0 is black); frames
``k ∈ {1, 2, 5, 10}`` after it (decoded ``1 + k``), at the native 720×528 or resized (``cv2.INTER_AREA``,
aspect not kept: "512" means 512×512). Stylization ``f`` = ``cv2.stylization(bgr, sigma_s=60, sigma_r=0.45)``
then posterisation ``v ↦ ⌊v/32⌋·32 + 16``; the edge guide is ``cv2.filter2D(bgr, -1, 4-neighbour Laplacian)``
(uint8 saturation). One synthesis per gap ``k``: style ``f(frame 0)``, guides (frame 0 → frame k, weight 6)
and (edge 0 → edge k, weight 0.5); scored with skimage PSNR (data_range 255) and SSIM (channel_axis 2,
data_range 255) against ``f(frame k)``. Decoding (PyAV via :func:`videoio.reader.load_frames`) is bit-identical
to the anchor's ``cv2.VideoCapture`` here, and the key image reproduces the anchor manifest's hash
(``266416cf5a764d7e`` at 720×528).

Import after :func:`rerender_cli.load_pack` (tests: conftest does it) as
``rerender_video.benchmarks._anchor_protocol``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

GAPS = (1, 2, 5, 10)
LAPLACIAN = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], np.float32)
VIDEO = Path(__file__).resolve().parents[1] / "tests" / "data" / "Megamind.avi"

#: EbSynth CPU (jamriska/ebsynth 2f5c97c, 1 thread, p 5, 12 search–vote × 6 PatchMatch, 6 levels, λ 3500):
#: (CPU seconds user + sys, PSNR dB, SSIM) per (size, gap): 720×528 the median of 3 runs, 512×512 one run, on the
#: project's shared 2-core dev VM. ``benchmarks/ebsynth_compare.py`` re-measures EbSynth beside our synthesis.
EBSYNTH_ANCHOR = {
    (720, 1): (114.7, 32.88, 0.9533), (720, 2): (124.4, 32.29, 0.9485),
    (720, 5): (150.9, 30.95, 0.9352), (720, 10): (168.9, 29.99, 0.9259),
    (512, 1): (65.5, 32.75, 0.9552), (512, 2): (76.0, 32.54, 0.9516),
    (512, 5): (73.8, 31.02, 0.9394), (512, 10): (72.4, 29.55, 0.9271),
}


@dataclass
class ProtocolCase:
    """One synthesis of the protocol: inputs as :func:`propagation.synthesis.synthesize` takes them.

    Attributes:
        gap: frames between the keyframe and the target.
        style: ``[H,W,3]`` float32 RGB in [0,1], ``f(frame 0)``.
        guides: ``[(source, target, weight)]`` — (frame 0, frame k, 6) and (edge 0, edge k, 0.5), RGB float32.
        truth: ``[H,W,3]`` uint8 **BGR**, ``f(frame k)``.
        keyframe_bgr: ``[H,W,3]`` uint8 BGR, ``f(frame 0)`` (the "copy the keyframe" baseline).
    """

    gap: int
    style: torch.Tensor
    guides: list[tuple[torch.Tensor, torch.Tensor, float]]
    truth: np.ndarray
    keyframe_bgr: np.ndarray


def stylize(bgr: np.ndarray) -> np.ndarray:
    """The protocol's deterministic "style": OpenCV stylization + 8-level posterisation (uint8 BGR → BGR)."""
    styled = cv2.stylization(bgr, sigma_s=60, sigma_r=0.45)
    return (styled // 32) * 32 + 16


def stylize_rgb(frame: np.ndarray) -> np.ndarray:
    """:func:`stylize` for float RGB frames: ``[H,W,3]`` float in [0,1] → float32 RGB in [0,1]."""
    bgr = cv2.cvtColor(np.rint(frame * 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
    return cv2.cvtColor(stylize(bgr), cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


def edge(bgr: np.ndarray) -> np.ndarray:
    """Rerender's edge guide: 4-neighbour Laplacian of the BGR uint8 frame, saturated to uint8."""
    return cv2.filter2D(bgr, -1, LAPLACIAN)


def sequence_frames(images: torch.Tensor | None = None, size: int | tuple[int, int] | None = None,
                    gaps: tuple[int, ...] = GAPS) -> dict[int, np.ndarray]:
    """Frames ``{0: decoded 1, k: decoded 1+k}`` as BGR uint8, resized with INTER_AREA when ``size`` is given.

    Args:
        images: decoded Megamind frames ``[N,528,720,3]`` float32 RGB (e.g. the ``megamind_frames`` fixture);
            ``None`` decodes the first ``2 + max(gaps)`` frames with :func:`videoio.reader.load_frames`.
        size: ``S`` (→ S×S) or ``(W, H)``; ``None`` keeps 720×528.
    """
    if images is None:
        from rerender_video.videoio.reader import load_frames
        images = load_frames(VIDEO, frame_load_cap=2 + max(gaps)).images
    frames = {}
    for k in (0, *gaps):
        rgb = (images[1 + k].numpy() * 255.0 + 0.5).astype(np.uint8)
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        if size is not None:
            bgr = cv2.resize(bgr, (size, size) if isinstance(size, int) else tuple(size),
                             interpolation=cv2.INTER_AREA)
        frames[k] = bgr
    return frames


def _rgb_tensor(bgr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1])).float() / 255.0


def make_cases(frames: dict[int, np.ndarray], gaps: tuple[int, ...] = GAPS) -> list[ProtocolCase]:
    """Protocol cases for ``gaps`` from :func:`sequence_frames` output."""
    key = stylize(frames[0])
    style = _rgb_tensor(key)
    frame0, edge0 = _rgb_tensor(frames[0]), _rgb_tensor(edge(frames[0]))
    return [ProtocolCase(gap=k, style=style,
                         guides=[(frame0, _rgb_tensor(frames[k]), 6.0), (edge0, _rgb_tensor(edge(frames[k])), 0.5)],
                         truth=stylize(frames[k]), keyframe_bgr=key) for k in gaps]


def to_bgr_uint8(image: torch.Tensor) -> np.ndarray:
    """``[H,W,3]`` float RGB in [0,1] → uint8 BGR, rounded to nearest (what a PNG writer would store)."""
    rgb = np.clip(image.detach().cpu().numpy() * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(rgb[..., ::-1])


def score(truth_bgr: np.ndarray, output_bgr: np.ndarray) -> tuple[float, float]:
    """(PSNR dB, SSIM) with the anchor's skimage calls (data_range 255; SSIM channel_axis 2)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity
    psnr = peak_signal_noise_ratio(truth_bgr, output_bgr, data_range=255)
    ssim = structural_similarity(truth_bgr, output_bgr, channel_axis=2, data_range=255)
    return float(psnr), float(ssim)


def score_rgb(image: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """:func:`score` for float RGB ``[H,W,3]`` in [0,1] (``image`` clipped), quantised to 8 bits by rounding."""
    output = np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)
    return score(np.rint(truth * 255).astype(np.uint8), output)
