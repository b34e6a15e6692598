"""Checking config values against the dataclass fields they fill: types from the annotations, ranges and part
options from the fields' metadata. Used by pipeline loading (with file and line), by
:func:`retrdistill.registry.make_options` and by the stage configs themselves.

Field metadata read here:

* ``{"min": 1}``, ``{"min": 0, "max": 1}``, ``{"min": 0.0, "exclusive_min": True}`` (also ``exclusive_max``):
  the accepted range of a number, or of every number of a list (``list[int]``); ``None`` is not checked;
* ``{"part": {...}}``: the field holds the options of a registered part, checked against that part's
  ``Options`` with :func:`retrdistill.registry.part_options` (see :func:`part_fields` for the shapes).

Errors read ``<what>.<key>: expected an integer ≥ 1, got 0``.
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from retrdistill.errors import ConfigError

Lines = Mapping[tuple[str, ...], "int | None"]  # key path (list items by index) -> 1-based line
RANGE_KEYS = ("min", "max")

_NAMES = {int: "int", float: "float", str: "str", bool: "bool", list: "list", dict: "dict"}


# ------------------------------------------------------------------ types
def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _matches(value: Any, expected: type) -> bool:
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def _got(value: Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r}"


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation) or annotation
    return _NAMES.get(origin, getattr(origin, "__name__", str(origin)))


def check_type(value: Any, annotation: Any, key: str, path: str | Path | None = None, line: int | None = None, *,
               convert: bool = True, lines: Lines | None = None, at: tuple[str, ...] = ()) -> Any:
    """``value`` if it fits ``annotation`` (``int``, ``float``, ``str``, ``bool``, ``list[...]``, ``dict[...]``,
    unions and ``None``), else a ConfigError naming ``key``. An int is accepted for a float (returned as a
    float when ``convert``); a bool is never an int. Other annotations (``Any``, classes) are not checked.
    ``lines``/``at``: the lines of a list's items or a mapping's keys (key path -> line; ``at``: the value's)."""
    if _is_union(annotation):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return value
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return check_type(value, inner[0], key, path, line, convert=convert, lines=lines, at=at)
        for candidate in inner:
            try:
                return check_type(value, candidate, key, path, line, convert=convert, lines=lines, at=at)
            except ConfigError:
                continue
        names = [_type_name(a) for a in inner] + (["null"] if type(None) in args else [])
        raise ConfigError(f"{key}: expected {', '.join(names[:-1])} or {names[-1]}, got {_got(value)}", path, line)
    origin = typing.get_origin(annotation)
    expected = origin or annotation
    if expected not in _NAMES:
        return value
    if not _matches(value, expected):
        raise ConfigError(f"{key}: expected {_NAMES[expected]}, got {_got(value)}", path, line)
    if expected is float and convert:
        return float(value)
    args = typing.get_args(annotation)
    if expected is list and args:
        for i, item in enumerate(value):
            check_type(item, args[0], f"{key}[{i}]", path, _item_line(lines, (*at, str(i)), line), convert=False,
                       lines=lines, at=(*at, str(i)))
    elif expected is dict and len(args) == 2:
        for k, item in value.items():
            check_type(item, args[1], f"{key}.{k}", path, _item_line(lines, (*at, str(k)), line), convert=False,
                       lines=lines, at=(*at, str(k)))
    return value


def _item_line(lines: Lines | None, at: tuple[str, ...], line: int | None) -> int | None:
    found = (lines or {}).get(at)
    return found if found is not None else line


# ------------------------------------------------------------------ ranges
def describe_range(meta: Mapping[str, Any], integer: bool) -> str:
    """``an integer ≥ 1``, ``a number in [0, 1)``, ``a number > 0`` ..."""
    low, high = meta.get("min"), meta.get("max")
    open_low, open_high = meta.get("exclusive_min", False), meta.get("exclusive_max", False)
    what = "an integer" if integer else "a number"
    if low is not None and high is not None:
        return f"{what} in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
    if low is not None:
        return f"{what} {'>' if open_low else '≥'} {low}"
    if high is not None:
        return f"{what} {'<' if open_high else '≤'} {high}"
    return what


def _in_range(value: float, meta: Mapping[str, Any]) -> bool:
    low, high = meta.get("min"), meta.get("max")
    if low is not None and (value <= low if meta.get("exclusive_min") else value < low):
        return False
    if high is not None and (value >= high if meta.get("exclusive_max") else value > high):
        return False
    return True


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_range(value: Any, meta: Mapping[str, Any], key: str, path: str | Path | None = None,
                line: int | None = None, *, integer: bool | None = None, lines: Lines | None = None,
                at: tuple[str, ...] = ()) -> None:
    """A ConfigError naming ``key`` and the accepted range when ``value`` (a number, or each number of a list)
    is outside the range ``meta`` declares; anything else is left to the type check."""
    if not any(k in meta for k in RANGE_KEYS):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_range(item, meta, f"{key}[{i}]", path, _item_line(lines, (*at, str(i)), line), integer=integer)
        return
    if not _is_number(value) or _in_range(value, meta):
        return
    integer = isinstance(value, int) if integer is None else integer
    raise ConfigError(f"{key}: expected {describe_range(meta, integer)}, got {value!r}", path, line)


def _integer_field(annotation: Any) -> bool | None:
    """True for an int field (or a list of ints), False for a float one; None where the type does not say."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)] if _is_union(annotation) else [annotation]
    kinds = set()
    for a in args:
        origin = typing.get_origin(a) or a
        if origin is list and typing.get_args(a):
            origin = typing.get_args(a)[0]
        if origin in (int, float):
            kinds.add(origin)
    return (kinds == {int}) if kinds else None


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation this module cannot resolve: the value's type is not checked
        return {}


def check_value(cls: type, name: str, value: Any, key: str, path: str | Path | None = None,
                line: int | None = None, *, convert: bool = True, lines: Lines | None = None,
                at: tuple[str, ...] = ()) -> Any:
    """Field ``name`` of dataclass ``cls`` set to ``value``: type, then range; the (converted) value.
    ``lines``/``at`` as for :func:`check_type` (``at``: the path of this field's value)."""
    hint = _hints(cls).get(name, Any)
    value = check_type(value, hint, key, path, line, convert=convert, lines=lines, at=at)
    meta = next((f.metadata for f in dataclasses.fields(cls) if f.name == name), {})
    check_range(value, meta, key, path, line, integer=_integer_field(hint), lines=lines, at=at)
    return value


def check_ranges(obj: Any, what: str) -> None:
    """Every field of dataclass instance ``obj`` inside its declared range (a config built in code, or from
    the command line); ConfigError ``<what>.<field>: expected ...``."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        check_range(getattr(obj, f.name), f.metadata, f"{what}.{f.name}" if what else f.name,
                    integer=_integer_field(hints.get(f.name, Any)))


# ------------------------------------------------------------------ options of registered parts
def part_fields(cls: type) -> list[tuple[str, dict[str, Any]]]:
    """``(field name, part spec)`` of each field of ``cls`` whose metadata has ``"part"``. A spec is

    * ``{"kind": K, "name": F}``: the field is the options of the registered ``K`` named by field ``F``;
    * ``{"kind": K, "name": KEY, "each": True}``: the field is a list of mappings, each naming a ``K`` by
      ``KEY`` with its options under ``"options"``;
    * ``{"kind": K, "name": KEY, "one": True}``: one such mapping;
    * ``{"kind": K, "by_name": True}``: a mapping of ``K`` names to their options;
    * ``{"target": "module:Class"}``: the options of that class (its ``Options``, or the class itself when it
      is a settings dataclass), not a registered part.
    """
    if not dataclasses.is_dataclass(cls):
        return []
    return [(f.name, dict(f.metadata["part"])) for f in dataclasses.fields(cls) if "part" in f.metadata]


def field_default(cls: type, name: str) -> Any:
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
    return None


def dotted(where: str, at: tuple[str, ...]) -> str:
    """``what.a.b[0].c`` from a key path (list indices as digits)."""
    out = where
    for part in at:
        out += f"[{part}]" if part.isdigit() else f".{part}"
    return out
