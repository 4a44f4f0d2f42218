"""Widgets of the keyframe nodes (sampling and constraint settings), generated from ``keyframe/settings.py``.

The Cross-Frame Sampler and the Keyframe Renderer show the same sampling and constraint widgets:
:func:`sampling_widgets` (steps, cfg, sampler_name, scheduler, denoise) and :func:`constraint_widgets`
(every :class:`~keyframe.settings.ConstraintSettings` setting, in field order). Both come from the
declarations, so a setting added there appears on both nodes with one default, range and tooltip.

Saved UI workflows store widget values by position: a new constraint setting must be an optional
input (listed in :data:`OPTIONAL_CONSTRAINTS`, after the others) so the stored values keep their places.
"""

from __future__ import annotations

from ..common.settings import settings_of
from ..keyframe.settings import SAMPLING, ConstraintSettings
from ._keyframe_adapter import sampler_names, scheduler_names
from ._widgets import widget

#: Constraint settings shown as optional inputs (added after the first release; they go last).
OPTIONAL_CONSTRAINTS = ("rough_render", "cfattn_depth")


def sampling_widgets() -> dict:
    """The steps, cfg, sampler_name, scheduler and denoise widgets, with ComfyUI's sampler and scheduler names."""
    choices = {"sampler_name": sampler_names(), "scheduler": scheduler_names()}
    return {one.name: widget(one, choices=choices.get(one.name)) for one in SAMPLING}


def constraint_widgets() -> tuple[dict, dict]:
    """``(required, optional)`` widgets of the constraint settings, in :class:`ConstraintSettings` field order."""
    required, optional = {}, {}
    for name, one in settings_of(ConstraintSettings).items():
        (optional if name in OPTIONAL_CONSTRAINTS else required)[name] = widget(one)
    return required, optional
