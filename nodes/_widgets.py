"""Node widgets generated from the settings the algorithm layer declares (:mod:`common.settings`).

:func:`widget` turns one :class:`~common.settings.Setting` into its ``INPUT_TYPES`` entry; nodes list
the settings they show, in the order of their widgets (saved UI workflows store widget values by
position, so a node's order never changes; new settings go last).

Example:
    >>> from ..common.settings import declare
    >>> widget(declare("patch_size", 5, "Patch side.", min=3, max=15, step=2))
    ('INT', {'default': 5, 'min': 3, 'max': 15, 'step': 2, 'tooltip': 'Patch side.'})
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from ..common.settings import Setting


def widget(setting: Setting, *, choices: Sequence[Any] | None = None, **override: Any) -> tuple:
    """The ``INPUT_TYPES`` entry ``(type, options)`` of ``setting``.

    Args:
        setting: the declaration.
        choices: a COMBO's values when the node supplies them (e.g. ComfyUI's sampler list).
        override: widget options this node sets differently (e.g. ``tooltip`` with a node-specific
            sentence, ``control_after_generate``).
    """
    options: dict[str, Any] = {"default": setting.default}
    for key in ("min", "max", "step"):
        value = getattr(setting, key)
        if value is not None:
            options[key] = value
    options.update(setting.widget)
    options["tooltip"] = setting.tooltip
    options.update(override)
    if setting.kind == "COMBO":
        values = choices if choices is not None else setting.choices
        if values is None:
            raise ValueError(f"setting {setting.name}: a COMBO widget needs its choices")
        return (list(values), options)
    return (setting.kind, options)


def widgets(settings: Iterable[Setting]) -> dict[str, tuple]:
    """``{name: widget(setting)}`` for ``settings``, in the given order."""
    return {one.name: widget(one) for one in settings}


def mask_inputs(carried_by: str = "the optical flow") -> dict[str, tuple]:
    """The optional region inputs of a node that restyles only a region (issue 16): ``mask`` (MASK) and the
    ``mask_grow`` and ``feather`` widgets (:data:`common.masks.MASK_SETTINGS`), for the ``optional`` section
    (after the node's other widgets, so saved workflows keep their widget positions)."""
    from ..common.masks import MASK_SETTINGS

    tooltip = ("Optional region to restyle (1 = restyle, 0 = keep the source): one mask per frame [N,H,W] (a "
               "segmentation node, Rerender Propagate Mask), or one [1,H,W] for the first frame, carried through "
               f"the clip by {carried_by}. Outside the mask grown by mask_grow plus feather pixels the output is "
               "the source video, bit for bit.")
    return {"mask": ("MASK", {"tooltip": tooltip}), **widgets(MASK_SETTINGS)}
