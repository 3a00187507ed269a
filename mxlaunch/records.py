"""Records as data: a frozen dataclass is the one definition of the shape of a file mxlaunch writes and reads
back (job.yaml, launcher.json, cluster.json). Its fields' types, and `expect(...)` where a type alone does not
say enough, decide what is valid; the same definition writes the file and checks it when it is read.

    load(cls, data) -> cls        data parsed by json.load or yaml.safe_load; RecordError names the field
    valid_fields(cls, data)       {field: value} of the fields that are valid (a reader that shows what it can)
    dump(record) -> dict          plain data in field order, for json.dump and yaml.safe_dump

Types understood: str, int, float, bool, `Word` (text, where a hand-written YAML number is taken as its
text), Optional[T], Tuple[T, ...], Dict[str, T], Literal[...], and nested record dataclasses. A field without
a default must be present; a key no field names is ignored (a newer writer's).
"""
from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Callable, Dict, Optional, Tuple

SHOWN = 40  # characters of a wrong value an error repeats


class Word(str):
    """Text that a hand-written YAML file may hold as a number (`--lr 0.1` read back as 0.1): taken as text."""


class RecordError(ValueError):
    """A record that does not have its shape: `field` (dotted, with [i] for items) and what was expected."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field, self.problem = field, problem


def expect(expected: Optional[str] = None, check: Optional[Callable[[Any], bool]] = None,
         default: Any = dataclasses.MISSING, default_factory: Any = dataclasses.MISSING) -> Any:
    """A field with what an error says is expected (`expected`) and a constraint on a value of the right type
    (`check`)."""
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"expected": expected, "check": check})


def _expected(kind) -> str:
    """What a value of `kind` is, in an error."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Union:
        return " or ".join(_expected(a) for a in args if a is not type(None))
    if origin is typing.Literal:
        return " or ".join(str(a) for a in args)
    if origin in (tuple, dict) or dataclasses.is_dataclass(kind):
        return "a list" if origin is tuple else "a mapping"
    return {str: "text", Word: "text", int: "a whole number", float: "a number", bool: "true or false"}.get(kind, "?")


def _scalar(kind, value) -> Tuple[bool, Any]:
    """(whether `value` is a `kind`, the value as one)."""
    if kind is bool:
        return isinstance(value, bool), value
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return ok, float(value) if ok else value
    if kind is Word:
        ok = isinstance(value, (str, int, float)) and not isinstance(value, bool)
        return ok, str(value) if ok else value
    return isinstance(value, kind), value


class _Wrong(Exception):
    """A value that is not of its kind (the caller names the field)."""


def _convert(kind, value, where: str):
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Union:  # Optional[T]
        if value is None and type(None) in args:
            return None
        return _convert(next(a for a in args if a is not type(None)), value, where)
    if origin is typing.Literal:
        if value in args and not isinstance(value, bool):
            return value
        raise _Wrong
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise _Wrong
        return _load(kind, value, where)
    if origin is tuple:
        if not isinstance(value, list):
            raise _Wrong
        return tuple(_convert(args[0], item, f"{where}[{i}]") for i, item in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise _Wrong
        return {k: _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    ok, converted = _scalar(kind, value)
    if not ok:
        raise _Wrong
    return converted


def _plain(kind) -> bool:
    """A single value (text, a number, a flag, one of some words), or None: an error may repeat it."""
    if typing.get_origin(kind) is typing.Union:
        return all(_plain(a) for a in typing.get_args(kind) if a is not type(None))
    return typing.get_origin(kind) is typing.Literal or kind in (str, Word, int, float, bool)


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN else text[:SHOWN] + "..."


def _field(field: dataclasses.Field, kind, data: dict, where: str):
    name = f"{where}.{field.name}" if where else field.name
    expected = field.metadata.get("expected") or _expected(kind)
    if field.name not in data:
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise RecordError(name, f"missing (expected {expected})")
        return field.default if field.default is not dataclasses.MISSING else field.default_factory()
    value = data[field.name]
    # a wrong item of a list or mapping of plain values is the whole field's error: its values are never
    # repeated (an environment's may be secrets); records in a list say which one
    got = f", got {_shown(value)}" if _plain(kind) else ""
    try:
        converted = _convert(kind, value, name)
    except _Wrong:
        raise RecordError(name, f"expected {expected}{got}") from None
    check = field.metadata.get("check")
    if check is not None and converted is not None and not check(converted):
        raise RecordError(name, f"expected {expected}{got}")
    return converted


def _load(cls, data: dict, where: str):
    kinds = typing.get_type_hints(cls)
    return cls(**{f.name: _field(f, kinds[f.name], data, where) for f in dataclasses.fields(cls)})


def load(cls, data):
    """`data` (parsed JSON or YAML) as a `cls` record, every field checked; RecordError names the first wrong one."""
    if not isinstance(data, dict):
        raise RecordError("", "not a mapping")
    return _load(cls, data, "")


def valid_fields(cls, data) -> Dict[str, Any]:
    """The fields of `data` that are valid for `cls`, each checked alone (the others left out)."""
    if not isinstance(data, dict):
        return {}
    kinds, found = typing.get_type_hints(cls), {}
    for field in dataclasses.fields(cls):
        if field.name in data:
            try:
                found[field.name] = _field(field, kinds[field.name], data, "")
            except RecordError:
                pass
    return found


def dump(value):
    """A record (or any value in one) as plain data: records as mappings in field order, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: dump(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [dump(v) for v in value]
    if isinstance(value, dict):
        return {str(k): dump(v) for k, v in value.items()}
    if isinstance(value, Word):
        return str(value)
    return value
