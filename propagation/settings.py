"""Settings of a propagation run and of the temporal blend, declared once (:mod:`common.settings`).

The synthesis knobs and guide weights declare theirs on their dataclass fields
(:class:`~propagation.params.SynthesisParams`, :class:`~propagation.guides.GuideWeights`); the knobs
below are arguments of :func:`~propagation.sequence.propagate_video`, :func:`~propagation.blend.blend_video`
and :func:`~propagation.keyframe_files.load_keyframe_folder`. The Propagate, Temporal Blend and Load
Keyframes nodes and the ``propagate`` command generate their widgets and options from these.
"""

from __future__ import annotations

from ..common.settings import Setting, declare, settings_of
from .backends.select import CHOICES as BACKEND_CHOICES
from .guides import GuideWeights
from .params import SynthesisParams
from .poisson import GRADIENT_WEIGHTS
from .sequence import DIRECTION_MODES

# --------------------------------------------------------------------------- propagation
DIRECTION = declare("direction", "both", "Between keyframes: propagate both ways (needed by the temporal blend), or "
                                         "only forward / backward. Frames before the first keyframe are always "
                                         "reached backward, after the last forward.", choices=DIRECTION_MODES)
TEMPORAL_NNF_INIT = declare("temporal_nnf_init", True,
                            "Start each frame's patch correspondences from the previous frame's, carried by the "
                            "flow, and skip the coarse pyramid levels (faster at equal quality).")
BACKEND = declare("backend", "auto", "Patch-matching backend: auto = CUDA (CuPy) when available, else CPU (numba).",
                  choices=BACKEND_CHOICES)
#: Load Keyframes' interval (0 = indices from the file names), the ``propagate`` command's ``--interval``.
KEYFRAME_FILE_INTERVAL = declare("keyframe_interval", 0, "0 = frame indices from the file names; K > 0 = the sorted "
                                                         "files are frames 0, K, 2K, …", min=0, max=10000,
                                 flag="--interval")

_SYNTHESIS = settings_of(SynthesisParams)
_WEIGHTS = settings_of(GuideWeights)
#: The Propagate node's settings after its keyframe choice, in widget order.
PROPAGATE: tuple[Setting, ...] = (
    DIRECTION, *(_SYNTHESIS[name] for name in ("patch_size", "search_vote_iters", "patchmatch_iters", "uniformity",
                                               "pyramid_levels", "extra_pass_3x3", "patchmatch_seed")),
    *_WEIGHTS.values(), TEMPORAL_NNF_INIT, BACKEND)

# --------------------------------------------------------------------------- temporal blend
HISTOGRAM_BLEND = declare("histogram_blend", True, "Mix both candidates with the histogram-preserving blend (on in "
                                                   "Rerender); off = the per-pixel min-error selection only.",
                          flag="--no-histogram")
POISSON_BLEND = declare("poisson_blend", False, "Screened Poisson gradient blending: follows the selected candidate's "
                                                "gradients to reduce ghosting; may add flicker (off in the paper).",
                        flag="--poisson")
POISSON_LUMA_WEIGHT = declare("poisson_luma_weight", GRADIENT_WEIGHTS[0],
                              "Gradient weight of the L channel in the Poisson blend (Rerender 2.5).",
                              min=0.0, max=100.0, step=0.1)
POISSON_CHROMA_WEIGHT = declare("poisson_chroma_weight", GRADIENT_WEIGHTS[1],
                                "Gradient weight of the a and b channels in the Poisson blend (Rerender 0.5).",
                                min=0.0, max=100.0, step=0.1)
#: The Temporal Blend node's settings, in widget order.
BLEND: tuple[Setting, ...] = (HISTOGRAM_BLEND, POISSON_BLEND, POISSON_LUMA_WEIGHT, POISSON_CHROMA_WEIGHT)


def poisson_weights(luma: float, chroma: float) -> tuple[float, float, float]:
    """The ``(L, a, b)`` gradient weights of :func:`~propagation.blend.blend_video` from the two settings."""
    return (float(luma), float(chroma), float(chroma))
