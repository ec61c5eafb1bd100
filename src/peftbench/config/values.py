"""Option values from their types: the one parser of text (a typed option, a config file's value, a string given
to the Python API) into what a config field's annotation says, so that each value is parsed once, where a
config is built, and every later reader gets the real type.

Supported annotations: bool (on/off), int, float, str, Literal[...] (the choices), tuple[...] (comma-
separated; none: empty), Shard ("I/N"), and unions of these with None (tried left to right: `int | Literal["auto"]`)."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

ON = ("on", "true", "yes", "1")
OFF = ("off", "false", "no", "0")


@dataclass(frozen=True)
class Shard:
    """--shard I/N: the I-th (1-based) of N deterministic parts of a grid."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.index <= self.count:
            raise ValueError(f"--shard I/N needs 1 <= I <= N, got {self}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @classmethod
    def parse(cls, text: str) -> Shard:
        try:
            index, count = (int(v) for v in text.split("/"))
        except ValueError:
            raise _Expected("I/N (e.g. 1/4)") from None
        return cls(index, count)


def members(hint: Any) -> tuple[Any, ...]:
    """The types a value of `hint` may have, None left out: `int | Literal["auto"] | None` -> (int, Literal["auto"])."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return tuple(h for h in typing.get_args(hint) if h is not type(None))
    return (hint,)


def choices(hint: Any) -> tuple[str, ...] | None:
    """The choices of a field that takes only named values (a Literal), else None."""
    kinds = members(hint)
    if all(typing.get_origin(kind) is Literal for kind in kinds):
        return tuple(str(value) for kind in kinds for value in typing.get_args(kind))
    return None


class _Expected(ValueError):
    """What a value of one kind looks like ("an integer"), when text is not one."""


def item_choices(hint: Any) -> tuple[str, ...] | None:
    """The choices of each item of a tuple field of named values (`tuple[Tracker, ...]`), else None."""
    for kind in members(hint):
        if typing.get_origin(kind) is tuple:
            return choices(typing.get_args(kind)[0])
    return None


def metavar(hint: Any) -> str | None:
    """How --help shows a field's value: {a,b} for choices, on|off, I/N, A,B,... for lists, N|auto for a number or
    a name; None: argparse's default (the option's name)."""
    kinds = members(hint)
    named = choices(hint)
    if named is not None:
        return "{" + ",".join(named) + "}"
    shown = [_shown(kind) for kind in kinds]
    return "|".join(each for each in shown if each) if all(shown) else None


def _shown(kind: Any) -> str | None:
    if kind is bool:
        return "on|off"
    if kind is Shard:
        return "I/N"
    if typing.get_origin(kind) is tuple:
        return "A,B,..."
    if typing.get_origin(kind) is Literal:
        return "|".join(map(str, typing.get_args(kind)))
    return {int: "N", float: "X"}.get(kind)


def from_text(hint: Any, text: str) -> Any:
    """The value `text` says, as `hint` types it; ValueError (with what was expected) when it cannot be."""
    expected = []
    for kind in members(hint):
        try:
            return _one(kind, text)
        except _Expected as exc:
            expected.append(str(exc))
    raise ValueError(f"expected {' or '.join(expected)}, got {text!r}")


def coerce(hint: Any, value: Any) -> Any:
    """A value given as text (a config file, the Python API) parsed as `hint` says; typed values as they are,
    a list for a tuple field as a tuple."""
    if value is None or (isinstance(value, str) and str in members(hint)):
        return value
    if isinstance(value, str):
        return from_text(hint, value)
    if isinstance(value, list) and any(typing.get_origin(kind) is tuple for kind in members(hint)):
        return tuple(value)
    return value


def _one(kind: Any, text: str) -> Any:
    stripped = text.strip()
    if kind is bool:
        if stripped.lower() in ON + OFF:
            return stripped.lower() in ON
        raise _Expected("on or off")
    if typing.get_origin(kind) is Literal:
        named = {str(value).lower(): value for value in typing.get_args(kind)}
        if stripped.lower() in named:
            return named[stripped.lower()]
        raise _Expected(f"one of {', '.join(map(str, named.values()))}")
    if typing.get_origin(kind) is tuple:
        return _items(typing.get_args(kind)[0], text)
    if kind is Shard:
        return Shard.parse(stripped)
    if kind in (int, float):
        try:
            return kind(stripped)
        except ValueError:
            raise _Expected("an integer" if kind is int else "a number") from None
    return text


def _items(kind: Any, text: str) -> tuple[Any, ...]:
    """Comma-separated values of one kind; "none" (or nothing) is the empty tuple."""
    parts = [v for v in text.split(",") if v.strip()]
    if [v.strip().lower() for v in parts] in ([], ["none"]):
        return ()
    if kind in (int, float):
        try:
            return tuple(kind(v) for v in parts)
        except ValueError:
            raise _Expected("comma-separated numbers") from None
    items = []
    for part in parts:
        try:
            items.append(_one(kind, part))
        except _Expected as exc:  # name the item that is wrong, not the whole list
            raise ValueError(f"expected {exc}, got {part.strip()!r}") from None
    return tuple(items)
