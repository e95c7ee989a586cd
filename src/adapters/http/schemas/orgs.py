"""Wire types of the org endpoints: orgs, invitations, members, roles, tokens, audit."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import attrs

from domain.audit import AuditEvent, Outcome
from domain.errors import FieldError, Invalid
from domain.orgs import Invitation, InvitationStatus, MemberType
from domain.permissions import Action, Grant, Resource, Role
from domain.services.authorization import action_label, action_named, resource_named
from domain.services.orgs import InvitationView, MemberView, MyOrg
from domain.services.roles import Answer
from domain.services.tokens import IssuedToken, TokenView

# ---------------------------------------------------------------- requests


@attrs.frozen
class OrgCreate:
    name: str
    code: str


@attrs.frozen
class InvitationCreate:
    email: str
    type: MemberType = MemberType.MEMBER


@attrs.frozen
class InvitationAnswer:
    """Name the invitation by its join code, by its id, or both (accepting needs the code)."""

    code: str | None = None
    invitation_id: str | None = None


@attrs.frozen
class MemberUpdate:
    type: MemberType


@attrs.frozen
class GrantSpec:
    """Actions (create, view, update, delete, execute, manage) allowed and denied; deny wins."""

    allow: list[str] = attrs.field(factory=list)
    deny: list[str] = attrs.field(factory=list)


@attrs.frozen
class RoleCreate:
    name: str
    grants: dict[str, GrantSpec] = attrs.field(factory=dict)


@attrs.frozen
class RoleUpdate:
    """A new name and/or grants: each resource given replaces that resource's grant."""

    name: str | None = None
    grants: dict[str, GrantSpec] | None = None


@attrs.frozen
class Permissions:
    """Every grant of a role (resources left out lose theirs)."""

    grants: dict[str, GrantSpec]


@attrs.frozen
class TokenCreate:
    name: str
    roles: list[str] = attrs.field(factory=list)


# ---------------------------------------------------------------- responses


@attrs.frozen
class Org:
    id: str
    name: str
    code: str
    created_at: datetime
    member_type: MemberType
    joined_at: datetime


@attrs.frozen
class RoleRef:
    id: str
    name: str


@attrs.frozen
class RoleInfo:
    id: str
    org_id: str
    name: str
    builtin: bool
    grants: dict[str, GrantSpec]


@attrs.frozen
class Member:
    user_id: str
    email: str
    type: MemberType
    joined_at: datetime
    roles: list[RoleRef]


@attrs.frozen
class OrgInvitation:
    id: str
    org_id: str
    email: str
    member_type: MemberType
    status: InvitationStatus
    inviter_id: str
    created_at: datetime
    expires_at: datetime


@attrs.frozen
class MyInvitation:
    id: str
    org_id: str
    org_code: str
    org_name: str
    member_type: MemberType
    created_at: datetime
    expires_at: datetime


@attrs.frozen
class Token:
    id: str
    org_id: str
    name: str
    active: bool
    created_at: datetime
    roles: list[RoleRef]
    created_by: str | None = None
    revoked_at: datetime | None = None
    rotated_at: datetime | None = None


@attrs.frozen
class IssuedSecret:
    """A worker token with its secret: shown this once, never stored or shown again."""

    id: str
    org_id: str
    name: str
    token: str
    roles: list[RoleRef]


@attrs.frozen
class CanAnswer:
    org_id: str
    user_id: str
    action: str
    resource: str
    allowed: bool
    reason: str


@attrs.frozen
class AuditEntry:
    id: str
    at: datetime
    actor: str
    verb: str
    resource_type: str
    resource_id: str
    org_id: str | None
    outcome: Outcome
    source_ip: str
    user_agent: str
    data: dict[str, str]
    hash: str
    previous_hash: str
    actor_email: str = ""


@attrs.frozen
class AuditPage:
    items: list[AuditEntry]
    next_cursor: str | None = None


@attrs.frozen
class ChainCheck:
    """Whether the hash chain holds; else where it first breaks (the event's id, not its data)."""

    ok: bool
    checked: int
    broken_event_id: str | None = None
    broken_at: datetime | None = None
    position: int | None = None


# ---------------------------------------------------------------- conversions


def grants_from_wire(grants: Mapping[str, GrantSpec]) -> dict[Resource, Grant]:
    """Resource and action names (with aliases) as masks; every bad name becomes a field error."""
    result: dict[Resource, Grant] = {}
    errors: list[FieldError] = []
    for name, spec in grants.items():
        try:
            resource = resource_named(name)
            result[resource] = Grant(_mask(spec.allow), _mask(spec.deny))
        except Invalid as exc:
            errors.extend(FieldError(f"grants.{name}", e.message) for e in exc.errors)
    if errors:
        raise Invalid("the grants are not valid", errors=tuple(errors))
    return result


def _mask(names: list[str]) -> Action:
    mask = Action(0)
    for name in names:
        mask |= action_named(name)
    return mask


def action_names(mask: Action) -> list[str]:
    return [action_label(a) for a in Action if a & mask]


def grants_to_wire(grants: Mapping[Resource, Grant]) -> dict[str, GrantSpec]:
    return {
        r.value: GrantSpec(action_names(g.allow), action_names(g.deny))
        for r, g in sorted(grants.items())
    }


def org_out(mine: MyOrg) -> Org:
    o, m = mine.org, mine.membership
    return Org(o.id, o.name, o.code, o.created_at, m.type, m.joined_at)


def role_ref(role: Role) -> RoleRef:
    return RoleRef(role.id, role.name)


def role_out(role: Role) -> RoleInfo:
    return RoleInfo(role.id, role.org_id, role.name, role.builtin, grants_to_wire(role.grants))


def member_out(view: MemberView) -> Member:
    m = view.membership
    return Member(m.user_id, view.email, m.type, m.joined_at, [role_ref(r) for r in view.roles])


def invitation_out(i: Invitation) -> OrgInvitation:
    return OrgInvitation(
        i.id, i.org_id, i.email, i.member_type, i.status, i.inviter_id, i.created_at, i.expires_at
    )


def my_invitation_out(view: InvitationView) -> MyInvitation:
    i, o = view.invitation, view.org
    return MyInvitation(i.id, o.id, o.code, o.name, i.member_type, i.created_at, i.expires_at)


def token_out(view: TokenView) -> Token:
    t = view.token
    return Token(
        t.id,
        t.org_id,
        t.name,
        t.active,
        t.created_at,
        [role_ref(r) for r in view.roles],
        t.created_by,
        t.revoked_at,
        t.rotated_at,
    )


def issued_out(issued: IssuedToken) -> IssuedSecret:
    t = issued.view.token
    return IssuedSecret(
        t.id, t.org_id, t.name, issued.secret, [role_ref(r) for r in issued.view.roles]
    )


def can_out(answer: Answer) -> CanAnswer:
    return CanAnswer(
        answer.org.id,
        answer.user_id,
        action_label(answer.action),
        answer.resource.value,
        answer.decision.allowed,
        answer.decision.reason,
    )


def audit_out(e: AuditEvent, emails: Mapping[str, str]) -> AuditEntry:
    return AuditEntry(
        e.id,
        e.at,
        e.actor,
        e.verb,
        e.resource_type,
        e.resource_id,
        e.org_id,
        e.outcome,
        e.source_ip,
        e.user_agent,
        dict(e.data),
        e.hash,
        e.previous_hash,
        emails.get(e.actor, ""),
    )
