"""Error types and message formatting.

Every error a user can trigger names the input at fault, what was expected, what was got, and how
to fix it, in the kornia style ``"Expected …, Got: …"``.
"""

from __future__ import annotations

import errno
from typing import Iterable


class RerenderError(Exception):
    """Base class of the errors this pack raises on purpose."""


class InputError(RerenderError, ValueError):
    """A node or function input is unusable; the message names the input and the fix.

    Built by :func:`input_error`, it also keeps the parts of its message, so an adapter can name
    the input as its user knows it (the command line's ``--frames`` for ``frame_load_cap``) and
    drop the fixes that do not apply there (:class:`NodeFix`).

    Attributes:
        name: the input at fault (widget, socket or argument name), or ``None``.
        expected: what would have been valid.
        got: the offending value or a description of it.
        fixes: the fixes, in order.
    """

    def __init__(self, message: str, name: str | None = None, expected: str = "", got: object = "",
                 fixes: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.name, self.expected, self.got, self.fixes = name, expected, got, tuple(fixes)


class NodeFix(str):
    """A fix that only applies inside ComfyUI (a widget, socket or button of a node).

    It reads as a plain string in messages; the command line leaves it out.

    Example:
        >>> format_input_error("video", "an existing video file", "clip.mp4", [NodeFix("upload it"), "check the path"])
        'video: Expected an existing video file, Got: clip.mp4. Fixes: (1) upload it. (2) check the path.'
    """


class OutputError(InputError):
    """The output could not be written (read-only folder, disk full, …); the message names where and the fix."""


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
    fix_list = _fix_list(fixes)
    if len(fix_list) == 1:
        message += f" Fix: {fix_list[0].rstrip('.')}."
    elif fix_list:
        message += " Fixes: " + " ".join(f"({i}) {fix.rstrip('.')}." for i, fix in enumerate(fix_list, 1))
    return message


def _fix_list(fixes: str | Iterable[str]) -> list[str]:
    return [fixes] if isinstance(fixes, str) else list(fixes)


def input_error(name: str, expected: str, got: object, fixes: str | Iterable[str] = (),
                kind: type[InputError] = InputError) -> InputError:
    """Return an :class:`InputError` (or the subclass ``kind``) with the standard message (see
    :func:`format_input_error`) and its parts as attributes."""
    fix_list = _fix_list(fixes)
    return kind(format_input_error(name, expected, got, fix_list), name, expected, got, fix_list)


def write_error(name: str, path: object, error: OSError, writing: str = "the file") -> OutputError:
    """An :class:`OutputError` for an ``OSError`` met while creating or writing ``path``.

    Args:
        name: the input that chose the location (``"output"``, ``"filename_prefix"``).
        path: the file or folder that could not be written.
        error: the ``OSError`` raised (its ``strerror`` is quoted).
        writing: what was being written, for the message.

    Example:
        >>> str(write_error("output", "/ro/out.mp4", OSError(30, "Read-only file system")))
        'output: Expected a folder where the file can be written, Got: /ro/out.mp4 (Read-only file system). Fixes: ...'
    """
    reason = error.strerror or str(error) or error.__class__.__name__
    if error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        fixes = ["free disk space on that drive", "write to a folder on another drive"]
    elif error.errno == errno.EFBIG:
        fixes = ["write to a drive that takes larger files (FAT32 stops at 4 GiB)", "save the video in parts"]
    else:
        fixes = ["choose a folder you may write to (not on a read-only drive)", "check the path"]
    return input_error(name, f"a folder where {writing} can be written", f"{path} ({reason})", fixes,
                       kind=OutputError)
