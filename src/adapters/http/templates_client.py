"""The SDK for the template endpoints: submit, list, get, versions, default version, sharing."""

from __future__ import annotations

from typing import Any, TypeVar, cast
from urllib.parse import quote

from adapters.http.controller_client import ControllerClient
from adapters.http.schemas.templates import (
    DefaultVersion,
    TemplateCode,
    TemplateDetail,
    TemplateInfo,
    TemplateInvitationInfo,
    TemplateShare,
    TemplateSubmit,
    TemplateUserInfo,
    TemplateVersionInfo,
)

API = "/api/v1"
T = TypeVar("T")


def _seg(value: str) -> str:
    return quote(value, safe="@")


class TemplatesClient:
    """Typed calls to the controller's template endpoints; errors arrive as domain errors."""

    def __init__(self, client: ControllerClient) -> None:
        self.client = client

    async def _call(self, kind: type[T] | Any, method: str, path: str, **kw: Any) -> T:
        return cast(T, await self.client.call(method, f"{API}{path}", response=kind, **kw))

    def _t(self, template: str) -> str:
        return f"/templates/{_seg(template)}"

    async def submit(
        self, content: str, *, source: str = "<input>", org: str | None = None
    ) -> TemplateDetail:
        return await self._call(
            TemplateDetail, "POST", "/templates", body=TemplateSubmit(content, source, org)
        )

    async def list_templates(self, org: str | None = None) -> list[TemplateInfo]:
        return await self._call(list[TemplateInfo], "GET", "/templates", params={"org": org})

    async def get(
        self, template: str, *, org: str | None = None, version: int | None = None
    ) -> TemplateDetail:
        params = {"org": org, "version": version}
        return await self._call(TemplateDetail, "GET", self._t(template), params=params)

    async def delete(self, template: str, *, org: str | None = None) -> TemplateInfo:
        return await self._call(TemplateInfo, "DELETE", self._t(template), params={"org": org})

    async def versions(self, template: str, *, org: str | None = None) -> list[TemplateVersionInfo]:
        return await self._call(
            list[TemplateVersionInfo], "GET", f"{self._t(template)}/versions", params={"org": org}
        )

    async def set_default_version(
        self, template: str, version: int, *, org: str | None = None
    ) -> TemplateDetail:
        return await self._call(
            TemplateDetail,
            "PUT",
            f"{self._t(template)}/default-version",
            body=DefaultVersion(version),
            params={"org": org},
        )

    async def invite(self, template: str, email: str, rights: list[str]) -> TemplateInvitationInfo:
        return await self._call(
            TemplateInvitationInfo,
            "POST",
            f"{self._t(template)}/users",
            body=TemplateShare(email, rights),
        )

    async def users(self, template: str) -> list[TemplateUserInfo]:
        return await self._call(list[TemplateUserInfo], "GET", f"{self._t(template)}/users")

    async def remove_user(self, template: str, user: str) -> TemplateUserInfo:
        return await self._call(
            TemplateUserInfo, "DELETE", f"{self._t(template)}/users/{_seg(user)}"
        )

    async def accept(self, code: str) -> TemplateInfo:
        return await self._call(
            TemplateInfo, "POST", "/template-invitations/accept", body=TemplateCode(code)
        )

    async def reject(self, code: str) -> TemplateInvitationInfo:
        return await self._call(
            TemplateInvitationInfo, "POST", "/template-invitations/reject", body=TemplateCode(code)
        )
