"""Command-line flags generated from dataclass fields, so that each option is declared once, on its config."""
from __future__ import annotations

import argparse
import dataclasses
import math
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


def finite_float(text: str) -> float:
    """A float flag: NaN and infinities are refused (a NaN learning rate trains nothing and says nothing)."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def range_text(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"{low:g} to {high:g}"
    return f"at least {low:g}" if low is not None else f"at most {high:g}" if high is not None else ""


def in_range(parse: Callable[[str], Any], low: float | None, high: float | None) -> Callable[[str], Any]:
    """`parse`, then a check that the value is within [low, high]."""
    def parse_in_range(text: str) -> Any:
        value = parse(text)
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {range_text(low, high)}, got {text}")
        return value

    parse_in_range.__name__ = getattr(parse, "__name__", "value")  # argparse names it in "invalid X value"
    return parse_in_range


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to a flag's help (a switch's as on/off) unless the help already says its default; a
    flag without one shows "(default: not set)"."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or action.default is argparse.SUPPRESS or "default" in text:
            return text
        if action.default in (None, ""):
            return text + " (default: not set)"
        if isinstance(action.default, bool):
            return text + f" (default: {'on' if action.default else 'off'})"
        return text + " (default: %(default)s)"


def option(default: Any = dataclasses.MISSING, help: str = "", *, type: Callable[[str], Any] | None = None,
           choices: Sequence[str] | None = None, flag: str | None = None, metavar: str | None = None,
           min: float | None = None, max: float | None = None) -> Any:
    """A dataclass field that is also a command-line option: `--field-name` (or `flag`), a positional without a default.

    `type` parses the flag's text (default: the field's annotated type; a float must be finite); a bool field is a
    switch; `min`/`max` bound the value (inclusive) and are shown in --help.
    """
    metadata = {"help": help, "type": type, "choices": choices, "flag": flag, "metavar": metavar, "min": min,
                "max": max}
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
            parse = meta["type"] or (finite_float if kind is float else kind)
            help_text = meta["help"]
            if meta.get("min") is not None or meta.get("max") is not None:
                parse = in_range(parse, meta.get("min"), meta.get("max"))
                bounds = range_text(meta.get("min"), meta.get("max"))
                help_text += f" ({bounds})" if field.default is None else f" (default: %(default)s; {bounds})"
            parser.add_argument(flag, dest=field.name, type=parse, default=field.default,
                                choices=meta["choices"], metavar=metavar, help=help_text)


def from_namespace(config_class: type, args: argparse.Namespace) -> Any:
    """The config built from parsed arguments (other attributes of `args` are left aside)."""
    return config_class(**{field.name: getattr(args, field.name)
                           for field in dataclasses.fields(config_class) if field.init})
