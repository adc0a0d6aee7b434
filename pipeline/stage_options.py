"""Stage options declared once, as fields of a config dataclass; flags, TOML keys, `--help` and parsing derive from them.

A field is an option when its metadata has "help": `min_karma: int = field(default=3, metadata={"help": "…"})` is the
flag `--min-karma` and the TOML key `min_karma`. Optional metadata: "choices", "flag" (a flag other than --field-name),
"type" (turns the string of a flag or TOML value into the field's value, e.g. a date into seconds), "min" and "max"
(the range, inclusive), "required" (a flag that must be given). A value from a flag or a TOML file must be of the field's type (a TOML boolean for a bool, an
integer for an int, a finite number for a float) and in its range; anything else is an OptionError naming the option.
Libraries (crawl/, dedup/) declare their own config dataclasses this way without importing anything from here.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Sequence

_SCALARS = (int, float, str)
_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}


class OptionError(ValueError):
    """A value that its option does not take; the message says what it takes."""


def _toml_kind(value: Any) -> str:
    """How a TOML value is called in an error message: `the string "false"`, `the number 2.5`, `a table`."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, (dt.date, dt.time)):
        return f"the date/time {value.isoformat()}"
    return {list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class Option:
    """One stage option: a command-line flag and the config key of the same name (dashes become underscores)."""

    flag: str
    help: str
    type: Callable[[str], Any] = str
    default: Any = None
    choices: Sequence[Any] | None = None
    multiple: bool = False  # several values after the flag, a TOML list in the config
    switch: bool = False  # a boolean flag without a value
    minimum: float | None = None
    maximum: float | None = None
    value_type: type | None = None  # the field's type, where `type` is a converter (a date into int seconds)
    required: bool = False  # a flag that must be given (commands' flags; a stage's options all have defaults)

    @property
    def key(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        kwargs: dict[str, Any] = {"dest": self.key, "default": argparse.SUPPRESS, "help": self._help()}
        if self.required:
            kwargs["required"] = True
        if self.switch:
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = self.parse_flag
            if self.choices:
                kwargs["choices"] = self.choices
            if self.multiple:
                kwargs["nargs"] = "+"
        parser.add_argument(self.flag, **kwargs)

    def _help(self) -> str:
        notes = [] if self.default in (None, False, []) else [f"default: {self.default}"]
        if self.range_text():
            notes.append(self.range_text())
        return f"{self.help} ({'; '.join(notes)})" if notes else self.help

    @property
    def kind(self) -> type | None:
        """The type a value must have once converted (None: whatever `type` gives)."""
        if self.switch:
            return bool
        return self.value_type or (self.type if self.type in _SCALARS else None)

    def range_text(self) -> str:
        low, high = self.minimum, self.maximum
        if low is not None and high is not None:
            return f"{low:g} to {high:g}"
        return f"at least {low:g}" if low is not None else f"at most {high:g}" if high is not None else ""

    def expected(self) -> str:
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        what = _KIND_NAMES.get(self.kind, "a value")
        return f"{what}, {self.range_text()}" if self.range_text() else what

    def check(self, value: Any) -> Any:
        """The value if it is in range (and finite, for a float); an OptionError otherwise."""
        if isinstance(value, float) and not math.isfinite(value):
            raise OptionError(f"expected {self.expected()}, got {value}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
                raise OptionError(f"expected {self.expected()}, got {value}")
        return value

    def _convert(self, text: str) -> Any:
        try:
            return self.type(text)
        except (ValueError, TypeError, argparse.ArgumentTypeError) as error:
            detail = "" if self.type in _SCALARS else f" ({error})"
            raise OptionError(f"expected {self.expected()}, got {text!r}{detail}") from None

    def parse_flag(self, text: str) -> Any:
        """The flag's text as the option's value (argparse's `type`): converted, then range-checked."""
        try:
            return self.check(self._convert(text))
        except OptionError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    def empty_default(self) -> Any:
        if self.switch:
            return bool(self.default)
        return [] if self.multiple and self.default is None else self.default

    def coerce(self, value: Any) -> Any:
        """A TOML value as the value the flag would have given; an OptionError when it is of another type or out of
        range. A TOML date (or date-time) goes through the option's converter as its ISO text; a string is
        converted only by an option with a converter of its own (a date), never into a number or a boolean."""
        if self.switch:
            if not isinstance(value, bool):
                raise OptionError(f"expected true or false, got {_toml_kind(value)}")
            return value
        if self.multiple:
            return [self._coerce_one(v) for v in (value if isinstance(value, list) else [value])]
        return self._coerce_one(value)

    def _coerce_one(self, value: Any) -> Any:
        converter = self.type not in _SCALARS
        if isinstance(value, (dt.date, dt.time)):
            if not converter:
                raise OptionError(f"expected {self.expected()}, got {_toml_kind(value)}")
            value = self._convert(value.isoformat())
        elif isinstance(value, str) and converter:
            value = self._convert(value)
        kind = self.kind
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is not None and not (isinstance(value, kind) and (kind is bool or not isinstance(value, bool))):
            raise OptionError(f"expected {self.expected()}, got {_toml_kind(value)}")
        if self.choices and value not in self.choices:
            raise OptionError(f"expected {self.expected()}, got {_toml_kind(value)}")
        return self.check(value)


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return None
    return sorted(value) if isinstance(value, (set, frozenset)) else list(value) if isinstance(value, tuple) else value


def _flag(field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def option_for(field: dataclasses.Field, annotation: Any) -> Option:
    """The Option a dataclass field declares (see the module docstring)."""
    meta = field.metadata
    flag = _flag(field)
    annotation = _unwrap_optional(annotation)
    origin = typing.get_origin(annotation)
    common = {"flag": flag, "help": meta["help"], "default": _default(field), "choices": meta.get("choices"),
              "minimum": meta.get("min"), "maximum": meta.get("max"), "required": meta.get("required", False)}
    if annotation is bool:
        return Option(**common, switch=True)
    if origin in (tuple, list, set, frozenset):
        item = typing.get_args(annotation)[0] if typing.get_args(annotation) else str
        item = item if item in _SCALARS else str
        return Option(**common, type=meta.get("type") or item, value_type=item, multiple=True)
    if annotation in _SCALARS or meta.get("type"):
        return Option(**common, type=meta.get("type") or annotation,
                      value_type=annotation if annotation in _SCALARS else None)
    raise TypeError(f"option {field.name}: cannot derive a flag from the type {annotation!r}")


def options_of(config_cls: type) -> list[Option]:
    """The options a config dataclass declares: each field with help in its metadata, in field order."""
    hints = typing.get_type_hints(config_cls)
    return [option_for(f, hints[f.name]) for f in dataclasses.fields(config_cls) if "help" in f.metadata]


def _as_field_type(value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(_unwrap_optional(annotation))
    if value is None or origin not in (tuple, set, frozenset):
        return value
    return tuple(value) if origin is tuple else frozenset(value)


def config_from(config_cls: type, values: dict[str, Any]):
    """The dataclass built from a stage's resolved options: the keys of its fields' options (a field with its own
    "flag" has that flag's key), lists as its tuples/sets."""
    hints = typing.get_type_hints(config_cls)
    keys = {f.name: _flag(f).lstrip("-").replace("-", "_") for f in dataclasses.fields(config_cls) if f.init}
    return config_cls(**{name: _as_field_type(values[key], hints[name]) for name, key in keys.items() if key in values})
