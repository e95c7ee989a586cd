"""User accounts and the rules for emails and passwords."""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from enum import StrEnum

import attrs

from domain.errors import FieldError, Invalid

MIN_PASSWORD_LENGTH = 12
_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


@attrs.frozen
class User:
    id: str
    email: str
    password_hash: str
    created_at: datetime
    email_verified_at: datetime | None = None
    disabled_at: datetime | None = None

    @property
    def verified(self) -> bool:
        return self.email_verified_at is not None


def normalise_email(email: str) -> str:
    """Validate standard email syntax (any domain, ``+`` aliases allowed); lower-case the domain."""
    email = email.strip()
    local, at, domain = email.rpartition("@")
    problem = None
    if not at or not local or not domain:
        problem = "expected an address like name@example.com"
    elif len(email) > 254 or len(local) > 64:
        problem = "is too long (64 characters before '@', 254 in all)"
    elif not _LOCAL.match(local):
        problem = f"'{local}' is not a valid part before '@'"
    else:
        labels = domain.split(".")
        if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
            problem = f"'{domain}' is not a valid domain"
    if problem:
        raise Invalid(
            "the email address is not valid",
            code="invalid_email",
            errors=(FieldError("email", problem),),
        )
    return f"{local}@{domain.lower()}"


def check_password(password: str) -> None:
    """At least 12 characters with upper- and lower-case letters, a digit and a symbol."""
    missing = []
    if len(password) < MIN_PASSWORD_LENGTH:
        missing.append(f"at least {MIN_PASSWORD_LENGTH} characters")
    if not any(c.isupper() for c in password):
        missing.append("an upper-case letter")
    if not any(c.islower() for c in password):
        missing.append("a lower-case letter")
    if not any(c.isdigit() for c in password):
        missing.append("a digit")
    if not any(unicodedata.category(c)[0] in "PS" for c in password):
        missing.append("a symbol")
    if missing:
        raise Invalid(
            "the password is too weak",
            code="weak_password",
            errors=(FieldError("password", "needs " + ", ".join(missing)),),
        )


class CodePurpose(StrEnum):
    VERIFY_EMAIL = "verify_email"
    RESET_PASSWORD = "reset_password"  # noqa: S105 - a purpose, not a password
    LINK_TELEGRAM = "link_telegram"  # linking a chat identity (opsicle link telegram)
    LINK_SLACK = "link_slack"


@attrs.frozen
class OneTimeCode:
    """A code sent to a user (email verification, password reset); stored only as a hash."""

    id: str
    user_id: str
    purpose: CodePurpose
    code_hash: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None

    def usable(self, at: datetime) -> bool:
        return self.used_at is None and at < self.expires_at


@attrs.frozen
class MfaEnrolment:
    """A user's TOTP secret; it counts only once confirmed with a code."""

    user_id: str
    secret: str
    created_at: datetime
    confirmed_at: datetime | None = None
    # The last TOTP time step accepted: a code is accepted once per window.
    last_step: int | None = None

    @property
    def active(self) -> bool:
        return self.confirmed_at is not None


@attrs.frozen
class Session:
    """A login: the session token carries its id, and it is valid while the cache holds it."""

    id: str
    user_id: str
    created_at: datetime
    expires_at: datetime
    source_ip: str = ""
    user_agent: str = ""
