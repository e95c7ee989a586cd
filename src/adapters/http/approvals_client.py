"""The SDK for the approval endpoints: requests, answers, org policies and org settings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar, cast
from urllib.parse import quote

from adapters.http.controller_client import ControllerClient
from adapters.http.schemas.approvals import (
    ApprovalAnswer,
    ApprovalInfo,
    ApprovalPage,
    ApprovalSettingsInfo,
    ApprovalSettingsUpdate,
    PolicyInfo,
    PolicySubmit,
)

API = "/api/v1"
T = TypeVar("T")


def _seg(value: str) -> str:
    return quote(value, safe="@")


class ApprovalsClient:
    """Typed calls to the controller's approval endpoints; errors arrive as domain errors."""

    def __init__(self, client: ControllerClient) -> None:
        self.client = client

    async def _call(self, kind: type[T] | Any, method: str, path: str, **kw: Any) -> T:
        return cast(T, await self.client.call(method, f"{API}{path}", response=kind, **kw))

    def _a(self, approval_id: str) -> str:
        return f"/approvals/{_seg(approval_id)}"

    # ------------------------------------------------------------ requests

    async def list_approvals(
        self,
        *,
        org: str | None = None,
        statuses: Sequence[str] = (),
        limit: int | None = None,
        cursor: str | None = None,
    ) -> ApprovalPage:
        params = {"org": org, "status": ",".join(statuses) or None, "limit": limit,
                  "cursor": cursor}
        return await self._call(ApprovalPage, "GET", "/approvals", params=params)

    async def get(self, approval_id: str) -> ApprovalInfo:
        return await self._call(ApprovalInfo, "GET", self._a(approval_id))

    async def approve(self, approval_id: str, code: str = "", comment: str = "") -> ApprovalInfo:
        body = ApprovalAnswer(code, comment)
        return await self._call(ApprovalInfo, "POST", f"{self._a(approval_id)}/approve", body=body)

    async def reject(self, approval_id: str, reason: str) -> ApprovalInfo:
        body = ApprovalAnswer(comment=reason)
        return await self._call(ApprovalInfo, "POST", f"{self._a(approval_id)}/reject", body=body)

    # ------------------------------------------------------------ org policies

    def _p(self, org: str, name: str | None = None) -> str:
        path = f"/orgs/{_seg(org)}/approval-policies"
        return f"{path}/{_seg(name)}" if name is not None else path

    async def create_policy(self, org: str, content: str, source: str = "<input>") -> PolicyInfo:
        body = PolicySubmit(content, source)
        return await self._call(PolicyInfo, "POST", self._p(org), body=body)

    async def list_policies(self, org: str) -> list[PolicyInfo]:
        return await self._call(list[PolicyInfo], "GET", self._p(org))

    async def get_policy(self, org: str, name: str) -> PolicyInfo:
        return await self._call(PolicyInfo, "GET", self._p(org, name))

    async def update_policy(
        self, org: str, name: str, content: str, source: str = "<input>"
    ) -> PolicyInfo:
        body = PolicySubmit(content, source)
        return await self._call(PolicyInfo, "PUT", self._p(org, name), body=body)

    async def remove_policy(self, org: str, name: str) -> PolicyInfo:
        return await self._call(PolicyInfo, "DELETE", self._p(org, name))

    # ------------------------------------------------------------ org settings

    async def get_settings(self, org: str) -> ApprovalSettingsInfo:
        return await self._call(
            ApprovalSettingsInfo, "GET", f"/orgs/{_seg(org)}/approval-settings"
        )

    async def update_settings(
        self,
        org: str,
        *,
        required: bool | None = None,
        labels: Mapping[str, str] | None = None,
        policy_ref: str | None = None,
    ) -> ApprovalSettingsInfo:
        body = ApprovalSettingsUpdate(required, dict(labels) if labels is not None else None,
                                      policy_ref)
        return await self._call(
            ApprovalSettingsInfo, "PATCH", f"/orgs/{_seg(org)}/approval-settings", body=body
        )
