"""Strict JSON <-> frozen dataclass conversion for hdn-deploy's file formats.

``from_json(cls, data, file)`` builds a (nested) frozen dataclass from parsed JSON and
raises :class:`~hdn_deploy.errors.PackageError` naming the file and the key path
(``graphs.decoder.sha256``, ``levels[2].channels``) on an unknown key, a missing key or a
value of the wrong type. ``to_json(obj)`` is its inverse: ``from_json(cls, to_json(x),
f) == x`` for every schema object ``x``.

Supported field types: ``bool``, ``int``, ``float`` (finite), ``str``, ``Enum``
subclasses (given by value), ``X | None``, ``tuple[X, ...]``, ``Mapping[str, X]``
(stored as a read-only mapping), nested dataclasses, and ``Any`` (free-form JSON kept
read-only: objects become mappings, arrays tuples).
"""
from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from .errors import PackageError

T = TypeVar("T")


def freeze(value: Any) -> Any:
    """Read-only copy of free-form JSON: dicts -> MappingProxyType, lists -> tuples."""
    if isinstance(value, Mapping):
        return types.MappingProxyType({str(k): freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def to_json(value: Any) -> Any:
    """Plain JSON (dicts, lists, numbers, strings, None) of a schema object or value."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


def from_json(cls: type[T], data: Any, file: str | Path, where: str = "") -> T:
    """Build dataclass ``cls`` from parsed JSON ``data`` read from ``file``.

    Raises
    ------
    PackageError
        ``"<file>: <problem> at key '<path>'"`` for unknown keys, missing keys and values
        of the wrong type.
    """
    return _convert(cls, data, _Where(str(file), where))


class _Where:
    def __init__(self, file: str, path: str):
        self.file, self.path = file, path

    def child(self, key: str | int) -> "_Where":
        if isinstance(key, int):
            return _Where(self.file, f"{self.path}[{key}]")
        return _Where(self.file, f"{self.path}.{key}" if self.path else key)

    def error(self, problem: str) -> PackageError:
        at = f"key '{self.path}'" if self.path else "top level"
        return PackageError(f"{self.file}: {problem} at {at}")


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), type(value).__name__)


def _convert(tp: Any, value: Any, where: _Where) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return freeze(value)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, where)
    if dataclasses.is_dataclass(tp):
        return _dataclass(tp, value, where)
    if origin is tuple:
        if not isinstance(value, list):
            raise where.error(f"expected an array, got {_kind(value)}")
        return tuple(_convert(args[0], v, where.child(i)) for i, v in enumerate(value))
    if origin in (Mapping, dict, typing.Mapping):
        if not isinstance(value, dict):
            raise where.error(f"expected an object, got {_kind(value)}")
        return types.MappingProxyType(
            {k: _convert(args[1], v, where.child(k)) for k, v in value.items()})
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise where.error(f"{value!r} is not one of {[m.value for m in tp]}") from None
    return _scalar(tp, value, where)


def _scalar(tp: type, value: Any, where: _Where) -> Any:
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value))
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    else:  # a schema bug, not a user error
        raise TypeError(f"unsupported schema type {tp!r} at {where.path}")
    if not ok:
        name = "a finite number" if tp is float else f"{'an' if tp is int else 'a'} {tp.__name__}"
        raise where.error(f"expected {name}, got {_kind(value)} {value!r}")
    return value


def _dataclass(cls: type, value: Any, where: _Where) -> Any:
    if not isinstance(value, dict):
        raise where.error(f"expected an object, got {_kind(value)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise where.child(unknown[0]).error(
            f"unknown key '{unknown[0]}' (allowed: {sorted(fields)})")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, f in fields.items():
        if name not in value:
            required = (f.default is dataclasses.MISSING
                        and f.default_factory is dataclasses.MISSING)
            if required:
                raise where.child(name).error("missing key")
            continue
        kwargs[name] = _convert(hints[name], value[name], where.child(name))
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:  # __post_init__ checks of the dataclass
        raise where.error(str(exc)) from exc
