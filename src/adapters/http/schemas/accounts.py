"""Wire types of the account endpoints: registration, sessions, passwords and MFA."""

from __future__ import annotations

from datetime import datetime

import attrs


@attrs.frozen
class Registration:
    email: str
    password: str


@attrs.frozen
class Account:
    """A user account as its owner sees it (never the password hash)."""

    id: str
    email: str
    verified: bool
    created_at: datetime


@attrs.frozen
class WhoAmI:
    id: str
    email: str
    verified: bool


@attrs.frozen
class VerificationCode:
    code: str


@attrs.frozen
class EmailAddress:
    email: str


@attrs.frozen
class Accepted:
    """The answer to requests that must not tell whether an account exists."""

    message: str


@attrs.frozen
class Credentials:
    email: str
    password: str


@attrs.frozen
class MfaAnswer:
    """The second step of a login: the ticket from the first step and a TOTP or recovery code."""

    ticket: str
    code: str


@attrs.frozen
class Login:
    """A session (``sessionToken``), or, with ``mfaRequired``, a ticket for the second step."""

    mfa_required: bool
    session_token: str | None = None
    session_id: str | None = None
    expires_at: datetime | None = None
    user_id: str | None = None
    email: str | None = None
    ticket: str | None = None


@attrs.frozen
class PasswordChange:
    current_password: str
    new_password: str


@attrs.frozen
class PasswordReset:
    code: str
    new_password: str


@attrs.frozen
class PasswordCheck:
    password: str


@attrs.frozen
class MfaSetup:
    """A new TOTP secret and its ``otpauth://`` URI; confirm it with a code to turn it on."""

    secret: str
    uri: str


@attrs.frozen
class MfaCode:
    code: str


@attrs.frozen
class RecoveryCodes:
    """Single-use codes for when the authenticator is lost; shown once, stored as hashes."""

    codes: list[str]


@attrs.frozen
class MfaStatus:
    enrolled: bool
    active: bool
    recovery_codes_left: int
    confirmed_at: datetime | None = None


@attrs.frozen
class MfaRemoval:
    password: str
    code: str
