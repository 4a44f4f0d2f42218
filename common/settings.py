"""Settings declared once: each knob's default, range, step, choices and tooltip in one :class:`Setting`.

The algorithm layer declares a setting where its default lives: on the dataclass field it fills
(:func:`setting`, read back with :func:`settings_of`) or beside the function that takes it
(:func:`declare`). The node widgets (``nodes/_widgets.py``) and the command-line options
(``cli/_options.py``) are generated from these declarations, so a default, a range or a tooltip is
written once and the node, the CLI and the dataclass cannot disagree.

A setting's ``name`` is the input name everywhere: the node widget, the CLI option's ``dest`` and the
name :func:`common.errors.input_error` reports, so an error raised for ``patch_size`` can be traced
to the widget ``patch_size`` or to the option ``--patch-size`` the user typed.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Knobs:
    ...     radius: int = setting(5, "Blur radius in pixels.", min=0, max=64)
    >>> Knobs().radius, settings_of(Knobs)["radius"].max
    (5, 64)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import input_error

#: Widget kinds (ComfyUI's input types; COMBO is a list of choices).
KINDS = ("INT", "FLOAT", "BOOLEAN", "STRING", "COMBO")
#: Key of a dataclass field's metadata that holds its settings (a tuple: a window is two settings).
METADATA_KEY = "rerender_settings"


@dataclass(frozen=True)
class Setting:
    """One user-facing setting.

    Attributes:
        name: the input name: node widget, CLI ``dest``, the name errors use.
        kind: one of :data:`KINDS`.
        default: the default value (of the kind's Python type; a COMBO's is one of ``choices``).
        tooltip: the node tooltip; also the CLI help unless ``help`` is given.
        min, max, step: numeric range and widget step (``None``: none). The CLI refuses values outside
            ``[min, max]`` as the widget does.
        choices: a COMBO's values (``None`` when the node supplies them at run time, e.g. ComfyUI's
            sampler names).
        field: the dataclass field it fills (set by :func:`settings_of`; ``None`` for a setting that is
            no single field, e.g. one end of a step window, or that is not a dataclass field).
        flag: CLI option string; default ``--name-with-dashes``, and ``--no-name-with-dashes`` for a
            BOOLEAN whose default is True.
        help: CLI help, when the tooltip speaks of widgets a terminal user does not see.
        widget: further widget options (``round``, ``advanced``, ``multiline``, ``control_after_generate``).
    """

    name: str
    kind: str
    default: Any
    tooltip: str
    min: float | None = None
    max: float | None = None
    step: float | None = None
    choices: tuple | None = None
    field: str | None = None
    flag: str | None = None
    help: str | None = None
    widget: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"setting {self.name}: kind {self.kind!r} is not one of {KINDS}")
        if self.choices is not None and self.default not in self.choices:
            raise ValueError(f"setting {self.name}: default {self.default!r} is not one of {self.choices}")

    @property
    def option(self) -> str:
        """The CLI option string, e.g. ``--patch-size`` or ``--no-temporal-nnf-init``."""
        if self.flag:
            return self.flag
        dashed = self.name.replace("_", "-")
        return f"--no-{dashed}" if self.kind == "BOOLEAN" and self.default is True else f"--{dashed}"

    def allowed(self) -> str | None:
        """The allowed numbers as text (``a value in [3, 15]``, ``a value >= 1``), ``None`` without a range."""
        low, high = self.min, self.max
        if low is not None and high is not None:
            return f"a value in [{_number(low)}, {_number(high)}]"
        if low is not None or high is not None:
            return f"a value >= {_number(low)}" if low is not None else f"a value <= {_number(high)}"
        return None

    def in_range(self, value: Any) -> bool:
        """True when ``value`` is inside ``[min, max]`` (always, without a range)."""
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _kind_of(default: Any, choices: tuple | None) -> str:
    if isinstance(default, bool):
        return "BOOLEAN"
    if isinstance(default, int):
        return "INT"
    if isinstance(default, float):
        return "FLOAT"
    return "COMBO" if choices is not None else "STRING"


def declare(name: str, default: Any, tooltip: str, *, kind: str | None = None, min: float | None = None,
            max: float | None = None, step: float | None = None, choices: tuple | list | None = None,
            flag: str | None = None, help: str | None = None, field: str | None = None,
            **widget: Any) -> Setting:
    """A :class:`Setting` for a knob that is not a dataclass field (the kind follows from ``default``:
    bool → BOOLEAN, int → INT, float → FLOAT, str → COMBO with ``choices``, else STRING).

    Example:
        >>> declare("direction", "both", "Which way.", choices=("both", "forward")).kind
        'COMBO'
    """
    choices = tuple(choices) if choices is not None else None
    return Setting(name=name, kind=kind or _kind_of(default, choices), default=default, tooltip=tooltip, min=min,
                   max=max, step=step, choices=choices, field=field, flag=flag, help=help, widget=dict(widget))


def setting(default: Any, tooltip: str, *, name: str | None = None, **options: Any) -> Any:
    """A dataclass field whose default is ``default``, declared as a setting (options as :func:`declare`).

    ``name`` is the input name when it differs from the field's (e.g. field ``colour``, input
    ``colour_weight``). Read the settings back with :func:`settings_of`.
    """
    declared = declare(name or "", default, tooltip, **options)
    return dataclasses.field(default=default, metadata={METADATA_KEY: (declared,)})


def settings_field(default: Any, *declared: Setting) -> Any:
    """A dataclass field filled from several settings (e.g. a step window from ``<name>_start`` and
    ``<name>_end``); the class itself composes the value (see ``ConstraintSettings.from_inputs``)."""
    return dataclasses.field(default=default, metadata={METADATA_KEY: tuple(declared)})


def settings_of(cls: type) -> dict[str, Setting]:
    """The settings declared on the fields of dataclass ``cls``, input name → :class:`Setting`, in field order.

    A field of one setting gives it ``field`` = the field name (and its name when none was given).
    """
    found: dict[str, Setting] = {}
    for item in dataclasses.fields(cls):
        declared = item.metadata.get(METADATA_KEY, ())
        for one in declared:
            if len(declared) == 1:
                one = dataclasses.replace(one, name=one.name or item.name, field=item.name)
            found[one.name] = one
    return found


def field_values(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """``{field: value}`` for every single-field setting of ``cls`` whose input name is in ``values``
    (other names are ignored), to build ``cls(**field_values(cls, values))``. Numbers and switches are
    converted to the setting's kind (a FLOAT widget may deliver an int).

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True)
        ... class Weights:
        ...     colour: float = setting(6.0, "Colour guide.", name="colour_weight")
        >>> field_values(Weights, {"colour_weight": 2.0, "other": 1})
        {'colour': 2.0}
    """
    return {one.field: _CONVERT.get(one.kind, _same)(values[name]) for name, one in settings_of(cls).items()
            if one.field is not None and name in values}


def _same(value: Any) -> Any:
    return value


_CONVERT = {"INT": int, "FLOAT": float, "BOOLEAN": bool}


def check_values(instance: Any) -> None:
    """Raise unless every single-field setting of dataclass ``instance`` holds an allowed value: one of its
    ``choices``, inside its ``[min, max]`` (the same rule the widget and the CLI option enforce).

    Raises:
        InputError: naming the setting's input name, the allowed values and the default.
    """
    for name, one in settings_of(type(instance)).items():
        if one.field is None:
            continue
        value = getattr(instance, one.field)
        if one.choices is not None:
            if value not in one.choices:
                raise input_error(name, f"one of {', '.join(map(str, one.choices))}", value,
                                  f"use {one.default} (the default)")
        elif one.kind in ("INT", "FLOAT"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise input_error(name, "a number", repr(value), f"use {_number(one.default)} (the default)")
            if not one.in_range(value):
                raise input_error(name, one.allowed(), _number(value), f"use {_number(one.default)} (the default)")
