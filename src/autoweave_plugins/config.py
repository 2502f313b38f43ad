"""Building config dataclasses from mappings and TOML, with errors that name the key.

Each config section is a plain frozen dataclass with documented defaults. ``from_mapping``
checks every key against the dataclass fields and every value against the field's type, so a
typo (``min_worker``) or a wrong type (``"2"``) fails with ``ConfigError`` naming
``worker_pool.min_worker`` instead of being ignored. Range checks live in each dataclass's
``validate()`` method, which ``from_mapping`` calls. A field whose type is itself a dataclass
(``limits.fetch``) is built the same way from a nested table, with the longer key in errors.

Every problem is reported at once, not only the first: inside ``collecting()`` (which
``from_mapping`` opens, and which nests), ``require`` and each bad key add to one list, and one
``ConfigError`` holding them all is raised at the end.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import difflib
import enum
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

from autoweave_plugins.errors import ConfigError

__all__ = ["collecting", "from_mapping", "load_toml", "require"]

_problems: contextvars.ContextVar[list[ConfigError] | None] = contextvars.ContextVar(
    "config_problems", default=None
)


@contextlib.contextmanager
def collecting() -> Iterator[list[ConfigError]]:
    """Collect config problems instead of raising the first; at the end of the outermost
    block, raise one ``ConfigError`` holding all of them. Yields the list (to check whether
    anything failed so far)."""
    outer = _problems.get()
    if outer is not None:
        yield outer
        return
    problems: list[ConfigError] = []
    token = _problems.set(problems)
    try:
        yield problems
    finally:
        _problems.reset(token)
    if problems:
        raise ConfigError.combine(problems)


def _report(error: ConfigError) -> None:
    problems = _problems.get()
    if problems is None:
        raise error
    problems.append(error)


class _Validated(Protocol):
    def validate(self, prefix: str) -> None: ...


T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; returns it (tuples from lists)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as exc:
                errors.append(exc.message)
        raise ConfigError(key, " or ".join(errors))
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(key, f"must be a list, not {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(key, f"must be a list of {len(args)} items")
        return tuple(
            _coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if origin in (dict, Mapping) or origin is typing.get_origin(Mapping[str, Any]):
        key_tp, value_tp = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"must be a table/mapping, not {type(value).__name__}")
        return {
            _coerce(k, key_tp, f"{key}.{k}"): _coerce(v, value_tp, f"{key}.{k}")
            for k, v in value.items()
        }
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):  # a nested section
        return from_mapping(tp, value, key)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"must be a number, not {type(value).__name__}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be an integer, not {type(value).__name__}")
        return value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        try:
            return tp[value.upper()] if isinstance(value, str) else tp(value)
        except (KeyError, ValueError):
            names = ", ".join(m.name for m in tp)
            raise ConfigError(key, f"must be one of {names}, not {value!r}") from None
    if isinstance(tp, type):
        if tp is Path and isinstance(value, str):
            return Path(value)
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ConfigError(key, f"must be {_type_name(tp)}, not {type(value).__name__}")
        return value
    raise ConfigError(key, f"unsupported config type {tp!r}")


def from_mapping(cls: type[T], mapping: Mapping[str, Any] | T | None, prefix: str) -> T:
    """Build the dataclass ``cls`` from ``mapping``, naming ``prefix.key`` in every error.

    Raises one ``ConfigError`` listing every problem (or adds them to an enclosing
    ``collecting()``, and returns the defaults in place of bad values)."""
    with collecting():
        return _build(cls, mapping, prefix)


def _build(cls: type[T], mapping: Mapping[str, Any] | T | None, prefix: str) -> T:
    if mapping is None:
        instance: Any = cls()
    elif isinstance(mapping, cls):
        instance = mapping
    elif not isinstance(mapping, Mapping):
        _report(
            ConfigError(
                prefix, f"must be a mapping or {cls.__name__}, not {type(mapping).__name__}"
            )
        )
        return cls()
    else:
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        values: dict[str, Any] = {}
        for key, value in mapping.items():
            dotted = f"{prefix}.{key}"
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                _report(ConfigError(dotted, f"unknown key{hint} (known: {', '.join(names)})"))
                continue
            try:
                values[key] = _coerce(value, hints[key], dotted)
            except ConfigError as exc:
                _report(exc)
        try:
            instance = cls(**values)
        except ValueError as exc:  # a dataclass that checks itself (e.g. ServeLimits)
            _report(ConfigError(prefix, str(exc)))
            return cls()
    validate = getattr(instance, "validate", None)
    if validate is not None:
        try:
            typing.cast(_Validated, instance).validate(prefix)
        except ConfigError as exc:  # a check that raises rather than calling require
            _report(exc)
    return typing.cast(T, instance)


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file, turning every read or syntax problem into ``ConfigError``."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from None


def require(condition: bool, key: str, message: str) -> bool:
    """A ``ConfigError`` for ``key`` unless ``condition`` holds (used by ``validate``): raised,
    or added to the enclosing ``collecting()``. Returns ``condition``."""
    if not condition:
        _report(ConfigError(key, message))
    return condition
