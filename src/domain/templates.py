"""Runbook templates: a name owned by a user or an organisation, and its numbered versions."""

from __future__ import annotations

from datetime import datetime
from enum import Flag, StrEnum

import attrs


@attrs.frozen
class Template:
    id: str
    name: str
    created_at: datetime
    default_version: int = 1
    latest_version: int = 1
    org_id: str | None = None
    owner_id: str | None = None
    description: str = ""


@attrs.frozen
class TemplateVersion:
    template_id: str
    version: int
    content: str
    created_at: datetime
    created_by: str | None = None


class TemplateRight(Flag):
    """What a user may do with a personal template shared with them."""

    VIEW = 1
    EXECUTE = 2
    UPDATE = 4
    DELETE = 8
    INVITE = 16


ALL_TEMPLATE_RIGHTS = TemplateRight(31)


@attrs.frozen
class TemplateGrant:
    template_id: str
    user_id: str
    rights: TemplateRight
    granted_at: datetime
    granted_by: str | None = None


class TemplateInvitationStatus(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


@attrs.frozen
class TemplateInvitation:
    """An invitation to share a personal template, addressed to an email; code stored hashed."""

    id: str
    template_id: str
    email: str
    rights: TemplateRight
    inviter_id: str
    code_hash: str
    created_at: datetime
    expires_at: datetime
    status: TemplateInvitationStatus = TemplateInvitationStatus.PENDING
    answered_at: datetime | None = None
