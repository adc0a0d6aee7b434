"""Stage options declared once, as fields of a config dataclass; flags, TOML keys, `--help` and parsing derive from them.

A field is an option when its metadata has "help": `min_karma: int = field(default=3, metadata={"help": "…"})` is the
flag `--min-karma` and the TOML key `min_karma`. Optional metadata: "choices", "flag" (a flag other than --field-name),
"type" (turns the string of a flag or TOML value into the field's value, e.g. a date into seconds).
Libraries (crawl/, dedup/) declare their own config dataclasses this way without importing anything from here.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Sequence

_SCALARS = (int, float, str)


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

    @property
    def key(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        kwargs: dict[str, Any] = {"dest": self.key, "default": argparse.SUPPRESS, "help": self._help()}
        if self.switch:
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = self.type
            if self.choices:
                kwargs["choices"] = self.choices
            if self.multiple:
                kwargs["nargs"] = "+"
        parser.add_argument(self.flag, **kwargs)

    def _help(self) -> str:
        return self.help if self.default in (None, False, []) else f"{self.help} (default: {self.default})"

    def empty_default(self) -> Any:
        if self.switch:
            return bool(self.default)
        return [] if self.multiple and self.default is None else self.default

    def coerce(self, value: Any) -> Any:
        """A config-file value in the type the flag would have given."""
        if value is None or self.switch:
            return bool(value) if self.switch else None
        if self.multiple:
            values = value if isinstance(value, list) else [value]
            return [self.type(v) if isinstance(v, str) else v for v in values]
        return self.type(value) if isinstance(value, str) else value


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
    common = {"flag": flag, "help": meta["help"], "default": _default(field), "choices": meta.get("choices")}
    if annotation is bool:
        return Option(**common, switch=True)
    if origin in (tuple, list, set, frozenset):
        item = typing.get_args(annotation)[0] if typing.get_args(annotation) else str
        return Option(**common, type=meta.get("type") or (item if item in _SCALARS else str), multiple=True)
    if annotation in _SCALARS or meta.get("type"):
        return Option(**common, type=meta.get("type") or annotation)
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
