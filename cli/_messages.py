"""Messages of a command-line run in the words the user typed: ``--frames``, not ``frame_load_cap``.

The algorithm packages name their inputs as the node widgets do (``frame_load_cap``,
``custom_width``). Every command declares its options with ``dest=<that input's name>``, so the
parser itself is the translation table: :class:`OptionNames` maps each ``dest`` to the option string
(the longest one: ``--output`` rather than ``-o``) and rewrites an
:class:`~common.errors.InputError` from its parts: the input's name, the same words in what was
expected and in the fixes, and fixes that only apply inside ComfyUI left out
(:class:`~common.errors.NodeFix`, or a fix that names a node input this command has no option for).
Log records (notes such as "frame_load_cap 90 is past the end") are rewritten the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import sys
from typing import Iterator

from ..common.errors import InputError, NodeFix, format_input_error

#: Words that look like input names: lower-case identifiers with an underscore (``frame_load_cap``).
_INPUT_WORD = re.compile(r"(?<![\w./-])([a-z][a-z0-9]*(?:_[a-z0-9]+)+)(?![\w/-])")


def command_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The sub-parser of ``command`` in a parser built by :func:`cli.build_parser`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[command]
    return parser


class OptionNames:
    """Input name → option string of one command, and the rewriting of messages with it.

    Args:
        parser: the command's parser (its optional arguments' ``dest`` are input names).
        node_inputs: input names that exist only on nodes unless this command has them; a fix
            naming one of them that this command cannot set is left out. Default: the inputs of
            every node of the pack (read when an error is first rewritten).

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> _ = parser.add_argument("--frames", dest="frame_load_cap", type=int, default=0)
        >>> OptionNames(parser, node_inputs={"select_every_nth"}).text("set frame_load_cap to 8")
        'set --frames to 8'
    """

    def __init__(self, parser: argparse.ArgumentParser, node_inputs: set[str] | None = None) -> None:
        self.options: dict[str, str] = {}
        for action in parser._actions:
            long_options = [option for option in action.option_strings if option.startswith("--")]
            if long_options and action.dest not in ("help", argparse.SUPPRESS):
                self.options[action.dest] = max(long_options, key=len)
        self._node_inputs = node_inputs

    @property
    def node_inputs(self) -> set[str]:
        if self._node_inputs is None:
            self._node_inputs = _node_input_names()
        return self._node_inputs

    def text(self, text: str, name: str | None = None) -> str:
        """``text`` with every input name this command has an option for replaced by the option
        (``name``, the error's own input, also when it is a single word such as ``crf``)."""
        def option(match: re.Match) -> str:
            return self.options.get(match.group(1), match.group(1))

        text = _INPUT_WORD.sub(option, str(text))
        if name and "_" not in name and name in self.options:
            text = re.sub(rf"(?<![\w./-]){re.escape(name)}(?![\w/-])", self.options[name], text)
        return text

    def applies(self, fix: str) -> bool:
        """False for advice a command-line user cannot follow: a :class:`NodeFix`, or a fix naming a
        node input this command has no option for."""
        if isinstance(fix, NodeFix):
            return False
        named = {match.group(1) for match in _INPUT_WORD.finditer(fix)}
        return not any(word in self.node_inputs and word not in self.options for word in named)

    def error(self, error: BaseException) -> str:
        """The one-line message of ``error`` as this command's user knows its inputs."""
        if isinstance(error, InputError) and error.name is not None:
            name = error.name
            fixes = [self.text(fix, name) for fix in error.fixes if self.applies(fix)]
            return format_input_error(self.options.get(name, name), self.text(error.expected, name), error.got,
                                      fixes)
        return self.text(str(error))


def _node_input_names() -> set[str]:
    """Names of every input of every node of the pack (the node modules import without ComfyUI)."""
    from .. import nodes

    names: set[str] = set()
    for node in nodes.NODE_CLASS_MAPPINGS.values():
        try:
            types = node.INPUT_TYPES()
        except Exception:  # a node that needs ComfyUI to list its choices: its names are not needed here
            continue
        for section in ("required", "optional"):
            names.update(types.get(section, {}))
    return names


class _NoteFormatter(logging.Formatter):
    def __init__(self, names: OptionNames) -> None:
        super().__init__()
        self.names = names

    def format(self, record: logging.LogRecord) -> str:
        prefix = "note: " if record.levelno < logging.ERROR else "error: "
        return prefix + self.names.text(record.getMessage())


class _TqdmSafeHandler(logging.StreamHandler):
    """Writes above an active progress bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm
        except ImportError:
            super().emit(record)
            return
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def log_notes(names: OptionNames) -> Iterator[logging.Handler]:
    """While the block runs, show the pack's warnings on stderr as ``note: …`` lines in the
    command's option names."""
    handler = _TqdmSafeHandler(sys.stderr)
    handler.setFormatter(_NoteFormatter(names))
    handler.setLevel(logging.WARNING)
    logger = logging.getLogger(__name__.split(".")[0])  # the pack's loggers: rerender_video.*
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
