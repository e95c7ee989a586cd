"""Wire types of the template endpoints: submissions, templates, versions and sharing."""

from __future__ import annotations

from datetime import datetime

import attrs

from domain.services.templates import TemplateUser, TemplateView, right_names
from domain.templates import (
    Template,
    TemplateInvitation,
    TemplateInvitationStatus,
    TemplateVersion,
)

# ---------------------------------------------------------------- requests


@attrs.frozen
class TemplateSubmit:
    """An AutomationTemplate as YAML text; ``source`` names it in error messages."""

    content: str
    source: str = "<input>"
    org: str | None = None


@attrs.frozen
class DefaultVersion:
    version: int


@attrs.frozen
class TemplateShare:
    """Rights: view, execute, update, delete, invite."""

    email: str
    rights: list[str]


@attrs.frozen
class TemplateCode:
    code: str


# ---------------------------------------------------------------- responses


@attrs.frozen
class TemplateInfo:
    id: str
    name: str
    default_version: int
    latest_version: int
    created_at: datetime
    rights: list[str]
    description: str = ""
    org_id: str | None = None
    owner_id: str | None = None


@attrs.frozen
class TemplateDetail:
    """A template with one version's content (the default one unless asked otherwise)."""

    template: TemplateInfo
    version: int
    content: str
    version_created_at: datetime
    version_created_by: str | None = None


@attrs.frozen
class TemplateVersionInfo:
    version: int
    created_at: datetime
    is_default: bool
    size: int
    created_by: str | None = None


@attrs.frozen
class TemplateInvitationInfo:
    id: str
    template_id: str
    email: str
    rights: list[str]
    status: TemplateInvitationStatus
    created_at: datetime
    expires_at: datetime


@attrs.frozen
class TemplateUserInfo:
    user_id: str
    email: str
    rights: list[str]
    granted_at: datetime
    granted_by: str | None = None


def template_out(view: TemplateView) -> TemplateInfo:
    return info_of(view.template, view)


def info_of(t: Template, view: TemplateView) -> TemplateInfo:
    return TemplateInfo(
        id=t.id,
        name=t.name,
        default_version=t.default_version,
        latest_version=t.latest_version,
        created_at=t.created_at,
        rights=right_names(view.rights),
        description=t.description,
        org_id=t.org_id,
        owner_id=t.owner_id,
    )


def detail_out(view: TemplateView) -> TemplateDetail:
    assert view.version is not None  # the use cases that return details always load one
    v = view.version
    return TemplateDetail(template_out(view), v.version, v.content, v.created_at, v.created_by)


def version_out(template: Template, v: TemplateVersion) -> TemplateVersionInfo:
    return TemplateVersionInfo(
        version=v.version,
        created_at=v.created_at,
        is_default=v.version == template.default_version,
        size=len(v.content.encode()),
        created_by=v.created_by,
    )


def invitation_out(i: TemplateInvitation) -> TemplateInvitationInfo:
    return TemplateInvitationInfo(
        i.id, i.template_id, i.email, right_names(i.rights), i.status, i.created_at, i.expires_at
    )


def user_out(u: TemplateUser) -> TemplateUserInfo:
    g = u.grant
    return TemplateUserInfo(g.user_id, u.email, right_names(g.rights), g.granted_at, g.granted_by)
