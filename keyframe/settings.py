"""Settings of the keyframe stage, declared once: sampling, the cross-frame constraints, ``E*``.

The Cross-Frame Sampler, the Keyframe Renderer and the Fidelity Encode nodes generate their widgets
from these declarations (``nodes/_keyframe_widgets.py``); what each constraint does and why the
defaults are what they are: ``keyframe/ALGORITHM.md``.

* :data:`SAMPLING`: ``steps``, ``cfg``, ``sampler_name``, ``scheduler``, ``denoise`` (and :data:`SEED`),
  with ComfyUI's KSampler meaning; ``sampler_name`` and ``scheduler`` list ComfyUI's names at run time.
* :class:`ConstraintSettings`: the windows, strengths and switches of the constraints (paper §4.1),
  each field with its setting; windows come as two inputs ``<name>_start`` / ``<name>_end``.
* :data:`FIDELITY_STRENGTH`, :data:`FIDELITY_THRESHOLD`: ``λ_E`` and the artefact threshold of ``E*``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

import torch

from ..common.settings import check_values, declare, field_values, setting, settings_field
from .fidelity import DEFAULT_STRENGTH, DEFAULT_THRESHOLD
from .layout import DEFAULT_DEPTH, MAX_DEPTH
from .windows import ADA_PERIOD, CROSS_PERIOD, MASK_PERIOD, WARP_PERIOD, StepWindow, window, window_settings

#: Values of ``ConstraintSettings.rough_render`` (``keyframe/ALGORITHM.md`` §6).
ROUGH_RENDERS = ("early", "full")

# --------------------------------------------------------------------------- sampling
SEED = declare("seed", 0, "Noise seed; keep it the same for every keyframe (same noise = more consistent keyframes).",
               min=0, max=0xFFFFFFFFFFFFFFFF)
STEPS = declare("steps", 20, "Sampled steps (the reference uses 20). Keep the anchor's value.", min=1, max=1000)
CFG = declare("cfg", 7.5, "Classifier-free guidance scale (reference 7.5).", min=0.0, max=100.0, step=0.1,
              round=0.01)
SAMPLER_NAME = declare(
    "sampler_name", "ddim",
    "ddim (default) and euler run the pack's deterministic DDIM loop (eta 0 = Euler in sigma-space), lcm (LCM, "
    "Hyper-SD, Lightning, Turbo models at 4-8 steps) the same loop with LCM steps: every constraint works, and pass 2 "
    "resumes from pass 1. Any other ComfyUI sampler works for the anchor and for "
    "cross-frame attention, AdaIN and shape-aware fusion (they hook the model), but not for pixel-aware fusion "
    "(it edits the latent between steps): switch pixel_fusion off to use one.", kind="COMBO")
SCHEDULER = declare("scheduler", "ddim_uniform",
                    "Sigma schedule; ddim_uniform matches the reference's uniform DDIM timesteps.", kind="COMBO")
DENOISE = declare("denoise", 0.75, "Denoise strength (SDEdit start): 1 = re-render from noise, lower keeps more of "
                                   "the frame. Reference default 0.75.", min=0.01, max=1.0, step=0.01)
#: The sampling settings every keyframe node shows, in widget order.
SAMPLING = (STEPS, CFG, SAMPLER_NAME, SCHEDULER, DENOISE)

# --------------------------------------------------------------------------- E*
FIDELITY_STRENGTH = declare("strength", DEFAULT_STRENGTH, "lambda_E: how much of the estimated loss to add back "
                                                          "(1 = the paper's value; 0 = plain VAE Encode).",
                            min=0.0, max=2.0, step=0.05)
FIDELITY_THRESHOLD = declare("threshold", DEFAULT_THRESHOLD,
                             "Artefact threshold: mean RGB error of the decoded compensated latent, in [-1,1] units "
                             "(0.25 = about 32/255). Lower = compensate in fewer places.", min=0.01, max=2.0, step=0.01)

# --------------------------------------------------------------------------- constraints
ROUGH_RENDER_TOOLTIP = (
    "Pixel-aware fusion fills the fused reference with a rough render of this keyframe where the anchor AND the "
    "previous keyframe are occluded. early (default): pass 1 stops where pixel-aware fusion starts and its x0 "
    "prediction there (step 10 of 20, blurrier, before AdaIN) is the rough render - 20 model steps per keyframe, "
    "as one KSampler run. full (the paper's): pass 1 runs to the end for it - 29 model steps at 20 steps. The "
    "rough render reaches the result only around those doubly occluded regions and through the VAE, so the two "
    "differ very slightly; the rest of the method is the same.")

#: Window name → its field and whether it is strict (``keyframe/windows.py``).
WINDOWS = {"cross": False, "warp": False, "mask": True, "ada": False}


@dataclass(frozen=True)
class ConstraintSettings:
    """Windows, strengths and switches of the cross-frame constraints (paper §4.1; ``keyframe/ALGORITHM.md``).

    Every field a user sets declares its setting (default, range, tooltip); the nodes' widgets are
    generated from them and :meth:`from_inputs` builds the object from widget values.

    Attributes:
        cross_period, warp_period, mask_period, ada_period: :class:`~keyframe.windows.StepWindow`
            of cross-frame attention, shape-aware fusion, pixel-aware fusion (strict) and AdaIN.
        mask_strength: pixel-fusion weight ``w = mask_strength·V_p`` (0.5).
        inner_strength: noise-direction rescale in flat regions (0.9; web UI "detail level").
        smooth_boundary: use the boundary map ``ρ`` (True); False → ``ρ ≡ 1``.
        loose_cfattn: cross-frame attention only in output blocks 6–11.
        style_update_freq: keyframes between updates of the "previous" features (1 = every one).
        pixel_fusion: pass 2 with pixel-aware fusion (False → one pass per keyframe).
        fidelity_strength, fidelity_threshold: ``λ_E`` and the artefact threshold of ``E*``.
        rough_render: ``"early"`` (default: pass 1 stops at the pixel-fusion window; ``Ī'`` from its
            x̂0 there; one plain run's model steps in all) or ``"full"`` (pass 1 to the end, the paper's).
        feature_dtype: storage dtype of attention features (fp16).
        offload: feature storage, ``"auto"``, ``"cpu"`` or ``"device"`` (:class:`FeatureStore`).
        cfattn_depth: transformer layers per decoder block that take cross-frame attention (the first
            ones; SDXL's 1/4-resolution blocks have 10, its 1/2 ones 2, SD1.5's one): memory against
            consistency.

    Raises:
        InputError: a value outside its setting's range or choices, naming the input.

    Example:
        >>> settings = ConstraintSettings.from_inputs({"warp_start": 1.0, "warp_end": 0.0, "mask_strength": 0.3})
        >>> settings.warp_period.enabled, settings.mask_strength, settings.mask_period.strict
        (False, 0.3, True)
    """

    cross_period: StepWindow = settings_field(CROSS_PERIOD, *window_settings(
        "cross", CROSS_PERIOD, "Cross-frame attention window start (fraction of the sampled steps, inclusive).",
        "Cross-frame attention window end (inclusive). start > end = off."))
    warp_period: StepWindow = settings_field(WARP_PERIOD, *window_settings(
        "warp", WARP_PERIOD, "Shape-aware fusion window start (inclusive).",
        "Shape-aware fusion window end (inclusive; 0.1 = steps 0-2 of 20). start > end = off."))
    mask_period: StepWindow = settings_field(MASK_PERIOD, *window_settings(
        "mask", MASK_PERIOD, "Pixel-aware fusion window start (strict: steps after it).",
        "Pixel-aware fusion window end (strict; 0.5-0.8 = steps 11-15 of 20). Pass 2 resumes from pass 1 at the "
        "window's first step."))
    ada_period: StepWindow = settings_field(ADA_PERIOD, *window_settings(
        "ada", ADA_PERIOD, "AdaIN window start (inclusive; 0.8 = steps 16-19 of 20).",
        "AdaIN window end (inclusive). start > end = off."))
    mask_strength: float = setting(0.5, "Pixel-aware fusion weight where the fused reference is valid (reference 0.5).",
                                   min=0.0, max=1.0, step=0.05)
    inner_strength: float = setting(0.9, "Detail level of pixel-aware fusion: how much of the model's own noise "
                                         "direction is kept inside valid regions (reference 0.9).",
                                    min=0.5, max=1.0, step=0.01)
    smooth_boundary: bool = setting(True, "Soften the fusion at occlusion-mask boundaries (reference default on).")
    loose_cfattn: bool = setting(False, "Cross-frame attention only in the decoder layers at 1/2 and 1/1 of the "
                                        "latent resolution (SD1.5 output blocks 6-11, SDXL 3-5): closer to the input "
                                        "video, less ghosting. Keep the anchor's setting.")
    style_update_freq: int = setting(1, "Update the 'previous' attention reference every N keyframes (counts "
                                        "keyframes, not frames). Larger = less error accumulation, staler style.",
                                     min=1, max=1000)
    pixel_fusion: bool = setting(True, "Pixel-aware fusion (needs a second, partial pass and a FLOW). Off = one pass "
                                       "per keyframe.")
    fidelity_strength: float = FIDELITY_STRENGTH.default
    fidelity_threshold: float = FIDELITY_THRESHOLD.default
    feature_dtype: torch.dtype = torch.float16
    offload: str = "auto"
    rough_render: str = setting("early", ROUGH_RENDER_TOOLTIP, choices=ROUGH_RENDERS)
    cfattn_depth: int = setting(
        DEFAULT_DEPTH, "SDXL: how many transformer layers of each decoder block take cross-frame attention (its "
        "1/4-resolution blocks have 10, its 1/2 ones 2). More = more consistent keyframes and a larger feature store "
        "per keyframe (1024x1024, 20 steps: about 0.9 GB at 1, 2.8 GB at 5, 4.4 GB at 10). SD1.5 has one layer per "
        "block: no effect. Keep the anchor's setting.", min=1, max=MAX_DEPTH)

    def __post_init__(self) -> None:
        if not self.mask_period.strict:
            object.__setattr__(self, "mask_period", replace(self.mask_period, strict=True))
        check_values(self)

    @classmethod
    def from_inputs(cls, values: Mapping[str, Any]) -> "ConstraintSettings":
        """Settings from input values by name (widgets; ``<name>_start`` / ``<name>_end`` make a window;
        names that are no setting are ignored, missing ones keep their default).

        Raises:
            InputError: a window end outside [0, 1], a value outside its range or choices.
        """
        kwargs: dict[str, Any] = field_values(cls, values)
        for name, strict in WINDOWS.items():
            start, end = values.get(f"{name}_start"), values.get(f"{name}_end")
            if start is not None and end is not None:
                kwargs[f"{name}_period"] = window(name, float(start), float(end), strict=strict)
        return cls(**kwargs)

