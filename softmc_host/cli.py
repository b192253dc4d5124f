"""The one command-line vocabulary every ``python -m ...`` command of the toolkit is built from.

Every command is a thin shell over a library function; this module gives the shells the same
words (the table in the README lists them):

* ``-o/--out PATH`` for what the command writes (:func:`add_out`);
* ``-q/--quiet`` and ``-v/--verbose`` (repeatable) for how much it logs, and
  :func:`configure_logging` to set up :mod:`logging` from them (libraries log, never print);
* ``--config FILE.toml`` wherever there are many flags (:func:`add_config`,
  :func:`parse_args`): the file's keys are the long flag names (``max-drop`` or
  ``max_drop``), flags on the command line override it, and an unknown key is an error;
* :func:`fail`: the one-line ``error: ...`` and exit status 2 of bad input.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from softmc_host.files import read_toml

__all__ = [
    "ConfigFileError",
    "add_out",
    "add_verbosity",
    "add_config",
    "parse_args",
    "configure_logging",
    "fail",
    "EXIT_BAD_INPUT",
]

#: Exit status of a command refused for bad input (argparse uses the same).
EXIT_BAD_INPUT = 2


class ConfigFileError(ValueError):
    """A ``--config`` file that cannot be read or names an unknown or malformed option."""


def add_out(parser: argparse.ArgumentParser, default: Optional[str], help: str, *, required: bool = False) -> None:
    """Add ``-o/--out``: the file or directory the command writes."""
    shown = f" (default {default})" if default is not None else ""
    parser.add_argument("-o", "--out", default=default, required=required, metavar="PATH", help=help + shown)


def add_verbosity(parser: argparse.ArgumentParser) -> None:
    """Add ``-q/--quiet`` (warnings and errors only, no progress bars) and ``-v/--verbose`` (repeatable)."""
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only; no progress bars")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")


def add_config(parser: argparse.ArgumentParser, what: str = "options") -> None:
    """Add ``--config FILE.toml``: a TOML file of the command's long options; flags override it."""
    parser.add_argument(
        "--config",
        metavar="FILE.toml",
        help=f"TOML file of {what}: keys are the long flag names (e.g. max-drop = 0.02); flags override it",
    )


def _option_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Long option name (without dashes, ``-`` and ``_`` both accepted) -> its action."""
    actions: dict[str, argparse.Action] = {}
    for action in parser._actions:  # argparse has no public list of a parser's actions
        for opt in action.option_strings:
            if opt.startswith("--") and opt not in ("--help", "--config"):
                actions[opt[2:]] = action
                actions[opt[2:].replace("-", "_")] = action
    return actions


def _config_argv(parser: argparse.ArgumentParser, path: str, section: Optional[str]) -> list[str]:
    """The command-line tokens a ``--config`` file stands for."""
    doc = read_toml(path, "config file", ConfigFileError)
    if section is not None and isinstance(doc.get(section), dict):
        doc = doc[section]
    actions = _option_actions(parser)
    argv: list[str] = []
    for key, value in doc.items():
        action = actions.get(key)
        if action is None:
            known = ", ".join(sorted(k for k in actions if "_" not in k))
            raise ConfigFileError(f"config file {path!r}: unknown option {key!r} (known: {known})")
        flag = action.option_strings[-1]
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            if not isinstance(value, bool):
                raise ConfigFileError(f"config file {path!r}: {key} must be true or false, got {value!r}")
            if value == isinstance(action, argparse._StoreTrueAction):
                argv.append(flag)
            continue
        if isinstance(action, argparse._CountAction):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigFileError(f"config file {path!r}: {key} must be a count, got {value!r}")
            argv += [flag] * value
            continue
        if isinstance(value, dict):
            raise ConfigFileError(f"config file {path!r}: {key} must be a value or a list, not a table")
        if isinstance(action, argparse._AppendAction):
            items = value if isinstance(value, list) else [value]
            for item in items:
                argv += [flag, _token(item)]
            continue
        if isinstance(value, list):
            if action.nargs in ("+", "*") or isinstance(action.nargs, int):
                argv += [flag, *(_token(v) for v in value)]
            else:
                argv += [flag, ",".join(_token(v) for v in value)]
            continue
        argv += [flag, _token(value)]
    return argv


def _token(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        raise ConfigFileError(f"nested value {value!r} in a config file")
    return str(value)


def parse_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None, *,
               section: Optional[str] = None) -> argparse.Namespace:
    """Parse ``argv`` with the options of a ``--config`` file (if given) placed before them.

    The file's values pass through the same argparse types and choices as flags do, so a bad
    value there gets the same one-line error; flags given on the command line win. ``section``
    names an optional table of the file to read instead of its top level.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(args_list)
    if known.config is None:
        return parser.parse_args(args_list)
    try:
        config_argv = _config_argv(parser, known.config, section)
    except ConfigFileError as exc:
        parser.error(str(exc))
    return parser.parse_args(config_argv + args_list)


class _Formatter(logging.Formatter):
    """``message`` for INFO and DEBUG, ``level: message`` for warnings and errors."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {text}"
        return text


def configure_logging(verbose: int = 0, quiet: bool = False, stream: Any = None) -> int:
    """Set up the ``logging`` root for a command: INFO by default, WARNING with ``quiet``, DEBUG with ``-vv``.

    Returns the level set. Commands call this once; libraries only call ``logging.getLogger``.
    Repeated calls (tests run many commands in one process) replace the handler.
    """
    level = logging.WARNING if quiet else (logging.INFO if verbose < 2 else logging.DEBUG)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_eden_cli", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(_Formatter("%(message)s"))
    handler._eden_cli = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    return level


def fail(message: str, status: int = EXIT_BAD_INPUT) -> int:
    """Print ``error: MESSAGE`` (one line) to stderr and return the exit status for ``main``."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    return status


def existing_file(text: str) -> Path:
    """argparse ``type`` for an input file that must exist."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text!r} is not a file")
    return path
