"""Widgets shared by the keyframe nodes (sampling and constraint settings), and the ConstraintSettings they make.

One definition for every node that renders keyframes: the widgets (names, ranges, defaults,
tooltips) are those of the Rerender Cross-Frame Sampler. :func:`sampling_widgets` gives its
steps/cfg/sampler/scheduler/denoise widgets; :func:`constraint_widgets` everything of its inputs
except the sampling inputs (model, conditioning, VAE, frame, seed, steps, cfg, sampler, scheduler,
denoise) and the per-call inputs (reference, flow, latent, index overrides, resume switch). A setting added
to the Cross-Frame Sampler therefore appears on the Keyframe Renderer too, and
:func:`constraint_settings` passes every widget whose name is a
:class:`keyframe.render.ConstraintSettings` field straight through (windows come as
``<name>_start`` / ``<name>_end`` pairs).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

from ..keyframe.render import ConstraintSettings
from ..keyframe.windows import window

#: Inputs of the Cross-Frame Sampler that are not constraint settings.
SAMPLING_INPUTS = frozenset({"model", "positive", "negative", "vae", "frames", "frame_index", "seed", "steps",
                             "cfg", "sampler_name", "scheduler", "denoise"})
PER_CALL_INPUTS = frozenset({"reference", "flow", "latent", "anchor_index", "previous_index", "resume_pass2"})
#: Window widgets ``<name>_start`` / ``<name>_end`` → ConstraintSettings field ``<name>_period``.
WINDOWS = {"cross": False, "warp": False, "mask": True, "ada": False}  # name → strict


#: Sampling widgets taken over from the Cross-Frame Sampler, in its order.
SHARED_SAMPLING_WIDGETS = ("steps", "cfg", "sampler_name", "scheduler", "denoise")


def _sampler_spec() -> dict:
    from .crossframe import RerenderCrossFrameSampler

    return RerenderCrossFrameSampler.INPUT_TYPES()


def sampling_widgets() -> dict:
    """The steps, cfg, sampler_name, scheduler and denoise widgets of the Cross-Frame Sampler."""
    required = _sampler_spec()["required"]
    return {name: required[name] for name in SHARED_SAMPLING_WIDGETS}


def constraint_widgets() -> tuple[dict, dict]:
    """``(required, optional)`` widget declarations of the constraint settings, in the Cross-Frame
    Sampler's order, with its defaults and tooltips."""
    spec = _sampler_spec()
    skip = SAMPLING_INPUTS | PER_CALL_INPUTS
    required = {name: decl for name, decl in spec.get("required", {}).items() if name not in skip}
    optional = {name: decl for name, decl in spec.get("optional", {}).items() if name not in skip}
    return required, optional


def constraint_settings(values: Mapping[str, object]) -> ConstraintSettings:
    """A validated :class:`ConstraintSettings` from widget values (unknown names are ignored).

    Raises:
        InputError: a window fraction outside [0, 1], or a strength out of range.

    Example:
        >>> settings = constraint_settings({"warp_start": 1.0, "warp_end": 0.0, "mask_strength": 0.3})
        >>> settings.warp_period.enabled, settings.mask_strength, settings.mask_period.strict
        (False, 0.3, True)
    """
    fields = {f.name for f in dataclasses.fields(ConstraintSettings)}
    kwargs: dict[str, object] = {}
    for name, strict in WINDOWS.items():
        start, end = values.get(f"{name}_start"), values.get(f"{name}_end")
        if start is not None and end is not None:
            kwargs[f"{name}_period"] = window(name, float(start), float(end), strict=strict)
    for name, value in values.items():
        if name in fields:
            kwargs[name] = value
    return ConstraintSettings(**kwargs)
