"""The one cattrs converter used at every edge: camelCase JSON, ISO datetimes, enum values."""

from __future__ import annotations

import re
import typing
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from domain.errors import FieldError, Invalid

T = TypeVar("T")


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _make() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    conv.register_unstructure_hook(datetime, lambda d: d.isoformat())
    conv.register_structure_hook(datetime, lambda v, _: _parse_datetime(v))
    # JSON types are taken as they are: "5" is not a number and 5 is not a string.
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(bool, lambda v, _: _strict(v, bool, "true or false"))
    conv.register_structure_hook(int, lambda v, _: _whole(v))
    conv.register_structure_hook(float, lambda v, _: float(_strict(v, (int, float), "a number")))

    def renames(cls: type) -> dict[str, Any]:
        return {a.name: override(rename=camel(a.name)) for a in attrs.fields(cls)}

    def unstructure_factory(cls: type) -> Any:
        return make_dict_unstructure_fn(cls, conv, **renames(cls))

    def structure_factory(cls: type) -> Any:
        return make_dict_structure_fn(cls, conv, _cattrs_forbid_extra_keys=True, **renames(cls))

    conv.register_unstructure_hook_factory(attrs.has, unstructure_factory)
    conv.register_structure_hook_factory(attrs.has, structure_factory)
    return conv


def _structure_str(value: Any, kind: type) -> Any:
    # The str hook also receives str-based enums, which must become their members.
    if issubclass(kind, Enum):
        try:
            return kind(value)
        except ValueError:
            raise ValueError(f"expected one of: {', '.join(str(m.value) for m in kind)}") from None
    return _strict(value, str, "a string")


def _strict(value: Any, kind: type | tuple[type, ...], expected: str) -> Any:
    if isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool):
        return value
    raise ValueError(f"expected {expected}")


def _whole(value: Any) -> int:
    number: int = _strict(value, int, "a whole number")
    # Stores keep whole numbers in 64 bits.
    if not -(2**63) <= number < 2**63:
        raise ValueError("expected a whole number from -2^63 to 2^63-1")
    return number


def _parse_datetime(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError("expected an ISO 8601 date and time")
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("expected a time zone (for example 2026-01-01T00:00:00Z)")
    try:
        # Stores keep times in UTC, which must still fall in years 1 to 9999.
        parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError("expected a time whose UTC falls in years 1 to 9999") from None
    return parsed


converter = _make()


def to_json(value: object) -> Any:
    return converter.unstructure(value)


def from_json(data: object, cls: type[T]) -> T:
    """Structure ``data`` as ``cls``; every problem becomes a field of one ``Invalid``."""
    if attrs.has(cls) and not isinstance(data, dict):
        raise Invalid(
            "the request body is not valid",
            errors=(FieldError("body", "expected a JSON object"),),
        )
    try:
        return converter.structure(data, cls)
    except cattrs.ClassValidationError as exc:
        errors = tuple(FieldError(_field(path), message) for message, path in _flatten(exc))
        raise Invalid("the request body is not valid", errors=errors) from exc
    except (ValueError, TypeError, KeyError) as exc:
        raise Invalid(
            "the request body is not valid",
            errors=(FieldError("body", f"cannot be read: {exc}"),),
        ) from exc


def _flatten(exc: cattrs.ClassValidationError) -> list[tuple[str, str]]:
    return [
        (message, path)
        for line in cattrs.transform_error(exc, path="$", format_exception=_describe)
        for message, _, path in [line.partition(" @ ")]
    ]


def _field(path: str) -> str:
    path = re.sub(r"^\$\.?", "", path)
    return re.sub(r"[a-z0-9]+(?:_[a-z0-9]+)+", lambda m: camel(m.group()), path) or "body"


def _describe(exc: BaseException, kind: type | None) -> str:
    if isinstance(exc, KeyError):
        return "is required"
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        return f"unknown field: {', '.join(sorted(exc.extra_fields))}"
    if isinstance(exc, ValueError) and str(exc).startswith("expected"):
        return str(exc)
    if dict in (kind, typing.get_origin(kind)):
        return "expected a JSON object"
    if isinstance(exc, ValueError | TypeError) and kind is not None:
        if isinstance(kind, type) and issubclass(kind, Enum):
            return f"expected one of: {', '.join(str(m.value) for m in kind)}"
        return f"expected {getattr(kind, '__name__', kind)}"
    return str(exc)
