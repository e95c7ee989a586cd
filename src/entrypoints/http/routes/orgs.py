"""Org endpoints: orgs, invitations, members, roles, permissions, worker tokens and audit."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from adapters.http.schemas.orgs import (
    AuditPage,
    CanAnswer,
    ChainCheck,
    InvitationAnswer,
    InvitationCreate,
    IssuedSecret,
    Member,
    MemberUpdate,
    MyInvitation,
    Org,
    OrgCreate,
    OrgInvitation,
    Permissions,
    RoleCreate,
    RoleInfo,
    RoleUpdate,
    Token,
    TokenCreate,
    audit_out,
    can_out,
    grants_from_wire,
    invitation_out,
    issued_out,
    member_out,
    my_invitation_out,
    org_out,
    role_out,
    token_out,
)
from domain.audit import AuditEvent
from domain.errors import FieldError, Invalid
from domain.ports import Page
from domain.services import audit, orgs, roles, tokens
from domain.services.authorization import action_named, resource_named
from domain.services.platform import Platform
from entrypoints.http.api import Api, Call, QueryParam, whole_number

V1 = "/api/v1"
ORG = f"{V1}/orgs/{{org}}"
AUDIT_QUERY = (
    QueryParam("actor", "only events by this actor (a user's email or id; an org's trail)"),
    QueryParam("verb", "only events with this verb, such as token.create"),
    QueryParam("resource", "only events about this resource type, such as token"),
    QueryParam("since", "only events at or after this time (ISO 8601)"),
    QueryParam("until", "only events before this time (ISO 8601)"),
    QueryParam("limit", "at most this many events (default 50)", int),
    QueryParam("cursor", "continue after the page that returned this cursor"),
)


def register(api: Api, p: Platform) -> None:
    """Declare every org endpoint on ``api``; ``{org}`` is an org id or code, ``{user}`` a
    user id or email, ``{role}`` a role id or name, ``{token}`` a token id or name."""
    _orgs(api, p)
    _invitations(api, p)
    _members(api, p)
    _roles(api, p)
    _tokens(api, p)
    _audit(api, p)


def _orgs(api: Api, p: Platform) -> None:
    @api.endpoint(
        "POST",
        f"{V1}/orgs",
        summary="Create an organisation",
        tag="orgs",
        body=OrgCreate,
        response=Org,
        status=201,
    )
    async def create_org(call: Call) -> Org:
        body: OrgCreate = call.body
        org = await orgs.create_org(p, call.caller, body.name, body.code)
        return org_out(await orgs.get_org(p, call.caller, org.id))

    @api.endpoint(
        "GET", f"{V1}/orgs", summary="List my organisations", tag="orgs", response=list[Org]
    )
    async def list_orgs(call: Call) -> list[Org]:
        return [org_out(o) for o in await orgs.list_orgs(p, call.caller)]

    @api.endpoint("GET", ORG, summary="Get an organisation by id or code", tag="orgs", response=Org)
    async def get_org(call: Call) -> Org:
        return org_out(await orgs.get_org(p, call.caller, call.path["org"]))

    @api.endpoint(
        "DELETE", ORG, summary="Delete an organisation (needs org:delete)", tag="orgs", response=Org
    )
    async def delete_org(call: Call) -> Org:
        mine = await orgs.get_org(p, call.caller, call.path["org"])
        await orgs.delete_org(p, call.caller, mine.org.id)
        return org_out(mine)

    @api.endpoint(
        "GET",
        f"{ORG}/can",
        summary="May a member do an action on a resource?",
        tag="roles",
        response=CanAnswer,
        query=(
            QueryParam("action", "create, view, update, delete, execute or manage"),
            QueryParam(
                "resource",
                "org, org_user, org_config, org_billing, templates, automations or automation_logs",
            ),
            QueryParam("user", "the member asked about (default: me)"),
        ),
    )
    async def can(call: Call) -> CanAnswer:
        action = action_named(_required(call.query, "action"))
        resource = resource_named(_required(call.query, "resource"))
        answer = await roles.can(
            p, call.caller, call.path["org"], action, resource, call.query.get("user") or None
        )
        return can_out(answer)


def _invitations(api: Api, p: Platform) -> None:
    @api.endpoint(
        "POST",
        f"{ORG}/invitations",
        summary="Invite someone by email",
        tag="invitations",
        body=InvitationCreate,
        response=OrgInvitation,
        status=201,
    )
    async def invite(call: Call) -> OrgInvitation:
        body: InvitationCreate = call.body
        return invitation_out(
            await orgs.invite(p, call.caller, call.path["org"], body.email, body.type)
        )

    @api.endpoint(
        "GET",
        f"{ORG}/invitations",
        summary="List an organisation's invitations",
        tag="invitations",
        response=list[OrgInvitation],
    )
    async def org_invitations(call: Call) -> list[OrgInvitation]:
        return [
            invitation_out(i) for i in await orgs.org_invitations(p, call.caller, call.path["org"])
        ]

    @api.endpoint(
        "DELETE",
        f"{ORG}/invitations/{{invitation}}",
        summary="Cancel a pending invitation",
        tag="invitations",
        response=OrgInvitation,
    )
    async def cancel_invitation(call: Call) -> OrgInvitation:
        return invitation_out(
            await orgs.cancel_invitation(p, call.caller, call.path["org"], call.path["invitation"])
        )

    @api.endpoint(
        "GET",
        f"{V1}/invitations",
        summary="List invitations addressed to me",
        tag="invitations",
        response=list[MyInvitation],
    )
    async def my_invitations(call: Call) -> list[MyInvitation]:
        return [my_invitation_out(i) for i in await orgs.my_invitations(p, call.caller)]

    @api.endpoint(
        "POST",
        f"{V1}/invitations/accept",
        summary="Accept an invitation (join)",
        tag="invitations",
        body=InvitationAnswer,
        response=Org,
    )
    async def accept_invitation(call: Call) -> Org:
        body: InvitationAnswer = call.body
        if not body.code:
            raise Invalid(
                "accepting needs the join code", errors=(FieldError("code", "is required"),)
            )
        return org_out(await orgs.accept_invitation(p, call.caller, body.code, body.invitation_id))

    @api.endpoint(
        "POST",
        f"{V1}/invitations/reject",
        summary="Reject an invitation",
        tag="invitations",
        body=InvitationAnswer,
        response=OrgInvitation,
    )
    async def reject_invitation(call: Call) -> OrgInvitation:
        body: InvitationAnswer = call.body
        return invitation_out(
            await orgs.reject_invitation(p, call.caller, body.code, body.invitation_id)
        )


def _members(api: Api, p: Platform) -> None:
    member = f"{ORG}/members/{{user}}"

    @api.endpoint(
        "GET",
        f"{ORG}/members",
        summary="List members with their roles",
        tag="members",
        response=list[Member],
    )
    async def list_members(call: Call) -> list[Member]:
        return [member_out(m) for m in await orgs.list_members(p, call.caller, call.path["org"])]

    @api.endpoint(
        "GET",
        member,
        summary="Get one member (by user id or email)",
        tag="members",
        response=Member,
    )
    async def get_member(call: Call) -> Member:
        return member_out(
            await orgs.get_member(p, call.caller, call.path["org"], call.path["user"])
        )

    @api.endpoint(
        "PATCH",
        member,
        summary="Change the named member's type",
        tag="members",
        body=MemberUpdate,
        response=Member,
    )
    async def update_member(call: Call) -> Member:
        body: MemberUpdate = call.body
        return member_out(
            await orgs.change_member_type(
                p, call.caller, call.path["org"], call.path["user"], body.type
            )
        )

    @api.endpoint("DELETE", member, summary="Remove the named member", tag="members")
    async def remove_member(call: Call) -> None:
        await orgs.remove_member(p, call.caller, call.path["org"], call.path["user"])

    @api.endpoint("POST", f"{ORG}/leave", summary="Leave the organisation", tag="members")
    async def leave_org(call: Call) -> None:
        await orgs.leave_org(p, call.caller, call.path["org"])

    @api.endpoint(
        "PUT",
        f"{member}/roles/{{role}}",
        summary="Give a member a role",
        tag="roles",
        response=RoleInfo,
    )
    async def assign_member_role(call: Call) -> RoleInfo:
        return role_out(
            await roles.assign_role(
                p, call.caller, call.path["org"], call.path["role"], user=call.path["user"]
            )
        )

    @api.endpoint(
        "DELETE",
        f"{member}/roles/{{role}}",
        summary="Take a role from a member",
        tag="roles",
        response=RoleInfo,
    )
    async def unassign_member_role(call: Call) -> RoleInfo:
        return role_out(
            await roles.unassign_role(
                p, call.caller, call.path["org"], call.path["role"], user=call.path["user"]
            )
        )


def _roles(api: Api, p: Platform) -> None:
    role = f"{ORG}/roles/{{role}}"

    @api.endpoint("GET", f"{ORG}/roles", summary="List roles", tag="roles", response=list[RoleInfo])
    async def list_roles(call: Call) -> list[RoleInfo]:
        return [role_out(r) for r in await roles.list_roles(p, call.caller, call.path["org"])]

    @api.endpoint(
        "POST",
        f"{ORG}/roles",
        summary="Create a role",
        tag="roles",
        body=RoleCreate,
        response=RoleInfo,
        status=201,
    )
    async def create_role(call: Call) -> RoleInfo:
        body: RoleCreate = call.body
        return role_out(
            await roles.create_role(
                p, call.caller, call.path["org"], body.name, grants_from_wire(body.grants)
            )
        )

    @api.endpoint("GET", role, summary="Get a role (by id or name)", tag="roles", response=RoleInfo)
    async def get_role(call: Call) -> RoleInfo:
        return role_out(await roles.get_role(p, call.caller, call.path["org"], call.path["role"]))

    @api.endpoint(
        "PATCH",
        role,
        summary="Rename a role or change some of its grants",
        tag="roles",
        body=RoleUpdate,
        response=RoleInfo,
    )
    async def update_role(call: Call) -> RoleInfo:
        body: RoleUpdate = call.body
        grants = None if body.grants is None else grants_from_wire(body.grants)
        return role_out(
            await roles.update_role(
                p, call.caller, call.path["org"], call.path["role"], name=body.name, grants=grants
            )
        )

    @api.endpoint(
        "PUT",
        f"{role}/permissions",
        summary="Replace every grant of a role",
        tag="roles",
        body=Permissions,
        response=RoleInfo,
    )
    async def set_permissions(call: Call) -> RoleInfo:
        body: Permissions = call.body
        return role_out(
            await roles.set_permissions(
                p, call.caller, call.path["org"], call.path["role"], grants_from_wire(body.grants)
            )
        )

    @api.endpoint("DELETE", role, summary="Delete a role", tag="roles", response=RoleInfo)
    async def delete_role(call: Call) -> RoleInfo:
        return role_out(
            await roles.delete_role(p, call.caller, call.path["org"], call.path["role"])
        )


def _tokens(api: Api, p: Platform) -> None:
    token = f"{ORG}/tokens/{{token}}"

    @api.endpoint(
        "POST",
        f"{ORG}/tokens",
        summary="Create a worker token (secret shown once)",
        tag="tokens",
        body=TokenCreate,
        response=IssuedSecret,
        status=201,
    )
    async def create_token(call: Call) -> IssuedSecret:
        body: TokenCreate = call.body
        return issued_out(
            await tokens.create_token(p, call.caller, call.path["org"], body.name, body.roles)
        )

    @api.endpoint(
        "GET", f"{ORG}/tokens", summary="List worker tokens", tag="tokens", response=list[Token]
    )
    async def list_tokens(call: Call) -> list[Token]:
        return [token_out(t) for t in await tokens.list_tokens(p, call.caller, call.path["org"])]

    @api.endpoint(
        "GET", token, summary="Get a worker token (by id or name)", tag="tokens", response=Token
    )
    async def get_token(call: Call) -> Token:
        return token_out(
            await tokens.get_token(p, call.caller, call.path["org"], call.path["token"])
        )

    @api.endpoint(
        "POST",
        f"{token}/revoke",
        summary="Revoke a worker token at once",
        tag="tokens",
        response=Token,
    )
    async def revoke_token(call: Call) -> Token:
        return token_out(
            await tokens.revoke_token(p, call.caller, call.path["org"], call.path["token"])
        )

    @api.endpoint(
        "POST",
        f"{token}/rotate",
        summary="Give a worker token a new secret",
        tag="tokens",
        response=IssuedSecret,
    )
    async def rotate_token(call: Call) -> IssuedSecret:
        return issued_out(
            await tokens.rotate_token(p, call.caller, call.path["org"], call.path["token"])
        )

    @api.endpoint(
        "PUT",
        f"{token}/roles/{{role}}",
        summary="Give a worker token a role",
        tag="tokens",
        response=RoleInfo,
    )
    async def assign_token_role(call: Call) -> RoleInfo:
        return role_out(
            await roles.assign_role(
                p, call.caller, call.path["org"], call.path["role"], token=call.path["token"]
            )
        )

    @api.endpoint(
        "DELETE",
        f"{token}/roles/{{role}}",
        summary="Take a role from a token",
        tag="tokens",
        response=RoleInfo,
    )
    async def unassign_token_role(call: Call) -> RoleInfo:
        return role_out(
            await roles.unassign_role(
                p, call.caller, call.path["org"], call.path["role"], token=call.path["token"]
            )
        )


def _audit(api: Api, p: Platform) -> None:
    @api.endpoint(
        "GET",
        f"{V1}/audit-logs",
        summary="My own audit trail",
        tag="audit",
        response=AuditPage,
        query=AUDIT_QUERY,
    )
    async def my_audit_logs(call: Call) -> AuditPage:
        page = await audit.my_trail(p, call.caller, _audit_query(call.query))
        return await _audit_page(p, page)

    @api.endpoint(
        "GET",
        f"{ORG}/audit-logs",
        summary="An organisation's audit trail (needs org:view)",
        tag="audit",
        response=AuditPage,
        query=AUDIT_QUERY,
    )
    async def org_audit_logs(call: Call) -> AuditPage:
        page = await audit.org_trail(p, call.caller, call.path["org"], _audit_query(call.query))
        return await _audit_page(p, page)

    @api.endpoint(
        "POST",
        f"{V1}/audit-logs/verify",
        summary="Check the audit hash chain",
        tag="audit",
        response=ChainCheck,
    )
    async def verify_audit_logs(call: Call) -> ChainCheck:
        result = await audit.verify_chain(p, call.caller)
        broken = result.broken
        return ChainCheck(
            result.ok,
            result.checked,
            broken.id if broken else None,
            broken.at if broken else None,
            result.position,
        )


def _required(query: Mapping[str, str], name: str) -> str:
    value = query.get(name, "").strip()
    if not value:
        raise Invalid(
            f"the query parameter {name} is required", errors=(FieldError(name, "is required"),)
        )
    return value


async def _audit_page(p: Platform, page: Page[AuditEvent]) -> AuditPage:
    emails = await audit.actor_emails(p, page.items)
    return AuditPage([audit_out(e, emails) for e in page.items], page.next_cursor)


def _audit_query(query: Mapping[str, str]) -> audit.Query:
    expected = "expected a whole number from 1 to 1000"
    limit = whole_number(query.get("limit", "50"), "limit", expected)
    if not 1 <= limit <= 1000:
        raise Invalid("the limit is not valid", errors=(FieldError("limit", expected),))
    return audit.Query(
        actor=query.get("actor") or None,
        verb=query.get("verb") or None,
        resource_type=query.get("resource") or None,
        since=_time(query, "since"),
        until=_time(query, "until"),
        limit=limit,
        cursor=query.get("cursor") or None,
    )


def _time(query: Mapping[str, str], name: str) -> datetime | None:
    raw = query.get(name)
    if not raw:
        return None
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise Invalid(
            f"{name} is not a time",
            errors=(
                FieldError(name, "expected ISO 8601 with a time zone, like 2026-01-01T00:00:00Z"),
            ),
        )
    return parsed
