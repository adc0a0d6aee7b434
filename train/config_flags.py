"""Command-line flags generated from dataclass fields, so that each option is declared once, on its config."""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Callable, Sequence


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to a flag's help; where X is None or empty the help itself says what the default is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.option_strings and action.default not in (None, "", argparse.SUPPRESS) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def option(default: Any = dataclasses.MISSING, help: str = "", *, type: Callable[[str], Any] | None = None,
           choices: Sequence[str] | None = None, flag: str | None = None, metavar: str | None = None) -> Any:
    """A dataclass field that is also a command-line option: `--field-name` (or `flag`), a positional without a default.

    `type` parses the flag's text (default: the field's annotated type); a bool field is a switch.
    """
    metadata = {"help": help, "type": type, "choices": choices, "flag": flag, "metavar": metavar}
    return dataclasses.field(default=default, metadata=metadata)


def _value_type(hint: Any) -> Any:
    """X of an `X | None` annotation; the annotation itself otherwise."""
    members = [member for member in typing.get_args(hint) if member is not type(None)]
    return members[0] if members else hint


def add_arguments(parser: argparse.ArgumentParser, config_class: type) -> None:
    """One argument per init field of `config_class`, each declared with option()."""
    hints = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        if not field.init:
            continue
        meta = field.metadata
        if not meta.get("help"):
            raise TypeError(f"{config_class.__name__}.{field.name} has no help: declare it with option()")
        if field.default is dataclasses.MISSING:
            parser.add_argument(field.name, help=meta["help"], metavar=meta["metavar"])
            continue
        flag = meta["flag"] or "--" + field.name.replace("_", "-")
        kind = _value_type(hints[field.name])
        if kind is bool:
            action = argparse.BooleanOptionalAction if field.default else "store_true"
            parser.add_argument(flag, dest=field.name, action=action, default=field.default, help=meta["help"])
        else:
            metavar = meta["metavar"] or (None if meta["choices"] else flag[2:].replace("-", "_").upper())
            parser.add_argument(flag, dest=field.name, type=meta["type"] or kind, default=field.default,
                                choices=meta["choices"], metavar=metavar, help=meta["help"])


def from_namespace(config_class: type, args: argparse.Namespace) -> Any:
    """The config built from parsed arguments (other attributes of `args` are left aside)."""
    return config_class(**{field.name: getattr(args, field.name)
                           for field in dataclasses.fields(config_class) if field.init})
