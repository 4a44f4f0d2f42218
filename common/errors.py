"""Error types and message formatting.

Every error a user can trigger names the input at fault, what was expected, what was got, and how
to fix it, in the kornia style ``"Expected …, Got: …"``.
"""

from __future__ import annotations

from typing import Iterable


class RerenderError(Exception):
    """Base class of the errors this pack raises on purpose."""


class InputError(RerenderError, ValueError):
    """A node or function input is unusable; the message names the input and the fix."""


class MissingWeightsError(RerenderError, FileNotFoundError):
    """A model file the user must place by hand is absent; the message names folder and file names."""


def format_input_error(name: str, expected: str, got: object, fixes: str | Iterable[str] = ()) -> str:
    """Build the standard message: ``"<name>: Expected <expected>, Got: <got>. Fix: …"``.

    Args:
        name: the input (widget, socket or argument) at fault, e.g. ``"frame_load_cap"``.
        expected: what would have been valid.
        got: the offending value or a description of it.
        fixes: one fix or several; several are listed as ``(1) … (2) …``.

    Example:
        >>> format_input_error("patch_size", "an odd integer >= 3", 4, "use 5")
        'patch_size: Expected an odd integer >= 3, Got: 4. Fix: use 5.'
    """
    message = f"{name}: Expected {expected}, Got: {got}."
    fix_list = [fixes] if isinstance(fixes, str) else list(fixes)
    if len(fix_list) == 1:
        message += f" Fix: {fix_list[0].rstrip('.')}."
    elif fix_list:
        message += " Fixes: " + " ".join(f"({i}) {fix.rstrip('.')}." for i, fix in enumerate(fix_list, 1))
    return message


def input_error(name: str, expected: str, got: object, fixes: str | Iterable[str] = ()) -> InputError:
    """Return an :class:`InputError` with the standard message (see :func:`format_input_error`)."""
    return InputError(format_input_error(name, expected, got, fixes))
