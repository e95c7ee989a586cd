"""Organisations and their members."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum

import attrs

from domain.errors import FieldError, Invalid

_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{4,30}[A-Za-z0-9]$")
_NAME_CHARS = set(".,-&!():' ")


class MemberType(StrEnum):
    ADMIN = "admin"
    MANAGER = "manager"
    OPERATOR = "operator"
    BILLING = "billing"
    MEMBER = "member"
    REPORTER = "reporter"


@attrs.frozen
class Organisation:
    id: str
    name: str
    code: str
    created_at: datetime
    created_by: str | None = None


@attrs.frozen
class Membership:
    org_id: str
    user_id: str
    type: MemberType
    joined_at: datetime


def check_org(name: str, code: str) -> None:
    """Name: 6–255 letters, digits, spaces and ``.,-&!():'``; code: 6–32 letters, digits, ``-``."""
    errors = []
    if not 6 <= len(name) <= 255 or not all(c.isalnum() or c in _NAME_CHARS for c in name):
        errors.append(
            FieldError("name", "expected 6 to 255 letters, digits, spaces or . , - & ! ( ) : '")
        )
    if not _CODE.match(code):
        errors.append(
            FieldError(
                "code",
                "expected 6 to 32 letters, digits or '-', "
                "starting and ending with a letter or digit",
            )
        )
    if errors:
        raise Invalid("the organisation is not valid", errors=tuple(errors))


class InvitationStatus(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


@attrs.frozen
class Invitation:
    """An invitation to join an org, addressed to an email; the join code is stored hashed."""

    id: str
    org_id: str
    email: str
    member_type: MemberType
    inviter_id: str
    code_hash: str
    created_at: datetime
    expires_at: datetime
    status: InvitationStatus = InvitationStatus.PENDING
    answered_at: datetime | None = None
