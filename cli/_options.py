"""Command-line options generated from the settings the algorithm layer declares (:mod:`common.settings`).

Every option's ``dest`` is the setting's name (the node widget's name, the name errors use), so
``args.patch_size`` holds ``--patch-size`` and an error about the input ``patch_size`` can be reported
as the option the user typed (the parser's actions map each ``dest`` to its option strings). Numbers
outside the setting's ``[min, max]`` are refused by the parser, naming the option, as the node's widget
refuses them. BOOLEAN settings become switches:
``--name`` (store_true) when the default is False, ``--no-name`` (store_false) when it is True;
a declaration's ``flag`` keeps an established option string (``--seed``, ``--no-histogram``).

Example:
    >>> import argparse
    >>> from ..common.settings import declare
    >>> parser = argparse.ArgumentParser()
    >>> add_options(parser, [declare("patch_size", 5, "Patch side.", min=3, max=15)])
    >>> parser.parse_args(["--patch-size", "7"]).patch_size
    7
"""

from __future__ import annotations

import argparse
from typing import Any, Callable, Iterable, Mapping

from ..common.settings import Setting

_PARSERS: dict[str, Callable[[str], Any]] = {"INT": int, "FLOAT": float, "STRING": str, "COMBO": str}


def _typed(setting: Setting) -> Callable[[str], Any]:
    parse = _PARSERS[setting.kind]

    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if parse is int else 'a number'}, "
                                             f"got {text!r}") from None
        if not setting.in_range(value):
            raise argparse.ArgumentTypeError(f"expected {setting.allowed()}, got {text}")
        return value

    convert.__name__ = setting.kind.lower()
    return convert


def _help(setting: Setting) -> str:
    text = (setting.help or setting.tooltip).replace("%", "%%")
    if setting.kind != "BOOLEAN":
        return f"{text} (default: %(default)s)"
    return f"switch off: {text[:1].lower()}{text[1:]}" if setting.default and not setting.help else text


def add_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup, setting: Setting,
               flag: str | None = None, **override: Any) -> argparse.Action:
    """Add ``setting`` as an option of ``parser`` (``dest`` = its name); ``flag`` replaces the declared
    option string for this command, ``override`` any other ``add_argument`` keyword."""
    flag = flag or setting.option
    options: dict[str, Any] = {"dest": setting.name, "default": setting.default, "help": _help(setting)}
    if setting.kind == "BOOLEAN":
        options["action"] = "store_false" if setting.default else "store_true"
    elif setting.choices is not None:
        options.update(type=str, choices=list(setting.choices))
    else:
        options.update(type=_typed(setting), metavar=flag.lstrip("-").replace("-", "_").upper())
    options.update(override)
    return parser.add_argument(flag, **options)


def add_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, settings: Iterable[Setting],
                flags: Mapping[str, str] | None = None) -> None:
    """Add every setting of ``settings`` (see :func:`add_option`); ``flags`` maps a setting's name to the
    option string this command uses instead of the declared one."""
    flags = flags or {}
    for one in settings:
        add_option(parser, one, flags.get(one.name))

