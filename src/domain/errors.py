"""Domain errors: every failure Opsicle reports has one of these types and a stable code."""

from __future__ import annotations

from collections.abc import Mapping

import attrs


@attrs.frozen
class FieldError:
    """One problem with one field: where it is and what was expected."""

    field: str
    message: str
    source: str | None = None
    line: int | None = None
    column: int | None = None

    def location(self) -> str:
        parts = [p for p in (self.source, str(self.line) if self.line else None) if p]
        if self.line and self.column:
            parts.append(str(self.column))
        return ":".join(parts)

    def __str__(self) -> str:
        where = self.location()
        prefix = f"{where}: " if where else ""
        return f"{prefix}{self.field}: {self.message}" if self.field else f"{prefix}{self.message}"


class OpsicleError(Exception):
    """Base of every domain error; ``code`` is stable and machine-readable."""

    code = "error"
    status = 500

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class NotFound(OpsicleError):
    code = "not_found"
    status = 404


class Conflict(OpsicleError):
    code = "conflict"
    status = 409


class Forbidden(OpsicleError):
    code = "forbidden"
    status = 403


class Unauthenticated(OpsicleError):
    code = "unauthenticated"
    status = 401


class RateLimited(OpsicleError):
    """Too many attempts; ``retry_after`` says in how many seconds to try again."""

    code = "rate_limited"
    status = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(OpsicleError):
    """A store or service did not answer; callers may retry with backoff."""

    code = "unavailable"
    status = 503


class SchemaMismatch(OpsicleError):
    """The database's schema is not the one this version expects (behind, or newer)."""

    code = "schema_mismatch"
    status = 503


class Invalid(OpsicleError):
    """Input that breaks a rule; ``errors`` names each offending field."""

    code = "invalid"
    status = 422

    def __init__(
        self,
        message: str,
        *,
        errors: tuple[FieldError, ...] = (),
        code: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.errors = errors

    def __str__(self) -> str:
        if not self.errors:
            return self.message
        return "\n".join(str(e) for e in self.errors)

    def field_map(self) -> Mapping[str, str]:
        return {e.field: e.message for e in self.errors}


class IllegalTransition(Conflict):
    code = "illegal_transition"
