"""The SDK for the org endpoints: orgs, invitations, members, roles, tokens and audit."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar, cast
from urllib.parse import quote

from adapters.http.controller_client import ControllerClient
from adapters.http.schemas.orgs import (
    AuditPage,
    CanAnswer,
    ChainCheck,
    GrantSpec,
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
)
from domain.orgs import MemberType

API = "/api/v1"
T = TypeVar("T")


def _seg(value: str) -> str:
    """One path segment: ids, codes, names and emails, escaped (a role name may hold '/')."""
    return quote(value, safe="@")


class OrgsClient:
    """Typed calls to the controller's org endpoints; errors arrive as domain errors."""

    def __init__(self, client: ControllerClient) -> None:
        self.client = client

    async def _call(self, kind: type[T] | Any, method: str, path: str, **kw: Any) -> T:
        return cast(T, await self.client.call(method, f"{API}{path}", response=kind, **kw))

    def _org(self, org: str) -> str:
        return f"/orgs/{_seg(org)}"

    # ------------------------------------------------------------ orgs

    async def create(self, name: str, code: str) -> Org:
        return await self._call(Org, "POST", "/orgs", body=OrgCreate(name, code))

    async def list_orgs(self) -> list[Org]:
        return await self._call(list[Org], "GET", "/orgs")

    async def get(self, org: str) -> Org:
        return await self._call(Org, "GET", self._org(org))

    async def delete(self, org: str) -> Org:
        return await self._call(Org, "DELETE", self._org(org))

    async def can(self, org: str, action: str, resource: str, user: str | None = None) -> CanAnswer:
        params = {"action": action, "resource": resource, "user": user}
        return await self._call(CanAnswer, "GET", f"{self._org(org)}/can", params=params)

    # ------------------------------------------------------------ invitations

    async def invite(
        self, org: str, email: str, member_type: MemberType = MemberType.MEMBER
    ) -> OrgInvitation:
        return await self._call(
            OrgInvitation,
            "POST",
            f"{self._org(org)}/invitations",
            body=InvitationCreate(email, member_type),
        )

    async def invitations(self, org: str) -> list[OrgInvitation]:
        return await self._call(list[OrgInvitation], "GET", f"{self._org(org)}/invitations")

    async def cancel_invitation(self, org: str, invitation_id: str) -> OrgInvitation:
        return await self._call(
            OrgInvitation, "DELETE", f"{self._org(org)}/invitations/{_seg(invitation_id)}"
        )

    async def my_invitations(self) -> list[MyInvitation]:
        return await self._call(list[MyInvitation], "GET", "/invitations")

    async def accept(self, code: str, invitation_id: str | None = None) -> Org:
        return await self._call(
            Org, "POST", "/invitations/accept", body=InvitationAnswer(code, invitation_id)
        )

    async def reject(
        self, code: str | None = None, invitation_id: str | None = None
    ) -> OrgInvitation:
        return await self._call(
            OrgInvitation, "POST", "/invitations/reject", body=InvitationAnswer(code, invitation_id)
        )

    # ------------------------------------------------------------ members

    async def members(self, org: str) -> list[Member]:
        return await self._call(list[Member], "GET", f"{self._org(org)}/members")

    async def member(self, org: str, user: str) -> Member:
        return await self._call(Member, "GET", f"{self._org(org)}/members/{_seg(user)}")

    async def update_member(self, org: str, user: str, member_type: MemberType) -> Member:
        return await self._call(
            Member,
            "PATCH",
            f"{self._org(org)}/members/{_seg(user)}",
            body=MemberUpdate(member_type),
        )

    async def remove_member(self, org: str, user: str) -> None:
        await self.client.call("DELETE", f"{API}{self._org(org)}/members/{_seg(user)}")

    async def leave(self, org: str) -> None:
        await self.client.call("POST", f"{API}{self._org(org)}/leave")

    # ------------------------------------------------------------ roles

    async def roles(self, org: str) -> list[RoleInfo]:
        return await self._call(list[RoleInfo], "GET", f"{self._org(org)}/roles")

    async def role(self, org: str, role: str) -> RoleInfo:
        return await self._call(RoleInfo, "GET", f"{self._org(org)}/roles/{_seg(role)}")

    async def create_role(self, org: str, name: str, grants: dict[str, GrantSpec]) -> RoleInfo:
        return await self._call(
            RoleInfo, "POST", f"{self._org(org)}/roles", body=RoleCreate(name, grants)
        )

    async def update_role(
        self,
        org: str,
        role: str,
        *,
        name: str | None = None,
        grants: dict[str, GrantSpec] | None = None,
    ) -> RoleInfo:
        return await self._call(
            RoleInfo, "PATCH", f"{self._org(org)}/roles/{_seg(role)}", body=RoleUpdate(name, grants)
        )

    async def set_permissions(self, org: str, role: str, grants: dict[str, GrantSpec]) -> RoleInfo:
        return await self._call(
            RoleInfo,
            "PUT",
            f"{self._org(org)}/roles/{_seg(role)}/permissions",
            body=Permissions(grants),
        )

    async def delete_role(self, org: str, role: str) -> RoleInfo:
        return await self._call(RoleInfo, "DELETE", f"{self._org(org)}/roles/{_seg(role)}")

    def _holder(self, org: str, user: str | None, token: str | None) -> str:
        if token is not None:
            return f"{self._org(org)}/tokens/{_seg(token)}"
        return f"{self._org(org)}/members/{_seg(user or '')}"

    async def assign_role(
        self, org: str, role: str, *, user: str | None = None, token: str | None = None
    ) -> RoleInfo:
        return await self._call(
            RoleInfo, "PUT", f"{self._holder(org, user, token)}/roles/{_seg(role)}"
        )

    async def unassign_role(
        self, org: str, role: str, *, user: str | None = None, token: str | None = None
    ) -> RoleInfo:
        return await self._call(
            RoleInfo, "DELETE", f"{self._holder(org, user, token)}/roles/{_seg(role)}"
        )

    # ------------------------------------------------------------ tokens

    async def create_token(
        self, org: str, name: str, roles: list[str] | None = None
    ) -> IssuedSecret:
        return await self._call(
            IssuedSecret,
            "POST",
            f"{self._org(org)}/tokens",
            body=TokenCreate(name, list(roles or [])),
        )

    async def tokens(self, org: str) -> list[Token]:
        return await self._call(list[Token], "GET", f"{self._org(org)}/tokens")

    async def token(self, org: str, token: str) -> Token:
        return await self._call(Token, "GET", f"{self._org(org)}/tokens/{_seg(token)}")

    async def revoke_token(self, org: str, token: str) -> Token:
        return await self._call(Token, "POST", f"{self._org(org)}/tokens/{_seg(token)}/revoke")

    async def rotate_token(self, org: str, token: str) -> IssuedSecret:
        return await self._call(
            IssuedSecret, "POST", f"{self._org(org)}/tokens/{_seg(token)}/rotate"
        )

    # ------------------------------------------------------------ audit

    async def audit_logs(
        self,
        org: str | None = None,
        *,
        actor: str | None = None,
        verb: str | None = None,
        resource: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> AuditPage:
        """My own trail, or the org's when ``org`` is given."""
        params = {
            "actor": actor,
            "verb": verb,
            "resource": resource,
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
            "limit": limit,
            "cursor": cursor,
        }
        path = f"{self._org(org)}/audit-logs" if org else "/audit-logs"
        return await self._call(AuditPage, "GET", path, params=params)

    async def verify_audit_logs(self) -> ChainCheck:
        return await self._call(ChainCheck, "POST", "/audit-logs/verify")
