"""Settings of optical-flow estimation, declared once (:mod:`common.settings`).

The Estimate Flow node and the ``flow`` and ``propagate`` commands generate their widgets and options
from these; the defaults live with the algorithms (:data:`flow.dis.DEFAULT_PRESET`,
:data:`flow.occlusion.ALPHA`, :data:`flow.occlusion.BETA`).
"""

from __future__ import annotations

from ..common.settings import declare
from .dis import DEFAULT_PRESET, PRESETS
from .occlusion import ALPHA, BETA
from .pairs import PAIR_MODES
from .raft import RAFT_MODELS

BACKEND = declare("backend", "dis", "dis: OpenCV DIS on the CPU, no weights, leaves the GPU to the diffusion model. "
                                    "raft_small / raft_large: torchvision RAFT (more accurate on large motion) with "
                                    "weights from models/optical_flow, e.g. raft_small_C_T_V2-01064c6d.pth or "
                                    "raft_large_C_T_SKHT_V2-ff5fadd5.pth.", choices=("dis", *RAFT_MODELS),
                  help="dis (OpenCV, CPU, no weights; default) or a torchvision RAFT")
DIS_PRESET = declare("dis_preset", DEFAULT_PRESET, "DIS speed/accuracy preset: medium for renders, fast or ultrafast "
                                                   "for quick previews (more false occlusions). Used by backend dis.",
                     choices=tuple(PRESETS), flag="--preset")
PAIR_MODE = declare("pair_mode", "consecutive", "consecutive: frame i with i+1 (propagation). keyframes: each frame "
                                                "with its previous and next keyframe, each keyframe with the previous "
                                                "one and the anchor (keyframe stage). consecutive+keyframes: both.",
                    choices=PAIR_MODES)
OCCLUSION_ALPHA = declare("occlusion_alpha", ALPHA,
                          "Relative threshold α of the forward–backward check |w_f + w_b|² > α(|w_f|² + |w_b|²) "
                          "+ β (squared, as in Sundaram et al. 2010; Rerender's code uses the unsquared norms). "
                          "Larger = fewer occlusions on fast motion. Paper: 0.01.",
                          min=0.0, max=1.0, step=0.001, flag="--alpha", advanced=True)
OCCLUSION_BETA = declare("occlusion_beta", BETA, "Absolute threshold β in px² of the same check: the squared "
                                                 "round-trip error tolerated for still pixels (0.5 ≈ 0.7 px). Paper: "
                                                 "0.5.", min=0.0, max=100.0, step=0.05, flag="--beta", advanced=True)
