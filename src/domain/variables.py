"""Resolving a run's variables and keeping secret values out of every line Opsicle prints."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

import attrs

from domain.errors import FieldError, Invalid
from domain.resources import ValueTooLong, Variable, VariableValue, coerce_value

MASK = "***"
# All of a run's variables together: Linux gives a new process's arguments and environment
# 2 MiB in all, typically, and the phase needs some of it for the rest of its environment.
MAX_TOTAL_BYTES = 1 << 20


def resolve(declared: Iterable[Variable], given: Mapping[str, object]) -> dict[str, VariableValue]:
    """Typed values for every declared variable: given values, else defaults.

    Raises ``Invalid`` naming each unknown, missing or mistyped variable.
    """
    declared = tuple(declared)
    by_id = {v.id: v for v in declared}
    errors = [
        FieldError(
            field=f"variables.{key}",
            message=f"is not a variable of this runbook; it has: {', '.join(by_id) or 'none'}",
        )
        for key in given
        if key not in by_id
    ]
    values: dict[str, VariableValue] = {}
    for var in declared:
        if var.id in given and given[var.id] is not None:
            try:
                values[var.id] = coerce_value(var.type, given[var.id])
            except ValueError as exc:
                # A secret's value must not reach the error message either.
                hidden = var.secret and not isinstance(exc, ValueTooLong)
                message = f"expected a {var.type.value} value" if hidden else str(exc)
                errors.append(FieldError(field=f"variables.{var.id}", message=message))
        elif var.default is not None:
            values[var.id] = var.default
        elif var.is_required:
            errors.append(
                FieldError(field=f"variables.{var.id}", message=f"is required ({var.type.value})")
            )
    total = sum(len(name) + len(render(value).encode()) + 2 for name, value in values.items())
    if total > MAX_TOTAL_BYTES:
        errors.append(
            FieldError(
                field="variables",
                message=f"are too long together ({total} bytes as UTF-8); at most "
                f"{MAX_TOTAL_BYTES} bytes (1 MiB) fit in a phase's environment beside the rest",
            )
        )
    if errors:
        raise Invalid("the variables are not valid", errors=tuple(errors))
    return values


def missing_required(declared: Iterable[Variable], given: Mapping[str, object]) -> list[Variable]:
    """Required variables with neither a given value nor a default, in declaration order."""
    return [v for v in declared if v.is_required and given.get(v.id) is None and v.default is None]


def render(value: VariableValue) -> str:
    """The text a phase sees in its environment: booleans as true/false, numbers as written."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return json.dumps(value)
    return str(value)


def environment(
    declared: Iterable[Variable], values: Mapping[str, VariableValue]
) -> dict[str, str]:
    return {v.env_name: render(values[v.id]) for v in declared if v.id in values}


@attrs.frozen
class Redactor:
    """Replaces every secret value with ``***``; longer secrets first so none leaks in part."""

    secrets: tuple[str, ...] = ()

    @classmethod
    def for_values(
        cls, declared: Iterable[Variable], values: Mapping[str, VariableValue]
    ) -> Redactor:
        parts: set[str] = set()
        for var in declared:
            if var.secret and var.id in values:
                text = render(values[var.id])
                parts.update(p for p in [text, *text.splitlines()] if p.strip())
        return cls(tuple(sorted(parts, key=len, reverse=True)))

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def values(
        self, declared: Iterable[Variable], values: Mapping[str, VariableValue]
    ) -> dict[str, VariableValue]:
        """The values with secret ones shown as ``***``, for display and storage of runs."""
        secret = {v.id for v in declared if v.secret}
        return {k: (MASK if k in secret else v) for k, v in values.items()}
